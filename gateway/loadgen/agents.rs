//! The agents' side of a load run: each agent its own QUIC connection and
//! enrolled identity, logged in with its TOTP code, available, answering
//! the call it is offered, then sending its audio every 20 ms (at its own
//! phase) as SRTP in datagrams and checking every payload it receives.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};

use super::payload::{self, Receiver, Sender, Tally};
use super::Shared;
use crate::agent::client::Client;
use crate::agent::phone::CallKeys;
use crate::agent::protocol::{split_datagram, ClientMsg, ServerMsg};

/// What one agent saw.
#[derive(Debug, Default)]
pub struct AgentReport {
    pub answered: bool,
    /// Packets it sent inside the window.
    pub sent: u64,
    /// What it received from the trunk.
    pub received: Tally,
    /// Datagrams that did not open (SRTP) or parse (RTP).
    pub undecodable: u64,
    pub latency_us: Vec<u32>,
    /// Why it stopped, when not at the run's end.
    pub error: Option<String>,
}

struct Media {
    keys: CallKeys,
    flow: u64,
    call: u64,
    tx: Sender,
}

/// Runs agent `index` until its call ends (or the run gives up on it).
pub async fn run(mut client: Client, index: u32, shared: Arc<Shared>) -> AgentReport {
    let mut report = AgentReport::default();
    if let Err(e) = client.send(&ClientMsg::Available { available: true }).await {
        report.error = Some(e.to_string());
        return report;
    }
    let conn = client.conn.clone();
    let stream = payload::AGENT | index;
    let mut media: Option<Media> = None;
    let mut rx = Receiver::default();
    let mut buf = vec![0u8; 2048];
    let mut out = BytesMut::with_capacity(64 * 1024);
    // This agent's phase within the 20 ms, so agents do not send at once.
    let phase = Duration::from_micros(u64::from(index.wrapping_mul(7919) % 20_000));
    let mut tick =
        tokio::time::interval_at((Instant::now() + phase).into(), Duration::from_millis(20));
    let mut answered = false;
    let mut give_up: Option<tokio::time::Instant> = None;
    // One timer for the whole call (not one made per packet): it looks
    // for the run's hang-up and for a call that outlived it.
    let mut check = tokio::time::interval(Duration::from_millis(100));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            m = client.recv() => match m {
                Ok(ServerMsg::Offer { call, media: m, .. }) if media.is_none() => {
                    let keys = match CallKeys::new(&m) {
                        Ok(k) => k,
                        Err(e) => {
                            report.error = Some(format!("offer: {e}"));
                            break;
                        }
                    };
                    media = Some(Media { keys, flow: m.flow, call, tx: Sender::new(stream, m.pt) });
                    if let Err(e) = client.send(&ClientMsg::Answer { call }).await {
                        report.error = Some(e.to_string());
                        break;
                    }
                }
                Ok(ServerMsg::Offer { call, .. }) => {
                    let _ = client.send(&ClientMsg::Reject { call }).await;
                }
                Ok(ServerMsg::Answered { call }) if media.as_ref().is_some_and(|m| m.call == call) => {
                    answered = true;
                    report.answered = true;
                    shared.agents_answered.fetch_add(1, Ordering::Relaxed);
                }
                Ok(ServerMsg::Ended { call, .. }) if media.as_ref().is_some_and(|m| m.call == call) => break,
                Ok(_) => {}
                Err(e) => {
                    report.error = Some(e.to_string());
                    break;
                }
            },
            d = conn.read_datagram() => {
                let Ok(d) = d else {
                    report.error = Some("connection closed".into());
                    break;
                };
                let Some(m) = media.as_mut() else { continue };
                let Some((flow, packet)) = split_datagram(&d) else { continue };
                if flow != m.flow || packet.len() > buf.len() {
                    continue;
                }
                buf[..packet.len()].copy_from_slice(packet);
                let opened = m.keys.rx.open_rtp(&mut buf[..packet.len()]).ok();
                let parsed = opened.and_then(|n| crate::media::rtp::parse(&buf[..n]).ok());
                match parsed {
                    Some(p) if p.payload_type() == m.tx.pt => {
                        let now_ns = shared.ns(Instant::now());
                        rx.take(p.payload(), now_ns, shared.window(), &mut report.latency_us);
                    }
                    Some(_) => {}
                    None => report.undecodable += 1,
                }
            },
            _ = tick.tick(), if answered => {
                let Some(m) = media.as_mut() else { continue };
                let sent_ns = shared.ns(Instant::now());
                if out.capacity() < 512 {
                    out = BytesMut::with_capacity(64 * 1024);
                }
                let (prefix, plen) = m.keys.prefix;
                out.put_slice(&prefix[..plen]);
                let mut pkt = [0u8; payload::RTP_LEN];
                m.tx.next(&mut pkt, sent_ns);
                out.put_slice(&pkt);
                out.put_bytes(0, 16);
                let sealed = m.keys.tx.seal_rtp(&mut out[plen..], payload::RTP_LEN);
                let Ok(n) = sealed else {
                    out.clear();
                    continue;
                };
                out.truncate(plen + n);
                if conn.send_datagram(out.split().freeze()).is_ok() && shared.window().holds(sent_ns) {
                    report.sent += 1;
                }
            },
            _ = check.tick() => {
                if give_up.is_none() && shared.hangup.load(Ordering::Relaxed) {
                    give_up = Some(tokio::time::Instant::now() + Duration::from_secs(10));
                }
                if give_up.is_some_and(|t| t <= tokio::time::Instant::now()) {
                    report.error = Some("the call did not end within 10 s of the BYE".into());
                    break;
                }
            }
        }
    }
    report.received = rx.tally;
    client.close();
    report
}
