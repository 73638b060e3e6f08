//! The agents' QUIC engine: one per media shard, a single task that owns
//! the shard's listening socket, its `quinn-proto` endpoint and every
//! connection on it, and drives them all from one loop.
//!
//! Why not quinn's own endpoint: it gives each connection a driver task
//! and a mutex, copies each received datagram into a fresh buffer, hands
//! it to the driver over a channel, and each agent session needed one
//! more task to sort its datagrams by call. Per relayed packet that was
//! two to four task wakes, a handful of lock acquisitions and an
//! allocation, and the profile of the 200-call load (issue 16's note,
//! stop 26) showed that layout, not the system calls, was the cost. Here
//! one turn of the loop
//!
//! 1. reads what the socket has (`recvmmsg` through quinn-udp, GRO),
//!    copying each datagram into a shared arena (no allocation per
//!    packet) and feeding it to its connection;
//! 2. takes every datagram the shard's calls queued for their agents;
//! 3. runs the connections that had something happen (events, their
//!    timers): an agent's media datagram goes straight to its call's
//!    queue by flow, control-stream bytes to its session;
//! 4. collects what they have to send and sends it all in `sendmmsg`
//!    batches ([`super::socket`]'s queue).
//!
//! Handshakes and the agents' control streams stay with the session code
//! ([`super::server`]): the engine asks its [`Listener`] what to do with
//! a new connection (Retry, refuse, accept), hands it each logged-in
//! connection as a [`Conn`] and the control stream as a queue of bytes,
//! and takes writes and closes back as commands.
//!
//! Measured (`taskset -c 1 tollgate loadgen --calls 300 --seconds 5
//! --gateway-cpus 0`, 300 two-way calls, no loss; this VM's noise is
//! about 15%, so runs were interleaved and medians taken):
//!
//! | layout | us of gateway CPU per relayed packet |
//! |---|---|
//! | quinn's endpoint, batched socket (before) | 20.4 |
//! | this engine, calls as tasks of their own | 18.3 |
//! | this engine running the calls | 16.4 |
//!
//! One core of the gateway now relays 58,000 packets a second before it
//! saturates (1,000 offered calls), where it saturated at 41,500. The
//! profile of the 300-call run is flat: the kernel's UDP work is 47%
//! (the trunk `sendto`s 19%, `sendmmsg` 15%, receives 11%, `epoll` 4%),
//! quinn-proto and its packet protection about 20%, the relay and SRTP
//! about 8%, this loop about 7%.
//!
//! The shard's agent calls ([`crate::calls::agent_media::AgentCall`]) run
//! inside the engine too: a call's trunk socket and control queue wake
//! it through a waker that puts the call on the engine's ready list, the
//! agent's datagrams reach its relay by flow, and what it relays towards
//! the agent is handed to the connection directly. No task, channel or
//! lock per packet.
//!
//! Bounds: an agent's control bytes beyond what its session has read
//! ([`CONTROL_CHUNKS`] chunks) stay unread in quinn-proto, whose flow
//! control holds the agent back; writes the agent has not taken
//! ([`MAX_PENDING`] bytes) end the session as stalled; the queue for
//! datagrams sent from outside the engine ([`MEDIA_QUEUE`]) drops the
//! newest when full, counted as congestion. Handshake packets get buffers
//! of their own; a call's turn is bounded, so one flooded trunk port
//! does not starve the others.

use std::any::Any;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use prometheus::IntCounter;
use quinn::udp::{RecvMeta, UdpSocketState, BATCH_SIZE};
use quinn_proto::{
    ConnectionError, ConnectionHandle, DatagramEvent, Dir, EcnCodepoint, Event, ReadError,
    SendDatagramError, StreamEvent, StreamId, VarInt, WriteError,
};
use rustls::pki_types::CertificateDer;
use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot, watch};

use super::protocol;
use super::socket::{send_from, Queue, Stats};
use crate::telemetry::metrics::Metrics;

/// Control-stream chunks read ahead of the session; past that, the rest
/// waits in quinn-proto (whose flow control holds the agent back).
pub const CONTROL_CHUNKS: usize = 256;
/// The largest control-stream chunk handed over.
const CHUNK: usize = 4096;
/// Control bytes written but not yet taken by the agent's flow control.
pub const MAX_PENDING: usize = 1 << 20;
/// Datagrams the shard's calls may queue for the engine in one turn.
pub const MEDIA_QUEUE: usize = 8192;
/// Datagrams one transmit may carry (GSO-style, split into the batch).
const MAX_SEGMENTS: usize = 16;
/// Receive calls per turn before the other work gets its turn.
const RECV_TURNS: usize = 8;
/// Bytes of the arena that short-header datagrams are copied into.
/// Long-header ones (handshakes, which quinn-proto may hold out of order
/// before anyone is authenticated) get buffers of their own size, so no
/// stranger can pin a shared block.
const ARENA: usize = 64 * 1024;
/// How often the calls' timed work runs (RTCP, counters, silence).
const TICK: Duration = Duration::from_millis(50);

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
struct Key {
    handle: usize,
    serial: u64,
}

enum Cmd {
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
    /// Where datagrams for agents are carved from (see `Bytes::split`).
    pub block: BytesMut,
}

impl Default for Scratch {
    fn default() -> Self {
        Self {
            buf: vec![0; 2048],
            out: vec![0; 2048],
            block: BytesMut::with_capacity(64 * 1024),
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
enum Route {
    /// A queue (whoever reads it).
    Queue(mpsc::Sender<Bytes>),
    /// A call the engine runs: its slot.
    Call(usize),
}

/// The calls whose sockets or control became ready since the engine
/// last looked, and the engine's waker.
#[derive(Default)]
struct Ready {
    list: Mutex<(Vec<usize>, Option<Waker>)>,
}

impl Ready {
    /// Swaps the ready calls into `into` (emptied first); pending if none.
    fn poll_take(&self, cx: &mut Context<'_>, into: &mut Vec<usize>) -> Poll<()> {
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
struct CallWake {
    slot: usize,
    queued: AtomicBool,
    ready: Arc<Ready>,
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
struct CallSlot {
    call: Box<dyn CallMedia>,
    conn: Key,
    wake: Arc<CallWake>,
    waker: Waker,
}

/// A session's handle on its connection (cheap to clone).
#[derive(Clone, Debug)]
pub struct Conn {
    key: Key,
    remote: SocketAddr,
    peer: Arc<Vec<CertificateDer<'static>>>,
    cmds: mpsc::UnboundedSender<Cmd>,
    media: mpsc::Sender<(Key, Bytes)>,
    closed: watch::Receiver<bool>,
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
    cmds: mpsc::UnboundedSender<Cmd>,
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

/// One connection as the engine holds it.
struct Entry {
    conn: quinn_proto::Connection,
    serial: u64,
    remote: SocketAddr,
    /// Until the handshake ends: the listener's place, and when it
    /// expires.
    place: Option<Box<dyn Any + Send>>,
    closed: watch::Sender<bool>,
    /// Where control-stream bytes go (from the handshake's end until the
    /// stream ends).
    control: Option<mpsc::Sender<Bytes>>,
    stream: Option<StreamId>,
    /// Control bytes left unread while the session's queue was full.
    read_blocked: bool,
    pending: VecDeque<Bytes>,
    pending_bytes: usize,
    flows: HashMap<u64, Route>,
    /// The slots of the calls it carries.
    calls: Vec<usize>,
    /// Its timer (quinn-proto's next deadline).
    timer: Option<Instant>,
    /// The earliest entry it has in the engine's heap: a later deadline
    /// (an idle timer pushed back by each packet) is not pushed until
    /// that entry comes up.
    queued: Option<Instant>,
    dirty: bool,
}

/// quinn-proto's handles are small slab indices: they hash as themselves
/// (SipHash would cost more than the rest of a lookup).
#[derive(Default)]
struct SlotHasher(u64);

impl std::hash::Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = n as u64;
    }
}

/// Counters the engine keeps.
struct Counters {
    unknown: IntCounter,
    congestion: IntCounter,
    too_large: IntCounter,
}

/// The engine of one shard: made in the shard's runtime, then run there.
pub struct Engine {
    endpoint: quinn_proto::Endpoint,
    conns: HashMap<usize, Entry, BuildHasherDefault<SlotHasher>>,
    serial: u64,
    listener: Arc<dyn Listener>,
    handshake_timeout: Duration,
    counters: Counters,
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
    out: Queue,
    no_tos: AtomicBool,
    stats: Stats,
    cmds_tx: mpsc::UnboundedSender<Cmd>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    media_tx: mpsc::Sender<(Key, Bytes)>,
    media: mpsc::Receiver<(Key, Bytes)>,
    /// Connection timers (lazily pruned: an entry counts only if it is
    /// still its connection's timer).
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// Handshake deadlines, in the order they were set.
    handshakes: VecDeque<(Instant, usize, u64)>,
    dirty: Vec<usize>,
    dirty_spare: Vec<usize>,
    recv_buf: Vec<u8>,
    arena: BytesMut,
    send_buf: Vec<u8>,
    shutdown: Option<(u32, Bytes)>,
    replies: Vec<oneshot::Sender<()>>,
    calls: Vec<Option<CallSlot>>,
    free: Vec<usize>,
    ready: Arc<Ready>,
    ready_now: Vec<usize>,
    scratch: Scratch,
    /// Calls ended this turn, for their connections' dirty marks.
    ended: Vec<usize>,
}

impl Engine {
    /// An engine on `socket`. Call inside the runtime that will run it.
    pub fn new(
        socket: std::net::UdpSocket,
        config: Arc<quinn_proto::EndpointConfig>,
        server: Arc<quinn_proto::ServerConfig>,
        listener: Arc<dyn Listener>,
        handshake_timeout: Duration,
        metrics: &Metrics,
        stats: Stats,
    ) -> io::Result<(Self, EngineHandle)> {
        socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&socket).into())?;
        let io = tokio::net::UdpSocket::from_std(socket)?;
        let dropped = |why: &str| metrics.agent_datagrams_dropped.with_label_values(&[why]);
        let payload = config.get_max_udp_payload_size().min(64 * 1024) as usize;
        let recv_buf = vec![0u8; payload * state.gro_segments().max(1) * BATCH_SIZE];
        let (cmds_tx, cmds) = mpsc::unbounded_channel();
        let (media_tx, media) = mpsc::channel(MEDIA_QUEUE);
        let engine = Self {
            endpoint: quinn_proto::Endpoint::new(config, Some(server), !state.may_fragment(), None),
            conns: HashMap::default(),
            serial: 0,
            listener,
            handshake_timeout,
            counters: Counters {
                unknown: dropped("unknown_flow"),
                congestion: dropped("congestion"),
                too_large: dropped("too_large"),
            },
            io,
            state,
            out: Queue::new(),
            no_tos: AtomicBool::new(false),
            stats,
            cmds_tx: cmds_tx.clone(),
            cmds,
            media_tx,
            media,
            timers: BinaryHeap::new(),
            handshakes: VecDeque::new(),
            dirty: Vec::new(),
            dirty_spare: Vec::new(),
            recv_buf,
            arena: BytesMut::with_capacity(ARENA),
            send_buf: Vec::with_capacity(64 * 1024),
            shutdown: None,
            replies: Vec::new(),
            calls: Vec::new(),
            free: Vec::new(),
            ready: Arc::new(Ready::default()),
            ready_now: Vec::new(),
            scratch: Scratch::default(),
            ended: Vec::new(),
        };
        Ok((engine, EngineHandle { cmds: cmds_tx }))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// Runs until its runtime stops.
    pub async fn run(mut self) {
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ready = self.ready.clone();
        let mut ready_now = std::mem::take(&mut self.ready_now);
        loop {
            let must_write = !self.out.is_empty();
            // Not biased: a socket that stays readable under a flood must
            // not starve the calls, the timers or the commands.
            tokio::select! {
                () = std::future::poll_fn(|cx| ready.poll_take(cx, &mut ready_now)) => {
                    for &slot in &ready_now {
                        self.run_call(slot);
                    }
                }
                c = self.cmds.recv() => {
                    // The engine holds a sender: never `None`.
                    if let Some(c) = c {
                        self.command(c);
                    }
                    while let Ok(c) = self.cmds.try_recv() {
                        self.command(c);
                    }
                }
                r = self.io.readable() => {
                    if r.is_err() {
                        return;
                    }
                    self.receive();
                }
                d = self.media.recv() => {
                    if let Some((key, d)) = d {
                        self.datagram(key, d);
                    }
                    for _ in 0..MEDIA_QUEUE {
                        let Ok((key, d)) = self.media.try_recv() else { break };
                        self.datagram(key, d);
                    }
                }
                () = &mut sleep, if armed.is_some() => {
                    armed = None;
                    self.timeouts(Instant::now());
                }
                _ = tick.tick() => self.tick_calls(),
                r = self.io.writable(), if must_write => {
                    if r.is_err() {
                        return;
                    }
                }
            }
            // Timers are due whichever branch won.
            let now = Instant::now();
            if self.next_deadline().is_some_and(|t| t <= now) {
                self.timeouts(now);
            }
            self.drive(now);
            self.flush();
            if !self.replies.is_empty() && self.out.is_empty() {
                for r in self.replies.drain(..) {
                    let _ = r.send(());
                }
            }
            let next = self.next_deadline();
            if next != armed {
                armed = next;
                if let Some(t) = next {
                    sleep.as_mut().reset(t.into());
                }
            }
        }
    }

    fn mark(&mut self, handle: usize) {
        if let Some(e) = self.conns.get_mut(&handle) {
            if !e.dirty {
                e.dirty = true;
                self.dirty.push(handle);
            }
        }
    }

    fn entry(&mut self, key: Key) -> Option<&mut Entry> {
        self.conns
            .get_mut(&key.handle)
            .filter(|e| e.serial == key.serial)
    }

    fn command(&mut self, c: Cmd) {
        let now = Instant::now();
        match c {
            Cmd::Write(key, bytes) => {
                let Some(e) = self.entry(key) else { return };
                if e.pending_bytes + bytes.len() > MAX_PENDING {
                    close_entry(
                        e,
                        now,
                        protocol::close::PROTOCOL,
                        Bytes::from_static(b"control stream stalled"),
                    );
                } else {
                    e.pending_bytes += bytes.len();
                    e.pending.push_back(bytes);
                    write_pending(e);
                }
                self.mark(key.handle);
            }
            Cmd::Close(key, code, reason) => {
                let Some(e) = self.entry(key) else { return };
                close_entry(e, now, code, reason);
                self.mark(key.handle);
            }
            Cmd::Flow(key, flow, to) => {
                let Some(e) = self.entry(key) else { return };
                e.flows
                    .retain(|_, r| !matches!(r, Route::Queue(t) if t.is_closed()));
                e.flows.insert(flow, Route::Queue(to));
            }
            Cmd::Call(key, call) => self.add_call(key, call),
            Cmd::Shutdown(code, reason, reply) => {
                let handles: Vec<usize> = self.conns.keys().copied().collect();
                for h in handles {
                    if let Some(e) = self.conns.get_mut(&h) {
                        close_entry(e, now, code, reason.clone());
                    }
                    self.mark(h);
                }
                self.shutdown = Some((code, reason));
                self.replies.push(reply);
            }
        }
    }

    /// Starts running `call` on connection `key` (ends it at once if the
    /// connection is gone).
    fn add_call(&mut self, key: Key, call: Box<dyn CallMedia>) {
        let live = self.entry(key).is_some_and(|e| !*e.closed.borrow());
        if !live {
            return call.end();
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.calls.push(None);
            self.calls.len() - 1
        });
        let wake = Arc::new(CallWake {
            slot,
            queued: AtomicBool::new(false),
            ready: self.ready.clone(),
        });
        let flow = call.flow();
        if let Some(e) = self.entry(key) {
            e.calls.push(slot);
            // A call's own flow replaces any queue for it.
            e.flows.insert(flow, Route::Call(slot));
        }
        self.calls[slot] = Some(CallSlot {
            call,
            conn: key,
            waker: Waker::from(wake.clone()),
            wake,
        });
        // First look: whatever is already waiting, and arm its wakers.
        self.run_call(slot);
    }

    /// One ready call: its control and its trunk's packets.
    fn run_call(&mut self, slot: usize) {
        let Some(c) = self.calls.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        c.wake.queued.store(false, Ordering::Release);
        let key = c.conn;
        let Some(e) = self
            .conns
            .get_mut(&key.handle)
            .filter(|e| e.serial == key.serial)
        else {
            return self.end_call(slot);
        };
        let counters = &self.counters;
        let dirty = &mut self.dirty;
        let mut sent_any = false;
        let mut send = |d: Bytes| -> bool {
            let mut datagrams = e.conn.datagrams();
            let fits = datagrams.send_buffer_space() >= d.len();
            if let Err(SendDatagramError::TooLarge) = datagrams.send(d, true) {
                counters.too_large.inc();
            }
            sent_any = true;
            // quinn-proto dropped the oldest queued datagram for it.
            fits
        };
        let mut cx = Context::from_waker(&c.waker);
        let turn = c.call.poll(&mut cx, &mut self.scratch, &mut send);
        if sent_any && !e.dirty {
            e.dirty = true;
            dirty.push(key.handle);
        }
        if turn == Turn::Ended {
            self.end_call(slot);
        }
    }

    /// Ends the call in `slot`: its flow is forgotten, its media reported.
    fn end_call(&mut self, slot: usize) {
        let Some(c) = self.calls.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        let flow = c.call.flow();
        if let Some(e) = self.entry(c.conn) {
            e.calls.retain(|s| *s != slot);
            if matches!(e.flows.get(&flow), Some(Route::Call(s)) if *s == slot) {
                e.flows.remove(&flow);
            }
        }
        c.call.end();
    }

    /// The calls' timed work, and control streams left unread.
    fn tick_calls(&mut self) {
        for (h, e) in &mut self.conns {
            if e.read_blocked {
                e.read_blocked = false;
                read_control(e);
                if !e.dirty {
                    e.dirty = true;
                    self.dirty.push(*h);
                }
            }
        }
        let now = Instant::now();
        for slot in 0..self.calls.len() {
            let Some(c) = self.calls[slot].as_mut() else {
                continue;
            };
            if c.call.tick(now, &mut self.scratch) == Turn::Ended {
                self.end_call(slot);
            }
        }
    }

    /// Reads what the socket holds, a bounded number of calls per turn.
    fn receive(&mut self) {
        let now = Instant::now();
        let mut buf = std::mem::take(&mut self.recv_buf);
        for _ in 0..RECV_TURNS {
            let mut metas = [RecvMeta::default(); BATCH_SIZE];
            let chunk = buf.len() / BATCH_SIZE;
            let mut bufs = buf.chunks_mut(chunk).map(IoSliceMut::new);
            let mut iovs: [IoSliceMut; BATCH_SIZE] =
                std::array::from_fn(|_| bufs.next().unwrap_or_else(|| IoSliceMut::new(&mut [])));
            let mut got = 0;
            // Fewer than asked for: the socket is empty; tokio is told so
            // instead of hearing `EAGAIN` from one more call.
            let r = self.io.try_io(Interest::READABLE, || {
                got = self.state.recv((&self.io).into(), &mut iovs, &mut metas)?;
                if got < BATCH_SIZE {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(())
            });
            for (i, meta) in metas.iter().take(got).enumerate() {
                let data = &buf[i * chunk..i * chunk + meta.len];
                let stride = meta.stride.max(1);
                for seg in data.chunks(stride) {
                    self.handle(now, meta, seg);
                }
            }
            if r.is_err() {
                break;
            }
        }
        self.recv_buf = buf;
    }

    /// One received datagram.
    fn handle(&mut self, now: Instant, meta: &RecvMeta, data: &[u8]) {
        let long_header = data.first().is_some_and(|b| b & 0x80 != 0);
        let packet = if long_header {
            BytesMut::from(data)
        } else {
            if self.arena.capacity() < data.len() {
                self.arena = BytesMut::with_capacity(ARENA.max(data.len()));
            }
            self.arena.extend_from_slice(data);
            self.arena.split()
        };
        self.send_buf.clear();
        let ecn = meta.ecn.map(|e| match e {
            quinn::udp::EcnCodepoint::Ect0 => EcnCodepoint::Ect0,
            quinn::udp::EcnCodepoint::Ect1 => EcnCodepoint::Ect1,
            quinn::udp::EcnCodepoint::Ce => EcnCodepoint::Ce,
        });
        let mut buf = std::mem::take(&mut self.send_buf);
        match self
            .endpoint
            .handle(now, meta.addr, meta.dst_ip, ecn, packet, &mut buf)
        {
            Some(DatagramEvent::ConnectionEvent(h, ev)) => {
                if let Some(e) = self.conns.get_mut(&h.0) {
                    e.conn.handle_event(ev);
                    self.mark(h.0);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => self.incoming(now, incoming, &mut buf),
            Some(DatagramEvent::Response(t)) => self.queue(&t, &buf),
            None => {}
        }
        self.send_buf = buf;
    }

    fn incoming(&mut self, now: Instant, incoming: quinn_proto::Incoming, buf: &mut Vec<u8>) {
        let source = incoming.remote_address();
        buf.clear();
        if self.shutdown.is_some() {
            let t = self.endpoint.refuse(incoming, buf);
            return self.queue(&t, buf);
        }
        let admit = self.listener.incoming(
            source,
            incoming.remote_address_validated(),
            incoming.may_retry(),
        );
        match admit {
            Admit::Retry => match self.endpoint.retry(incoming, buf) {
                Ok(t) => self.queue(&t, buf),
                Err(e) => self.endpoint.ignore(e.into_incoming()),
            },
            Admit::Refuse => {
                let t = self.endpoint.refuse(incoming, buf);
                self.queue(&t, buf);
            }
            Admit::Accept(place) => match self.endpoint.accept(incoming, now, buf, None) {
                Ok((h, conn)) => {
                    self.serial += 1;
                    let (closed, _) = watch::channel(false);
                    self.conns.insert(
                        h.0,
                        Entry {
                            conn,
                            serial: self.serial,
                            remote: source,
                            place: Some(place),
                            closed,
                            control: None,
                            stream: None,
                            read_blocked: false,
                            pending: VecDeque::new(),
                            pending_bytes: 0,
                            flows: HashMap::new(),
                            calls: Vec::new(),
                            timer: None,
                            queued: None,
                            dirty: false,
                        },
                    );
                    self.handshakes
                        .push_back((now + self.handshake_timeout, h.0, self.serial));
                    self.mark(h.0);
                }
                Err(e) => {
                    if let Some(t) = &e.response {
                        self.queue(t, buf);
                    }
                    drop(place);
                    self.listener.failed(source.ip(), Some(&e.cause));
                }
            },
        }
    }

    /// An agent's media datagram from one of the shard's calls.
    fn datagram(&mut self, key: Key, d: Bytes) {
        let counters = &self.counters;
        let Some(e) = self
            .conns
            .get_mut(&key.handle)
            .filter(|e| e.serial == key.serial)
        else {
            return;
        };
        let mut datagrams = e.conn.datagrams();
        if datagrams.send_buffer_space() < d.len() {
            // quinn-proto drops the oldest queued datagram.
            counters.congestion.inc();
        }
        if let Err(SendDatagramError::TooLarge) = datagrams.send(d, true) {
            counters.too_large.inc();
        }
        self.mark(key.handle);
    }

    fn timeouts(&mut self, now: Instant) {
        while let Some(Reverse((t, h, serial))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(e) = self.conns.get_mut(&h).filter(|e| e.serial == serial) else {
                continue;
            };
            if e.queued != Some(t) {
                continue;
            }
            e.queued = None;
            match e.timer {
                Some(due) if due <= now => {
                    e.timer = None;
                    e.conn.handle_timeout(now);
                    self.mark(h);
                }
                Some(later) => {
                    e.queued = Some(later);
                    self.timers.push(Reverse((later, h, serial)));
                }
                None => {}
            }
        }
        while let Some(&(t, h, serial)) = self.handshakes.front() {
            if t > now {
                break;
            }
            self.handshakes.pop_front();
            let Some(e) = self.conns.get_mut(&h).filter(|e| e.serial == serial) else {
                continue;
            };
            if e.place.take().is_some() {
                close_entry(e, now, 0, Bytes::new());
                let ip = e.remote.ip();
                self.mark(h);
                self.listener.failed(ip, None);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((t, _, _))| *t);
        let handshake = self.handshakes.front().map(|(t, _, _)| *t);
        match (timer, handshake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs each connection that had something happen this turn.
    fn drive(&mut self, now: Instant) {
        std::mem::swap(&mut self.dirty, &mut self.dirty_spare);
        let mut work = std::mem::take(&mut self.dirty_spare);
        for h in work.drain(..) {
            self.drive_one(now, h);
        }
        self.dirty_spare = work;
        // Many stale timers: rebuild from the live ones (keeps its room).
        if self.timers.len() > 2 * self.conns.len() + 64 {
            self.timers.clear();
            for (h, e) in &mut self.conns {
                e.queued = e.timer;
                if let Some(t) = e.timer {
                    self.timers.push(Reverse((t, *h, e.serial)));
                }
            }
        }
    }

    fn drive_one(&mut self, now: Instant, h: usize) {
        let Some(e) = self.conns.get_mut(&h) else {
            return;
        };
        e.dirty = false;
        let handle = ConnectionHandle(h);
        while let Some(ev) = e.conn.poll_endpoint_events() {
            if let Some(back) = self.endpoint.handle_event(handle, ev) {
                e.conn.handle_event(back);
            }
        }
        while let Some(ev) = e.conn.poll() {
            on_event(
                e,
                ev,
                Key {
                    handle: h,
                    serial: e.serial,
                },
                &*self.listener,
                &self.counters,
                &self.cmds_tx,
                &self.media_tx,
                (&mut self.calls, &mut self.scratch),
            );
        }
        // A closed connection's calls end with it.
        if *e.closed.borrow() && !e.calls.is_empty() {
            self.ended.append(&mut e.calls);
        }
        let mut blocked = false;
        loop {
            if !self.out.has_room() {
                flush(&self.io, &mut self.out, &self.no_tos, &self.stats);
                if !self.out.has_room() {
                    blocked = true;
                    break;
                }
            }
            self.send_buf.clear();
            let Some(t) = e.conn.poll_transmit(now, MAX_SEGMENTS, &mut self.send_buf) else {
                break;
            };
            let _ = self.out.push(&quinn::udp::Transmit {
                destination: t.destination,
                ecn: t
                    .ecn
                    .and_then(|c| quinn::udp::EcnCodepoint::from_bits(c as u8)),
                contents: &self.send_buf[..t.size],
                segment_size: t.segment_size,
                src_ip: t.src_ip,
            });
        }
        while let Some(ev) = e.conn.poll_endpoint_events() {
            if let Some(back) = self.endpoint.handle_event(handle, ev) {
                e.conn.handle_event(back);
            }
        }
        e.timer = e.conn.poll_timeout();
        if let Some(t) = e.timer {
            if e.queued.is_none_or(|q| t < q) {
                e.queued = Some(t);
                self.timers.push(Reverse((t, h, e.serial)));
            }
        }
        let drained = e.conn.is_drained();
        if drained {
            e.closed.send_replace(true);
            self.ended.append(&mut e.calls);
        } else if blocked {
            // The rest goes when the socket takes the queue.
            e.dirty = true;
            self.dirty.push(h);
        }
        let mut ended = std::mem::take(&mut self.ended);
        for slot in ended.drain(..) {
            self.end_call(slot);
        }
        self.ended = ended;
        if drained {
            self.conns.remove(&h);
        }
    }

    fn queue(&mut self, t: &quinn_proto::Transmit, buf: &[u8]) {
        if !self.out.has_room() {
            flush(&self.io, &mut self.out, &self.no_tos, &self.stats);
        }
        // A full queue drops a stateless reply (Retry, refusal, reset):
        // the peer sends again.
        let _ = self.out.push(&quinn::udp::Transmit {
            destination: t.destination,
            ecn: t
                .ecn
                .and_then(|c| quinn::udp::EcnCodepoint::from_bits(c as u8)),
            contents: &buf[..t.size],
            segment_size: t.segment_size,
            src_ip: t.src_ip,
        });
    }

    fn flush(&mut self) {
        flush(&self.io, &mut self.out, &self.no_tos, &self.stats);
    }
}

/// Sends what the queue holds, as far as the socket takes it.
fn flush(io: &tokio::net::UdpSocket, out: &mut Queue, no_tos: &AtomicBool, stats: &Stats) {
    if out.is_empty() {
        return;
    }
    let fd = io.as_raw_fd();
    // `WouldBlock` clears tokio's readiness: the loop then waits for room.
    if let Ok(n) = io.try_io(Interest::WRITABLE, || send_from(fd, out, 0, no_tos, stats)) {
        out.consume(n);
    }
}

/// One application event of connection `e`.
// The engine's fields it needs, borrowed apart from the connection.
#[allow(clippy::too_many_arguments)]
fn on_event(
    e: &mut Entry,
    ev: Event,
    key: Key,
    listener: &dyn Listener,
    counters: &Counters,
    cmds: &mpsc::UnboundedSender<Cmd>,
    media: &mpsc::Sender<(Key, Bytes)>,
    calls: (&mut [Option<CallSlot>], &mut Scratch),
) {
    match ev {
        Event::Connected => {
            e.place = None;
            let peer = e
                .conn
                .crypto_session()
                .peer_identity()
                .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
                .map_or_else(Vec::new, |b| *b);
            let (tx, rx) = mpsc::channel(CONTROL_CHUNKS);
            e.control = Some(tx);
            let conn = Conn {
                key,
                remote: e.remote,
                peer: Arc::new(peer),
                cmds: cmds.clone(),
                media: media.clone(),
                closed: e.closed.subscribe(),
            };
            listener.connected(conn, rx);
            read_control(e);
        }
        Event::ConnectionLost { reason } => {
            if e.place.take().is_some() {
                listener.failed(e.remote.ip(), Some(&reason));
            }
            e.control = None;
            e.flows.clear();
            e.closed.send_replace(true);
        }
        Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
            while let Some(id) = e.conn.streams().accept(Dir::Bi) {
                if e.stream.is_none() {
                    e.stream = Some(id);
                } else {
                    // One control stream per session.
                    let _ = e.conn.recv_stream(id).stop(VarInt::from_u32(0));
                }
            }
            read_control(e);
        }
        Event::Stream(StreamEvent::Readable { id }) if Some(id) == e.stream => read_control(e),
        Event::Stream(StreamEvent::Writable { id }) if Some(id) == e.stream => write_pending(e),
        Event::Stream(StreamEvent::Stopped { id, .. }) if Some(id) == e.stream => {
            // The agent will read no more: the session ends.
            e.control = None;
            e.pending.clear();
            e.pending_bytes = 0;
        }
        Event::DatagramReceived => route(e, counters, calls.0, calls.1),
        _ => {}
    }
}

/// Closes `e` from this end: its session and calls hear at once, as
/// they would from quinn (the slot stays until the close has drained).
fn close_entry(e: &mut Entry, now: Instant, code: u32, reason: Bytes) {
    e.conn.close(now, VarInt::from_u32(code), reason);
    e.control = None;
    e.flows.clear();
    e.pending.clear();
    e.pending_bytes = 0;
    e.closed.send_replace(true);
}

/// Hands each received datagram to its call's queue, by flow.
fn route(e: &mut Entry, counters: &Counters, calls: &mut [Option<CallSlot>], s: &mut Scratch) {
    while let Some(d) = e.conn.datagrams().recv() {
        let Some((flow, n)) = protocol::get_varint(&d) else {
            counters.unknown.inc();
            continue;
        };
        let to = match e.flows.get(&flow) {
            Some(Route::Call(slot)) => {
                match calls.get_mut(*slot).and_then(Option::as_mut) {
                    Some(c) => c.call.agent_datagram(&d[n..], s),
                    None => counters.unknown.inc(),
                }
                continue;
            }
            Some(Route::Queue(tx)) => Some(tx),
            None => None,
        };
        match to.map(|tx| tx.try_send(d.slice(n..))) {
            Some(Ok(())) => {}
            // The call's task is behind: late audio is dropped audio.
            Some(Err(mpsc::error::TrySendError::Full(_))) => counters.congestion.inc(),
            Some(Err(mpsc::error::TrySendError::Closed(_))) => {
                e.flows.remove(&flow);
                counters.unknown.inc();
            }
            None => counters.unknown.inc(),
        }
    }
}

/// Reads the control stream into the session's queue.
fn read_control(e: &mut Entry) {
    let (Some(id), Some(tx)) = (e.stream, e.control.as_ref()) else {
        return;
    };
    let mut ended = false;
    let mut recv = e.conn.recv_stream(id);
    match recv.read(true) {
        Ok(mut chunks) => {
            loop {
                if tx.capacity() == 0 {
                    // The session is behind: the rest stays in quinn-proto,
                    // whose flow control holds the agent back, and is read
                    // on a later tick.
                    e.read_blocked = true;
                    break;
                }
                match chunks.next(CHUNK) {
                    Ok(Some(c)) => {
                        let _ = tx.try_send(c.bytes);
                    }
                    Ok(None) | Err(ReadError::Reset(_)) => {
                        ended = true;
                        break;
                    }
                    Err(ReadError::Blocked) => break,
                }
            }
            let _ = chunks.finalize();
        }
        Err(_) => ended = true,
    }
    if ended {
        e.control = None;
    }
}

/// Writes queued control bytes as far as flow control allows.
fn write_pending(e: &mut Entry) {
    let Some(id) = e.stream else { return };
    while let Some(front) = e.pending.front_mut() {
        match e.conn.send_stream(id).write(front) {
            Ok(n) => {
                e.pending_bytes -= n;
                if n == front.len() {
                    e.pending.pop_front();
                } else {
                    front.advance(n);
                }
            }
            Err(WriteError::Blocked) => break,
            Err(_) => {
                e.pending.clear();
                e.pending_bytes = 0;
                break;
            }
        }
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
