//! Calls routed out another trunk (`trunk:NAME`): sipp as the calling
//! carrier and sipp as the far-end carrier, the gateway in the middle as a
//! B2BUA with media terminated on each leg.

mod common;

use std::process::Child;

use common::gateway::{far_end_with, sipp, Gateway, PCAP};

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
    let trunks = TRUNKS.replace("15330", "15730");
    let gw = Gateway::start_with("trunkearly", 15700 + 60, 60000, 500, &trunks);
    let far_log = gw.dir.join("far.log");
    let caller_log = gw.dir.join("caller.log");
    let uas = far_end_with("uas_early.xml", 15730, &far_log, &["-m", "2"]);
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
