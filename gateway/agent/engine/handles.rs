//! The engine's boundary: what its owner, the sessions and the calls
//! hold ([`Listener`], [`Conn`], [`EngineHandle`], [`CallMedia`]), and how
//! a call's waker puts it on the engine's ready list.

use super::*;

/// What to do with a new connection attempt.
pub enum Admit {
    /// Prove the address first (a Retry packet).
    Retry,
    /// Refuse it (a CONNECTION_CLOSE, no state kept).
    Refuse,
    /// Start the handshake; `place` is dropped when the handshake ends,
    /// however it ends.
    Accept(Box<dyn Any + Send>),
}

/// The engine's owner: decides on new connections and runs sessions.
pub trait Listener: Send + Sync + 'static {
    fn incoming(&self, source: SocketAddr, validated: bool, may_retry: bool) -> Admit;
    /// A handshake finished: `control` carries what the agent writes on
    /// its control stream, and closes when the stream or the connection
    /// ends.
    fn connected(&self, conn: Conn, control: mpsc::Receiver<Bytes>);
    /// A handshake failed (`None`: it took longer than allowed).
    fn failed(&self, source: IpAddr, why: Option<&ConnectionError>);
}

/// Which connection, and which life of its slot: quinn-proto reuses
/// handles, so a command from an ended connection's holder must not
/// reach the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Key {
    pub(super) handle: usize,
    pub(super) serial: u64,
}

pub(super) enum Cmd {
    Write(Key, Bytes),
    Close(Key, u32, Bytes),
    Flow(Key, u64, mpsc::Sender<Bytes>),
    Call(Key, Box<dyn CallMedia>),
    Shutdown(u32, Bytes, oneshot::Sender<()>),
}

/// Buffers the engine lends every call it runs (one set per shard).
pub struct Scratch {
    pub buf: Vec<u8>,
    pub out: Vec<u8>,
    /// [`RECV_BATCH`] receive slots of [`RECV_SLOT`] bytes, for a batched
    /// receive (a slot holds a whole GRO train).
    pub batch: Vec<u8>,
}

/// Datagrams one batched receive asks for: fewer back means the socket is
/// empty, so no call to hear `EAGAIN` is needed.
pub const RECV_BATCH: usize = 2;
/// Bytes per receive slot: the largest GRO train the kernel hands over.
pub const RECV_SLOT: usize = 64 * 1024;

impl Default for Scratch {
    fn default() -> Self {
        Self {
            buf: vec![0; 2048],
            out: vec![0; 2048],
            batch: vec![0; RECV_BATCH * RECV_SLOT],
        }
    }
}

/// Whether a call goes on.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    Alive,
    /// It is over (its owner ended it, or its media timed out).
    Ended,
}

/// A call's media as the engine runs it beside its agent's connection
/// (the call layer's `AgentCall`; the engine only drives it).
pub trait CallMedia: Send {
    /// The agent's flow: its datagrams with this identifier come here.
    fn flow(&self) -> u64;
    /// Its sockets and control, until they would block (then `cx` is
    /// woken when ready) or its turn's budget is spent (then `cx` is
    /// woken at once). `send` hands a datagram to the agent's connection;
    /// `false` means QUIC dropped one for congestion.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        s: &mut Scratch,
        send: &mut dyn FnMut(Bytes) -> bool,
    ) -> Turn;
    /// One datagram from the agent, after its flow identifier.
    fn agent_datagram(&mut self, d: &[u8], s: &mut Scratch);
    /// Timed work, every [`TICK`] or so.
    fn tick(&mut self, now: Instant, s: &mut Scratch) -> Turn;
    /// The call is over (its connection went, or it ended itself).
    fn end(self: Box<Self>);
}

/// Where a flow's datagrams go.
pub(super) enum Route {
    /// A queue (whoever reads it).
    Queue(mpsc::Sender<Bytes>),
    /// A call the engine runs: its slot.
    Call(usize),
}

/// The calls whose sockets or control became ready since the engine
/// last looked, and the engine's waker.
#[derive(Default)]
pub(super) struct Ready {
    pub(super) list: Mutex<(Vec<usize>, Option<Waker>)>,
}

impl Ready {
    /// Swaps the ready calls into `into` (emptied first); pending if none.
    pub(super) fn poll_take(&self, cx: &mut Context<'_>, into: &mut Vec<usize>) -> Poll<()> {
        into.clear();
        let mut l = self.list.lock().unwrap_or_else(|p| p.into_inner());
        if l.0.is_empty() {
            if !l.1.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                l.1 = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        std::mem::swap(&mut l.0, into);
        Poll::Ready(())
    }
}

/// A call's waker: puts its slot on the ready list once per turn.
pub(super) struct CallWake {
    pub(super) slot: usize,
    pub(super) queued: AtomicBool,
    pub(super) ready: Arc<Ready>,
}

impl Wake for CallWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut l = self.ready.list.lock().unwrap_or_else(|p| p.into_inner());
        l.0.push(self.slot);
        if let Some(w) = &l.1 {
            w.wake_by_ref();
        }
    }
}

/// A call the engine runs, on one of its connections.
pub(super) struct CallSlot {
    pub(super) call: Box<dyn CallMedia>,
    pub(super) conn: Key,
    pub(super) wake: Arc<CallWake>,
    pub(super) waker: Waker,
}

/// A session's handle on its connection (cheap to clone).
#[derive(Clone, Debug)]
pub struct Conn {
    pub(super) key: Key,
    pub(super) remote: SocketAddr,
    pub(super) peer: Arc<Vec<CertificateDer<'static>>>,
    pub(super) cmds: mpsc::UnboundedSender<Cmd>,
    pub(super) media: mpsc::Sender<(Key, Bytes)>,
    pub(super) closed: watch::Receiver<bool>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

/// Why a datagram was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The engine is behind: dropped (counted as congestion).
    Full,
    /// The connection or the engine is gone.
    Closed,
}

impl Conn {
    pub fn remote_address(&self) -> SocketAddr {
        self.remote
    }

    /// The agent's certificate chain, leaf first.
    pub fn peer_certs(&self) -> &[CertificateDer<'static>] {
        &self.peer
    }

    /// Closes the connection with an application error code.
    pub fn close(&self, code: u32, reason: &[u8]) {
        let _ = self
            .cmds
            .send(Cmd::Close(self.key, code, Bytes::copy_from_slice(reason)));
    }

    /// Appends to the control stream; false if the engine is gone.
    pub fn write(&self, bytes: Bytes) -> bool {
        self.cmds.send(Cmd::Write(self.key, bytes)).is_ok()
    }

    /// Routes the datagrams of `flow` (after the flow identifier) to `to`
    /// until `to` closes.
    pub fn add_flow(&self, flow: u64, to: mpsc::Sender<Bytes>) -> bool {
        self.cmds.send(Cmd::Flow(self.key, flow, to)).is_ok()
    }

    /// Has the engine run `call` beside this connection: the agent's
    /// datagrams of its flow go to it, and it ends when the connection
    /// does (then, or if the engine is gone, at once: its record still
    /// gets its media).
    pub fn adopt(&self, call: Box<dyn CallMedia>) {
        if let Err(mpsc::error::SendError(Cmd::Call(_, call))) =
            self.cmds.send(Cmd::Call(self.key, call))
        {
            call.end();
        }
    }

    /// Queues one media datagram for the agent.
    pub fn send_datagram(&self, d: Bytes) -> Result<(), SendError> {
        self.media.try_send((self.key, d)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves once the connection is closed (by either end, or lost).
    pub async fn closed(&self) {
        let mut rx = self.closed.clone();
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// The owner's handle on a running engine.
#[derive(Clone, Debug)]
pub struct EngineHandle {
    pub(super) cmds: mpsc::UnboundedSender<Cmd>,
}

impl EngineHandle {
    /// Closes every connection with `code`, refuses new ones, and
    /// resolves once the closes were handed to the socket.
    pub async fn shutdown(&self, code: u32, reason: &[u8]) {
        let (tx, rx) = oneshot::channel();
        if self
            .cmds
            .send(Cmd::Shutdown(code, Bytes::copy_from_slice(reason), tx))
            .is_ok()
        {
            let _ = rx.await;
        }
    }
}
