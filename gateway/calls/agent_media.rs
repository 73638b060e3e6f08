//! The socket side of a call between a trunk and an agent: one task per
//! call owns the trunk's RTP (and RTCP) socket and a [`Relay`], takes the
//! agent's datagrams from the shard's QUIC engine and sends the agent's
//! as QUIC datagrams.
//!
//! Costs per packet today: one receive, the relay step, one send (a
//! `send_to` on the trunk side; on the agent side a queue to the shard's
//! QUIC engine, [`crate::agent::engine`], which seals and sends every
//! call's datagrams of a turn together), all on the agent's media shard.
//! Datagram payloads are carved from one `BytesMut` block (no allocation
//! per packet until a block is used up, nothing zeroed beyond the
//! packet's size); counters are summed in the task and published
//! every half second.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::media::{ntp_now, recv_opt, Control, RtpCounters};
use super::relay::{Relay, RelayError, Relayed, AGENT_PEER};
use crate::agent::protocol::ServerMsg;
use crate::agent::server::Link;
use crate::telemetry::metrics::Metrics;

const RTCP_INTERVAL: Duration = Duration::from_secs(5);
/// Bytes carved per block for outgoing datagrams.
const BLOCK: usize = 64 * 1024;
/// What a relayed packet may grow by: the flow identifier (8), the AEAD
/// tag (16), with room to spare.
const OVERHEAD: usize = 64;

/// What an agent call's media task needs.
pub struct AgentMedia {
    pub rtp: UdpSocket,
    pub rtcp: Option<UdpSocket>,
    pub remote_rtcp: SocketAddr,
    pub relay: Relay,
    /// The agent's session (datagrams, and DTMF events).
    pub link: Link,
    /// The call as the agent knows it.
    pub call: u64,
    /// The agent's packets for this call (after the flow identifier).
    pub datagrams: mpsc::Receiver<Bytes>,
    /// Whether we may send to the trunk (its direction).
    pub send: bool,
    /// Trunk silence that ends the call, and where to say so.
    pub timeout: Option<super::media::Timeout>,
    /// Its port, given back when the task ends.
    pub lease: super::ports::Lease,
}

/// A media task ended the call itself: no valid RTP came for the
/// configured `media.rtp_timeout_s`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaEnded {
    /// An agent's call, as the agent knows it.
    Agent(u64),
    /// A test service's or a bridged call.
    Call(super::call::CallRef),
}

/// One control message from the core: hold, a DTMF digit for the trunk
/// (RFC 4733 events, sent without waiting: a full socket buffer loses
/// them as it would lose media), or a trunk leg's re-key, address or
/// direction.
fn steer(
    m: &mut AgentMedia,
    held: &mut bool,
    out: &mut [u8],
    counters: &mut RtpCounters,
    ctl: Control,
) {
    match ctl {
        Control::Hold(h) => *held = h,
        Control::Dtmf { digit, duration_ms } => {
            let mut events: [(usize, [u8; 64]); 4] = [(0, [0; 64]); 4];
            let mut k = 0;
            let built = m.relay.dtmf_to_trunk(digit, duration_ms, out, |p| {
                if let Some(slot) = events.get_mut(k) {
                    let n = p.len().min(64);
                    slot.1[..n].copy_from_slice(&p[..n]);
                    slot.0 = n;
                }
                k += 1;
            });
            if built.is_err() {
                tracing::debug!(
                    call = m.call,
                    "DTMF not sent: no telephone-event on the trunk leg"
                );
            }
            if let (true, true, Some(to)) = (built.is_ok(), m.send, m.relay.trunk.remote()) {
                for (n, p) in &events[..k.min(4)] {
                    if m.rtp.try_send_to(&p[..*n], to).is_ok() {
                        counters.sent(*n);
                    }
                }
            }
        }
        Control::Confirmed => m.relay.trunk.confirm(),
        // Started at the agent's answer: nothing to arm.
        Control::Answered => {}
        Control::Rekey(rx) => m.relay.trunk.rekey(*rx),
        Control::Update { remote, rtcp, send } => {
            m.relay.trunk.set_signalled(remote);
            m.remote_rtcp = rtcp;
            m.send = send;
        }
    }
}

/// Runs until `control` closes (the call ended) or the agent's
/// connection goes.
pub async fn run(
    mut m: AgentMedia,
    mut control: mpsc::Receiver<Control>,
    metrics: Arc<Metrics>,
    report: super::media::Reporter,
) {
    let conn = m.link.conn.clone();
    // Made once, not per turn of the loop.
    let closed = conn.closed();
    tokio::pin!(closed);
    let mut buf = vec![0u8; 2048];
    let mut rtcp_buf = vec![0u8; 1500];
    let mut pkt = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    let mut block = BytesMut::with_capacity(BLOCK);
    let mut rtcp_tick = tokio::time::interval(RTCP_INTERVAL);
    rtcp_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut counters = RtpCounters::new(metrics.clone(), report);
    let mut held = false;
    let mut last_trunk = Instant::now();
    let mut watchdog = tokio::time::interval(super::media::Timeout::CHECK);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut publish = RtpCounters::publish_tick();
    let congestion = metrics
        .agent_datagrams_dropped
        .with_label_values(&["congestion"]);
    loop {
        tokio::select! {
            _ = publish.tick() => counters.flush(),
            ctl = control.recv() => {
                let Some(ctl) = ctl else { break };
                steer(&mut m, &mut held, &mut out, &mut counters, ctl);
            },
            r = m.rtp.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                // What the core queued before this packet applies first
                // (see media::drain_control).
                let drained = super::media::drain_control(&mut control, |c| {
                    steer(&mut m, &mut held, &mut out, &mut counters, c);
                    true
                });
                if !drained {
                    break;
                }
                if m.rtcp.is_none() && crate::media::rtp::is_rtcp(&buf[..n]) {
                    counters.rtcp(&mut m.relay.trunk, from, &mut buf[..n]);
                    continue;
                }
                // Room for this packet re-originated: the flow identifier,
                // a plain RTP header, the payload and the AEAD tag (the
                // trunk's CSRCs and extensions are not carried over).
                let room = n + OVERHEAD;
                if block.capacity() < room {
                    block = BytesMut::with_capacity(BLOCK);
                }
                block.resize(room, 0);
                if held {
                    // Still checked and measured, not relayed.
                    match m.relay.trunk.recv_rtp(from, &mut buf[..n], Instant::now()) {
                        Ok(_) => {
                            last_trunk = Instant::now();
                            counters.received(n);
                        }
                        Err(d) => counters.dropped(d),
                    }
                    continue;
                }
                match m.relay.trunk_to_agent(from, &mut buf[..n], Instant::now(), &mut block) {
                    Ok(Relayed::Nothing) => {
                        last_trunk = Instant::now();
                        block.clear();
                        counters.received(n);
                    }
                    Ok(Relayed::Dtmf { digit, duration_ms }) => {
                        last_trunk = Instant::now();
                        block.clear();
                        counters.received(n);
                        m.link.send(ServerMsg::Dtmf { call: m.call, digit, duration_ms });
                    }
                    Ok(Relayed::Datagram(len)) => {
                        last_trunk = Instant::now();
                        counters.received(n);
                        block.truncate(len);
                        let d = block.split().freeze();
                        // The shard's engine takes it this turn (and counts
                        // what QUIC cannot carry).
                        match conn.send_datagram(d) {
                            Ok(()) => counters.sent(len),
                            Err(crate::agent::engine::SendError::Full) => congestion.inc(),
                            Err(crate::agent::engine::SendError::Closed) => {}
                        }
                    }
                    Err(RelayError::Dropped(d)) => {
                        block.clear();
                        counters.dropped(d);
                    }
                    Err(RelayError::Build(_)) => block.clear(),
                }
            },
            d = m.datagrams.recv() => {
                let Some(d) = d else { break };
                let n = d.len().min(pkt.len());
                pkt[..n].copy_from_slice(&d[..n]);
                if crate::media::rtp::is_rtcp(&pkt[..n]) {
                    counters.rtcp(&mut m.relay.agent, AGENT_PEER, &mut pkt[..n]);
                    continue;
                }
                match m.relay.agent_to_trunk(&mut pkt[..n], Instant::now(), &mut out) {
                    Ok(len) => {
                        counters.received(n);
                        match m.relay.trunk.remote() {
                            Some(to) if m.send && !held => {
                                if m.rtp.send_to(&out[..len], to).await.is_ok() {
                                    counters.sent(len);
                                }
                            }
                            None => counters.unproven(),
                            Some(_) => {}
                        }
                    }
                    Err(RelayError::Dropped(d)) => counters.dropped(d),
                    Err(RelayError::Build(_)) => {}
                }
            },
            r = recv_opt(m.rtcp.as_ref(), &mut rtcp_buf) => {
                if let Some((n, f)) = r {
                    counters.rtcp(&mut m.relay.trunk, f, &mut rtcp_buf[..n]);
                }
            },
            _ = rtcp_tick.tick() => {
                if let Some(rtp_to) = m.relay.trunk.remote() {
                    if let Ok(len) = m.relay.trunk.build_rtcp(&mut out, ntp_now(), b"tollgate") {
                        let (sock, to) = match &m.rtcp {
                            Some(s) => (s, m.remote_rtcp),
                            None => (&m.rtp, rtp_to),
                        };
                        let _ = sock.send_to(&out[..len], to).await;
                    }
                }
            },
            _ = &mut closed => break,
            _ = watchdog.tick(), if m.timeout.is_some() => {
                if m.timeout.as_ref().is_some_and(|t| t.expired(last_trunk)) {
                    break;
                }
            },
        }
    }
    counters.finish(&m.relay.trunk, "trunk");
    counters.finish(&m.relay.agent, "agent");
    counters.report();
}
