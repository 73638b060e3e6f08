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
//!
//! Nothing is lost without a trace, and a cut tail shows:
//!
//! - The chain advances only after a durable write. A group that fails
//!   to write (a full disk) is taken back, the file cut back to its last
//!   good length, and its entries counted as lost; so are entries refused
//!   by a full queue. The next write starts with an `audit gap` entry
//!   saying how many were lost and why, and [`verify`] reports each gap
//!   as a gap, not as tampering.
//! - After each durable group the last sequence number and line hash are
//!   anchored outside the trail: in `audit.anchor` (MACed under the audit
//!   key, replaced atomically; the key file itself is not rewritten per
//!   group, so a crash can never cost the key) and, at most every
//!   [`JOURNAL_ANCHOR_EVERY`], in the log (the systemd journal). [`verify`]
//!   checks the anchor: a trail cut short, emptied or replaced by an older
//!   copy no longer reaches it.
//! - Identical entries in a row (the same actor, action, target and
//!   outcome, as a flood makes them) become one entry that says how many
//!   times it happened.

use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{error, warn};
use zeroize::Zeroizing;

use crate::crypto::random;
use crate::keys::{write_private, Sealer};
use crate::telemetry::metrics::Metrics;

const KEY_PURPOSE: &str = "tollgate-audit-key";
const QUEUE: usize = 16_384;
/// How often the anchor goes to the log (the journal) as well.
pub const JOURNAL_ANCHOR_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// How long the writer gathers entries before one durable write.
const LINGER: std::time::Duration = std::time::Duration::from_millis(20);
/// The action of a gap entry.
pub const GAP: &str = "audit gap";
/// The action of the entry that records a trail found cut at start.
pub const CUT: &str = "audit trail cut";

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
    /// Every entry is in place: how many, and the gaps the gateway wrote
    /// itself (entries it lost, and why).
    Intact { entries: u64, gaps: Vec<String> },
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
/// master-key rotation ([`crate::admin::rotate`] puts it in place). The
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

/// Where the chain ended after the last durable write, kept beside the
/// trail.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Anchor {
    pub seq: u64,
    /// SHA-256 (hex) of entry `seq`'s line.
    pub hash: String,
    /// HMAC-SHA256 (hex) of `seq` and `hash` under the audit key.
    pub mac: String,
}

impl Anchor {
    fn new(key: &[u8; 32], seq: u64, hash: &str) -> Self {
        let mut a = Self {
            seq,
            hash: hash.to_string(),
            mac: String::new(),
        };
        a.mac = a.mac_under(key);
        a
    }

    fn mac_under(&self, key: &[u8; 32]) -> String {
        match <Hmac<Sha256> as Mac>::new_from_slice(key) {
            Ok(mut m) => {
                m.update(format!("tollgate-audit-anchor:{}:{}", self.seq, self.hash).as_bytes());
                data_encoding::HEXLOWER.encode(&m.finalize().into_bytes())
            }
            Err(_) => String::new(),
        }
    }

    /// The anchor file beside the trail at `trail`.
    pub fn path(trail: &Path) -> PathBuf {
        trail.with_file_name("audit.anchor")
    }

    fn save(&self, trail: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        write_private(&Self::path(trail), &bytes, true)
    }

    pub fn load(trail: &Path) -> Result<Option<Self>, AuditError> {
        let path = Self::path(trail);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| io(&path, format!("the anchor is unreadable ({e})"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, e)),
        }
    }
}

/// Checks the whole trail at `path` with `key`, and that it still
/// reaches its anchor.
pub fn verify(path: &Path, key: &[u8; 32]) -> Result<Verdict, AuditError> {
    let anchor = Anchor::load(path)?;
    if let Some(a) = &anchor {
        if a.mac != a.mac_under(key) {
            return Ok(Verdict::Broken {
                line: 0,
                why: "audit.anchor: its MAC does not match (changed or from another trail)".into(),
            });
        }
    }
    let cut = |n: u64, a: &Anchor| {
        Verdict::Broken {
        line: n + 1,
        why: format!(
            "the trail ends at entry {n} but its anchor says entry {} was written: entries cut from the end, or the file emptied or replaced",
            a.seq
        ),
    }
    };
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(match &anchor {
                Some(a) if a.seq > 0 => cut(0, a),
                _ => Verdict::Intact {
                    entries: 0,
                    gaps: Vec::new(),
                },
            });
        }
        Err(e) => return Err(io(path, e)),
    };
    let mut prev = ZERO.to_string();
    let mut n = 0u64;
    let mut gaps = Vec::new();
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
        if let Some(a) = anchor.as_ref().filter(|a| a.seq == n) {
            if a.hash != prev {
                return broken(format!(
                    "entry {n} is not the entry its anchor recorded (the trail was replaced)"
                ));
            }
        }
        if (e.action == GAP || e.action == CUT) && e.actor == "gateway" {
            gaps.push(format!("entry {n}: {}", e.outcome));
        }
    }
    if let Some(a) = anchor.as_ref().filter(|a| a.seq > n) {
        return Ok(cut(n, a));
    }
    Ok(Verdict::Intact { entries: n, gaps })
}

/// When the trail at `path` began: its first entry's time.
pub fn first_time(path: &Path) -> Option<u64> {
    use std::io::BufRead;
    let f = std::fs::File::open(path).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(f).read_line(&mut line).ok()?;
    serde_json::from_str::<Entry>(&line).ok().map(|e| e.time_ms)
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
    /// The file's length up to the last durable entry.
    len: u64,
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
    Ok(Tail {
        file,
        len: whole as u64,
        seq,
        prev,
    })
}

enum Job {
    Append(String, String, String, String),
    /// Answered with the chain's head once everything before is on disk.
    Sync(std::sync::mpsc::Sender<(u64, String)>),
}

/// The trail's writer; cheap to clone.
#[derive(Clone)]
pub struct Audit {
    tx: SyncSender<Job>,
    path: PathBuf,
    /// Entries refused by a full queue, for the next gap entry.
    lost: Arc<std::sync::atomic::AtomicU64>,
    metrics: Arc<Metrics>,
}

impl Audit {
    /// Opens the trail in `data_dir` with `key` and starts its writer.
    pub fn open(
        data_dir: &Path,
        key: Zeroizing<[u8; 32]>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, AuditError> {
        Self::open_with(data_dir, key, metrics, QUEUE)
    }

    fn open_with(
        data_dir: &Path,
        key: Zeroizing<[u8; 32]>,
        metrics: Arc<Metrics>,
        queue: usize,
    ) -> Result<Self, AuditError> {
        let path = data_dir.join("audit.log");
        let tail = open_tail(&path)?;
        let (tx, rx) = mpsc::sync_channel(queue);
        let lost = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut w = ChainWriter {
            tail,
            key,
            path: path.clone(),
            lost: lost.clone(),
            lost_why: None,
            metrics: metrics.clone(),
            journal_at: None,
        };
        // An existing trail without an anchor (an older version's) is
        // anchored as it stands now. One that no longer reaches its anchor
        // was cut or replaced while the gateway was stopped: that goes
        // into the chain before anything else, so the next anchor cannot
        // hide it.
        let why = match Anchor::load(&path) {
            Ok(None) if w.tail.seq > 0 => Some(format!(
                "a trail of {} entries has no anchor: the anchor was deleted (or this is the first start of a version that keeps one)",
                w.tail.seq
            )),
            Ok(None) => None,
            Ok(Some(a)) => short_of(&path, &w.tail, &a, &w.key),
            Err(e) => Some(format!("the anchor is unreadable ({e})")),
        };
        if let Some(why) = why {
            error!(path = %path.display(), "audit trail: {why}");
            w.write(vec![["gateway".into(), CUT.into(), String::new(), why]]);
        }
        std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || w.run(&rx))
            .map_err(|e| io(&path, e))?;
        Ok(Self {
            tx,
            path,
            lost,
            metrics,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an entry (durable shortly after; never blocks on disk). A
    /// full queue loses the entry, counted, and the trail says so.
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
            self.lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.metrics.audit_lost.inc();
            error!(
                action,
                "audit trail queue full: entry lost (the trail will show a gap)"
            );
        }
    }

    /// Waits until everything recorded so far is on disk.
    pub fn sync(&self) {
        let _ = self.head();
    }

    /// Waits until everything recorded so far is on disk, and anchors
    /// the chain's head in the log (the journal) at once: the head's
    /// sequence number and line hash (`None` if the writer has stopped).
    pub fn head(&self) -> Option<(u64, String)> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.tx.send(Job::Sync(tx)).ok()?;
        rx.recv().ok()
    }

    /// [`Audit::head`] from async code.
    pub async fn anchored(&self) -> Option<(u64, String)> {
        let a = self.clone();
        tokio::task::spawn_blocking(move || a.head())
            .await
            .ok()
            .flatten()
    }

    /// [`Audit::sync`] from async code: the wait is on a blocking thread,
    /// not a runtime's.
    pub async fn synced(&self) {
        let a = self.clone();
        let _ = tokio::task::spawn_blocking(move || a.sync()).await;
    }
}

/// Why the trail at `path` (ending at `tail`) does not reach `anchor`,
/// if it does not.
fn short_of(path: &Path, tail: &Tail, anchor: &Anchor, key: &[u8; 32]) -> Option<String> {
    if anchor.mac != anchor.mac_under(key) {
        return Some("the anchor's MAC does not match: it was changed".into());
    }
    if anchor.seq > tail.seq {
        return Some(format!(
            "the trail ended at entry {} but its anchor said entry {}: entries were removed while the gateway was stopped",
            tail.seq, anchor.seq
        ));
    }
    if anchor.seq == 0 {
        return None;
    }
    let at = if anchor.seq == tail.seq {
        // The usual case: the anchor is the trail's last entry.
        tail.prev.clone()
    } else {
        // The trail went on after its anchor (a crash between the two
        // writes): that entry's line, read a line at a time.
        let f = std::fs::File::open(path).ok()?;
        let line = BufReader::new(f)
            .split(b'\n')
            .nth(usize::try_from(anchor.seq - 1).ok()?)?
            .ok()?;
        hash(&line)
    };
    (at != anchor.hash).then(|| {
        format!(
            "entry {} is not the one its anchor recorded: the trail was replaced while the gateway was stopped",
            anchor.seq
        )
    })
}

/// The writer thread's state: the chain's end as it is on disk.
struct ChainWriter {
    tail: Tail,
    key: Zeroizing<[u8; 32]>,
    path: PathBuf,
    lost: Arc<std::sync::atomic::AtomicU64>,
    /// Why the last entries were lost, when a write failed.
    lost_why: Option<String>,
    metrics: Arc<Metrics>,
    journal_at: Option<std::time::Instant>,
}

impl ChainWriter {
    fn run(mut self, rx: &Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            // Gather what comes in the next moment (a burst becomes one
            // write), unless someone waits.
            let until = std::time::Instant::now() + LINGER;
            while jobs.len() < 4096 && !matches!(jobs.last(), Some(Job::Sync(_))) {
                let left = until.saturating_duration_since(std::time::Instant::now());
                match rx.recv_timeout(left) {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            let mut entries = Vec::new();
            let mut waiting = Vec::new();
            for j in jobs {
                match j {
                    Job::Append(a, b, c, d) => entries.push([a, b, c, d]),
                    Job::Sync(done) => waiting.push(done),
                }
            }
            self.write(coalesce(entries));
            if !waiting.is_empty() {
                let head = self.anchor(true);
                for w in waiting {
                    let _ = w.send(head.clone());
                }
            }
        }
    }

    /// Writes `entries` (after a gap entry if some were lost) durably,
    /// or takes them back and counts them lost.
    fn write(&mut self, entries: Vec<[String; 4]>) {
        let lost = self.lost.swap(0, std::sync::atomic::Ordering::Relaxed);
        if entries.is_empty() && lost == 0 {
            return;
        }
        let mut all = Vec::with_capacity(entries.len() + 1);
        if lost > 0 {
            let why = self
                .lost_why
                .clone()
                .unwrap_or_else(|| "the queue was full".into());
            all.push([
                "gateway".to_string(),
                GAP.to_string(),
                String::new(),
                format!("{lost} entries lost: {why}"),
            ]);
        }
        all.extend(entries);
        let (mut seq, mut prev) = (self.tail.seq, self.tail.prev.clone());
        let mut out = Vec::new();
        for [actor, action, target, outcome] in &all {
            let mut e = Entry {
                seq: seq + 1,
                time_ms: crate::now_ms(),
                actor: actor.clone(),
                action: action.clone(),
                target: target.clone(),
                outcome: outcome.clone(),
                prev: prev.clone(),
                mac: String::new(),
            };
            e.mac = mac_of(&self.key, &e);
            let line = serde_json::to_vec(&e).unwrap_or_default();
            prev = hash(&line);
            seq += 1;
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
        let r = self
            .tail
            .file
            .write_all(&out)
            .and_then(|()| self.tail.file.sync_data());
        match r {
            Ok(()) => {
                self.tail.len += out.len() as u64;
                self.tail.seq = seq;
                self.tail.prev = prev;
                self.lost_why = None;
                self.metrics.audit_entries.inc_by(all.len() as u64);
                let _ = self.anchor(false);
            }
            Err(e) => {
                // The chain does not advance: the file goes back to its
                // last good length, and the entries (the gap entry's
                // count included) wait as a gap for the next write.
                error!(path = %self.path.display(), "audit trail write failed: {e}; {} entries lost (the trail will show a gap)", all.len());
                let _ = self.tail.file.set_len(self.tail.len);
                let _ = self.tail.file.seek(SeekFrom::End(0));
                let entries = all.len() as u64 - u64::from(lost > 0);
                self.metrics.audit_lost.inc_by(entries);
                self.lost
                    .fetch_add(lost + entries, std::sync::atomic::Ordering::Relaxed);
                self.lost_why = Some(format!("a write failed ({e})"));
            }
        }
    }

    /// Records where the chain ends outside the file: the anchor file
    /// every time, the log now and then (or when `journal`).
    fn anchor(&mut self, journal: bool) -> (u64, String) {
        let a = Anchor::new(&self.key, self.tail.seq, &self.tail.prev);
        if let Err(e) = a.save(&self.path) {
            warn!(path = %Anchor::path(&self.path).display(), "audit anchor not saved: {e}");
        }
        let due = self
            .journal_at
            .is_none_or(|t| t.elapsed() >= JOURNAL_ANCHOR_EVERY);
        if journal || due {
            self.journal_at = Some(std::time::Instant::now());
            tracing::info!(seq = a.seq, hash = %a.hash, "audit anchor");
        }
        (a.seq, a.hash)
    }
}

/// Identical entries in a row become one that says how often.
fn coalesce(entries: Vec<[String; 4]>) -> Vec<[String; 4]> {
    let mut out: Vec<([String; 4], u64)> = Vec::new();
    for e in entries {
        match out.last_mut() {
            Some((last, n)) if *last == e => *n += 1,
            _ => out.push((e, 1)),
        }
    }
    out.into_iter()
        .map(|(mut e, n)| {
            if n > 1 {
                e[3] = format!("{} (x{n})", e[3]);
            }
            e
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intact(entries: u64) -> Verdict {
        Verdict::Intact {
            entries,
            gaps: Vec::new(),
        }
    }

    fn writer(d: &Path, k: &Zeroizing<[u8; 32]>) -> ChainWriter {
        let path = d.join("audit.log");
        ChainWriter {
            tail: open_tail(&path).expect("tail"),
            key: k.clone(),
            path,
            lost: Arc::new(0.into()),
            lost_why: None,
            metrics: Arc::new(Metrics::new().expect("metrics")),
            journal_at: None,
        }
    }

    fn entry(n: u32) -> [String; 4] {
        [
            "root (uid 0)".into(),
            "firewall unban".into(),
            format!("192.0.2.{n}"),
            "ok".into(),
        ]
    }

    /// Issue 14 item 10: a full disk used to advance the chain past
    /// entries never written (so it looked like tampering), and a full
    /// queue dropped entries silently.
    #[test]
    fn lost_entries_are_a_gap_the_trail_records_and_verify_reports() {
        let d = dir("gaps");
        let k = key(&d, &Sealer::from_key(&[6; 32])).expect("key");
        let path = d.join("audit.log");
        let mut w = writer(&d, &k);
        w.write(vec![entry(1), entry(2)]);
        // The disk is full: /dev/full refuses every write.
        let good = std::mem::replace(
            &mut w.tail.file,
            std::fs::OpenOptions::new()
                .append(true)
                .open("/dev/full")
                .expect("/dev/full"),
        );
        w.write(vec![entry(3), entry(4), entry(5)]);
        assert_eq!((w.tail.seq, w.metrics.audit_lost.get()), (2, 3));
        assert_eq!(verify(&path, &k).expect("verify"), intact(2));
        // Room again: a gap entry first, then the new entry, chained.
        w.tail.file = good;
        w.write(vec![entry(6)]);
        match verify(&path, &k).expect("verify") {
            Verdict::Intact { entries: 4, gaps } => {
                assert_eq!(gaps.len(), 1, "{gaps:?}");
                assert!(
                    gaps[0].starts_with("entry 3: 3 entries lost: a write failed"),
                    "{gaps:?}"
                );
            }
            v => panic!("{v:?}"),
        }
        // A full queue: the entry is lost, counted, and becomes a gap.
        let (tx, _rx) = mpsc::sync_channel(1);
        let audit = Audit {
            tx,
            path: path.clone(),
            lost: w.lost.clone(),
            metrics: w.metrics.clone(),
        };
        audit.record("a", "b", "c", "d");
        audit.record("a", "b", "c", "lost");
        assert_eq!(w.metrics.audit_lost.get(), 4);
        w.write(Vec::new());
        let gaps = match verify(&path, &k).expect("verify") {
            Verdict::Intact { entries: 5, gaps } => gaps,
            v => panic!("{v:?}"),
        };
        assert_eq!(gaps[1], "entry 5: 1 entries lost: the queue was full");
        // The anchor follows the chain.
        let a = Anchor::load(&path).expect("anchor").expect("some");
        assert_eq!((a.seq, a.hash), (5, w.tail.prev.clone()));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn identical_entries_in_a_row_become_one() {
        let mut flood: Vec<_> = (0..1000).map(|_| entry(9)).collect();
        flood.push(entry(8));
        flood.push(entry(9));
        let out = coalesce(flood);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0][3], "ok (x1000)");
        assert_eq!((out[1][3].as_str(), out[2][3].as_str()), ("ok", "ok"));
    }

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
        assert_eq!(verify(&path, &k).expect("verify"), intact(5));
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
        // The last entry removed, the file emptied, or the file replaced
        // by an older copy: the trail no longer reaches its anchor.
        let cut = [lines[0], lines[1], lines[2], lines[3]].join("\n") + "\n";
        assert!(
            matches!(check(cut), Verdict::Broken { line: 5, ref why } if why.contains("cut from the end")),
        );
        assert!(matches!(
            check(String::new()),
            Verdict::Broken { line: 1, .. }
        ));
        std::fs::remove_file(&path).expect("remove");
        assert!(matches!(
            verify(&path, &k).expect("verify"),
            Verdict::Broken { .. }
        ));
        std::fs::write(&path, &good).expect("restore");
        assert_eq!(verify(&path, &k).expect("verify"), intact(5));
        // A wrong key: the anchor (then the first entry) fails.
        assert!(matches!(
            verify(&path, &[0; 32]).expect("verify"),
            Verdict::Broken { line: 0, ref why } if why.contains("anchor")
        ));
        // Cut while stopped, then reopened: the cut goes into the chain
        // first, so the next anchor cannot hide it.
        let d2 = dir("cut");
        let p2 = d2.join("audit.log");
        std::fs::write(&p2, [lines[0], lines[1], lines[2]].join("\n") + "\n").expect("cut copy");
        std::fs::copy(Anchor::path(&path), Anchor::path(&p2)).expect("anchor copy");
        let metrics2 = Arc::new(Metrics::new().expect("metrics"));
        let b = Audit::open(&d2, k.clone(), metrics2).expect("reopen cut");
        b.sync();
        match verify(&p2, &k).expect("verify") {
            Verdict::Intact { entries: 4, gaps } => assert!(
                gaps[0].contains("ended at entry 3 but its anchor said entry 5"),
                "{gaps:?}"
            ),
            v => panic!("{v:?}"),
        }
        drop(b);
        let _ = std::fs::remove_dir_all(&d2);
        // A cut line (a crash mid-write) is dropped when the trail reopens.
        std::fs::write(&path, format!("{good}{{\"seq\":6,\"ti")).expect("cut");
        drop(a);
        let a = Audit::open(&d, k.clone(), metrics).expect("reopen");
        a.record("root (uid 0)", "keys rotate-master", "", "ok");
        a.sync();
        assert_eq!(verify(&path, &k).expect("verify"), intact(6));
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
