//! The per-packet path between a trunk leg and an agent leg, sans-IO.
//!
//! Trunk to agent: the trunk's RTP (or SDES SRTP) is opened, checked and
//! measured by its [`Leg`], then re-originated under the gateway's SSRC,
//! sequence and timestamps, sealed with the call's AEAD key and written
//! after the call's flow identifier: one QUIC datagram payload
//! (draft-ietf-avtcore-rtp-over-quic). Agent to trunk: the reverse. No
//! allocation, no lock, no log: the caller owns the buffers and the
//! sockets, so a media loop can batch sends across calls (one wake-up per
//! tick) without this code changing.

use std::net::SocketAddr;
use std::time::Instant;

use crate::agent::protocol::put_varint;
use crate::media::leg::{Dropped, Leg};
use crate::media::srtp::{MasterKey, SrtpConfig, SrtpError, SrtpReceiver, SrtpSender, Way};

/// The agent leg has no UDP address: its packets arrive on the agent's
/// authenticated QUIC connection. This stands for it in the leg's source
/// check.
pub const AGENT_PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// The RFC 4733 event number of a DTMF digit.
pub fn dtmf_event(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(12 + (digit as u8 - b'A')),
        _ => None,
    }
}

/// The DTMF digit of an RFC 4733 event number.
pub fn dtmf_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

/// What a trunk packet became.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relayed {
    /// A datagram payload of this length, for the agent.
    Datagram(usize),
    /// The end of a DTMF event (RFC 4733), reported once per event.
    Dtmf { digit: char, duration_ms: u16 },
    /// Nothing to send (an event's start, updates or repeated ends).
    Nothing,
}

/// One relayed call's media state.
pub struct Relay {
    pub trunk: Leg,
    pub agent: Leg,
    /// The trunk leg's telephone-event payload type, if negotiated.
    pub dtmf_pt: Option<u8>,
    /// The timestamp of the last event reported (ends come three times).
    last_event: Option<u32>,
    prefix: [u8; 8],
    prefix_len: usize,
    /// Per direction: our timestamp minus theirs, fixed at the first packet.
    to_agent_offset: Option<u32>,
    to_trunk_offset: Option<u32>,
    to_agent_base: u32,
    to_trunk_base: u32,
}

/// Why a packet was not relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayError {
    /// Dropped on receipt (source, SRTP, syntax): counted by reason.
    Dropped(Dropped),
    /// Could not be built (buffer too small, SRTP index exhausted).
    Build(SrtpError),
}

impl Relay {
    /// A relay for `flow`, with the agent leg keyed from `key` (the one
    /// sent to the agent in the offer; each direction derives its own). `ssrc`, `seq` and the timestamp bases
    /// are the gateway's, random per call.
    pub fn new(
        trunk: Leg,
        key: &MasterKey,
        flow: u64,
        ssrc: u32,
        seq: u16,
        bases: (u32, u32),
    ) -> Result<Self, SrtpError> {
        let cfg = SrtpConfig::default();
        let srtp = (
            SrtpReceiver::new(&key.for_way(Way::FromAgent)?, cfg)?,
            SrtpSender::new(&key.for_way(Way::ToAgent)?, cfg)?,
        );
        let mut prefix = [0u8; 8];
        let prefix_len = put_varint(flow, &mut prefix).ok_or(SrtpError::KeyLength)?;
        Ok(Self {
            trunk,
            agent: Leg::new(AGENT_PEER, 8000, ssrc, seq, Some(srtp)),
            dtmf_pt: None,
            last_event: None,
            prefix,
            prefix_len,
            to_agent_offset: None,
            to_trunk_offset: None,
            to_agent_base: bases.0,
            to_trunk_base: bases.1,
        })
    }

    /// The flow identifier's bytes that start each datagram.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix[..self.prefix_len]
    }

    /// A trunk packet from `from` in `buf` becomes a datagram payload in
    /// `out` (flow identifier, then SRTP), or a DTMF event.
    pub fn trunk_to_agent(
        &mut self,
        from: SocketAddr,
        buf: &mut [u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<Relayed, RelayError> {
        let p = self
            .trunk
            .recv_rtp(from, buf, now)
            .map_err(RelayError::Dropped)?;
        if Some(p.payload_type) == self.dtmf_pt {
            let e = &buf[p.payload_offset..p.payload_offset + p.payload_len];
            if e.len() < 4 || e[1] & 0x80 == 0 || self.last_event == Some(p.timestamp) {
                return Ok(Relayed::Nothing);
            }
            self.last_event = Some(p.timestamp);
            let duration = u16::from_be_bytes([e[2], e[3]]) / 8; // 8 kHz clock
            return Ok(match dtmf_digit(e[0]) {
                Some(digit) => Relayed::Dtmf {
                    digit,
                    duration_ms: duration,
                },
                None => Relayed::Nothing,
            });
        }
        let off = *self
            .to_agent_offset
            .get_or_insert(self.to_agent_base.wrapping_sub(p.timestamp));
        let n = self.prefix_len;
        if out.len() < n {
            return Err(RelayError::Build(SrtpError::BufferTooSmall));
        }
        out[..n].copy_from_slice(&self.prefix[..n]);
        let payload = &buf[p.payload_offset..p.payload_offset + p.payload_len];
        let m = self
            .agent
            .build_rtp(
                &mut out[n..],
                p.payload_type,
                p.marker,
                p.timestamp.wrapping_add(off),
                payload,
            )
            .map_err(RelayError::Build)?;
        Ok(Relayed::Datagram(n + m))
    }

    /// A DTMF digit from the agent as RFC 4733 packets on the trunk leg,
    /// at the stream's current timestamp: a start (marker set) and the end
    /// three times, each handed to `emit` as it is built in `out`.
    pub fn dtmf_to_trunk(
        &mut self,
        digit: char,
        duration_ms: u16,
        out: &mut [u8],
        mut emit: impl FnMut(&[u8]),
    ) -> Result<(), RelayError> {
        let (Some(pt), Some(event)) = (self.dtmf_pt, dtmf_event(digit)) else {
            return Err(RelayError::Build(SrtpError::KeyLength));
        };
        let ts = match self.to_trunk_offset {
            Some(_) => self.trunk.last_timestamp(),
            None => self.to_trunk_base,
        };
        let duration = duration_ms.saturating_mul(8).to_be_bytes();
        for (i, end) in [false, true, true, true].into_iter().enumerate() {
            let payload = [
                event,
                if end { 0x80 | 10 } else { 10 },
                duration[0],
                duration[1],
            ];
            let n = self
                .trunk
                .build_rtp(out, pt, i == 0, ts, &payload)
                .map_err(RelayError::Build)?;
            emit(&out[..n]);
        }
        Ok(())
    }

    /// An agent's SRTP packet (the datagram after its flow identifier) in
    /// `pkt` becomes an RTP packet for the trunk in `out`; returns its
    /// length.
    pub fn agent_to_trunk(
        &mut self,
        pkt: &mut [u8],
        now: Instant,
        out: &mut [u8],
    ) -> Result<usize, RelayError> {
        let p = self
            .agent
            .recv_rtp(AGENT_PEER, pkt, now)
            .map_err(RelayError::Dropped)?;
        let off = *self
            .to_trunk_offset
            .get_or_insert(self.to_trunk_base.wrapping_sub(p.timestamp));
        let payload = &pkt[p.payload_offset..p.payload_offset + p.payload_len];
        self.trunk
            .build_rtp(
                out,
                p.payload_type,
                p.marker,
                p.timestamp.wrapping_add(off),
                payload,
            )
            .map_err(RelayError::Build)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::protocol::split_datagram;
    use crate::media::srtp::Suite;

    fn rtp(seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn dtmf_both_ways() {
        let carrier: SocketAddr = "192.0.2.7:30000".parse().expect("addr");
        let key = MasterKey::random(Suite::AeadAes128Gcm).expect("key");
        let trunk = Leg::new(carrier, 8000, 0x1111, 100, None);
        let mut r = Relay::new(trunk, &key, 1, 2, 3, (5000, 9000)).expect("relay");
        r.dtmf_pt = Some(101);
        let now = Instant::now();
        let mut out = [0u8; 1500];
        // A '#' from the carrier: start, an update, the end three times.
        let mut seen = Vec::new();
        for (i, flags) in [0x0au8, 0x0a, 0x8a, 0x8a, 0x8a].into_iter().enumerate() {
            let mut p = rtp(10 + i as u16, 8000, 0xabcd, &[11, flags, 0x06, 0x40]);
            p[1] = 101;
            seen.push(
                r.trunk_to_agent(carrier, &mut p, now, &mut out)
                    .expect("ok"),
            );
        }
        assert_eq!(
            seen,
            [
                Relayed::Nothing,
                Relayed::Nothing,
                Relayed::Dtmf {
                    digit: '#',
                    duration_ms: 200
                },
                Relayed::Nothing,
                Relayed::Nothing
            ]
        );
        // A '5' from the agent: four packets, one timestamp, marker first,
        // end bit on the last three.
        let mut sent = Vec::new();
        r.dtmf_to_trunk('5', 160, &mut out, |p| sent.push(p.to_vec()))
            .expect("sent");
        assert_eq!(sent.len(), 4);
        let ts: Vec<u32> = sent
            .iter()
            .map(|p| crate::media::rtp::parse(p).expect("rtp").timestamp())
            .collect();
        assert!(ts.iter().all(|t| *t == 9000));
        for (i, p) in sent.iter().enumerate() {
            let q = crate::media::rtp::parse(p).expect("rtp");
            assert_eq!(q.payload_type(), 101);
            assert_eq!(q.marker(), i == 0);
            assert_eq!(q.payload()[0], 5);
            assert_eq!(q.payload()[1] & 0x80 != 0, i > 0);
            assert_eq!(u16::from_be_bytes([q.payload()[2], q.payload()[3]]), 1280);
        }
        assert!(r.dtmf_to_trunk('x', 160, &mut out, |_| {}).is_err());
        for d in "0123456789*#ABCD".chars() {
            assert_eq!(dtmf_event(d).and_then(dtmf_digit), Some(d));
        }
    }

    /// Issue 14 item 16: one key both ways let an agent with the
    /// gateway's SSRC reuse AES-GCM nonces. Each way now has its own key:
    /// the same header sealed each way gives different bytes, and the
    /// gateway's own packet reflected back to it does not open.
    #[test]
    fn each_direction_has_its_own_key() {
        let key = MasterKey::random(Suite::AeadAes128Gcm).expect("key");
        let cfg = SrtpConfig::default();
        let (to, from) = (
            key.for_way(Way::ToAgent).expect("key"),
            key.for_way(Way::FromAgent).expect("key"),
        );
        assert!(!to.same_as(&from) && !to.same_as(&key));
        // Deterministic: the agent derives the same keys.
        assert!(to.same_as(&key.for_way(Way::ToAgent).expect("key")));
        let seal = |k: &MasterKey| {
            let mut tx = SrtpSender::new(k, cfg).expect("tx");
            let mut p = rtp(7, 160, 0x2222, &[0x55; 160]);
            p.resize(p.len() + 16, 0);
            let n = tx.seal_rtp(&mut p, 172).expect("sealed");
            p.truncate(n);
            p
        };
        let (a, b) = (seal(&to), seal(&from));
        assert_ne!(a[12..], b[12..], "same SSRC and sequence, different keys");
        let carrier: SocketAddr = "192.0.2.7:30000".parse().expect("addr");
        let trunk = Leg::new(carrier, 8000, 0x1111, 100, None);
        let mut r = Relay::new(trunk, &key, 300, 0x2222, 7, (5000, 9000)).expect("relay");
        let mut reflected = a.clone();
        let mut out = [0u8; 1500];
        assert!(
            r.agent_to_trunk(&mut reflected, Instant::now(), &mut out)
                .is_err(),
            "the gateway's own packet reflected back is refused"
        );
    }

    /// Both directions through the relay, with the agent's side played by
    /// a second SRTP context keyed as the offer would key it.
    #[test]
    fn relays_both_ways_sealed_towards_the_agent() {
        let carrier: SocketAddr = "192.0.2.7:30000".parse().expect("addr");
        let key = MasterKey::random(Suite::AeadAes128Gcm).expect("key");
        let agent_key = MasterKey::from_concatenated(Suite::AeadAes128Gcm, &key.to_concatenated())
            .expect("key");
        let trunk = Leg::new(carrier, 8000, 0x1111, 100, None);
        let mut r = Relay::new(trunk, &key, 300, 0x2222, 7, (5000, 9000)).expect("relay");
        assert_eq!(r.prefix(), &[0x41, 0x2c]);
        let cfg = SrtpConfig::default();
        let mut agent_rx =
            SrtpReceiver::new(&agent_key.for_way(Way::ToAgent).expect("key"), cfg).expect("rx");
        let mut agent_tx =
            SrtpSender::new(&agent_key.for_way(Way::FromAgent).expect("key"), cfg).expect("tx");
        let now = Instant::now();
        let mut out = [0u8; 1500];
        for i in 0..50u16 {
            let payload = [i as u8; 160];
            let mut pkt = rtp(1000 + i, 80_000 + u32::from(i) * 160, 0xabcd, &payload);
            let Ok(Relayed::Datagram(n)) = r.trunk_to_agent(carrier, &mut pkt, now, &mut out)
            else {
                panic!("not relayed")
            };
            let (flow, sealed) = split_datagram(&out[..n]).expect("framed");
            assert_eq!(flow, 300);
            assert!(
                !sealed.windows(160).any(|w| w == payload),
                "payload in clear"
            );
            let mut sealed = sealed.to_vec();
            let len = agent_rx.open_rtp(&mut sealed).expect("the agent opens it");
            let p = crate::media::rtp::parse(&sealed[..len]).expect("rtp");
            assert_eq!(p.payload(), payload);
            assert_eq!(p.ssrc(), 0x2222);
            assert_eq!(p.sequence(), 7 + i);
            assert_eq!(p.timestamp(), 5000 + u32::from(i) * 160);

            // The agent's packet back, sealed under its own SSRC.
            let back = [0x55u8 ^ i as u8; 160];
            let mut a = rtp(i, u32::from(i) * 160, 0x3333, &back);
            let plain_len = a.len();
            a.resize(plain_len + 16, 0);
            let sealed_len = agent_tx.seal_rtp(&mut a, plain_len).expect("seal");
            let mut out2 = [0u8; 1500];
            let m = r
                .agent_to_trunk(&mut a[..sealed_len], now, &mut out2)
                .expect("to trunk");
            let p = crate::media::rtp::parse(&out2[..m]).expect("plain rtp to the trunk");
            assert_eq!(p.payload(), back);
            assert_eq!(p.ssrc(), 0x1111);
            assert_eq!(p.timestamp(), 9000 + u32::from(i) * 160);
        }
        assert_eq!(r.trunk.counters.packets_in, 50);
        assert_eq!(r.agent.counters.packets_in, 50);
        // A packet from elsewhere, a forged and a replayed agent packet:
        // dropped with their reasons.
        let mut stray = rtp(2000, 0, 0xabcd, &[0; 160]);
        let other: SocketAddr = "198.51.100.1:30000".parse().expect("addr");
        assert_eq!(
            r.trunk_to_agent(other, &mut stray, now, &mut out),
            Err(RelayError::Dropped(Dropped::WrongSource))
        );
        let mut a = rtp(60, 0, 0x3333, &[1; 160]);
        let plain_len = a.len();
        a.resize(plain_len + 16, 0);
        let n = agent_tx.seal_rtp(&mut a, plain_len).expect("seal");
        let replay = a[..n].to_vec();
        let mut forged = a[..n].to_vec();
        forged[20] ^= 1;
        assert!(matches!(
            r.agent_to_trunk(&mut forged, now, &mut out),
            Err(RelayError::Dropped(Dropped::Srtp(_)))
        ));
        r.agent_to_trunk(&mut a[..n], now, &mut out)
            .expect("genuine");
        let mut replay = replay;
        assert_eq!(
            r.agent_to_trunk(&mut replay, now, &mut out)
                .map_err(|e| match e {
                    RelayError::Dropped(d) => d.reason(),
                    RelayError::Build(_) => "build",
                }),
            Err("replayed")
        );
    }
}
