//! The core's handle on an agent's session ([`Link`]): its control
//! messages, and the routing of its media datagrams to each call's media
//! task by flow.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::protocol::{self, close, ServerMsg};
use crate::telemetry::metrics::Metrics;

/// The core's handle on a session: control messages and media datagrams.
#[derive(Clone, Debug)]
pub struct Link {
    pub conn: quinn::Connection,
    /// The media shard the session runs on: its calls' media run there
    /// too.
    pub shard: usize,
    tx: mpsc::Sender<ServerMsg>,
    flows: mpsc::Sender<(u64, mpsc::Sender<bytes::Bytes>)>,
}

/// Datagrams queued per call before the newest are dropped.
pub const FLOW_QUEUE: usize = 64;

impl Link {
    /// A link on `conn` whose control messages and flows go to the given
    /// queues (the session task reads them; a simulation reads them
    /// itself).
    pub(crate) fn new(
        conn: quinn::Connection,
        shard: usize,
        tx: mpsc::Sender<ServerMsg>,
        flows: mpsc::Sender<(u64, mpsc::Sender<bytes::Bytes>)>,
    ) -> Self {
        Self {
            conn,
            shard,
            tx,
            flows,
        }
    }

    /// Routes this session's datagrams for `flow` to `to` (the packet
    /// after the flow identifier) until `to` closes.
    pub fn add_flow(&self, flow: u64, to: mpsc::Sender<bytes::Bytes>) -> bool {
        self.flows.try_send((flow, to)).is_ok()
    }

    /// Queues a control message; false if the session is gone or stuck
    /// (then it is closed).
    pub fn send(&self, msg: ServerMsg) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.conn
                    .close(close::PROTOCOL.into(), b"control stream stalled");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Hands each datagram of a session to its call's media task, by flow.
/// A full queue drops the datagram (the media task is behind; audio is
/// better late-dropped than queued), an unknown flow is counted.
pub(super) async fn dispatch_datagrams(
    conn: quinn::Connection,
    mut add: mpsc::Receiver<(u64, mpsc::Sender<bytes::Bytes>)>,
    metrics: Arc<Metrics>,
) {
    let mut flows: HashMap<u64, mpsc::Sender<bytes::Bytes>> = HashMap::new();
    let unknown = metrics
        .agent_datagrams_dropped
        .with_label_values(&["unknown_flow"]);
    let congestion = metrics
        .agent_datagrams_dropped
        .with_label_values(&["congestion"]);
    loop {
        tokio::select! {
            d = conn.read_datagram() => {
                let Ok(d) = d else { break };
                let Some((flow, n)) = protocol::get_varint(&d) else {
                    unknown.inc();
                    continue;
                };
                let delivered = match flows.get(&flow) {
                    Some(tx) => match tx.try_send(d.slice(n..)) {
                        Ok(()) => true,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            congestion.inc();
                            true
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            flows.remove(&flow);
                            false
                        }
                    },
                    None => false,
                };
                if !delivered {
                    unknown.inc();
                }
            }
            f = add.recv() => match f {
                Some((flow, tx)) => {
                    flows.retain(|_, t| !t.is_closed());
                    flows.insert(flow, tx);
                }
                None => break,
            },
        }
    }
}
