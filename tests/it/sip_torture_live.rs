//! Every RFC 4475 / RFC 5118 torture message sent to a running gateway over
//! UDP and over TCP: the gateway answers or drops each, never falls over,
//! and a normal call succeeds afterwards.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use crate::common::gateway::{sipp, Gateway};

#[test]
fn torture_messages_over_udp_and_tcp_then_a_normal_call() {
    let mut gw = Gateway::start("torture", 15200, 47000);
    let dir = format!("{}/tests/vectors/sip_torture", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("vectors")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sip"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 61);

    // UDP: every message from one socket, then whatever comes back until
    // the gateway has been quiet for half a second.
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    udp.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    for f in &files {
        udp.send_to(&std::fs::read(f).expect("read"), gw.sip)
            .expect("send");
    }
    let mut answered_udp = 0;
    let mut buf = [0u8; 65_536];
    while let Ok((n, _)) = udp.recv_from(&mut buf) {
        assert!(
            buf[..n].starts_with(b"SIP/2.0 "),
            "only responses come back"
        );
        answered_udp += 1;
    }
    // TCP: one connection a message, sixteen at a time (under the
    // per-peer cap); each sends, half-closes and reads until the gateway
    // closes.
    let mut answered_tcp = 0;
    for chunk in files.chunks(16) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|f| {
                let msg = std::fs::read(f).expect("read");
                let addr = gw.sip;
                std::thread::spawn(move || {
                    let mut s = TcpStream::connect(addr).expect("connect");
                    s.set_read_timeout(Some(Duration::from_secs(3)))
                        .expect("timeout");
                    s.write_all(&msg).expect("write");
                    let _ = s.shutdown(std::net::Shutdown::Write);
                    let mut got = Vec::new();
                    let _ = s.read_to_end(&mut got);
                    got.starts_with(b"SIP/2.0 ")
                })
            })
            .collect();
        answered_tcp += handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .filter(|&answered| answered)
            .count();
    }
    eprintln!("answered: {answered_udp} of 61 over UDP, {answered_tcp} of 61 over TCP");
    assert!(gw.alive(), "the gateway survived: {}", gw.log());
    // Most requests earn a response (400, 404, 405, 416, 420, ...).
    assert!(answered_udp >= 30, "UDP answers: {answered_udp}");
    assert!(answered_tcp >= 20, "TCP answers: {answered_tcp}");
    assert!(gw.metric("tollgate_sip_parse_failures_total{reason=\"bad_start_line\"}") >= 1.0);

    let run = sipp(&gw, "uac_hold.xml", "echo", 15210, &["-m", "1"]);
    assert_eq!((run.successful, run.failed), (1, 0), "{}", run.output);
}

#[test]
fn a_slow_sender_cannot_hold_a_tcp_connection() {
    let gw = Gateway::start("slow", 15220, 48000);
    let mut s = TcpStream::connect(gw.sip).expect("connect");
    s.write_all(
        b"OPTIONS sip:echo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK1\r\n",
    )
    .expect("write");
    // The test config's partial-message timeout is 1 s; wait up to 5 s for
    // the gateway to close the connection.
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let started = std::time::Instant::now();
    let mut b = [0u8; 16];
    let n = s
        .read(&mut b)
        .expect("the gateway closes, not the read timeout");
    assert_eq!(n, 0, "closed without a reply");
    assert!(started.elapsed() < Duration::from_secs(4));
}
