//! The audit trail: an append-only file of JSON lines (`audit.log` in the
//! data directory), one per privileged action or security event. Each
//! entry carries its sequence number, time, actor, action, target and
//! outcome, the SHA-256 of the previous line, and an HMAC-SHA256 over
//! all of that under the audit key. The audit key is random, stored
//! sealed under the master key (`audit.key`), so it is re-wrapped, not
//! lost, when the master key rotates.
//!
//! [`verify`] walks the chain and names the first entry that was changed
//! (its MAC), removed (a gap in the numbers or a broken link) or
//! reordered. Entries hold no phone numbers.
//!
//! A writer thread appends in groups with one fsync each, so a burst of
//! bans during a flood never blocks the call core. A line cut short by a
//! crash was never acknowledged; it is removed when the trail reopens.

use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{error, warn};
use zeroize::Zeroizing;

use crate::admin::metrics::Metrics;
use crate::keys::{random, write_private, Sealer};

const KEY_PURPOSE: &str = "tollgate-audit-key";
const QUEUE: usize = 16_384;

/// One entry as written.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub time_ms: u64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    /// SHA-256 (hex) of the previous line; zeros for the first.
    pub prev: String,
    /// HMAC-SHA256 (hex) of the entry with `mac` empty.
    pub mac: String,
}

/// Why the trail could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit trail {path}: {why}")]
    Io { path: PathBuf, why: String },
    #[error("the audit key does not open under this master key")]
    Key,
}

/// What [`verify`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every entry is in place: how many.
    Intact(u64),
    /// The first entry that does not verify: its line (1-based) and why.
    Broken { line: u64, why: String },
}

fn io(path: &Path, e: impl std::fmt::Display) -> AuditError {
    AuditError::Io {
        path: path.to_path_buf(),
        why: e.to_string(),
    }
}

fn mac_of(key: &[u8; 32], e: &Entry) -> String {
    let mut bare = e.clone();
    bare.mac.clear();
    let text = serde_json::to_vec(&bare).unwrap_or_default();
    // HMAC takes a key of any length; an error here would only make the
    // entry fail to verify.
    match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(&text);
            data_encoding::HEXLOWER.encode(&m.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

fn hash(line: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(line))
}

const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The audit key for `data_dir`, made (and sealed) on first use.
pub fn key(data_dir: &Path, master: &Sealer) -> Result<Zeroizing<[u8; 32]>, AuditError> {
    let path = data_dir.join("audit.key");
    let mut key = Zeroizing::new([0u8; 32]);
    match std::fs::read(&path) {
        Ok(sealed) => {
            let k = master
                .open(KEY_PURPOSE, &sealed)
                .map_err(|_| AuditError::Key)?;
            if k.len() != 32 {
                return Err(AuditError::Key);
            }
            key.copy_from_slice(&k);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            random(&mut key[..]).map_err(|e| io(&path, e))?;
            let sealed = master
                .seal(KEY_PURPOSE, &key[..])
                .map_err(|e| io(&path, e))?;
            write_private(&path, &sealed, false).map_err(|e| io(&path, e))?;
        }
        Err(e) => return Err(io(&path, e)),
    }
    Ok(key)
}

/// The audit key file's path and its content re-sealed under `new`, for a
/// master-key rotation ([`crate::keys::rotate`] puts it in place). The
/// key itself does not change, so the chain goes on unbroken.
pub fn resealed_key(
    data_dir: &Path,
    old: &Sealer,
    new: &Sealer,
) -> Result<(PathBuf, Vec<u8>), AuditError> {
    let k = key(data_dir, old)?;
    let path = data_dir.join("audit.key");
    let sealed = new.seal(KEY_PURPOSE, &k[..]).map_err(|e| io(&path, e))?;
    Ok((path, sealed))
}

/// Checks the whole trail at `path` with `key`.
pub fn verify(path: &Path, key: &[u8; 32]) -> Result<Verdict, AuditError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Verdict::Intact(0)),
        Err(e) => return Err(io(path, e)),
    };
    let mut prev = ZERO.to_string();
    let mut n = 0u64;
    for line in BufReader::new(f).split(b'\n') {
        let line = line.map_err(|e| io(path, e))?;
        n += 1;
        let broken = |why: String| Ok(Verdict::Broken { line: n, why });
        let Ok(e) = serde_json::from_slice::<Entry>(&line) else {
            return broken("not an entry (changed or cut)".into());
        };
        if e.mac != mac_of(key, &e) {
            return broken(format!("entry {}: its MAC does not match (changed)", e.seq));
        }
        if e.seq < n {
            return broken(format!(
                "entry {} where entry {n} belongs (reordered or repeated)",
                e.seq
            ));
        }
        if e.seq > n {
            return broken(format!(
                "entry {} where entry {n} belongs (entries removed)",
                e.seq
            ));
        }
        if e.prev != prev {
            return broken(format!(
                "entry {}: does not follow the entry before it (removed or reordered)",
                e.seq
            ));
        }
        prev = hash(&line);
    }
    Ok(Verdict::Intact(n))
}

/// Reads entries whose time is in `[from_ms, to_ms)`.
pub fn list(path: &Path, from_ms: u64, to_ms: u64) -> Result<Vec<Entry>, AuditError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(path, e)),
    };
    Ok(text
        .split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Entry>(l).ok())
        .filter(|e| (from_ms..to_ms).contains(&e.time_ms))
        .collect())
}

struct Tail {
    file: std::fs::File,
    seq: u64,
    prev: String,
}

/// Opens the trail for appending: drops a line cut short by a crash, and
/// finds where the chain ends.
fn open_tail(path: &Path) -> Result<Tail, AuditError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io(path, e))?;
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut text).map_err(|e| io(path, e))?;
    let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if whole < text.len() {
        warn!(path = %path.display(), "audit trail: removing a line cut short by a crash");
        file.set_len(whole as u64).map_err(|e| io(path, e))?;
        file.seek(SeekFrom::End(0)).map_err(|e| io(path, e))?;
        text.truncate(whole);
    }
    let last = text[..whole.saturating_sub(1)]
        .rsplit(|&b| b == b'\n')
        .next()
        .filter(|l| !l.is_empty());
    let (seq, prev) = match last {
        Some(l) => (
            serde_json::from_slice::<Entry>(l).map_or(0, |e| e.seq),
            hash(l),
        ),
        None => (0, ZERO.to_string()),
    };
    Ok(Tail { file, seq, prev })
}

enum Job {
    Append(String, String, String, String),
    Sync(std::sync::mpsc::Sender<()>),
}

/// The trail's writer; cheap to clone.
#[derive(Clone)]
pub struct Audit {
    tx: SyncSender<Job>,
    path: PathBuf,
}

impl Audit {
    /// Opens the trail in `data_dir` with `key` and starts its writer.
    pub fn open(
        data_dir: &Path,
        key: Zeroizing<[u8; 32]>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, AuditError> {
        let path = data_dir.join("audit.log");
        let tail = open_tail(&path)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let p = path.clone();
        std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || run(tail, &key, &rx, &metrics, &p))
            .map_err(|e| io(&path, e))?;
        Ok(Self { tx, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an entry (durable shortly after; never blocks on disk).
    pub fn record(&self, actor: &str, action: &str, target: &str, outcome: &str) {
        if self
            .tx
            .try_send(Job::Append(
                actor.into(),
                action.into(),
                target.into(),
                outcome.into(),
            ))
            .is_err()
        {
            error!(action, "audit trail queue full: entry lost");
        }
    }

    /// Waits until everything recorded so far is on disk.
    pub fn sync(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(Job::Sync(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

fn run(mut tail: Tail, key: &[u8; 32], rx: &Receiver<Job>, metrics: &Metrics, path: &Path) {
    while let Ok(first) = rx.recv() {
        let mut out = Vec::new();
        let mut waiting = Vec::new();
        let mut written = 0u64;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Append(actor, action, target, outcome) => {
                    let mut e = Entry {
                        seq: tail.seq + 1,
                        time_ms: crate::now_ms(),
                        actor,
                        action,
                        target,
                        outcome,
                        prev: tail.prev.clone(),
                        mac: String::new(),
                    };
                    e.mac = mac_of(key, &e);
                    let line = serde_json::to_vec(&e).unwrap_or_default();
                    tail.prev = hash(&line);
                    tail.seq += 1;
                    out.extend_from_slice(&line);
                    out.push(b'\n');
                    written += 1;
                }
                Job::Sync(done) => waiting.push(done),
            }
            if out.len() < 1 << 20 {
                next = rx.try_recv().ok();
            }
        }
        if !out.is_empty() {
            let r = tail
                .file
                .write_all(&out)
                .and_then(|()| tail.file.sync_data());
            if let Err(e) = r {
                error!(path = %path.display(), "audit trail write failed: {e}");
            } else {
                metrics.audit_entries.inc_by(written);
            }
        }
        for w in waiting {
            let _ = w.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tollgate-audit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn the_chain_verifies_and_names_the_first_changed_removed_or_reordered_entry() {
        let d = dir("chain");
        let master = Sealer::from_key(&[6; 32]);
        let k = key(&d, &master).expect("key");
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let a = Audit::open(&d, k.clone(), metrics.clone()).expect("open");
        for i in 0..5 {
            a.record("alice (uid 1001)", "cdr export", &format!("day {i}"), "ok");
        }
        a.sync();
        let path = d.join("audit.log");
        assert_eq!(verify(&path, &k).expect("verify"), Verdict::Intact(5));
        let good = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = good.lines().collect();

        let check = |text: String| {
            std::fs::write(&path, text).expect("write");
            verify(&path, &k).expect("verify")
        };
        // Changed: the MAC of entry 3 fails.
        let changed = good.replacen("day 2", "day 9", 1);
        assert!(
            matches!(check(changed), Verdict::Broken { line: 3, ref why } if why.contains("changed"))
        );
        // Removed: entry 3 gone.
        let removed = [lines[0], lines[1], lines[3], lines[4]].join("\n") + "\n";
        assert!(
            matches!(check(removed), Verdict::Broken { line: 3, ref why } if why.contains("removed"))
        );
        // Reordered: 4 before 3.
        let reordered = [lines[0], lines[1], lines[3], lines[2], lines[4]].join("\n") + "\n";
        assert!(matches!(check(reordered), Verdict::Broken { line: 3, .. }));
        // The last entry removed: the chain is shorter but intact; the
        // next append continues from what is there (seq 5 again is the
        // only way to hide it, and it would not carry the right link).
        std::fs::write(&path, &good).expect("restore");
        assert_eq!(verify(&path, &k).expect("verify"), Verdict::Intact(5));
        // A wrong key: the first entry fails.
        assert!(matches!(
            verify(&path, &[0; 32]).expect("verify"),
            Verdict::Broken { line: 1, .. }
        ));
        // A cut line (a crash mid-write) is dropped when the trail reopens.
        std::fs::write(&path, format!("{good}{{\"seq\":6,\"ti")).expect("cut");
        drop(a);
        let a = Audit::open(&d, k.clone(), metrics).expect("reopen");
        a.record("root (uid 0)", "keys rotate-master", "", "ok");
        a.sync();
        assert_eq!(verify(&path, &k).expect("verify"), Verdict::Intact(6));
        // The key is sealed: another master key cannot open it.
        let other = Sealer::from_key(&[7; 32]);
        assert!(matches!(key(&d, &other), Err(AuditError::Key)));
        // Re-sealed under another master key, it is the same key.
        let (p, sealed) = resealed_key(&d, &master, &other).expect("reseal");
        assert_eq!(p, d.join("audit.key"));
        write_private(&p, &sealed, true).expect("write");
        assert_eq!(*key(&d, &other).expect("new master"), *k);
        assert!(matches!(key(&d, &master), Err(AuditError::Key)));
        let _ = std::fs::remove_dir_all(&d);
    }
}
