//! The kernel's floor under the media engine: what the gateway's packet
//! pattern costs when nothing but the sockets is left, with epoll (as the
//! engine does today) and with io_uring (issue 16's other candidate).
//!
//! A relay thread stands in for one shard: one UDP socket per call on the
//! trunk side and one socket for all the agents, as the gateway has. A
//! pump thread on the other core plays the carrier (one socket per call)
//! and the agents (16 sockets, as the load generator), each call sending
//! one 172-byte packet each way every 20 ms, phases spread. The relay
//! checks each trunk packet's source (the gateway's latching check),
//! forwards trunk packets to the call's agent and agents' packets to the
//! call's trunk peer, with no QUIC, no SRTP, no call state: so its CPU per
//! relayed packet is what any relay with this socket layout pays on this
//! kernel, the part of the engine's figure no user-space work can remove.
//!
//! - `epoll`: edge-triggered epoll; a ready trunk socket is read with
//!   `recvmmsg` (two slots, as the engine) until a short read, the agents'
//!   socket with 32 slots; towards agents the turn's packets leave in
//!   `sendmmsg` batches of 64, towards the trunk one `sendto` each (each
//!   call has its own socket, so nothing batches).
//! - `connected`: as `epoll`, each trunk socket `connect`ed to its
//!   carrier (the route is cached; the kernel then refuses other sources).
//! - `uring`: one ring (single issuer, deferred task work), a multishot
//!   `recvmsg` armed once per socket over a ring of provided buffers, and
//!   each forward a `send` with a destination, sent from the buffer it was
//!   received into; the turn's sends and the wait for the next completions
//!   are one `io_uring_enter`.
//! - `--tick-us T` (epoll modes): poll without blocking, then sleep to the
//!   next T-microsecond boundary whenever nothing is ready.
//!
//! Run: `cargo bench --bench udp_floor -- --calls 1000 --seconds 5
//! --rounds 3` (the modes alternate, relay on CPU 0, pump on CPU 1). It
//! prints each run and the medians: relayed packets, loss, and the relay's
//! CPU per packet (`/proc/self/task/*/schedstat` over the measured
//! window, every thread but the pump's and the main one, so io_uring's
//! workers would count too).
//!
//! # Why this file has `unsafe`
//!
//! It measures raw kernel interfaces that no dependency wraps safely:
//! `epoll`, `recvmmsg`/`sendmmsg` headers built on the stack for one
//! call, `sched_setaffinity`, and io_uring, whose submissions point into
//! memory (the provided-buffer ring, a `msghdr`, destination addresses)
//! that must stay put until the kernel is done with it. Each such block
//! says what it relies on.

#![allow(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types, IoUring};

const PAYLOAD: usize = 172;
const AGENT_SOCKETS: usize = 16;
const SLOT: usize = 2048;
const PERIOD_US: u64 = 20_000;
/// A trunk packet, as the engine reads them.
const TRUNK_SLOTS: usize = 2;
const AGENT_SLOTS: usize = 32;
const SEND_BATCH: usize = 64;
/// Provided buffers in the ring (a power of two).
const BUFFERS: usize = 8192;
const TRUNK_TO_AGENT: u8 = 0;
const AGENT_TO_TRUNK: u8 = 1;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Epoll,
    /// As `Epoll`, with each trunk socket connected to its carrier.
    Connected,
    Uring,
}

struct Opts {
    calls: usize,
    seconds: u64,
    rounds: usize,
    relay_cpu: usize,
    /// Wake per tick of this many microseconds instead of per packet
    /// (epoll modes); 0: wake when a socket is ready.
    tick_us: u64,
    pump_cpu: usize,
    modes: Vec<Mode>,
}

fn opts() -> Opts {
    let mut o = Opts {
        calls: 1000,
        seconds: 5,
        rounds: 3,
        relay_cpu: 0,
        tick_us: 0,
        pump_cpu: 1,
        modes: vec![Mode::Epoll, Mode::Uring],
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let next = args.get(i + 1).cloned().unwrap_or_default();
        let num = || next.parse::<usize>().unwrap_or_else(|_| usage(&args[i]));
        match args[i].as_str() {
            "--calls" => o.calls = num(),
            "--seconds" => o.seconds = num() as u64,
            "--rounds" => o.rounds = num(),
            "--relay-cpu" => o.relay_cpu = num(),
            "--tick-us" => o.tick_us = num() as u64,
            "--pump-cpu" => o.pump_cpu = num(),
            "--mode" => {
                o.modes = match next.as_str() {
                    "epoll" => vec![Mode::Epoll],
                    "uring" => vec![Mode::Uring],
                    "connected" => vec![Mode::Connected],
                    "both" => vec![Mode::Epoll, Mode::Uring],
                    "all" => vec![Mode::Epoll, Mode::Connected, Mode::Uring],
                    _ => usage("--mode"),
                }
            }
            // `cargo bench` adds `--bench`.
            "--bench" => {
                i += 1;
                continue;
            }
            other => usage(other),
        }
        i += 2;
    }
    o
}

fn usage(what: &str) -> ! {
    eprintln!(
        "udp_floor: bad {what}; options: --calls N --seconds S --rounds R \
         --mode epoll|connected|uring|both|all --tick-us T --relay-cpu C --pump-cpu C"
    );
    std::process::exit(2)
}

fn main() {
    let o = opts();
    let mut results: Vec<(Mode, f64)> = Vec::new();
    for round in 0..o.rounds {
        for &mode in &o.modes {
            match run(&o, mode) {
                Ok(r) => {
                    println!(
                        "round {} {:?}: {} calls, {} relayed ({:.0}/s), lost {} ({:.4}%), \
                         misrouted {}, relay CPU {:.3} s, {:.2} us per packet",
                        round + 1,
                        mode,
                        o.calls,
                        r.relayed,
                        r.relayed as f64 / o.seconds as f64,
                        r.lost,
                        100.0 * r.lost as f64 / r.sent.max(1) as f64,
                        r.misrouted,
                        r.cpu_ns as f64 / 1e9,
                        r.us_per_packet()
                    );
                    results.push((mode, r.us_per_packet()));
                }
                Err(e) => {
                    eprintln!("udp_floor: {mode:?}: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
    for &mode in &o.modes {
        let mut v: Vec<f64> = results
            .iter()
            .filter(|r| r.0 == mode)
            .map(|r| r.1)
            .collect();
        v.sort_by(f64::total_cmp);
        if let Some(m) = v.get(v.len() / 2) {
            println!(
                "median {mode:?}: {m:.2} us per relayed packet over {} runs",
                v.len()
            );
        }
    }
}

#[derive(Default)]
struct Outcome {
    relayed: u64,
    sent: u64,
    lost: u64,
    misrouted: u64,
    cpu_ns: u64,
}

impl Outcome {
    fn us_per_packet(&self) -> f64 {
        self.cpu_ns as f64 / 1e3 / self.relayed.max(1) as f64
    }
}

/// Both sides' sockets and addresses.
struct Net {
    trunk: Vec<UdpSocket>,
    agent: UdpSocket,
    carriers: Vec<UdpSocket>,
    agents: Vec<UdpSocket>,
    /// Where each call's trunk packets go (its carrier socket).
    carrier_addr: Vec<libc::sockaddr_in>,
    /// Where each call's agent packets go (one of the agents' sockets).
    agent_addr: Vec<libc::sockaddr_in>,
}

fn bind(buffer: Option<usize>) -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    if let Some(b) = buffer {
        s.set_recv_buffer_size(b)?;
        s.set_send_buffer_size(b)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    Ok(s.into())
}

fn raw(addr: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(v4) = addr else {
        unreachable!("every socket here is bound to 127.0.0.1")
    };
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn same(a: &libc::sockaddr_in, b: &libc::sockaddr_in) -> bool {
    a.sin_port == b.sin_port && a.sin_addr.s_addr == b.sin_addr.s_addr
}

impl Net {
    fn new(calls: usize) -> std::io::Result<Self> {
        let big = Some(8 << 20);
        let trunk = (0..calls)
            .map(|_| bind(None))
            .collect::<Result<Vec<_>, _>>()?;
        let carriers = (0..calls)
            .map(|_| bind(None))
            .collect::<Result<Vec<_>, _>>()?;
        let agents = (0..AGENT_SOCKETS.min(calls.max(1)))
            .map(|_| bind(big))
            .collect::<Result<Vec<_>, _>>()?;
        let agent = bind(big)?;
        let carrier_addr = carriers
            .iter()
            .map(|s| s.local_addr().map(raw))
            .collect::<Result<Vec<_>, _>>()?;
        let agent_addr = (0..calls)
            .map(|i| agents[i % agents.len()].local_addr().map(raw))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            trunk,
            agent,
            carriers,
            agents,
            carrier_addr,
            agent_addr,
        })
    }
}

/// What the pump and the relay share.
struct Shared {
    /// The pump stops sending (and keeps receiving what is in flight).
    quiet: AtomicBool,
    stop: AtomicBool,
    relayed: AtomicU64,
    pump_tid: AtomicI32,
    ready: AtomicBool,
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes in
    // it, and sched_setaffinity(0) reads it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("udp_floor: cannot pin a thread to CPU {cpu}: the figures mix cores");
        }
    }
}

fn tid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// CPU nanoseconds of this process's threads but `except`.
fn cpu_ns(except: &[i32]) -> u64 {
    let mut sum = 0;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    for t in dir.flatten() {
        let name = t.file_name();
        let id: i32 = name.to_string_lossy().parse().unwrap_or(0);
        if except.contains(&id) {
            continue;
        }
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            sum += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    sum
}

fn run(o: &Opts, mode: Mode) -> Result<Outcome, String> {
    let net = Net::new(o.calls).map_err(|e| format!("sockets: {e}"))?;
    if mode == Mode::Connected {
        for (s, c) in net.trunk.iter().zip(&net.carriers) {
            s.connect(c.local_addr().map_err(|e| e.to_string())?)
                .map_err(|e| format!("connect: {e}"))?;
        }
    }
    let net = Arc::new(net);
    let shared = Arc::new(Shared {
        quiet: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        relayed: AtomicU64::new(0),
        pump_tid: AtomicI32::new(0),
        ready: AtomicBool::new(false),
    });
    let relay = {
        let (net, shared, cpu) = (net.clone(), shared.clone(), o.relay_cpu);
        let tick = Duration::from_micros(o.tick_us);
        std::thread::spawn(move || {
            pin(cpu);
            match mode {
                Mode::Epoll => relay_epoll(&net, &shared, false, tick),
                Mode::Connected => relay_epoll(&net, &shared, true, tick),
                Mode::Uring => relay_uring(&net, &shared),
            }
        })
    };
    let pump = {
        let (net, shared, cpu) = (net.clone(), shared.clone(), o.pump_cpu);
        std::thread::spawn(move || {
            pin(cpu);
            shared.pump_tid.store(tid(), Ordering::SeqCst);
            pump(&net, &shared)
        })
    };
    let main = tid();
    let until = Instant::now() + Duration::from_secs(10);
    while !shared.ready.load(Ordering::SeqCst) || shared.pump_tid.load(Ordering::SeqCst) == 0 {
        if relay.is_finished() {
            shared.stop.store(true, Ordering::SeqCst);
            let _ = pump.join();
            return Err(match relay.join() {
                Ok(Err(e)) => format!("relay: {e}"),
                _ => "the relay ended at start".into(),
            });
        }
        if Instant::now() > until {
            shared.stop.store(true, Ordering::SeqCst);
            return Err("the relay did not start within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // A second of warm-up: every call's phase has come round, the
    // buffers are touched.
    std::thread::sleep(Duration::from_secs(1));
    let except = [main, shared.pump_tid.load(Ordering::SeqCst)];
    let (c0, r0) = (cpu_ns(&except), shared.relayed.load(Ordering::SeqCst));
    std::thread::sleep(Duration::from_secs(o.seconds));
    let (c1, r1) = (cpu_ns(&except), shared.relayed.load(Ordering::SeqCst));
    // The pump stops first and the relay forwards what is in flight, so
    // nothing still queued at the end counts as lost.
    shared.quiet.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    shared.stop.store(true, Ordering::SeqCst);
    let tally = pump.join().map_err(|_| "the pump panicked")?;
    relay
        .join()
        .map_err(|_| "the relay panicked")?
        .map_err(|e| format!("relay: {e}"))?;
    Ok(Outcome {
        relayed: r1.saturating_sub(r0),
        sent: tally.sent,
        lost: tally.sent.saturating_sub(tally.received),
        misrouted: tally.misrouted,
        // A thread that ended in the window takes its time with it.
        cpu_ns: c1.saturating_sub(c0),
    })
}

#[derive(Default)]
struct Tally {
    sent: u64,
    received: u64,
    misrouted: u64,
}

/// Sockets registered edge-triggered, keyed by index.
struct Epoll(RawFd);

impl Epoll {
    fn new() -> std::io::Result<Self> {
        // SAFETY: no pointers; the fd is owned by the returned value.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self(fd))
    }

    fn add(&self, fd: RawFd, key: u64) -> std::io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: key,
        };
        // SAFETY: `ev` is alive across the call, which only reads it.
        if unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn wait(&self, evs: &mut [libc::epoll_event], ms: i32) -> usize {
        // SAFETY: the kernel writes at most `evs.len()` events into it.
        let n = unsafe { libc::epoll_wait(self.0, evs.as_mut_ptr(), evs.len() as i32, ms) };
        n.max(0) as usize
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: ours, closed once.
        unsafe { libc::close(self.0) };
    }
}

/// Reads up to `bufs.len()` datagrams with one `recvmmsg`; each one's
/// length and source land in `lens` and `from`.
fn recv_batch(
    fd: RawFd,
    bufs: &mut [[u8; SLOT]],
    lens: &mut [usize],
    from: &mut [libc::sockaddr_in],
) -> usize {
    let n = bufs.len().min(lens.len()).min(from.len()).min(AGENT_SLOTS);
    // SAFETY: zeroed iovec/mmsghdr are valid; each header points into
    // `bufs[i]` and `from[i]`, which outlive the call, with their sizes.
    unsafe {
        let mut iov: [libc::iovec; AGENT_SLOTS] = std::mem::zeroed();
        let mut hdr: [libc::mmsghdr; AGENT_SLOTS] = std::mem::zeroed();
        for i in 0..n {
            iov[i].iov_base = bufs[i].as_mut_ptr().cast();
            iov[i].iov_len = SLOT;
            hdr[i].msg_hdr.msg_iov = &mut iov[i];
            hdr[i].msg_hdr.msg_iovlen = 1;
            hdr[i].msg_hdr.msg_name = (&mut from[i] as *mut libc::sockaddr_in).cast();
            hdr[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        }
        let got = libc::recvmmsg(
            fd,
            hdr.as_mut_ptr(),
            n as u32,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        );
        if got <= 0 {
            return 0;
        }
        for i in 0..got as usize {
            lens[i] = hdr[i].msg_len as usize;
        }
        got as usize
    }
}

/// Sends `lens.len()` datagrams from `bufs` to `to` with one `sendmmsg`
/// (looping over partial sends); returns how many left.
fn send_batch(fd: RawFd, bufs: &[[u8; SLOT]], lens: &[usize], to: &[libc::sockaddr_in]) -> usize {
    let n = lens.len().min(SEND_BATCH);
    let mut done = 0;
    // SAFETY: as in `recv_batch`; the kernel only reads the buffers and
    // addresses, and writes each header's `msg_len`.
    unsafe {
        let mut iov: [libc::iovec; SEND_BATCH] = std::mem::zeroed();
        let mut hdr: [libc::mmsghdr; SEND_BATCH] = std::mem::zeroed();
        for i in 0..n {
            iov[i].iov_base = bufs[i].as_ptr() as *mut libc::c_void;
            iov[i].iov_len = lens[i];
            hdr[i].msg_hdr.msg_iov = &mut iov[i];
            hdr[i].msg_hdr.msg_iovlen = 1;
            hdr[i].msg_hdr.msg_name = (&to[i] as *const libc::sockaddr_in) as *mut libc::c_void;
            hdr[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        }
        while done < n {
            let r = libc::sendmmsg(fd, hdr.as_mut_ptr().add(done), (n - done) as u32, 0);
            if r <= 0 {
                break;
            }
            done += r as usize;
        }
    }
    done
}

fn send_to(fd: RawFd, buf: &[u8], to: &libc::sockaddr_in) -> bool {
    // SAFETY: reads `buf` and `to` for the call only.
    let r = unsafe {
        libc::sendto(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            0,
            (to as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    r >= 0
}

fn send(fd: RawFd, buf: &[u8]) -> bool {
    // SAFETY: reads `buf` for the call only.
    unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), 0) >= 0 }
}

fn call_of(p: &[u8]) -> Option<usize> {
    Some(u32::from_le_bytes(p.get(..4)?.try_into().ok()?) as usize)
}

/// The engine's layout with nothing but the sockets.
fn relay_epoll(net: &Net, shared: &Shared, connected: bool, tick: Duration) -> std::io::Result<()> {
    let ep = Epoll::new()?;
    let n = net.trunk.len();
    for (i, s) in net.trunk.iter().enumerate() {
        ep.add(s.as_raw_fd(), i as u64)?;
    }
    let agent_fd = net.agent.as_raw_fd();
    ep.add(agent_fd, n as u64)?;
    let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut rx = vec![[0u8; SLOT]; AGENT_SLOTS];
    let mut lens = [0usize; AGENT_SLOTS];
    let mut from = [raw(SocketAddr::from(([0, 0, 0, 0], 0))); AGENT_SLOTS];
    let mut out = vec![[0u8; SLOT]; SEND_BATCH];
    let mut out_lens: Vec<usize> = Vec::with_capacity(SEND_BATCH);
    let mut out_to: Vec<libc::sockaddr_in> = Vec::with_capacity(SEND_BATCH);
    let mut relayed = 0u64;
    shared.ready.store(true, Ordering::SeqCst);
    let mut next_tick = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        let k = if tick.is_zero() {
            ep.wait(&mut evs, 10)
        } else {
            // Per tick: sleep out the rest of it once nothing is ready.
            let k = ep.wait(&mut evs, 0);
            if k == 0 {
                next_tick += tick;
                let now = Instant::now();
                if next_tick > now {
                    std::thread::sleep(next_tick - now);
                } else {
                    next_tick = now;
                }
            }
            k
        };
        for ev in &evs[..k] {
            let key = ev.u64 as usize;
            if key == n {
                loop {
                    let got = recv_batch(agent_fd, &mut rx, &mut lens, &mut from);
                    for j in 0..got {
                        let p = &rx[j][..lens[j]];
                        if let Some(c) = call_of(p).filter(|&c| c < n) {
                            let fd = net.trunk[c].as_raw_fd();
                            let sent = if connected {
                                send(fd, p)
                            } else {
                                send_to(fd, p, &net.carrier_addr[c])
                            };
                            if sent {
                                relayed += 1;
                            }
                        }
                    }
                    if got < AGENT_SLOTS {
                        break;
                    }
                }
            } else {
                let fd = net.trunk[key].as_raw_fd();
                loop {
                    let got = recv_batch(
                        fd,
                        &mut rx[..TRUNK_SLOTS],
                        &mut lens[..TRUNK_SLOTS],
                        &mut from[..TRUNK_SLOTS],
                    );
                    for j in 0..got {
                        // The latching check: only the call's carrier.
                        if !same(&from[j], &net.carrier_addr[key]) {
                            continue;
                        }
                        let len = lens[j];
                        let slot = out_lens.len();
                        out[slot][..len].copy_from_slice(&rx[j][..len]);
                        out_lens.push(len);
                        out_to.push(net.agent_addr[key]);
                        if out_lens.len() == SEND_BATCH {
                            relayed += send_batch(agent_fd, &out, &out_lens, &out_to) as u64;
                            out_lens.clear();
                            out_to.clear();
                        }
                    }
                    if got < TRUNK_SLOTS {
                        break;
                    }
                }
            }
        }
        if !out_lens.is_empty() {
            relayed += send_batch(agent_fd, &out, &out_lens, &out_to) as u64;
            out_lens.clear();
            out_to.clear();
        }
        shared.relayed.store(relayed, Ordering::Relaxed);
    }
    Ok(())
}

/// The provided-buffer ring: `BUFFERS` entries of 16 bytes, page-aligned
/// as the kernel requires, and the buffers they hand out.
struct BufRing {
    ring: *mut types::BufRingEntry,
    ring_layout: std::alloc::Layout,
    bufs: Vec<u8>,
    tail: u16,
}

impl BufRing {
    fn new() -> Self {
        let ring_layout = std::alloc::Layout::from_size_align(
            BUFFERS * std::mem::size_of::<types::BufRingEntry>(),
            page_size(),
        )
        .expect("a valid layout");
        // SAFETY: the layout has a non-zero size.
        let ring = unsafe { std::alloc::alloc_zeroed(ring_layout) }.cast::<types::BufRingEntry>();
        assert!(!ring.is_null(), "out of memory for the buffer ring");
        let mut r = Self {
            ring,
            ring_layout,
            bufs: vec![0u8; BUFFERS * SLOT],
            tail: 0,
        };
        for bid in 0..BUFFERS as u16 {
            r.give(bid);
        }
        r.publish();
        r
    }

    /// Puts buffer `bid` back at the tail (seen by the kernel once
    /// published).
    fn give(&mut self, bid: u16) {
        let idx = usize::from(self.tail) & (BUFFERS - 1);
        // SAFETY: idx < BUFFERS, inside the allocation; the kernel reads
        // only entries between its head and the published tail, and this
        // one is past the published tail.
        let e = unsafe { &mut *self.ring.add(idx) };
        e.set_addr(self.bufs.as_ptr() as u64 + u64::from(bid) * SLOT as u64);
        e.set_len(SLOT as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field lives in the ring's first entry, inside
        // the allocation; the kernel reads it, so the store is atomic and
        // releases the entries written before it.
        unsafe {
            let tail = types::BufRingEntry::tail(self.ring) as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    fn buf(&self, bid: u16) -> &[u8] {
        let at = usize::from(bid) * SLOT;
        &self.bufs[at..at + SLOT]
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the ring that used
        // it is dropped first (`relay_uring` declares it after).
        unsafe { std::alloc::dealloc(self.ring.cast(), self.ring_layout) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p)
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096)
}

const RECV: u64 = 1 << 32;
const SEND: u64 = 2 << 32;

/// The same relay on io_uring.
fn relay_uring(net: &Net, shared: &Shared) -> std::io::Result<()> {
    let mut bufs = BufRing::new();
    // The template every multishot receive uses: room for an IPv4
    // source, no control messages. Boxed: the kernel reads it each time.
    // SAFETY: a zeroed msghdr is valid.
    let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
    msghdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(32768)
        .build(4096)?;
    // SAFETY: the ring memory is page-aligned, BUFFERS entries, and lives
    // until after `ring` is dropped (declared before it).
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(bufs.ring as u64, BUFFERS as u16, 0, 0)?;
    }
    let n = net.trunk.len();
    let fds: Vec<RawFd> = net
        .trunk
        .iter()
        .map(|s| s.as_raw_fd())
        .chain(std::iter::once(net.agent.as_raw_fd()))
        .collect();
    let arm = |ring: &mut IoUring, i: usize| -> std::io::Result<()> {
        let e = opcode::RecvMsgMulti::new(types::Fd(fds[i]), &*msghdr, 0)
            .build()
            .user_data(RECV | i as u64);
        push(ring, &e)
    };
    for i in 0..=n {
        arm(&mut ring, i)?;
    }
    let ts = types::Timespec::new().nsec(10_000_000);
    let args = types::SubmitArgs::new().timespec(&ts);
    let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(32768);
    let mut rearm: Vec<usize> = Vec::new();
    let mut relayed = 0u64;
    shared.ready.store(true, Ordering::SeqCst);
    while !shared.stop.load(Ordering::Relaxed) {
        match ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        cqes.clear();
        cqes.extend(
            ring.completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(ud, res, flags) in &cqes {
            let idx = (ud & 0xffff_ffff) as usize;
            if ud & SEND != 0 {
                // The send is done with its buffer.
                bufs.give(idx as u16);
                if res > 0 {
                    relayed += 1;
                }
                continue;
            }
            if !cqueue::more(flags) {
                rearm.push(idx);
            }
            let Some(bid) = cqueue::buffer_select(flags) else {
                continue;
            };
            if res <= 0 {
                bufs.give(bid);
                continue;
            }
            let buf = &bufs.buf(bid)[..res as usize];
            let Ok(msg) = types::RecvMsgOut::parse(buf, &msghdr) else {
                bufs.give(bid);
                continue;
            };
            let payload = msg.payload_data();
            let (fd, to) = if idx == n {
                match call_of(payload).filter(|&c| c < n) {
                    Some(c) => (fds[c], &net.carrier_addr[c]),
                    None => {
                        bufs.give(bid);
                        continue;
                    }
                }
            } else {
                let name = msg.name_data();
                let ok = name.len() >= 8
                    && name[2..4] == net.carrier_addr[idx].sin_port.to_ne_bytes()
                    && name[4..8] == net.carrier_addr[idx].sin_addr.s_addr.to_ne_bytes();
                if !ok {
                    bufs.give(bid);
                    continue;
                }
                (fds[n], &net.agent_addr[idx])
            };
            let e = opcode::Send::new(types::Fd(fd), payload.as_ptr(), payload.len() as u32)
                .dest_addr((to as *const libc::sockaddr_in).cast())
                .dest_addr_len(std::mem::size_of::<libc::sockaddr_in>() as u32)
                .build()
                .user_data(SEND | u64::from(bid));
            push(&mut ring, &e)?;
        }
        bufs.publish();
        for i in rearm.drain(..) {
            arm(&mut ring, i)?;
        }
        shared.relayed.store(relayed, Ordering::Relaxed);
    }
    // The last turn's sends still go.
    ring.submit()?;
    Ok(())
}

fn push(ring: &mut IoUring, e: &io_uring::squeue::Entry) -> std::io::Result<()> {
    loop {
        // SAFETY: every entry pushed points at memory that outlives the
        // operation: the msghdr and buffer ring (alive for the ring's
        // life), a provided buffer (not given back until its send
        // completes) and the destination addresses in `Net` (alive
        // until the relay returns and the ring with it).
        if unsafe { ring.submission().push(e) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}

/// The carrier and the agents: each call sends a packet each way every
/// 20 ms; what comes back is checked for its call and counted.
fn pump(net: &Net, shared: &Shared) -> Tally {
    let n = net.trunk.len();
    let mut t = Tally::default();
    let ep = match Epoll::new() {
        Ok(e) => e,
        Err(_) => return t,
    };
    for (i, s) in net.carriers.iter().enumerate() {
        if ep.add(s.as_raw_fd(), i as u64).is_err() {
            return t;
        }
    }
    for (j, s) in net.agents.iter().enumerate() {
        if ep.add(s.as_raw_fd(), (n + j) as u64).is_err() {
            return t;
        }
    }
    let relay_trunk: Vec<libc::sockaddr_in> = net
        .trunk
        .iter()
        .map(|s| {
            s.local_addr()
                .map(raw)
                .unwrap_or(raw(SocketAddr::from(([0; 4], 0))))
        })
        .collect();
    let relay_agent = net
        .agent
        .local_addr()
        .map(raw)
        .unwrap_or(raw(SocketAddr::from(([0; 4], 0))));
    // Calls in order of their phase in the 20 ms period.
    let mut order: Vec<(u64, usize)> = (0..n)
        .map(|i| ((i as u64).wrapping_mul(7919) % PERIOD_US, i))
        .collect();
    order.sort_unstable();
    let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut rx = vec![[0u8; SLOT]; AGENT_SLOTS];
    let mut lens = [0usize; AGENT_SLOTS];
    let mut from = [raw(SocketAddr::from(([0, 0, 0, 0], 0))); AGENT_SLOTS];
    let mut pkt = [0u8; PAYLOAD];
    let start = Instant::now();
    let (mut cycle, mut next, mut seq) = (0u64, 0usize, 0u64);
    let mut counting = false;
    loop {
        let now = start.elapsed().as_micros() as u64;
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        // Quiet: stop sending, keep receiving what is in flight.
        let quiet = shared.quiet.load(Ordering::Relaxed);
        // Count only what was sent once the relay's measured window can
        // have begun; the first second's packets are warm-up.
        if !counting && now >= 1_000_000 {
            counting = true;
        }
        // Quiet, or no calls: nothing due.
        while let Some(&(phase, c)) = order.get(next).filter(|_| !quiet) {
            if cycle * PERIOD_US + phase > now {
                break;
            }
            pkt[..4].copy_from_slice(&(c as u32).to_le_bytes());
            pkt[5..13].copy_from_slice(&seq.to_le_bytes());
            // Warm-up packets are marked, so that their late arrivals
            // are not counted against the measured ones.
            pkt[13] = u8::from(counting);
            seq += 1;
            pkt[4] = TRUNK_TO_AGENT;
            let a = send_to(net.carriers[c].as_raw_fd(), &pkt, &relay_trunk[c]);
            pkt[4] = AGENT_TO_TRUNK;
            let b = send_to(
                net.agents[c % net.agents.len()].as_raw_fd(),
                &pkt,
                &relay_agent,
            );
            if counting {
                t.sent += u64::from(a) + u64::from(b);
            }
            next += 1;
            if next == n {
                next = 0;
                cycle += 1;
            }
        }
        let k = ep.wait(&mut evs, 1);
        for ev in &evs[..k] {
            let key = ev.u64 as usize;
            let fd = if key < n {
                net.carriers[key].as_raw_fd()
            } else {
                net.agents[key - n].as_raw_fd()
            };
            loop {
                let got = recv_batch(fd, &mut rx, &mut lens, &mut from);
                for j in 0..got {
                    let p = &rx[j][..lens[j]];
                    let (Some(c), Some(&dir)) = (call_of(p), p.get(4)) else {
                        t.misrouted += 1;
                        continue;
                    };
                    let right = if key < n {
                        dir == AGENT_TO_TRUNK && c == key
                    } else {
                        dir == TRUNK_TO_AGENT && c < n && c % net.agents.len() == key - n
                    };
                    if !right || lens[j] != PAYLOAD {
                        t.misrouted += 1;
                    } else if p[13] == 1 {
                        t.received += 1;
                    }
                }
                if got < AGENT_SLOTS {
                    break;
                }
            }
        }
    }
    t
}
