//! Calls routed out another trunk (`trunk:NAME`): sipp as the calling
//! carrier and sipp as the far-end carrier, the gateway in the middle as a
//! B2BUA with media terminated on each leg.

use crate::common;

use std::os::unix::process::CommandExt;
use std::process::Child;

use crate::common::gateway::{far_end_with, sipp, Gateway, PCAP};

fn far_end(port: u16, messages: &std::path::Path, extra: &[&str]) -> Child {
    far_end_with("uas_answer.xml", port, messages, extra)
}

const TRUNKS: &str = r#"
[[trunk]]
name = "far"
peers = ["192.0.2.0/24"]
address = "127.0.0.1:15330"
codecs = ["PCMA", "PCMU"]
srtp = "off"
keepalive_s = 0

[[route]]
number = "+442071838750"
target = "trunk:far"
"#;

#[test]
fn calls_out_a_second_trunk_carry_audio_both_ways() {
    let gw = Gateway::start_with("trunkout", 15300, 50000, 500, TRUNKS);
    let seen = gw.dir.join("far_end_messages.log");
    let uas = far_end(15330, &seen, &["-m", "10"]);
    // The caller dials the national form; the gateway normalizes it to
    // E.164 for the route and the outbound Request-URI.
    let run = sipp(
        &gw,
        "uac_echo.xml",
        "02071838750",
        15310,
        &[
            "-key", "pcap", PCAP, "-d", "1500", "-m", "10", "-r", "10", "-l", "10",
        ],
    );
    let uas_out = uas.wait_with_output().expect("far end ends");
    let uas_text = String::from_utf8_lossy(&uas_out.stdout);
    assert_eq!(
        (run.successful, run.failed),
        (10, 0),
        "{}\n{}",
        run.output,
        gw.log()
    );
    assert_eq!(
        common::gateway::sipp_counts(&uas_text),
        (10, 0),
        "{uas_text}"
    );
    // Topology hiding: the far end saw none of the caller's SIP port,
    // tags or Call-IDs (sipp's are "N-pid@127.0.0.1"), only the gateway's.
    let seen = std::fs::read_to_string(&seen).expect("far end's message log");
    assert!(
        seen.contains("INVITE sip:+442071838750@127.0.0.1:15330"),
        "{seen}"
    );
    for leak in ["15310", "SIPpTag00"] {
        assert!(!seen.contains(leak), "the far end saw {leak:?}");
    }
    let call_ids: Vec<&str> = seen
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Call-ID:"))
        .collect();
    assert!(call_ids.len() >= 10);
    assert!(
        call_ids.iter().all(|c| c.trim().ends_with("@tollgate")),
        "only the gateway's Call-IDs: {call_ids:?}"
    );
    assert_eq!(
        gw.metric("tollgate_calls_total{outcome=\"answered\"}"),
        10.0
    );
    let (rin, rout) = (
        gw.metric("tollgate_rtp_packets_total{direction=\"in\"}"),
        gw.metric("tollgate_rtp_packets_total{direction=\"out\"}"),
    );
    // 1.5 s of 30 ms packets is 50 a direction a call: audio from both
    // carriers crossed the bridge, every packet re-originated.
    assert!(rin >= 10.0 * 2.0 * 40.0, "rtp in {rin}");
    // Every packet in went out, but for the far end's first few, which
    // arrive before the caller proved its address (its ACK or its own
    // RTP): those are held back, never sent to an unproven address.
    let unproven = gw.metric("tollgate_rtp_unproven_peer_total");
    assert_eq!(rin, rout + unproven);
    assert!(unproven < 10.0 * 5.0, "{unproven} packets held back");
    assert_eq!(gw.metric("tollgate_calls_active"), 0.0);
}

#[test]
fn a_far_end_refusal_reaches_the_caller() {
    let trunks = TRUNKS.replace("15330", "15430");
    let gw = Gateway::start_with("trunkbusy", 15400, 51000, 500, &trunks);
    let log = gw.dir.join("far.log");
    let uas = far_end_with("uas_busy.xml", 15430, &log, &["-m", "3"]);
    let run = sipp(
        &gw,
        "uac_refused.xml",
        "+442071838750",
        15410,
        &["-m", "3", "-r", "3"],
    );
    let uas_out = uas.wait_with_output().expect("far end ends");
    assert_eq!(
        (run.successful, run.failed),
        (3, 0),
        "{}\n{}",
        run.output,
        gw.log()
    );
    assert_eq!(
        common::gateway::sipp_counts(&String::from_utf8_lossy(&uas_out.stdout)),
        (3, 0)
    );
    assert_eq!(gw.metric("tollgate_calls_total{outcome=\"rejected\"}"), 3.0);
    assert_eq!(gw.metric("tollgate_calls_active"), 0.0);
}

#[test]
fn a_cancel_crosses_to_the_far_end() {
    let trunks = TRUNKS.replace("15330", "15530");
    let gw = Gateway::start_with("trunkcancel", 15500, 52000, 500, &trunks);
    let log = gw.dir.join("far.log");
    let uas = far_end_with("uas_ring_cancel.xml", 15530, &log, &["-m", "3"]);
    let run = sipp(
        &gw,
        "uac_cancel.xml",
        "+442071838750",
        15510,
        &["-m", "3", "-r", "3"],
    );
    let uas_out = uas.wait_with_output().expect("far end ends");
    assert_eq!(
        (run.successful, run.failed),
        (3, 0),
        "{}\n{}",
        run.output,
        gw.log()
    );
    assert_eq!(
        common::gateway::sipp_counts(&String::from_utf8_lossy(&uas_out.stdout)),
        (3, 0),
        "the far end got a CANCEL for each call"
    );
    assert_eq!(
        gw.metric("tollgate_calls_total{outcome=\"cancelled\"}"),
        3.0
    );
}

/// The far end answers just as the caller gives up: its 200 crosses the
/// gateway's CANCEL. The caller still gets 487; the far end gets an ACK
/// and a BYE at once, instead of an answered call nobody is on.
#[test]
fn a_far_end_answer_that_crosses_the_cancel_is_acked_and_hung_up() {
    let trunks = TRUNKS.replace("15330", "14430");
    let gw = Gateway::start_with("trunk-crossed", 14400, 24000, 500, &trunks);
    let log = gw.dir.join("far.log");
    let uas = far_end_with("uas_answer_after_cancel.xml", 14430, &log, &["-m", "1"]);
    let run = sipp(&gw, "uac_cancel.xml", "+442071838750", 14410, &["-m", "1"]);
    let uas_out = uas.wait_with_output().expect("far end ends");
    assert_eq!((run.successful, run.failed), (1, 0), "{}", run.output);
    assert!(
        uas_out.status.success(),
        "the far end was not ACKed and hung up: {}\n{}\n{}",
        String::from_utf8_lossy(&uas_out.stdout),
        std::fs::read_to_string(&log).unwrap_or_default(),
        gw.log()
    );
    assert_eq!(
        gw.metric("tollgate_calls_total{outcome=\"cancelled\"}"),
        1.0
    );
}

#[test]
fn calls_out_a_tcp_trunk() {
    let trunks = TRUNKS
        .replace("15330", "15630")
        .replace("srtp = \"off\"", "srtp = \"off\"\ntransport = \"tcp\"");
    let gw = Gateway::start_with("trunktcp", 15600 + 50, 58000, 500, &trunks);
    let log = gw.dir.join("far.log");
    let uas = far_end(15630, &log, &["-m", "3", "-t", "t1"]);
    let run = sipp(
        &gw,
        "uac_echo.xml",
        "+442071838750",
        15660,
        &["-key", "pcap", PCAP, "-d", "500", "-m", "3", "-r", "3"],
    );
    let uas_out = uas.wait_with_output().expect("far end ends");
    assert_eq!(
        (run.successful, run.failed),
        (3, 0),
        "{}\n{}",
        run.output,
        gw.log()
    );
    assert_eq!(
        common::gateway::sipp_counts(&String::from_utf8_lossy(&uas_out.stdout)),
        (3, 0)
    );
    let seen = std::fs::read_to_string(&log).expect("far end's log");
    assert!(
        seen.contains("Via: SIP/2.0/TCP"),
        "requests came over TCP: {seen}"
    );
}

#[test]
fn early_media_reaches_the_caller_before_the_answer() {
    let trunks = TRUNKS.replace("15330", "15790");
    let gw = Gateway::start_with("trunkearly", 15700 + 60, 60000, 500, &trunks);
    let far_log = gw.dir.join("far.log");
    let caller_log = gw.dir.join("caller.log");
    let uas = far_end_with("uas_early.xml", 15790, &far_log, &["-m", "2"]);
    let run = sipp(
        &gw,
        "uac_echo.xml",
        "+442071838750",
        15770,
        &[
            "-key",
            "pcap",
            PCAP,
            "-d",
            "500",
            "-m",
            "2",
            "-r",
            "2",
            "-trace_msg",
            "-message_file",
            caller_log.to_str().expect("utf8"),
        ],
    );
    let uas_out = uas.wait_with_output().expect("far end ends");
    assert_eq!(
        (run.successful, run.failed),
        (2, 0),
        "{}\n{}",
        run.output,
        gw.log()
    );
    assert_eq!(
        common::gateway::sipp_counts(&String::from_utf8_lossy(&uas_out.stdout)),
        (2, 0)
    );
    let seen = std::fs::read_to_string(&caller_log).expect("caller's log");
    let progress = seen
        .split("SIP/2.0 183 Session Progress")
        .nth(1)
        .expect("the caller got a 183");
    let before_200 = progress.split("SIP/2.0 200").next().unwrap_or_default();
    assert!(
        before_200.contains("m=audio"),
        "the 183 carries the gateway's SDP"
    );
    // The far end's audio crossed during the second before its 200.
    assert!(gw.metric("tollgate_rtp_packets_total{direction=\"out\"}") >= 2.0 * 30.0);
}

/// The far end of a bridge answers through a record-routing proxy, then
/// holds, refreshes the session by UPDATE and resumes: each is answered
/// 200, media follows (none while held, to the new address after), the
/// call goes on to the caller's BYE, and the gateway's ACK and BYE carry
/// the route set.
#[test]
fn a_bridged_far_end_may_hold_refresh_and_resume() {
    let trunks = TRUNKS.replace("15330", "14130");
    let gw = Gateway::start_with("trunk-session", 14100, 35000, 500, &trunks);
    let far = common::gateway::FarEndSession::start(&gw, 14130);
    let run = sipp(
        &gw,
        "uac_echo.xml",
        "+442071838750",
        14110,
        &["-key", "pcap", PCAP, "-d", "4000", "-m", "1"],
    );
    far.check(&gw);
    assert_eq!(
        (run.successful, run.failed),
        (1, 0),
        "{}\n{}",
        run.output,
        gw.log()
    );
    assert_eq!(gw.metric("tollgate_calls_total{outcome=\"answered\"}"), 1.0);
}

/// Debian's Kamailio as a carrier's record-routing edge proxy, started on
/// loopback with tests/kamailio/edge_proxy.cfg; stopped (SIGTERM to its
/// main process, which ends its workers) when dropped.
struct EdgeProxy {
    child: Child,
    log: std::path::PathBuf,
}

impl EdgeProxy {
    fn start(dir: &std::path::Path, port: u16, gateway: u16, far_end: u16) -> Self {
        let log = dir.join("kamailio.log");
        let run = dir.join("kamailio-run");
        std::fs::create_dir_all(&run).expect("runtime dir");
        let child = std::process::Command::new("kamailio")
            .args([
                "-f",
                &format!(
                    "{}/tests/kamailio/edge_proxy.cfg",
                    env!("CARGO_MANIFEST_DIR")
                ),
                "-DD",
                "-E",
                "-m",
                "32",
                "-M",
                "4",
                "-l",
                &format!("udp:127.0.0.1:{port}"),
                "-A",
                &format!("GATEWAY_PORT={gateway}"),
                "-A",
                &format!("GATEWAY=\"sip:127.0.0.1:{gateway}\""),
                "-A",
                &format!("FAR_END=\"sip:127.0.0.1:{far_end}\""),
                "-Y",
                run.to_str().expect("utf8"),
                "-w",
                run.to_str().expect("utf8"),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            // Its own process group: stopping it reaches every worker.
            .process_group(0)
            .spawn()
            .expect("kamailio runs (Debian package kamailio; scripts/deps installs it)");
        let mut proxy = Self { child, log };
        // Ready once it answers: an OPTIONS it relays to the gateway comes
        // back with the gateway's 200.
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .expect("timeout");
        let me = sock.local_addr().expect("addr");
        let mut buf = [0u8; 4096];
        for i in 0..50 {
            let options = format!(
                "OPTIONS sip:127.0.0.1:{gateway} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKready{i}\r\nMax-Forwards: 70\r\nFrom: <sip:test@{me}>;tag=ready\r\nTo: <sip:127.0.0.1:{gateway}>\r\nCall-ID: ready-{i}\r\nCSeq: {i} OPTIONS\r\nContent-Length: 0\r\n\r\n"
            );
            let _ = sock.send_to(options.as_bytes(), ("127.0.0.1", port));
            if let Ok(n) = sock.recv(&mut buf) {
                // Ours, not one left over from an earlier run on the port.
                let alive = matches!(proxy.child.try_wait(), Ok(None));
                if buf[..n].starts_with(b"SIP/2.0 200") && alive {
                    return proxy;
                }
            }
        }
        panic!("kamailio never relayed: {}", proxy.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for EdgeProxy {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &group])
            .status();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .status();
        let _ = self.child.wait();
    }
}

/// Calls both ways through a real record-routing proxy (Kamailio): a
/// carrier's call in, whose ACK, hold re-INVITE and BYE the proxy routes
/// by the route set the gateway's 200 gave; and a bridged call out, whose
/// far end's hold re-INVITE and refresh UPDATE come back through the proxy
/// and whose ACK and BYE from the gateway carry the route set from the far
/// end's 200. The proxy refuses (404) any in-dialog request that skips it.
#[test]
fn calls_both_ways_through_a_record_routing_kamailio() {
    let (sip, proxy_port, far_port) = (14300, 14340, 14350);
    let trunks = TRUNKS.replace("127.0.0.1:15330", &format!("127.0.0.1:{proxy_port}"));
    let gw = Gateway::start_with("kamailio", sip, 23000, 500, &trunks);
    let proxy = EdgeProxy::start(&gw.dir, proxy_port, sip, far_port);

    // In: the carrier calls the echo number through its proxy.
    let run = common::gateway::sipp_result(
        common::gateway::sipp_command_to(
            ([127, 0, 0, 1], proxy_port).into(),
            "uac_proxied.xml",
            "echo",
            14310,
            &["-m", "1"],
        )
        .output()
        .expect("sipp runs"),
    );
    assert_eq!(
        (run.successful, run.failed),
        (1, 0),
        "{}\n{}\n{}",
        run.output,
        proxy.log(),
        gw.log()
    );

    // Out: a bridged call whose far end sits behind the proxy.
    let far_log = gw.dir.join("far_proxied.log");
    let far =
        common::gateway::far_end_with("uas_far_end_proxied.xml", far_port, &far_log, &["-m", "1"]);
    let run = sipp(
        &gw,
        "uac_echo.xml",
        "+442071838750",
        14320,
        &["-key", "pcap", PCAP, "-d", "2500", "-m", "1"],
    );
    let far_out = far.wait_with_output().expect("far end ends");
    let log = proxy.log();
    assert!(
        far_out.status.success(),
        "{}\n{}\n{log}\n{}",
        String::from_utf8_lossy(&far_out.stdout),
        std::fs::read_to_string(&far_log).unwrap_or_default(),
        gw.log()
    );
    assert_eq!((run.successful, run.failed), (1, 0), "{}", run.output);
    // Every in-dialog request, from each side, went through the proxy by
    // its route set; none was refused for skipping it.
    for (from, methods) in [
        (14310, &["ACK", "INVITE", "BYE"][..]),
        (sip, &["ACK", "BYE"][..]),
        (far_port, &["INVITE", "ACK", "UPDATE"][..]),
    ] {
        for method in methods {
            let line = format!("relay {method} in-dialog from {from}");
            assert!(log.contains(&line), "no {line:?} in:\n{log}");
        }
    }
    assert!(!log.contains("refused"), "{log}");
    assert_eq!(gw.metric("tollgate_calls_total{outcome=\"answered\"}"), 2.0);
}
