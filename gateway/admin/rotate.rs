//! Rotating the master key while the gateway runs
//! (`tollgate keys rotate-master`).
//!
//! What is sealed under the master key, each in its own file: the record
//! store's day keys (`cdr/day-keys`), the audit key (`audit.key`), the
//! agent CA's key (`agents/ca.key.sealed`) and the agents' TOTP secrets
//! (`agents/agents.json`); on a development setup, the key file itself
//! too, since the gateway owns it. A rotation re-seals every one under the
//! new key and switches them all at once, so that a crash at any point
//! leaves one key that opens everything:
//!
//! 1. each file's new content is written beside it as `NAME.next` and
//!    synced;
//! 2. the journal `rotate-master.journal` is written and synced: the
//!    commit point;
//! 3. each `.next` is renamed over its file, the directories are synced,
//!    and the journal is removed.
//!
//! At start, before any of them is opened, [`recover`] finishes what a
//! crash interrupted: with a journal, the remaining renames (the rotation
//! had committed); without one, it removes stray `.next` files (it had
//! not). The record store, the agents' registry and the day keys are held
//! locked from step 1 until the new key is in use, so nothing is sealed
//! under the old key meanwhile.
//!
//! Data keys themselves do not change (a rotation is re-wrapping, not
//! re-encrypting every record), so it takes milliseconds whatever the
//! store holds. Destroying the old key afterwards is what makes an old
//! copy of the key files useless.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::agent::store::Store as Agents;
use crate::cdr::store::Store as Records;
use crate::keys::{write_private, Master, Sealer, KEY_LEN};

/// The journal's file name, in the data directory.
pub const JOURNAL: &str = "rotate-master.journal";

/// Why a rotation or its recovery failed. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("the new master key is the one in use (id {0})")]
    Same(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Stage(String),
    #[error("{path}: a rotation journal naming {named}, which is not a file the master key seals; remove the journal by hand once you know why it is there")]
    Foreign { path: PathBuf, named: PathBuf },
    #[error("{path}: damaged rotation journal ({why})")]
    Journal { path: PathBuf, why: String },
}

#[derive(Serialize, Deserialize)]
struct Journal {
    /// Unix ms.
    at_ms: u64,
    /// The new key's id.
    new_key: String,
    /// The files being switched.
    files: Vec<PathBuf>,
}

/// The files the master key seals, for `data_dir` (and the development
/// key file when that is the key in use).
pub fn sealed_files(data_dir: &Path, dev_key: Option<&Path>) -> Vec<PathBuf> {
    let agents = Agents::new(data_dir);
    let mut v = vec![
        Records::dir(data_dir).join("day-keys"),
        data_dir.join("audit.key"),
        agents.dir().join("ca.key.sealed"),
        agents.path(),
    ];
    v.extend(dev_key.map(Path::to_path_buf));
    v
}

fn next_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".next");
    path.with_file_name(name)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RotateError {
    let path = path.to_path_buf();
    move |source| RotateError::Io { path, source }
}

fn sync_dir(path: &Path) -> Result<(), RotateError> {
    crate::keys::sync_parent(path).map_err(io(path))
}

/// A set of files switched together (the steps in the module doc). Staged
/// files that were never committed are removed when it is dropped.
pub struct Switch {
    journal: PathBuf,
    files: Vec<PathBuf>,
    committed: bool,
}

impl Switch {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            journal: data_dir.join(JOURNAL),
            files: Vec::new(),
            committed: false,
        }
    }

    /// Step 1 for one file.
    pub fn stage(&mut self, path: &Path, bytes: &[u8]) -> Result<(), RotateError> {
        let next = next_path(path);
        self.files.push(path.to_path_buf());
        write_private(&next, bytes, true).map_err(io(&next))
    }

    /// Step 2, the commit point, then step 3. Once the journal is on disk
    /// the switch happens, here or at the next start, whatever fails after.
    pub fn commit(mut self, new_key: &str, at_ms: u64) -> Result<(), RotateError> {
        let journal = Journal {
            at_ms,
            new_key: new_key.to_string(),
            files: self.files.clone(),
        };
        let text = serde_json::to_vec_pretty(&journal).map_err(|e| RotateError::Journal {
            path: self.journal.clone(),
            why: e.to_string(),
        })?;
        write_private(&self.journal, &text, true).map_err(io(&self.journal))?;
        self.committed = true;
        finish(&self.journal, &self.files)
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        if !self.committed {
            for f in &self.files {
                let _ = std::fs::remove_file(next_path(f));
            }
        }
    }
}

/// Step 3: every staged file over its original, then the journal gone.
fn finish(journal: &Path, files: &[PathBuf]) -> Result<(), RotateError> {
    for f in files {
        let next = next_path(f);
        match std::fs::rename(&next, f) {
            Ok(()) => sync_dir(f)?,
            // Renamed before a crash.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&next)(e)),
        }
    }
    std::fs::remove_file(journal).map_err(io(journal))?;
    sync_dir(journal)
}

/// What [`recover`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Recovered {
    /// No rotation was under way.
    Nothing,
    /// A committed rotation was finished: its new key id, and when.
    Finished { new_key: String, at_ms: u64 },
    /// An uncommitted one was undone: how many staged files were removed.
    Undone(usize),
}

/// Finishes or undoes a rotation a crash interrupted. Runs at start before
/// the master key is loaded (the development key file may be one of the
/// files) and before anything sealed is opened.
pub fn recover(data_dir: &Path, dev_key: Option<&Path>) -> Result<Recovered, RotateError> {
    let journal_path = data_dir.join(JOURNAL);
    let known = sealed_files(data_dir, dev_key);
    let text = match std::fs::read(&journal_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut n = 0;
            for f in &known {
                let next = next_path(f);
                match std::fs::remove_file(&next) {
                    Ok(()) => n += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&next)(e)),
                }
            }
            return Ok(if n == 0 {
                Recovered::Nothing
            } else {
                Recovered::Undone(n)
            });
        }
        Err(e) => return Err(io(&journal_path)(e)),
    };
    let journal: Journal = serde_json::from_slice(&text).map_err(|e| RotateError::Journal {
        path: journal_path.clone(),
        why: e.to_string(),
    })?;
    // Only ever rename over files the master key seals, whatever the
    // journal says.
    if let Some(f) = journal.files.iter().find(|f| !known.contains(f)) {
        return Err(RotateError::Foreign {
            path: journal_path,
            named: f.clone(),
        });
    }
    finish(&journal_path, &journal.files)?;
    Ok(Recovered::Finished {
        new_key: journal.new_key,
        at_ms: journal.at_ms,
    })
}

/// What a rotation did.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, Clone)]
pub struct Rotated {
    pub old_key: String,
    pub new_key: String,
    /// Days of call records whose keys were re-wrapped.
    pub record_days: usize,
    /// Agent enrolments whose TOTP secrets were re-sealed.
    pub agents: usize,
    /// Whether the development key file was replaced (else the operator
    /// installs the new key before the next start).
    pub dev_key_replaced: bool,
    /// Set when the switch committed but a file could not be renamed: the
    /// new key is in use and the next start finishes the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unfinished: Option<String>,
}

/// A rotation staged (step 1 done), holding its locks.
struct Staged<'a> {
    switch: Switch,
    days: crate::cdr::store::StagedKeys<'a>,
    agents: crate::agent::store::StagedAgents,
}

/// Step 1: everything re-sealed under `new` and written beside its file.
fn stage<'a>(
    data_dir: &Path,
    records: &'a Records,
    old: &Sealer,
    new: &Arc<Sealer>,
    dev_key: Option<(&Path, &[u8; KEY_LEN])>,
    now_ms: u64,
) -> Result<Staged<'a>, RotateError> {
    let err = |e: &dyn std::fmt::Display| RotateError::Stage(e.to_string());
    // Locks in a fixed order: day keys, then the agents' registry.
    let days = records
        .stage_master(new.clone(), now_ms)
        .map_err(|e| err(&e))?;
    let agents = Agents::new(data_dir)
        .stage_master(old, new)
        .map_err(|e| err(&e))?;
    let audit = crate::telemetry::audit::resealed_key(data_dir, old, new).map_err(|e| err(&e))?;
    let mut switch = Switch::new(data_dir);
    switch.stage(&days.path, &days.bytes)?;
    for (path, bytes) in &agents.files {
        switch.stage(path, bytes)?;
    }
    switch.stage(&audit.0, &audit.1)?;
    if let Some((path, key)) = dev_key {
        let hex = zeroize::Zeroizing::new(data_encoding::HEXLOWER.encode(key) + "\n");
        switch.stage(path, hex.as_bytes())?;
    }
    Ok(Staged {
        switch,
        days,
        agents,
    })
}

/// Re-seals everything under `new_key` and makes it the running key.
pub fn rotate(
    data_dir: &Path,
    records: &Records,
    master: &Master,
    dev_key: Option<&Path>,
    new_key: &[u8; KEY_LEN],
    now_ms: u64,
) -> Result<Rotated, RotateError> {
    let old = master.current();
    let new = Arc::new(Sealer::from_key(new_key));
    if old.id() == new.id() {
        return Err(RotateError::Same(new.id().to_string()));
    }
    let Staged {
        switch,
        days,
        agents,
    } = stage(
        data_dir,
        records,
        &old,
        &new,
        dev_key.map(|p| (p, new_key)),
        now_ms,
    )?;
    let unfinished = match switch.commit(new.id(), now_ms) {
        Ok(()) => None,
        // Not committed: the staged files are gone, the old key stays.
        Err(e) if !data_dir.join(JOURNAL).exists() => return Err(e),
        // Committed: the new key is the one even though a rename failed;
        // the next start finishes the switch.
        Err(e) => Some(e),
    };
    let record_days = days.apply();
    master.replace(new.clone());
    Ok(Rotated {
        old_key: old.id().to_string(),
        new_key: new.id().to_string(),
        record_days,
        agents: agents.agents,
        dev_key_replaced: dev_key.is_some(),
        unfinished: unfinished.map(|e| e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::record::{Direction, Record};
    use crate::cdr::store::RecordId;

    const NOW: u64 = 1_790_000_000_000;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tollgate-rotate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("data")).expect("temp dir");
        d
    }

    fn record(start_ms: u64) -> Record {
        Record::new(
            "call@x",
            Direction::Inbound,
            "+447700900111",
            "+442079460000",
            start_ms,
        )
    }

    /// Test keys are 32 copies of one byte.
    fn key(b: u8) -> Sealer {
        Sealer::from_key(&[b; 32])
    }

    const ID: RecordId = RecordId {
        start_ms: NOW - 1000,
        seq: 1,
    };

    /// A data directory with a record, an agent and an audit key, all
    /// under key `k`.
    fn populate(data: &Path, k: u8) {
        let store = Records::open(data, Arc::new(key(k))).expect("open");
        store.put_all(&[(ID, record(ID.start_ms))]).expect("put");
        store.flush().expect("flush");
        Agents::new(data)
            .enroll(&key(k), "alice", None, "127.0.0.1:4433")
            .expect("enrol");
        crate::telemetry::audit::key(data, &key(k)).expect("audit key");
    }

    /// Whether key `k` opens every sealed file under `data`.
    fn opens_all(data: &Path, k: u8) -> bool {
        let Ok(store) = Records::open(data, Arc::new(key(k))) else {
            return false;
        };
        let rec = store.get(ID).ok().flatten().map(|r| r.caller);
        let agents = Agents::new(data).load().expect("registry");
        rec.as_ref().map(|n| n.reveal()) == Some("+447700900111")
            && crate::telemetry::audit::key(data, &key(k)).is_ok()
            && crate::agent::pki::Ca::open_or_create(Agents::new(data).dir(), &key(k)).is_ok()
            && agents.len() == 1
            && agents.iter().all(|a| a.totp_secret(&key(k)).is_ok())
    }

    fn leftovers(data: &Path, dev: Option<&Path>) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = sealed_files(data, dev)
            .iter()
            .map(|f| next_path(f))
            .filter(|p| p.exists())
            .collect();
        if data.join(JOURNAL).exists() {
            v.push(data.join(JOURNAL));
        }
        v
    }

    #[test]
    fn a_rotation_reseals_everything_and_the_running_key_changes() {
        let d = dir("whole");
        let data = d.join("data");
        let dev = d.join("data.master-key");
        write_private(
            &dev,
            data_encoding::HEXLOWER.encode(&[1; 32]).as_bytes(),
            false,
        )
        .expect("dev key");
        populate(&data, 1);
        let store = Records::open(&data, Arc::new(key(1))).expect("open");
        let master = Master::new(key(1));
        let same = rotate(&data, &store, &master, Some(&dev), &[1; 32], NOW);
        assert!(matches!(same, Err(RotateError::Same(_))), "{same:?}");
        let r = rotate(&data, &store, &master, Some(&dev), &[2; 32], NOW).expect("rotate");
        assert_eq!(
            r,
            Rotated {
                old_key: key(1).id().into(),
                new_key: key(2).id().into(),
                record_days: 1,
                agents: 1,
                dev_key_replaced: true,
                unfinished: None,
            }
        );
        assert_eq!(master.current().id(), key(2).id());
        // The running store goes on: old records open, new ones seal.
        assert!(store.get(ID).expect("get").is_some());
        drop(store);
        assert!(leftovers(&data, Some(&dev)).is_empty());
        assert!(opens_all(&data, 2));
        assert!(!opens_all(&data, 1));
        assert_eq!(
            Sealer::load(&dev, false).expect("dev key").id(),
            key(2).id(),
            "the development key file holds the new key"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A crash at each point of the switch leaves exactly one key that
    /// opens everything once [`recover`] has run.
    #[test]
    fn a_crash_at_any_step_recovers_to_one_key() {
        // How many files to rename by hand after the journal (None: crash
        // before the journal).
        for renamed in [None, Some(0), Some(1), Some(3), Some(4)] {
            let d = dir(&format!("crash-{renamed:?}"));
            let data = d.join("data");
            populate(&data, 3);
            {
                let store = Records::open(&data, Arc::new(key(3))).expect("open");
                let new = Arc::new(key(4));
                let staged = stage(&data, &store, &key(3), &new, None, NOW).expect("stage");
                assert_eq!(staged.switch.files.len(), 4);
                if let Some(n) = renamed {
                    let journal = Journal {
                        at_ms: NOW,
                        new_key: key(4).id().into(),
                        files: staged.switch.files.clone(),
                    };
                    let text = serde_json::to_vec(&journal).expect("json");
                    write_private(&data.join(JOURNAL), &text, true).expect("journal");
                    for f in staged.switch.files.iter().take(n) {
                        std::fs::rename(next_path(f), f).expect("rename");
                    }
                }
                // The process dies here: nothing is cleaned up.
                std::mem::forget(staged.switch);
            }
            assert!(!leftovers(&data, None).is_empty());
            let got = recover(&data, None).expect("recover");
            match renamed {
                None => {
                    assert_eq!(got, Recovered::Undone(4));
                    assert!(opens_all(&data, 3), "uncommitted: the old key");
                    assert!(!opens_all(&data, 4));
                }
                Some(n) => {
                    assert_eq!(
                        got,
                        Recovered::Finished {
                            new_key: key(4).id().into(),
                            at_ms: NOW
                        },
                        "{n} renamed"
                    );
                    assert!(opens_all(&data, 4), "committed: the new key ({n} renamed)");
                    assert!(!opens_all(&data, 3));
                }
            }
            assert!(leftovers(&data, None).is_empty());
            assert_eq!(recover(&data, None).expect("again"), Recovered::Nothing);
            let _ = std::fs::remove_dir_all(&d);
        }
    }

    #[test]
    fn a_journal_naming_another_file_is_refused() {
        let d = dir("foreign");
        let data = d.join("data");
        let journal = Journal {
            at_ms: NOW,
            new_key: "x".into(),
            files: vec![PathBuf::from("/etc/passwd")],
        };
        std::fs::write(
            data.join(JOURNAL),
            serde_json::to_vec(&journal).expect("json"),
        )
        .expect("write");
        let e = recover(&data, None).expect_err("refused");
        assert!(matches!(e, RotateError::Foreign { .. }), "{e}");
        std::fs::write(data.join(JOURNAL), b"{not json").expect("write");
        assert!(matches!(
            recover(&data, None),
            Err(RotateError::Journal { .. })
        ));
        let _ = std::fs::remove_dir_all(&d);
    }
}
