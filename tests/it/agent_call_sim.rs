//! A whole call between a carrier and an agent through the sans-IO cores,
//! in memory with a virtual clock and no sockets: the carrier's INVITE
//! through the transaction layer and the SDP answer, the offer and the
//! answer on the agent protocol, 10 s of audio each way through the relay
//! with loss and reordering on both networks, then the carrier's BYE.
//! Deterministic: the same loss and order on every run, and the counts
//! the legs measure must match the damage done exactly.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tollgate::agent::protocol::{self, ClientMsg, Decoder, Media, Secret, ServerMsg};
use tollgate::calls::relay::{Relay, Relayed};
use tollgate::media::leg::Leg;
use tollgate::media::srtp::{MasterKey, SrtpConfig, SrtpReceiver, SrtpSender, Suite, Way};
use tollgate::media::stats::StreamStats;
use tollgate::sip::message::{Framing, Limits, Message};
use tollgate::sip::sdp::{self, Codec, Local, Sdp, SrtpMode};
use tollgate::sip::transaction::{build_response, Event, Peer, TimerConfig, Transactions};

const CARRIER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::new(192, 0, 2, 7),
    5060,
));
const CARRIER_RTP: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::new(192, 0, 2, 7),
    30000,
));

/// A small deterministic generator (xorshift) for loss and reordering.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Applies loss and adjacent swaps to a sequence of packets; returns what
/// arrives and how many were lost and swapped.
fn network<T>(packets: Vec<T>, rng: &mut Rng, loss: u64, swap: u64) -> (Vec<T>, usize, usize) {
    let mut out: Vec<T> = Vec::new();
    let mut lost = 0;
    for p in packets {
        if rng.chance(loss) {
            lost += 1;
        } else {
            out.push(p);
        }
    }
    let mut swapped = 0;
    let mut i = 1;
    while i < out.len() {
        if rng.chance(swap) {
            out.swap(i - 1, i);
            swapped += 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    (out, lost, swapped)
}

fn rtp(seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&ts.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn frame<T: serde::Serialize>(m: &T) -> Vec<u8> {
    let mut out = Vec::new();
    protocol::encode(m, &mut out);
    out
}

#[test]
fn a_whole_call_with_loss_and_reordering_on_a_virtual_clock() {
    let t0 = Instant::now();
    let limits = Limits::default();
    let peer = Peer {
        addr: CARRIER,
        reliable: false,
        tls: false,
    };
    let mut txn = Transactions::new(TimerConfig::default(), 100);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    // The carrier's INVITE reaches the transaction layer once, even sent
    // twice.
    let invite = format!(
        "INVITE sip:+442079460000@gw SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKsim1\r\n\
Max-Forwards: 70\r\n\
From: <sip:+447700900123@192.0.2.7>;tag=c1\r\n\
To: <sip:+442079460000@gw>\r\n\
Call-ID: sim-1\r\n\
CSeq: 1 INVITE\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{}",
        SDP.len(),
        SDP
    )
    .into_bytes();
    let (m, _) = Message::parse(&invite, Framing::Datagram, &limits).expect("INVITE parses");
    txn.handle_request(&m, &invite, peer, t0);
    txn.handle_request(&m, &invite, peer, t0 + Duration::from_millis(500));
    let events: Vec<Event> = std::iter::from_fn(|| txn.poll_event()).collect();
    assert_eq!(events.len(), 1, "{events:?}");
    let Event::Request { key, .. } = &events[0] else {
        panic!("{events:?}")
    };
    let offer = Sdp::parse(m.body).expect("offer");
    let neg = sdp::answer(
        &offer,
        &Local {
            address: "198.51.100.1".parse().expect("ip"),
            port: 40_000,
            codecs: vec![Codec::Pcma, Codec::Pcmu],
            srtp: SrtpMode::Offered,
            suites: vec![],
            session_id: 1,
            session_version: 1,
        },
    )
    .expect("an answer");
    assert_eq!(
        (neg.codec, neg.pt, neg.remote),
        (Codec::Pcma, 8, CARRIER_RTP)
    );
    let ringing = build_response(&m, 180, "Ringing", Some(b"gw1")).expect("180");
    txn.respond(key, ringing, t0);

    // The offer to the agent, framed, split across reads.
    let key_gw = MasterKey::random(Suite::AeadAes128Gcm).expect("key");
    let key_b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(key_gw.to_concatenated().as_slice())
    };
    let offer_msg = ServerMsg::Offer {
        call: 1,
        caller: "+********0123".into(),
        callee: "+442079460000".into(),
        media: Media {
            flow: 1,
            suite: "AEAD_AES_128_GCM".into(),
            key: Secret(key_b64),
            codec: "PCMA".into(),
            pt: 8,
            ptime: 20,
            dtmf_pt: None,
        },
    };
    let wire = frame(&offer_msg);
    let mut agent_dec = Decoder::default();
    agent_dec.push(&wire[..7]);
    assert_eq!(agent_dec.decode::<ServerMsg>(), Ok(None));
    agent_dec.push(&wire[7..]);
    let Some(ServerMsg::Offer { media, .. }) = agent_dec.decode::<ServerMsg>().expect("valid")
    else {
        panic!("not an offer")
    };
    let agent_key = {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&media.key.0)
            .expect("base64");
        MasterKey::from_concatenated(Suite::AeadAes128Gcm, &raw).expect("key")
    };
    let cfg = SrtpConfig::default();
    // Each direction's key, derived as PROTOCOL.md says.
    let mut agent_rx =
        SrtpReceiver::new(&agent_key.for_way(Way::ToAgent).expect("key"), cfg).expect("rx");
    let mut agent_tx =
        SrtpSender::new(&agent_key.for_way(Way::FromAgent).expect("key"), cfg).expect("tx");

    // The agent answers; the gateway answers the carrier.
    let mut gw_dec = Decoder::default();
    gw_dec.push(&frame(&ClientMsg::Answer { call: 1 }));
    assert_eq!(
        gw_dec.decode::<ClientMsg>().expect("valid"),
        Some(ClientMsg::Answer { call: 1 })
    );
    let t_answer = t0 + Duration::from_secs(2);
    let ok = tollgate::sip::build::response(
        &m,
        200,
        "OK",
        Some(b"gw1"),
        &[],
        Some(("application/sdp", &neg.answer)),
    )
    .expect("200");
    txn.respond(key, ok, t_answer);
    let sent: Vec<_> = std::iter::from_fn(|| txn.poll_transmit()).collect();
    assert!(sent.iter().any(|t| t.bytes.starts_with(b"SIP/2.0 180")));
    let ok_sent = sent
        .iter()
        .find(|t| t.bytes.starts_with(b"SIP/2.0 200"))
        .expect("200 sent");
    let (ok_msg, _) =
        Message::parse(&ok_sent.bytes, Framing::Datagram, &limits).expect("200 parses");
    let ans = Sdp::parse(ok_msg.body).expect("answer SDP");
    assert_eq!(ans.audio().map(|a| a.port), Some(40_000));

    // Media: 500 packets each way, 20 ms apart on the virtual clock.
    let trunk = Leg::new(CARRIER_RTP, 8000, 0x6a7e, 1000, None);
    let mut relay = Relay::new(trunk, &key_gw, 1, 0x6a7e_0001, 77, (1234, 5678)).expect("relay");
    const N: u16 = 500;
    let from_carrier: Vec<(u16, Vec<u8>)> = (0..N)
        .map(|i| {
            (
                i,
                rtp(
                    40_000u16.wrapping_add(i),
                    160 * u32::from(i),
                    0xcafe,
                    &[i as u8; 160],
                ),
            )
        })
        .collect();
    let (arrived, lost_in, swapped_in) = network(from_carrier, &mut rng, 5, 3);
    let mut out = vec![0u8; 1500];
    let mut agent_stats: Option<StreamStats> = None;
    let mut heard = Vec::new();
    let mut datagrams = Vec::new();
    for (k, (i, mut p)) in arrived.into_iter().enumerate() {
        let now = t_answer + Duration::from_millis(20 * k as u64);
        let Ok(Relayed::Datagram(n)) = relay.trunk_to_agent(CARRIER_RTP, &mut p, now, &mut out)
        else {
            panic!("not relayed")
        };
        datagrams.push((i, now, out[..n].to_vec()));
    }
    // The agent's network loses and reorders datagrams too.
    let (to_agent, lost_q, swapped_q) = network(datagrams, &mut rng, 2, 3);
    for (_, now, d) in to_agent {
        let (flow, packet) = protocol::split_datagram(&d).expect("framed");
        assert_eq!(flow, media.flow);
        let mut packet = packet.to_vec();
        let len = agent_rx
            .open_rtp(&mut packet)
            .expect("the agent opens every datagram");
        let p = tollgate::media::rtp::parse(&packet[..len]).expect("rtp");
        agent_stats
            .get_or_insert_with(|| StreamStats::new(p.ssrc(), 8000))
            .on_packet(p.sequence(), p.timestamp(), len, now);
        heard.push(p.payload()[0]);
    }
    let trunk_side = relay.trunk.stats().expect("measured").snapshot();
    assert_eq!(trunk_side.packets, u64::from(N) - lost_in as u64);
    assert_eq!(
        trunk_side.lost, lost_in as u64,
        "loss seen on the trunk leg"
    );
    assert!(
        swapped_in > 0 && trunk_side.reordered > 0,
        "reordering seen"
    );
    let agent_side = agent_stats.expect("heard").snapshot();
    // The relay renumbers: the agent sees only the QUIC path's loss.
    assert_eq!(agent_side.lost, lost_q as u64);
    assert!(swapped_q > 0 && agent_side.reordered > 0);
    assert_eq!(heard.len(), usize::from(N) - lost_in - lost_q);

    // The agent's audio back to the carrier.
    let from_agent: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let mut p = rtp(i, 160 * u32::from(i), 0xa6e7, &[0x55 ^ i as u8; 160]);
            let plain = p.len();
            p.resize(plain + 16, 0);
            let n = agent_tx.seal_rtp(&mut p, plain).expect("seal");
            p.truncate(n);
            p
        })
        .collect();
    let (arrived, lost_back, _) = network(from_agent, &mut rng, 4, 3);
    let mut carrier_stats: Option<StreamStats> = None;
    for (k, mut p) in arrived.into_iter().enumerate() {
        let now = t_answer + Duration::from_millis(20 * k as u64);
        let n = relay
            .agent_to_trunk(&mut p, now, &mut out)
            .expect("relayed");
        let r = tollgate::media::rtp::parse(&out[..n]).expect("plain RTP to the carrier");
        assert_eq!(r.ssrc(), 0x6a7e, "the gateway's SSRC, not the agent's");
        carrier_stats
            .get_or_insert_with(|| StreamStats::new(r.ssrc(), 8000))
            .on_packet(r.sequence(), r.timestamp(), n, now);
    }
    let agent_leg = relay.agent.stats().expect("measured").snapshot();
    assert_eq!(agent_leg.lost, lost_back as u64);
    assert_eq!(
        carrier_stats.expect("heard").snapshot().packets,
        u64::from(N) - lost_back as u64
    );

    // The carrier hangs up; the agent is told.
    let bye = b"BYE sip:gw SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKsim2\r\n\
Max-Forwards: 70\r\n\
From: <sip:+447700900123@192.0.2.7>;tag=c1\r\n\
To: <sip:+442079460000@gw>;tag=gw1\r\n\
Call-ID: sim-1\r\n\
CSeq: 2 BYE\r\n\
Content-Length: 0\r\n\r\n";
    let t_bye = t_answer + Duration::from_secs(10);
    let (bm, _) = Message::parse(bye, Framing::Datagram, &limits).expect("BYE parses");
    txn.handle_request(&bm, bye, peer, t_bye);
    let Some(Event::Request { key: bye_key, .. }) = txn.poll_event() else {
        panic!("BYE not delivered")
    };
    txn.respond(
        &bye_key,
        build_response(&bm, 200, "OK", None).expect("200"),
        t_bye,
    );
    assert!(std::iter::from_fn(|| txn.poll_transmit()).any(|t| t.bytes.starts_with(b"SIP/2.0 200")));
    agent_dec.push(&frame(&ServerMsg::Ended {
        call: 1,
        reason: "remote_hangup".into(),
    }));
    assert!(matches!(
        agent_dec.decode::<ServerMsg>(),
        Ok(Some(ServerMsg::Ended { call: 1, .. }))
    ));
}

const SDP: &str = "v=0\r\n\
o=carrier 1 1 IN IP4 192.0.2.7\r\n\
s=-\r\n\
c=IN IP4 192.0.2.7\r\n\
t=0 0\r\n\
m=audio 30000 RTP/AVP 8 0\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=ptime:20\r\n";
