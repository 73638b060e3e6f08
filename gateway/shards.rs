//! Media shards: one thread per core (configurable), each running a
//! single-threaded tokio runtime of its own. An agent's QUIC connection
//! (its endpoint driver, connection driver and session) and the media of
//! its calls (the trunk sockets and the relay) live on one shard, so a
//! relayed packet wakes tasks on its own thread only: no wake-up crosses
//! cores, no work is stolen, and no queue is shared with the signalling,
//! which keeps the multi-threaded runtime.
//!
//! Inside a shard, the agents' QUIC runs in one engine task that drives
//! quinn-proto itself, sends in batches and runs the agent calls (their
//! trunk sockets and relays) beside their connections
//! ([`crate::agent::engine`]); other calls' media are tasks of their own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The running shards; stopped (their tasks dropped) when the last handle
/// goes.
pub struct Shards {
    handles: Vec<Handle>,
    stops: Vec<Option<oneshot::Sender<()>>>,
    threads: Vec<Option<std::thread::JoinHandle<()>>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Shards({})", self.handles.len())
    }
}

impl Shards {
    /// Starts `n` shards (at least one), named `media-0`, `media-1`, ...
    pub fn start(n: usize) -> std::io::Result<Arc<Self>> {
        let n = n.max(1);
        let mut shards = Self {
            handles: Vec::with_capacity(n),
            stops: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
            next: AtomicUsize::new(0),
        };
        for i in 0..n {
            // The runtime is made, run and dropped on its own thread: one
            // dropped here, inside the daemon's async start-up, would panic.
            let (stop, stopped) = oneshot::channel::<()>();
            let (made, handle) = std::sync::mpsc::channel();
            let thread = std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = made.send(Err(e));
                            return;
                        }
                    };
                    let _ = made.send(Ok(rt.handle().clone()));
                    rt.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            // Pushed before the wait, so an error below still stops and
            // joins every thread started so far (through Drop).
            shards.stops.push(Some(stop));
            shards.threads.push(Some(thread));
            let handle = handle
                .recv()
                .map_err(|_| std::io::Error::other("a media shard's thread ended at start"))??;
            shards.handles.push(handle);
        }
        Ok(Arc::new(shards))
    }

    /// How many shards run.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Shard `i`'s runtime (modulo the count).
    pub fn handle(&self, i: usize) -> &Handle {
        &self.handles[i % self.handles.len()]
    }

    /// The next shard in turn, for work that belongs to no agent.
    pub fn pick(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len()
    }

    /// The default count: one per core the process may use.
    pub fn default_count() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        for s in &mut self.stops {
            if let Some(s) = s.take() {
                let _ = s.send(());
            }
        }
        let me = std::thread::current().id();
        for t in &mut self.threads {
            if let Some(t) = t.take() {
                // The last handle may go on a shard's own thread.
                if t.thread().id() != me {
                    let _ = t.join();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shard_runs_its_tasks_on_its_own_thread() {
        let shards = Shards::start(3).expect("start");
        assert_eq!(shards.len(), 3);
        let mut names = Vec::new();
        for i in 0..3 {
            let (tx, rx) = std::sync::mpsc::channel();
            shards.handle(i).spawn(async move {
                let _ = tx.send(std::thread::current().name().map(str::to_string));
            });
            names.push(rx.recv().expect("the task ran").expect("a named thread"));
        }
        assert_eq!(names, ["media-0", "media-1", "media-2"]);
        let picks: Vec<usize> = (0..4).map(|_| shards.pick()).collect();
        assert_eq!(picks, [0, 1, 2, 0]);
    }

    #[test]
    fn dropping_the_shards_stops_their_threads_and_tasks() {
        let shards = Shards::start(2).expect("start");
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // A task that never ends holds the sender until its runtime drops.
        shards.handle(1).spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        drop(shards);
        assert!(
            rx.recv().is_err(),
            "the task was dropped with its runtime, so the channel closed"
        );
    }
}
