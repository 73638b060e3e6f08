//! The guard end to end with real nftables: three network namespaces the
//! test creates (a carrier host, an attacker host, the gateway host),
//! joined by veth pairs, the gateway loading its table in its own
//! namespace (`nftables = "required"`). Needs root (CI is root); skipped
//! otherwise. Every namespace is deleted when the test ends.
//!
//! - The attacker floods INVITEs with sipp (400 a second, bounded in count
//!   and time) while the carrier places calls to `echo` at 150 a second,
//!   above every threshold an untrusted source has: at least 99% of the
//!   carrier's calls complete, the attacker is in the kernel's banned set
//!   within a second of the IDS deciding, the kernel's drop counter (and
//!   its metric) shows its packets dropped, and the carrier is never
//!   banned.
//! - The ban expires on its timeout, in the kernel and in the gateway.
//! - One message with a scanner's User-Agent bans its source again
//!   (longer: a repeat); `tollgate firewall unban` lifts it at once.
//! - A reload (SIGHUP) with a trunk replaced refills the kernel's trunk
//!   set in place.

use crate::common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::common::gateway::{sipp_counts, Gateway};
use crate::common::netns::Netns;
use crate::common::pcap::is_root;

const GW_CARRIER: &str = "10.77.1.1";
const CARRIER: &str = "10.77.1.2";
const GW_OPEN: &str = "10.77.2.1";
const ATTACKER: &str = "10.77.2.2";
/// The test's first ban, and the factor for a repeat.
const FIRST_BAN_S: u64 = 5;

fn config(dir: &std::path::Path) -> String {
    let rules = dir.join("ids.toml");
    std::fs::write(
        &rules,
        tollgate::config::rules::DEFAULT_IDS_TOML
            .replace("first_s = 300", &format!("first_s = {FIRST_BAN_S}"))
            .replace("repeat_factor = 4", "repeat_factor = 3"),
    )
    .expect("rules");
    format!(
        r#"
[sip]
udp = ["0.0.0.0:5060"]
tcp = []
public_address = "{GW_CARRIER}"
[media]
rtp_ports = "20000-21999"
[admin]
listen = "127.0.0.1:9100"
[agents]
listen = "127.0.0.1:4433"
[[trunk]]
name = "carrier"
peers = ["{CARRIER}/32"]
codecs = ["PCMU", "PCMA"]
srtp = "off"
keepalive_s = 0
[[trunk]]
name = "open"
peers = ["10.77.2.0/24"]
codecs = ["PCMU", "PCMA"]
srtp = "off"
keepalive_s = 0
trusted = false
[[route]]
number = "echo"
target = "echo"
test_peers = ["{CARRIER}/32", "10.77.2.0/24"]
[firewall]
nftables = "required"
ids_rules = "{}"
"#,
        rules.display()
    )
}

/// The gateway running inside its namespace; stopped when dropped.
struct NsGateway {
    child: Child,
    dir: std::path::PathBuf,
}

impl NsGateway {
    fn start(ns: &Netns, dir: &std::path::Path) -> Self {
        let cfg = dir.join("tollgate.toml");
        std::fs::write(&cfg, config(dir)).expect("config");
        let log = std::fs::File::create(dir.join("gateway.log")).expect("log");
        let child = ns
            .command(env!("CARGO_BIN_EXE_tollgate"))
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
            dir: dir.to_path_buf(),
        };
        // Ready when its control socket answers (bounded: 20 s).
        let until = Instant::now() + Duration::from_secs(20);
        while !gw.firewall(&["bans"]).0 {
            assert!(Instant::now() < until, "gateway not ready: {}", gw.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        gw
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
    }

    fn firewall(&self, args: &[&str]) -> (bool, String, String) {
        common::gateway::operator_cli(&self.dir.join("data"), "firewall", args)
    }

    /// The gateway's bans: (source, reason, until in Unix ms).
    fn bans(&self) -> Vec<(String, String, u64)> {
        let (ok, out, err) = self.firewall(&["bans", "--json"]);
        assert!(ok, "{err}");
        out.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                (
                    v["source"].as_str().unwrap_or_default().to_string(),
                    v["reason"].as_str().unwrap_or_default().to_string(),
                    v["until_unix_ms"].as_u64().unwrap_or_default(),
                )
            })
            .collect()
    }

    fn stop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NsGateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the kernel's banned set holds `ip`.
fn in_kernel_set(gw: &Netns, ip: &str) -> bool {
    let (ok, out) = gw.nft(&["list", "set", "inet", "tollgate", "banned_v4"]);
    ok && out.contains(ip)
}

/// Polls `cond` every 20 ms for at most `secs`; the time it first held.
fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> Option<SystemTime> {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if cond() {
            return Some(SystemTime::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The gateway's /metrics, fetched inside its namespace.
fn metric(gw: &Netns, series: &str) -> f64 {
    let out = gw
        .command("bash")
        .args([
            "-c",
            "exec 3<>/dev/tcp/127.0.0.1/9100; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3",
        ])
        .output()
        .expect("bash");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

fn sipp(ns: &Netns, gw_ip: &str, me: &str, args: &[&str]) -> Child {
    ns.command("sipp")
        .arg(format!("{gw_ip}:5060"))
        .args([
            "-sn", "uac", "-s", "echo", "-i", me, "-p", "5070", "-nostdin",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir(std::env::temp_dir())
        .spawn()
        .expect("sipp runs (Debian package sip-tester; scripts/deps installs it)")
}

#[test]
fn floods_and_scanners_are_banned_in_the_kernel_and_carriers_never_are() {
    if !is_root() {
        eprintln!("skipped: network namespaces and nftables need root (CI runs as root)");
        return;
    }
    let gw_ns = Netns::new("gw");
    let carrier = Netns::new("car");
    let attacker = Netns::new("att");
    let tag = format!("tg{}", std::process::id() % 100_000);
    gw_ns.link(
        &format!("{GW_CARRIER}/24"),
        &carrier,
        &format!("{CARRIER}/24"),
        &format!("{tag}c"),
    );
    gw_ns.link(
        &format!("{GW_OPEN}/24"),
        &attacker,
        &format!("{ATTACKER}/24"),
        &format!("{tag}a"),
    );
    let dir = Gateway::dir_for("guard-netns");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut gw = NsGateway::start(&gw_ns, &dir);
    let (_, table) = gw_ns.nft(&["list", "set", "inet", "tollgate", "trunk_v4"]);
    assert!(
        table.contains("10.77.1.2") && table.contains("10.77.2.0/24"),
        "{table}"
    );

    // The carrier's calls and the attacker's flood, together.
    let calls = 450u64;
    let carrier_run = sipp(
        &carrier,
        GW_CARRIER,
        CARRIER,
        &[
            "-r",
            "150",
            "-m",
            "450",
            "-l",
            "300",
            "-d",
            "200",
            "-timeout",
            "40s",
            "-timeout_error",
        ],
    );
    let mut flood = sipp(
        &attacker,
        GW_OPEN,
        ATTACKER,
        &[
            "-r", "400", "-m", "1200", "-l", "1200", "-d", "100", "-timeout", "15s",
        ],
    );

    // In the kernel's set within a second of the IDS's decision.
    let seen = wait_for(10, || in_kernel_set(&gw_ns, ATTACKER))
        .unwrap_or_else(|| panic!("the attacker was never banned: {}", gw.log()));
    let bans = gw.bans();
    let ban = bans
        .iter()
        .find(|b| b.0 == ATTACKER)
        .unwrap_or_else(|| panic!("{bans:?}"));
    assert!(ban.1 == "flood" || ban.1 == "rate", "{ban:?}");
    let decided = ban.2 - FIRST_BAN_S * 1000;
    let lag = unix_ms(seen).saturating_sub(decided);
    assert!(
        lag <= 1000,
        "the kernel had the ban {lag} ms after the IDS decided"
    );

    // The kernel drops its packets from then on (counter, and metric).
    let dropped = || {
        let (_, json) = gw_ns.nft(&["-j", "list", "table", "inet", "tollgate"]);
        tollgate::guard::nft::drop_counters(&json)
            .get("banned")
            .copied()
            .unwrap_or(0)
    };
    assert!(
        wait_for(5, || dropped() > 0).is_some(),
        "no packet dropped by the banned rule"
    );
    let series = r#"tollgate_firewall_dropped_packets_total{rule="banned"}"#;
    assert!(
        wait_for(6, || metric(&gw_ns, series) > 0.0).is_some(),
        "the drop metric stayed 0"
    );
    assert_eq!(metric(&gw_ns, "tollgate_firewall_active"), 1.0);
    let _ = flood.kill();
    let _ = flood.wait();

    let out = carrier_run.wait_with_output().expect("carrier sipp");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let (ok, failed) = sipp_counts(&text);
    assert!(
        ok * 100 >= calls * 99,
        "{ok} of {calls} carrier calls completed ({failed} failed) during the flood:\n{text}"
    );
    eprintln!(
        "the kernel had the ban {lag} ms after the IDS decided; {ok} of {calls} carrier calls completed"
    );
    assert!(!in_kernel_set(&gw_ns, CARRIER));
    assert!(gw.bans().iter().all(|b| b.0 != CARRIER));

    // The ban expires on its own, in the kernel and in the gateway.
    let gone = wait_for(FIRST_BAN_S + 5, || {
        !in_kernel_set(&gw_ns, ATTACKER) && gw.bans().iter().all(|b| b.0 != ATTACKER)
    })
    .expect("the ban never expired");
    let lasted = unix_ms(gone).saturating_sub(decided);
    assert!(
        lasted >= FIRST_BAN_S * 1000 - 200,
        "the ban ended after {lasted} ms of {FIRST_BAN_S} s"
    );

    // One scanner message bans again, three times longer (a repeat).
    let probe = attacker
        .command("sipp")
        .arg(format!("{GW_OPEN}:5060"))
        .args([
            "-sf",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/uac_scanner.xml"),
        ])
        .args([
            "-i", ATTACKER, "-p", "5071", "-m", "1", "-nostdin", "-timeout", "10s",
        ])
        .stdin(Stdio::null())
        .current_dir(std::env::temp_dir())
        .output()
        .expect("sipp");
    let sent = probe.status;
    assert!(sent.success());
    assert!(
        wait_for(2, || in_kernel_set(&gw_ns, ATTACKER)).is_some(),
        "one scanner message did not ban: {}",
        gw.log()
    );
    let bans = gw.bans();
    let ban = bans
        .iter()
        .find(|b| b.0 == ATTACKER)
        .unwrap_or_else(|| panic!("{bans:?}"));
    assert_eq!(ban.1, "scanner");
    let left = ban.2.saturating_sub(unix_ms(SystemTime::now()));
    assert!(
        (FIRST_BAN_S * 3 * 1000 - 2000..=FIRST_BAN_S * 3 * 1000).contains(&left),
        "a repeat ban has {left} ms left"
    );

    // Unban lifts it at once, in the kernel too.
    let (ok, out, err) = gw.firewall(&["unban", ATTACKER]);
    assert!(ok, "{out}{err}");
    assert!(
        wait_for(1, || !in_kernel_set(&gw_ns, ATTACKER)).is_some(),
        "unban left the kernel's element"
    );
    assert!(gw.bans().is_empty());

    // A reload (SIGHUP) refills the kernel's trunk set in place: a carrier
    // network added, the open trunk's removed, the table kept.
    let cfg = dir.join("tollgate.toml");
    let text = std::fs::read_to_string(&cfg).expect("config");
    let open = "name = \"open\"\npeers = [\"10.77.2.0/24\"]";
    assert!(text.contains(open));
    std::fs::write(
        &cfg,
        text.replace(open, "name = \"added\"\npeers = [\"198.51.100.0/24\"]"),
    )
    .expect("config");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &gw.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    let trunk_set = || {
        gw_ns
            .nft(&["list", "set", "inet", "tollgate", "trunk_v4"])
            .1
    };
    assert!(
        wait_for(10, || {
            let set = trunk_set();
            set.contains("198.51.100.0/24") && !set.contains("10.77.2.0/24")
        })
        .is_some(),
        "the trunk set after the reload: {}\n{}",
        trunk_set(),
        gw.log()
    );
    assert!(trunk_set().contains(CARRIER), "the carrier stays");
    assert_eq!(
        metric(
            &gw_ns,
            r#"tollgate_config_reloads_total{outcome="applied"}"#
        ),
        1.0
    );

    // Stopping removes the table, and only it.
    gw.stop();
    let (_, tables) = gw_ns.nft(&["list", "tables"]);
    assert!(!tables.contains("tollgate"), "{tables}");
    let _ = std::fs::remove_dir_all(&dir);
}
