//! The record store: sled for the sealed records, and a key file beside
//! it for the day keys.
//!
//! Layout under `<data dir>/cdr/`:
//! - `db/`: sled. Tree `records`: key = start time (ms, big-endian) and a
//!   sequence number, value = [`FORMAT`] then the record sealed with
//!   AES-256-GCM under its day's key, with `tollgate-cdr-v1:<day>:<id>` as
//!   associated data (a record moved to another key or day fails to
//!   open). Tree `open`: records opened at answer and not yet finished.
//! - `day-keys`: JSON, one data key per UTC day, each sealed under the
//!   master key, plus a check value sealed the same way. The master key
//!   never touches the data directory.
//!
//! Retention is crypto-shredding: an expired day's key is removed from the
//! key file (replaced atomically and synced) before its records are
//! deleted, so a copy of the database taken earlier cannot be read for
//! that day with the gateway's keys either. A copy of the key file taken
//! with it still could, with the master key: rotating the master key
//! (`tollgate keys rotate-master`) and destroying the old one closes that.
//!
//! The AEAD is `ring`'s through [`crate::keys::Sealer`], as for every
//! other secret at rest (why `ring` rather than `aes-gcm`: the module doc
//! of `crypto/aead.rs`, speed and key wiping).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::record::{Outcome, Record, FORMAT};
use crate::crypto::random;
use crate::keys::{write_private, Sealer};

const DAY_MS: u64 = 86_400_000;
/// sled's page cache.
const CACHE_BYTES: u64 = 128 * 1024 * 1024;
const CHECK_PURPOSE: &str = "tollgate-cdr-keys-check";
const CHECK_PLAIN: &[u8] = b"tollgate day keys";

/// Why the store could not do something. Never carries record contents
/// or key material.
#[derive(Debug, thiserror::Error)]
pub enum CdrError {
    #[error("the master key given (id {given}) does not open this data directory's record keys{under}; nothing was changed")]
    WrongMasterKey { given: String, under: String },
    #[error("record database: {0}")]
    Db(String),
    /// Another process (a running gateway, or a command run beside it)
    /// holds the record database.
    #[error("the record database {0} is in use by another process (is the gateway running? stop it first)")]
    InUse(PathBuf),
    #[error("record key file {path}: {why}")]
    Keys { path: PathBuf, why: String },
    #[error("record {0} is damaged or was altered")]
    Damaged(String),
    #[error("record {0}: its day's key was shredded (past retention)")]
    Shredded(String),
    #[error("the system random generator failed")]
    Random,
    /// The filesystem is full or read-only: the gateway runs on without
    /// records rather than refusing calls.
    #[error("the data directory has no room ({0})")]
    NoSpace(String),
}

/// Whether an I/O error means the disk cannot take writes (full, over
/// quota or read-only), as opposed to damage or a wrong key.
fn no_space(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{QuotaExceeded, ReadOnlyFilesystem, StorageFull};
    matches!(e.kind(), StorageFull | QuotaExceeded | ReadOnlyFilesystem)
}

impl From<sled::Error> for CdrError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) if no_space(&io) => Self::NoSpace(io.to_string()),
            e => Self::Db(e.to_string()),
        }
    }
}

/// How long [`open_db`] waits for another holder to let go of the
/// database's lock.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Opens sled, waiting a little for the file lock: sled lets go of it
/// only when its last background flush ends, which can be just after the
/// handle was dropped (a store closed and opened again in one process).
/// Held longer, it is another process's, and the error says so.
fn open_db(path: &Path) -> Result<sled::Db, CdrError> {
    let start = Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(path)
            // Bounded, and below any cgroup memory limit (sled logs an
            // error at start when its default 1 GiB is above one).
            .cache_capacity(CACHE_BYTES)
            .mode(sled::Mode::HighThroughput)
            .open();
        match opened {
            // sled 0.34 reports the lock as a message only (config.rs,
            // `try_lock`), not as an error kind.
            Err(sled::Error::Io(io)) if io.to_string().starts_with("could not acquire lock") => {
                if start.elapsed() >= LOCK_WAIT {
                    return Err(CdrError::InUse(path.to_path_buf()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return Ok(r?),
        }
    }
}

/// A record's key: its start time and a sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId {
    pub start_ms: u64,
    pub seq: u32,
}

impl RecordId {
    pub fn to_bytes(self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&self.start_ms.to_be_bytes());
        b[8..].copy_from_slice(&self.seq.to_be_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; 12] = b.try_into().ok()?;
        Some(Self {
            start_ms: u64::from_be_bytes(b[..8].try_into().ok()?),
            seq: u32::from_be_bytes(b[8..].try_into().ok()?),
        })
    }

    /// The UTC day (days since 1970-01-01) the record belongs to.
    pub fn day(self) -> u32 {
        (self.start_ms / DAY_MS) as u32
    }

    fn purpose(self) -> String {
        format!("tollgate-cdr-v1:{}:{self}", self.day())
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start_ms, self.seq)
    }
}

impl FromStr for RecordId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a record id (such as 1795852800123-42)");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        Ok(Self {
            start_ms: a.parse().map_err(|_| bad())?,
            seq: b.parse().map_err(|_| bad())?,
        })
    }
}

#[derive(Serialize, Deserialize, Default)]
struct KeyFile {
    format: u8,
    /// Sealed [`CHECK_PLAIN`], to tell a wrong master key at start.
    check: String,
    /// Day number to its sealed data key (base64).
    days: BTreeMap<u32, String>,
    /// The id of the master key they are sealed under ([`crate::keys::key_id`]),
    /// for the message when another key is given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    master: String,
    /// When the master key last rotated (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotated_ms: Option<u64>,
    /// The latest day a retention run could vouch for (see
    /// `DayKeys::vouched_ms`): the clock's high-water mark, so a clock that
    /// leaps ahead, at once or a day at a time, is noticed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    high_water_day: Option<u32>,
}

impl KeyFile {
    fn new(master: &Sealer, rotated_ms: Option<u64>) -> Result<Self, CdrError> {
        Ok(Self {
            format: 1,
            check: b64(&master
                .seal(CHECK_PURPOSE, CHECK_PLAIN)
                .map_err(|_| CdrError::Random)?),
            days: BTreeMap::new(),
            master: master.id().to_string(),
            rotated_ms,
            high_water_day: None,
        })
    }

    /// The error for a master key that does not open this file.
    fn wrong_key(&self, given: &Sealer) -> CdrError {
        let mut under = String::new();
        if !self.master.is_empty() {
            under = format!(", which are sealed under key {}", self.master);
            if let Some(t) = self.rotated_ms {
                let when = jiff::Timestamp::from_millisecond(t as i64)
                    .map_or_else(|_| format!("{t} ms"), |t| t.to_string());
                under += &format!(" since {when} (tollgate keys rotate-master)");
            }
        }
        CdrError::WrongMasterKey {
            given: given.id().to_string(),
            under,
        }
    }
}

struct DayKeys {
    path: PathBuf,
    file: KeyFile,
    master: Arc<Sealer>,
    cache: HashMap<u32, Arc<Sealer>>,
    /// The wall clock (Unix ms) at this process's first retention run (or
    /// the operator's confirmation), and the monotonic instant it was
    /// read: what [`DayKeys::vouched_ms`] reckons from.
    clock: Option<(Instant, u64)>,
}

impl DayKeys {
    /// Moves the high-water mark up to `day` (never down); whether it
    /// moved.
    fn raise_mark(&mut self, day: u32) -> bool {
        let raised = self.file.high_water_day.is_none_or(|h| day > h);
        if raised {
            self.file.high_water_day = Some(day);
        }
        raised
    }

    /// The wall clock as far as this process can vouch for it: the
    /// anchor's reading plus the monotonic time since, never more than the
    /// wall clock says now (before the first run, the wall clock).
    ///
    /// The high-water mark moves only this far, so a clock stepped ahead a
    /// day at a time (each step within the one day of slack a run allows)
    /// cannot walk the mark, and retention, through a year of records: the
    /// second step is a jump of two days past the mark, and holds. A
    /// restart trusts the wall clock once more, within that same slack.
    fn vouched_ms(&self, now_ms: u64, mono: Instant) -> u64 {
        match self.clock {
            Some((at, ms)) => {
                let elapsed = mono.saturating_duration_since(at).as_millis();
                now_ms.min(ms.saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX)))
            }
            None => now_ms,
        }
    }
}

fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

fn day_purpose(day: u32) -> String {
    format!("tollgate-cdr-day-key:{day}")
}

impl DayKeys {
    fn keys_err(&self, why: impl fmt::Display) -> CdrError {
        CdrError::Keys {
            path: self.path.clone(),
            why: why.to_string(),
        }
    }

    fn save(&self) -> Result<(), CdrError> {
        let text = serde_json::to_vec_pretty(&self.file).map_err(|e| self.keys_err(e))?;
        write_private(&self.path, &text, true).map_err(|e| {
            if no_space(&e) {
                CdrError::NoSpace(e.to_string())
            } else {
                self.keys_err(e)
            }
        })
    }

    /// The day's sealer, if the day has a key.
    fn get(&mut self, day: u32) -> Result<Option<Arc<Sealer>>, CdrError> {
        if let Some(s) = self.cache.get(&day) {
            return Ok(Some(s.clone()));
        }
        let Some(wrapped) = self.file.days.get(&day) else {
            return Ok(None);
        };
        let sealed =
            unb64(wrapped).ok_or_else(|| self.keys_err(format!("day {day}: not base64")))?;
        let key = self
            .master
            .open(&day_purpose(day), &sealed)
            .map_err(|_| self.keys_err(format!("day {day}: the key does not open")))?;
        let key: &[u8; 32] = key
            .as_slice()
            .try_into()
            .map_err(|_| self.keys_err(format!("day {day}: not a 32-byte key")))?;
        let s = Arc::new(Sealer::from_key(key));
        self.cache.insert(day, s.clone());
        Ok(Some(s))
    }

    /// The day's sealer, making (and durably saving) a key if it has none.
    fn get_or_make(&mut self, day: u32) -> Result<Arc<Sealer>, CdrError> {
        if let Some(s) = self.get(day)? {
            return Ok(s);
        }
        let mut key = Zeroizing::new([0u8; 32]);
        random(&mut key[..]).map_err(|_| CdrError::Random)?;
        let sealed = self
            .master
            .seal(&day_purpose(day), &key[..])
            .map_err(|_| CdrError::Random)?;
        self.file.days.insert(day, b64(&sealed));
        // On disk before any record sealed under it can be acknowledged.
        self.save()?;
        let s = Arc::new(Sealer::from_key(&key));
        self.cache.insert(day, s.clone());
        Ok(s)
    }
}

/// The open store. Cheap to share: sled is concurrent, the day keys sit
/// behind one mutex taken once per record.
pub struct Store {
    db: sled::Db,
    records: sled::Tree,
    open: sled::Tree,
    keys: Mutex<DayKeys>,
}

/// A master-key rotation's new day-key file, not yet in place.
pub struct StagedKeys<'a> {
    /// Where it goes, and what.
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    file: KeyFile,
    new: Arc<Sealer>,
    keys: std::sync::MutexGuard<'a, DayKeys>,
}

impl StagedKeys<'_> {
    /// The file is in place: the store uses the new master key from now
    /// on. Returns how many days were re-wrapped.
    pub fn apply(mut self) -> usize {
        let days = self.file.days.len();
        self.keys.file = self.file;
        self.keys.master = self.new;
        days
    }
}

/// The record store's keys as [`Store::key_state`] reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyState {
    /// When it last rotated (Unix ms).
    pub rotated_ms: Option<u64>,
    /// Day keys held, and the first and last day (Unix day numbers).
    pub days: usize,
    pub oldest_day: Option<u32>,
    pub newest_day: Option<u32>,
}

/// What a retention run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expired {
    pub days: usize,
    pub records: usize,
    /// Set when the run shredded nothing because the shred looked like a
    /// wrong clock or a mistake (see [`Held`]).
    pub held: Option<Held>,
}

/// Most days one retention run shreds on its own. Runs are hourly, so in
/// steady state each shreds one day; more at once means the clock jumped,
/// the gateway was off for days, or the retention period was cut, and an
/// operator confirms (`tollgate records shred --confirm`).
pub const MAX_SHRED_DAYS: usize = 2;

/// Why a retention run shredded nothing and waits for an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Held {
    /// The run would shred more than [`MAX_SHRED_DAYS`] days.
    TooManyDays { days: usize },
    /// Today (by the clock) is more than a day past the latest day a run
    /// saw (before any run, the newest record's): the clock leapt ahead,
    /// or the gateway was off for days.
    ClockAhead { today: u32, last_seen: u32 },
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooManyDays { days } => write!(
                f,
                "retention would shred {days} days of call records at once (more than {MAX_SHRED_DAYS})"
            ),
            Self::ClockAhead { today, last_seen } => write!(
                f,
                "the clock says day {today}, {} days past the last retention run (day {last_seen}): a clock jump, or days switched off?",
                today.saturating_sub(*last_seen)
            ),
        }
    }
}

/// The days a retention run would shred from `file`, and whether it must
/// hold instead (see [`Store::expire`]).
fn plan(file: &KeyFile, retention_days: u32, now_ms: u64) -> (Vec<u32>, Option<Held>) {
    let today = (now_ms / DAY_MS) as u32;
    let first_kept = (now_ms / DAY_MS).saturating_sub(u64::from(retention_days)) as u32;
    let gone: Vec<u32> = file.days.range(..first_kept).map(|(d, _)| *d).collect();
    if gone.is_empty() {
        return (gone, None);
    }
    if gone.len() > MAX_SHRED_DAYS {
        let days = gone.len();
        return (gone, Some(Held::TooManyDays { days }));
    }
    // The high-water mark of earlier runs, not the newest record: records
    // made after a jump carry the jumped clock's day.
    let newest = file.days.keys().next_back().copied();
    let last_seen = file.high_water_day.or(newest).unwrap_or(today);
    if today > last_seen.saturating_add(1) {
        return (gone, Some(Held::ClockAhead { today, last_seen }));
    }
    (gone, None)
}

impl Store {
    /// The store's directory for a data directory.
    pub fn dir(data_dir: &Path) -> PathBuf {
        data_dir.join("cdr")
    }

    /// Opens (or makes) the store. The master key is checked against the
    /// key file before the database is touched.
    pub fn open(data_dir: &Path, master: Arc<Sealer>) -> Result<Self, CdrError> {
        let dir = Self::dir(data_dir);
        std::fs::create_dir_all(&dir).map_err(|e| {
            if no_space(&e) {
                CdrError::NoSpace(e.to_string())
            } else {
                CdrError::Keys {
                    path: dir.clone(),
                    why: e.to_string(),
                }
            }
        })?;
        let path = dir.join("day-keys");
        let mut keys = DayKeys {
            path: path.clone(),
            file: KeyFile::default(),
            master,
            cache: HashMap::new(),
            clock: None,
        };
        match std::fs::read(&path) {
            Ok(text) => {
                keys.file = serde_json::from_slice(&text).map_err(|e| keys.keys_err(e))?;
                let opens = unb64(&keys.file.check)
                    .and_then(|check| keys.master.open(CHECK_PURPOSE, &check).ok())
                    .is_some_and(|p| p.as_slice() == CHECK_PLAIN);
                if !opens {
                    return Err(keys.file.wrong_key(&keys.master));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                keys.file = KeyFile::new(&keys.master, None)?;
                keys.save()?;
            }
            Err(e) => return Err(keys.keys_err(e)),
        }
        let db = open_db(&dir.join("db"))?;
        let records = db.open_tree("records")?;
        let open = db.open_tree("open")?;
        Ok(Self {
            db,
            records,
            open,
            keys: Mutex::new(keys),
        })
    }

    fn day_keys(&self) -> std::sync::MutexGuard<'_, DayKeys> {
        // A panic while holding it cannot leave the keys half-changed (the
        // file is replaced whole), so a poisoned lock is still usable.
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn seal(&self, id: RecordId, r: &Record) -> Result<Vec<u8>, CdrError> {
        let sealer = self.day_keys().get_or_make(id.day())?;
        let plain = Zeroizing::new(serde_json::to_vec(r).map_err(|e| CdrError::Db(e.to_string()))?);
        let sealed = sealer
            .seal(&id.purpose(), &plain)
            .map_err(|_| CdrError::Random)?;
        let mut v = Vec::with_capacity(1 + sealed.len());
        v.push(FORMAT);
        v.extend_from_slice(&sealed);
        Ok(v)
    }

    fn unseal(&self, id: RecordId, v: &[u8]) -> Result<Record, CdrError> {
        let damaged = || CdrError::Damaged(id.to_string());
        let (&format, sealed) = v.split_first().ok_or_else(damaged)?;
        if format != FORMAT {
            return Err(damaged());
        }
        let sealer = self
            .day_keys()
            .get(id.day())?
            .ok_or_else(|| CdrError::Shredded(id.to_string()))?;
        let plain = sealer.open(&id.purpose(), sealed).map_err(|_| damaged())?;
        serde_json::from_slice(&plain).map_err(|_| damaged())
    }

    /// Writes records (not yet durable: see [`Store::flush`]). A record
    /// whose outcome is [`Outcome::Open`] is marked open, any other has
    /// its mark removed.
    pub fn put_all(&self, items: &[(RecordId, Record)]) -> Result<(), CdrError> {
        let mut batch = sled::Batch::default();
        let mut open = sled::Batch::default();
        for (id, r) in items {
            let key = id.to_bytes();
            batch.insert(&key[..], self.seal(*id, r)?);
            if r.outcome == Outcome::Open {
                open.insert(&key[..], &[][..]);
            } else {
                open.remove(&key[..]);
            }
        }
        self.records.apply_batch(batch)?;
        self.open.apply_batch(open)?;
        Ok(())
    }

    /// Removes records (not yet durable: see [`Store::flush`]). The
    /// sealed bytes may stay in sled's free log space until sled reuses
    /// it; they open only with their day's key, which retention shreds.
    pub fn remove_all(&self, ids: &[RecordId]) -> Result<(), CdrError> {
        let mut batch = sled::Batch::default();
        let mut open = sled::Batch::default();
        for id in ids {
            let key = id.to_bytes();
            batch.remove(&key[..]);
            open.remove(&key[..]);
        }
        self.records.apply_batch(batch)?;
        self.open.apply_batch(open)?;
        Ok(())
    }

    /// Makes everything written so far durable (one fsync for a group).
    pub fn flush(&self) -> Result<(), CdrError> {
        self.db.flush()?;
        Ok(())
    }

    pub fn get(&self, id: RecordId) -> Result<Option<Record>, CdrError> {
        match self.records.get(id.to_bytes())? {
            Some(v) => self.unseal(id, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Records that started in `[from_ms, to_ms)`, oldest first (`.rev()`
    /// for newest first); each opened as it is reached (a damaged one is
    /// an error in its place).
    pub fn range(
        &self,
        from_ms: u64,
        to_ms: u64,
    ) -> impl DoubleEndedIterator<Item = Result<(RecordId, Record), CdrError>> + '_ {
        let from = RecordId {
            start_ms: from_ms,
            seq: 0,
        }
        .to_bytes();
        let to = RecordId {
            start_ms: to_ms,
            seq: 0,
        }
        .to_bytes();
        self.records.range(from..to).map(move |kv| {
            let (k, v) = kv?;
            let id = RecordId::from_bytes(&k).ok_or_else(|| CdrError::Damaged(format!("{k:?}")))?;
            self.unseal(id, &v).map(|r| (id, r))
        })
    }

    /// Records left open by a gateway that stopped without finishing them
    /// become [`Outcome::Interrupted`]; returns how many.
    pub fn recover_open(&self) -> Result<usize, CdrError> {
        let mut fixed = Vec::new();
        for kv in self.open.iter() {
            let (k, _) = kv?;
            let Some(id) = RecordId::from_bytes(&k) else {
                self.open.remove(k)?;
                continue;
            };
            match self.get(id) {
                Ok(Some(mut r)) if r.outcome == Outcome::Open => {
                    r.outcome = Outcome::Interrupted;
                    fixed.push((id, r));
                }
                // Finished, gone, or unreadable: only the mark remains.
                _ => {
                    self.open.remove(k)?;
                }
            }
        }
        let n = fixed.len();
        self.put_all(&fixed)?;
        self.flush()?;
        Ok(n)
    }

    /// Crypto-shreds days before `now_ms - retention_days`: the day keys
    /// go first (durably), then the records.
    ///
    /// Shredding cannot be undone and the wall clock can be wrong, so a
    /// run shreds nothing, and says why in [`Expired::held`], when it
    /// would take more than [`MAX_SHRED_DAYS`] days or when today is more
    /// than a day past both the newest record and the high-water mark of
    /// earlier runs (a clock set years ahead would otherwise shred
    /// everything within the hour). [`Store::shred_confirmed`] is the
    /// operator's override.
    pub fn expire(&self, retention_days: u32, now_ms: u64) -> Result<Expired, CdrError> {
        self.shred(retention_days, now_ms, Instant::now(), false)
    }

    /// [`Store::expire`] at the monotonic instant `mono` (tests).
    #[cfg(test)]
    fn expire_at(
        &self,
        retention_days: u32,
        now_ms: u64,
        mono: Instant,
    ) -> Result<Expired, CdrError> {
        self.shred(retention_days, now_ms, mono, false)
    }

    /// [`Store::expire`] without the holds, once an operator confirmed
    /// (`tollgate records shred --confirm`); the high-water mark moves to
    /// today.
    pub fn shred_confirmed(&self, retention_days: u32, now_ms: u64) -> Result<Expired, CdrError> {
        self.shred(retention_days, now_ms, Instant::now(), true)
    }

    /// The day keys held and the master key sealing them, for reports.
    pub fn key_state(&self) -> KeyState {
        let k = self.day_keys();
        KeyState {
            rotated_ms: k.file.rotated_ms,
            days: k.file.days.len(),
            oldest_day: k.file.days.keys().next().copied(),
            newest_day: k.file.days.keys().next_back().copied(),
        }
    }

    /// What [`Store::expire`] would do now: the days it would shred and
    /// whether it would hold.
    pub fn retention_plan(&self, retention_days: u32, now_ms: u64) -> (Vec<u32>, Option<Held>) {
        let k = self.day_keys();
        plan(&k.file, retention_days, now_ms)
    }

    fn shred(
        &self,
        retention_days: u32,
        now_ms: u64,
        mono: Instant,
        confirmed: bool,
    ) -> Result<Expired, CdrError> {
        let today = (now_ms / DAY_MS) as u32;
        let first_kept = (now_ms / DAY_MS).saturating_sub(u64::from(retention_days)) as u32;
        let gone: Vec<u32> = {
            let mut k = self.day_keys();
            // What this process can vouch for moves the mark before the
            // plan (see `vouched_ms`): the operator's confirmation, or the
            // last run's reading plus real time since. A first run has only
            // the wall clock, checked against the mark an earlier run left.
            let vouched = if confirmed {
                Some(now_ms)
            } else {
                k.clock.map(|_| k.vouched_ms(now_ms, mono))
            };
            let mut advanced = false;
            if let Some(v) = vouched {
                // The anchor stays where it was set (first run, or the
                // operator's word): re-anchored on a clock set back, the
                // reckoning would stay behind after it was put right.
                if confirmed {
                    k.clock = Some((mono, v));
                }
                advanced = k.raise_mark((v / DAY_MS) as u32);
            }
            let (gone, held) = plan(&k.file, retention_days, now_ms);
            if let (Some(held), false) = (held, confirmed) {
                if advanced {
                    k.save()?;
                }
                return Ok(Expired {
                    held: Some(held),
                    ..Expired::default()
                });
            }
            if vouched.is_none() {
                // Believed within the plan's one day of slack.
                k.clock = Some((mono, now_ms));
                advanced |= k.raise_mark(today);
            }
            if !gone.is_empty() {
                for d in &gone {
                    k.file.days.remove(d);
                    k.cache.remove(d);
                }
            }
            if !gone.is_empty() || advanced {
                k.save()?;
            }
            gone
        };
        let end = RecordId {
            start_ms: u64::from(first_kept) * DAY_MS,
            seq: 0,
        }
        .to_bytes();
        let mut records = 0;
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for kv in self.records.range(..end).take(10_000) {
                let (k, _) = kv?;
                batch.remove(k.clone());
                self.open.remove(k)?;
                n += 1;
            }
            if n == 0 {
                break;
            }
            self.records.apply_batch(batch)?;
            records += n;
        }
        self.flush()?;
        Ok(Expired {
            days: gone.len(),
            records,
            held: None,
        })
    }

    /// Re-wraps every day key (and the check value) under `new`, for a
    /// master-key rotation ([`crate::admin::rotate`]): the returned stage
    /// holds the key file's new content and blocks new day keys until it
    /// is applied (after the new file is in place) or dropped.
    pub fn stage_master(&self, new: Arc<Sealer>, now_ms: u64) -> Result<StagedKeys<'_>, CdrError> {
        let k = self.day_keys();
        let mut file = KeyFile::new(&new, Some(now_ms))?;
        for (d, wrapped) in &k.file.days {
            let sealed =
                unb64(wrapped).ok_or_else(|| k.keys_err(format!("day {d}: not base64")))?;
            let key = k
                .master
                .open(&day_purpose(*d), &sealed)
                .map_err(|_| k.keys_err(format!("day {d}: the key does not open")))?;
            let again = new
                .seal(&day_purpose(*d), &key)
                .map_err(|_| CdrError::Random)?;
            file.days.insert(*d, b64(&again));
        }
        file.high_water_day = k.file.high_water_day;
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| k.keys_err(e))?;
        Ok(StagedKeys {
            path: k.path.clone(),
            bytes,
            file,
            new,
            keys: k,
        })
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> Result<u64, CdrError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Records stored (all days).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
