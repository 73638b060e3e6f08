//! Connection caps and message limits on a running gateway.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::gateway::Gateway;

fn options(n: u32) -> Vec<u8> {
    format!(
        "OPTIONS sip:echo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKcap{n}\r\n\
Max-Forwards: 70\r\nFrom: <sip:c@127.0.0.1>;tag=t{n}\r\nTo: <sip:echo@127.0.0.1>\r\n\
Call-ID: cap-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn answer(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn per_peer_connection_cap_and_message_size_limit() {
    let toml = r#"
[sip]
udp = []
tcp = ["127.0.0.1:15900"]
max_connections_per_peer = 2
max_message_size = 2048
[media]
rtp_ports = "56000-56999"
[admin]
listen = "127.0.0.1:15901"
[agents]
listen = "127.0.0.1:15902"
[[trunk]]
name = "loopback"
peers = ["127.0.0.0/8"]
"#;
    let gw = Gateway::start_toml("limits", 15900, 15901, toml);
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let s = TcpStream::connect(gw.sip).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            s
        })
        .collect();
    // Both admitted connections work.
    for (i, s) in held.iter_mut().enumerate() {
        s.write_all(&options(i as u32)).expect("write");
        assert!(answer(s).starts_with("SIP/2.0 200 OK"), "connection {i}");
    }
    // A third from the same address is closed at once.
    let mut third = TcpStream::connect(gw.sip).expect("the kernel accepts");
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut b = [0u8; 16];
    assert_eq!(third.read(&mut b).expect("closed by the gateway"), 0);
    assert_eq!(
        gw.wait_metric(
            "tollgate_sip_transport_events_total{event=\"connection_refused\"}",
            5,
            |v| v >= 1.0
        ),
        1.0
    );

    // A message over the size limit loses its connection, not the gateway.
    let mut big = options(9);
    let filler = format!("X-Filler: {}\r\n", "a".repeat(3000));
    let at = big.len() - 2;
    big.splice(at..at, filler.bytes());
    let s = &mut held[0];
    s.write_all(&big).expect("write");
    assert_eq!(answer(s), "", "closed without an answer");
    let s = &mut held[1];
    s.write_all(&options(10)).expect("write");
    assert!(
        answer(s).starts_with("SIP/2.0 200 OK"),
        "the other connection still works"
    );
}
