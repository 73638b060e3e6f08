//! The core's handle on an agent's session ([`Link`]): its control
//! messages, and the routing of its media datagrams to each call's media
//! task by flow (done by the shard's engine, [`super::engine`]).

use tokio::sync::mpsc;

use super::engine::Conn;
use super::protocol::{close, ServerMsg};

/// The core's handle on a session: control messages and media datagrams.
#[derive(Clone, Debug)]
pub struct Link {
    pub conn: Conn,
    /// The media shard the session runs on: its calls' media run there
    /// too.
    pub shard: usize,
    tx: mpsc::Sender<ServerMsg>,
}

/// Datagrams queued per call before the newest are dropped.
pub const FLOW_QUEUE: usize = 64;

impl Link {
    /// A link on `conn` whose control messages go to the given queue (the
    /// session task reads it; a simulation reads it itself).
    pub(crate) fn new(conn: Conn, shard: usize, tx: mpsc::Sender<ServerMsg>) -> Self {
        Self { conn, shard, tx }
    }

    /// Routes this session's datagrams for `flow` to `to` (the packet
    /// after the flow identifier) until `to` closes.
    pub fn add_flow(&self, flow: u64, to: mpsc::Sender<bytes::Bytes>) -> bool {
        self.conn.add_flow(flow, to)
    }

    /// Queues a control message; false if the session is gone or stuck
    /// (then it is closed).
    pub fn send(&self, msg: ServerMsg) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.conn.close(close::PROTOCOL, b"control stream stalled");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}
