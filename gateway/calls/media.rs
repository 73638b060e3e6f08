//! The socket side of a test-service call's media: one task per call owns
//! its RTP (and, without rtcp-mux, RTCP) socket and drives a
//! [`Leg`](crate::media::leg::Leg). `echo` returns each received payload
//! under our own SSRC, sequence and timestamps; `tone` sends a 1 kHz tone
//! every ptime. Both measure what they receive and send RTCP reports every
//! 5 seconds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::media::leg::{Dropped, Leg};
use crate::sip::sdp::Codec;
use crate::telemetry::metrics::Metrics;
use prometheus::IntCounter;

/// What the call plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Echo,
    Tone,
}

/// Changes the signalling makes to a running call's media.
pub enum Control {
    /// A re-INVITE: the peer's address and whether we may send.
    Update {
        remote: SocketAddr,
        rtcp: SocketAddr,
        send: bool,
    },
    /// An agent put the call on hold (true) or took it off: no audio
    /// crosses while held.
    Hold(bool),
    /// An agent's DTMF digit, for RFC 4733 events on the trunk.
    Dtmf { digit: char, duration_ms: u16 },
    /// The signalling proved the trunk peer (the ACK with our To tag):
    /// media may go to the signalled address before any came from it.
    Confirmed,
    /// The trunk peer's re-INVITE brought a new SDES key: its packets
    /// open with this from now on (ours stays as answered).
    Rekey(Box<crate::media::srtp::SrtpReceiver>),
    /// We answered the call (our 2xx went out): a test service's media
    /// task, started at the INVITE, counts silence from here, not through
    /// its ringing.
    Answered,
}

/// Keys have no `Debug`: a re-key shows as such, nothing more.
impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Update { remote, rtcp, send } => f
                .debug_struct("Update")
                .field("remote", remote)
                .field("rtcp", rtcp)
                .field("send", send)
                .finish(),
            Self::Hold(h) => write!(f, "Hold({h})"),
            Self::Dtmf { digit, duration_ms } => write!(f, "Dtmf({digit}, {duration_ms} ms)"),
            Self::Confirmed => f.write_str("Confirmed"),
            Self::Rekey(_) => f.write_str("Rekey"),
            Self::Answered => f.write_str("Answered"),
        }
    }
}

/// What a media task needs to start.
pub struct MediaSetup {
    pub rtp: UdpSocket,
    /// `None` with rtcp-mux.
    pub rtcp: Option<UdpSocket>,
    pub leg: Leg,
    pub remote_rtcp: SocketAddr,
    pub service: Service,
    pub codec: Codec,
    pub pt: u8,
    pub ptime: u16,
    pub send: bool,
    /// RTP silence that ends the call, and where to say so.
    pub timeout: Option<Timeout>,
    /// Its port, given back when the task ends.
    pub lease: super::ports::Lease,
}

/// A media task's inactivity limit: after `after` without a valid packet
/// it sends `ended` to the core and stops.
pub struct Timeout {
    pub after: Duration,
    pub tell: mpsc::UnboundedSender<super::agent_media::MediaEnded>,
    pub ended: super::agent_media::MediaEnded,
}

impl Timeout {
    /// How often a task checks (the limit is in whole seconds).
    pub const CHECK: Duration = Duration::from_millis(250);

    /// True (and the core told) once `last` valid packet is `after` old.
    pub fn expired(&self, last: Instant) -> bool {
        if last.elapsed() < self.after {
            return false;
        }
        let _ = self.tell.send(self.ended.clone());
        true
    }
}

const RTCP_INTERVAL: Duration = Duration::from_secs(5);

/// The RTP metrics a media task updates, resolved once at its start.
/// A packet costs a plain add here, not an atomic on a counter every
/// shard shares: the sums go to the metrics on the task's
/// [`RtpCounters::PUBLISH`] tick and when it ends, however it ends (drops
/// too: a flood of them must stay cheap). A tick falls between packets,
/// so a packet's "in" and its "out" are published together.
pub(super) struct RtpCounters {
    packets_in: IntCounter,
    bytes_in: IntCounter,
    packets_out: IntCounter,
    bytes_out: IntCounter,
    unproven: IntCounter,
    dropped: [IntCounter; 6],
    pending: Pending,
    /// This call's drops by reason, for its record's guard flags.
    call_drops: [u32; 6],
    metrics: Arc<Metrics>,
    report: Reporter,
    legs: Vec<crate::cdr::record::MediaStats>,
}

/// Counts not yet added to the metrics.
#[derive(Default)]
struct Pending {
    packets_in: u64,
    bytes_in: u64,
    packets_out: u64,
    bytes_out: u64,
    unproven: u64,
    dropped: [u64; 6],
}

/// What a media task tells the call core when it ends: the media of the
/// call's record.
#[derive(Debug)]
pub struct MediaReport {
    pub id: crate::cdr::store::RecordId,
    pub media: Vec<crate::cdr::record::MediaStats>,
    pub guard: Vec<String>,
}

/// Where a media task reports, if its call has a record.
pub type Reporter = Option<(crate::cdr::store::RecordId, mpsc::Sender<MediaReport>)>;

impl RtpCounters {
    /// How often a task publishes what it counted.
    pub(super) const PUBLISH: Duration = Duration::from_millis(500);

    pub(super) fn new(metrics: Arc<Metrics>, report: Reporter) -> Self {
        Self {
            packets_in: metrics.rtp_packets.with_label_values(&["in"]),
            bytes_in: metrics.rtp_bytes.with_label_values(&["in"]),
            packets_out: metrics.rtp_packets.with_label_values(&["out"]),
            bytes_out: metrics.rtp_bytes.with_label_values(&["out"]),
            unproven: metrics.rtp_unproven.clone(),
            dropped: Dropped::REASONS.map(|r| metrics.rtp_dropped.with_label_values(&[r])),
            pending: Pending::default(),
            call_drops: [0; 6],
            metrics,
            report,
            legs: Vec::new(),
        }
    }

    /// The publishing tick a task's loop selects on.
    pub(super) fn publish_tick() -> tokio::time::Interval {
        let mut t = tokio::time::interval(Self::PUBLISH);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    }

    /// Adds what was counted to the metrics.
    pub(super) fn flush(&mut self) {
        let p = std::mem::take(&mut self.pending);
        let add = |c: &IntCounter, v: u64| {
            if v > 0 {
                c.inc_by(v);
            }
        };
        add(&self.packets_in, p.packets_in);
        add(&self.bytes_in, p.bytes_in);
        add(&self.packets_out, p.packets_out);
        add(&self.bytes_out, p.bytes_out);
        add(&self.unproven, p.unproven);
        for (c, v) in self.dropped.iter().zip(p.dropped) {
            add(c, v);
        }
    }

    pub(super) fn received(&mut self, len: usize) {
        self.pending.packets_in += 1;
        self.pending.bytes_in += len as u64;
    }

    pub(super) fn sent(&mut self, len: usize) {
        self.pending.packets_out += 1;
        self.pending.bytes_out += len as u64;
    }

    /// A packet not sent: the peer's address is not proven yet.
    pub(super) fn unproven(&mut self) {
        self.pending.unproven += 1;
    }

    pub(super) fn dropped(&mut self, d: Dropped) {
        self.pending.dropped[d.index()] += 1;
        self.call_drops[d.index()] = self.call_drops[d.index()].saturating_add(1);
    }

    /// Takes an RTCP datagram on `leg`, counting it if dropped.
    pub(super) fn rtcp(&mut self, leg: &mut Leg, from: SocketAddr, buf: &mut [u8]) {
        if let Err(d) = leg.recv_rtcp(from, buf, std::time::Instant::now()) {
            self.dropped(d);
        }
    }

    /// Records a finished leg's jitter and loss (in the metrics, and for
    /// the call's record under `name`: `trunk`, `agent` or `far_end`).
    /// What the leg sent is counted; how the far end received it is not
    /// measured (its RTCP reports are not read).
    pub(super) fn finish(&mut self, leg: &Leg, name: &str) {
        let mut received = crate::cdr::record::MediaStats {
            leg: name.into(),
            direction: "in".into(),
            ..Default::default()
        };
        if let Some(st) = leg.stats() {
            let snap = st.snapshot();
            self.metrics
                .rtp_jitter_seconds
                .observe(snap.jitter_ms / 1000.0);
            self.metrics.rtp_loss_ratio.observe(snap.loss);
            received.packets = snap.packets;
            received.lost = snap.lost;
            received.jitter_ms = (snap.jitter_ms * 100.0).round() / 100.0;
            let mos = st.mos(None);
            if snap.packets > 0 {
                self.metrics.rtp_mos.observe(mos);
            }
            received.mos = (mos * 100.0).round() / 100.0;
        }
        self.legs.push(received);
        self.legs.push(crate::cdr::record::MediaStats {
            leg: name.into(),
            direction: "out".into(),
            packets: leg.counters.packets_out,
            ..Default::default()
        });
    }

    /// Publishes the last counts and sends the call's media to the core
    /// for its record (once, at the task's end; never waits).
    pub(super) fn report(mut self) {
        self.flush();
        let Some((id, tx)) = self.report.take() else {
            return;
        };
        let flag =
            |d: Dropped, name: &str| (self.call_drops[d.index()] > 0).then(|| name.to_string());
        let guard = [
            flag(Dropped::RateLimit, "rtp_rate_limited"),
            flag(Dropped::WrongSource, "rtp_wrong_source"),
            flag(
                Dropped::Srtp(crate::media::srtp::SrtpError::Replayed),
                "srtp_replayed",
            ),
            flag(
                Dropped::Srtp(crate::media::srtp::SrtpError::AuthFailed),
                "srtp_auth_failed",
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        let _ = tx.try_send(MediaReport {
            id,
            media: std::mem::take(&mut self.legs),
            guard,
        });
    }
}

/// A task dropped before its end (its shard stopping) still publishes
/// what it counted.
impl Drop for RtpCounters {
    fn drop(&mut self) {
        self.flush();
    }
}

/// NTP time now, 32.32 fixed point.
pub(super) fn ntp_now() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() + 2_208_988_800;
    (secs << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

/// Applies what the core queued on `control` before a packet is handled,
/// one message at a time through `apply`; `false` once the channel has
/// closed (the call ended) or `apply` says stop. `tokio::select!` picks
/// among ready branches at random, so without this a packet under a
/// re-INVITE's new key, sent as soon as its 200 OK arrived, could be
/// opened before the re-key the core queued ahead of that 200 OK.
pub(super) fn drain_control(
    control: &mut mpsc::Receiver<Control>,
    mut apply: impl FnMut(Control) -> bool,
) -> bool {
    loop {
        match control.try_recv() {
            Ok(c) => {
                if !apply(c) {
                    return false;
                }
            }
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
}

/// When a test service's media counts as silent: from its answer, since
/// the last valid packet.
struct Silence {
    answered: bool,
    last_valid: Instant,
}

/// One control message from the core for a test service's media.
fn steer(s: &mut MediaSetup, silence: &mut Silence, ctl: Control) {
    match ctl {
        Control::Hold(_) | Control::Dtmf { .. } => {}
        Control::Confirmed => s.leg.confirm(),
        Control::Rekey(rx) => s.leg.rekey(*rx),
        Control::Answered => {
            silence.answered = true;
            silence.last_valid = Instant::now();
        }
        Control::Update { remote, rtcp, send } => {
            s.leg.set_signalled(remote);
            s.remote_rtcp = rtcp;
            s.send = send;
        }
    }
}

/// Runs until `control` closes (the call ended).
pub async fn run(
    mut s: MediaSetup,
    mut control: mpsc::Receiver<Control>,
    metrics: Arc<Metrics>,
    report: Reporter,
) {
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    let mut rtcp_buf = vec![0u8; 1500];
    let samples = usize::from(s.ptime) * 8; // 8 kHz clock for every codec here
    let tone = match s.codec {
        Codec::Pcma => super::tone::tone(samples, super::tone::linear_to_alaw),
        _ => super::tone::tone(samples, super::tone::linear_to_ulaw),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(u64::from(s.ptime.max(10))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rtcp_tick = tokio::time::interval(RTCP_INTERVAL);
    rtcp_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ts: u32 = rand_u32();
    let mut echo_ts_offset: Option<u32> = None;
    let mux = s.rtcp.is_none();
    let mut counters = RtpCounters::new(metrics, report);
    let mut silence = Silence {
        answered: false,
        last_valid: Instant::now(),
    };
    let mut watchdog = tokio::time::interval(Timeout::CHECK);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut publish = RtpCounters::publish_tick();
    loop {
        tokio::select! {
            _ = publish.tick() => counters.flush(),
            // Silence counts once answered: a caller need not send media
            // while it rings (until then the INVITE's own timers govern).
            _ = watchdog.tick(), if s.timeout.is_some() && silence.answered => {
                if s.timeout.as_ref().is_some_and(|t| t.expired(silence.last_valid)) {
                    break;
                }
            },
            ctl = control.recv() => {
                let Some(ctl) = ctl else { break };
                steer(&mut s, &mut silence, ctl);
            },
            r = s.rtp.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let drained = drain_control(&mut control, |c| {
                    steer(&mut s, &mut silence, c);
                    true
                });
                if !drained {
                    break;
                }
                if mux && crate::media::rtp::is_rtcp(&buf[..n]) {
                    counters.rtcp(&mut s.leg, from, &mut buf[..n]);
                    continue;
                }
                let now = Instant::now();
                match s.leg.recv_rtp(from, &mut buf[..n], now) {
                    Ok(p) => {
                        silence.last_valid = now;
                        counters.received(p.len);
                        if s.service == Service::Echo && s.send {
                            let offset = *echo_ts_offset.get_or_insert(ts.wrapping_sub(p.timestamp));
                            let payload = &buf[p.payload_offset..p.payload_offset + p.payload_len];
                            if let Some(to) = s.leg.remote() {
                                if let Ok(m) = s.leg.build_rtp(&mut out, p.payload_type, p.marker, p.timestamp.wrapping_add(offset), payload) {
                                    if s.rtp.send_to(&out[..m], to).await.is_ok() {
                                        counters.sent(m);
                                    }
                                }
                            }
                        }
                    }
                    Err(d) => counters.dropped(d),
                }
            },
            r = recv_opt(s.rtcp.as_ref(), &mut rtcp_buf) => {
                if let Some((n, from)) = r {
                    counters.rtcp(&mut s.leg, from, &mut rtcp_buf[..n]);
                }
            },
            _ = tick.tick(), if s.service == Service::Tone && s.send => {
                ts = ts.wrapping_add(samples as u32);
                let Some(to) = s.leg.remote() else {
                    counters.unproven();
                    continue;
                };
                if let Ok(m) = s.leg.build_rtp(&mut out, s.pt, false, ts, &tone) {
                    if s.rtp.send_to(&out[..m], to).await.is_ok() {
                        counters.sent(m);
                    }
                }
            },
            _ = rtcp_tick.tick() => {
                if let Some(to) = s.leg.remote() {
                    if let Ok(m) = s.leg.build_rtcp(&mut out, ntp_now(), b"tollgate") {
                        let sock = s.rtcp.as_ref().unwrap_or(&s.rtp);
                        let _ = sock.send_to(&out[..m], if mux { to } else { s.remote_rtcp }).await;
                    }
                }
            },
        }
    }
    counters.finish(&s.leg, "trunk");
    counters.report();
}

pub(super) async fn recv_opt(
    sock: Option<&UdpSocket>,
    buf: &mut [u8],
) -> Option<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await.ok(),
        None => std::future::pending().await,
    }
}

/// A random 32-bit value (SSRCs, initial sequence numbers, timestamps):
/// [`crate::crypto::random_u32`], which never falls back to a guessable
/// value.
pub fn rand_u32() -> u32 {
    crate::crypto::random_u32()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::agent_media::MediaEnded;

    /// A carrier's outage silences many calls at once: every media task's
    /// news reaches the core (the queue used to hold 256 and drop the
    /// rest, leaving those calls holding their slots for hours).
    #[test]
    fn every_silenced_call_is_reported() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let long_ago = Instant::now();
        let n = 2 * 256 + 7;
        for i in 0..n {
            let t = Timeout {
                after: Duration::ZERO,
                tell: tx.clone(),
                ended: MediaEnded::Agent(i),
            };
            assert!(t.expired(long_ago));
        }
        let mut got = 0;
        while let Ok(MediaEnded::Agent(i)) = rx.try_recv() {
            assert_eq!(i, got);
            got += 1;
        }
        assert_eq!(got, n);
    }
}
