//! `tollgate loadgen`: a media load run against a real gateway, measured
//! at both ends.
//!
//! One process plays the carrier and the agents. It starts a gateway of
//! its own (this same executable's `run`, optionally pinned with
//! `taskset`, on loopback ports and a throw-away data directory), enrols
//! one agent per call, logs each in over its own QUIC connection, places
//! the calls over SIP/UDP, and relays G.711 both ways: the carrier's RTP
//! paced 20 ms per call with the calls' phases spread, the agents' SRTP
//! datagrams likewise. Every payload names its stream, its number and
//! its send time ([`payload`]), so each end checks what it receives and
//! measures one-way latency through the gateway.
//!
//! The measured window starts after every call is up and a warm-up has
//! passed; the gateway's CPU over the window (user and system, every
//! thread, from `/proc/PID/task/*/schedstat`) divided by the packets it
//! relayed in the window is its cost per packet.

pub mod agents;
pub mod payload;
pub mod rtpengine;
pub mod trunk;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use payload::{Tally, Window};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Two-way calls, each with its own agent.
    pub calls: u32,
    /// The measured window.
    pub seconds: f64,
    /// New calls a second while setting up.
    pub rate: f64,
    /// Between every call up and the window.
    pub warmup: f64,
    /// CPUs for the gateway (`taskset -c` list), if pinned.
    pub gateway_cpus: Option<String>,
}

/// What both sides share: the run's clock and its phases.
pub struct Shared {
    epoch: Instant,
    from: AtomicU64,
    to: AtomicU64,
    /// Set when the window is over: the carrier hangs up.
    pub hangup: AtomicBool,
    pub calls_up: AtomicU32,
    pub agents_answered: AtomicU32,
    /// The first agent's login that failed (the run stops at once rather
    /// than wait for an agent that will never be available).
    login_error: std::sync::Mutex<Option<String>>,
    login_failed: tokio::sync::Notify,
}

impl Shared {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            from: AtomicU64::new(u64::MAX),
            to: AtomicU64::new(u64::MAX),
            hangup: AtomicBool::new(false),
            calls_up: AtomicU32::new(0),
            agents_answered: AtomicU32::new(0),
            login_error: std::sync::Mutex::new(None),
            login_failed: tokio::sync::Notify::new(),
        }
    }

    fn login_failed(&self, why: String) {
        if let Ok(mut e) = self.login_error.lock() {
            e.get_or_insert(why);
        }
        self.login_failed.notify_one();
    }

    /// `t` on the run's clock, in nanoseconds.
    pub fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    pub fn window(&self) -> Window {
        Window {
            from: self.from.load(Ordering::Relaxed),
            to: self.to.load(Ordering::Relaxed),
        }
    }
}

/// Latency through the gateway, one way, in microseconds.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Latency {
    pub p50_us: u32,
    pub p99_us: u32,
    pub max_us: u32,
}

impl Latency {
    fn of(v: &mut [u32]) -> Self {
        let (p50_us, p99_us, max_us) = payload::percentiles(v);
        Self {
            p50_us,
            p99_us,
            max_us,
        }
    }
}

/// One direction's figures.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Direction {
    #[serde(flatten)]
    pub tally: Tally,
    pub lost: u64,
    pub loss: f64,
    pub latency: Latency,
}

impl Direction {
    fn of(tally: Tally, latency: &mut [u32]) -> Self {
        let lost = tally.lost();
        Self {
            loss: if tally.sent == 0 {
                0.0
            } else {
                lost as f64 / tally.sent as f64
            },
            lost,
            tally,
            latency: Latency::of(latency),
        }
    }
}

/// A run's result.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    pub calls: u32,
    pub seconds: f64,
    /// Calls up at both ends (the carrier's ACKed 200, the agent's
    /// answered).
    pub answered: u32,
    pub failed: u32,
    /// Calls the gateway hung up before the end.
    pub ended_early: u32,
    pub to_agents: Direction,
    pub to_trunk: Direction,
    /// Packets the gateway relayed in the window (received at either end).
    pub relayed: u64,
    pub packets_per_s: f64,
    /// Gateway CPU (all threads) over the window.
    pub gateway_cpu_s: f64,
    pub gateway_cpu_us_per_packet: f64,
    /// Trouble at the load generator's own end (not the gateway's).
    pub stray: u64,
    pub send_errors: u64,
    pub undecodable: u64,
    pub agent_errors: u32,
    pub first_agent_error: Option<String>,
    /// The gateway's QUIC sends in the window (from its metrics):
    /// datagrams and the `sendmmsg` calls that carried them.
    pub gateway_udp_datagrams: u64,
    pub gateway_udp_send_calls: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} calls for {:.1} s: {} answered, {} failed, {} ended early",
            self.calls, self.seconds, self.answered, self.failed, self.ended_early
        )?;
        for (name, d) in [
            ("trunk to agents", &self.to_agents),
            ("agents to trunk", &self.to_trunk),
        ] {
            writeln!(
                f,
                "  {name}: sent {} received {} lost {} ({:.4}%) reordered {} duplicated {} late {} corrupt {} misrouted {}; latency p50 {} us p99 {} us max {} us",
                d.tally.sent,
                d.tally.received,
                d.lost,
                d.loss * 100.0,
                d.tally.reordered,
                d.tally.duplicated,
                d.tally.late,
                d.tally.corrupt,
                d.tally.misrouted,
                d.latency.p50_us,
                d.latency.p99_us,
                d.latency.max_us
            )?;
        }
        writeln!(
            f,
            "  gateway: {} packets relayed ({:.0}/s), {:.3} s CPU, {:.2} us CPU per packet",
            self.relayed, self.packets_per_s, self.gateway_cpu_s, self.gateway_cpu_us_per_packet
        )?;
        if self.gateway_udp_send_calls > 0 {
            writeln!(
                f,
                "  gateway QUIC sends: {} datagrams in {} sendmmsg calls ({:.2} a call)",
                self.gateway_udp_datagrams,
                self.gateway_udp_send_calls,
                self.gateway_udp_datagrams as f64 / self.gateway_udp_send_calls as f64
            )?;
        }
        write!(
            f,
            "  load generator: {} stray, {} send errors, {} undecodable, {} agent errors{}",
            self.stray,
            self.send_errors,
            self.undecodable,
            self.agent_errors,
            self.first_agent_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        )
    }
}

/// Spreads calls' packets over the 20 ms: call `i` sends in slot
/// `i % SLOTS`, one slot a millisecond.
pub struct Pacer {
    start: Instant,
    slot: u64,
}

impl Pacer {
    pub const SLOTS: usize = 20;
    const SLOT: Duration = Duration::from_millis(1);

    pub fn new(start: Instant) -> Self {
        Self { start, slot: 0 }
    }

    /// When the next slot is due.
    pub fn next(&self) -> Instant {
        self.start + Self::SLOT * (self.slot as u32)
    }

    /// The slot (0 to SLOTS - 1) whose packets are due at `now`, if one
    /// is; a late caller gets each missed slot in turn.
    pub fn due(&mut self, now: Instant) -> Option<usize> {
        if self.next() > now {
            return None;
        }
        let k = (self.slot % Self::SLOTS as u64) as usize;
        self.slot += 1;
        Some(k)
    }
}

/// A directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        // `TOLLGATE_LOADGEN_KEEP=1` keeps the gateway's log and data to
        // look at after a run.
        if std::env::var_os("TOLLGATE_LOADGEN_KEEP").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The gateway under test, stopped when dropped.
struct Gateway {
    child: std::process::Child,
}

impl Gateway {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then (after 10 s) SIGKILL.
    fn stop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// CPU time of every thread of `pid` so far (`/proc/PID/task/*/schedstat`,
/// nanoseconds on a CPU).
pub fn cpu_ns(pid: u32) -> Result<u64, String> {
    let dir = PathBuf::from(format!("/proc/{pid}/task"));
    let mut total = 0;
    for e in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let Ok(e) = e else { continue };
        let Ok(text) = std::fs::read_to_string(e.path().join("schedstat")) else {
            continue; // the thread ended meanwhile
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

fn free_port(udp: bool) -> Result<u16, String> {
    let port = if udp {
        std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    } else {
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    };
    port.map(|a| a.port()).map_err(|e| e.to_string())
}

fn config(sip: u16, admin: u16, quic: u16) -> String {
    format!(
        r#"[sip]
udp = ["127.0.0.1:{sip}"]
tcp = []
[media]
rtp_ports = "20000-59999"
[admin]
listen = "127.0.0.1:{admin}"
[agents]
listen = "127.0.0.1:{quic}"
[[trunk]]
name = "load"
peers = ["127.0.0.0/8"]
codecs = ["PCMA"]
srtp = "off"
max_calls = 5000
[[route]]
number = "*"
target = "queue:default"
[firewall]
nftables = "off"
"#
    )
}

/// An agent ready to log in: its bundle and TOTP secret.
struct Enrolled {
    bundle: crate::agent::store::Bundle,
    secret: crate::agent::totp::Secret,
}

fn enroll(dir: &Path, key: &Path, quic: SocketAddr, n: u32) -> Result<Vec<Enrolled>, String> {
    let sealer = crate::keys::Sealer::load_master(key, false).map_err(|e| e.to_string())?;
    let store = crate::agent::store::Store::new(&dir.join("data"));
    (0..n)
        .map(|i| {
            let e = store
                .enroll(&sealer, &format!("load{i}"), None, &quic.to_string())
                .map_err(|e| e.to_string())?;
            Ok(Enrolled {
                bundle: toml::from_str(&e.bundle).map_err(|e| e.to_string())?,
                secret: crate::agent::totp::Secret::parse(&e.otp_uri).ok_or("TOTP secret")?,
            })
        })
        .collect()
}

/// Runs the load and returns what it measured; `progress` hears each
/// phase.
pub fn run(opts: &Options, mut progress: impl FnMut(&str)) -> Result<Report, String> {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-loadgen-{}-{}",
        std::process::id(),
        crate::sip::build::token()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let scratch = Scratch(dir.clone());
    let (sip, admin, quic) = (free_port(true)?, free_port(false)?, free_port(true)?);
    let conf = dir.join("tollgate.toml");
    std::fs::write(&conf, config(sip, admin, quic)).map_err(|e| e.to_string())?;
    let key = dir.join("master.key");
    let mut k = [0u8; 32];
    crate::crypto::random(&mut k).map_err(|_| "no randomness from the OS".to_string())?;
    crate::keys::write_private(&key, &k, false).map_err(|e| e.to_string())?;
    let quic_addr = SocketAddr::from(([127, 0, 0, 1], quic));
    let admin_addr = SocketAddr::from(([127, 0, 0, 1], admin));
    let sip_addr = SocketAddr::from(([127, 0, 0, 1], sip));
    let t = Instant::now();
    let agents = enroll(&dir, &key, quic_addr, opts.calls)?;
    progress(&format!(
        "enrolled {} agents in {:.1} s",
        opts.calls,
        t.elapsed().as_secs_f64()
    ));
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = match &opts.gateway_cpus {
        Some(cpus) => {
            let mut c = std::process::Command::new("taskset");
            c.args(["-c", cpus]).arg(&exe);
            c
        }
        None => std::process::Command::new(&exe),
    };
    let log = std::fs::File::create(dir.join("gateway.log")).map_err(|e| e.to_string())?;
    cmd.arg("run")
        .arg("--config")
        .arg(&conf)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--master-key")
        .arg(&key)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    let mut gw = Gateway {
        child: cmd
            .spawn()
            .map_err(|e| format!("starting the gateway: {e}"))?,
    };
    // One thread, as the gateway's shards: the turn's sends of many
    // agents leave in one batch, and `--gateway-cpus` leaves it a core.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = rt.block_on(drive(
        opts,
        &mut gw,
        agents,
        sip_addr,
        admin_addr,
        &mut progress,
    ));
    gw.stop();
    let result = result.map_err(|e| {
        let log = std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        format!(
            "{e}; gateway log ends:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    });
    drop(scratch);
    result
}

/// Sockets the agents share (each agent still its own connection):
/// enough for the gateway's reuseport hash to spread them over its
/// shards, few enough that one wake sends many agents' datagrams in one
/// batch, as the gateway does.
const AGENT_SOCKETS: usize = 16;

fn agent_endpoints(agents: usize) -> Result<Vec<quinn::Endpoint>, String> {
    (0..agents.clamp(1, AGENT_SOCKETS))
        .map(|_| {
            // As much kernel buffer as the rtpengine run's agent socket.
            let std = trunk::bind_std_udp(8 << 20).map_err(|e| format!("agents' socket: {e}"))?;
            let socket = crate::agent::socket::BatchSocket::new(std, Default::default())
                .map_err(|e| format!("agents' socket: {e}"))?;
            quinn::Endpoint::new_with_abstract_socket(
                quinn::EndpointConfig::default(),
                None,
                socket,
                Arc::new(quinn::TokioRuntime),
            )
            .map_err(|e| format!("agents' endpoint: {e}"))
        })
        .collect()
}

async fn drive(
    opts: &Options,
    gw: &mut Gateway,
    agents: Vec<Enrolled>,
    sip: SocketAddr,
    admin: SocketAddr,
    progress: &mut impl FnMut(&str),
) -> Result<Report, String> {
    let until = Instant::now() + Duration::from_secs(30);
    while !crate::admin::http::get(admin, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    {
        if Instant::now() > until {
            return Err("the gateway did not become healthy within 30 s".into());
        }
        if let Ok(Some(status)) = gw.child.try_wait() {
            return Err(format!("the gateway exited: {status}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let shared = Arc::new(Shared::new());
    let t = Instant::now();
    // Logins a few at a time: the gateway limits handshakes per source.
    let logins = Arc::new(tokio::sync::Semaphore::new(8));
    let sockets = agent_endpoints(agents.len())?;
    let mut tasks = Vec::with_capacity(agents.len());
    for (i, a) in agents.into_iter().enumerate() {
        let (logins, shared) = (logins.clone(), shared.clone());
        let endpoint = sockets[i % sockets.len()].clone();
        tasks.push(tokio::spawn(async move {
            let client = {
                let _permit = logins.acquire().await;
                let now = crate::now_ms() / 1000;
                crate::agent::client::Client::connect_with(
                    &a.bundle,
                    &crate::agent::totp::code_at(&a.secret, now),
                    crate::agent::client::Options {
                        endpoint: Some(endpoint),
                        ..Default::default()
                    },
                )
                .await
            };
            match client {
                Ok(c) => agents::run(c, i as u32, shared).await,
                Err(e) => {
                    let error = format!("agent {i}'s login: {e}");
                    shared.login_failed(error.clone());
                    agents::AgentReport {
                        error: Some(error),
                        ..Default::default()
                    }
                }
            }
        }));
    }
    let n = opts.calls;
    tokio::select! {
        r = crate::admin::http::agents_available(
            admin,
            n,
            Duration::from_secs(30) + Duration::from_millis(50) * n,
        ) => r?,
        () = shared.login_failed.notified() => {
            let why = shared.login_error.lock().ok().and_then(|e| e.clone());
            return Err(why.unwrap_or_else(|| "an agent's login failed".into()));
        }
    }
    progress(&format!(
        "{n} agents logged in in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    let carrier = tokio::spawn(trunk::run(sip, n, opts.rate, shared.clone()));
    let sends = || async move {
        tokio::task::spawn_blocking(move || udp_sends(admin))
            .await
            .ok()
            .flatten()
    };
    let (cpu_s, sends) = measure(
        opts,
        &shared,
        gw.pid(),
        || carrier.is_finished(),
        progress,
        sends,
    )
    .await?;
    let carrier = carrier.await.map_err(|e| e.to_string())??;
    let (gateway_udp_datagrams, gateway_udp_send_calls) = sends.unwrap_or_default();
    let mut report = Report {
        failed: carrier.failed,
        ended_early: carrier.ended_early,
        stray: carrier.stray,
        send_errors: carrier.send_errors,
        gateway_udp_datagrams,
        gateway_udp_send_calls,
        ..Default::default()
    };
    let mut to_agents = Tally {
        sent: carrier.to_agents_sent,
        ..Default::default()
    };
    let mut to_trunk = carrier.from_agents.clone();
    let mut lat_agents = Vec::new();
    let mut answered_agents = 0;
    for t in tasks {
        let a = t.await.map_err(|e| e.to_string())?;
        answered_agents += u32::from(a.answered);
        to_agents.add(&a.received);
        to_trunk.sent += a.sent;
        report.undecodable += a.undecodable;
        lat_agents.extend_from_slice(&a.latency_us);
        if let Some(e) = a.error {
            report.agent_errors += 1;
            report.first_agent_error.get_or_insert(e);
        }
    }
    report.answered = carrier.answered.min(answered_agents);
    report.finish(
        opts,
        cpu_s,
        (to_agents, lat_agents),
        (to_trunk, carrier.latency_us),
    );
    Ok(report)
}

/// Waits (bounded) for every call to be up, then measures the window:
/// returns the process's CPU seconds over it. The carrier hangs up half
/// a second after it closes (packets on their way still count).
/// The gateway's QUIC send counters (datagrams, `sendmmsg` calls) from
/// its metrics.
fn udp_sends(admin: SocketAddr) -> Option<(u64, u64)> {
    let text = crate::admin::http::get(admin, "/metrics")?;
    let value = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    Some((
        value("tollgate_agent_udp_datagrams_sent_total")?,
        value("tollgate_agent_udp_send_calls_total")?,
    ))
}

/// Waits for the calls, then measures the gateway's CPU (and `counters`,
/// as a difference) over the window.
async fn measure<F: std::future::Future<Output = Option<(u64, u64)>>>(
    opts: &Options,
    shared: &Shared,
    pid: u32,
    gave_up: impl Fn() -> bool,
    progress: &mut impl FnMut(&str),
    counters: impl Fn() -> F,
) -> Result<(f64, Option<(u64, u64)>), String> {
    let n = opts.calls;
    let t = Instant::now();
    let setup = Duration::from_secs_f64(f64::from(n) / opts.rate) + Duration::from_secs(30);
    while shared.calls_up.load(Ordering::Relaxed) < n
        || shared.agents_answered.load(Ordering::Relaxed) < n
    {
        if t.elapsed() > setup || gave_up() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    progress(&format!(
        "{} calls up in {:.1} s",
        shared.calls_up.load(Ordering::Relaxed),
        t.elapsed().as_secs_f64()
    ));
    let from = Instant::now() + Duration::from_secs_f64(opts.warmup);
    let to = from + Duration::from_secs_f64(opts.seconds);
    shared.from.store(shared.ns(from), Ordering::Relaxed);
    shared.to.store(shared.ns(to), Ordering::Relaxed);
    tokio::time::sleep_until(from.into()).await;
    // The counters before and after the CPU readings: their own cost
    // stays out of the window.
    let c0 = counters().await;
    let cpu0 = cpu_ns(pid)?;
    tokio::time::sleep_until(to.into()).await;
    let cpu1 = cpu_ns(pid)?;
    let c1 = counters().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    shared.hangup.store(true, Ordering::Relaxed);
    let counted = c0
        .zip(c1)
        .map(|((d0, s0), (d1, s1))| (d1.saturating_sub(d0), s1.saturating_sub(s0)));
    Ok((cpu1.saturating_sub(cpu0) as f64 / 1e9, counted))
}

impl Report {
    /// The figures from what each end counted.
    fn finish(
        &mut self,
        opts: &Options,
        cpu_s: f64,
        (to_agents, mut lat_agents): (Tally, Vec<u32>),
        (to_trunk, mut lat_trunk): (Tally, Vec<u32>),
    ) {
        self.calls = opts.calls;
        self.seconds = opts.seconds;
        self.relayed = to_agents.received + to_trunk.received;
        self.packets_per_s = self.relayed as f64 / opts.seconds;
        self.gateway_cpu_s = cpu_s;
        if self.relayed > 0 {
            self.gateway_cpu_us_per_packet = cpu_s * 1e6 / self.relayed as f64;
        }
        self.to_agents = Direction::of(to_agents, &mut lat_agents);
        self.to_trunk = Direction::of(to_trunk, &mut lat_trunk);
    }
}

/// The reference run against a running rtpengine.
pub fn run_rtpengine(
    opts: &Options,
    ng: SocketAddr,
    pid: u32,
    mut progress: impl FnMut(&str),
) -> Result<Report, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let shared = Arc::new(Shared::new());
        let relay = tokio::spawn(rtpengine::run(ng, opts.calls, shared.clone()));
        let none = || async { None };
        let (cpu_s, _) = measure(
            opts,
            &shared,
            pid,
            || relay.is_finished(),
            &mut progress,
            none,
        )
        .await?;
        let r = relay.await.map_err(|e| e.to_string())??;
        let mut report = Report {
            answered: r.answered,
            failed: opts.calls - r.answered,
            stray: r.stray,
            send_errors: r.send_errors,
            undecodable: r.undecodable,
            ..Default::default()
        };
        report.finish(
            opts,
            cpu_s,
            (r.to_agents, r.latency_to_agents),
            (r.to_trunk, r.latency_to_trunk),
        );
        Ok(report)
    })
}
