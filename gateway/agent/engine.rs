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
//! On a faster machine (stop 30, AMD EPYC, `benches/vs_rtpengine.sh`,
//! 5 s measured) the same engine costs 6.3 to 7.8 us per packet at 1,000
//! calls against rtpengine's 8.0 to 8.9 in the same run. The profile of
//! that run (`perf record -g` on the gateway) is 60% kernel, and most of
//! that is the UDP stack itself: the trunk `sendto`s 24% and `sendmmsg`
//! 24% (on loopback each send also carries the receiver's softirq
//! delivery), receives 9%, `epoll_wait` 4%; in user space quinn-proto and
//! its packet protection about 15%, SRTP and the relay about 6%, this
//! loop and tokio about 8%. What is left to win is mostly system calls
//! and kernel work per packet, not this loop.
//!
//! How low the sockets let it go (`benches/udp_floor.rs`, stop 31, on
//! the same EPYC VM): a relay with this engine's socket layout and
//! nothing else (a socket per call, where the gateway has RTP and RTCP
//! ones, one socket for the agents, the latching check; no QUIC, SRTP or
//! call state) costs 4.9 to 5.8 us per packet at 1,000 calls, and
//! saturates its core at 250,000 to 300,000 packets a second (3.3 to 4.0
//! us each): a kernel receive and a kernel send per packet (batched on
//! the agents' side), with the loopback delivery to the receiver counted
//! too where, as on this kernel, softirq time is not accounted apart.
//! Tollgate at 1,000 calls was 0.1 to 2.5 us above that floor across
//! runs, rtpengine 0.8 to 3.5 us. io_uring was measured as the other way
//! to drive the sockets (one ring, multishot `recvmsg` on provided
//! buffers, each forward a `send` from the buffer it arrived in, a
//! turn's sends and wait one `io_uring_enter`): medians 4.62 us against
//! epoll's 4.91 at 1,000 calls and 3.85 against 3.89 at 2,500 (three and
//! two interleaved runs; another three at 1,000 gave 5.81 against 5.56),
//! inside this VM's noise, so the engine stays on epoll, `recvmmsg` and
//! `sendmmsg`. Nor did connecting each trunk socket to its carrier
//! (route cached: 4.61 and 3.89 us) change the figure, and it would make
//! the kernel refuse a carrier's new media source.
//!
//! Waking per tick instead of on readiness was measured too, two ways.
//! The floor relay's `--tick-us 500` polls without blocking and sleeps to
//! the next tick whenever nothing is ready: 4.2 us per packet at 1,000
//! calls against 5.2 to 5.3 waking on readiness. In the gateway (stop 31,
//! not kept) a shard slept out the rest of a 500 us tick before parking
//! in tokio when its last park had been shorter than a tick (tokio's
//! `on_thread_park`), then parked until a socket was ready: one wake a
//! millisecond, full `sendmmsg` batches, but 7.4 to 7.5 us per packet at
//! 1,000 calls against 7.0 to 7.2 without (three interleaved runs each
//! of `taskset -c 1 tollgate loadgen --calls 1000 --seconds 5
//! --gateway-cpus 0`), and at 300 calls p50 one-way latency went from
//! 150 to 600 us and p99 past 1 ms, for no CPU gain. The engine keeps
//! waking on readiness: under load its wakes already carry many packets,
//! and each call's socket still needs its own receive and send.
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

mod connection;
mod handles;

use connection::{close_entry, on_event, read_control, write_pending, Entry};
pub use handles::{
    Admit, CallMedia, Conn, EngineHandle, Listener, Scratch, SendError, Turn, RECV_BATCH, RECV_SLOT,
};
use handles::{CallSlot, CallWake, Cmd, Key, Ready, Route};

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

/// quinn-proto's handles are small slab indices, ours to give: one
/// multiply spreads them (SipHash would cost more than the rest of a
/// lookup).
#[derive(Default)]
struct SlotHasher(u64);

impl std::hash::Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        // Fibonacci mixing: the table's tag bits come from the top.
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
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

/// An engine that stops (its runtime dropped, its socket failed) still
/// ends every call it held or was handed: each record gets its media.
impl Drop for Engine {
    fn drop(&mut self) {
        for slot in 0..self.calls.len() {
            self.end_call(slot);
        }
        while let Ok(c) = self.cmds.try_recv() {
            if let Cmd::Call(_, call) = c {
                call.end();
            }
        }
    }
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
            sent_any = true;
            send_datagram(e, d, counters)
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
        if !send_datagram(e, d, counters) {
            counters.congestion.inc();
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
        endpoint_events(&mut self.endpoint, handle, e);
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
            let _ = self.out.push(&udp_transmit(&t, &self.send_buf));
        }
        endpoint_events(&mut self.endpoint, handle, e);
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
        let _ = self.out.push(&udp_transmit(t, buf));
    }

    fn flush(&mut self) {
        flush(&self.io, &mut self.out, &self.no_tos, &self.stats);
    }
}

/// quinn-proto's transmit of `buf`, as the socket queue takes it.
fn udp_transmit<'a>(t: &quinn_proto::Transmit, buf: &'a [u8]) -> quinn::udp::Transmit<'a> {
    quinn::udp::Transmit {
        destination: t.destination,
        ecn: t
            .ecn
            .and_then(|c| quinn::udp::EcnCodepoint::from_bits(c as u8)),
        contents: &buf[..t.size],
        segment_size: t.segment_size,
        src_ip: t.src_ip,
    }
}

/// Hands the endpoint what connection `e` has for it (new connection
/// IDs, retirements, its end), and `e` the endpoint's answers.
fn endpoint_events(endpoint: &mut quinn_proto::Endpoint, handle: ConnectionHandle, e: &mut Entry) {
    while let Some(ev) = e.conn.poll_endpoint_events() {
        if let Some(back) = endpoint.handle_event(handle, ev) {
            e.conn.handle_event(back);
        }
    }
}

/// Queues media datagram `d` on connection `e`; false if quinn-proto had
/// to drop its oldest queued datagram for it (congestion). A datagram
/// larger than the path takes is dropped and counted.
fn send_datagram(e: &mut Entry, d: Bytes, counters: &Counters) -> bool {
    let mut datagrams = e.conn.datagrams();
    let fits = datagrams.send_buffer_space() >= d.len();
    if let Err(SendDatagramError::TooLarge) = datagrams.send(d, true) {
        counters.too_large.inc();
    }
    fits
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

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
