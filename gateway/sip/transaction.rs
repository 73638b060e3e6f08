//! SIP transactions (RFC 3261 section 17, with RFC 6026's Accepted state),
//! sans-IO: the layer takes messages and an injected `now`, and hands back
//! what to send and what happened. Tests drive its timers with a virtual
//! clock.
//!
//! # Driver contract
//!
//! Inputs: [`Transactions::handle_request`], [`Transactions::handle_response`]
//! (messages received from the network), [`Transactions::start_client`],
//! [`Transactions::respond`] (the transaction user's requests and
//! responses) and [`Transactions::handle_timeout`]. After any input, drain
//! [`Transactions::poll_transmit`] and [`Transactions::poll_event`] until
//! they return `None`, then sleep until [`Transactions::poll_timeout`].
//! Time going backwards is ignored.
//!
//! Timers (T1 = 500 ms, T2 = 4 s, T4 = 5 s by default; all configurable):
//! A/E retransmit client requests over unreliable transports, doubling
//! from T1 (E capped at T2); B/F time a client transaction out after 64*T1;
//! D (32 s) and K (T4) absorb response retransmissions after a final; G
//! retransmits a server's INVITE final response until H (64*T1) or an ACK;
//! I (T4) absorbs ACKs; J (64*T1) absorbs non-INVITE retransmissions; L and
//! M (64*T1) absorb INVITE and 2xx retransmissions after a 2xx (RFC 6026).
//! Over reliable transports the retransmission timers are off and D, I, J
//! and K are zero, as RFC 3261 says.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::build::push_value;
use super::header::Method;
use super::message::{push_u64, Framing, HeaderName, Limits, Message};
use crate::deadlines::Table;

/// Timer base values. Defaults: T1 500 ms, T2 4 s, T4 5 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerConfig {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// Where a message goes (or came from), whether the transport is
/// reliable (TCP, TLS) or not (UDP), and whether it is TLS: a TLS peer is
/// only ever reached over TLS, never over a new plain connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    pub addr: SocketAddr,
    pub reliable: bool,
    pub tls: bool,
}

impl Peer {
    /// The Via transport name for requests to it.
    pub fn transport_name(&self) -> &'static str {
        match (self.reliable, self.tls) {
            (_, true) => "TLS",
            (true, false) => "TCP",
            (false, false) => "UDP",
        }
    }
}

/// Bytes to send to a peer. Its `Debug` shows the length, not the bytes
/// (SIP messages carry phone numbers).
#[derive(Clone, PartialEq, Eq)]
pub struct Transmit {
    pub peer: Peer,
    pub bytes: super::WipedBytes,
}

/// Identifies a transaction: the top Via branch and the method (ACK and
/// CANCEL match by method as RFC 3261 17.2.3 says: an ACK for a non-2xx
/// belongs to its INVITE's server transaction).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub branch: Vec<u8>,
    pub method: Vec<u8>,
    pub server: bool,
}

impl std::fmt::Debug for Transmit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Transmit({:?}, {} bytes)", self.peer, self.bytes.len())
    }
}

/// What the transaction layer tells its user. Its `Debug` shows message
/// lengths, not bytes.
#[derive(Clone, PartialEq, Eq)]
pub enum Event {
    /// A new request for the user (not a retransmission).
    Request {
        key: Key,
        peer: Peer,
        bytes: super::WipedBytes,
    },
    /// A response to a client transaction.
    Response {
        key: Key,
        code: u16,
        bytes: super::WipedBytes,
    },
    /// The ACK for a non-2xx final arrived (server INVITE).
    Acked { key: Key },
    /// No final response within 64*T1 (client), or no ACK (server INVITE).
    TimedOut { key: Key },
    /// The transaction is gone.
    Terminated { key: Key },
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Request { key, peer, bytes } => {
                write!(f, "Request({key:?}, {peer:?}, {} bytes)", bytes.len())
            }
            Self::Response { key, code, bytes } => {
                write!(f, "Response({key:?}, {code}, {} bytes)", bytes.len())
            }
            Self::Acked { key } => write!(f, "Acked({key:?})"),
            Self::TimedOut { key } => write!(f, "TimedOut({key:?})"),
            Self::Terminated { key } => write!(f, "Terminated({key:?})"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    // Client
    Calling,
    Trying,
    Proceeding,
    Completed,
    Accepted,
    // Server
    ServerProceeding,
    ServerTrying,
    ServerCompleted,
    Confirmed,
    ServerAccepted,
}

struct Transaction {
    invite: bool,
    server: bool,
    state: State,
    peer: Peer,
    /// The request (client) or the last response (server), for resending.
    last: super::WipedBytes,
    /// The ACK sent for a non-2xx final (client INVITE).
    ack: Option<super::WipedBytes>,
    /// Next retransmission (A, E, G) and its current interval.
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timeout (B, F, H) or end of a wait state (D, I, J, K, L, M).
    deadline: Option<Instant>,
}

impl crate::deadlines::Timed for Transaction {
    /// Its next retransmission or its timeout, whichever is first.
    fn next_deadline(&self) -> Option<Instant> {
        [self.retransmit_at, self.deadline]
            .into_iter()
            .flatten()
            .min()
    }
}

impl Transaction {
    /// The bytes it holds for resending.
    fn stored(&self) -> usize {
        self.last.len() + self.ack.as_ref().map_or(0, |a| a.len())
    }
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub retransmissions: u64,
    pub absorbed: u64,
    pub timeouts: u64,
    pub stray_responses: u64,
    /// Requests refused with 503 because the table was full.
    pub overloaded: u64,
}

/// The transaction layer: every transaction, its timers and the queues of
/// what to send and what happened. See the module doc for the contract.
pub struct Transactions {
    timers: TimerConfig,
    /// With a timer heap: the next deadline and a wake's due
    /// transactions cost O(log n), not a scan of every one.
    table: Table<Key, Transaction>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    /// Most transactions held at once; a new request beyond it is answered
    /// 503 statelessly and not remembered.
    max: usize,
    /// Bytes of SIP the table holds (requests and responses kept for
    /// resending, ACKs), and the most it may: a count cap alone lets a
    /// sender of 64 KiB messages make the table hold gigabytes.
    held: usize,
    max_bytes: usize,
}

/// The default byte budget for stored SIP: 20,000 transactions of a
/// typical 2 KiB, with room.
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;

fn key_of(m: &Message<'_>, server: bool) -> Option<Key> {
    let via = m.top_via()?.ok()?;
    let branch = via.branch().unwrap_or_default().to_vec();
    let method = match m.cseq()?.ok()?.method {
        // An ACK matches its INVITE's server transaction.
        Method::Ack => b"INVITE".to_vec(),
        other => other.as_bytes().to_vec(),
    };
    Some(Key {
        branch,
        method,
        server,
    })
}

impl Transactions {
    pub fn new(timers: TimerConfig, max: usize) -> Self {
        Self {
            timers,
            table: Table::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            max,
            held: 0,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// The same layer with another byte budget for stored SIP.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Bytes of SIP held for resending now.
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Transactions held now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Whether the table is at its cap.
    pub fn is_full(&self) -> bool {
        self.table.len() >= self.max
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest timer.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.table.next_deadline()
    }

    fn send(&mut self, peer: Peer, bytes: super::WipedBytes) {
        self.transmits.push_back(Transmit { peer, bytes });
    }

    /// A request from the network. New requests become server transactions
    /// and an [`Event::Request`]; retransmissions are absorbed (and the
    /// last response resent); an ACK for a non-2xx final confirms its
    /// INVITE transaction. ACKs for 2xx (their own transaction, RFC 3261
    /// 17.1.1.3) and CANCELs pass up as requests.
    pub fn handle_request(&mut self, m: &Message<'_>, raw: &[u8], peer: Peer, now: Instant) {
        let Some(key) = key_of(m, true) else {
            return;
        };
        let is_ack = m.method() == Some(Method::Ack);
        if let Some(t) = self.table.get_mut(&key) {
            let resend = match (t.state, is_ack) {
                (State::ServerCompleted, true) => {
                    t.state = State::Confirmed;
                    t.retransmit_at = None;
                    t.deadline = Some(now + wait(t.peer, self.timers.t4));
                    self.events.push_back(Event::Acked { key });
                    return;
                }
                // ACK for a 2xx: the dialog's business, not ours.
                (State::ServerAccepted, true) => {
                    self.events.push_back(Event::Request {
                        key,
                        peer,
                        bytes: raw.to_vec().into(),
                    });
                    return;
                }
                (State::ServerProceeding | State::ServerCompleted, false) => Some(t.last.clone()),
                _ => None,
            };
            self.stats.absorbed += 1;
            if let Some(bytes) = resend.filter(|b| !b.is_empty()) {
                let peer = t.peer;
                self.send(peer, bytes);
            }
            return;
        }
        if is_ack {
            // An ACK with no transaction: for a 2xx, pass it up.
            self.events.push_back(Event::Request {
                key,
                peer,
                bytes: raw.to_vec().into(),
            });
            return;
        }
        if self.table.len() >= self.max || self.held + raw.len() > self.max_bytes {
            self.stats.overloaded += 1;
            if let Some(busy) = build_response(m, 503, "Service Unavailable", None) {
                self.send(peer, busy.into());
            }
            return;
        }
        let invite = m.method() == Some(Method::Invite);
        // The user must answer; if it never does, the transaction still
        // ends (an INVITE may ring for a while, anything else 64*T1).
        let answer_by = now
            + if invite {
                Duration::from_secs(180)
            } else {
                64 * self.timers.t1
            };
        self.table.insert(
            key.clone(),
            Transaction {
                invite,
                server: true,
                state: if invite {
                    State::ServerProceeding
                } else {
                    State::ServerTrying
                },
                peer,
                last: super::WipedBytes::default(),
                ack: None,
                retransmit_at: None,
                interval: self.timers.t1,
                deadline: Some(answer_by),
            },
        );
        if invite {
            // 100 Trying at once: the gateway's routing may take a while.
            if let Some(trying) = build_response(m, 100, "Trying", None) {
                self.respond(&key, trying, now);
            }
        }
        self.events.push_back(Event::Request {
            key,
            peer,
            bytes: raw.to_vec().into(),
        });
    }

    /// The user's response on server transaction `key`.
    pub fn respond(&mut self, key: &Key, bytes: Vec<u8>, now: Instant) {
        let bytes = super::WipedBytes::from(bytes);
        let Some(code) = status_of(&bytes) else {
            return;
        };
        let timers = self.timers;
        let Some(t) = self.table.get_mut(key) else {
            return;
        };
        let peer = t.peer;
        match (t.invite, code) {
            (_, 100..=199) => {
                if t.state == State::ServerTrying {
                    t.state = State::ServerProceeding;
                }
            }
            (true, 200..=299) => {
                // RFC 6026: Accepted, absorbing INVITE retransmissions for
                // Timer L; the TU retransmits the 2xx itself.
                t.state = State::ServerAccepted;
                t.deadline = Some(now + 64 * timers.t1);
            }
            (true, _) => {
                t.state = State::ServerCompleted;
                if !peer.reliable {
                    t.interval = timers.t1;
                    t.retransmit_at = Some(now + timers.t1);
                }
                t.deadline = Some(now + 64 * timers.t1); // Timer H
            }
            (false, _) => {
                t.state = State::ServerCompleted;
                t.deadline = Some(now + wait(peer, 64 * timers.t1));
            }
        }
        self.held = self.held - t.last.len() + bytes.len();
        t.last.clone_from(&bytes);
        self.send(peer, bytes);
    }

    /// Starts a client transaction for `request` (which must carry a unique
    /// branch) and sends it. Returns its key.
    pub fn start_client(&mut self, request: Vec<u8>, peer: Peer, now: Instant) -> Option<Key> {
        let request = super::WipedBytes::from(request);
        let (m, _) = Message::parse(&request, Framing::Stream, &Limits::default()).ok()?;
        let key = key_of(&m, false)?;
        let invite = m.method() == Some(Method::Invite);
        let timers = self.timers;
        self.held += request.len();
        let old = self.table.insert(
            key.clone(),
            Transaction {
                invite,
                server: false,
                state: if invite {
                    State::Calling
                } else {
                    State::Trying
                },
                peer,
                last: request.clone(),
                ack: None,
                retransmit_at: (!peer.reliable).then(|| now + timers.t1),
                interval: timers.t1,
                deadline: Some(now + 64 * timers.t1), // Timer B / F
            },
        );
        if let Some(old) = old {
            self.held -= old.stored();
        }
        self.send(peer, request);
        Some(key)
    }

    /// A response from the network, matched to its client transaction.
    pub fn handle_response(&mut self, m: &Message<'_>, raw: &[u8], now: Instant) {
        let (Some(key), Some(code)) = (key_of(m, false), m.status()) else {
            return;
        };
        let timers = self.timers;
        let Some(t) = self.table.get_mut(&key) else {
            self.stats.stray_responses += 1;
            return;
        };
        let pass_up = match (t.state, code) {
            (State::Calling | State::Trying | State::Proceeding, 100..=199) => {
                t.state = State::Proceeding;
                if t.invite {
                    // Timer A stops; Timer B applies only while Calling.
                    t.retransmit_at = None;
                    t.deadline = None;
                } else if let Some(at) = t.retransmit_at.as_mut() {
                    // Timer E continues at T2 in Proceeding.
                    t.interval = timers.t2;
                    *at = now + timers.t2;
                }
                true
            }
            (State::Calling | State::Proceeding, 200..=299) if t.invite => {
                t.state = State::Accepted;
                t.retransmit_at = None;
                t.deadline = Some(now + 64 * timers.t1); // Timer M
                true
            }
            (State::Accepted, 200..=299) => true, // 2xx retransmissions go up for the TU to ACK
            (State::Calling | State::Proceeding, _) if t.invite => {
                t.state = State::Completed;
                t.retransmit_at = None;
                t.deadline = Some(now + wait(t.peer, Duration::from_secs(32))); // Timer D
                let ack = ack_for(&t.last, m).map(super::WipedBytes::from);
                self.held = self.held - t.ack.as_ref().map_or(0, |a| a.len())
                    + ack.as_ref().map_or(0, |a| a.len());
                t.ack = ack;
                if let Some(ack) = t.ack.clone() {
                    let peer = t.peer;
                    self.send(peer, ack);
                }
                true
            }
            (State::Completed, _) if t.invite => {
                // A retransmitted final: resend the ACK, tell no one.
                if let Some(ack) = t.ack.clone() {
                    let peer = t.peer;
                    self.send(peer, ack);
                }
                self.stats.absorbed += 1;
                false
            }
            (State::Trying | State::Proceeding, 200..=699) => {
                t.state = State::Completed;
                t.retransmit_at = None;
                t.deadline = Some(now + wait(t.peer, timers.t4)); // K
                true
            }
            _ => {
                self.stats.absorbed += 1;
                false
            }
        };
        if pass_up {
            self.events.push_back(Event::Response {
                key,
                code,
                bytes: raw.to_vec().into(),
            });
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timers = self.timers;
        let mut done = Vec::new();
        for key in self.table.due(now) {
            let Some(t) = self.table.get_mut(&key) else {
                continue;
            };
            if let Some(at) = t.retransmit_at.filter(|&at| at <= now) {
                let _ = at;
                self.stats.retransmissions += 1;
                self.transmits.push_back(Transmit {
                    peer: t.peer,
                    bytes: t.last.clone(),
                });
                // A doubles without cap; E and G cap at T2.
                let capped = !t.invite || t.server;
                t.interval = if capped {
                    (t.interval * 2).min(timers.t2)
                } else {
                    t.interval * 2
                };
                t.retransmit_at = Some(now + t.interval);
            }
            if t.deadline.is_some_and(|d| d <= now) {
                // B, F, H are failures; D, I, J, K, L, M just end a wait.
                let timed_out = matches!(
                    t.state,
                    State::Calling
                        | State::Trying
                        | State::Proceeding
                        | State::ServerTrying
                        | State::ServerProceeding
                ) || (t.state == State::ServerCompleted && t.invite);
                if timed_out {
                    self.stats.timeouts += 1;
                    self.events.push_back(Event::TimedOut { key: key.clone() });
                }
                done.push(key);
            }
        }
        for key in done {
            if let Some(t) = self.table.remove(&key) {
                self.held -= t.stored();
            }
            self.events.push_back(Event::Terminated { key });
        }
    }
}

/// How long a transaction waits to absorb retransmissions: `d` over an
/// unreliable transport, nothing over a reliable one (RFC 3261 timers D,
/// I, J and K).
fn wait(peer: Peer, d: Duration) -> Duration {
    if peer.reliable {
        Duration::ZERO
    } else {
        d
    }
}

fn status_of(bytes: &[u8]) -> Option<u16> {
    let code = bytes.strip_prefix(b"SIP/2.0 ")?.get(..3)?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// Builds a response to `req` with no extra headers or body; see
/// [`super::build::response`].
pub fn build_response(
    req: &Message<'_>,
    code: u16,
    reason: &str,
    to_tag: Option<&[u8]>,
) -> Option<Vec<u8>> {
    super::build::response(req, code, reason, to_tag, &[], None)
}

/// The ACK for a non-2xx final response (RFC 3261 17.1.1.3): the original
/// Request-URI, top Via, Route, Call-ID, From and CSeq number, and the
/// response's To.
fn ack_for(request: &[u8], response: &Message<'_>) -> Option<Vec<u8>> {
    let (req, _) = Message::parse(request, Framing::Stream, &Limits::default()).ok()?;
    let super::message::StartLine::Request { uri, .. } = req.start else {
        return None;
    };
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"ACK ");
    out.extend_from_slice(uri);
    out.extend_from_slice(b" SIP/2.0\r\nVia: ");
    push_value(&mut out, req.values(HeaderName::Via).next()?);
    for r in req.headers_named(HeaderName::Route) {
        out.extend_from_slice(b"Route: ");
        push_value(&mut out, r.value);
    }
    out.extend_from_slice(b"Max-Forwards: 70\r\nTo: ");
    push_value(&mut out, response.header(HeaderName::To)?.value);
    out.extend_from_slice(b"From: ");
    push_value(&mut out, req.header(HeaderName::From)?.value);
    out.extend_from_slice(b"Call-ID: ");
    push_value(&mut out, req.call_id()?);
    out.extend_from_slice(b"CSeq: ");
    push_u64(&mut out, u64::from(req.cseq()?.ok()?.seq));
    out.extend_from_slice(b" ACK\r\nContent-Length: 0\r\n\r\n");
    Some(out)
}
