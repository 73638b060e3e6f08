//! The media path of a call, from the carrier's side: strict source (RTP
//! from another address is dropped and counted), the per-leg packet-rate
//! cap (a flood from the carrier's own address), a re-INVITE that moves
//! the carrier's media to a new port, and RTCP reports from the gateway.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::gateway::Gateway;
use common::uac::{request, transact};
use tollgate::sip::message::{Framing, Limits, Message};
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
