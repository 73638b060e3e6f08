//! Agents' two factors against a real gateway process: a client
//! certificate from the gateway's CA at the QUIC handshake, then a TOTP
//! code. Wrong codes, missing and foreign certificates, revoked agents and
//! lockouts are each refused and counted, and the gateway stays up.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::agent::agent_cli;
use common::gateway::{config, Gateway};
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
    let gw = Gateway::start_toml("agent-auth", BASE, BASE + 1, &toml);
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

    // Three wrong codes lock bob out, and their source address too.
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
    // Alice from bob's address: that source is locked out.
    assert!(
        login(&alice, &code_at(&alice_otp, now + 30), from([127, 0, 0, 4]))
            .await
            .is_err()
    );
    gw.expect_metric(&failures("locked_out"), 5, 2.0);

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
    assert!(
        !trail.contains(&code_at(&alice_otp, now)),
        "a TOTP code in the audit trail"
    );
}
