//! Agents' two factors against a real gateway process: a client
//! certificate from the gateway's CA at the QUIC handshake, then a TOTP
//! code. Wrong codes, missing and foreign certificates, revoked agents and
//! lockouts are each refused and counted, and the gateway stays up.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::agent::agent_cli;
use crate::common::gateway::{config, Gateway};
use tollgate::agent::client::{Client, ClientError, Identity, Options};
use tollgate::agent::protocol::{ClientMsg, ServerMsg};
use tollgate::agent::store::Bundle;
use tollgate::agent::totp::{code_at, Secret};

const BASE: u16 = 16300;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Enrols `name`: its bundle and TOTP secret.
fn enroll(gw: &Gateway, name: &str) -> (Bundle, Secret) {
    let e = common::agent::enroll(gw, name, None);
    (e.bundle, e.secret)
}

fn from(ip: [u8; 4]) -> Options {
    Options {
        bind: Some(SocketAddr::from((ip, 0))),
        ..Options::default()
    }
}

async fn login(b: &Bundle, code: &str, opts: Options) -> Result<Client, ClientError> {
    tokio::time::timeout(Duration::from_secs(15), Client::connect_with(b, code, opts))
        .await
        .expect("a login attempt ends within 15 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_factors_revocation_and_lockout() {
    let toml = config(BASE, 62000, 500, "").replace(
        "[agents]\n",
        "[agents]\nmax_failures = 3\nlockout_s = 120\n",
    );
    let mut gw = Gateway::start_toml("agent-auth", BASE, BASE + 1, &toml);
    let (alice, alice_otp) = enroll(&gw, "alice");
    let (bob, bob_otp) = enroll(&gw, "bob");
    assert_eq!(alice.gateway, format!("127.0.0.1:{}", BASE + 2));
    let failures =
        |reason: &str| format!("tollgate_agent_auth_failures_total{{reason=\"{reason}\"}}");

    // Both factors: welcomed, and the session answers.
    let now = unix_now();
    let mut a = login(&alice, &code_at(&alice_otp, now), from([127, 0, 0, 1]))
        .await
        .expect("alice logs in");
    assert_eq!(a.agent, "alice");
    a.send(&ClientMsg::Ping { id: 7 }).await.expect("send");
    assert_eq!(a.recv().await.expect("pong"), ServerMsg::Pong { id: 7 });
    gw.expect_metric("tollgate_agents_connected", 5, 1.0);

    // The same code a second time is refused (a TOTP code works once).
    let e = login(&alice, &code_at(&alice_otp, now), from([127, 0, 0, 9]))
        .await
        .err()
        .expect("reused code refused");
    assert!(e.to_string().contains("authentication failed"), "{e}");

    // No certificate, and a certificate from another CA.
    let mut none = from([127, 0, 0, 2]);
    none.identity = Identity::None;
    assert!(login(&alice, "000000", none).await.is_err());
    gw.expect_metric(&failures("no_certificate"), 5, 1.0);
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(vec!["alice".into()]).expect("params");
    p.is_ca = rcgen::IsCa::NoCa;
    let stranger = p.self_signed(&key).expect("cert");
    let mut other = from([127, 0, 0, 3]);
    other.identity = Identity::Other {
        cert: stranger.der().clone(),
        key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    };
    assert!(login(&alice, &code_at(&alice_otp, now), other)
        .await
        .is_err());
    gw.expect_metric(&failures("unknown_ca"), 5, 1.0);

    // Forged Initials from one office address (a spoofer never sees the
    // Retry): an Initial captured from a real client, replayed from 20
    // ports of 127.0.0.4. Each gets a Retry and no handshake state, so
    // none can count against the address or its agents.
    let initial = capture_initial(&alice).await;
    let retries = gw.metric("tollgate_agent_quic_retries_total");
    for _ in 0..20 {
        let s = std::net::UdpSocket::bind("127.0.0.4:0").expect("bind");
        s.send_to(&initial, ("127.0.0.1", BASE + 2)).expect("send");
    }
    gw.wait_metric("tollgate_agent_quic_retries_total", 5, |v| {
        v >= retries + 20.0
    });
    assert_eq!(gw.metric(&failures("handshake")), 0.0);

    // Three wrong codes lock bob out, and only bob.
    let wrong = format!(
        "{:06}",
        (code_at(&bob_otp, now).parse::<u32>().expect("digits") + 1) % 1_000_000
    );
    for _ in 0..3 {
        let e = login(&bob, &wrong, from([127, 0, 0, 4]))
            .await
            .err()
            .expect("refused");
        assert!(e.to_string().contains("authentication failed"), "{e}");
    }
    assert_eq!(gw.metric(&failures("bad_otp")), 4.0);
    // Bob with the right code, from elsewhere: locked out.
    let e = login(&bob, &code_at(&bob_otp, now), from([127, 0, 0, 5]))
        .await
        .err()
        .expect("bob is locked out");
    assert!(e.to_string().contains("locked out"), "{e}");
    // Alice from bob's address, after the forged Initials and bob's
    // failures there: she logs in, and keeps her session. No failed
    // login became an IDS ban.
    let mut a4 = login(&alice, &code_at(&alice_otp, now + 30), from([127, 0, 0, 4]))
        .await
        .expect("alice logs in from the address bob failed from");
    a4.send(&ClientMsg::Ping { id: 8 }).await.expect("send");
    assert_eq!(a4.recv().await.expect("pong"), ServerMsg::Pong { id: 8 });
    // (It replaced her first session: one session per agent.)
    a = a4;
    gw.expect_metric(&failures("locked_out"), 5, 1.0);
    gw.expect_metric("tollgate_agent_lockouts_total", 5, 1.0);
    assert_eq!(gw.metric("tollgate_ids_bans_active"), 0.0);
    // Carol logs in once, for the restart below.
    let (carol, carol_otp) = enroll(&gw, "carol");
    login(&carol, &code_at(&carol_otp, now), from([127, 0, 0, 7]))
        .await
        .expect("carol logs in");

    // Revoking alice ends her live session within a second.
    let (ok, _, err) = agent_cli(&gw, &["revoke", "alice"]);
    assert!(ok, "{err}");
    let revoked_at = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(5), a.recv())
        .await
        .expect("the session ends")
        .expect_err("closed");
    let took = revoked_at.elapsed();
    assert!(e.to_string().contains("revoked"), "{e}");
    assert!(took < Duration::from_millis(1500), "closed after {took:?}");
    // And her certificate is refused at the handshake.
    assert!(
        login(&alice, &code_at(&alice_otp, now + 30), from([127, 0, 0, 6]))
            .await
            .is_err()
    );
    gw.expect_metric(&failures("revoked"), 5, 1.0);
    gw.expect_metric("tollgate_agents_connected", 5, 0.0);

    // Nothing crashed: the gateway still serves.
    assert!(gw.get("/healthz").is_some_and(|r| r.contains("200")));
    let log = gw.log();
    assert!(
        !log.contains(&code_at(&alice_otp, now)),
        "a TOTP code in the log"
    );
    assert!(!log.contains("panicked"), "{log}");

    // The audit trail has the enrolments, the failed logins and the
    // revocation, and no code.
    let (ok, trail, err) =
        common::gateway::operator_cli(&gw.dir.join("data"), "audit", &["list", "--json"]);
    assert!(ok, "{err}");
    let has = |action: &str, target: &str| {
        trail.lines().any(|l| {
            l.contains(&format!("\"action\":\"{action}\""))
                && l.contains(&format!("\"target\":\"{target}\""))
        })
    };
    assert!(has("agent enrolled", "bob"), "{trail}");
    assert!(has("agent revoked", "alice"), "{trail}");
    assert!(has("agent login", "127.0.0.4"), "{trail}");
    assert!(has("agent locked out", "bob"), "{trail}");
    // Bob's wrong codes from 127.0.0.4 are one entry so far (the rest are
    // summed each minute), not one each.
    let from4 = trail
        .lines()
        .filter(|l| l.contains("\"target\":\"127.0.0.4\""))
        .count();
    assert_eq!(from4, 1, "{trail}");
    assert!(
        !trail.contains(&code_at(&alice_otp, now)),
        "a TOTP code in the audit trail"
    );

    // A restart forgets neither: bob is still locked out, and carol's
    // code, used once, is still refused.
    gw.keep_dir = true;
    gw.stop();
    drop(gw);
    let gw = Gateway::start_toml("agent-auth", BASE, BASE + 1, &toml);
    let e = login(&bob, &code_at(&bob_otp, now + 30), from([127, 0, 0, 5]))
        .await
        .err()
        .expect("bob is still locked out");
    assert!(e.to_string().contains("locked out"), "{e}");
    gw.expect_metric(&failures("locked_out"), 5, 1.0);
    let e = login(&carol, &code_at(&carol_otp, now), from([127, 0, 0, 7]))
        .await
        .err()
        .expect("carol's used code is refused");
    assert!(e.to_string().contains("authentication failed"), "{e}");
    login(&carol, &code_at(&carol_otp, now + 30), from([127, 0, 0, 7]))
        .await
        .expect("carol's next code works");
}

/// A client Initial as a real agent sends it, captured by pointing the
/// client at a socket of the test's own.
async fn capture_initial(b: &Bundle) -> Vec<u8> {
    let trap = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut to_trap: Bundle =
        serde_json::from_str(&serde_json::to_string(b).expect("json")).expect("bundle");
    to_trap.gateway = trap.local_addr().expect("addr").to_string();
    let client = tokio::spawn(async move {
        let _ = Client::connect_with(&to_trap, "000000", Options::default()).await;
    });
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), trap.recv_from(&mut buf))
        .await
        .expect("the client sends its Initial")
        .expect("recv");
    client.abort();
    buf.truncate(n);
    // A long header (bit 7) of type Initial (bits 5-4 zero), QUIC v1.
    assert_eq!(buf[0] & 0xb0, 0x80, "{:02x}", buf[0]);
    assert_eq!(&buf[1..5], &[0, 0, 0, 1]);
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_off_hours_or_from_a_new_network_is_flagged_not_refused() {
    let base = BASE + 10;
    let toml = format!(
        "{}\n[[profile]]\nname = \"weekly\"\nhours = \"09:00-17:00\"\ndays = [\"{}\"]\ntimezone = \"America/Sao_Paulo\"\n",
        config(base, 62600, 500, ""),
        common::not_today()
    );
    let gw = Gateway::start_toml("agent-anomalies", base, base + 1, &toml);
    let new_address = r#"tollgate_privacy_anomalies_total{kind="agent_new_address"}"#;
    let off_hours = r#"tollgate_privacy_anomalies_total{kind="agent_off_hours"}"#;
    let now = unix_now();

    // An agent's first login sets what is usual; the same network again
    // is usual.
    let (eve, eve_otp) = enroll(&gw, "eve");
    login(&eve, &code_at(&eve_otp, now), from([127, 0, 0, 1]))
        .await
        .expect("eve logs in");
    login(&eve, &code_at(&eve_otp, now + 30), from([127, 0, 0, 1]))
        .await
        .expect("eve logs in again");
    assert_eq!(gw.metric(new_address), 0.0);
    // Her bundle and a code used from elsewhere: let in, and flagged.
    let e = common::agent::enroll(&gw, "mallory-target", None);
    login(&e.bundle, &code_at(&e.secret, now), from([127, 0, 0, 1]))
        .await
        .expect("first login");
    let mut elsewhere = login(
        &e.bundle,
        &code_at(&e.secret, now + 30),
        from([127, 0, 0, 66]),
    )
    .await
    .expect("a login from a new network is not refused");
    elsewhere
        .send(&ClientMsg::Ping { id: 1 })
        .await
        .expect("send");
    assert_eq!(
        elsewhere.recv().await.expect("pong"),
        ServerMsg::Pong { id: 1 }
    );
    gw.expect_metric(new_address, 5, 1.0);

    // A profile whose day is not today: flagged, not refused.
    let night = common::agent::enroll(&gw, "nina", Some("weekly"));
    login(
        &night.bundle,
        &code_at(&night.secret, now),
        from([127, 0, 0, 1]),
    )
    .await
    .expect("an off-hours login is not refused");
    gw.expect_metric(off_hours, 5, 1.0);
    assert_eq!(gw.metric(new_address), 1.0);

    let (ok, audit, err) =
        common::gateway::operator_cli(&gw.dir.join("data"), "audit", &["list", "--json"]);
    assert!(ok, "{err}");
    let anomalies: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("\"action\":\"anomaly\""))
        .collect();
    assert_eq!(anomalies.len(), 2, "{audit}");
    assert!(anomalies.iter().any(|l| l.contains("agent mallory-target")
        && l.contains("agent_new_address: login from 127.0.0.66")
        && l.contains("\"outcome\":\"flagged\"")));
    assert!(anomalies.iter().any(|l| l.contains("agent nina")
        && l.contains(&format!(
            "agent_off_hours: login outside profile weekly's hours ({} 09:00-17:00 America/Sao_Paulo)",
            common::not_today()
        ))));
}
