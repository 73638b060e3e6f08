//! The media of a bridged call (B2BUA): two legs, each with its own socket,
//! SRTP context and statistics. What arrives on one leg is checked,
//! measured and re-originated on the other under the gateway's own SSRC,
//! sequence numbers and timestamps: media is terminated, never forwarded
//! blindly, so neither side learns the other's addresses or SSRCs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::media::{ntp_now, rand_u32, recv_opt, Control, RtpCounters};
use crate::media::leg::Leg;
use crate::telemetry::metrics::Metrics;

/// One leg of a bridge.
pub struct Side {
    pub rtp: UdpSocket,
    pub rtcp: Option<UdpSocket>,
    pub leg: Leg,
    pub remote_rtcp: SocketAddr,
    /// Whether we may send on this leg (its direction).
    pub send: bool,
    /// Its port, given back when the side is dropped.
    pub lease: super::ports::Lease,
}

const RTCP_INTERVAL: Duration = Duration::from_secs(5);

/// A change the signalling makes to one side; `false` once its sender is
/// gone (the call ended).
fn steer(side: &mut Side, ctl: Option<Control>) -> bool {
    match ctl {
        Some(Control::Confirmed) => side.leg.confirm(),
        Some(Control::Rekey(rx)) => side.leg.rekey(*rx),
        Some(Control::Update { remote, rtcp, send }) => {
            side.leg.set_signalled(remote);
            side.remote_rtcp = rtcp;
            side.send = send;
        }
        // Started at the answer: nothing to arm.
        Some(Control::Hold(_) | Control::Dtmf { .. } | Control::Answered) => {}
        None => return false,
    }
    true
}

/// Relays media between `a` (the caller's leg) and `b` (the far end's)
/// until `control` closes. `control` steers leg `a` (a re-INVITE or UPDATE
/// from the caller moves, holds or re-keys it), `control_b` leg `b`.
///
/// With `timeout`, a bridge on which no valid packet has come from either
/// side for its limit ends (the core sends BYE both ways). Either side
/// alone may rightly fall silent (a hold with `sendonly`), so, as
/// rtpengine's `--timeout`, only silence on both counts; a caller that
/// keeps streaming into a dead far end is bounded by `media.max_call_s`.
pub async fn run(
    mut a: Side,
    mut b: Side,
    mut control: mpsc::Receiver<Control>,
    mut control_b: mpsc::Receiver<Control>,
    metrics: Arc<Metrics>,
    report: super::media::Reporter,
    timeout: Option<super::media::Timeout>,
) {
    // One receive buffer per socket (select! polls them all at once).
    let (mut buf_a, mut buf_b) = (vec![0u8; 2048], vec![0u8; 2048]);
    let (mut rtcp_a, mut rtcp_b) = (vec![0u8; 1500], vec![0u8; 1500]);
    let mut out = vec![0u8; 2048];
    // Per direction: our timestamp minus theirs, fixed at the first packet.
    let (mut ab_offset, mut ba_offset): (Option<u32>, Option<u32>) = (None, None);
    let (ab_base, ba_base) = (rand_u32(), rand_u32());
    let mut rtcp_tick = tokio::time::interval(RTCP_INTERVAL);
    rtcp_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut counters = RtpCounters::new(metrics, report);
    let mut last_valid = Instant::now();
    let mut watchdog = tokio::time::interval(super::media::Timeout::CHECK);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut publish = RtpCounters::publish_tick();
    loop {
        // Which side a packet came in on: true for `a`.
        let (from_a, n, from) = tokio::select! {
            _ = publish.tick() => {
                counters.flush();
                continue;
            },
            _ = watchdog.tick(), if timeout.is_some() => {
                if timeout.as_ref().is_some_and(|t| t.expired(last_valid)) {
                    break;
                }
                continue;
            },
            ctl = control.recv() => if steer(&mut a, ctl) { continue } else { break },
            ctl = control_b.recv() => if steer(&mut b, ctl) { continue } else { break },
            r = a.rtp.recv_from(&mut buf_a) => match r { Ok((n, f)) => (true, n, f), Err(_) => continue },
            r = b.rtp.recv_from(&mut buf_b) => match r { Ok((n, f)) => (false, n, f), Err(_) => continue },
            r = recv_opt(a.rtcp.as_ref(), &mut rtcp_a) => {
                if let Some((n, f)) = r {
                    counters.rtcp(&mut a.leg, f, &mut rtcp_a[..n]);
                }
                continue;
            },
            r = recv_opt(b.rtcp.as_ref(), &mut rtcp_b) => {
                if let Some((n, f)) = r {
                    counters.rtcp(&mut b.leg, f, &mut rtcp_b[..n]);
                }
                continue;
            },
            _ = rtcp_tick.tick() => {
                for side in [&mut a, &mut b] {
                    let Some(rtp_to) = side.leg.remote() else { continue };
                    if let Ok(m) = side.leg.build_rtcp(&mut out, ntp_now(), b"tollgate") {
                        let (sock, to) = match &side.rtcp {
                            Some(s) => (s, side.remote_rtcp),
                            None => (&side.rtp, rtp_to),
                        };
                        let _ = sock.send_to(&out[..m], to).await;
                    }
                }
                continue;
            },
        };
        // What the core queued before this packet applies first (see
        // media::drain_control).
        if !super::media::drain_control(&mut control, |c| steer(&mut a, Some(c)))
            || !super::media::drain_control(&mut control_b, |c| steer(&mut b, Some(c)))
        {
            break;
        }
        let (src, dst, offset, base, buf) = if from_a {
            (&mut a, &mut b, &mut ab_offset, ab_base, &mut buf_a)
        } else {
            (&mut b, &mut a, &mut ba_offset, ba_base, &mut buf_b)
        };
        if src.rtcp.is_none() && crate::media::rtp::is_rtcp(&buf[..n]) {
            counters.rtcp(&mut src.leg, from, &mut buf[..n]);
            continue;
        }
        let now = Instant::now();
        let p = match src.leg.recv_rtp(from, &mut buf[..n], now) {
            Ok(p) => {
                last_valid = now;
                p
            }
            Err(d) => {
                counters.dropped(d);
                continue;
            }
        };
        counters.received(p.len);
        if !dst.send {
            continue;
        }
        let Some(to) = dst.leg.remote() else {
            counters.unproven();
            continue;
        };
        let off = *offset.get_or_insert(base.wrapping_sub(p.timestamp));
        let payload = &buf[p.payload_offset..p.payload_offset + p.payload_len];
        if let Ok(m) = dst.leg.build_rtp(
            &mut out,
            p.payload_type,
            p.marker,
            p.timestamp.wrapping_add(off),
            payload,
        ) {
            if dst.rtp.send_to(&out[..m], to).await.is_ok() {
                counters.sent(m);
            }
        }
    }
    counters.finish(&a.leg, "trunk");
    counters.finish(&b.leg, "far_end");
    counters.report();
}
