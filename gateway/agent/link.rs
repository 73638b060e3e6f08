//! The core's handle on an agent's session ([`Link`]): its control
//! messages, and its connection (whose shard engine,
//! [`super::engine`], runs the session's calls' media).

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

impl Link {
    /// A link on `conn` whose control messages go to the given queue (the
    /// session task reads it; a simulation reads it itself).
    pub fn new(conn: Conn, shard: usize, tx: mpsc::Sender<ServerMsg>) -> Self {
        Self { conn, shard, tx }
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
