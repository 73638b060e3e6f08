//! The media path of a call, from the carrier's side: strict source (RTP
//! from another address is dropped and counted), the per-leg packet-rate
//! cap (a flood from the carrier's own address), a re-INVITE that moves
//! the carrier's media to a new port, and RTCP reports from the gateway.
//! No reflection: a forged INVITE to a test number sends nothing to the
//! address in its SDP until media came from there (or its ACK did), and
//! media addresses of scopes the trunk does not allow are refused.

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::common::gateway::Gateway;
use crate::common::uac::{recv_sip, request, request_to, transact};
use tollgate::sip::message::{Framing, HeaderName, Limits, Message};
use tollgate::sip::sdp::Sdp;

fn offer(port: u16, version: u32) -> String {
    format!(
        "v=0\r\no=carrier 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&0x5eed_0001u32.to_be_bytes());
    p.extend((0..160).map(|i| (i as u16 + seq) as u8));
    p
}

fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s
}

/// Sends `n` packets from `from` and counts the echoes it gets back.
fn echoes(from: &UdpSocket, to: SocketAddr, first: u16, n: u16) -> usize {
    let mut buf = [0u8; 2048];
    (first..first + n)
        .filter(|&seq| {
            from.send_to(&rtp(seq), to).expect("send");
            from.recv_from(&mut buf)
                .is_ok_and(|(len, _)| len == 172 && buf[12..][..160] == rtp(seq)[12..])
        })
        .count()
}

#[test]
fn strict_source_media_moves_on_reinvite_and_rtcp_reports() {
    let gw = Gateway::start("mediapath", 16200, 61000);
    let sip = socket();
    let me = sip.local_addr().expect("addr");
    let (first, intruder) = (socket(), socket());
    // The second media socket on an even port, with its RTCP port above it.
    let (second, second_rtcp) = (0..200)
        .find_map(|k| {
            let port = 61_500 + 2 * k;
            let a = UdpSocket::bind(("127.0.0.1", port)).ok()?;
            let b = UdpSocket::bind(("127.0.0.1", port + 1)).ok()?;
            Some((a, b))
        })
        .expect("a free even port pair");
    second
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    second_rtcp
        .set_read_timeout(Some(Duration::from_secs(8)))
        .expect("timeout");

    let port1 = first.local_addr().expect("addr").port();
    let ok = transact(
        &sip,
        gw.sip,
        &request(
            "INVITE",
            "path1",
            1,
            None,
            me,
            gw.sip,
            Some(&offer(port1, 1)),
        ),
    );
    let (m, _) = Message::parse(&ok, Framing::Datagram, &Limits::default()).expect("200");
    assert_eq!(m.status(), Some(200));
    let tag = m
        .to()
        .expect("to")
        .expect("ok")
        .tag()
        .map(|t| String::from_utf8_lossy(t).into_owned());
    let answer = Sdp::parse(m.body).expect("sdp");
    let media = SocketAddr::new(
        answer.connection.expect("c="),
        answer.audio().expect("audio").port,
    );
    sip.send_to(
        &request("ACK", "path1", 1, tag.as_deref(), me, gw.sip, None),
        gw.sip,
    )
    .expect("ack");

    assert_eq!(
        echoes(&first, media, 1, 20),
        20,
        "echo to the signalled address"
    );
    // Another port on the same host, after the latch: dropped, counted.
    intruder
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    assert_eq!(echoes(&intruder, media, 21, 5), 0);
    assert!(
        gw.wait_metric(
            "tollgate_rtp_dropped_total{reason=\"wrong_source\"}",
            5,
            |v| v >= 5.0
        ) >= 5.0
    );

    // re-INVITE: the carrier's media moves to the second socket.
    let port2 = second.local_addr().expect("addr").port();
    let ok = transact(
        &sip,
        gw.sip,
        &request(
            "INVITE",
            "path1",
            2,
            tag.as_deref(),
            me,
            gw.sip,
            Some(&offer(port2, 2)),
        ),
    );
    assert!(
        ok.starts_with(b"SIP/2.0 200"),
        "{}",
        String::from_utf8_lossy(&ok)
    );
    sip.send_to(
        &request("ACK", "path1", 2, tag.as_deref(), me, gw.sip, None),
        gw.sip,
    )
    .expect("ack");
    assert_eq!(
        echoes(&second, media, 30, 20),
        20,
        "echo follows the new address"
    );
    first
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    assert_eq!(
        echoes(&first, media, 60, 3),
        0,
        "the old address is no longer accepted"
    );

    // RTCP: the gateway's report arrives on the new RTCP port (every 5 s).
    let mut buf = [0u8; 1500];
    let (n, _) = second_rtcp
        .recv_from(&mut buf)
        .expect("an RTCP report within 8 s");
    let first_packet = tollgate::media::rtcp::Compound::parse(&buf[..n])
        .expect("compound")
        .next()
        .expect("one packet")
        .expect("valid");
    match first_packet {
        tollgate::media::rtcp::RtcpPacket::SenderReport { reports, .. } => {
            let block = reports
                .into_iter()
                .next()
                .expect("a report block on what it received");
            assert_eq!(block.ssrc, 0x5eed_0001);
        }
        other => panic!("expected an SR, got {other:?}"),
    }
    // A flood from the latched address itself: past the burst (250),
    // packets are capped before any work and counted; the echo returns
    // at most the burst and what the cap refilled meanwhile.
    for seq in 0..600u16 {
        second.send_to(&rtp(1000 + seq), media).expect("send");
        std::thread::sleep(Duration::from_micros(100));
    }
    let capped = gw.wait_metric(
        "tollgate_rtp_dropped_total{reason=\"rate_limit\"}",
        5,
        |v| v >= 300.0,
    );
    assert!((300.0..=350.0).contains(&capped), "{capped} capped of 600");

    let bye = transact(
        &sip,
        gw.sip,
        &request("BYE", "path1", 3, tag.as_deref(), me, gw.sip, None),
    );
    assert!(bye.starts_with(b"SIP/2.0 200"));
}

/// The gateway's 200 OK on `sip`, seen `copies` times (it resends until
/// an ACK; provisionals are skipped): its To tag and media address.
fn ok_seen(sip: &UdpSocket, copies: usize) -> (String, SocketAddr) {
    let mut seen = 0;
    loop {
        let m = recv_sip(sip);
        if !m.starts_with(b"SIP/2.0 200") {
            continue;
        }
        seen += 1;
        if seen < copies {
            continue;
        }
        return tag_and_media(&m);
    }
}

/// The To tag and the media address of the gateway's 200 OK.
fn tag_and_media(ok: &[u8]) -> (String, SocketAddr) {
    let (m, _) = Message::parse(ok, Framing::Datagram, &Limits::default()).expect("200");
    let tag = m
        .to()
        .expect("to")
        .expect("ok")
        .tag()
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .expect("our tag");
    let answer = Sdp::parse(m.body).expect("sdp");
    let media = SocketAddr::new(
        answer.connection.expect("c="),
        answer.audio().expect("audio").port,
    );
    (tag, media)
}

/// Packets waiting on `s` now, drained.
fn waiting(s: &UdpSocket) -> usize {
    s.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while s.recv_from(&mut buf).is_ok() {
        n += 1;
    }
    s.set_nonblocking(false).expect("blocking");
    n
}

/// A PCMU offer with media at `ip`:`port`.
fn offer_at(port: u16, ip: &str) -> String {
    format!(
        "v=0\r\no=x 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

#[test]
fn a_forged_invite_reflects_nothing_until_media_or_its_ack_arrives() {
    // T1 = 200 ms: the 200 OK is resent at 0.2, 0.6 and 1.4 s, and the
    // unacknowledged calls last 64 T1 = 12.8 s.
    let gw = Gateway::start_with("reflect", 18200, 37000, 200, "");
    // The victim's address in each INVITE: a socket of the test's, which
    // must hear nothing. Never acknowledged, as a spoofer cannot.
    let invite = |number: &str, call: &str| {
        let (sip, victim) = (socket(), socket());
        // "ringing" answers after 5 s.
        sip.set_read_timeout(Some(Duration::from_secs(8)))
            .expect("timeout");
        let me = sip.local_addr().expect("addr");
        let port = victim.local_addr().expect("addr").port();
        sip.send_to(
            &request_to(
                number,
                "INVITE",
                call,
                1,
                None,
                me,
                gw.sip,
                Some(&offer_at(port, "127.0.0.1")),
            ),
            gw.sip,
        )
        .expect("send");
        (sip, victim)
    };
    for (number, answers) in [("tone", "tone"), ("echo", "echo"), ("ringing", "echo")] {
        let (sip, victim) = invite(number, &format!("reflect-{number}"));
        // Four copies of the 200 OK: at least 1.4 s of a tone's 50
        // packets a second, had it started.
        let (_, media) = ok_seen(&sip, 4);
        assert_eq!(
            waiting(&victim),
            0,
            "{number}: media reached the SDP address before any came from it"
        );
        // Media from the signalled address proves it: now it flows.
        victim.send_to(&rtp(1), media).expect("send");
        let mut buf = [0u8; 2048];
        let (n, _) = victim
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("{number}: no {answers} after our media: {e}"));
        assert_eq!(n, 172, "{number}");
        if answers == "echo" {
            assert_eq!(buf[12..172], rtp(1)[12..], "{number}: the echo");
        }
    }
    assert!(gw.metric("tollgate_rtp_unproven_peer_total") >= 20.0);

    // The ACK proves the address too, but only with our To tag.
    let (sip, victim) = invite("tone", "reflect-ack");
    let me = sip.local_addr().expect("addr");
    let (tag, _) = ok_seen(&sip, 1);
    sip.send_to(
        &request_to(
            "tone",
            "ACK",
            "reflect-ack",
            1,
            Some("forged"),
            me,
            gw.sip,
            None,
        ),
        gw.sip,
    )
    .expect("ack");
    let _ = ok_seen(&sip, 2); // still resent: the forged ACK did not count
    assert_eq!(waiting(&victim), 0, "a forged ACK started the tone");
    sip.send_to(
        &request_to(
            "tone",
            "ACK",
            "reflect-ack",
            1,
            Some(&tag),
            me,
            gw.sip,
            None,
        ),
        gw.sip,
    )
    .expect("ack");
    let mut buf = [0u8; 2048];
    let (n, _) = victim
        .recv_from(&mut buf)
        .expect("the tone after the ACK with our tag");
    assert_eq!(n, 172);

    // Media addresses the loopback trunk does not allow: 488, counted.
    for (ip, scope) in [
        ("10.1.2.3", "private"),
        ("224.0.0.7", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("169.254.9.9", "link_local"),
    ] {
        let sip = socket();
        let me = sip.local_addr().expect("addr");
        let call = format!("scope-{scope}");
        let r = transact(
            &sip,
            gw.sip,
            &request_to(
                "echo",
                "INVITE",
                &call,
                1,
                None,
                me,
                gw.sip,
                Some(&offer_at(40000, ip)),
            ),
        );
        assert!(
            r.starts_with(b"SIP/2.0 488"),
            "{ip}: {}",
            String::from_utf8_lossy(&r)
        );
        assert_eq!(
            gw.metric(&format!(
                "tollgate_sdp_address_refused_total{{scope=\"{scope}\"}}"
            )),
            1.0
        );
    }
}

/// Reads SIP messages on `sip` until a BYE (bounded by the socket's
/// timeout), answers it 200 and returns it.
fn bye_from_gateway(sip: &UdpSocket, gw: SocketAddr) -> String {
    loop {
        let m = recv_sip(sip);
        if !m.starts_with(b"BYE ") {
            continue;
        }
        let text = String::from_utf8_lossy(&m).into_owned();
        let (msg, _) = Message::parse(&m, Framing::Datagram, &Limits::default()).expect("BYE");
        let ok = tollgate::sip::build::response(&msg, 200, "OK", None, &[], None).expect("200");
        sip.send_to(&ok, gw).expect("send");
        return text;
    }
}

#[test]
fn calls_end_on_silence_and_at_their_limit_and_a_trunk_has_only_its_slots() {
    let (base, rtp_lo) = (18300u16, 35000u16);
    let toml = format!(
        r#"
[sip]
udp = ["127.0.0.1:{base}"]
tcp = []
t1_ms = 100
[media]
rtp_ports = "{rtp_lo}-{rtp_hi}"
rtp_timeout_s = 1
max_call_s = 3
[admin]
listen = "127.0.0.1:{admin}"
[agents]
listen = "127.0.0.1:{agents}"
[[trunk]]
name = "loopback"
peers = ["127.0.0.0/8"]
srtp = "off"
keepalive_s = 0
max_calls = 2
[[route]]
number = "echo"
target = "echo"
[[route]]
number = "slow"
target = "echo"
ring_ms = 2000
"#,
        rtp_hi = rtp_lo + 999,
        admin = base + 1,
        agents = base + 2,
    );
    let gw = Gateway::start_toml("media-limits", base, base + 1, &toml);
    let call =
        |number: &str, name: &str, media_port: u16| -> (UdpSocket, Option<(String, SocketAddr)>) {
            let sip = socket();
            sip.set_read_timeout(Some(Duration::from_secs(6)))
                .expect("timeout");
            let me = sip.local_addr().expect("addr");
            let r = transact(
                &sip,
                gw.sip,
                &request_to(
                    number,
                    "INVITE",
                    name,
                    1,
                    None,
                    me,
                    gw.sip,
                    Some(&offer(media_port, 1)),
                ),
            );
            if !r.starts_with(b"SIP/2.0 200") {
                assert!(
                    r.starts_with(b"SIP/2.0 503"),
                    "{}",
                    String::from_utf8_lossy(&r)
                );
                return (sip, None);
            }
            let (tag, media) = tag_and_media(&r);
            sip.send_to(
                &request_to(number, "ACK", name, 1, Some(&tag), me, gw.sip, None),
                gw.sip,
            )
            .expect("ack");
            (sip, Some((tag, media)))
        };
    // The trunk's two slots, then a 503 for the third call.
    let (a_media, b_media) = (socket(), socket());
    let (a, first) = call("echo", "slot-a", a_media.local_addr().expect("addr").port());
    let (b, second) = call("echo", "slot-b", b_media.local_addr().expect("addr").port());
    assert!(first.is_some() && second.is_some(), "two slots");
    let (_, third) = call("echo", "slot-c", 40000);
    assert!(third.is_none(), "a third call on a trunk of max_calls = 2");
    assert_eq!(gw.metric("tollgate_calls_over_trunk_limit_total"), 1.0);

    // Neither caller sends media: each call ends on 1 s of silence, with
    // a BYE to the caller, and frees its slot.
    let bye = bye_from_gateway(&a, gw.sip);
    assert!(bye.contains("Call-ID: slot-a"), "{bye}");
    let bye = bye_from_gateway(&b, gw.sip);
    assert!(bye.contains("Call-ID: slot-b"), "{bye}");
    gw.expect_metric("tollgate_calls_active", 5, 0.0);

    // A call whose media flows still ends at max_call_s (3 s).
    let media_sock = socket();
    media_sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let (sip, live) = call(
        "echo",
        "slot-d",
        media_sock.local_addr().expect("addr").port(),
    );
    let (_, media) = live.expect("a slot again once the silent calls ended");
    sip.set_nonblocking(true).expect("nonblocking");
    let mut echoed = 0;
    let mut buf = [0u8; 2048];
    let mut ended = None;
    for seq in 0..100u16 {
        media_sock.send_to(&rtp(seq), media).expect("send");
        if media_sock.recv_from(&mut buf).is_ok() {
            echoed += 1;
        }
        if let Ok((n, _)) = sip.recv_from(&mut buf) {
            if buf.starts_with(b"BYE ") {
                ended = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let bye = ended.expect("a BYE at max_call_s");
    assert!(bye.contains("Call-ID: slot-d"), "{bye}");
    // Media flowed past the 1 s silence limit: the limit, not silence,
    // ended it.
    assert!(echoed >= 20, "only {echoed} echoes before the BYE");
    assert!(gw.log().contains("the call's time is up"), "{}", gw.log());

    // A caller sends no media while it rings (2 s, twice the silence
    // limit): the call is answered, then ends on its silence.
    gw.expect_metric("tollgate_calls_active", 5, 0.0);
    let (slow, answered) = call("slow", "slow", 40000);
    assert!(answered.is_some(), "the ringing call was answered");
    let bye = bye_from_gateway(&slow, gw.sip);
    assert!(bye.contains("Call-ID: slow"), "{bye}");
}

/// On a trunk open to anyone (untrusted), an offer may name only the
/// address its SIP came from (restricted latching), so it cannot name a
/// victim and forge one packet from there. (A trusted carrier's media
/// gateways may differ from its signalling; its ACK counts, as the test
/// above shows.)
#[test]
fn an_untrusted_peer_may_only_name_its_own_media_address() {
    let toml = common::gateway::config(18900, 28000, 200, "").replacen(
        "name = \"loopback\"\n",
        "name = \"loopback\"\ntrusted = false\n",
        1,
    );
    let gw = Gateway::start_toml("ack-scope", 18900, 18901, &toml);
    let mut buf = [0u8; 2048];
    let offer = |victim: &UdpSocket, id: &str| {
        let sip = socket();
        let me = sip.local_addr().expect("addr");
        let at = victim.local_addr().expect("addr");
        let invite = request_to(
            "tone",
            "INVITE",
            id,
            1,
            None,
            me,
            gw.sip,
            Some(&offer_at(at.port(), &at.ip().to_string())),
        );
        (sip, me, invite)
    };
    let victim = |ip: &str| {
        let v = UdpSocket::bind((ip, 0)).expect("bind");
        v.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        v
    };
    // The SDP names 127.0.0.2, the SIP came from 127.0.0.1: refused
    // before any port is taken, so a packet forged from 127.0.0.2 has
    // nothing to start.
    let other = victim("127.0.0.2");
    let (sip, _, invite) = offer(&other, "ack-other");
    let r = transact(&sip, gw.sip, &invite);
    assert!(
        r.starts_with(b"SIP/2.0 488"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    assert_eq!(
        gw.metric("tollgate_sdp_address_refused_total{scope=\"not_signalling_source\"}"),
        1.0
    );
    assert_eq!(gw.metric("tollgate_calls_active"), 0.0);
    // The SDP names the address the SIP came from: the ACK proves it.
    let own = victim("127.0.0.1");
    let (sip, me, invite) = offer(&own, "ack-own");
    sip.send_to(&invite, gw.sip).expect("send");
    let (tag, _) = ok_seen(&sip, 1);
    sip.send_to(
        &request_to("tone", "ACK", "ack-own", 1, Some(&tag), me, gw.sip, None),
        gw.sip,
    )
    .expect("ack");
    assert!(own.recv_from(&mut buf).is_ok(), "the tone after the ACK");
}

/// A carrier's edge proxy record-routes (as Kamailio and OpenSIPS do): the
/// 200 OK carries its Record-Route in order, and the gateway's own BYE in
/// that dialog carries the route set as Route headers (RFC 3261 12.1.1,
/// 12.2.1.1), so the proxy stays on the path both ways.
#[test]
fn a_record_routed_dialog_keeps_its_route_set_both_ways() {
    let gw = Gateway::start_with("record-route", 19100, 26000, 200, "");
    let sip = socket();
    let me = sip.local_addr().expect("addr");
    let media = socket();
    let port = media.local_addr().expect("addr").port();
    let routes = [
        format!("<sip:{me};lr;ftag=x>"),
        "<sip:192.0.2.10;lr>".to_string(),
    ];
    let invite = String::from_utf8(request_to(
        "short",
        "INVITE",
        "rr-call",
        1,
        None,
        me,
        gw.sip,
        Some(&offer_at(port, "127.0.0.1")),
    ))
    .expect("text")
    .replacen(
        "\r\nFrom:",
        &format!(
            "\r\nRecord-Route: {}\r\nRecord-Route: {}\r\nFrom:",
            routes[0], routes[1]
        ),
        1,
    );
    sip.send_to(invite.as_bytes(), gw.sip).expect("send");
    let ok = loop {
        let m = recv_sip(&sip);
        if m.starts_with(b"SIP/2.0 200") {
            break m;
        }
    };
    let route_values = |m: &[u8], name: HeaderName| -> Vec<String> {
        let (msg, _) = Message::parse(m, Framing::Datagram, &Limits::default()).expect("parses");
        msg.values(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    };
    assert_eq!(route_values(&ok, HeaderName::RecordRoute), routes);
    let (tag, _) = tag_and_media(&ok);
    sip.send_to(
        &request_to("short", "ACK", "rr-call", 1, Some(&tag), me, gw.sip, None),
        gw.sip,
    )
    .expect("ack");
    // "short" hangs up after 700 ms: our BYE follows the route set.
    let bye = bye_from_gateway(&sip, gw.sip);
    assert_eq!(
        route_values(bye.as_bytes(), HeaderName::Route),
        routes,
        "{bye}"
    );
}
