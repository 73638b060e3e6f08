//! SIGHUP reloads the configuration of a running gateway (what
//! `systemctl reload tollgate` sends):
//!
//! - a trunk added to the file takes calls from its peers at once (they
//!   were unknown peers before), a new route answers, and a removed
//!   trunk's series leave `/metrics`;
//! - a call in progress goes on across the reload;
//! - a changed listener is named as waiting for a restart (the log,
//!   `tollgate_config_restart_pending`) and the old one keeps serving;
//! - a file with an error is refused whole: the running configuration
//!   stays, `tollgate_config_last_reload_successful` drops to 0 and the
//!   audit trail records the refusal; the next good reload restores it;
//! - a source banned while its trunk was untrusted is unbanned when a
//!   reload marks the trunk trusted (a carrier is never banned).
//!
//! The kernel's trunk set refilled on reload is checked in
//! tests/it/guard_netns.rs (root, in namespaces).

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::gateway::{sipp_counts, Gateway};
use crate::common::uac::transact;

const SIP: u16 = 18000;
const ADMIN: u16 = 18001;

fn toml(sip_port: u16, trunks: &str) -> String {
    format!(
        r#"
[sip]
udp = ["127.0.0.1:{sip_port}"]
tcp = []
[media]
rtp_ports = "41500-41999"
[admin]
listen = "127.0.0.1:{ADMIN}"
[agents]
listen = "127.0.0.1:18002"
[firewall]
nftables = "off"

[[trunk]]
name = "first"
peers = ["127.0.0.1/32"]
codecs = ["PCMU", "PCMA"]
srtp = "off"

{trunks}

[[route]]
number = "echo"
target = "echo"
"#
    )
}

const LEAVING: &str = r#"
[[trunk]]
name = "leaving"
peers = ["127.0.5.0/24"]
address = "127.0.5.1:5999"
keepalive_s = 30
"#;

const SECOND: &str = r#"
[[trunk]]
name = "second"
peers = ["127.0.3.0/24"]
codecs = ["PCMU"]
srtp = "off"

[[route]]
number = "tone"
target = "tone"
"#;

fn options(s: &UdpSocket, gw: SocketAddr, n: u32) -> Vec<u8> {
    options_from(s, gw, n, "probe/1.0")
}

fn options_from(s: &UdpSocket, gw: SocketAddr, n: u32, ua: &str) -> Vec<u8> {
    let me = s.local_addr().expect("addr");
    format!(
        "OPTIONS sip:probe@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKreload{n}\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@{me}>;tag=r{n}\r\nTo: <sip:probe@{gw}>\r\n\
Call-ID: reload-{n}-{me}\r\nCSeq: 1 OPTIONS\r\nUser-Agent: {ua}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn hup(gw: &Gateway) {
    let ok = Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

/// A sipp carrier at `ip` calling `service`, holding the call `hold_ms`.
fn call(gw: &Gateway, ip: &str, port: u16, service: &str, hold_ms: u32) -> std::process::Child {
    Command::new("sipp")
        .arg(gw.sip.to_string())
        .args([
            "-sn",
            "uac",
            "-s",
            service,
            "-i",
            ip,
            "-p",
            &port.to_string(),
        ])
        .args(["-mp", &(port + 2).to_string()])
        .args(["-m", "1", "-d", &hold_ms.to_string(), "-nostdin"])
        .args(["-timeout", "30s", "-timeout_error"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir(std::env::temp_dir())
        .spawn()
        .expect("sipp runs (scripts/deps installs sip-tester)")
}

fn finished(c: std::process::Child) -> (u64, u64) {
    let out = c.wait_with_output().expect("sipp");
    sipp_counts(&String::from_utf8_lossy(&out.stdout))
}

const APPLIED: &str = r#"tollgate_config_reloads_total{outcome="applied"}"#;
const REFUSED: &str = r#"tollgate_config_reloads_total{outcome="refused"}"#;
const SUCCESSFUL: &str = "tollgate_config_last_reload_successful";
const PENDING: &str = "tollgate_config_restart_pending";

#[test]
fn sighup_applies_trunks_and_routes_live_and_refuses_a_broken_file_whole() {
    let gw = Gateway::start_toml("config-reload", SIP, ADMIN, &toml(SIP, LEAVING));
    let file = Gateway::dir_for("config-reload").join("tollgate.toml");
    assert_eq!(gw.metric(SUCCESSFUL), 1.0);
    assert!(gw
        .metrics()
        .contains(r#"tollgate_trunk_up{trunk="leaving"}"#));

    // 127.0.3.9 is no trunk's peer yet: its OPTIONS is dropped, counted.
    let newcomer = UdpSocket::bind("127.0.3.9:0").expect("bind a loopback address");
    newcomer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    newcomer
        .send_to(&options(&newcomer, gw.sip, 1), gw.sip)
        .expect("send");
    gw.expect_metric("tollgate_sip_unknown_peer_total", 5, 1.0);

    // A call in progress across the reload.
    let long = call(&gw, "127.0.0.1", 18010, "echo", 3000);
    gw.expect_metric("tollgate_calls_active", 10, 1.0);

    // The new file: trunk "second" and the route "tone" added, "leaving"
    // removed, and the SIP listener moved (that one waits for a restart).
    std::fs::write(&file, toml(SIP + 20, SECOND)).expect("write config");
    hup(&gw);
    gw.expect_metric(APPLIED, 10, 1.0);
    assert_eq!(gw.metric(PENDING), 1.0, "sip.udp waits for a restart");
    let log = gw.log();
    assert!(
        log.contains(r#"trunks: added \"second\"; removed \"leaving\""#)
            || log.contains(r#"trunks: added "second"; removed "leaving""#),
        "{log}"
    );
    assert!(log.contains("sip.udp"), "{log}");
    let metrics = gw.metrics();
    assert!(
        !metrics.contains(r#"trunk="leaving""#),
        "a removed trunk's series are gone"
    );
    assert!(metrics.contains(r#"tollgate_trunk_up{trunk="second"} 1"#));

    // The newcomer is a carrier now, on the listener that still runs.
    let reply = transact(&newcomer, gw.sip, &options(&newcomer, gw.sip, 2));
    assert!(
        reply.starts_with(b"SIP/2.0 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(finished(call(&gw, "127.0.3.9", 18012, "tone", 200)), (1, 0));
    assert_eq!(finished(long), (1, 0), "the call across the reload");

    // A broken file is refused whole: the running configuration stays.
    std::fs::write(
        &file,
        toml(SIP, SECOND).replace("127.0.3.0/24", "127.0.3.0/99"),
    )
    .expect("write config");
    hup(&gw);
    gw.expect_metric(REFUSED, 10, 1.0);
    assert_eq!(gw.metric(SUCCESSFUL), 0.0);
    assert!(gw.log().contains("configuration NOT reloaded"));
    let reply = transact(&newcomer, gw.sip, &options(&newcomer, gw.sip, 3));
    assert!(reply.starts_with(b"SIP/2.0 200"), "the running trunks stay");

    // Mended: the reload goes through, and nothing waits for a restart.
    std::fs::write(&file, toml(SIP, SECOND)).expect("write config");
    hup(&gw);
    gw.expect_metric(APPLIED, 10, 2.0);
    assert_eq!(gw.metric(SUCCESSFUL), 1.0);
    assert_eq!(gw.metric(PENDING), 0.0);

    // Untrusted, the newcomer's network is banned for a scanner's
    // User-Agent; marked trusted by a reload, it is a carrier again.
    let untrusted = SECOND.replace("srtp = \"off\"", "srtp = \"off\"\ntrusted = false");
    std::fs::write(&file, toml(SIP, &untrusted)).expect("write config");
    hup(&gw);
    gw.expect_metric(APPLIED, 10, 3.0);
    newcomer
        .send_to(
            &options_from(&newcomer, gw.sip, 4, "friendly-scanner"),
            gw.sip,
        )
        .expect("send");
    gw.expect_metric(
        r#"tollgate_ids_verdicts_total{reason="scanner",verdict="ban"}"#,
        5,
        1.0,
    );
    assert_eq!(gw.metric("tollgate_ids_bans_active"), 1.0);
    std::fs::write(&file, toml(SIP, SECOND)).expect("write config");
    hup(&gw);
    gw.expect_metric(APPLIED, 10, 4.0);
    assert_eq!(gw.metric("tollgate_ids_bans_active"), 0.0);
    assert!(gw.log().contains("now a trusted carrier"), "{}", gw.log());
    let reply = transact(&newcomer, gw.sip, &options(&newcomer, gw.sip, 5));
    assert!(reply.starts_with(b"SIP/2.0 200"), "the carrier is served");

    // The audit trail has every reload, outcomes included, and the unban.
    let (ok, out, err) =
        common::gateway::operator_cli(&gw.dir.join("data"), "audit", &["list", "--json"]);
    assert!(ok, "{err}");
    let reloads: Vec<&str> = out.lines().filter(|l| l.contains("\"reload\"")).collect();
    assert_eq!(reloads.len(), 5, "{out}");
    assert!(reloads[0].contains("\"applied\"") && reloads[0].contains("second"));
    assert!(reloads[1].contains("\"refused\"") && reloads[1].contains("peers"));
    assert!(reloads[2].contains("\"applied\""));
    assert!(out.contains("trusted carrier (reload)"), "{out}");
}

/// `/metrics` answers only the admin networks, in the process too (not
/// only in nftables), and a reload moves them.
#[test]
fn metrics_answer_only_admin_networks_and_a_reload_moves_them() {
    let (sip, admin) = (18400u16, 18401u16);
    let file = |nets: &str| {
        format!(
            r#"
[sip]
udp = ["127.0.0.1:{sip}"]
tcp = []
[media]
rtp_ports = "34000-34999"
[admin]
listen = "127.0.0.1:{admin}"
[agents]
listen = "127.0.0.1:{agents}"
[firewall]
nftables = "off"
admin_networks = [{nets}]
"#,
            agents = sip + 2
        )
    };
    let gw = Gateway::start_toml("admin-nets", sip, admin, &file("\"10.0.0.0/8\""));
    // Loopback is not an admin network here: refused, health still open.
    let r = gw.get("/metrics").expect("an answer");
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(!r.contains("tollgate_calls_active"), "{r}");
    assert!(gw
        .get("/healthz")
        .expect("health")
        .starts_with("HTTP/1.1 200"));
    std::fs::write(
        gw.dir.join("tollgate.toml"),
        file("\"10.0.0.0/8\", \"127.0.0.0/8\""),
    )
    .expect("config");
    hup(&gw);
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = gw.get("/metrics").unwrap_or_default();
        if r.starts_with("HTTP/1.1 200") || std::time::Instant::now() > until {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(r.starts_with("HTTP/1.1 200"), "{r}\n{}", gw.log());
    // The refusals were counted (the first, and any while the reload ran).
    assert!(gw.metric("tollgate_admin_http_refused_total") >= 1.0);
}
