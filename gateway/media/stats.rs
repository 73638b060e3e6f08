//! Receive statistics per SSRC (RFC 3550 appendix A) and an E-model MOS
//! estimate (ITU-T G.107, simplified for G.711).
//!
//! [`StreamStats::on_packet`] is called once per received packet with the
//! packet's sequence number, RTP timestamp, size and the arrival time (an
//! injected `Instant`); it does no allocation and no syscall. It tracks:
//!
//! - packets and bytes;
//! - the extended highest sequence number, with RFC 3550 A.1's handling of
//!   large jumps (a jump is ignored until two packets in sequence confirm
//!   the source restarted, then the counts start over);
//! - duplicates (an index already seen, from a [`ReplayWindow`]) and
//!   reordered packets (older than the highest, not seen before);
//! - cumulative loss and the fraction lost between reports (A.3). Unlike
//!   the RFC's formula, duplicates are not counted as received, so they
//!   cannot hide loss;
//! - interarrival jitter (A.8), in timestamp units scaled by 16 inside.

use std::time::{Duration, Instant};

use super::replay::{ReplayCheck, ReplayWindow, MAX_WINDOW};
use super::rtcp::ReportBlock;
use super::rtp::extend_seq;

/// RFC 3550 A.1: a forward jump at least this large is suspect.
const MAX_DROPOUT: u64 = 3000;
/// RFC 3550 A.1: packets this far behind the highest count as reordered.
const MAX_MISORDER: u64 = 100;

/// What one packet was, as far as the statistics are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// In sequence or ahead (a gap is loss so far).
    InOrder,
    /// Behind the highest sequence number, not seen before.
    Reordered,
    /// Seen before.
    Duplicate,
    /// A jump too large to believe; ignored unless the next packet follows
    /// it, in which case the stream is taken as restarted.
    Jump,
}

/// Statistics of one received stream.
#[derive(Clone, Debug)]
pub struct StreamStats {
    ssrc: u32,
    clock_rate: u32,
    epoch: Option<Instant>,
    packets: u64,
    bytes: u64,
    duplicates: u64,
    reordered: u64,
    jumps: u64,
    /// Unique packets counted towards loss since the base.
    received: u64,
    base: u64,
    seen: ReplayWindow,
    /// The sequence number that would confirm a restart (A.1 `bad_seq`).
    bad_seq: Option<u16>,
    expected_prior: u64,
    received_prior: u64,
    last_transit: Option<u32>,
    /// Jitter in timestamp units, times 16 (A.8). 64 bits: a peer's
    /// timestamps can make |D| up to 2^31, and 16 times that does not
    /// fit 32.
    jitter16: u64,
}

/// A read-out of a stream's statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Snapshot {
    pub ssrc: u32,
    pub packets: u64,
    pub bytes: u64,
    pub expected: u64,
    /// Expected minus received (unique); negative is impossible here since
    /// duplicates are not counted as received.
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub jumps: u64,
    /// Cumulative fraction lost, 0.0 to 1.0.
    pub loss: f64,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Interarrival jitter in milliseconds.
    pub jitter_ms: f64,
}

impl StreamStats {
    /// A stream with the given RTP clock rate (8000 for G.711 and, oddly but
    /// by RFC 3551, for G.722).
    pub fn new(ssrc: u32, clock_rate: u32) -> Self {
        Self {
            ssrc,
            clock_rate: clock_rate.max(1),
            epoch: None,
            packets: 0,
            bytes: 0,
            duplicates: 0,
            reordered: 0,
            jumps: 0,
            received: 0,
            base: 0,
            seen: ReplayWindow::new(MAX_WINDOW),
            bad_seq: None,
            expected_prior: 0,
            received_prior: 0,
            last_transit: None,
            jitter16: 0,
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Counts one packet of `bytes` bytes that arrived at `now`.
    #[inline]
    pub fn on_packet(&mut self, seq: u16, rtp_ts: u32, bytes: usize, now: Instant) -> Arrival {
        self.packets += 1;
        self.bytes += bytes as u64;
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = self.classify(seq);
        match arrival {
            Arrival::Duplicate => {
                self.duplicates += 1;
                return arrival;
            }
            Arrival::Jump => {
                self.jumps += 1;
                return arrival;
            }
            Arrival::Reordered => self.reordered += 1,
            Arrival::InOrder => {}
        }
        self.received += 1;
        self.update_jitter(rtp_ts, now.saturating_duration_since(epoch));
        arrival
    }

    #[inline]
    fn classify(&mut self, seq: u16) -> Arrival {
        let Some(max) = self.seen.top() else {
            self.restart(u64::from(seq));
            return Arrival::InOrder;
        };
        let ext = extend_seq(Some(max), seq);
        if ext > max && ext - max < MAX_DROPOUT {
            self.bad_seq = None;
            self.seen.accept(ext);
            return Arrival::InOrder;
        }
        if ext <= max && max - ext <= MAX_MISORDER {
            return match self.seen.check(ext) {
                ReplayCheck::Fresh => {
                    self.seen.accept(ext);
                    self.base = self.base.min(ext);
                    Arrival::Reordered
                }
                _ => Arrival::Duplicate,
            };
        }
        // A large jump either way: believe it only when the next packet
        // follows it (A.1), then start counting afresh from there.
        if self.bad_seq == Some(seq) {
            self.restart(u64::from(seq));
            return Arrival::InOrder;
        }
        self.bad_seq = Some(seq.wrapping_add(1));
        Arrival::Jump
    }

    fn restart(&mut self, ext: u64) {
        self.seen = ReplayWindow::new(MAX_WINDOW);
        self.seen.accept(ext);
        self.base = ext;
        self.received = 0;
        self.expected_prior = 0;
        self.received_prior = 0;
        self.bad_seq = None;
        self.last_transit = None;
    }

    /// RFC 3550 A.8, with arrival time in timestamp units since the first
    /// packet (only differences matter).
    #[inline]
    fn update_jitter(&mut self, rtp_ts: u32, since: Duration) {
        let rate = u64::from(self.clock_rate);
        let arrival = since
            .as_secs()
            .wrapping_mul(rate)
            .wrapping_add(u64::from(since.subsec_nanos()) * rate / 1_000_000_000)
            as u32;
        let transit = arrival.wrapping_sub(rtp_ts);
        if let Some(last) = self.last_transit {
            let d = u64::from((transit.wrapping_sub(last) as i32).unsigned_abs());
            // J += (|D| - J) / 16, kept as 16 * J in integers. Bounded by
            // 16 * 2^31, so neither step can overflow.
            self.jitter16 = (self.jitter16 + d).saturating_sub((self.jitter16 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    fn expected(&self) -> u64 {
        self.seen.top().map_or(0, |max| max - self.base + 1)
    }

    /// The statistics now.
    pub fn snapshot(&self) -> Snapshot {
        let expected = self.expected();
        let lost = expected.saturating_sub(self.received);
        let jitter = u32::try_from(self.jitter16 >> 4).unwrap_or(u32::MAX);
        Snapshot {
            ssrc: self.ssrc,
            packets: self.packets,
            bytes: self.bytes,
            expected,
            lost,
            duplicates: self.duplicates,
            reordered: self.reordered,
            jumps: self.jumps,
            loss: if expected == 0 {
                0.0
            } else {
                lost as f64 / expected as f64
            },
            jitter,
            jitter_ms: f64::from(jitter) * 1000.0 / f64::from(self.clock_rate),
        }
    }

    /// A reception report block for this stream (RFC 3550 A.3), starting a
    /// new interval for the fraction lost. `last_sr` and
    /// `delay_since_last_sr` come from the caller, which tracks SRs.
    pub fn report_block(&mut self, last_sr: u32, delay_since_last_sr: u32) -> ReportBlock {
        let expected = self.expected();
        let expected_interval = expected - self.expected_prior;
        let received_interval = self.received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval == 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval).min(255) as u8
        };
        ReportBlock {
            ssrc: self.ssrc,
            fraction_lost,
            cumulative_lost: i32::try_from(expected.saturating_sub(self.received))
                .unwrap_or(i32::MAX),
            highest_seq: self.seen.top().unwrap_or(0) as u32,
            jitter: u32::try_from(self.jitter16 >> 4).unwrap_or(u32::MAX),
            last_sr,
            delay_since_last_sr,
        }
    }

    /// The E-model MOS estimate for this stream so far; see [`mos_g711`].
    pub fn mos(&self, rtt_ms: Option<f64>) -> f64 {
        let s = self.snapshot();
        mos_g711(s.loss, s.jitter_ms, rtt_ms.map_or(0.0, |r| r / 2.0))
    }
}

/// G.711 packetisation delay assumed (one 20 ms packet).
const PACKETISATION_MS: f64 = 20.0;

/// An E-model (ITU-T G.107) MOS estimate for G.711 with packet loss
/// concealment, simplified as VoIP monitors commonly do:
///
/// - R = R0 - Id - Ie,eff with the default R0 - Is - A = 93.2;
/// - mouth-to-ear delay Ta = one-way network delay + a jitter buffer of
///   twice the jitter + 20 ms packetisation; Id = 0.024 Ta + 0.11 (Ta -
///   177.3) for Ta > 177.3 ms (the usual fit to G.107's delay curve);
/// - Ie,eff = Ie + (95 - Ie) Ppl / (Ppl + Bpl) with G.711's Ie = 0 and Bpl
///   = 25.1 (G.113 appendix I, with PLC), loss taken as random (BurstR 1);
/// - MOS = 1 + 0.035 R + 7e-6 R (R - 60) (100 - R), clamped to 1..4.5.
///
/// `loss` is a fraction 0..1; delays in milliseconds.
pub fn mos_g711(loss: f64, jitter_ms: f64, one_way_delay_ms: f64) -> f64 {
    let ta = one_way_delay_ms.max(0.0) + 2.0 * jitter_ms.max(0.0) + PACKETISATION_MS;
    let id = 0.024 * ta + if ta > 177.3 { 0.11 * (ta - 177.3) } else { 0.0 };
    let ppl = (loss.clamp(0.0, 1.0)) * 100.0;
    let ie_eff = 95.0 * ppl / (ppl + 25.1);
    let r = 93.2 - id - ie_eff;
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        (1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)).clamp(1.0, 4.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS20: Duration = Duration::from_millis(20);

    /// Feeds packets `seqs` 20 ms apart (8 kHz, 160 samples each), with
    /// timestamps following the sequence numbers.
    fn feed(s: &mut StreamStats, t0: Instant, seqs: &[u16]) -> Vec<Arrival> {
        seqs.iter()
            .enumerate()
            .map(|(i, &q)| {
                let ts = u32::from(q).wrapping_mul(160);
                s.on_packet(q, ts, 172, t0 + MS20 * i as u32)
            })
            .collect()
    }

    #[test]
    fn hostile_timestamps_saturate_the_jitter_instead_of_wrapping() {
        // Timestamps that swing by 2^31 every packet: |D| is about 2^31
        // each time, and 16 J tends to 2^35, past 32 bits.
        let mut s = StreamStats::new(1, 8000);
        let t0 = Instant::now();
        for i in 0..400u16 {
            let ts = if i % 2 == 0 { 0 } else { 1 << 31 };
            s.on_packet(i, ts, 172, t0 + MS20 * u32::from(i));
        }
        let snap = s.snapshot();
        assert!(snap.jitter >= 1 << 30, "jitter wrapped to {}", snap.jitter);
        assert!(snap.jitter_ms.is_finite());
        assert_eq!(s.report_block(0, 0).jitter, snap.jitter);
    }

    #[test]
    fn perfect_stream_has_no_loss_and_no_jitter() {
        let mut s = StreamStats::new(1, 8000);
        let seqs: Vec<u16> = (65000..=65535).chain(0..500).collect();
        let t0 = Instant::now();
        feed(&mut s, t0, &seqs);
        let snap = s.snapshot();
        assert_eq!(snap.packets, seqs.len() as u64);
        assert_eq!(snap.bytes, seqs.len() as u64 * 172);
        assert_eq!(snap.expected, seqs.len() as u64);
        assert_eq!(snap.lost, 0);
        assert_eq!(snap.jitter, 0);
        assert_eq!(s.report_block(0, 0).highest_seq, (1 << 16) | 499);
        let mos = s.mos(None);
        assert!((4.3..4.5).contains(&mos), "mos {mos}");
    }

    #[test]
    fn loss_duplicates_and_reordering_are_counted() {
        let mut s = StreamStats::new(1, 8000);
        let t0 = Instant::now();
        // 1..=10 with 4 and 7 lost, 3 duplicated, 9 before 8.
        let got = feed(&mut s, t0, &[1, 2, 3, 3, 5, 6, 9, 8, 10]);
        assert_eq!(got[3], Arrival::Duplicate);
        assert_eq!(got[7], Arrival::Reordered);
        let snap = s.snapshot();
        assert_eq!(snap.expected, 10);
        assert_eq!(snap.lost, 2);
        assert_eq!(snap.duplicates, 1);
        assert_eq!(snap.reordered, 1);
        assert!((snap.loss - 0.2).abs() < 1e-9);
        let rb = s.report_block(0, 0);
        assert_eq!(rb.cumulative_lost, 2);
        assert_eq!(rb.fraction_lost, (2 * 256 / 10) as u8);
        // Next interval: 11..=20 all received, so fraction 0, total still 2.
        let more: Vec<u16> = (11..=20).collect();
        feed(&mut s, t0 + Duration::from_secs(1), &more);
        let rb = s.report_block(0, 0);
        assert_eq!((rb.fraction_lost, rb.cumulative_lost), (0, 2));
    }

    #[test]
    fn jitter_follows_rfc3550_a8() {
        // Packets alternately on time and 10 ms late: |D| = 80 timestamp
        // units (10 ms at 8 kHz) every packet after the first, so J -> 80.
        let mut s = StreamStats::new(1, 8000);
        let t0 = Instant::now();
        for i in 0..2000u32 {
            let skew = if i % 2 == 0 { 0 } else { 10 };
            let at = t0 + MS20 * i + Duration::from_millis(skew);
            s.on_packet(i as u16, i * 160, 172, at);
        }
        let j = s.snapshot().jitter;
        assert!((75..=80).contains(&j), "jitter {j}");
        assert!((s.snapshot().jitter_ms - 10.0).abs() < 0.7);
    }

    #[test]
    fn a_restarted_source_is_believed_after_two_packets() {
        let mut s = StreamStats::new(1, 8000);
        let t0 = Instant::now();
        let got = feed(&mut s, t0, &[100, 101, 102, 40000, 40001, 40002]);
        assert_eq!(got[3], Arrival::Jump);
        assert_eq!(got[4], Arrival::InOrder);
        let snap = s.snapshot();
        assert_eq!(snap.jumps, 1);
        assert_eq!(snap.expected, 2, "counting restarts at 40001");
        assert_eq!(snap.lost, 0);
        // A lone stray jump is ignored.
        let got = feed(&mut s, t0, &[9000, 40003]);
        assert_eq!(got, vec![Arrival::Jump, Arrival::InOrder]);
        assert_eq!(s.snapshot().lost, 0);
    }

    #[test]
    fn mos_falls_with_loss_delay_and_jitter() {
        let clean = mos_g711(0.0, 0.0, 0.0);
        assert!((clean - 4.40).abs() < 0.03, "clean {clean}");
        // 1% random loss: Ie,eff = 95 / 26.1 = 3.64.
        let one = mos_g711(0.01, 0.0, 0.0);
        assert!(one < clean && (one - 4.33).abs() < 0.03, "1% {one}");
        let five = mos_g711(0.05, 0.0, 0.0);
        assert!(five < one && five > 3.5, "5% {five}");
        let far = mos_g711(0.0, 0.0, 300.0);
        assert!(far < 4.0, "300 ms {far}");
        assert!(mos_g711(0.0, 30.0, 0.0) < clean);
        assert_eq!(mos_g711(1.0, 500.0, 1000.0), 1.0);
    }
}
