//! `tollgate demo`: a gateway on loopback with a built-in carrier and
//! agents, a few calls each way, and what happened printed: who called
//! whom (numbers masked), the protection on each leg, packets, loss,
//! jitter and MOS.
//!
//! The gateway is the real one ([`crate::daemon::Gateway`], in this
//! process, on ephemeral loopback ports and a throw-away data directory).
//! The carrier is a minimal SIP user agent over UDP built from the
//! gateway's own SIP builders and parser; the agents are the headless
//! softphone.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::agent::client::Client;
use crate::agent::phone::{self, Report};
use crate::agent::store::Store;
use crate::agent::totp;
use crate::keys::Sealer;
use crate::media::g711;
use crate::sip::build::{self, RequestSpec};
use crate::sip::header::{Method, NameAddr};
use crate::sip::message::{Framing, HeaderName, Limits, Message};
use crate::sip::sdp::Sdp;

const CALLER: &str = "+447700900123";
const CALLED: &str = "+442079460000";

/// The demonstration's gateway: every listener on an ephemeral port, the
/// carrier's far end (for agents' dials) at `far`.
fn config(far: SocketAddr) -> String {
    format!(
        r#"[sip]
udp = ["127.0.0.1:0"]
tcp = []
[media]
rtp_ports = "26000-26999"
[admin]
listen = "127.0.0.1:0"
[agents]
listen = "127.0.0.1:0"
[[trunk]]
name = "carrier"
peers = ["127.0.0.0/8"]
address = "{far}"
codecs = ["PCMU"]
srtp = "off"
keepalive_s = 0
country_code = "44"
[[route]]
number = "*"
target = "queue:default"
[[dial]]
prefix = "+"
trunk = "carrier"
# A demonstration leaves the host's firewall alone.
[firewall]
nftables = "off"
"#
    )
}

/// The carrier's side of one call's media: a tone out every 20 ms, packets
/// in counted.
struct CarrierMedia {
    sock: UdpSocket,
    remote: Option<SocketAddr>,
    seq: u16,
    ts: u32,
    received: u64,
    sent: u64,
}

impl CarrierMedia {
    async fn bind() -> Result<Self, String> {
        Ok(Self {
            sock: UdpSocket::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?,
            remote: None,
            seq: 1,
            ts: 0,
            received: 0,
            sent: 0,
        })
    }

    fn port(&self) -> u16 {
        self.sock.local_addr().map_or(0, |a| a.port())
    }

    async fn tick(&mut self, tone: &[u8]) {
        let Some(to) = self.remote else { return };
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&self.ts.to_be_bytes());
        p.extend_from_slice(&0x00c0_ffeeu32.to_be_bytes());
        p.extend_from_slice(tone);
        if self.sock.send_to(&p, to).await.is_ok() {
            self.sent += 1;
        }
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
    }
}

fn sdp(port: u16) -> Vec<u8> {
    format!(
        "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n"
    )
    .into_bytes()
}

fn remote_media(body: &[u8]) -> Option<SocketAddr> {
    let s = Sdp::parse(body).ok()?;
    let a = s.audio()?;
    Some(SocketAddr::new(a.connection.or(s.connection)?, a.port))
}

/// Answers what needs answering on the carrier's signalling socket
/// (BYE, and INVITEs for the far end); returns the remote media of an
/// INVITE it answered, and whether a BYE ended the call.
async fn carrier_sip(
    sock: &UdpSocket,
    buf: &[u8],
    from: SocketAddr,
    media_port: u16,
) -> (Option<SocketAddr>, bool) {
    let limits = Limits::default();
    let Ok((m, _)) = Message::parse(buf, Framing::Datagram, &limits) else {
        return (None, false);
    };
    let method = match m.start {
        crate::sip::message::StartLine::Request { method, .. } => Some(method),
        crate::sip::message::StartLine::Response { .. } => None,
    };
    let reply = |code: u16, reason: &str, body: Option<&[u8]>| {
        let contact = format!(
            "<sip:carrier@127.0.0.1:{}>",
            sock.local_addr().map_or(0, |a| a.port())
        );
        build::response(
            &m,
            code,
            reason,
            Some(b"carrier1"),
            &[("Contact", contact.as_bytes())],
            body.map(|b| ("application/sdp", b)),
        )
    };
    match method {
        Some(Method::Invite) => {
            let remote = remote_media(m.body);
            let answer = sdp(media_port);
            for r in [reply(180, "Ringing", None), reply(200, "OK", Some(&answer))]
                .into_iter()
                .flatten()
            {
                let _ = sock.send_to(&r, from).await;
            }
            (remote, false)
        }
        Some(Method::Bye) => {
            if let Some(r) = reply(200, "OK", None) {
                let _ = sock.send_to(&r, from).await;
            }
            (None, true)
        }
        _ => (None, false),
    }
}

/// One call from the carrier to the gateway, until the gateway's BYE (the
/// agent hangs up). Returns (packets sent, packets received).
async fn carrier_call(gw: SocketAddr, n: u32) -> Result<(u64, u64), String> {
    let sig = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let me = sig.local_addr().map_err(|e| e.to_string())?;
    let mut media = CarrierMedia::bind().await?;
    let call_id = format!("demo-{n}-{}", build::token());
    let from = format!("<sip:{CALLER}@127.0.0.1>;tag=c{n}");
    let uri = format!("sip:{CALLED}@{gw}");
    let contact = format!("<sip:carrier@{me}>");
    let body = sdp(media.port());
    let invite = build::request(&RequestSpec {
        method: "INVITE",
        uri: uri.as_bytes(),
        via: me,
        transport: "UDP",
        branch: build::branch().as_bytes(),
        from: from.as_bytes(),
        to: format!("<{uri}>").as_bytes(),
        call_id: call_id.as_bytes(),
        cseq: 1,
        extra: &[("Contact", contact.as_bytes())],
        body: Some(("application/sdp", &body)),
    });
    sig.send_to(&invite, gw).await.map_err(|e| e.to_string())?;
    let tone = crate::calls::tone::tone(160, g711::linear_to_ulaw);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let (mut sbuf, mut mbuf) = (vec![0u8; 4096], vec![0u8; 2048]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        tokio::select! {
            r = sig.recv_from(&mut sbuf) => {
                let Ok((len, from_addr)) = r else { continue };
                let Ok((m, _)) = Message::parse(&sbuf[..len], Framing::Datagram, &Limits::default()) else { continue };
                if m.status().is_some_and(|c| (200..300).contains(&c)) && media.remote.is_none() {
                    media.remote = remote_media(m.body);
                    let to = m.header(HeaderName::To).map(|h| h.value.to_vec()).unwrap_or_default();
                    let target = m.values(HeaderName::Contact).next()
                        .and_then(|c| NameAddr::parse(c).ok()).map(|c| c.uri_bytes.to_vec())
                        .unwrap_or_else(|| uri.clone().into_bytes());
                    let ack = build::request(&RequestSpec {
                        method: "ACK", uri: &target, via: me, transport: "UDP",
                        branch: build::branch().as_bytes(), from: from.as_bytes(), to: &to,
                        call_id: call_id.as_bytes(), cseq: 1, extra: &[], body: None,
                    });
                    let _ = sig.send_to(&ack, from_addr).await;
                } else if m.status().is_some_and(|c| c >= 300) {
                    return Err(format!("the gateway refused the call: {:?}", m.status()));
                } else if m.status().is_none() {
                    let (_, bye) = carrier_sip(&sig, &sbuf[..len], from_addr, media.port()).await;
                    if bye {
                        return Ok((media.sent, media.received));
                    }
                }
            }
            r = media.sock.recv_from(&mut mbuf) => {
                if r.is_ok() { media.received += 1; }
            }
            _ = tick.tick() => media.tick(&tone).await,
            () = tokio::time::sleep_until(deadline) => return Err("the call did not end within 30 s".into()),
        }
    }
}

/// The far end for the agents' calls: answers each INVITE, plays a tone,
/// answers BYE on `sig`; stops after `calls` BYEs. Returns per call
/// (sent, received).
async fn far_end(sig: UdpSocket, calls: u32) -> Result<Vec<(u64, u64)>, String> {
    let tone = crate::calls::tone::tone(160, g711::linear_to_ulaw);
    let mut out = Vec::new();
    let mut media = CarrierMedia::bind().await?;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let (mut sbuf, mut mbuf) = (vec![0u8; 4096], vec![0u8; 2048]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30 * u64::from(calls.max(1)));
    while (out.len() as u32) < calls {
        tokio::select! {
            r = sig.recv_from(&mut sbuf) => {
                let Ok((len, from)) = r else { continue };
                let (remote, bye) = carrier_sip(&sig, &sbuf[..len], from, media.port()).await;
                if remote.is_some() {
                    media.remote = remote;
                }
                if bye {
                    out.push((media.sent, media.received));
                    media = CarrierMedia::bind().await?;
                }
            }
            r = media.sock.recv_from(&mut mbuf) => {
                if r.is_ok() { media.received += 1; }
            }
            _ = tick.tick() => media.tick(&tone).await,
            () = tokio::time::sleep_until(deadline) => return Err("the far end waited too long".into()),
        }
    }
    Ok(out)
}

async fn agent(
    dir: &Path,
    quic: SocketAddr,
    sealer: &Sealer,
    name: &str,
) -> Result<Client, String> {
    let store = Store::new(&dir.join("data"));
    let e = store
        .enroll(sealer, name, None, &quic.to_string())
        .map_err(|e| e.to_string())?;
    let bundle: crate::agent::store::Bundle =
        toml::from_str(&e.bundle).map_err(|e| e.to_string())?;
    let secret = totp::Secret::parse(&e.otp_uri).ok_or("TOTP secret")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Client::connect(&bundle, &totp::code_at(&secret, now))
        .await
        .map_err(|e| e.to_string())
}

fn describe(r: &Report, carrier: (u64, u64)) -> String {
    format!(
        "  trunk leg: RTP (G.711 {}), carrier sent {} packets, received {}\n  \
agent leg: SRTP {} in QUIC datagrams (key fresh for this call), agent sent {} received {}, lost {}, jitter {:.1} ms, MOS {:.2}",
        r.codec, carrier.0, carrier.1, r.suite, r.sent, r.received, r.lost, r.jitter_ms, r.mos
    )
}

/// Runs the demo: `calls` calls each way of `seconds` each; each line of
/// what happened goes to `out` (the CLI prints them).
pub fn run(calls: u32, seconds: f64, out: impl FnMut(&str)) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("tollgate-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let ran = rt.block_on(calls_both_ways(
        &dir,
        calls,
        Duration::from_secs_f64(seconds),
        out,
    ));
    let _ = std::fs::remove_dir_all(&dir);
    ran
}

/// Starts the gateway in `dir`, places the calls, stops the gateway.
async fn calls_both_ways(
    dir: &Path,
    calls: u32,
    duration: Duration,
    mut out: impl FnMut(&str),
) -> Result<(), String> {
    let mut key = [0u8; 32];
    crate::crypto::random(&mut key).map_err(|e| e.to_string())?;
    crate::keys::write_private(&dir.join("master.key"), &key, false).map_err(|e| e.to_string())?;
    let sealer = Sealer::from_key(&key);
    // The far end's socket first: the trunk's address names it.
    let far_sig = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let far_addr = far_sig.local_addr().map_err(|e| e.to_string())?;
    let config = crate::config::Config::from_toml(&config(far_addr)).map_err(|e| e.to_string())?;
    let gw = crate::daemon::Gateway::builder(config)
        .data_dir(dir.join("data"))
        .master_key(Some(dir.join("master.key")))
        .start()
        .await
        .map_err(|e| format!("the gateway did not start: {e}"))?;
    let (sip, admin, quic) = (gw.sip_udp[0], gw.admin, gw.agents);
    out(&format!(
        "gateway on loopback: SIP udp/{}, agents quic/{}, metrics http://{admin}/metrics",
        sip.port(),
        quic.port()
    ));
    let placed = async {
        // Inbound: the carrier calls; the agent answers and hangs up.
        let a = agent(dir, quic, &sealer, "agent-1").await?;
        let opts = phone::Options {
            auto_answer: true,
            duration: Some(duration),
            calls,
            ..phone::Options::default()
        };
        let agent_side = tokio::spawn(phone::run(a, opts, |_| {}));
        crate::admin::http::agents_available(admin, 1, Duration::from_secs(5)).await?;
        let mut carrier = Vec::new();
        for n in 0..calls {
            carrier.push(carrier_call(sip, n).await?);
        }
        let reports = agent_side
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        for (r, c) in reports.iter().zip(&carrier) {
            out(&format!(
                "inbound call: {} -> {} answered by agent-1 ({}); agent saw caller {}",
                crate::number::Mask::default().apply(CALLER),
                CALLED,
                r.reason,
                r.peer
            ));
            out(&describe(r, *c));
        }
        // Outbound: the agent dials; the far end answers.
        let far = tokio::spawn(far_end(far_sig, calls));
        let b = agent(dir, quic, &sealer, "agent-2").await?;
        let opts = phone::Options {
            dial: Some("02079460000".into()),
            duration: Some(duration),
            calls,
            ..phone::Options::default()
        };
        let reports = phone::run(b, opts, |_| {})
            .await
            .map_err(|e| e.to_string())?;
        let far = far.await.map_err(|e| e.to_string())??;
        for (r, c) in reports.iter().zip(&far) {
            out(&format!(
                "outbound call: agent-2 -> {} ({})",
                crate::number::Mask::default().apply(CALLED),
                r.reason
            ));
            out(&describe(r, *c));
        }
        Ok::<(), String>(())
    }
    .await;
    gw.shutdown().await;
    placed
}
