//! Real calls from a real carrier stand-in: sipp against `tollgate run` on
//! loopback. Each test runs its own gateway on its own ports.

use crate::common;

use crate::common::gateway::{sipp, Gateway};

const PCAP: &str = "/usr/share/sip-tester/g711a.pcap";

#[test]
fn two_hundred_echo_calls_with_audio_in_a_row() {
    let gw = Gateway::start("echo200", 15060, 40000);
    let run = sipp(
        &gw,
        "uac_echo.xml",
        "echo",
        15100,
        &[
            "-key", "pcap", PCAP, "-d", "400", "-m", "200", "-r", "40", "-l", "20",
        ],
    );
    assert_eq!((run.successful, run.failed), (200, 0), "{}", run.output);
    assert_eq!(run.status, 0);
    assert_eq!(
        gw.metric("tollgate_calls_total{outcome=\"answered\"}"),
        200.0
    );
    assert_eq!(gw.metric("tollgate_calls_active"), 0.0);
    let (rin, rout) = (
        gw.metric("tollgate_rtp_packets_total{direction=\"in\"}"),
        gw.metric("tollgate_rtp_packets_total{direction=\"out\"}"),
    );
    // About 20 packets a call in 400 ms; every one echoed.
    assert!(rin >= 200.0 * 10.0, "rtp in {rin}");
    assert_eq!(rin, rout, "echo returns every packet");
    assert_eq!(
        gw.metric("tollgate_rtp_dropped_total{reason=\"wrong_source\"}"),
        0.0
    );
}

#[test]
fn cancel_before_answer_gets_487() {
    let gw = Gateway::start("cancel", 15070, 41000);
    let run = sipp(
        &gw,
        "uac_cancel.xml",
        "ringing",
        15110,
        &["-m", "5", "-r", "5"],
    );
    assert_eq!((run.successful, run.failed), (5, 0), "{}", run.output);
    assert_eq!(
        gw.metric("tollgate_calls_total{outcome=\"cancelled\"}"),
        5.0
    );
    assert_eq!(gw.metric("tollgate_calls_active"), 0.0);
}

#[test]
fn hold_and_resume_by_reinvite() {
    let gw = Gateway::start("hold", 15080, 42000);
    let run = sipp(&gw, "uac_hold.xml", "echo", 15120, &["-m", "5", "-r", "5"]);
    assert_eq!((run.successful, run.failed), (5, 0), "{}", run.output);
    assert_eq!(gw.metric("tollgate_calls_total{outcome=\"answered\"}"), 5.0);
}

#[test]
fn session_timers_are_granted_to_carriers_that_ask() {
    let gw = Gateway::start("timer", 17000, 62000);
    let run = sipp(&gw, "uac_timer.xml", "echo", 17020, &["-m", "3", "-r", "3"]);
    assert_eq!((run.successful, run.failed), (3, 0), "{}", run.output);
    assert_eq!(gw.metric("tollgate_calls_total{outcome=\"rejected\"}"), 3.0);
    assert_eq!(gw.metric("tollgate_calls_total{outcome=\"answered\"}"), 3.0);
}

#[test]
fn the_gateway_hangs_up_and_the_carrier_answers_its_bye() {
    let gw = Gateway::start("gwbye", 15090, 43000);
    let run = sipp(
        &gw,
        "uac_gateway_bye.xml",
        "short",
        15130,
        &["-m", "5", "-r", "5"],
    );
    assert_eq!((run.successful, run.failed), (5, 0), "{}", run.output);
    assert_eq!(
        gw.metric("tollgate_sip_requests_total{direction=\"out\",method=\"BYE\"}"),
        5.0
    );
    assert_eq!(gw.metric("tollgate_calls_active"), 0.0);
}

#[test]
fn calls_over_tcp() {
    let gw = Gateway::start("tcp", 15140, 44000);
    let run = sipp(
        &gw,
        "uac_echo.xml",
        "echo",
        15150,
        &[
            "-t", "t1", "-key", "pcap", PCAP, "-d", "300", "-m", "10", "-r", "10",
        ],
    );
    assert_eq!((run.successful, run.failed), (10, 0), "{}", run.output);
}

#[test]
fn unknown_numbers_get_404_and_metrics_pass_promtool() {
    let gw = Gateway::start("promtool", 15160, 45000);
    let run = sipp(
        &gw,
        "uac_echo.xml",
        "+449999000000",
        15170,
        &["-key", "pcap", PCAP, "-m", "2", "-r", "2"],
    );
    assert_eq!(run.successful, 0);
    assert_eq!(gw.metric("tollgate_calls_total{outcome=\"rejected\"}"), 2.0);
    assert!(gw.metric("tollgate_sip_responses_total{class=\"4xx\",direction=\"out\"}") >= 2.0);
    let metrics = gw.metrics();
    assert!(!metrics.contains("449999"), "no phone numbers in metrics");
    let path = gw.dir.join("metrics.txt");
    std::fs::write(&path, &metrics).expect("write");
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).expect("open"))
        .output()
        .expect("promtool runs (Debian package prometheus; scripts/deps installs it)");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_audio_sipp_gets_back_from_echo_is_what_it_sent() {
    if !common::pcap::is_root() {
        eprintln!("skipped: capturing the audio with tcpdump needs root (CI runs as root)");
        return;
    }
    let gw = Gateway::start("audio", 15180, 46000);
    let cap = gw.dir.join("echo.pcap");
    let media_port = 15190 + 2;
    let capture = common::pcap::Capture::start(
        &cap,
        &format!("udp and dst port {media_port} and src portrange 46000-46999"),
    );

    let run = sipp(
        &gw,
        "uac_echo.xml",
        "echo",
        15190,
        &["-key", "pcap", PCAP, "-d", "3000", "-m", "1"],
    );
    let captured = capture.stop();
    assert_eq!(run.successful, 1, "{}", run.output);

    let rtp_payloads = |packets: Vec<(u16, Vec<u8>)>| -> Vec<Vec<u8>> {
        packets
            .into_iter()
            .filter_map(|(_, p)| {
                let r = tollgate::media::rtp::parse(&p).ok()?;
                (r.payload_type() == 8).then(|| r.payload().to_vec())
            })
            .collect()
    };
    let sent = rtp_payloads(common::pcap::udp_payloads(
        &std::fs::read(PCAP).expect("pcap"),
    ));
    let back = rtp_payloads(captured);
    // The pcap holds 236 packets of 30 ms (7 s); a 3 s call plays about
    // 100 of them, less the moments before the first one and after BYE.
    assert!(back.len() >= 85, "only {} packets came back", back.len());
    assert!(back.len() <= sent.len());
    for (i, (b, s)) in back.iter().zip(&sent).enumerate() {
        assert_eq!(b, s, "packet {i}: the echo differs from what sipp sent");
    }
}
