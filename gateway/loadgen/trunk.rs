//! The carrier's side of a load run: one SIP user agent over UDP that
//! places every call (INVITE with G.711 A-law SDP, ACK, BYE at the end,
//! retransmitting an INVITE the gateway has not answered), and one RTP
//! socket that sends every call's packets, each call at its own phase of
//! the 20 ms, and receives what the gateway relays from the agents.
//!
//! One media socket serves every call: the gateway latches each call's
//! trunk leg to its own port pair, and tells calls apart by its port, as
//! the load generator does by the port the gateway's packets come from.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::payload::{self, Receiver, Sender, Tally};
use super::Shared;
use crate::sip::build::{self, RequestSpec};
use crate::sip::header::{Method, NameAddr};
use crate::sip::message::{Framing, HeaderName, Limits, Message};
use crate::sip::sdp::Sdp;

/// How often unanswered requests are looked at.
const SWEEP: Duration = Duration::from_millis(50);
/// How long a ringing call may wait for an agent.
const RING_MAX: Duration = Duration::from_secs(30);
/// An unanswered INVITE goes again after this (doubling), up to
/// [`INVITE_TRIES`] times.
const RESEND: Duration = Duration::from_millis(500);
const INVITE_TRIES: u32 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Inviting,
    Up,
    Byeing,
    Ended,
    Failed,
}

struct Call {
    call_id: String,
    from: String,
    invite: Vec<u8>,
    state: State,
    sent_at: Instant,
    tries: u32,
    /// A provisional response came: the INVITE is not sent again.
    ringing: bool,
    /// The gateway's To (with its tag) and Contact, from its 200.
    to: Vec<u8>,
    target: Vec<u8>,
    /// Our ACK for the 200 (sent again if the 200 is).
    ack: Vec<u8>,
    bye: Vec<u8>,
    media: Option<SocketAddr>,
    tx: Sender,
    rx: Receiver,
}

/// What the carrier's side saw.
#[derive(Debug, Default)]
pub struct TrunkReport {
    /// Calls the gateway answered.
    pub answered: u32,
    /// Calls it refused (a final response of 300 or more) or never
    /// answered.
    pub failed: u32,
    /// Calls the gateway hung up before the end of the run.
    pub ended_early: u32,
    /// Packets sent to the agents (`sent`), and what the agents' audio
    /// became on the trunk (the rest).
    pub to_agents_sent: u64,
    pub from_agents: Tally,
    /// RTP from a source that is no call's.
    pub stray: u64,
    /// Sends the socket refused (our side's loss, not the gateway's).
    pub send_errors: u64,
    pub latency_us: Vec<u32>,
}

/// The carrier: places `calls` calls at `rate` a second to `gw`, relays
/// media until the run says hang up, then ends every call with a BYE.
pub async fn run(
    gw: SocketAddr,
    calls: u32,
    rate: f64,
    shared: Arc<Shared>,
) -> Result<TrunkReport, String> {
    let sig = bind_udp(1 << 20)?;
    let media = bind_udp(8 << 20)?;
    let me = sig.local_addr().map_err(|e| e.to_string())?;
    let media_port = media.local_addr().map_err(|e| e.to_string())?.port();
    let sdp = format!(
        "v=0\r\no=loadgen 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {media_port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=ptime:20\r\n"
    );
    let uri = format!("sip:+442079460000@{gw}");
    let contact = format!("<sip:loadgen@{me}>");
    let mut all: Vec<Call> = Vec::with_capacity(calls as usize);
    let mut by_id: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut by_media: HashMap<SocketAddr, usize> = HashMap::new();
    let mut report = TrunkReport::default();
    let start = Instant::now();
    let (mut sbuf, mut mbuf) = (vec![0u8; 8192], vec![0u8; 2048]);
    let mut pkt = [0u8; payload::RTP_LEN];
    let mut pace = super::Pacer::new(start);
    let mut latency = Vec::new();
    let mut hanging_up: Option<Instant> = None;
    let mut next_sweep = start;
    loop {
        let now = Instant::now();
        // New calls, at the rate asked.
        let due = ((now - start).as_secs_f64() * rate).ceil() as u32;
        while (all.len() as u32) < calls.min(due) {
            let i = all.len();
            let call_id = format!("lg-{i}-{}", build::token());
            let from = format!("<sip:+4477009{i:05}@127.0.0.1>;tag=lg{i}");
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
                body: Some(("application/sdp", sdp.as_bytes())),
            });
            let _ = sig.try_send_to(&invite, gw);
            by_id.insert(call_id.clone().into_bytes(), i);
            all.push(Call {
                call_id,
                from,
                invite,
                state: State::Inviting,
                sent_at: now,
                tries: 1,
                ringing: false,
                to: Vec::new(),
                target: Vec::new(),
                ack: Vec::new(),
                bye: Vec::new(),
                media: None,
                tx: Sender::new(i as u32, 8),
                rx: Receiver::default(),
            });
        }
        // Unanswered INVITEs again; BYEs unanswered too.
        if now >= next_sweep {
            next_sweep = now + SWEEP;
            for c in all.iter_mut() {
                c.resend(&sig, gw, now);
            }
            shared.calls_up.store(
                all.iter().filter(|c| c.state == State::Up).count() as u32,
                Ordering::Relaxed,
            );
        }
        // The run is over: BYE every call once.
        if shared.hangup.load(Ordering::Relaxed) && hanging_up.is_none() {
            hanging_up = Some(now);
            for c in all.iter_mut().filter(|c| c.state == State::Up) {
                c.bye = c.in_dialog("BYE", 2, me);
                let _ = sig.try_send_to(&c.bye, gw);
                c.state = State::Byeing;
                c.sent_at = now;
                c.tries = 1;
            }
        }
        if let Some(t) = hanging_up {
            let open = all
                .iter()
                .any(|c| matches!(c.state, State::Byeing | State::Inviting));
            if !open || now.duration_since(t) > Duration::from_secs(10) {
                break;
            }
        }
        // This slot's packets.
        if let Some(k) = pace.due(now) {
            let window = shared.window();
            for c in all.iter_mut().skip(k).step_by(super::Pacer::SLOTS) {
                let (State::Up, Some(to)) = (c.state, c.media) else {
                    continue;
                };
                let sent_ns = shared.ns(Instant::now());
                c.tx.next(&mut pkt, sent_ns);
                match media.try_send_to(&pkt, to) {
                    Ok(_) if window.holds(sent_ns) => report.to_agents_sent += 1,
                    Ok(_) => {}
                    Err(_) => report.send_errors += 1,
                }
            }
            continue;
        }
        tokio::select! {
            r = sig.recv_from(&mut sbuf) => {
                let Ok((len, from)) = r else { continue };
                let reply = answer(&sbuf[..len], &mut all, &by_id, &mut by_media, &mut report, gw, me);
                if let Some(r) = reply {
                    let _ = sig.try_send_to(&r, from);
                }
            }
            r = media.recv_from(&mut mbuf) => {
                let window = shared.window();
                let mut got = r.ok();
                while let Some((len, from)) = got {
                    let now_ns = shared.ns(Instant::now());
                    match by_media.get(&from).and_then(|&i| all.get_mut(i)) {
                        Some(c) if len > 12 => c.rx.take(&mbuf[12..len], now_ns, window, &mut latency),
                        _ => report.stray += 1,
                    }
                    got = media.try_recv_from(&mut mbuf).ok();
                }
            }
            () = tokio::time::sleep_until(pace.next().min(next_sweep).into()) => {}
        }
    }
    for c in &all {
        report.from_agents.add(&c.rx.tally);
        match c.state {
            State::Failed => report.failed += 1,
            State::Inviting => report.failed += 1,
            _ => {}
        }
    }
    report.latency_us = latency;
    Ok(report)
}

impl Call {
    /// A request in the call's dialog (ACK, BYE), from `me`.
    fn in_dialog(&self, method: &str, cseq: u32, me: SocketAddr) -> Vec<u8> {
        build::request(&RequestSpec {
            method,
            uri: &self.target,
            via: me,
            transport: "UDP",
            branch: build::branch().as_bytes(),
            from: self.from.as_bytes(),
            to: &self.to,
            call_id: self.call_id.as_bytes(),
            cseq,
            extra: &[],
            body: None,
        })
    }

    /// Sends an unanswered INVITE or BYE again (doubling the wait), or
    /// gives up on it.
    fn resend(&mut self, sig: &UdpSocket, gw: SocketAddr, now: Instant) {
        let waited = now.duration_since(self.sent_at);
        match self.state {
            State::Inviting if self.ringing && waited > RING_MAX => self.state = State::Failed,
            State::Inviting if self.ringing => {}
            State::Inviting | State::Byeing if waited < RESEND * (1 << self.tries.min(6)) => {}
            State::Inviting if self.tries >= INVITE_TRIES => self.state = State::Failed,
            State::Byeing if self.tries >= INVITE_TRIES => self.state = State::Ended,
            State::Inviting | State::Byeing => {
                let again = if self.state == State::Inviting {
                    &self.invite
                } else {
                    &self.bye
                };
                let _ = sig.try_send_to(again, gw);
                self.sent_at = now;
                self.tries += 1;
            }
            _ => {}
        }
    }
}

/// Handles one SIP message from the gateway; returns what to send back.
fn answer(
    buf: &[u8],
    all: &mut [Call],
    by_id: &HashMap<Vec<u8>, usize>,
    by_media: &mut HashMap<SocketAddr, usize>,
    report: &mut TrunkReport,
    gw: SocketAddr,
    me: SocketAddr,
) -> Option<Vec<u8>> {
    let (m, _) = Message::parse(buf, Framing::Datagram, &Limits::default()).ok()?;
    let i = *by_id.get(m.call_id()?)?;
    let c = all.get_mut(i)?;
    let Some(code) = m.status() else {
        // The gateway's own request: a BYE ends the call; anything else
        // (OPTIONS) is answered too.
        if m.method() == Some(Method::Bye) && c.state == State::Up {
            c.state = State::Ended;
            report.ended_early += 1;
        }
        return build::response(&m, 200, "OK", None, &[], None);
    };
    let method = m.cseq()?.ok()?.method;
    match (method, code) {
        (Method::Invite, 100..=199) => {
            // Stop resending; wait for an agent (bounded by RING_MAX).
            if !c.ringing {
                c.ringing = true;
                c.sent_at = Instant::now();
            }
            None
        }
        (Method::Invite, 200..=299) => {
            if c.state == State::Inviting {
                c.to = m.header(HeaderName::To)?.value.to_vec();
                c.target = m
                    .values(HeaderName::Contact)
                    .next()
                    .and_then(|v| NameAddr::parse(v).ok())
                    .map(|n| n.uri_bytes.to_vec())
                    .unwrap_or_else(|| format!("sip:{gw}").into_bytes());
                c.ack = c.in_dialog("ACK", 1, me);
                c.media = remote_media(m.body);
                if let Some(a) = c.media {
                    by_media.insert(a, i);
                }
                c.state = State::Up;
                report.answered += 1;
            }
            Some(c.ack.clone())
        }
        (Method::Invite, _) => {
            c.state = State::Failed;
            None
        }
        (Method::Bye, _) => {
            c.state = State::Ended;
            None
        }
        _ => None,
    }
}

fn remote_media(body: &[u8]) -> Option<SocketAddr> {
    let s = Sdp::parse(body).ok()?;
    let a = s.audio()?;
    Some(SocketAddr::new(a.connection.or(s.connection)?, a.port))
}

/// A loopback UDP socket with `buf` bytes of kernel buffer each way (as
/// much as the system allows).
pub(super) fn bind_udp(buf: usize) -> Result<UdpSocket, String> {
    UdpSocket::from_std(bind_std_udp(buf)?).map_err(|e| e.to_string())
}

/// [`bind_udp`], not yet registered with a runtime.
pub(super) fn bind_std_udp(buf: usize) -> Result<std::net::UdpSocket, String> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(|e| e.to_string())?;
    let _ = s.set_recv_buffer_size(buf);
    let _ = s.set_send_buffer_size(buf);
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .map_err(|e| e.to_string())?;
    Ok(s.into())
}
