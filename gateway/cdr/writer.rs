//! The record writer: one thread that seals records, writes them in
//! groups and makes each group durable with one fsync before counting it
//! as recorded. Whoever hands it a record can wait for that (an ack).
//!
//! The call core never waits for storage: [`Writer::put`] queues a record
//! or, when the queue is full, sheds it. Calls matter more than their
//! records, and a full or failing disk must not freeze SIP and agents
//! (the watchdog would kill the process, and a restart on the same disk
//! would fail). So records are shed, never call handling, and every shed
//! record is counted in `tollgate_cdr_records_shed_total{reason}`:
//!
//! - `queue_full`: the writer is behind by [`QUEUE`] records;
//! - `disk_floor`: the data directory's filesystem has less free space
//!   than `records.min_free_mb` (checked before each group; the floor
//!   keeps the database from ever meeting ENOSPC mid-write);
//! - `write_failed`: a group failed [`ATTEMPTS`] times (an I/O error);
//! - `store_unavailable`: the store could not open at start (a full disk:
//!   the gateway serves calls without records and says so).
//!
//! `tollgate_cdr_storage_ok` is 1 while records are being kept and 0
//! while they are being shed; the alert `TollgateRecordsNotKept` fires on
//! it. It returns to 1 by itself once a group is written again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::record::Record;
use super::store::{CdrError, RecordId, Store};
use crate::telemetry::metrics::Metrics;

/// Records queued before new ones are shed. A record is well under 2 KiB
/// (its fields are bounded), so the queue stays under 32 MiB.
pub const QUEUE: usize = 16_384;
/// Most records in one durable group.
const GROUP: usize = 8192;
/// Tries of one group before it is shed.
const ATTEMPTS: u32 = 4;

/// A durable write's outcome, for those who wait.
pub type Ack = tokio::sync::oneshot::Sender<Result<RecordId, String>>;

/// Why records were not kept: the `reason` label of
/// `tollgate_cdr_records_shed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    QueueFull,
    DiskFloor,
    WriteFailed,
    StoreUnavailable,
}

impl Shed {
    pub const ALL: [Shed; 4] = [
        Self::QueueFull,
        Self::DiskFloor,
        Self::WriteFailed,
        Self::StoreUnavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::DiskFloor => "disk_floor",
            Self::WriteFailed => "write_failed",
            Self::StoreUnavailable => "store_unavailable",
        }
    }
}

/// Where records go and the free space they must leave.
pub struct Target {
    /// `None`: the store could not open; every record is shed.
    pub store: Option<Arc<Store>>,
    /// The directory whose filesystem's free space is checked.
    pub dir: PathBuf,
    /// Free bytes below which records are shed (`records.min_free_mb`).
    pub min_free: u64,
}

enum Job {
    Put(RecordId, Box<Record>, Instant, Option<Ack>),
    Stop,
}

/// The handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: SyncSender<Job>,
    store: Option<Arc<Store>>,
    seq: Arc<AtomicU32>,
    metrics: Arc<Metrics>,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Writer {
    /// Starts the writer thread on `target`.
    pub fn start(target: Target, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let store = target.store.clone();
        let m = metrics.clone();
        metrics
            .cdr_storage_ok
            .set(i64::from(target.store.is_some()));
        // Every reason's series exists from the start, at 0.
        for r in Shed::ALL {
            metrics.cdr_records_shed.with_label_values(&[r.label()]);
        }
        let thread = std::thread::Builder::new()
            .name("cdr-writer".into())
            .spawn(move || run(&target, &m, &rx))?;
        // A random start, so two runs' ids never meet within a millisecond.
        Ok(Self {
            tx,
            store,
            seq: Arc::new(AtomicU32::new(crate::crypto::random_u32())),
            metrics,
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
        })
    }

    /// The store records go to, for reading (`None`: it could not open).
    pub fn store(&self) -> Option<Arc<Store>> {
        self.store.clone()
    }

    /// A new record's id.
    pub fn next_id(&self, start_ms: u64) -> RecordId {
        RecordId {
            start_ms,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Queues `r` under `id`; `ack`, if given, hears once it is durable
    /// (or why it was not kept). Never waits: a full queue sheds the
    /// record, counted.
    pub fn put(&self, id: RecordId, r: Record, ack: Option<Ack>) {
        match self
            .tx
            .try_send(Job::Put(id, Box::new(r), Instant::now(), ack))
        {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => shed(&self.metrics, Shed::QueueFull, job),
            Err(TrySendError::Disconnected(job)) => {
                error!(record = %id, "the record writer has stopped; record not written");
                shed(&self.metrics, Shed::WriteFailed, job);
            }
        }
    }

    /// Queues `r`, waiting while the queue is full: for callers that can
    /// wait (tools and benchmarks), never the call core.
    pub fn put_waiting(&self, id: RecordId, r: Record, ack: Option<Ack>) {
        if let Err(mpsc::SendError(job)) =
            self.tx.send(Job::Put(id, Box::new(r), Instant::now(), ack))
        {
            shed(&self.metrics, Shed::WriteFailed, job);
        }
    }

    /// Writes what is queued, stops the thread and waits for it.
    pub fn stop(&self) {
        let _ = self.tx.send(Job::Stop);
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// Counts a record that will not be kept and tells whoever waits for it.
fn shed(metrics: &Metrics, why: Shed, job: Job) {
    metrics
        .cdr_records_shed
        .with_label_values(&[why.label()])
        .inc();
    if let Job::Put(_, _, _, Some(ack)) = job {
        let _ = ack.send(Err(format!("record not kept: {}", why.label())));
    }
}

/// Whether the target can take a group now: `Err` says why not.
fn ready(target: &Target) -> Result<&Store, Shed> {
    let store = target.store.as_deref().ok_or(Shed::StoreUnavailable)?;
    if target.min_free > 0 {
        // An unreadable free space does not stop records: the write
        // itself will say whether the disk takes them.
        if let Ok(free) = fs2::available_space(&target.dir) {
            if free < target.min_free {
                return Err(Shed::DiskFloor);
            }
        }
    }
    Ok(store)
}

fn run(target: &Target, metrics: &Metrics, rx: &Receiver<Job>) {
    let mut group: Vec<(RecordId, Record)> = Vec::with_capacity(GROUP);
    let mut acks: Vec<(RecordId, Instant, Option<Ack>)> = Vec::with_capacity(GROUP);
    let mut stopping = false;
    // Whether records were being kept, to log each change once.
    let mut keeping = target.store.is_some();
    while !stopping {
        let Ok(first) = rx.recv() else { break };
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Put(id, r, queued, ack) => {
                    group.push((id, *r));
                    acks.push((id, queued, ack));
                }
                Job::Stop => stopping = true,
            }
            if group.len() < GROUP && !stopping {
                next = rx.try_recv().ok();
            }
        }
        if group.is_empty() {
            continue;
        }
        let outcome = ready(target).and_then(|store| write_tried(store, &group, metrics));
        match outcome {
            Ok(()) => {
                if !keeping {
                    info!("call records are being kept again");
                    keeping = true;
                }
                metrics.cdr_storage_ok.set(1);
                metrics.cdr_records_written.inc_by(group.len() as u64);
                let finished = group
                    .iter()
                    .filter(|(_, r)| r.outcome != super::record::Outcome::Open)
                    .count();
                metrics.cdr_records_finished.inc_by(finished as u64);
                for (id, queued, ack) in acks.drain(..) {
                    metrics
                        .cdr_write_seconds
                        .observe(queued.elapsed().as_secs_f64());
                    if let Some(a) = ack {
                        let _ = a.send(Ok(id));
                    }
                }
            }
            Err(why) => {
                if keeping {
                    error!(
                        reason = why.label(),
                        "call records are NOT being kept: {}; calls go on. Free space in the data directory (see tollgate_data_free_bytes)",
                        match why {
                            Shed::DiskFloor => "the data directory's free space is below records.min_free_mb",
                            Shed::WriteFailed => "writing to the record store fails",
                            Shed::StoreUnavailable => "the record store did not open at start (restart once the disk has room)",
                            Shed::QueueFull => "the writer is behind",
                        }
                    );
                    keeping = false;
                }
                metrics.cdr_storage_ok.set(0);
                for ((id, r), (_, queued, ack)) in group.drain(..).zip(acks.drain(..)) {
                    shed(metrics, why, Job::Put(id, Box::new(r), queued, ack));
                }
            }
        }
        group.clear();
    }
    info!("record writer stopped");
}

/// Writes a group durably, trying [`ATTEMPTS`] times with a growing
/// pause (the queue fills meanwhile, and the core sheds, never waits).
fn write_tried(store: &Store, group: &[(RecordId, Record)], metrics: &Metrics) -> Result<(), Shed> {
    for attempt in 1..=ATTEMPTS {
        match write(store, group) {
            Ok(()) => return Ok(()),
            Err(e) => {
                metrics.cdr_write_errors.inc();
                warn!(
                    "writing {} call records failed ({e}); attempt {attempt} of {ATTEMPTS}",
                    group.len()
                );
                if attempt < ATTEMPTS {
                    std::thread::sleep(Duration::from_millis(250) * attempt);
                }
            }
        }
    }
    Err(Shed::WriteFailed)
}

fn write(store: &Store, group: &[(RecordId, Record)]) -> Result<(), CdrError> {
    store.put_all(group)?;
    store.flush()
}
