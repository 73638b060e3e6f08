//! TLS trunks: the gateway dials the carrier over TLS, verifies its
//! certificate against the configured CA, and keeps the trunk alive with
//! OPTIONS over that connection; a carrier whose certificate the CA did
//! not sign is refused at the handshake.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::gateway::Gateway;
use tollgate::sip::message::{Framing, Limits, Message};

/// A carrier's TLS SIP endpoint that answers OPTIONS with 200 (at most
/// `max` requests, then it stops).
fn carrier(listener: TcpListener, cert: &rcgen::CertifiedKey, seen: Arc<AtomicUsize>, max: usize) {
    let certs = vec![cert.cert.der().clone()];
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).expect("key");
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config"),
    );
    std::thread::spawn(move || {
        let Ok((sock, _)) = listener.accept() else {
            return;
        };
        sock.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let conn = rustls::ServerConnection::new(config).expect("conn");
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while seen.load(Ordering::SeqCst) < max {
            let n = match tls.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            while let Ok((m, used)) = Message::parse(&buf, Framing::Stream, &Limits::default()) {
                let via = m.top_via().expect("via").expect("valid");
                assert_eq!(via.transport, b"TLS", "the gateway says TLS in its Via");
                let ok = tollgate::sip::build::response(&m, 200, "OK", Some(b"c1"), &[], None)
                    .expect("response");
                tls.write_all(&ok).expect("write");
                seen.fetch_add(1, Ordering::SeqCst);
                buf.drain(..used);
            }
        }
    });
}

#[test]
fn tls_trunk_keepalives_with_certificate_checks() {
    let dir = Gateway::dir_for("trunktls");
    let good = rcgen::generate_simple_self_signed(vec!["carrier.example".into()]).expect("cert");
    let other = rcgen::generate_simple_self_signed(vec!["carrier.example".into()]).expect("cert");
    std::fs::write(dir.join("carrier-ca.pem"), good.cert.pem()).expect("write");
    std::fs::write(dir.join("wrong-ca.pem"), other.cert.pem()).expect("write");
    let (seen_good, seen_bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    carrier(
        TcpListener::bind("127.0.0.1:16130").expect("bind"),
        &good,
        seen_good.clone(),
        3,
    );
    carrier(
        TcpListener::bind("127.0.0.1:16131").expect("bind"),
        &good,
        seen_bad.clone(),
        3,
    );
    let trunks = format!(
        r#"
[[trunk]]
name = "carrier"
peers = ["192.0.2.0/24"]
address = "127.0.0.1:16130"
transport = "tls"
tls_ca = "{0}/carrier-ca.pem"
tls_server_name = "carrier.example"
keepalive_s = 1

[[trunk]]
name = "impostor"
peers = ["198.51.100.0/24"]
address = "127.0.0.1:16131"
transport = "tls"
tls_ca = "{0}/wrong-ca.pem"
tls_server_name = "carrier.example"
keepalive_s = 1
"#,
        dir.display()
    );
    let gw = Gateway::start_with("trunktls", 16100, 59000, 50, &trunks);
    let up = gw.wait_metric("tollgate_trunk_up{trunk=\"carrier\"}", 10, |v| v == 1.0);
    assert_eq!(up, 1.0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen_good.load(Ordering::SeqCst) < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        seen_good.load(Ordering::SeqCst) >= 2,
        "OPTIONS arrived over TLS"
    );
    // The impostor's certificate is not signed by the configured CA.
    let failed = gw.wait_metric(
        "tollgate_sip_transport_events_total{event=\"tls_handshake_failed\"}",
        10,
        |v| v >= 1.0,
    );
    assert!(failed >= 1.0);
    assert_eq!(
        seen_bad.load(Ordering::SeqCst),
        0,
        "nothing was sent to the impostor"
    );
    assert_eq!(
        gw.wait_metric("tollgate_trunk_up{trunk=\"impostor\"}", 15, |v| v == 0.0),
        0.0
    );
}
