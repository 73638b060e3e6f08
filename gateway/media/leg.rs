//! One media leg, sans-IO: what arrives from a peer is checked (source,
//! SRTP, RTP syntax) and measured; what we send gets our SSRC, sequence
//! and timestamp and is sealed. The socket loop around it lives with the
//! caller.
//!
//! Strict source: packets are accepted only from the signalled address's
//! IP. The first packet from that IP that passes every check (the rate
//! cap, SRTP authentication where keyed, RTP syntax) latches its exact
//! address and port (NATs rewrite ports); a forged packet that fails them
//! latches nothing. After the latch only that address is accepted, until
//! the signalling moves the peer or the latched source has been silent
//! for [`RELATCH_AFTER`]: then the next valid packet from the signalled IP
//! latches afresh (as RFC 3550 section 8.2 and rtpengine allow a source to
//! move), so a spoofed packet can never pin a leg away from a live peer.
//!
//! Proven peers only (no reflection): SDP addresses are the caller's
//! claim, and over UDP a forged INVITE can name any victim. A leg sends
//! nothing until the peer is proven, either by a valid packet from the
//! signalled IP (then to the latched address), or by the signalling
//! ([`Leg::confirm`]: the ACK carrying our To tag, which only someone who
//! saw our 2xx can send, or the answer to an INVITE we sent to a
//! configured trunk). Until then [`Leg::remote`] is `None` and callers
//! send nothing, so one forged INVITE costs the gateway a port, never a
//! stream of packets at a third party.
//!
//! Rate cap: a leg takes at most [`MAX_PACKET_RATE`] RTP packets a second
//! (the same as a burst) and [`MAX_RTCP_RATE`] RTCP ones, checked before any
//! cryptography, so a flood at a media port costs a compare, not an
//! AES-GCM open, and is counted as `rate_limit`.

use std::net::SocketAddr;
use std::time::Instant;

use super::rtcp::{Compound, ReportBlock, RtcpWriter, SenderInfo};
use super::rtp::{self, RtpError};
use super::srtp::{SrtpError, SrtpReceiver, SrtpSender};
use super::stats::StreamStats;

/// Why a received packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    WrongSource,
    /// Over the leg's packet-rate cap.
    RateLimit,
    Malformed(RtpError),
    MalformedRtcp,
    Srtp(SrtpError),
}

impl Dropped {
    /// A short, stable name for metrics labels.
    pub fn reason(self) -> &'static str {
        Self::REASONS[self.index()]
    }

    /// Every reason name, indexed by [`Dropped::index`].
    pub const REASONS: [&'static str; 6] = [
        "wrong_source",
        "malformed",
        "malformed_rtcp",
        "replayed",
        "srtp",
        "rate_limit",
    ];

    /// The position of this reason in [`Dropped::REASONS`] (for counters
    /// resolved once, not looked up per packet).
    pub fn index(self) -> usize {
        match self {
            Self::WrongSource => 0,
            Self::Malformed(_) => 1,
            Self::MalformedRtcp => 2,
            Self::Srtp(SrtpError::Replayed | SrtpError::TooOld) => 3,
            Self::Srtp(_) => 4,
            Self::RateLimit => 5,
        }
    }
}

/// A received RTP packet, opened and checked, in the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub len: usize,
    pub payload_type: u8,
    pub marker: bool,
    pub sequence: u16,
    pub timestamp: u32,
    pub payload_offset: usize,
    /// Payload length without padding.
    pub payload_len: usize,
}

/// Packets a second a leg takes, and its burst: G.711 at 20 ms is 50 a
/// second, at 10 ms 100; DTMF events and RTCP add a few. Five times the
/// usual rate leaves room for a peer's jitter buffer catching up.
pub const MAX_PACKET_RATE: f32 = 250.0;

/// Silence from the latched source after which another source at the
/// signalled IP may latch (rtpengine's delayed endpoint learning waits
/// 3 s too). A live peer sends every 20 to 60 ms, so a spoofer cannot
/// take over a stream that is flowing.
pub const RELATCH_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

/// RTCP packets a second a leg takes: a peer sends one every few seconds.
/// RTCP has its own bucket, so RTCP-typed packets from a spoofed port at
/// the peer's IP cannot spend the RTP budget and starve the stream.
pub const MAX_RTCP_RATE: f32 = 10.0;

/// A token bucket on packets received.
#[derive(Clone, Copy, Debug)]
struct RateCap {
    tokens: f32,
    last: Option<Instant>,
    /// Packets a second, and the burst.
    rate: f32,
}

impl RateCap {
    fn new(rate: f32) -> Self {
        Self {
            tokens: rate,
            last: None,
            rate,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = self
            .last
            .map_or(0.0, |l| now.saturating_duration_since(l).as_secs_f32());
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counters of one leg.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LegCounters {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
}

/// A media leg's state.
pub struct Leg {
    signalled: SocketAddr,
    latched: Option<SocketAddr>,
    /// When the latched source last sent a valid packet.
    latched_seen: Option<Instant>,
    /// The signalling proved the peer at `signalled` (see the module doc).
    confirmed: bool,
    srtp: Option<(SrtpReceiver, SrtpSender)>,
    stats: Option<StreamStats>,
    clock_rate: u32,
    ssrc: u32,
    seq: u16,
    packets_sent: u32,
    octets_sent: u32,
    last_ts: u32,
    cap: RateCap,
    rtcp_cap: RateCap,
    pub counters: LegCounters,
}

/// Room to leave after a packet for the SRTP trailer (the largest suite's).
pub const TRAILER_ROOM: usize = 16 + 4;

impl Leg {
    /// A leg to the `signalled` address, with our `ssrc` and random
    /// initial sequence number.
    pub fn new(
        signalled: SocketAddr,
        clock_rate: u32,
        ssrc: u32,
        first_seq: u16,
        srtp: Option<(SrtpReceiver, SrtpSender)>,
    ) -> Self {
        Self {
            signalled,
            latched: None,
            latched_seen: None,
            confirmed: false,
            srtp,
            stats: None,
            clock_rate,
            ssrc,
            seq: first_seq,
            packets_sent: 0,
            octets_sent: 0,
            last_ts: 0,
            cap: RateCap::new(MAX_PACKET_RATE),
            rtcp_cap: RateCap::new(MAX_RTCP_RATE),
            counters: LegCounters::default(),
        }
    }

    /// Where we may send: the latched address, else the signalled one
    /// once the signalling confirmed it; `None` while the peer is unproven
    /// (send nothing then).
    pub fn remote(&self) -> Option<SocketAddr> {
        self.latched.or_else(|| {
            (self.confirmed && !self.signalled.ip().is_unspecified()).then_some(self.signalled)
        })
    }

    /// The signalling proved the peer at the signalled address: the ACK
    /// with our To tag arrived, or this leg answers an INVITE we sent.
    pub fn confirm(&mut self) {
        self.confirmed = true;
    }

    /// The peer re-keyed (SDES in a re-INVITE): its packets open with
    /// `rx` from now on. A leg without SRTP stays without.
    pub fn rekey(&mut self, rx: SrtpReceiver) {
        if let Some((r, _)) = &mut self.srtp {
            *r = rx;
        }
    }

    /// The signalling moved the peer (a re-INVITE with a new address): the
    /// latch is released and the new address is unproven until its own
    /// ACK or a valid packet from it.
    pub fn set_signalled(&mut self, addr: SocketAddr) {
        if addr != self.signalled {
            self.signalled = addr;
            self.latched = None;
            self.latched_seen = None;
            self.confirmed = false;
        }
    }

    /// The RTP timestamp of the last packet we sent.
    pub fn last_timestamp(&self) -> u32 {
        self.last_ts
    }

    pub fn stats(&self) -> Option<&StreamStats> {
        self.stats.as_ref()
    }

    /// Whether `from` may be heard: the latched source; on a keyed leg the
    /// signalled address itself; or (none latched, or the latched one
    /// silent for [`RELATCH_AFTER`]) any port at the signalled IP.
    /// Latching waits for the packet to pass every check.
    fn check_source(&self, from: SocketAddr, now: Instant) -> Result<(), Dropped> {
        match self.latched {
            Some(l) if l == from => Ok(()),
            // On a keyed leg the address the signalling gave is always
            // heard (and re-latched once its packet authenticates): only the
            // key holder ever latches, so this only lets the peer move. A
            // plain leg gives it no precedence: a NAT'd peer talks from
            // another port, and one spoofed packet at the signalled port
            // would take the latch from it.
            _ if from == self.signalled && self.srtp.is_some() => Ok(()),
            _ if from.ip() != self.signalled.ip() => Err(Dropped::WrongSource),
            None => Ok(()),
            Some(_) => {
                let silent = self
                    .latched_seen
                    .is_none_or(|t| now.saturating_duration_since(t) >= RELATCH_AFTER);
                if silent {
                    Ok(())
                } else {
                    Err(Dropped::WrongSource)
                }
            }
        }
    }

    /// Takes an RTP datagram from `from` in `buf`; on success the plain
    /// packet is `buf[..len]`, and `from` is the latched source.
    pub fn recv_rtp(
        &mut self,
        from: SocketAddr,
        buf: &mut [u8],
        now: Instant,
    ) -> Result<Received, Dropped> {
        self.check_source(from, now)?;
        if !self.cap.take(now) {
            return Err(Dropped::RateLimit);
        }
        let len = match &mut self.srtp {
            Some((rx, _)) => rx.open_rtp(buf).map_err(Dropped::Srtp)?,
            None => buf.len(),
        };
        let p = rtp::parse(&buf[..len]).map_err(Dropped::Malformed)?;
        let r = Received {
            len,
            payload_type: p.payload_type(),
            marker: p.marker(),
            sequence: p.sequence(),
            timestamp: p.timestamp(),
            payload_offset: p.payload_offset(),
            payload_len: p.payload().len(),
        };
        let ssrc = p.ssrc();
        let stats = match &mut self.stats {
            Some(s) if s.ssrc() == ssrc => s,
            // A new SSRC (the peer restarted its stream): measure afresh.
            other => other.insert(StreamStats::new(ssrc, self.clock_rate)),
        };
        stats.on_packet(r.sequence, r.timestamp, len, now);
        // Valid: this source is the peer (latched, or re-latched after
        // the old one fell silent).
        self.latched = Some(from);
        self.latched_seen = Some(now);
        self.counters.packets_in += 1;
        self.counters.bytes_in += len as u64;
        Ok(r)
    }

    /// Takes an RTCP datagram (checked and counted, not acted on).
    pub fn recv_rtcp(
        &mut self,
        from: SocketAddr,
        buf: &mut [u8],
        now: Instant,
    ) -> Result<usize, Dropped> {
        // A latched address always has the signalled IP.
        if from.ip() != self.signalled.ip() {
            return Err(Dropped::WrongSource);
        }
        if !self.rtcp_cap.take(now) {
            return Err(Dropped::RateLimit);
        }
        let len = match &mut self.srtp {
            Some((rx, _)) => rx.open_rtcp(buf).map_err(Dropped::Srtp)?,
            None => buf.len(),
        };
        let packets = Compound::parse(&buf[..len]).map_err(|_| Dropped::MalformedRtcp)?;
        if packets.into_iter().any(|p| p.is_err()) {
            return Err(Dropped::MalformedRtcp);
        }
        Ok(len)
    }

    /// Writes an RTP packet of ours into `out` (header, then `payload`),
    /// sealed when the leg uses SRTP; returns its length. `out` needs 12 +
    /// payload + [`TRAILER_ROOM`] bytes.
    pub fn build_rtp(
        &mut self,
        out: &mut [u8],
        payload_type: u8,
        marker: bool,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<usize, SrtpError> {
        let len = 12 + payload.len();
        if out.len() < len + TRAILER_ROOM {
            return Err(SrtpError::BufferTooSmall);
        }
        out[0] = 0x80;
        out[1] = (payload_type & 0x7f) | if marker { 0x80 } else { 0 };
        out[2..4].copy_from_slice(&self.seq.to_be_bytes());
        out[4..8].copy_from_slice(&timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        out[12..len].copy_from_slice(payload);
        let n = match &mut self.srtp {
            Some((_, tx)) => tx.seal_rtp(out, len)?,
            None => len,
        };
        self.seq = self.seq.wrapping_add(1);
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add(payload.len() as u32);
        self.last_ts = timestamp;
        self.counters.packets_out += 1;
        self.counters.bytes_out += n as u64;
        Ok(n)
    }

    /// Writes our RTCP report (an SR if we have sent, else an RR, with a
    /// report block on what we received, and an SDES CNAME) into `out`,
    /// sealed when the leg uses SRTP.
    pub fn build_rtcp(
        &mut self,
        out: &mut [u8],
        ntp: u64,
        cname: &[u8],
    ) -> Result<usize, SrtpError> {
        let block: Option<ReportBlock> = self.stats.as_mut().map(|s| s.report_block(0, 0));
        let blocks = block.as_slice();
        let room = out.len().saturating_sub(TRAILER_ROOM);
        let mut w = RtcpWriter::new(&mut out[..room]);
        let written = if self.packets_sent > 0 {
            let info = SenderInfo {
                ntp_timestamp: ntp,
                rtp_timestamp: self.last_ts,
                packet_count: self.packets_sent,
                octet_count: self.octets_sent,
            };
            w.sender_report(self.ssrc, &info, blocks)
        } else {
            w.receiver_report(self.ssrc, blocks)
        };
        written
            .and_then(|()| w.sdes_cname(self.ssrc, cname))
            .map_err(|_| SrtpError::BufferTooSmall)?;
        let len = w.len();
        match &mut self.srtp {
            Some((_, tx)) => tx.seal_rtcp(out, len),
            None => Ok(len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::srtp::{MasterKey, SrtpConfig, Suite};
    use std::time::Duration;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    /// A leg to 192.0.2.7:4000 keyed with `key` both ways.
    fn srtp_leg(key: &MasterKey) -> Leg {
        let cfg = SrtpConfig::default();
        Leg::new(
            addr("192.0.2.7:4000"),
            8000,
            0xb,
            1,
            Some((
                SrtpReceiver::new(key, cfg).expect("rx"),
                SrtpSender::new(key, cfg).expect("tx"),
            )),
        )
    }

    /// A carrier's sender and the SRTP leg that opens its packets.
    fn keyed_pair() -> (SrtpSender, Leg) {
        let key = MasterKey::random(Suite::AeadAes128Gcm).expect("key");
        let tx = SrtpSender::new(&key, SrtpConfig::default()).expect("tx");
        (tx, srtp_leg(&key))
    }

    /// An 8-byte-payload RTP packet with sequence `seq`, sealed by `tx`.
    fn sealed(tx: &mut SrtpSender, seq: u16) -> Vec<u8> {
        let mut buf = [0u8; 64];
        buf[..12].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
        buf[2..4].copy_from_slice(&seq.to_be_bytes());
        let n = tx.seal_rtp(&mut buf, 20).expect("seal");
        buf[..n].to_vec()
    }

    #[test]
    fn a_flood_on_a_leg_is_capped_before_any_crypto() {
        let (mut tx, mut leg) = keyed_pair();
        let t0 = Instant::now();
        let mut seq = 0u16;
        let mut packet = |tx: &mut SrtpSender| {
            seq += 1;
            sealed(tx, seq)
        };
        // A thousand at one instant: the burst passes, the rest is capped.
        let mut taken = 0;
        let mut capped = 0;
        for _ in 0..1000 {
            match leg.recv_rtp(addr("192.0.2.7:4000"), &mut packet(&mut tx), t0) {
                Ok(_) => taken += 1,
                Err(Dropped::RateLimit) => capped += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!((taken, capped), (250, 750));
        // It refills at the rate: 20 ms buys five packets.
        let t1 = t0 + Duration::from_millis(20);
        let more = (0..10)
            .filter(|_| {
                leg.recv_rtp(addr("192.0.2.7:4000"), &mut packet(&mut tx), t1)
                    .is_ok()
            })
            .count();
        assert_eq!(more, 5);
        // A codec's rate (50 a second) is never capped.
        for k in 1..=500u64 {
            let t = t1 + Duration::from_millis(20 * k);
            assert!(leg
                .recv_rtp(addr("192.0.2.7:4000"), &mut packet(&mut tx), t)
                .is_ok());
        }
        assert_eq!(Dropped::RateLimit.reason(), "rate_limit");
    }

    #[test]
    fn strict_source_latches_the_first_valid_packet_from_the_signalled_ip() {
        let mut leg = Leg::new(addr("192.0.2.7:4000"), 8000, 1, 100, None);
        let mut peer = Leg::new(addr("192.0.2.1:20000"), 8000, 99, 5, None);
        let mut pkt = [0u8; 200];
        let n = peer
            .build_rtp(&mut pkt, 0, false, 160, &[0xff; 160])
            .expect("builds");
        let now = Instant::now();
        // Nothing is sent to an unproven peer.
        assert_eq!(leg.remote(), None);
        // Another host: dropped.
        assert_eq!(
            leg.recv_rtp(addr("198.51.100.9:4000"), &mut pkt[..n].to_vec(), now),
            Err(Dropped::WrongSource)
        );
        // A forged, malformed packet from the signalled IP latches nothing.
        assert!(matches!(
            leg.recv_rtp(addr("192.0.2.7:6666"), &mut [0x80, 0, 1], now),
            Err(Dropped::Malformed(_))
        ));
        assert_eq!(leg.remote(), None);
        // The signalled IP from a NAT-rewritten port: latched.
        let r = leg
            .recv_rtp(addr("192.0.2.7:4100"), &mut pkt[..n].to_vec(), now)
            .expect("accepted");
        assert_eq!((r.sequence, r.payload_len), (5, 160));
        assert_eq!(leg.remote(), Some(addr("192.0.2.7:4100")));
        // While it talks, another port at the same IP is a wrong source.
        let later = now + Duration::from_millis(20);
        assert_eq!(
            leg.recv_rtp(addr("192.0.2.7:4200"), &mut pkt[..n].to_vec(), later),
            Err(Dropped::WrongSource)
        );
        // Silent for RELATCH_AFTER: the next valid packet re-latches.
        let silent = now + RELATCH_AFTER;
        assert!(leg
            .recv_rtp(addr("192.0.2.7:4200"), &mut pkt[..n].to_vec(), silent)
            .is_ok());
        assert_eq!(leg.remote(), Some(addr("192.0.2.7:4200")));
        // Plain RTP: a packet at the signalled port itself (a spoofer's,
        // while a NAT'd peer talks from another port) takes nothing.
        let back = silent + Duration::from_millis(20);
        assert_eq!(
            leg.recv_rtp(addr("192.0.2.7:4000"), &mut pkt[..n].to_vec(), back),
            Err(Dropped::WrongSource)
        );
        assert_eq!(leg.remote(), Some(addr("192.0.2.7:4200")));
        // A re-INVITE moves the peer: the latch is released and the new
        // address waits for proof (its ACK, or its media).
        leg.set_signalled(addr("203.0.113.5:6000"));
        assert_eq!(leg.remote(), None);
        leg.confirm();
        assert_eq!(leg.remote(), Some(addr("203.0.113.5:6000")));
        assert_eq!(leg.counters.packets_in, 2);
    }

    #[test]
    fn a_keyed_peer_moves_back_to_its_signalled_port_and_a_forger_cannot() {
        let (mut tx, mut leg) = keyed_pair();
        let now = Instant::now();
        let signalled = leg.signalled;
        let nat = SocketAddr::new(signalled.ip(), signalled.port() + 100);
        assert!(leg.recv_rtp(nat, &mut sealed(&mut tx, 1), now).is_ok());
        assert_eq!(leg.remote(), Some(nat));
        // A forged packet at the signalled port fails authentication and
        // leaves the latch where it was.
        let mut forged = sealed(&mut tx, 2);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let soon = now + Duration::from_millis(20);
        assert!(matches!(
            leg.recv_rtp(signalled, &mut forged, soon),
            Err(Dropped::Srtp(_))
        ));
        assert_eq!(leg.remote(), Some(nat));
        // The key holder itself moving there is followed at once.
        assert!(leg
            .recv_rtp(signalled, &mut sealed(&mut tx, 3), soon)
            .is_ok());
        assert_eq!(leg.remote(), Some(signalled));
    }

    #[test]
    fn an_rtcp_flood_does_not_spend_the_rtp_budget() {
        let mut leg = Leg::new(addr("192.0.2.7:4000"), 8000, 1, 100, None);
        let mut peer = Leg::new(addr("192.0.2.1:20000"), 8000, 99, 5, None);
        let mut rr = [0u8; 200];
        let n = peer.build_rtcp(&mut rr, 0, b"x").expect("rtcp");
        let now = Instant::now();
        let taken = (0..1000)
            .filter(|_| {
                leg.recv_rtcp(addr("192.0.2.7:9"), &mut rr[..n].to_vec(), now)
                    .is_ok()
            })
            .count();
        assert_eq!(taken, MAX_RTCP_RATE as usize);
        let mut pkt = [0u8; 200];
        let m = peer
            .build_rtp(&mut pkt, 0, false, 160, &[0xff; 160])
            .expect("builds");
        assert!(leg
            .recv_rtp(addr("192.0.2.7:4000"), &mut pkt[..m], now)
            .is_ok());
    }

    #[test]
    fn a_forged_srtp_packet_cannot_latch_or_hold_the_leg() {
        let (mut carrier, mut leg) = keyed_pair();
        let now = Instant::now();
        let mut seal = |seq: u16| sealed(&mut carrier, seq);
        // The attacker spoofs the carrier's IP with its own port, but has
        // no key: its packet fails authentication and latches nothing.
        let mut forged = seal(1);
        forged[14] ^= 1;
        assert!(matches!(
            leg.recv_rtp(addr("192.0.2.7:9999"), &mut forged, now),
            Err(Dropped::Srtp(_))
        ));
        assert_eq!(leg.remote(), None);
        // The carrier's own packet latches.
        assert!(leg
            .recv_rtp(addr("192.0.2.7:4000"), &mut seal(2), now)
            .is_ok());
        assert_eq!(leg.remote(), Some(addr("192.0.2.7:4000")));
    }

    #[test]
    fn srtp_legs_talk_to_each_other_and_report() {
        let a_key = MasterKey::random(Suite::AeadAes128Gcm).expect("key");
        let b_key = MasterKey::random(Suite::AeadAes128Gcm).expect("key");
        let cfg = SrtpConfig::default();
        let pair = |rx: &MasterKey, tx: &MasterKey| {
            Some((
                SrtpReceiver::new(rx, cfg).expect("rx"),
                SrtpSender::new(tx, cfg).expect("tx"),
            ))
        };
        let mut a = Leg::new(addr("127.0.0.1:3000"), 8000, 0xa, 1, pair(&b_key, &a_key));
        let mut b = Leg::new(addr("127.0.0.1:2000"), 8000, 0xb, 1, pair(&a_key, &b_key));
        let mut buf = [0u8; 256];
        let now = Instant::now();
        for i in 0..50u32 {
            let n = a
                .build_rtp(&mut buf, 8, false, i * 160, &[0xd5; 160])
                .expect("seal");
            assert_ne!(&buf[12..172], &[0xd5; 160][..], "encrypted on the wire");
            let r = b
                .recv_rtp(addr("127.0.0.1:2000"), &mut buf[..n], now)
                .expect("opens");
            assert_eq!(
                &buf[r.payload_offset..r.payload_offset + r.payload_len],
                &[0xd5; 160][..]
            );
        }
        let n = b.build_rtcp(&mut buf, 0, b"tollgate").expect("rtcp");
        let m = a
            .recv_rtcp(addr("127.0.0.1:3000"), &mut buf[..n], now)
            .expect("rtcp opens");
        let first = Compound::parse(&buf[..m])
            .expect("ok")
            .next()
            .expect("one")
            .expect("valid");
        assert!(matches!(
            first,
            crate::media::rtcp::RtcpPacket::ReceiverReport { ssrc: 0xb, .. }
        ));
        assert_eq!(b.stats().expect("stats").snapshot().packets, 50);
    }
}
