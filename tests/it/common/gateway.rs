//! A real `tollgate run` process for integration tests: its own config on
//! its own loopback ports, started, waited for (its /healthz), and stopped
//! when dropped.
//!
//! Fixed loopback ports, one plan for the whole `it` binary (its modules
//! run side by side). A gateway at `base` holds `base..base + 3`; a sipp at
//! `p` holds `p..p + 6` (SIP, then media at `p + 2`). New tests take a
//! free block here, and this list says whose each block is:
//!
//! | ports        | module |
//! |--------------|--------|
//! | 14100-14450  | trunk_calls (session, Kamailio, crossed CANCEL) |
//! | 14200-14260  | agent_calls (far end's session) |
//! | 15060-15190  | sipp_calls |
//! | 15200-15230  | sip_torture_live |
//! | 15240-15259  | trunk_keepalive |
//! | 15300-15799  | trunk_calls (15600-15612: sip_tls; 15700-15739: trunk_register) |
//! | 15800-15839  | trunk_register |
//! | 15900-15902  | sip_limits |
//! | 16000-16002  | sdes_srtp_call |
//! | 16100-16131  | trunk_tls |
//! | 16200-16202  | media_path |
//! | 16300-16399  | agent_auth |
//! | 16400-16999  | agent_calls |
//! | 17000-17029  | sipp_calls (timer) |
//! | 17100-17299  | agent_calls |
//! | 17300-17329  | guard_ids |
//! | 17400-17439  | cdr_records |
//! | 17500-17579  | operators |
//! | 17600-17619  | cdr_crash |
//! | 17700-17729  | keys_rotate |
//! | 17800-17809  | systemd_notify |
//! | 17900-17909  | prometheus_rules |
//! | 18000-18019  | config_reload |
//! | 18100-18199  | agent_calls (dial restrictions) |
//! | 18200-18399  | media_path |
//! | 18400-18409  | config_reload (admin networks) |
//! | 18500-18609  | sip_tls |
//! | 18700-18709  | sdes_srtp_call |
//! | 18800-18849  | cdr_records |
//! | 18900-19109  | media_path |
//! | 19200-19319  | caller_privacy |
//! | 19400-19439  | incident |
//! | 19500-19539  | compliance |
//!
//! RTP ranges (20000 and up) may overlap between gateways: the port pool
//! skips ports in use. Sockets a test binds itself at fixed ports stay
//! below 20000.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running gateway.
pub struct Gateway {
    child: Child,
    pub sip: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    /// Leave the directory when dropped (a later gateway reuses it).
    pub keep_dir: bool,
}

/// Ports for one test's gateway: SIP on `base`, admin on `base + 1`,
/// agents' QUIC on `base + 2`, RTP in `rtp..rtp + 999`.
pub fn config(base: u16, rtp: u16, t1_ms: u64, extra: &str) -> String {
    format!(
        r#"
[sip]
udp = ["127.0.0.1:{base}"]
tcp = ["127.0.0.1:{base}"]
partial_message_timeout_ms = 1000
t1_ms = {t1_ms}

[media]
rtp_ports = "{rtp}-{rtp_end}"

[admin]
listen = "127.0.0.1:{admin}"

[agents]
listen = "127.0.0.1:{agents}"

[[trunk]]
name = "loopback"
peers = ["127.0.0.0/8"]
address = "127.0.0.1:5080"
codecs = ["PCMA", "PCMU", "G722"]
srtp = "off"
country_code = "44"

[[route]]
number = "echo"
target = "echo"

[[route]]
number = "tone"
target = "tone"

[[route]]
number = "ringing"
target = "echo"
ring_ms = 5000

[[route]]
number = "short"
target = "tone"
hangup_ms = 700

{extra}
"#,
        admin = base + 1,
        agents = base + 2,
        rtp_end = rtp + 999,
    )
}

impl Gateway {
    /// Starts a gateway for the test called `name` with SIP on `base`.
    pub fn start(name: &str, base: u16, rtp: u16) -> Self {
        Self::start_with(name, base, rtp, 500, "")
    }

    /// As [`Gateway::start`], with timer T1 and extra TOML (trunks, routes).
    pub fn start_with(name: &str, base: u16, rtp: u16, t1_ms: u64, extra: &str) -> Self {
        Self::start_toml(name, base, base + 1, &config(base, rtp, t1_ms, extra))
    }

    /// The temporary directory a test called `name` uses.
    pub fn dir_for(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tollgate-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    /// Starts a gateway with a whole TOML configuration of the caller's.
    pub fn start_toml(name: &str, sip: u16, admin: u16, toml: &str) -> Self {
        Self::start_toml_env(name, sip, admin, toml, &[])
    }

    /// As [`Gateway::start_toml`], with environment variables (RUST_LOG).
    pub fn start_toml_env(
        name: &str,
        sip: u16,
        admin: u16,
        toml: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_wrapped(name, sip, admin, toml, env, &[])
    }

    /// As [`Gateway::start_toml_env`], run through `wrapper` (a command
    /// that execs the rest, such as `nsenter -t PID -m --`), so the
    /// process id is still the gateway's.
    pub fn start_wrapped(
        name: &str,
        sip: u16,
        admin: u16,
        toml: &str,
        env: &[(&str, &str)],
        wrapper: &[String],
    ) -> Self {
        let dir = Self::dir_for(name);
        let cfg = dir.join("tollgate.toml");
        // Tests run as root in CI: a gateway in the host's namespace must
        // not load its nftables table there (the netns tests load it in
        // namespaces of their own).
        let toml = if toml.contains("[firewall]") {
            toml.to_string()
        } else {
            format!("{toml}\n[firewall]\nnftables = \"off\"\n")
        };
        std::fs::write(&cfg, toml).expect("write config");
        let log = std::fs::File::create(dir.join("gateway.log")).expect("log file");
        let bin = env!("CARGO_BIN_EXE_tollgate").to_string();
        let (program, before) = match wrapper.split_first() {
            Some((w, rest)) => (w.clone(), [rest, &[bin]].concat()),
            None => (bin, Vec::new()),
        };
        let child = Command::new(program)
            .args(before)
            .envs(env.iter().copied())
            .arg("run")
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("gateway starts");
        let gw = Self {
            child,
            sip: SocketAddr::from(([127, 0, 0, 1], sip)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            dir,
            keep_dir: false,
        };
        // Wait for /healthz (bounded: 20 s).
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if gw
                .get("/healthz")
                .is_some_and(|b| b.starts_with("HTTP/1.1 200") || b.starts_with("HTTP/1.0 200"))
            {
                break;
            }
            assert!(
                Instant::now() < until,
                "gateway did not become healthy: {}",
                gw.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        gw
    }

    /// A GET on the admin listener: the whole HTTP response.
    pub fn get(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.admin, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    /// The /metrics body.
    pub fn metrics(&self) -> String {
        let r = self.get("/metrics").expect("metrics answer");
        r.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }

    /// One sample's value from /metrics (0 when absent).
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// Polls `series` until `want(value)` holds, for at most `secs` seconds.
    /// Waits (bounded) for `series` to equal `want`, and fails the test
    /// if it does not.
    pub fn expect_metric(&self, series: &str, secs: u64, want: f64) {
        let got = self.wait_metric(series, secs, |v| v == want);
        assert_eq!(got, want, "{series} after {secs} s");
    }

    pub fn wait_metric(&self, series: &str, secs: u64, want: impl Fn(f64) -> bool) -> f64 {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.metric(series);
            if want(v) || Instant::now() >= until {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the gateway (SIGTERM, bounded wait), keeping its directory.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The gateway's process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `tollgate firewall ARGS --data-dir <this gateway's>`:
    /// (success, stdout, stderr).
    pub fn firewall(&self, args: &[&str]) -> (bool, String, String) {
        operator_cli(&self.dir.join("data"), "firewall", args)
    }

    /// This gateway's admin socket.
    pub fn admin_socket(&self) -> PathBuf {
        self.dir.join("data").join("admin.sock")
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `tollgate run` on a stopped test gateway's directory `dir` with
/// the master key in `key`, for starts expected to be refused.
pub fn run_with_key(dir: &std::path::Path, key: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("run")
        .arg("--config")
        .arg(dir.join("tollgate.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--master-key-file")
        .arg(key)
        .stdin(Stdio::null())
        .output()
        .expect("tollgate run")
}

/// Runs `tollgate COMMAND ARGS` against the gateway whose data directory
/// is `data` (its admin socket there): (success, stdout, stderr).
pub fn operator_cli(
    data: &std::path::Path,
    command: &str,
    args: &[&str],
) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg(command)
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("TOLLGATE_ADMIN_SOCKET", data.join("admin.sock"))
        .output()
        .expect("tollgate runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The result of a sipp run.
pub struct SippRun {
    pub successful: u64,
    pub failed: u64,
    pub status: i32,
    pub output: String,
}

/// One call of `uac_caller_id.xml` from +447700900123 with nothing
/// withheld: sipp's arguments after the scenario's service.
pub const ONE_PLAIN_CALL: [&str; 11] = [
    "-key",
    "from",
    "<sip:+447700900123@carrier.example>",
    "-key",
    "privacy",
    "X-A: a",
    "-key",
    "identity",
    "X-B: b",
    "-m",
    "1",
];

/// The sipp command for a carrier calling `gw` with `scenario` from
/// tests/sipp, to be spawned or run.
pub fn sipp_command(
    gw: &Gateway,
    scenario: &str,
    service: &str,
    local_port: u16,
    extra: &[&str],
) -> Command {
    sipp_command_to(gw.sip, scenario, service, local_port, extra)
}

/// As [`sipp_command`], calling `remote` (a proxy in front of the gateway).
pub fn sipp_command_to(
    remote: SocketAddr,
    scenario: &str,
    service: &str,
    local_port: u16,
    extra: &[&str],
) -> Command {
    let path = format!("{}/tests/sipp/{scenario}", env!("CARGO_MANIFEST_DIR"));
    let mut c = Command::new("sipp");
    c.arg(remote.to_string())
        .args(["-sf", &path, "-s", service, "-i", "127.0.0.1", "-nostdin"])
        .args([
            "-p",
            &local_port.to_string(),
            "-mp",
            &(local_port + 2).to_string(),
        ])
        .args(["-timeout", "120s", "-timeout_error"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir(std::env::temp_dir());
    c
}

/// What a finished sipp printed, counted.
pub fn sipp_result(out: std::process::Output) -> SippRun {
    let output =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let (successful, failed) = sipp_counts(&output);
    SippRun {
        successful,
        failed,
        status: out.status.code().unwrap_or(-1),
        output,
    }
}

/// Runs sipp (the carrier) against `gw` with `scenario` from tests/sipp.
pub fn sipp(
    gw: &Gateway,
    scenario: &str,
    service: &str,
    local_port: u16,
    extra: &[&str],
) -> SippRun {
    sipp_result(
        sipp_command(gw, scenario, service, local_port, extra)
            .output()
            .expect("sipp runs (Debian package sip-tester; scripts/deps installs it)"),
    )
}

/// (successful, failed) calls from sipp's final statistics screen.
pub fn sipp_counts(output: &str) -> (u64, u64) {
    let count = |label: &str| {
        output
            .lines()
            .filter(|l| l.trim_start().starts_with(label))
            .filter_map(|l| l.split('|').nth(2).and_then(|v| v.trim().parse().ok()))
            .next_back()
            .unwrap_or(0)
    };
    (count("Successful call"), count("Failed call"))
}

/// sipp's G.711 A-law audio file (Debian's sip-tester).
pub const PCAP: &str = "/usr/share/sip-tester/g711a.pcap";

/// sipp as a carrier's far end (UAS) on `port` with `scenario`, tracing
/// the messages it sees to `messages`; playing [`PCAP`] where the scenario
/// plays audio.
pub fn far_end_with(
    scenario: &str,
    port: u16,
    messages: &std::path::Path,
    extra: &[&str],
) -> Child {
    Command::new("sipp")
        .arg("-trace_msg")
        .arg("-message_file")
        .arg(messages)
        .args([
            "-sf",
            &format!("{}/tests/sipp/{scenario}", env!("CARGO_MANIFEST_DIR")),
        ])
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-mp",
            &(port + 2).to_string(),
        ])
        .args(["-key", "pcap", PCAP, "-nostdin", "-timeout", "60s"])
        .args(extra)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp runs")
}

/// A small tmpfs mounted on `at` in a mount namespace of its own, held by
/// a `sleep` process: only processes entered into it (see
/// [`TmpfsNamespace::enter`]) see it. Dropping it ends the holder, and
/// with the last process the namespace and the tmpfs go.
pub struct TmpfsNamespace {
    holder: Child,
    at: PathBuf,
}

impl TmpfsNamespace {
    /// Mounts a tmpfs of `size` (such as `24m`) on `at`. Needs root.
    pub fn new(at: &std::path::Path, size: &str) -> Self {
        let script = format!(
            "mkdir -p '{at}' && mount -t tmpfs -o size={size},mode=0755 tollgate-test '{at}' && echo mounted && exec sleep 600",
            at = at.display()
        );
        let mut holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux)");
        let mut line = [0u8; 8];
        let mounted = holder
            .stdout
            .take()
            .is_some_and(|mut o| o.read_exact(&mut line).is_ok() && &line == b"mounted\n");
        assert!(mounted, "the tmpfs mounts in its own namespace");
        Self {
            holder,
            at: at.to_path_buf(),
        }
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn enter(&self) -> Vec<String> {
        ["nsenter", "-t", &self.holder.id().to_string(), "-m", "--"]
            .map(str::to_string)
            .to_vec()
    }

    /// `path` under the mount point, as the test (outside) reaches it.
    pub fn inside(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.holder.id()))
            .join(self.at.strip_prefix("/").unwrap_or(&self.at))
            .join(path)
    }

    /// Fills the tmpfs up with a file `name` until the disk says no
    /// (at most `max_mib` MiB); returns the MiB written.
    pub fn fill(&self, name: &str, max_mib: usize) -> usize {
        let mut f = std::fs::File::create(self.inside(name)).expect("fill file");
        let chunk = vec![0u8; 1 << 20];
        (0..max_mib)
            .take_while(|_| f.write_all(&chunk).is_ok())
            .count()
    }
}

impl Drop for TmpfsNamespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// sipp as a far end on a dialog the gateway started, with
/// `uas_far_end_session.xml`: it answers with a two-entry Record-Route,
/// then holds (media to one port of ours), refreshes by UPDATE and resumes
/// (media to another). The ports are the test's own sockets, so what
/// reaches each is the gateway's media only.
pub struct FarEndSession {
    pub sipp: Child,
    pub messages: PathBuf,
    held: std::net::UdpSocket,
    resumed: std::net::UdpSocket,
}

impl FarEndSession {
    pub fn start(gw: &Gateway, port: u16) -> Self {
        let bind = || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.set_nonblocking(true).expect("nonblocking");
            s
        };
        let (held, resumed) = (bind(), bind());
        let port_of = |s: &std::net::UdpSocket| s.local_addr().expect("addr").port().to_string();
        let messages = gw.dir.join("far_end_session.log");
        let sipp = far_end_with(
            "uas_far_end_session.xml",
            port,
            &messages,
            &[
                "-m",
                "1",
                "-set",
                "held",
                &port_of(&held),
                "-set",
                "resumed",
                &port_of(&resumed),
            ],
        );
        Self {
            sipp,
            messages,
            held,
            resumed,
        }
    }

    /// Waits for sipp and checks what a carrier behind a record-routing
    /// proxy needs: its scenario passed (each answer checked there), the
    /// gateway's ACK and BYE carried the route set (the 2xx's
    /// Record-Route, reversed), nothing was sent to the held address and
    /// media reached the resumed one.
    pub fn check(self, gw: &Gateway) {
        let out = self.sipp.wait_with_output().expect("far end ends");
        let text = String::from_utf8_lossy(&out.stdout);
        let messages = std::fs::read_to_string(&self.messages).unwrap_or_default();
        assert!(
            out.status.success(),
            "the far end's scenario failed: {text}\n{messages}\n{}",
            gw.log()
        );
        for method in ["ACK", "BYE"] {
            // The message's head: from its request line to the blank line.
            let sent: Vec<&str> = messages
                .lines()
                .map(str::trim_end)
                .skip_while(|l| !l.starts_with(&format!("{method} sip:")))
                .take_while(|l| !l.is_empty())
                .collect();
            assert!(!sent.is_empty(), "no {method} from the gateway: {messages}");
            let routes: Vec<&str> = sent
                .iter()
                .filter_map(|l| l.strip_prefix("Route: "))
                .collect();
            assert_eq!(
                routes,
                ["<sip:core.example;lr>", "<sip:edge.example;lr>"],
                "{method}: {sent:?}"
            );
        }
        let count = |s: &std::net::UdpSocket| {
            let mut buf = [0u8; 2048];
            std::iter::from_fn(|| s.recv_from(&mut buf).ok()).count()
        };
        assert_eq!(count(&self.held), 0, "RTP went to a far end that held");
        let resumed = count(&self.resumed);
        assert!(resumed >= 10, "{resumed} packets after the resume");
    }
}

/// `tollgate ARGS` as uid `uid` with `groups`: (success, stdout, stderr).
pub fn as_user(gw: &Gateway, uid: u32, groups: &[u32], args: &[&str]) -> (bool, String, String) {
    let groups = if groups.is_empty() {
        "-".to_string()
    } else {
        groups
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let out = std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            &if groups == "-" {
                "--clear-groups".to_string()
            } else {
                format!("--groups={groups}")
            },
            "--",
            env!("CARGO_BIN_EXE_tollgate"),
        ])
        .args(args)
        .env("TOLLGATE_ADMIN_SOCKET", gw.admin_socket())
        .current_dir("/")
        .output()
        .expect("setpriv runs (util-linux; scripts/deps installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
