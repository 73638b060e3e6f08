//! The record writer: one thread that seals records, writes them in
//! groups and makes each group durable with one fsync before counting it
//! as recorded. Whoever hands it a record can wait for that (an ack);
//! the call core does not wait, it only hands records over.
//!
//! Never a lost record: the queue is bounded (a full queue makes the
//! sender wait, it does not drop), and a group that fails to write is
//! kept and retried, counted in `tollgate_cdr_write_errors_total`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info};

use super::record::Record;
use super::store::{CdrError, RecordId, Store};
use crate::admin::metrics::Metrics;

/// Records queued before senders wait.
const QUEUE: usize = 65_536;
/// Most records in one durable group.
const GROUP: usize = 8192;

/// A durable write's outcome, for those who wait.
pub type Ack = tokio::sync::oneshot::Sender<Result<RecordId, String>>;

enum Job {
    Put(RecordId, Box<Record>, Instant, Option<Ack>),
    Stop,
}

/// The handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: SyncSender<Job>,
    seq: Arc<AtomicU32>,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Writer {
    /// Starts the writer thread on `store`.
    pub fn start(store: Arc<Store>, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("cdr-writer".into())
            .spawn(move || run(&store, &metrics, &rx))?;
        // A random start, so two runs' ids never meet within a millisecond.
        Ok(Self {
            tx,
            seq: Arc::new(AtomicU32::new(crate::keys::random_u32())),
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
        })
    }

    /// A new record's id.
    pub fn next_id(&self, start_ms: u64) -> RecordId {
        RecordId {
            start_ms,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Queues `r` under `id`; `ack`, if given, hears once it is durable.
    /// Waits only when the queue is full.
    pub fn put(&self, id: RecordId, r: Record, ack: Option<Ack>) {
        if self
            .tx
            .send(Job::Put(id, Box::new(r), Instant::now(), ack))
            .is_err()
        {
            error!(record = %id, "the record writer has stopped; record not written");
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

fn run(store: &Store, metrics: &Metrics, rx: &Receiver<Job>) {
    let mut group: Vec<(RecordId, Record)> = Vec::with_capacity(GROUP);
    let mut acks: Vec<(RecordId, Instant, Option<Ack>)> = Vec::with_capacity(GROUP);
    let mut stopping = false;
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
        let mut failures = 0u32;
        loop {
            match write(store, &group) {
                Ok(()) => break,
                Err(e) => {
                    metrics.cdr_write_errors.inc();
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        error!(
                            "writing {} call records failed ({e}); retrying",
                            group.len()
                        );
                    }
                    if stopping && failures >= 5 {
                        error!("stopping with {} call records unwritten", group.len());
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200).saturating_mul(failures.min(10)));
                }
            }
        }
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
        group.clear();
    }
    info!("record writer stopped");
}

fn write(store: &Store, group: &[(RecordId, Record)]) -> Result<(), CdrError> {
    store.put_all(group)?;
    store.flush()
}
