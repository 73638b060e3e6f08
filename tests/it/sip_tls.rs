//! SIP over TLS (rustls) with the certificate and key from the config: a
//! TLS client completes a handshake, sends OPTIONS and gets 200 OK over the
//! encrypted connection; a client that never finishes its handshake is cut
//! off. A renewed certificate written over the files is served from the
//! next handshake after a reload (SIGHUP); a key that is not the
//! certificate's is refused and the running pair stays.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use crate::common::gateway::Gateway;

#[test]
fn options_over_tls() {
    let name = "tls";
    let dir = Gateway::dir_for(name);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("certificate");
    std::fs::write(dir.join("sip.crt"), cert.cert.pem()).expect("write");
    std::fs::write(dir.join("sip.key"), cert.key_pair.serialize_pem()).expect("write");
    let toml = format!(
        r#"
[sip]
udp = []
tcp = []
tls = ["127.0.0.1:15600"]
tls_certificate = "{0}/sip.crt"
tls_private_key = "{0}/sip.key"
partial_message_timeout_ms = 1000
[media]
rtp_ports = "53000-53999"
[admin]
listen = "127.0.0.1:15601"
[agents]
listen = "127.0.0.1:15602"
[[trunk]]
name = "loopback"
peers = ["127.0.0.0/8"]
"#,
        dir.display()
    );
    let gw = Gateway::start_toml(name, 15600, 15601, &toml);

    let mut tls = connect_trusting(gw.sip, cert.cert.der());
    tls.write_all(
        b"OPTIONS sip:echo@127.0.0.1:15600;transport=tls SIP/2.0\r\n\
Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKtls1\r\n\
Max-Forwards: 70\r\n\
From: <sips:carrier@127.0.0.1>;tag=t\r\n\
To: <sips:echo@127.0.0.1>\r\n\
Call-ID: tls-options-1\r\n\
CSeq: 1 OPTIONS\r\n\
Content-Length: 0\r\n\r\n",
    )
    .expect("write over TLS");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut buf).expect("read over TLS");
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("SIP/2.0 200 OK\r\n"), "{text}");
    assert!(text.contains("Call-ID: tls-options-1"), "{text}");
    assert_eq!(
        tls.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    // A client that connects and never speaks TLS is dropped after the
    // partial-message timeout (1 s here).
    let mut idle = TcpStream::connect(gw.sip).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let started = std::time::Instant::now();
    let n = idle
        .read(&mut buf)
        .expect("closed by the gateway, not our timeout");
    assert_eq!(n, 0);
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// A TLS client connection to `gw` (as "localhost") that trusts only
/// `root`; the handshake happens on first use.
fn connect_trusting(
    gw: std::net::SocketAddr,
    root: &rustls::pki_types::CertificateDer<'static>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    connect_trusting_from(gw, root, None)
}

/// As [`connect_trusting`], from the source address `from` when given.
fn connect_trusting_from(
    gw: std::net::SocketAddr,
    root: &rustls::pki_types::CertificateDer<'static>,
    from: Option<std::net::SocketAddr>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).expect("trust the test certificate");
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(client), "localhost".try_into().expect("name"))
            .expect("client");
    let sock = match from {
        None => TcpStream::connect(gw).expect("connect"),
        Some(addr) => {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            s.set_reuse_address(true).expect("reuse");
            s.bind(&addr.into()).expect("bind the source");
            s.connect(&gw.into()).expect("connect");
            s.into()
        }
    };
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    rustls::StreamOwned::new(conn, sock)
}

/// OPTIONS over a TLS connection that trusts only `root`: the answer's
/// status line, or the handshake's error.
fn options_trusting(
    gw: std::net::SocketAddr,
    root: &rustls::pki_types::CertificateDer<'static>,
    n: u32,
) -> Result<String, String> {
    options_trusting_from(gw, root, n, None)
}

/// As [`options_trusting`], from the source address `from` when given.
fn options_trusting_from(
    gw: std::net::SocketAddr,
    root: &rustls::pki_types::CertificateDer<'static>,
    n: u32,
    from: Option<std::net::SocketAddr>,
) -> Result<String, String> {
    let mut tls = connect_trusting_from(gw, root, from);
    tls.write_all(
        format!(
            "OPTIONS sip:echo@{gw};transport=tls SIP/2.0\r\n\
Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKrenew{n}\r\n\
Max-Forwards: 70\r\nFrom: <sips:carrier@127.0.0.1>;tag=t\r\n\
To: <sips:echo@127.0.0.1>\r\nCall-ID: tls-renew-{n}\r\nCSeq: 1 OPTIONS\r\n\
Content-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(2).any(|w| w == b"\r\n") {
        let n = tls.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    Ok(text.lines().next().unwrap_or_default().to_string())
}

#[test]
fn a_renewed_certificate_is_served_after_a_reload() {
    let name = "tls-renew";
    let dir = Gateway::dir_for(name);
    let make = || {
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("certificate")
    };
    let (old, new) = (make(), make());
    std::fs::write(dir.join("sip.crt"), old.cert.pem()).expect("write");
    std::fs::write(dir.join("sip.key"), old.key_pair.serialize_pem()).expect("write");
    let toml = format!(
        r#"
[sip]
udp = []
tcp = []
tls = ["127.0.0.1:15610"]
tls_certificate = "{0}/sip.crt"
tls_private_key = "{0}/sip.key"
[media]
rtp_ports = "54500-54999"
[admin]
listen = "127.0.0.1:15611"
[agents]
listen = "127.0.0.1:15612"
[[trunk]]
name = "loopback"
peers = ["127.0.0.0/8"]
"#,
        dir.display()
    );
    let gw = Gateway::start_toml(name, 15610, 15611, &toml);
    let hup = || {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &gw.pid().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    };
    assert_eq!(
        options_trusting(gw.sip, old.cert.der(), 1).as_deref(),
        Ok("SIP/2.0 200 OK")
    );
    assert!(options_trusting(gw.sip, new.cert.der(), 2).is_err());

    // The new certificate with the old key: refused, the old pair stays.
    std::fs::write(dir.join("sip.crt"), new.cert.pem()).expect("write");
    hup();
    gw.expect_metric(
        r#"tollgate_config_reloads_total{outcome="refused"}"#,
        10,
        1.0,
    );
    assert!(
        gw.log().contains("certificate and key do not match"),
        "{}",
        gw.log()
    );
    assert_eq!(
        options_trusting(gw.sip, old.cert.der(), 3).as_deref(),
        Ok("SIP/2.0 200 OK")
    );

    // With its key: served from the next handshake.
    std::fs::write(dir.join("sip.key"), new.key_pair.serialize_pem()).expect("write");
    hup();
    gw.expect_metric(
        r#"tollgate_config_reloads_total{outcome="applied"}"#,
        10,
        1.0,
    );
    assert!(gw.log().contains("SIP TLS certificate"), "{}", gw.log());
    assert_eq!(
        options_trusting(gw.sip, new.cert.der(), 4).as_deref(),
        Ok("SIP/2.0 200 OK")
    );
    assert!(options_trusting(gw.sip, old.cert.der(), 5).is_err());
}

/// A connection from outside every trunk's peers is closed at accept,
/// before any TLS handshake: no handshake work for strangers.
#[test]
fn only_trunk_peers_get_a_tls_handshake() {
    let name = "tls-peers";
    let dir = Gateway::dir_for(name);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("certificate");
    std::fs::write(dir.join("sip.crt"), cert.cert.pem()).expect("write");
    std::fs::write(dir.join("sip.key"), cert.key_pair.serialize_pem()).expect("write");
    let toml = format!(
        r#"
[sip]
udp = []
tcp = []
tls = ["127.0.0.1:18500"]
tls_certificate = "{0}/sip.crt"
tls_private_key = "{0}/sip.key"
[media]
rtp_ports = "33000-33999"
[admin]
listen = "127.0.0.1:18501"
[agents]
listen = "127.0.0.1:18502"
[[trunk]]
name = "carrier"
peers = ["127.0.0.2/32"]
"#,
        dir.display()
    );
    let gw = Gateway::start_toml(name, 18500, 18501, &toml);
    let stranger =
        options_trusting_from(gw.sip, cert.cert.der(), 1, Some(([127, 0, 0, 1], 0).into()));
    assert!(stranger.is_err(), "a stranger was answered: {stranger:?}");
    gw.expect_metric(
        "tollgate_sip_transport_events_total{event=\"connection_not_a_peer\"}",
        5,
        1.0,
    );
    assert_eq!(
        gw.metric("tollgate_sip_transport_events_total{event=\"tls_handshake_failed\"}"),
        0.0,
        "the stranger got as far as a handshake"
    );
    let carrier =
        options_trusting_from(gw.sip, cert.cert.der(), 2, Some(([127, 0, 0, 2], 0).into()));
    assert_eq!(carrier.as_deref(), Ok("SIP/2.0 200 OK"));
}

/// A plain TCP listener on 127.0.0.1:`port` (address reuse on, for a port
/// a closed connection just used), non-blocking.
fn plain_listener(port: u16) -> std::net::TcpListener {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.set_reuse_address(true).expect("reuse");
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .expect("bind");
    s.listen(8).expect("listen");
    let l: std::net::TcpListener = s.into();
    l.set_nonblocking(true).expect("nonblocking");
    l
}

/// A response for a TLS peer whose connection closed never goes out in
/// clear: no plain TCP connection to its old port or to its Via's, and
/// no TLS one either (it is no configured TLS trunk): dropped, counted.
#[test]
fn a_tls_peer_is_never_answered_over_plain_tcp() {
    let name = "tls-downgrade";
    let dir = Gateway::dir_for(name);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("certificate");
    std::fs::write(dir.join("sip.crt"), cert.cert.pem()).expect("write");
    std::fs::write(dir.join("sip.key"), cert.key_pair.serialize_pem()).expect("write");
    let toml = format!(
        r#"
[sip]
udp = []
tcp = ["127.0.0.1:18600"]
tls = ["127.0.0.1:18603"]
tls_certificate = "{0}/sip.crt"
tls_private_key = "{0}/sip.key"
t1_ms = 100
[media]
rtp_ports = "32000-32999"
[admin]
listen = "127.0.0.1:18601"
[agents]
listen = "127.0.0.1:18602"
[[trunk]]
name = "loopback"
peers = ["127.0.0.0/8"]
srtp = "off"
[[route]]
number = "ringing"
target = "echo"
ring_ms = 1000
"#,
        dir.display()
    );
    let gw = Gateway::start_toml(name, 18600, 18601, &toml);
    let tls_addr: std::net::SocketAddr = ([127, 0, 0, 1], 18603).into();
    // The Via sent-by is a port held open from the start, and the source
    // the one the kernel gives the client: a port found free and let go
    // could be taken by another test's connection before it is bound.
    let via_port = plain_listener(0);
    let via = via_port.local_addr().expect("via port").port();
    let mut tls =
        connect_trusting_from(tls_addr, cert.cert.der(), Some(([127, 0, 0, 1], 0).into()));
    let source = tls.sock.local_addr().expect("source").port();
    let sdp = "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    tls.write_all(
        format!(
            "INVITE sip:ringing@{tls_addr};transport=tls SIP/2.0\r\n\
Via: SIP/2.0/TLS 127.0.0.1:{via};branch=z9hG4bKdowngrade1\r\n\
Max-Forwards: 70\r\nFrom: <sips:carrier@127.0.0.1>;tag=d1\r\nTo: <sips:ringing@127.0.0.1>\r\n\
Call-ID: downgrade-1\r\nCSeq: 1 INVITE\r\nContact: <sips:carrier@127.0.0.1:{via}>\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
        .as_bytes(),
    )
    .expect("INVITE over TLS");
    // The 180 says the gateway has the call; then the carrier's side of
    // the connection goes away before the 200 OK.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("SIP/2.0 180") {
        let n = tls.read(&mut buf).expect("read over TLS");
        assert!(n > 0, "closed before ringing");
        got.extend_from_slice(&buf[..n]);
    }
    tls.conn.send_close_notify();
    let _ = tls.flush();
    drop(tls);
    let old_port = plain_listener(source);
    // The 200 OK (after 1 s of ringing) finds no connection: dropped.
    gw.expect_metric(
        "tollgate_sip_transport_events_total{event=\"outbound_dropped\"}",
        10,
        1.0,
    );
    for (what, l) in [("its old port", &old_port), ("its Via port", &via_port)] {
        assert!(
            matches!(l.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the gateway opened a plain TCP connection to {what}"
        );
    }
}
