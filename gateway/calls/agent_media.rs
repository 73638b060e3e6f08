//! The socket side of a call between a trunk and an agent: an
//! [`AgentCall`] owns the trunk's RTP (and RTCP) socket and a [`Relay`].
//! It is no task of its own: the agent's shard engine
//! ([`crate::agent::engine`]) runs it, polling its sockets when they are
//! ready, handing it the agent's datagrams by flow and sealing what it
//! relays towards the agent into the connection directly.
//!
//! Costs per packet: one receive (a `recvmmsg` that, coming back short,
//! tells tokio the socket is empty, so no second call hears `EAGAIN`),
//! the relay step, one send (a `send_to` on the trunk side; on the agent
//! side the datagram joins the engine's batch), no task wake, queue or
//! lock of its own. Measured with `perf stat -e raw_syscalls:sys_enter`
//! on the gateway of `tollgate loadgen --calls 300`: 1.80 system calls
//! per relayed packet before (two `recvfrom` per trunk packet), 1.32
//! after. Datagram
//! payloads are carved from the call's own `BytesMut` block (no
//! allocation per packet until a block is used up, nothing zeroed beyond
//! the packet's size); counters are summed per call and published every
//! half second.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn::udp::{RecvMeta, UdpSocketState};
use std::io::IoSliceMut;
use tokio::io::{Interest, ReadBuf};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::media::{ntp_now, Control, RtpCounters};
use super::relay::{Relay, RelayError, Relayed, AGENT_PEER};
use crate::agent::engine::{CallMedia, Scratch, Turn, RECV_BATCH, RECV_SLOT};
use crate::agent::protocol::ServerMsg;
use crate::agent::server::Link;
use crate::telemetry::metrics::Metrics;

const RTCP_INTERVAL: Duration = Duration::from_secs(5);
/// Bytes carved per block for outgoing datagrams.
const BLOCK: usize = 64 * 1024;
/// Packets read from one socket per turn before the other calls' turn.
const BUDGET: usize = 64;
/// What a relayed packet may grow by: the flow identifier (8), the AEAD
/// tag (16), with room to spare.
const OVERHEAD: usize = 64;

/// What an agent call's media task needs.
pub struct AgentMedia {
    pub rtp: UdpSocket,
    pub rtcp: Option<UdpSocket>,
    pub remote_rtcp: SocketAddr,
    pub relay: Relay,
    /// The agent's session (datagrams, and DTMF events).
    pub link: Link,
    /// The call as the agent knows it (its datagrams' flow).
    pub call: u64,
    /// Whether we may send to the trunk (its direction).
    pub send: bool,
    /// Trunk silence that ends the call, and where to say so.
    pub timeout: Option<super::media::Timeout>,
    /// Its port, given back when the task ends.
    pub lease: super::ports::Lease,
}

/// A media task ended the call itself: no valid RTP came for the
/// configured `media.rtp_timeout_s`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaEnded {
    /// An agent's call, as the agent knows it.
    Agent(u64),
    /// A test service's or a bridged call.
    Call(super::call::CallRef),
}

/// One control message from the core: hold, a DTMF digit for the trunk
/// (RFC 4733 events, sent without waiting: a full socket buffer loses
/// them as it would lose media), or a trunk leg's re-key, address or
/// direction.
fn steer(
    m: &mut AgentMedia,
    held: &mut bool,
    out: &mut [u8],
    counters: &mut RtpCounters,
    ctl: Control,
) {
    match ctl {
        Control::Hold(h) => *held = h,
        Control::Dtmf { digit, duration_ms } => {
            let mut events: [(usize, [u8; 64]); 4] = [(0, [0; 64]); 4];
            let mut k = 0;
            let built = m.relay.dtmf_to_trunk(digit, duration_ms, out, |p| {
                if let Some(slot) = events.get_mut(k) {
                    let n = p.len().min(64);
                    slot.1[..n].copy_from_slice(&p[..n]);
                    slot.0 = n;
                }
                k += 1;
            });
            if built.is_err() {
                tracing::debug!(
                    call = m.call,
                    "DTMF not sent: no telephone-event on the trunk leg"
                );
            }
            if let (true, true, Some(to)) = (built.is_ok(), m.send, m.relay.trunk.remote()) {
                for (n, p) in &events[..k.min(4)] {
                    if m.rtp.try_send_to(&p[..*n], to).is_ok() {
                        counters.sent(*n);
                    }
                }
            }
        }
        Control::Confirmed => m.relay.trunk.confirm(),
        // Started at the agent's answer: nothing to arm.
        Control::Answered => {}
        Control::Rekey(rx) => m.relay.trunk.rekey(*rx),
        Control::Update { remote, rtcp, send } => {
            m.relay.trunk.set_signalled(remote);
            m.remote_rtcp = rtcp;
            m.send = send;
        }
    }
}

/// One agent call, as its shard engine runs it.
pub struct AgentCall {
    m: AgentMedia,
    control: mpsc::Receiver<Control>,
    counters: RtpCounters,
    held: bool,
    last_trunk: Instant,
    next_rtcp: Instant,
    next_publish: Instant,
    next_watch: Instant,
    congestion: prometheus::IntCounter,
    /// Batched receives on the trunk socket (`None` if the socket would
    /// not take the options: then one datagram at a time).
    state: Option<UdpSocketState>,
    /// Where its datagrams to the agent are carved from: the call's own,
    /// so what one agent's congested connection holds queued pins only
    /// its own blocks.
    block: BytesMut,
}

impl AgentCall {
    pub fn new(
        m: AgentMedia,
        control: mpsc::Receiver<Control>,
        metrics: Arc<Metrics>,
        report: super::media::Reporter,
    ) -> Self {
        let now = Instant::now();
        let congestion = metrics
            .agent_datagrams_dropped
            .with_label_values(&["congestion"]);
        let state = UdpSocketState::new((&m.rtp).into()).ok();
        Self {
            state,
            m,
            control,
            counters: RtpCounters::new(metrics, report),
            held: false,
            last_trunk: now,
            next_rtcp: now + RTCP_INTERVAL,
            next_publish: now + RtpCounters::PUBLISH,
            next_watch: now + super::media::Timeout::CHECK,
            congestion,
            block: BytesMut::with_capacity(BLOCK),
        }
    }
}

impl CallMedia for AgentCall {
    fn flow(&self) -> u64 {
        self.m.call
    }

    /// Takes the core's messages, then what the trunk sent, until the
    /// sockets would block (then `cx` is woken when they are ready) or
    /// the turn's budget is spent (then `cx` is woken at once). `send`
    /// hands a datagram to the agent's connection: `false` means it was
    /// dropped for congestion.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        s: &mut Scratch,
        send: &mut dyn FnMut(Bytes) -> bool,
    ) -> Turn {
        loop {
            match self.control.poll_recv(cx) {
                Poll::Ready(Some(c)) => steer(
                    &mut self.m,
                    &mut self.held,
                    &mut s.out,
                    &mut self.counters,
                    c,
                ),
                Poll::Ready(None) => return Turn::Ended,
                Poll::Pending => break,
            }
        }
        let mut spent = true;
        for _ in 0..BUDGET / RECV_BATCH {
            match self.m.rtp.poll_recv_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) | Poll::Pending => {
                    spent = false;
                    break;
                }
            }
            match self.read_batch(s, send) {
                Ok(Turn::Ended) => return Turn::Ended,
                // Another read, or (the socket was emptied) the top of the
                // loop arms the waker.
                Ok(Turn::Alive) => {}
                // An ICMP error from an earlier send: nothing to read.
                Err(_) => {}
            }
        }
        if let Some(rtcp) = &self.m.rtcp {
            let mut rtcp_spent = true;
            for _ in 0..BUDGET {
                let mut rb = ReadBuf::new(&mut s.buf);
                match rtcp.poll_recv_from(cx, &mut rb) {
                    Poll::Ready(Ok(from)) => {
                        let n = rb.filled().len();
                        self.counters
                            .rtcp(&mut self.m.relay.trunk, from, &mut s.buf[..n]);
                    }
                    Poll::Ready(Err(_)) => {}
                    Poll::Pending => {
                        rtcp_spent = false;
                        break;
                    }
                }
            }
            // A full RTCP budget comes back at once too.
            spent |= rtcp_spent;
        }
        if spent {
            cx.waker().wake_by_ref();
        }
        Turn::Alive
    }

    fn agent_datagram(&mut self, d: &[u8], s: &mut Scratch) {
        self.agent_packet(d, s);
    }

    fn tick(&mut self, now: Instant, s: &mut Scratch) -> Turn {
        self.timed(now, s)
    }

    fn end(self: Box<Self>) {
        let mut me = *self;
        me.counters.finish(&me.m.relay.trunk, "trunk");
        me.counters.finish(&me.m.relay.agent, "agent");
        me.counters.report();
    }
}

impl AgentCall {
    /// One `recvmmsg` of up to [`RECV_BATCH`] datagrams from the trunk
    /// socket (ready, as tokio last heard), each relayed. Fewer than asked
    /// for means the socket is empty: tokio is told so (its readiness is
    /// cleared) instead of hearing `EAGAIN` from one more call, which
    /// halves the trunk side's receive calls at 20 ms packet spacing.
    fn read_batch(
        &mut self,
        s: &mut Scratch,
        send: &mut dyn FnMut(Bytes) -> bool,
    ) -> std::io::Result<Turn> {
        let Some(state) = &self.state else {
            // No batched receive on this socket: one at a time.
            let (n, from) = self.m.rtp.try_recv_from(&mut s.buf)?;
            return Ok(self.trunk_packet(from, n, s, send));
        };
        let mut batch = std::mem::take(&mut s.batch);
        let mut metas = [RecvMeta::default(); RECV_BATCH];
        let mut got = 0;
        let r = {
            let mut slots = batch.chunks_mut(RECV_SLOT).map(IoSliceMut::new);
            let mut iovs: [IoSliceMut; RECV_BATCH] =
                std::array::from_fn(|_| slots.next().unwrap_or_else(|| IoSliceMut::new(&mut [])));
            self.m.rtp.try_io(Interest::READABLE, || {
                got = state.recv((&self.m.rtp).into(), &mut iovs, &mut metas)?;
                // Where the platform reads one at a time (quinn-udp's
                // batch of 1), a short read proves nothing.
                if got < RECV_BATCH && quinn::udp::BATCH_SIZE >= RECV_BATCH {
                    return Err(std::io::ErrorKind::WouldBlock.into());
                }
                Ok(())
            })
        };
        let mut turn = Turn::Alive;
        'read: for (i, meta) in metas.iter().take(got).enumerate() {
            let data = &batch[i * RECV_SLOT..i * RECV_SLOT + meta.len.min(RECV_SLOT)];
            for seg in data.chunks(meta.stride.max(1)) {
                // Cut to the scratch buffer, as a read into it would be.
                let n = seg.len().min(s.buf.len());
                s.buf[..n].copy_from_slice(&seg[..n]);
                if self.trunk_packet(meta.addr, n, s, send) == Turn::Ended {
                    turn = Turn::Ended;
                    break 'read;
                }
            }
        }
        s.batch = batch;
        match r {
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(turn),
        }
    }

    /// One packet from the trunk, in `s.buf[..n]`.
    fn trunk_packet(
        &mut self,
        from: SocketAddr,
        n: usize,
        s: &mut Scratch,
        send: &mut dyn FnMut(Bytes) -> bool,
    ) -> Turn {
        // What the core queued before this packet applies first (see
        // media::drain_control).
        let (m, held, out, counters) =
            (&mut self.m, &mut self.held, &mut s.out, &mut self.counters);
        if !super::media::drain_control(&mut self.control, |c| {
            steer(m, held, out, counters, c);
            true
        }) {
            return Turn::Ended;
        }
        let buf = &mut s.buf[..n];
        if self.m.rtcp.is_none() && crate::media::rtp::is_rtcp(buf) {
            self.counters.rtcp(&mut self.m.relay.trunk, from, buf);
            return Turn::Alive;
        }
        if self.held {
            // Still checked and measured, not relayed.
            match self.m.relay.trunk.recv_rtp(from, buf, Instant::now()) {
                Ok(_) => {
                    self.last_trunk = Instant::now();
                    self.counters.received(n);
                }
                Err(d) => self.counters.dropped(d),
            }
            return Turn::Alive;
        }
        // Room for this packet re-originated: the flow identifier, a plain
        // RTP header, the payload and the AEAD tag (the trunk's CSRCs and
        // extensions are not carried over).
        let room = n + OVERHEAD;
        if self.block.capacity() < room {
            self.block = BytesMut::with_capacity(BLOCK);
        }
        self.block.resize(room, 0);
        let block = &mut self.block;
        match self
            .m
            .relay
            .trunk_to_agent(from, buf, Instant::now(), block)
        {
            Ok(Relayed::Nothing) => {
                self.last_trunk = Instant::now();
                block.clear();
                self.counters.received(n);
            }
            Ok(Relayed::Dtmf { digit, duration_ms }) => {
                self.last_trunk = Instant::now();
                block.clear();
                self.counters.received(n);
                self.m.link.send(ServerMsg::Dtmf {
                    call: self.m.call,
                    digit,
                    duration_ms,
                });
            }
            Ok(Relayed::Datagram(len)) => {
                self.last_trunk = Instant::now();
                self.counters.received(n);
                block.truncate(len);
                if send(block.split().freeze()) {
                    self.counters.sent(len);
                } else {
                    self.congestion.inc();
                }
            }
            Err(RelayError::Dropped(d)) => {
                block.clear();
                self.counters.dropped(d);
            }
            Err(RelayError::Build(_)) => block.clear(),
        }
        Turn::Alive
    }

    /// One datagram from the agent (after its flow identifier).
    fn agent_packet(&mut self, d: &[u8], s: &mut Scratch) {
        let n = d.len().min(s.buf.len());
        let pkt = &mut s.buf[..n];
        pkt.copy_from_slice(&d[..n]);
        if crate::media::rtp::is_rtcp(pkt) {
            self.counters.rtcp(&mut self.m.relay.agent, AGENT_PEER, pkt);
            return;
        }
        match self.m.relay.agent_to_trunk(pkt, Instant::now(), &mut s.out) {
            Ok(len) => {
                self.counters.received(n);
                match self.m.relay.trunk.remote() {
                    Some(to) if self.m.send && !self.held => {
                        // A full socket buffer drops it, as the network
                        // would.
                        if self.m.rtp.try_send_to(&s.out[..len], to).is_ok() {
                            self.counters.sent(len);
                        }
                    }
                    None => self.counters.unproven(),
                    Some(_) => {}
                }
            }
            Err(RelayError::Dropped(d)) => self.counters.dropped(d),
            Err(RelayError::Build(_)) => {}
        }
    }

    /// Timed work: counters, RTCP reports, the silence watchdog.
    fn timed(&mut self, now: Instant, s: &mut Scratch) -> Turn {
        if now >= self.next_publish {
            self.next_publish = now + RtpCounters::PUBLISH;
            self.counters.flush();
        }
        if now >= self.next_rtcp {
            self.next_rtcp = now + RTCP_INTERVAL;
            if let Some(rtp_to) = self.m.relay.trunk.remote() {
                if let Ok(len) = self
                    .m
                    .relay
                    .trunk
                    .build_rtcp(&mut s.out, ntp_now(), b"tollgate")
                {
                    let (sock, to) = match &self.m.rtcp {
                        Some(sock) => (sock, self.m.remote_rtcp),
                        None => (&self.m.rtp, rtp_to),
                    };
                    let _ = sock.try_send_to(&s.out[..len], to);
                }
            }
        }
        if now >= self.next_watch {
            self.next_watch = now + super::media::Timeout::CHECK;
            if self
                .m
                .timeout
                .as_ref()
                .is_some_and(|t| t.expired(self.last_trunk))
            {
                return Turn::Ended;
            }
        }
        Turn::Alive
    }
}
