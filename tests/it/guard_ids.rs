//! The IDS on a running gateway, without nftables (bans enforced in the
//! process, as on a laptop): scanners, enumeration and floods from an
//! untrusted trunk's network are banned and their messages dropped, a
//! carrier's never are, `tollgate firewall bans|unban|reload` and SIGHUP
//! work. Sources are loopback addresses (127.0.1.x is the untrusted
//! trunk, 127.0.0.1 the carrier). The kernel side is tests/it/guard_netns.rs.

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::common::gateway::{config, Gateway};
use crate::common::uac::transact;

/// The common test configuration with an untrusted trunk listed before
/// the carrier's loopback one (the first trunk holding an address wins).
fn toml(base: u16, rtp: u16, extra: &str) -> String {
    config(base, rtp, 500, extra).replacen(
        "[[trunk]]\nname = \"loopback\"",
        "[[trunk]]\nname = \"open\"\npeers = [\"127.0.1.0/24\"]\ntrusted = false\n\n[[trunk]]\nname = \"loopback\"",
        1,
    )
}

fn socket(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind(format!("{ip}:0")).expect("bind a loopback address");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

fn options(s: &UdpSocket, gw: SocketAddr, ua: &str, n: u32) -> Vec<u8> {
    let me = s.local_addr().expect("addr");
    format!(
        "OPTIONS sip:probe@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKids{n}\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@{me}>;tag=f{n}\r\nTo: <sip:probe@{gw}>\r\n\
Call-ID: ids-{n}-{me}\r\nCSeq: 1 OPTIONS\r\nUser-Agent: {ua}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn invite(s: &UdpSocket, gw: SocketAddr, user: &str, n: u32) -> Vec<u8> {
    let me = s.local_addr().expect("addr");
    format!(
        "INVITE sip:{user}@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKenum{n}\r\n\
Max-Forwards: 70\r\nFrom: <sip:scan@{me}>;tag=e{n}\r\nTo: <sip:{user}@{gw}>\r\n\
Call-ID: enum-{n}-{me}\r\nCSeq: 1 INVITE\r\nContact: <sip:scan@{me}>\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn status(m: &[u8]) -> String {
    String::from_utf8_lossy(m.get(..12).unwrap_or(m)).into_owned()
}

/// Nothing waiting on `s` (after a metric showed the gateway dealt with
/// what was sent).
fn silent(s: &UdpSocket) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 2048];
    let quiet = s.recv_from(&mut buf).is_err();
    s.set_nonblocking(false).expect("blocking");
    quiet
}

const SCANNER_BANS: &str = r#"tollgate_ids_verdicts_total{reason="scanner",verdict="ban"}"#;
const BANNED_DROPS: &str = r#"tollgate_ids_verdicts_total{reason="banned",verdict="drop"}"#;

#[test]
fn a_scanner_is_banned_and_unbanned_a_carrier_never_is() {
    let mut gw = Gateway::start_toml("guard-scan", 17300, 17301, &toml(17300, 38000, ""));
    let a = socket("127.0.1.10");
    let reply = transact(&a, gw.sip, &options(&a, gw.sip, "Asterisk PBX 20", 1));
    assert!(
        status(&reply).starts_with("SIP/2.0 200"),
        "{}",
        status(&reply)
    );

    // One message with a scanner's User-Agent bans its source.
    a.send_to(&options(&a, gw.sip, "friendly-scanner", 2), gw.sip)
        .expect("send");
    gw.expect_metric(SCANNER_BANS, 5, 1.0);
    let (ok, out, err) = gw.firewall(&["bans", "--json"]);
    assert!(ok, "{err}");
    let bans: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(bans.len(), 1, "{out}");
    assert_eq!(bans[0]["source"], "127.0.1.10");
    assert_eq!(bans[0]["reason"], "scanner");
    let left = bans[0]["remaining_s"].as_u64().expect("seconds");
    assert!((290..=300).contains(&left), "{left} s left of a 300 s ban");
    let (ok, table, _) = gw.firewall(&["bans"]);
    assert!(
        ok && table.contains("127.0.1.10") && table.contains("scanner"),
        "{table}"
    );

    // Everything else from it is dropped unanswered.
    a.send_to(&options(&a, gw.sip, "Asterisk PBX 20", 3), gw.sip)
        .expect("send");
    gw.expect_metric(BANNED_DROPS, 5, 1.0);
    assert!(silent(&a), "a banned source got an answer");
    gw.expect_metric("tollgate_ids_bans_active", 5, 1.0);

    // The carrier sending the same is dropped, not banned, and keeps
    // getting answers.
    let c = socket("127.0.0.1");
    c.send_to(&options(&c, gw.sip, "friendly-scanner", 4), gw.sip)
        .expect("send");
    gw.expect_metric(
        r#"tollgate_ids_verdicts_total{reason="scanner",verdict="drop"}"#,
        5,
        1.0,
    );
    let reply = transact(&c, gw.sip, &options(&c, gw.sip, "Carrier SBC", 5));
    assert!(status(&reply).starts_with("SIP/2.0 200"));
    assert_eq!(gw.metric(SCANNER_BANS), 1.0);

    // A restart does not free it: bans in force are kept on disk.
    let kept = gw.dir.join("data").join("bans.json");
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&kept).is_ok_and(|t| t.contains("127.0.1.10"))
        && std::time::Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    gw.keep_dir = true;
    gw.stop();
    drop(gw);
    let gw = Gateway::start_toml("guard-scan", 17300, 17301, &toml(17300, 38000, ""));
    let (ok, out, err) = gw.firewall(&["bans", "--json"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("\"127.0.1.10\"") && out.contains("scanner"),
        "kept across the restart: {out}"
    );
    gw.expect_metric("tollgate_ids_bans_active", 5, 1.0);
    a.send_to(&options(&a, gw.sip, "Asterisk PBX 20", 30), gw.sip)
        .expect("send");
    assert!(silent(&a), "a banned source got an answer after a restart");

    // Unban lifts it at once.
    let (ok, out, err) = gw.firewall(&["unban", "127.0.1.10"]);
    assert!(ok, "{out}{err}");
    let reply = transact(&a, gw.sip, &options(&a, gw.sip, "Asterisk PBX 20", 6));
    assert!(status(&reply).starts_with("SIP/2.0 200"));
    let (ok, _, err) = gw.firewall(&["unban", "127.0.1.10"]);
    assert!(!ok && err.contains("was not banned"), "{err}");
    let (ok, out, _) = gw.firewall(&["bans"]);
    assert!(ok && out.trim() == "no bans", "{out}");
    gw.expect_metric("tollgate_ids_bans_active", 5, 0.0);
}

#[test]
fn enumeration_and_floods_are_banned_and_rules_reload_on_sighup() {
    let dir = Gateway::dir_for("guard-rules-file");
    std::fs::create_dir_all(&dir).expect("dir");
    let rules = dir.join("ids.toml");
    // This test is about enumeration and density: the shipped limits on
    // untrusted INVITEs and the strikes for going over a limit (tested in
    // guard::ids and below) would ban these sources first.
    let shipped = tollgate::config::rules::DEFAULT_IDS_TOML;
    assert!(shipped.contains("untrusted_invite = { rate = 2, burst = 8 }"));
    assert!(shipped.contains("over_limit = 10"));
    std::fs::write(
        &rules,
        shipped
            .replace(
                "untrusted_invite = { rate = 2, burst = 8 }",
                "untrusted_invite = { rate = 20, burst = 40 }",
            )
            .replace("over_limit = 10", "over_limit = 0"),
    )
    .expect("rules");
    let extra = format!(
        "[firewall]\nnftables = \"off\"\nids_rules = \"{}\"\n",
        rules.display()
    );
    let gw = Gateway::start_toml("guard-enum", 17310, 17311, &toml(17310, 38000, &extra));

    // Ten different unknown numbers answered 404: the tenth bans.
    let b = socket("127.0.1.20");
    for n in 0..9 {
        let r = transact(&b, gw.sip, &invite(&b, gw.sip, &format!("20{n}"), n));
        assert!(status(&r).starts_with("SIP/2.0 404"), "{}", status(&r));
    }
    b.send_to(&invite(&b, gw.sip, "209", 9), gw.sip)
        .expect("send");
    gw.expect_metric(
        r#"tollgate_ids_verdicts_total{reason="enumeration",verdict="ban"}"#,
        5,
        1.0,
    );

    // A flood: 300 OPTIONS in about 0.6 s (paced like sipp's -r, so no
    // socket buffer loses any). Rate drops start after the burst of 30;
    // more than 200 in the 2 s window bans.
    let c = socket("127.0.1.30");
    for n in 0..300 {
        c.send_to(&options(&c, gw.sip, "x", 1000 + n), gw.sip)
            .expect("send");
        std::thread::sleep(Duration::from_millis(2));
    }
    gw.expect_metric(
        r#"tollgate_ids_verdicts_total{reason="flood",verdict="ban"}"#,
        5,
        1.0,
    );
    assert!(gw.metric(r#"tollgate_ids_verdicts_total{reason="rate",verdict="drop"}"#) >= 100.0);
    let (_, out, _) = gw.firewall(&["bans", "--json"]);
    assert!(
        out.contains("\"127.0.1.20\"") && out.contains("enumeration"),
        "{out}"
    );
    assert!(
        out.contains("\"127.0.1.30\"") && out.contains("flood"),
        "{out}"
    );

    // A new scanner pattern, read on SIGHUP.
    let d = socket("127.0.1.40");
    let reply = transact(&d, gw.sip, &options(&d, gw.sip, "Evil-Dialer/2.1", 2000));
    assert!(status(&reply).starts_with("SIP/2.0 200"));
    std::fs::write(
        &rules,
        tollgate::config::rules::DEFAULT_IDS_TOML.replace(
            "user_agent = [\"friendly-scanner\"",
            "user_agent = [\"evil-dialer\", \"friendly-scanner\"",
        ),
    )
    .expect("rules");
    // A call in progress across the reload.
    let call = std::process::Command::new("sipp")
        .arg(gw.sip.to_string())
        .args(["-sn", "uac", "-s", "echo", "-i", "127.0.0.1", "-p", "17318"])
        .args([
            "-m",
            "1",
            "-d",
            "2000",
            "-nostdin",
            "-timeout",
            "30s",
            "-timeout_error",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .current_dir(std::env::temp_dir())
        .spawn()
        .expect("sipp runs (scripts/deps installs sip-tester)");
    gw.expect_metric("tollgate_calls_active", 5, 1.0);
    // The call's INVITE and answer count against the calls' byte budget.
    let held = r#"tollgate_sip_held_bytes{holder="calls"}"#;
    assert!(gw.wait_metric(held, 5, |v| v > 300.0) > 300.0);
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    gw.expect_metric(
        r#"tollgate_config_reloads_total{outcome="applied"}"#,
        5,
        1.0,
    );
    assert!(
        gw.log()
            .contains("configuration reloaded changes=IDS rules"),
        "{}",
        gw.log()
    );
    d.send_to(&options(&d, gw.sip, "Evil-Dialer/2.1", 2001), gw.sip)
        .expect("send");
    gw.expect_metric(SCANNER_BANS, 5, 1.0);
    let out = call.wait_with_output().expect("sipp");
    let (ok, failed) = common::gateway::sipp_counts(&String::from_utf8_lossy(&out.stdout));
    assert_eq!((ok, failed), (1, 0), "the call across the reload");
    gw.expect_metric(held, 5, 0.0);

    // Invalid rules are refused, naming the key; the previous ones stay.
    std::fs::write(
        &rules,
        tollgate::config::rules::DEFAULT_IDS_TOML.replace("max_requests = 200", "max_requests = 0"),
    )
    .expect("rules");
    let (ok, _, err) = gw.firewall(&["reload"]);
    assert!(!ok && err.contains("flood"), "{err}");
    let e = socket("127.0.1.50");
    e.send_to(&options(&e, gw.sip, "evil-dialer", 3000), gw.sip)
        .expect("send");
    gw.expect_metric(SCANNER_BANS, 5, 2.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_agent_logins_never_become_an_ids_ban() {
    use tollgate::agent::client::{Client, Options};
    // Hundreds of agents share an office's address: wrong codes count
    // against the agent that sent them, never against the address, and
    // never reach the IDS (whose ban nftables enforces on every port).
    let toml = toml(17320, 38000, "").replace("[agents]\n", "[agents]\nmax_failures = 20\n");
    let gw = Gateway::start_toml("guard-logins", 17320, 17321, &toml);
    let carol = common::agent::enroll(&gw, "carol", None);
    let dave = common::agent::enroll(&gw, "dave", None);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let right = tollgate::agent::totp::code_at(&carol.secret, now);
    let wrong = format!(
        "{:06}",
        (right.parse::<u32>().expect("digits") + 1) % 1_000_000
    );
    let from = || Options {
        bind: Some("127.0.1.60:0".parse().expect("addr")),
        ..Options::default()
    };
    let attempt = |bundle: &tollgate::agent::store::Bundle, code: String| {
        let bundle: tollgate::agent::store::Bundle =
            serde_json::from_str(&serde_json::to_string(bundle).expect("json")).expect("bundle");
        async move {
            tokio::time::timeout(
                Duration::from_secs(15),
                Client::connect_with(&bundle, &code, from()),
            )
            .await
            .expect("a login attempt ends within 15 s")
        }
    };
    for _ in 0..10 {
        assert!(attempt(&carol.bundle, wrong.clone()).await.is_err());
    }
    assert_eq!(
        gw.metric(r#"tollgate_agent_auth_failures_total{reason="bad_otp"}"#),
        10.0
    );
    // Another agent from the same address logs in, and so does carol.
    let dave_code = tollgate::agent::totp::code_at(&dave.secret, now);
    attempt(&dave.bundle, dave_code)
        .await
        .expect("dave logs in from the address carol failed from");
    attempt(&carol.bundle, right)
        .await
        .expect("carol's own right code still works");
    assert_eq!(
        gw.metric(r#"tollgate_ids_verdicts_total{reason="brute_force",verdict="ban"}"#),
        0.0
    );
    let (_, out, _) = gw.firewall(&["bans", "--json"]);
    assert!(!out.contains("127.0.1.60"), "{out}");
    assert_eq!(
        gw.metric(r#"tollgate_agent_auth_failures_total{reason="banned"}"#),
        0.0
    );
}
