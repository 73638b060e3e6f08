//! The reference run: the same carrier RTP pump through rtpengine (its
//! userspace relay, driven over its ng control protocol on loopback),
//! with the agents' side as plain UDP endpoints speaking SDES SRTP
//! AEAD_AES_128_GCM. rtpengine does less than Tollgate (no QUIC, no
//! agent sessions); the ratio of the two figures says what Tollgate's
//! extra work costs.
//!
//! Per call: an `offer` with the carrier's RTP/AVP SDP asking for
//! RTP/SAVP on the other side (rtpengine answers with its port and its
//! SDES keys; we take the AEAD_AES_128_GCM one), an `answer` with our
//! agent's RTP/SAVP SDP and key (rtpengine answers with its carrier-side
//! port), and a `delete` at the end. The ng protocol is bencode over UDP,
//! written here (a few dozen lines; no crate of ours speaks it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use tokio::net::UdpSocket;

use super::payload::{self, Receiver, Sender, Tally};
use super::Shared;
use crate::media::srtp::{MasterKey, SrtpConfig, SrtpReceiver, SrtpSender, Suite};

/// A bencoded value (the ng protocol's messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bencode {
    Bytes(Vec<u8>),
    Int(i64),
    List(Vec<Bencode>),
    /// Keys in the order given (bencode wants them sorted: the encoder
    /// sorts).
    Dict(Vec<(Vec<u8>, Bencode)>),
}

impl Bencode {
    pub fn str(s: &str) -> Self {
        Self::Bytes(s.as_bytes().to_vec())
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Bytes(b) => {
                out.extend_from_slice(b.len().to_string().as_bytes());
                out.push(b':');
                out.extend_from_slice(b);
            }
            Self::Int(i) => {
                out.push(b'i');
                out.extend_from_slice(i.to_string().as_bytes());
                out.push(b'e');
            }
            Self::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode(out);
                }
                out.push(b'e');
            }
            Self::Dict(d) => {
                let mut d: Vec<&(Vec<u8>, Bencode)> = d.iter().collect();
                d.sort_by(|a, b| a.0.cmp(&b.0));
                out.push(b'd');
                for (k, v) in d {
                    Self::Bytes(k.clone()).encode(out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// Decodes one value from the start of `b`; returns it and the rest.
    /// Nesting is bounded (a hostile peer cannot exhaust the stack).
    pub fn decode(b: &[u8]) -> Option<(Self, &[u8])> {
        Self::decode_at(b, 0)
    }

    fn decode_at(b: &[u8], depth: u32) -> Option<(Self, &[u8])> {
        if depth > 32 {
            return None;
        }
        match *b.first()? {
            b'i' => {
                let end = b.iter().position(|&c| c == b'e')?;
                let v = std::str::from_utf8(&b[1..end]).ok()?.parse().ok()?;
                Some((Self::Int(v), &b[end + 1..]))
            }
            b'l' => {
                let mut rest = &b[1..];
                let mut l = Vec::new();
                while *rest.first()? != b'e' {
                    let (v, r) = Self::decode_at(rest, depth + 1)?;
                    l.push(v);
                    rest = r;
                }
                Some((Self::List(l), &rest[1..]))
            }
            b'd' => {
                let mut rest = &b[1..];
                let mut d = Vec::new();
                while *rest.first()? != b'e' {
                    let (Self::Bytes(k), r) = Self::decode_at(rest, depth + 1)? else {
                        return None;
                    };
                    let (v, r) = Self::decode_at(r, depth + 1)?;
                    d.push((k, v));
                    rest = r;
                }
                Some((Self::Dict(d), &rest[1..]))
            }
            b'0'..=b'9' => {
                let colon = b.iter().position(|&c| c == b':')?;
                let n: usize = std::str::from_utf8(&b[..colon]).ok()?.parse().ok()?;
                let end = colon.checked_add(1)?.checked_add(n)?;
                let body = b.get(colon + 1..end)?;
                Some((Self::Bytes(body.to_vec()), &b[end..]))
            }
            _ => None,
        }
    }

    /// A dictionary's value for `key`, as text.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        let Self::Dict(d) = self else { return None };
        d.iter().find_map(|(k, v)| match v {
            Self::Bytes(b) if k == key.as_bytes() => std::str::from_utf8(b).ok(),
            _ => None,
        })
    }
}

fn dict(pairs: &[(&str, Bencode)]) -> Bencode {
    Bencode::Dict(
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
            .collect(),
    )
}

/// One ng request and its answer (sent again twice if none comes).
async fn ng(
    sock: &UdpSocket,
    to: SocketAddr,
    cookie: &str,
    msg: &Bencode,
) -> Result<Bencode, String> {
    let mut out = format!("{cookie} ").into_bytes();
    msg.encode(&mut out);
    let mut buf = vec![0u8; 65536];
    for _ in 0..3 {
        sock.send_to(&out, to).await.map_err(|e| e.to_string())?;
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(r) = tokio::time::timeout_at(until, sock.recv_from(&mut buf)).await {
            let (n, _) = r.map_err(|e| e.to_string())?;
            let Some(body) = buf[..n].strip_prefix(format!("{cookie} ").as_bytes()) else {
                continue; // an answer to an earlier try
            };
            let (v, _) = Bencode::decode(body).ok_or("rtpengine sent bad bencode")?;
            return match v.get_str("result") {
                Some("ok") => Ok(v),
                _ => Err(format!(
                    "rtpengine refused: {}",
                    v.get_str("error-reason").unwrap_or("no reason given")
                )),
            };
        }
    }
    Err("rtpengine did not answer".into())
}

/// An SDES crypto line's tag and key (with its salt).
type Sdes = (String, Vec<u8>);

/// The port of an SDP's audio, and the tag and key of its
/// AEAD_AES_128_GCM crypto line if it has one.
fn media_of(sdp: &str) -> Option<(u16, Option<Sdes>)> {
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    let crypto = sdp.lines().find_map(|l| {
        let rest = l.strip_prefix("a=crypto:")?;
        let mut f = rest.split_whitespace();
        let tag = f.next()?;
        (f.next()? == "AEAD_AES_128_GCM").then_some(())?;
        let key = f.next()?.strip_prefix("inline:")?.split('|').next()?;
        let b = base64::engine::general_purpose::STANDARD
            .decode(key)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(key))
            .ok()?;
        Some((tag.to_string(), b))
    });
    Some((port, crypto))
}

struct Call {
    id: String,
    /// rtpengine's ports: where the carrier sends, where the agent sends.
    to_trunk_side: SocketAddr,
    to_agent_side: SocketAddr,
    trunk_tx: Sender,
    agent_tx: Sender,
    seal: SrtpSender,
    open: SrtpReceiver,
    at_trunk: Receiver,
    at_agent: Receiver,
}

/// What the reference run saw, as the Tollgate run reports it.
#[derive(Debug, Default)]
pub struct RtpengineReport {
    pub answered: u32,
    pub to_agents: Tally,
    pub to_trunk: Tally,
    pub latency_to_agents: Vec<u32>,
    pub latency_to_trunk: Vec<u32>,
    pub stray: u64,
    pub send_errors: u64,
    pub undecodable: u64,
}

/// Sets up `calls` calls on the rtpengine at `ng_addr`, relays until the
/// run says hang up, then deletes them.
pub async fn run(
    ng_addr: SocketAddr,
    calls: u32,
    shared: Arc<Shared>,
) -> Result<RtpengineReport, String> {
    let control = super::trunk::bind_udp(1 << 20)?;
    let trunk = super::trunk::bind_udp(8 << 20)?;
    let agent = super::trunk::bind_udp(8 << 20)?;
    let trunk_port = trunk.local_addr().map_err(|e| e.to_string())?.port();
    let agent_port = agent.local_addr().map_err(|e| e.to_string())?.port();
    let cfg = SrtpConfig::default();
    let mut all = Vec::with_capacity(calls as usize);
    let mut report = RtpengineReport::default();
    for i in 0..calls {
        let id = format!("lg-{i}-{}", crate::sip::build::token());
        let offer_sdp = format!(
            "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {trunk_port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=ptime:20\r\n"
        );
        let offered = ng(
            &control,
            ng_addr,
            &format!("o{id}"),
            &dict(&[
                ("command", Bencode::str("offer")),
                ("call-id", Bencode::str(&id)),
                ("from-tag", Bencode::str("carrier")),
                ("sdp", Bencode::str(&offer_sdp)),
                ("transport-protocol", Bencode::str("RTP/SAVP")),
                ("ICE", Bencode::str("remove")),
            ]),
        )
        .await?;
        let (agent_side, crypto) = offered
            .get_str("sdp")
            .and_then(media_of)
            .ok_or("rtpengine's offer has no audio")?;
        let (tag, their_key) = crypto.ok_or("rtpengine offered no AEAD_AES_128_GCM key")?;
        let mut ours = [0u8; 28];
        crate::crypto::random(&mut ours).map_err(|_| "no randomness")?;
        let answer_sdp = format!(
            "v=0\r\no=agent 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {agent_port} RTP/SAVP 8\r\na=rtpmap:8 PCMA/8000\r\na=ptime:20\r\n\
a=crypto:{tag} AEAD_AES_128_GCM inline:{}\r\n",
            base64::engine::general_purpose::STANDARD.encode(ours)
        );
        let answered = ng(
            &control,
            ng_addr,
            &format!("a{id}"),
            &dict(&[
                ("command", Bencode::str("answer")),
                ("call-id", Bencode::str(&id)),
                ("from-tag", Bencode::str("carrier")),
                ("to-tag", Bencode::str("agent")),
                ("sdp", Bencode::str(&answer_sdp)),
            ]),
        )
        .await?;
        let (trunk_side, _) = answered
            .get_str("sdp")
            .and_then(media_of)
            .ok_or("rtpengine's answer has no audio")?;
        let key = |b: &[u8]| {
            MasterKey::from_concatenated(Suite::AeadAes128Gcm, b)
                .map_err(|e| format!("SDES key: {e:?}"))
        };
        all.push(Call {
            id,
            to_trunk_side: SocketAddr::from(([127, 0, 0, 1], trunk_side)),
            to_agent_side: SocketAddr::from(([127, 0, 0, 1], agent_side)),
            trunk_tx: Sender::new(i, 8),
            agent_tx: Sender::new(payload::AGENT | i, 8),
            seal: SrtpSender::new(&key(&ours)?, cfg).map_err(|e| format!("{e:?}"))?,
            open: SrtpReceiver::new(&key(&their_key)?, cfg).map_err(|e| format!("{e:?}"))?,
            at_trunk: Receiver::default(),
            at_agent: Receiver::default(),
        });
        report.answered += 1;
        shared.calls_up.store(report.answered, Ordering::Relaxed);
        shared
            .agents_answered
            .store(report.answered, Ordering::Relaxed);
    }
    // Packets come from the port they were sent to.
    let by_trunk_side: HashMap<SocketAddr, usize> = all
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_trunk_side, i))
        .collect();
    let by_agent_side: HashMap<SocketAddr, usize> = all
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_agent_side, i))
        .collect();
    let mut pace = super::Pacer::new(Instant::now());
    let mut pkt = [0u8; payload::RTP_LEN + 16];
    let (mut tbuf, mut abuf) = (vec![0u8; 2048], vec![0u8; 2048]);
    let mut hangup_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if hangup_at.is_none() && shared.hangup.load(Ordering::Relaxed) {
            hangup_at = Some(now);
        }
        if hangup_at.is_some_and(|t| now.duration_since(t) > Duration::from_millis(100)) {
            break;
        }
        if let Some(k) = pace.due(now) {
            let window = shared.window();
            for c in all.iter_mut().skip(k).step_by(super::Pacer::SLOTS) {
                let sent_ns = shared.ns(Instant::now());
                let rtp: &mut [u8; payload::RTP_LEN] = (&mut pkt[..payload::RTP_LEN])
                    .try_into()
                    .map_err(|_| "packet size")?;
                c.trunk_tx.next(rtp, sent_ns);
                match trunk.try_send_to(rtp, c.to_trunk_side) {
                    Ok(_) if window.holds(sent_ns) => report.to_agents.sent += 1,
                    Ok(_) => {}
                    Err(_) => report.send_errors += 1,
                }
                c.agent_tx.next(rtp, sent_ns);
                let Ok(n) = c.seal.seal_rtp(&mut pkt, payload::RTP_LEN) else {
                    report.send_errors += 1;
                    continue;
                };
                match agent.try_send_to(&pkt[..n], c.to_agent_side) {
                    Ok(_) if window.holds(sent_ns) => report.to_trunk.sent += 1,
                    Ok(_) => {}
                    Err(_) => report.send_errors += 1,
                }
            }
            continue;
        }
        tokio::select! {
            r = trunk.recv_from(&mut tbuf) => {
                let window = shared.window();
                let mut got = r.ok();
                while let Some((len, from)) = got {
                    let now_ns = shared.ns(Instant::now());
                    match by_trunk_side.get(&from).and_then(|&i| all.get_mut(i)) {
                        Some(c) if len > 12 => c.at_trunk.take(&tbuf[12..len], now_ns, window, &mut report.latency_to_trunk),
                        _ => report.stray += 1,
                    }
                    got = trunk.try_recv_from(&mut tbuf).ok();
                }
            }
            r = agent.recv_from(&mut abuf) => {
                let window = shared.window();
                let mut got = r.ok();
                while let Some((len, from)) = got {
                    let now_ns = shared.ns(Instant::now());
                    match by_agent_side.get(&from).and_then(|&i| all.get_mut(i)) {
                        Some(c) => match c.open.open_rtp(&mut abuf[..len]) {
                            Ok(n) if n > 12 => c.at_agent.take(&abuf[12..n], now_ns, window, &mut report.latency_to_agents),
                            _ => report.undecodable += 1,
                        },
                        None => report.stray += 1,
                    }
                    got = agent.try_recv_from(&mut abuf).ok();
                }
            }
            () = tokio::time::sleep_until(pace.next().into()) => {}
        }
    }
    // An rtpengine that stopped answering is not asked again per call (each
    // ask waits six seconds).
    let mut answering = true;
    for c in &all {
        report.to_agents.add(&Tally {
            sent: 0,
            ..c.at_agent.tally.clone()
        });
        report.to_trunk.add(&Tally {
            sent: 0,
            ..c.at_trunk.tally.clone()
        });
        if !answering {
            continue;
        }
        answering = ng(
            &control,
            ng_addr,
            &format!("d{}", c.id),
            &dict(&[
                ("command", Bencode::str("delete")),
                ("call-id", Bencode::str(&c.id)),
                ("from-tag", Bencode::str("carrier")),
            ]),
        )
        .await
        .is_ok();
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bencode_round_trips_with_sorted_keys() {
        let v = dict(&[
            ("sdp", Bencode::str("v=0")),
            ("command", Bencode::str("offer")),
            (
                "flags",
                Bencode::List(vec![Bencode::str("a"), Bencode::Int(-3)]),
            ),
        ]);
        let mut out = Vec::new();
        v.encode(&mut out);
        assert_eq!(
            out,
            b"d7:command5:offer5:flagsl1:ai-3ee3:sdp3:v=0e".to_vec()
        );
        let (back, rest) = Bencode::decode(&out).expect("decodes");
        assert!(rest.is_empty());
        assert_eq!(back.get_str("command"), Some("offer"));
        assert_eq!(back.get_str("sdp"), Some("v=0"));
    }

    #[test]
    fn bencode_refuses_what_is_not_whole_or_too_deep() {
        assert_eq!(Bencode::decode(b"5:abc"), None);
        assert_eq!(Bencode::decode(b"d3:key"), None);
        assert_eq!(Bencode::decode(b"x"), None);
        assert_eq!(Bencode::decode(b"18446744073709551615:abc"), None);
        let deep = format!("{}{}", "l".repeat(100), "e".repeat(100));
        assert_eq!(Bencode::decode(deep.as_bytes()), None);
    }

    #[test]
    fn the_aead_key_and_port_are_read_from_an_sdp() {
        let key = [7u8; 28];
        let sdp = format!(
            "v=0\r\nm=audio 30000 RTP/SAVP 8\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA\r\n\
a=crypto:3 AEAD_AES_128_GCM inline:{}\r\n",
            base64::engine::general_purpose::STANDARD.encode(key)
        );
        assert_eq!(
            media_of(&sdp),
            Some((30000, Some(("3".into(), key.to_vec()))))
        );
        assert_eq!(media_of("m=audio 4000 RTP/AVP 8\r\n"), Some((4000, None)));
    }
}
