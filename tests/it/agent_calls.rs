//! Calls between real sipp carriers and the real softphone
//! (`tollgate agent connect`) through a gateway process, on loopback:
//! inbound with recorded audio checked against what sipp sent, the agent's
//! audio echoed back by sipp, outbound with the profile's checks, and an
//! agent killed mid-call.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::agent::{enroll, sdes_dial_config, softphone, softphone_output, wait_exit};
use crate::common::gateway::{far_end_with, sipp, sipp_command, sipp_result, Gateway, PCAP};
use crate::common::pcap::Capture;
use tollgate::agent::wav;
use tollgate::media::g711::{alaw_to_linear, linear_to_alaw};

const QUEUE: &str = r#"
[[route]]
number = "*"
target = "queue:default"
"#;

/// The A-law audio sipp's pcap carries, decoded.
fn pcap_audio() -> Vec<i16> {
    common::pcap::udp_payloads(&std::fs::read(PCAP).expect("sipp's pcap"))
        .into_iter()
        .filter_map(|(_, p)| {
            let r = tollgate::media::rtp::parse(&p).ok()?;
            (r.payload_type() == 8).then(|| {
                r.payload()
                    .iter()
                    .map(|&b| alaw_to_linear(b))
                    .collect::<Vec<_>>()
            })
        })
        .flatten()
        .collect()
}

#[test]
fn inbound_call_is_answered_by_the_agent_and_records_what_sipp_sent() {
    let gw = Gateway::start_with("agent-in", 16400, 63000, 500, QUEUE);
    let alice = enroll(&gw, "alice", None);
    let rec = gw.dir.join("alice.wav");
    let mut phone = softphone(
        &gw,
        &alice,
        "alice",
        &[
            "--auto-answer",
            "--record",
            rec.to_str().expect("utf8"),
            "--duration",
            "3",
        ],
    );
    gw.expect_metric("tollgate_agents_available", 10, 1.0);
    // As root, capture the agents' QUIC port and the trunk's RTP ports.
    let captures = common::pcap::is_root().then(|| {
        (
            Capture::start(&gw.dir.join("quic.pcap"), "udp and port 16402"),
            Capture::start(&gw.dir.join("trunk.pcap"), "udp and portrange 63000-63999"),
        )
    });
    let run = sipp(
        &gw,
        "uac_agent_pcap.xml",
        "02079460000",
        16420,
        &["-key", "pcap", PCAP, "-m", "1"],
    );
    let captured = captures.map(|(q, t)| (q.stop(), t.stop()));
    assert_eq!((run.successful, run.failed), (1, 0), "{}", run.output);
    let status = wait_exit(&mut phone, 20);
    let (out, err) = softphone_output(&gw, "alice");
    assert!(status.success(), "{out}\n{err}");
    // The caller's number reaches the agent masked.
    assert!(
        out.contains("call 1 from +********0123: answered, PCMA in SRTP AEAD_AES_128_GCM"),
        "{out}"
    );
    assert!(out.contains("ended: hangup"), "{out}");

    let sent = pcap_audio();
    let got = wav::read(&rec).expect("recording");
    // The agent hung up after 3 s: about 2.5 s or more of sipp's audio,
    // sample for sample from its start.
    assert!(got.len() >= 20_000, "recorded {} samples", got.len());
    assert!(got.len() <= sent.len());
    let same = got.iter().zip(&sent).take_while(|(a, b)| a == b).count();
    assert_eq!(
        same,
        got.len(),
        "the recording departs from sipp's audio at sample {same}"
    );
    gw.expect_metric(
        "tollgate_agent_calls_total{direction=\"inbound\",outcome=\"answered\"}",
        5,
        1.0,
    );
    gw.expect_metric("tollgate_calls_active", 5, 0.0);

    match captured {
        None => eprintln!("skipped the captures: tcpdump needs root (CI runs as root)"),
        Some((quic, trunk)) => {
            // sipp's RTP payloads: plain on the trunk (configured without
            // SRTP for this call), never on the QUIC port.
            let payloads: Vec<Vec<u8>> =
                common::pcap::udp_payloads(&std::fs::read(PCAP).expect("pcap"))
                    .into_iter()
                    .filter_map(|(_, p)| {
                        let r = tollgate::media::rtp::parse(&p).ok()?;
                        (r.payload_type() == 8).then(|| r.payload().to_vec())
                    })
                    .collect();
            let carries = |packets: &[(u16, Vec<u8>)], payload: &[u8]| {
                packets
                    .iter()
                    .any(|(_, p)| p.windows(32).any(|w| payload.windows(32).any(|x| x == w)))
            };
            assert!(
                quic.len() > 100,
                "only {} QUIC packets captured",
                quic.len()
            );
            let on_trunk = payloads.iter().filter(|p| carries(&trunk, p)).count();
            assert!(
                on_trunk >= 80,
                "only {on_trunk} of sipp's payloads seen plain on the trunk"
            );
            for (i, p) in payloads.iter().enumerate() {
                assert!(
                    !carries(&quic, p),
                    "sipp's payload {i} crossed the QUIC port in clear"
                );
            }
        }
    }
}

#[test]
fn an_agent_killed_mid_call_gets_the_trunk_a_bye_in_time() {
    let base = 16700;
    let toml = common::gateway::config(base, 59000, 500, QUEUE)
        .replace("[agents]\n", "[agents]\ndrop_after_ms = 1500\n");
    let gw = Gateway::start_toml("agent-kill", base, base + 1, &toml);
    let frank = enroll(&gw, "frank", None);
    let mut phone = softphone(&gw, &frank, "frank", &["--auto-answer"]);
    gw.expect_metric("tollgate_agents_available", 10, 1.0);
    let carrier = sipp_command(
        &gw,
        "uac_agent.xml",
        "441234567890",
        base + 20,
        &["-m", "1"],
    )
    .spawn()
    .expect("sipp runs");
    // Wait (bounded) for the agent to say it answered, then kill it.
    let until = Instant::now() + Duration::from_secs(15);
    while !softphone_output(&gw, "frank").1.contains("answered call") {
        assert!(Instant::now() < until, "the agent never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    phone.kill().expect("kill");
    let killed = Instant::now();
    let _ = phone.wait();
    let run = sipp_result(carrier.wait_with_output().expect("sipp ends"));
    let took = killed.elapsed();
    assert_eq!((run.successful, run.failed), (1, 0), "{}", run.output);
    // The idle timeout (1.5 s here) plus the BYE's trip.
    assert!(
        took < Duration::from_millis(2500),
        "BYE came {took:?} after the agent died"
    );
    assert!(
        took >= Duration::from_millis(1000),
        "BYE came before the timeout could pass: {took:?}"
    );
    gw.expect_metric("tollgate_agents_connected", 5, 0.0);
}

#[test]
fn the_agents_tone_comes_back_from_an_echoing_carrier() {
    let gw = Gateway::start_with("agent-echo", 16500, 64000, 500, QUEUE);
    let bob = enroll(&gw, "bob", None);
    // Four seconds of 1 kHz tone to play.
    let tone: Vec<i16> = (0..32_000)
        .map(|n| (10_000.0 * (std::f64::consts::PI * f64::from(n % 8) / 4.0).sin()) as i16)
        .collect();
    let play = gw.dir.join("tone.wav");
    wav::write(&play, &tone).expect("tone file");
    let rec = gw.dir.join("bob.wav");
    let mut phone = softphone(
        &gw,
        &bob,
        "bob",
        &[
            "--auto-answer",
            "--play",
            play.to_str().expect("utf8"),
            "--record",
            rec.to_str().expect("utf8"),
            "--duration",
            "2.5",
        ],
    );
    gw.expect_metric("tollgate_agents_available", 10, 1.0);
    let run = sipp(
        &gw,
        "uac_agent.xml",
        "441234567890",
        16520,
        &["-rtp_echo", "-m", "1"],
    );
    assert_eq!((run.successful, run.failed), (1, 0), "{}", run.output);
    let status = wait_exit(&mut phone, 20);
    let (out, err) = softphone_output(&gw, "bob");
    assert!(status.success(), "{out}\n{err}");
    let got = wav::read(&rec).expect("recording");
    // Every 20 ms packet of tone is the same 160 samples after A-law.
    let packet: Vec<i16> = tone[..160]
        .iter()
        .map(|&s| alaw_to_linear(linear_to_alaw(s)))
        .collect();
    let chunks: Vec<&[i16]> = got.chunks_exact(160).collect();
    assert!(
        chunks.len() >= 90,
        "only {} packets came back",
        chunks.len()
    );
    let toned = chunks.iter().filter(|c| **c == packet.as_slice()).count();
    assert_eq!(
        toned,
        chunks.len(),
        "{toned} of {} packets are the tone",
        chunks.len()
    );
}

fn outbound_config(base: u16) -> String {
    format!(
        r#"
[[trunk]]
name = "carrier"
peers = ["192.0.2.0/24"]
address = "127.0.0.1:{far}"
codecs = ["PCMA", "PCMU"]
srtp = "off"
keepalive_s = 0

[[profile]]
name = "sales"
allow = ["+44"]
deny = ["+449"]
show_caller = "full"
caller_id = "+442071234567"

[[dial]]
prefix = "+"
trunk = "carrier"
"#,
        far = base + 50
    )
}

#[test]
fn outbound_calls_follow_the_profile_and_carry_audio() {
    let base = 16600;
    let gw = Gateway::start_with("agent-out", base, 49000, 500, &outbound_config(base));
    // A TOTP code works once, so each login here is another agent.
    let carol = enroll(&gw, "carol", Some("sales"));
    let dan = enroll(&gw, "dan", Some("sales"));
    let erin = enroll(&gw, "erin", Some("sales"));
    let invites_out = "tollgate_sip_requests_total{direction=\"out\",method=\"INVITE\"}";

    // Premium rate: refused by the profile, nothing sent to the trunk.
    let mut phone = softphone(&gw, &carol, "carol-barred", &["--dial", "+449011234567"]);
    let status = wait_exit(&mut phone, 20);
    let (out, err) = softphone_output(&gw, "carol-barred");
    assert!(!status.success(), "{out}");
    assert!(err.contains("barred for your profile"), "{err}");
    // Outside the allowed prefixes too.
    let mut phone = softphone(&gw, &dan, "carol-abroad", &["--dial", "+33142685300"]);
    assert!(!wait_exit(&mut phone, 20).success());
    let (_, err) = softphone_output(&gw, "carol-abroad");
    assert!(err.contains("does not allow"), "{err}");
    gw.expect_metric(
        "tollgate_agent_calls_total{direction=\"outbound\",outcome=\"refused\"}",
        5,
        2.0,
    );
    assert_eq!(
        gw.metric(invites_out),
        0.0,
        "an INVITE left for a refused dial"
    );

    // Allowed: sipp answers and plays its pcap; carol hangs up after 2 s.
    let seen = gw.dir.join("far_end.log");
    // As root, capture what reaches the far end's media port.
    let capture = common::pcap::is_root().then(|| {
        Capture::start(
            &gw.dir.join("far.pcap"),
            &format!("udp and dst port {}", base + 52),
        )
    });
    let uas = far_end_with("uas_answer.xml", base + 50, &seen, &["-m", "1"]);
    let rec = gw.dir.join("carol.wav");
    let mut phone = softphone(
        &gw,
        &erin,
        "carol",
        &[
            "--dtmf",
            "5#",
            "--dial",
            "02079460000",
            "--duration",
            "2",
            "--record",
            rec.to_str().expect("utf8"),
        ],
    );
    let status = wait_exit(&mut phone, 30);
    let uas_out = uas.wait_with_output().expect("far end ends");
    let uas_text = String::from_utf8_lossy(&uas_out.stdout);
    let (out, err) = softphone_output(&gw, "carol");
    assert!(status.success(), "{out}\n{err}");
    assert!(
        uas_out.status.success(),
        "the far end saw the call through to BYE: {uas_text}"
    );
    assert!(
        out.contains("call 4294967297 to 02079460000: answered, PCMA"),
        "{out}"
    );
    let messages = std::fs::read_to_string(&seen).expect("far end's messages");
    assert!(
        messages.contains("INVITE sip:+442079460000@"),
        "E.164 Request-URI"
    );
    assert!(
        messages.contains("From: <sip:+442071234567@"),
        "the profile's caller ID"
    );
    assert!(messages.contains("BYE sip:"), "the gateway sent BYE");
    let got = wav::read(&rec).expect("recording");
    let sent = pcap_audio();
    assert!(got.len() >= 8_000, "recorded {} samples", got.len());
    let same = got.iter().zip(&sent).take_while(|(a, b)| a == b).count();
    assert_eq!(
        same,
        got.len(),
        "the recording departs from the far end's audio at {same}"
    );
    // (Retransmissions count too, so at least one.)
    assert!(gw.metric(invites_out) >= 1.0);
    // The agent's DTMF reached the far end as RFC 4733 events: each digit
    // a start with the marker, then ends.
    match capture.map(Capture::stop) {
        None => eprintln!("skipped the capture: tcpdump needs root (CI runs as root)"),
        Some(packets) => {
            let events: Vec<(u8, bool, bool)> = packets
                .iter()
                .filter_map(|(_, p)| tollgate::media::rtp::parse(p).ok())
                .filter(|r| r.payload_type() == 101 && r.payload().len() >= 4)
                .map(|r| (r.payload()[0], r.marker(), r.payload()[1] & 0x80 != 0))
                .collect();
            assert_eq!(
                events,
                [
                    (5, true, false),
                    (5, false, true),
                    (5, false, true),
                    (5, false, true),
                    (11, true, false),
                    (11, false, true),
                    (11, false, true),
                    (11, false, true)
                ],
                "{out}\n{err}\n{}\n{} packets captured, payload types {:?}",
                gw.log(),
                packets.len(),
                packets
                    .iter()
                    .filter_map(|(_, p)| tollgate::media::rtp::parse(p)
                        .ok()
                        .map(|r| r.payload_type()))
                    .collect::<std::collections::BTreeSet<_>>()
            );
        }
    }
}

/// The far end of an agent's call answers through a record-routing
/// proxy, then holds, refreshes the session by UPDATE and resumes: each
/// is answered 200, the agent's audio follows (none while held, to the new
/// address after), the call goes on to the agent's hang-up, and the
/// gateway's ACK and BYE carry the route set.
#[test]
fn an_agents_call_survives_the_far_ends_hold_refresh_and_resume() {
    let base = 14200;
    let gw = Gateway::start_with("agent-session", base, 40000, 500, &outbound_config(base));
    let fay = enroll(&gw, "fay", Some("sales"));
    let far = common::gateway::FarEndSession::start(&gw, base + 50);
    let mut phone = softphone(
        &gw,
        &fay,
        "fay",
        &["--dial", "02079460000", "--duration", "4"],
    );
    let status = wait_exit(&mut phone, 30);
    let (out, err) = softphone_output(&gw, "fay");
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("answered"), "{out}");
    far.check(&gw);
    gw.expect_metric(
        "tollgate_agent_calls_total{direction=\"outbound\",outcome=\"answered\"}",
        5,
        1.0,
    );
}

#[test]
fn dtmf_from_the_carrier_reaches_the_agent_as_events() {
    let gw = Gateway::start_with("agent-dtmf", 16800, 58000, 500, QUEUE);
    let gina = enroll(&gw, "gina", None);
    let mut phone = softphone(&gw, &gina, "gina", &["--auto-answer", "--duration", "2.5"]);
    gw.expect_metric("tollgate_agents_available", 10, 1.0);
    let run = sipp(
        &gw,
        "uac_agent_dtmf.xml",
        "441234567890",
        16820,
        &["-m", "1"],
    );
    assert_eq!((run.successful, run.failed), (1, 0), "{}", run.output);
    let status = wait_exit(&mut phone, 20);
    let (out, err) = softphone_output(&gw, "gina");
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("DTMF heard \"1#\""), "{out}");
}

#[test]
fn a_carrier_that_goes_silent_is_hung_up() {
    let base = 16900;
    let toml = common::gateway::config(base, 57000, 500, QUEUE)
        .replace("[media]\n", "[media]\nrtp_timeout_s = 2\n");
    let gw = Gateway::start_toml("agent-silent", base, base + 1, &toml);
    let hana = enroll(&gw, "hana", None);
    let mut phone = softphone(&gw, &hana, "hana", &["--auto-answer"]);
    gw.expect_metric("tollgate_agents_available", 10, 1.0);
    // sipp answers nothing and sends no RTP (no pcap, no echo).
    let started = Instant::now();
    let run = sipp(
        &gw,
        "uac_agent.xml",
        "441234567890",
        base + 20,
        &["-m", "1"],
    );
    let took = started.elapsed();
    assert_eq!((run.successful, run.failed), (1, 0), "{}", run.output);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "BYE after {took:?}"
    );
    let status = wait_exit(&mut phone, 10);
    let (out, err) = softphone_output(&gw, "hana");
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("ended: media_timeout"), "{out}\n{err}");
    // Answered, as far as the agent is concerned; failed as a SIP call.
    gw.expect_metric(
        "tollgate_agent_calls_total{direction=\"inbound\",outcome=\"answered\"}",
        5,
        1.0,
    );
    gw.expect_metric("tollgate_calls_total{outcome=\"failed\"}", 5, 1.0);
}

#[test]
fn an_unanswered_offer_moves_on_and_no_agent_means_480() {
    let base = 17100;
    let toml = common::gateway::config(base, 64000, 500, QUEUE)
        + "\n[[queue]]\nname = \"default\"\nring_s = 1\n";
    let gw = Gateway::start_toml("agent-queue", base, base + 1, &toml);
    // Nobody logged in: 480 at once.
    let run = sipp(
        &gw,
        "uac_unavailable.xml",
        "441234567890",
        base + 20,
        &["-m", "1"],
    );
    assert_eq!((run.successful, run.failed), (1, 0), "{}", run.output);

    // The agent idle longest lets it ring; after the queue's 1 s the
    // next one takes it.
    let slow = enroll(&gw, "slow", None);
    let fast = enroll(&gw, "fast", None);
    let mut slow_phone = softphone(&gw, &slow, "slow", &["--ignore-offers"]);
    gw.expect_metric("tollgate_agents_available", 10, 1.0);
    let mut fast_phone = softphone(&gw, &fast, "fast", &["--auto-answer", "--duration", "1"]);
    gw.expect_metric("tollgate_agents_available", 10, 2.0);
    let run = sipp(
        &gw,
        "uac_agent.xml",
        "441234567890",
        base + 40,
        &["-m", "1"],
    );
    assert_eq!((run.successful, run.failed), (1, 0), "{}", run.output);
    let status = wait_exit(&mut fast_phone, 20);
    let (out, err) = softphone_output(&gw, "fast");
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("call 1 from +********0123: answered"), "{out}");
    let (_, slow_err) = softphone_output(&gw, "slow");
    assert!(
        slow_err.contains("offered call 1; letting it ring"),
        "{slow_err}"
    );
    let _ = slow_phone.kill();
    let _ = slow_phone.wait();
    gw.expect_metric(
        "tollgate_agent_calls_total{direction=\"inbound\",outcome=\"no_answer\"}",
        5,
        1.0,
    );
}

#[test]
fn hold_stops_the_audio_both_ways() {
    let base = 17200;
    let gw = Gateway::start_with("agent-hold", base, 64000, 500, QUEUE);
    let ivy = enroll(&gw, "ivy", None);
    let tone: Vec<i16> = (0..32_000)
        .map(|n| (10_000.0 * (std::f64::consts::PI * f64::from(n % 8) / 4.0).sin()) as i16)
        .collect();
    let play = gw.dir.join("tone.wav");
    wav::write(&play, &tone).expect("tone file");
    let mut phone = softphone(
        &gw,
        &ivy,
        "ivy",
        &[
            "--auto-answer",
            "--play",
            play.to_str().expect("utf8"),
            "--hold-after",
            "1",
            "--duration",
            "3",
        ],
    );
    gw.expect_metric("tollgate_agents_available", 10, 1.0);
    // sipp echoes what reaches it: the agent's tone, until the hold.
    let run = sipp(
        &gw,
        "uac_agent.xml",
        "441234567890",
        base + 20,
        &["-rtp_echo", "-m", "1"],
    );
    assert_eq!((run.successful, run.failed), (1, 0), "{}", run.output);
    let status = wait_exit(&mut phone, 20);
    let (out, err) = softphone_output(&gw, "ivy");
    assert!(status.success(), "{out}\n{err}");
    assert!(err.contains("held: true"), "{err}");
    // About 1 s of the 3 s came back (50 packets), not 150.
    let received: u64 = out
        .split("received ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a report");
    assert!(
        (30..=75).contains(&received),
        "{received} packets came back: {out}"
    );
}

/// `[dialing] default = "deny"` and profiles that fail closed.
fn deny_config(base: u16, with_sales: bool) -> String {
    let sales = if with_sales {
        "[[profile]]\nname = \"sales\"\n"
    } else {
        ""
    };
    format!(
        r#"
[[trunk]]
name = "carrier"
peers = ["192.0.2.0/24"]
address = "127.0.0.1:{far}"
codecs = ["PCMA"]
srtp = "off"
keepalive_s = 0

{sales}
[[dial]]
prefix = "+44"
trunk = "carrier"

[dialing]
default = "deny"
"#,
        far = base + 50
    )
}

/// Dials `number` as `who`; the softphone's stderr once it has exited.
fn dial_refusal(gw: &Gateway, who: &common::agent::Enrolled, tag: &str, number: &str) -> String {
    let mut phone = softphone(gw, who, tag, &["--dial", number]);
    let status = wait_exit(&mut phone, 30);
    let (out, err) = softphone_output(gw, tag);
    assert!(!status.success(), "{tag}: the dial went through: {out}");
    err
}

#[test]
fn dial_restrictions_fail_closed() {
    let (base, rtp) = (18100, 36000);
    let invites_out = "tollgate_sip_requests_total{direction=\"out\",method=\"INVITE\"}";
    let mut gw = Gateway::start_with("dial-deny", base, rtp, 100, &deny_config(base, true));
    gw.keep_dir = true;

    // Enrolment refuses a profile the configuration does not hold.
    let out = gw.dir.join("typo.toml");
    let (ok, _, err) = common::agent::agent_cli(
        &gw,
        &[
            "enroll",
            "typo",
            "--profile",
            "sale",
            "--out",
            out.to_str().expect("utf8"),
        ],
    );
    assert!(!ok && err.contains("no profile named \"sale\""), "{err}");
    assert!(
        !out.exists(),
        "a bundle was written for a refused enrolment"
    );

    let olga = enroll(&gw, "olga", Some("sales"));
    let pia = enroll(&gw, "pia", Some("sales"));
    let quinn = enroll(&gw, "quinn", Some("sales"));
    let nora = enroll(&gw, "nora", None);

    // Default-deny: a number no [[dial]] prefix covers, and any dial by an
    // agent without a profile.
    let err = dial_refusal(&gw, &olga, "olga-abroad", "+33142685300");
    assert!(err.contains("not in the dial plan"), "{err}");
    let err = dial_refusal(&gw, &nora, "nora", "+442079460000");
    assert!(err.contains("no dialling profile"), "{err}");
    assert_eq!(gw.metric(invites_out), 0.0, "an INVITE left for a refusal");
    // A covered number by an agent whose profile allows it passes the
    // checks and leaves for the carrier (nobody answers there).
    let _ = dial_refusal(&gw, &quinn, "quinn", "+442079460000");
    assert!(gw.metric(invites_out) >= 1.0, "{}", gw.log());

    // A reload that drops the profile agents use is refused.
    std::fs::write(
        gw.dir.join("tollgate.toml"),
        common::gateway::config(base, rtp, 100, &deny_config(base, false))
            + "\n[firewall]\nnftables = \"off\"\n",
    )
    .expect("config");
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
    gw.expect_metric("tollgate_config_last_reload_successful", 10, 0.0);
    assert!(
        gw.log()
            .contains("profiles used by enrolled agents are missing: olga (\"sales\")"),
        "{}",
        gw.log()
    );

    // Started on that file anyway (edited while stopped): the agents of
    // the missing profile are named, and cannot dial at all.
    gw.stop();
    drop(gw);
    let gw = Gateway::start_toml(
        "dial-deny",
        base,
        base + 1,
        &std::fs::read_to_string(Gateway::dir_for("dial-deny").join("tollgate.toml"))
            .expect("config"),
    );
    let err = dial_refusal(&gw, &pia, "pia", "+442079460000");
    assert!(err.contains("profile is not configured"), "{err}");
    assert!(
        gw.log().contains("cannot dial until it is added"),
        "{}",
        gw.log()
    );
    assert_eq!(gw.metric(invites_out), 0.0);
}

/// A trunk that requires SRTP never carries an agent's call in clear: a
/// far end that answers with plain RTP (no `a=crypto`) is ACKed and hung
/// up at once, the agent is told the call failed, and the record says the
/// trunk leg had no SRTP and never answered.
#[test]
fn a_keyless_answer_on_a_trunk_that_requires_srtp_ends_the_call() {
    let base = 17260;
    let far = base + 10;
    let extra = sdes_dial_config(far);
    let gw = Gateway::start_with("agent-srtp-unmet", base, 29500, 500, &extra);
    let agent = enroll(&gw, "uma", Some("out"));
    let seen = gw.dir.join("far.log");
    // The far end answers RTP/AVP, plays its audio, and ends only on the
    // gateway's BYE (its scenario fails without one).
    let carrier = far_end_with("uas_answer.xml", far, &seen, &["-m", "1"]);
    let mut phone = softphone(
        &gw,
        &agent,
        "uma",
        &["--dial", "02079460000", "--duration", "5"],
    );
    let status = wait_exit(&mut phone, 30);
    let (out, err) = softphone_output(&gw, "uma");
    let ended = carrier.wait_with_output().expect("the far end ends");
    let messages = std::fs::read_to_string(&seen).unwrap_or_default();
    assert!(ended.status.success(), "the far end got no BYE: {messages}");
    // Our offer was RTP/SAVP with a key; the far end's ACK came before
    // its BYE.
    assert!(
        messages.contains("RTP/SAVP") && messages.contains("a=crypto:1"),
        "{messages}"
    );
    let ack = messages.find("ACK sip:").expect("ACKed");
    let bye = messages.find("BYE sip:").expect("hung up");
    assert!(ack < bye, "{messages}");
    assert!(!status.success(), "the call was not refused: {out}\n{err}");
    assert!(
        format!("{out}{err}").contains("failed"),
        "the agent was not told: {out}\n{err}"
    );

    let (ok, list, err) =
        common::gateway::operator_cli(&gw.dir.join("data"), "cdr", &["list", "--json"]);
    assert!(ok, "{err}");
    assert!(list.contains(r#"["trunk","none"]"#), "{list}");
    assert!(list.contains(r#""outcome":"failed""#), "{list}");
    assert!(list.contains(r#""answer_ms":null"#), "{list}");
    gw.expect_metric(
        "tollgate_agent_calls_total{direction=\"outbound\",outcome=\"failed\"}",
        5,
        1.0,
    );
}
