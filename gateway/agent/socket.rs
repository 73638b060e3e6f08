//! The agents' QUIC socket: quinn's transmits are queued for one turn of
//! the shard's scheduler and leave together in one `sendmmsg(2)`.
//!
//! quinn's own tokio socket sends each transmit with its own `sendmsg`.
//! UDP GSO joins only packets to one destination, and an agent's
//! connection has one media datagram to send every 20 ms, so GSO rarely
//! joins anything here: what the gateway sends in one wake is one packet
//! to each of many connections. Here a transmit is copied into the
//! shard's queue (no allocation: the queue's buffers are made once), and
//! the first transmit of a turn wakes the flusher task. The shard's
//! scheduler runs woken tasks in order, so the flusher runs after the
//! connection drivers that the same wake made ready, and sends what they
//! queued with one system call per 64 datagrams.
//!
//! Receiving stays quinn-udp's (`recvmmsg`, GRO, ECN and destination
//! address from control messages); a receive that returns fewer datagrams
//! than it had room for tells tokio the queue is empty, so no wake ends
//! with an `EAGAIN` call.
//!
//! Measured (`taskset -c 1 tollgate loadgen --calls N --seconds 5
//! --gateway-cpus 0`, the gateway's `agent_udp_*` counters over the
//! window): 2.9 datagrams per `sendmmsg` at 100 calls, 9.3 at 300, 18 at
//! 1,000. The gateway's CPU per relayed packet did not move beyond this
//! machine's noise at 300 calls (medians of three interleaved runs: 20.4
//! us before, 20.7 us after): on loopback a send's cost is the kernel's
//! per-datagram work (socket buffers, delivery to the receiver, its
//! wake-up), not the system call. The gateway's agents listener now
//! sends through the same queue from its shard engine
//! ([`super::engine`], [`Queue`] and [`send_from`]); `BatchSocket` stays
//! for quinn endpoints (the load generator's agents).
//!
//! Back-pressure: a full queue answers `WouldBlock` and quinn's poller
//! waits for the flusher to take the queue. A full socket buffer makes
//! the flusher wait for the socket to be writable. A datagram the kernel
//! refuses (no route, a firewall rule) is dropped and counted, as quinn
//! does: QUIC takes it as lost.
//!
//! # Why this module has `unsafe`
//!
//! Neither std, tokio, socket2 nor quinn-udp offers `sendmmsg`. `nix`
//! does, but its headers hold raw pointers (not `Send`, so they cannot
//! live in a task) and share one set of control messages across a batch,
//! while a batch here mixes ECN marks and source addresses. So
//! [`send_batch`] builds the headers on its own stack for the one call,
//! pointing only into the borrowed queue and into arrays on that stack,
//! all alive across the call; the kernel reads them and writes only each
//! header's `msg_len`.

#![allow(unsafe_code)]

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use prometheus::IntCounter;
use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::Interest;

/// Datagrams per `sendmmsg` call.
pub const BATCH: usize = 64;
/// What the queue holds at most: a turn's worth at thousands of calls.
const QUEUE_ITEMS: usize = 1024;
const QUEUE_BYTES: usize = 512 * 1024;
/// The most one transmit can need; the poller says "writable" only when
/// this much is free, so a transmit after "writable" always fits.
const MAX_TRANSMIT_BYTES: usize = 64 * 1024;
const MAX_TRANSMIT_ITEMS: usize = BATCH;

/// One queued datagram: where, and its bytes in the queue's buffer.
#[derive(Clone, Copy, Debug)]
struct Item {
    to: SocketAddr,
    at: usize,
    len: usize,
    ecn: Option<u8>,
    src: Option<IpAddr>,
}

/// Datagrams waiting for one `sendmmsg` turn; its buffers are made once.
#[derive(Debug)]
pub(crate) struct Queue {
    bytes: Vec<u8>,
    items: Vec<Item>,
}

impl Queue {
    pub(crate) fn new() -> Self {
        Self {
            bytes: Vec::with_capacity(QUEUE_BYTES),
            items: Vec::with_capacity(QUEUE_ITEMS),
        }
    }

    fn room(&self, items: usize, bytes: usize) -> bool {
        self.items.len() + items <= QUEUE_ITEMS && self.bytes.len() + bytes <= QUEUE_BYTES
    }

    /// Whether any transmit still fits ([`Queue::push`] never fails then).
    pub(crate) fn has_room(&self) -> bool {
        self.room(MAX_TRANSMIT_ITEMS, MAX_TRANSMIT_BYTES)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.items.clear();
    }

    /// Drops what [`send_from`] already sent (the first `n`), keeping the
    /// rest in order.
    pub(crate) fn consume(&mut self, n: usize) {
        if n >= self.items.len() {
            self.clear();
            return;
        }
        let cut = self.items[n].at;
        self.items.drain(..n);
        self.bytes.drain(..cut);
        for i in &mut self.items {
            i.at -= cut;
        }
    }

    /// Queues `t` (its segments as separate datagrams): `WouldBlock` when
    /// full, `InvalidInput` for a transmit that could never fit.
    pub(crate) fn push(&mut self, t: &Transmit) -> io::Result<()> {
        let seg = t
            .segment_size
            .filter(|s| *s > 0 && *s < t.contents.len())
            .unwrap_or(t.contents.len().max(1));
        let count = t.contents.len().div_ceil(seg).max(1);
        if count > MAX_TRANSMIT_ITEMS || t.contents.len() > MAX_TRANSMIT_BYTES {
            // Never fits: "would block" would have quinn's driver retry
            // it for ever.
            return Err(io::ErrorKind::InvalidInput.into());
        }
        if !self.room(count, t.contents.len()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        for part in t.contents.chunks(seg) {
            let at = self.bytes.len();
            self.bytes.extend_from_slice(part);
            self.items.push(Item {
                to: t.destination,
                at,
                len: part.len(),
                ecn: t.ecn.map(|e| e as u8),
                src: t.src_ip,
            });
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Shared {
    queue: Queue,
    /// The flusher, while it waits for a first transmit.
    flusher: Option<Waker>,
    /// Connections waiting for room.
    writers: Vec<Waker>,
}

/// What the socket did: the gateway passes its Prometheus counters
/// (shared by the shards' sockets); elsewhere they are the socket's own.
#[derive(Clone, Debug)]
pub struct Stats {
    /// `sendmmsg` calls that sent at least one datagram.
    pub calls: IntCounter,
    pub datagrams: IntCounter,
    /// Datagrams the kernel refused (dropped; QUIC counts them lost).
    pub refused: IntCounter,
}

impl Default for Stats {
    fn default() -> Self {
        let counter = || IntCounter::new("unregistered", "-").expect("a valid name");
        Self {
            calls: counter(),
            datagrams: counter(),
            refused: counter(),
        }
    }
}

impl Stats {
    /// The gateway's counters.
    pub fn of(m: &crate::telemetry::metrics::Metrics) -> Self {
        Self {
            calls: m.agent_udp_send_calls.clone(),
            datagrams: m.agent_udp_datagrams_sent.clone(),
            refused: m.agent_udp_send_refused.clone(),
        }
    }
}

/// A UDP socket for a quinn endpoint whose sends are batched per turn.
/// Make it inside the tokio runtime that will drive the endpoint: its
/// flusher task is spawned there.
#[derive(Debug)]
pub struct BatchSocket {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
    shared: Mutex<Shared>,
    /// The kernel refused an ECN mark (`EINVAL`): send without them.
    no_tos: AtomicBool,
    pub stats: Stats,
}

impl BatchSocket {
    pub fn new(socket: std::net::UdpSocket, stats: Stats) -> io::Result<Arc<Self>> {
        let state = UdpSocketState::new((&socket).into())?;
        let io = tokio::net::UdpSocket::from_std(socket)?;
        let me = Arc::new(Self {
            io,
            state,
            shared: Mutex::new(Shared {
                queue: Queue::new(),
                flusher: None,
                writers: Vec::new(),
            }),
            no_tos: AtomicBool::new(false),
            stats,
        });
        tokio::spawn(flush_loop(Arc::downgrade(&me)));
        Ok(me)
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // Only whole pushes and swaps happen under the lock.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send_some(&self, q: &Queue, from: usize) -> io::Result<usize> {
        send_from(self.io.as_raw_fd(), q, from, &self.no_tos, &self.stats)
    }

    /// Sends all of `q`, waiting for the socket when it is full.
    async fn send_all(&self, q: &Queue) {
        let mut done = 0;
        while done < q.items.len() {
            match self
                .io
                .try_io(Interest::WRITABLE, || self.send_some(q, done))
            {
                Ok(n) => done = n,
                Err(_) => {
                    // The socket buffer is full: `try_io` cleared its
                    // readiness, so this waits for room.
                    if self.io.writable().await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Takes the queue each turn something was queued, and sends it.
async fn flush_loop(me: Weak<BatchSocket>) {
    let mut spare = Queue::new();
    loop {
        let socket = poll_fn(|cx| {
            let Some(s) = me.upgrade() else {
                return Poll::Ready(None);
            };
            let mut sh = s.lock();
            if sh.queue.items.is_empty() {
                match &sh.flusher {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => sh.flusher = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            std::mem::swap(&mut sh.queue, &mut spare);
            for w in sh.writers.drain(..) {
                w.wake();
            }
            drop(sh);
            Poll::Ready(Some(s))
        })
        .await;
        let Some(socket) = socket else { return };
        socket.send_all(&spare).await;
        spare.clear();
    }
}

impl Drop for BatchSocket {
    fn drop(&mut self) {
        // What the last turn queued (a connection's close, say) still
        // goes, if the socket takes it now.
        let sh = self.lock();
        let _ = self.send_some(&sh.queue, 0);
        if let Some(w) = &sh.flusher {
            w.wake_by_ref();
        }
    }
}

impl AsyncUdpSocket for BatchSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Poller(self))
    }

    fn try_send(&self, t: &Transmit) -> io::Result<()> {
        let mut sh = self.lock();
        let was_empty = sh.queue.is_empty();
        sh.queue.push(t)?;
        if was_empty {
            if let Some(w) = sh.flusher.take() {
                w.wake();
            }
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.io.poll_recv_ready(cx))?;
            let mut got = 0;
            // quinn-udp reads at most this many in one call.
            let room = meta.len().min(bufs.len()).min(quinn::udp::BATCH_SIZE);
            // Fewer than asked for means the queue is empty: say so to
            // tokio (which then waits for the next arrival) instead of
            // asking the kernel again only to hear `EAGAIN`.
            let r = self.io.try_io(Interest::READABLE, || {
                got = self.state.recv((&self.io).into(), bufs, meta)?;
                if got < room {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(())
            });
            if got > 0 || r.is_ok() {
                return Poll::Ready(Ok(got));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    fn max_receive_segments(&self) -> usize {
        self.state.gro_segments()
    }
}

/// Sends `q` from `from` on: returns how far it got before the socket
/// would block, or `WouldBlock` when it took nothing.
pub(crate) fn send_from(
    fd: i32,
    q: &Queue,
    mut from: usize,
    no_tos: &AtomicBool,
    stats: &Stats,
) -> io::Result<usize> {
    let start = from;
    while from < q.items.len() {
        let end = q.items.len().min(from + BATCH);
        let tos = !no_tos.load(Ordering::Relaxed);
        match send_batch(fd, &q.bytes, &q.items[from..end], tos) {
            Ok(n) => {
                stats.calls.inc();
                stats.datagrams.inc_by(n as u64);
                from += n;
            }
            // What went must not be sent again: report progress
            // first; the next call then finds the socket full.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return if from > start { Ok(from) } else { Err(e) };
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // The first datagram of the batch was refused. Some
                // kernels refuse IP_TOS with EINVAL (quinn-udp then
                // sends IPv4 without ECN marks); so does a bad
                // destination (port 0, which a spoofed source can
                // ask for), which must not switch marks off.
                let one = &q.items[from..from + 1];
                let v4_marked = one[0].ecn.is_some() && is_v4(one[0].to);
                if e.raw_os_error() == Some(libc::EINVAL)
                    && tos
                    && v4_marked
                    && send_batch(fd, &q.bytes, one, false).is_ok_and(|n| n == 1)
                {
                    no_tos.store(true, Ordering::Relaxed);
                    stats.calls.inc();
                    stats.datagrams.inc();
                } else if e.raw_os_error() != Some(libc::EMSGSIZE) {
                    // Too large is a path-MTU probe, as quinn-udp
                    // takes it; anything else is counted.
                    stats.refused.inc();
                }
                from += 1;
            }
        }
    }
    Ok(from)
}

/// A connection's wait for room in the queue.
#[derive(Debug)]
struct Poller(Arc<BatchSocket>);

impl UdpPoller for Poller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        let mut sh = self.0.lock();
        if sh.queue.room(MAX_TRANSMIT_ITEMS, MAX_TRANSMIT_BYTES) {
            return Poll::Ready(Ok(()));
        }
        if !sh.writers.iter().any(|w| w.will_wake(cx.waker())) {
            sh.writers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Room for one datagram's control messages: a source address
/// (`in6_pktinfo`, the larger) and an ECN mark (an `int`), each
/// `CMSG_SPACE`-padded.
const CMSG_ROOM: usize = 64;

/// 8-byte aligned, as `cmsghdr` needs.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Cmsgs([u8; CMSG_ROOM]);

/// One `sendmmsg` call for `items` (at most [`BATCH`]): returns how many
/// the kernel took, or the error of the first one.
fn send_batch(fd: i32, bytes: &[u8], items: &[Item], tos: bool) -> io::Result<usize> {
    let n = items.len().min(BATCH);
    // SAFETY: all-zero is a valid value of these C structs (null
    // pointers, zero lengths).
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut names: [libc::sockaddr_in6; BATCH] = unsafe { std::mem::zeroed() };
    let mut ctrl = [Cmsgs([0; CMSG_ROOM]); BATCH];
    for (i, item) in items.iter().take(n).enumerate() {
        let data = &bytes[item.at..item.at + item.len];
        iovs[i].iov_base = data.as_ptr() as *mut libc::c_void;
        iovs[i].iov_len = data.len();
        let namelen = write_name(&mut names[i], item.to);
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = (&raw mut names[i]).cast();
        h.msg_namelen = namelen;
        h.msg_iov = &raw mut iovs[i];
        h.msg_iovlen = 1;
        h.msg_control = ctrl[i].0.as_mut_ptr().cast();
        h.msg_controllen = CMSG_ROOM as _;
        let mut used = 0usize;
        // SAFETY: `h` points at `ctrl[i]`, CMSG_ROOM zeroed bytes that
        // outlive this function's use of `h`. CMSG_NXTHDR only checks that
        // the next header fits; the data fits because at most one ECN
        // mark and one source address are written, whose CMSG_SPACEs sum
        // to at most CMSG_ROOM (the assertion beside `is_v4`).
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            let v4 = is_v4(item.to);
            if let Some(ecn) = item.ecn.filter(|_| tos || !v4) {
                let (level, kind) = if v4 {
                    (libc::IPPROTO_IP, libc::IP_TOS)
                } else {
                    (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
                };
                if !c.is_null() {
                    used += put_cmsg(c, level, kind, libc::c_int::from(ecn));
                    c = libc::CMSG_NXTHDR(h, c);
                }
            }
            match item.src {
                Some(IpAddr::V4(ip)) if !c.is_null() => {
                    let info = libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: libc::in_addr {
                            s_addr: u32::from_ne_bytes(ip.octets()),
                        },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    };
                    used += put_cmsg(c, libc::IPPROTO_IP, libc::IP_PKTINFO, info);
                }
                Some(IpAddr::V6(ip)) if !c.is_null() => {
                    let info = libc::in6_pktinfo {
                        ipi6_addr: libc::in6_addr {
                            s6_addr: ip.octets(),
                        },
                        ipi6_ifindex: 0,
                    };
                    used += put_cmsg(c, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, info);
                }
                _ => {}
            }
        }
        h.msg_controllen = used as _;
        if used == 0 {
            h.msg_control = std::ptr::null_mut();
        }
    }
    // SAFETY: the first `n` headers point only into `bytes`, `iovs`,
    // `names` and `ctrl`, all alive until this call returns.
    let rc =
        unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// An IPv4 destination, or an IPv4-mapped one on an IPv6 socket (whose
/// ECN mark is `IP_TOS`, as quinn-udp sends it).
fn is_v4(to: SocketAddr) -> bool {
    match to {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
    }
}

// The two control messages fit the room (64-bit: 24 + 40 bytes).
#[allow(clippy::cast_possible_truncation)]
const _: () = assert!(
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    unsafe {
        libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32)
            + libc::CMSG_SPACE(std::mem::size_of::<libc::in6_pktinfo>() as u32)
    } as usize
        <= CMSG_ROOM
);

/// Writes `value` as one control message at `c`; returns its
/// `CMSG_SPACE`.
///
/// # Safety
/// `c` must point at a header with `CMSG_SPACE(size_of::<T>())` bytes of
/// room, aligned for `cmsghdr`.
unsafe fn put_cmsg<T: Copy>(c: *mut libc::cmsghdr, level: i32, kind: i32, value: T) -> usize {
    let len = std::mem::size_of::<T>() as libc::c_uint;
    // SAFETY: the caller gives room for the header and CMSG_LEN(len)
    // bytes; CMSG_DATA may be unaligned for T, so the write is too.
    unsafe {
        (*c).cmsg_level = level;
        (*c).cmsg_type = kind;
        (*c).cmsg_len = libc::CMSG_LEN(len) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<T>(), value);
        libc::CMSG_SPACE(len) as usize
    }
}

/// Writes `to` as a C socket address into `out` (big enough for either
/// family); returns its length.
fn write_name(out: &mut libc::sockaddr_in6, to: SocketAddr) -> libc::socklen_t {
    match to {
        SocketAddr::V4(a) => {
            let v4 = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in (16 bytes) fits in sockaddr_in6 (28);
            // both are plain C structs and `out` is ours.
            unsafe { std::ptr::write_unaligned((out as *mut libc::sockaddr_in6).cast(), v4) };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            *out = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
#[path = "socket_tests.rs"]
mod tests;
