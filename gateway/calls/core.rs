//! The call core: one task that owns the SIP transaction layer and every
//! call, fed by the transport and by its own timers. It answers OPTIONS,
//! routes INVITEs by number to the test services (`echo`, `tone`), keeps
//! each dialog (ACK, BYE, CANCEL, re-INVITE for hold and moved media) and
//! starts and stops the media tasks.
//!
//! Nothing here logs a phone number: calls are named by a local counter
//! in logs, and numbers appear only redacted.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::end::EndReason;
use super::keepalive::TrunkState;
use super::media::Control;
use super::ports::Ports;
use crate::cdr::record::Party;
use crate::config::Config;
use crate::deadlines::Table;
use crate::guard::{BanInfo, Guard};
use crate::sip::build;
use crate::sip::check::{check_request, check_response, check_support, TRUNK};
use crate::sip::dialog;
use crate::sip::header::Method;
use crate::sip::message::{Framing, HeaderName, Message, StartLine};
use crate::sip::transaction::{Event, Key, Peer, TimerConfig, Transactions, Transmit};
use crate::sip::transport::{Inbound, TlsPeers};
use crate::sip::WipedBytes;
use crate::telemetry::metrics::{status_class, Metrics};

pub(super) const ALLOW: &[u8] = b"INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE";
/// Most transactions held at once (each holds a message or two).
const MAX_TRANSACTIONS: usize = 20_000;
/// Most calls at once.
pub(super) const MAX_CALLS: usize = 5_000;
/// Bytes of SIP the calls keep (each call's INVITE, for building its
/// responses, and its SDP answer) before new calls get 503: the count cap
/// alone would let 5,000 calls of 64 KiB INVITEs hold 320 MiB.
pub(super) const MAX_CALL_BYTES: usize = 64 << 20;

pub(super) use super::call::{Call, CallKind, CallRef, LegKey, State};

/// The headers of our 2xx to an INVITE or UPDATE in a dialog: Contact,
/// Allow and, when a session timer was granted (only to a peer that said
/// `Supported: timer`), Session-Expires with `Require: timer`.
pub(super) fn ok_headers<'a>(contact: &'a [u8], se: Option<&'a [u8]>) -> Vec<(&'a str, &'a [u8])> {
    let mut extra: Vec<(&str, &[u8])> = vec![("Contact", contact), ("Allow", ALLOW)];
    if let Some(se) = se {
        extra.push(("Session-Expires", se));
        extra.push(("Require", b"timer"));
    }
    extra
}

/// Which call placed an INVITE transaction.
pub(super) enum Placed {
    /// The outbound leg of this bridged call.
    Bridge(CallRef),
    /// An agent's call.
    AgentOut(u64),
    /// A leg whose call ended before the far end answered (our CANCEL
    /// or BYE may cross its 200): kept until its transaction ends, so a
    /// late 2xx is ACKed and hung up, not left answered for 32 s.
    Ended(Box<super::outbound::Bridge>),
}

/// A response the core sends on a server transaction.
pub(super) struct Reply<'a> {
    code: u16,
    reason: &'a str,
    tag: Option<&'a [u8]>,
    extra: &'a [(&'a str, &'a [u8])],
}

impl<'a> Reply<'a> {
    pub(super) fn new(code: u16, reason: &'a str) -> Self {
        Self {
            code,
            reason,
            tag: None,
            extra: &[],
        }
    }
    /// Our To tag (added when the request's To has none).
    pub(super) fn tag(self, tag: &'a [u8]) -> Self {
        Self {
            tag: Some(tag),
            ..self
        }
    }
    pub(super) fn extra(self, extra: &'a [(&'a str, &'a [u8])]) -> Self {
        Self { extra, ..self }
    }
}

/// The core's inputs and outputs.
pub struct Core {
    pub(super) config: Arc<Config>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) txn: Transactions,
    /// Tags, branches and Call-IDs.
    pub(super) tokens: build::Tokens,
    /// The addresses the SIP transport listens on.
    pub(super) local: Local,
    /// What the core asks of its driver, in order ([`Core::poll_output`]).
    pub(super) out: VecDeque<Output>,
    /// Calls the gateway answered, by handle, with their timer heap.
    pub(super) calls: Table<CallRef, Call>,
    /// The calls by Call-ID.
    pub(super) call_ids: HashMap<Vec<u8>, CallRef>,
    /// Calls offered to agents, by the number agents know them by.
    pub(super) by_agent_call: HashMap<u64, CallRef>,
    /// Bytes the calls keep ([`Call::held`]), against [`MAX_CALL_BYTES`].
    pub(super) call_bytes: usize,
    pub(super) ports: Ports,
    /// Our SIP address for Via and Contact.
    pub(super) sip_addr: SocketAddr,
    pub(super) media_ip: IpAddr,
    pub(super) calls_started: u64,
    /// 2xx responses resent while waiting for an ACK (the transaction
    /// layer counts the rest).
    pub(super) ok_retransmissions: u64,
    /// Per trunk, its registration (registration trunks only).
    pub(super) registrations: Vec<Option<super::register::Registration>>,
    /// Outbound legs' Call-IDs to their inbound calls.
    pub(super) outbound: HashMap<Vec<u8>, CallRef>,
    pub(super) timers: TimerConfig,
    pub(super) trunks: Vec<TrunkState>,
    /// Logged-in agents.
    pub(super) agents: super::agents::Agents,
    /// Calls agents placed, by agent call number.
    pub(super) agent_out: Table<u64, super::agent_dial::AgentOut>,
    /// Agents' calls by their Call-ID.
    pub(super) agent_out_ids: HashMap<Vec<u8>, u64>,
    /// The INVITE transactions the gateway started, by key, to the call
    /// that placed each: a response finds its call without a scan. An
    /// entry goes when its transaction ends or its call does.
    pub(super) placed: HashMap<Key, Placed>,
    /// Our session refreshes (UPDATE) in flight, to the dialog of each.
    pub(super) refreshes: HashMap<Key, super::call::LegKey>,
    /// Numbers calls as agents know them.
    pub(super) agent_calls_started: u64,
    /// Media tasks that end calls themselves (trunk RTP stopped) say so
    /// here. Unbounded on purpose: each task says it once and tasks are
    /// bounded by the calls, while a bounded queue lost the news when a
    /// carrier's outage silenced more calls at once than it held (those
    /// calls then held their slots until media.max_call_s).
    pub(super) media_ended: (
        mpsc::UnboundedSender<super::agent_media::MediaEnded>,
        Option<mpsc::UnboundedReceiver<super::agent_media::MediaEnded>>,
    ),
    /// The IDS, before the transaction layer.
    pub(super) guard: Guard,
    /// Call records.
    pub(super) records: super::records::Records,
    /// Calls holding a slot on each trunk, by trunk name.
    pub(super) trunk_calls: HashMap<String, u32>,
}

/// The SIP transport's listening addresses, which the core names in Via
/// and Contact. The core never holds the transport itself: its driver
/// does, and sends what [`Core::poll_output`] returns.
#[derive(Clone, Debug, Default)]
pub struct Local {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
}

impl Local {
    pub fn of(t: &crate::sip::transport::Transport) -> Self {
        Self {
            udp: t.local_udp.clone(),
            tcp: t.local_tcp.clone(),
            tls: t.local_tls.clone(),
        }
    }
}

/// What the core takes from its surroundings besides its inputs: the
/// instant it starts at and where its SIP identifiers come from. Every
/// later instant comes with an input.
pub struct Env {
    pub now: Instant,
    pub tokens: build::Tokens,
    /// The wall clock records and calling hours read.
    pub wall: crate::Wall,
}

impl Env {
    /// The system's clock and random source.
    pub fn system() -> Self {
        Self {
            now: Instant::now(),
            tokens: build::Tokens::from_os(),
            wall: crate::Wall::system(),
        }
    }
}

/// What the core asks of whoever drives it.
pub enum Output {
    /// A SIP message to send.
    Transmit(Transmit),
    /// A reloaded configuration's trunks: the TLS peers to dial and the
    /// networks the transport accepts connections from.
    Peers {
        tls: TlsPeers,
        networks: Vec<ipnet::IpNet>,
    },
    /// A call's media, to run until its control sender (kept by the core
    /// for the call) is dropped or it times out.
    StartMedia(super::tasks::MediaTask),
}

/// Administrators' requests to the guard (from the control socket).
pub enum GuardRequest {
    Bans(oneshot::Sender<Vec<BanInfo>>),
    Unban(IpAddr, oneshot::Sender<bool>),
    /// Re-read the IDS rules (SIGHUP).
    Reload(oneshot::Sender<Result<(), String>>),
    /// Answered at once: the core's loop is turning (the systemd watchdog).
    Alive(oneshot::Sender<()>),
    /// A reloaded configuration (SIGHUP) and its trunks' TLS peers;
    /// answered once applied.
    Configure(Box<(Arc<Config>, TlsPeers)>, oneshot::Sender<()>),
}

impl Core {
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>, local: Local, env: Env) -> Self {
        let Env {
            now,
            mut tokens,
            wall,
        } = env;
        let port = local
            .udp
            .first()
            .or(local.tcp.first())
            .map_or(5060, SocketAddr::port);
        let media_ip = config
            .sip_udp
            .first()
            .or(config.sip_tcp.first())
            .map_or(config.public_address, SocketAddr::ip);
        let timers = TimerConfig {
            t1: config.t1,
            ..TimerConfig::default()
        };
        let trunks = config
            .trunks
            .iter()
            .map(|t| super::reload::fresh_trunk(t, &metrics, now))
            .collect();
        let registrations = config
            .trunks
            .iter()
            .map(|t| super::reload::fresh_registration(t, &metrics, now, &mut tokens))
            .collect();
        let guard = Guard::new(config.clone(), metrics.clone(), now, wall.clone());
        Self {
            timers,
            trunks,
            registrations,
            sip_addr: SocketAddr::new(config.public_address, port),
            media_ip,
            ports: Ports::new(config.rtp_ports),
            config,
            metrics,
            txn: Transactions::new(timers, MAX_TRANSACTIONS),
            tokens,
            local,
            out: VecDeque::new(),
            calls: Table::default(),
            call_ids: HashMap::new(),
            by_agent_call: HashMap::new(),
            call_bytes: 0,
            outbound: HashMap::new(),
            calls_started: 0,
            ok_retransmissions: 0,
            agents: super::agents::Agents::default(),
            agent_out: Table::default(),
            agent_out_ids: HashMap::new(),
            placed: HashMap::new(),
            refreshes: HashMap::new(),
            agent_calls_started: 0,
            media_ended: {
                let (tx, rx) = mpsc::unbounded_channel();
                (tx, Some(rx))
            },
            guard,
            records: super::records::Records::new(wall),
            trunk_calls: HashMap::new(),
        }
    }

    /// Where call records go.
    pub fn set_records(&mut self, w: crate::cdr::writer::Writer) {
        self.records.set_writer(w);
    }

    /// Where the IDS's bans go besides the process.
    pub fn set_firewall(&mut self, f: crate::guard::nft::Handle) {
        self.guard.set_firewall(f);
    }

    /// Where security events are recorded.
    /// Keeps IDS bans in `path` across restarts (after the firewall is
    /// set: bans kept from before go back into it too).
    pub fn keep_bans(&mut self, path: std::path::PathBuf, now: Instant) -> usize {
        self.guard.keep_bans(path, now)
    }

    pub fn set_audit(&mut self, a: crate::telemetry::audit::Audit) {
        self.guard.set_audit(a);
    }

    /// The next thing the core asks of its driver: drain after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub(super) fn on_guard_request(&mut self, r: GuardRequest, now: Instant) {
        match r {
            GuardRequest::Bans(tx) => {
                let _ = tx.send(self.guard.bans(now));
            }
            GuardRequest::Unban(ip, tx) => {
                let _ = tx.send(self.guard.unban(ip, now));
            }
            GuardRequest::Reload(tx) => {
                let r = self.guard.reload();
                match &r {
                    Ok(()) => info!("IDS rules reloaded"),
                    Err(e) => warn!("IDS rules not reloaded, the previous ones stay: {e}"),
                }
                let _ = tx.send(r);
            }
            GuardRequest::Alive(tx) => {
                let _ = tx.send(());
            }
            GuardRequest::Configure(new, tx) => {
                let (config, tls) = *new;
                self.reconfigure(config, tls, now);
                let _ = tx.send(());
            }
        }
    }

    /// When the core next needs [`Core::handle_timeout`]: the earliest of
    /// the calls' and agents' dials' heaps (each entry changed since last
    /// time read again first), the transactions', and the few trunks' and
    /// registrations'. Its cost does not grow with the calls in progress.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let probes = self.trunks.iter().filter_map(|t| t.next_probe).chain(
            self.registrations
                .iter()
                .flatten()
                .filter_map(|r| r.next_at),
        );
        let tables = [self.calls.next_deadline(), self.agent_out.next_deadline()];
        self.txn
            .poll_timeout()
            .into_iter()
            .chain(tables.into_iter().flatten())
            .chain(probes)
            .chain(self.records.next_deadline())
            .min()
    }

    /// Queues `t` for the driver, counted by method or status class.
    pub(super) fn send(&mut self, t: Transmit) {
        let b = &t.bytes;
        if let Some(rest) = b.strip_prefix(b"SIP/2.0 ") {
            let code = rest
                .get(..3)
                .and_then(|c| std::str::from_utf8(c).ok())
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            self.metrics
                .sip_responses
                .with_label_values(&[status_class(code), "out"])
                .inc();
        } else {
            let method = b.split(|&x| x == b' ').next().unwrap_or_default();
            self.metrics
                .sip_requests
                .with_label_values(&[Method::from_bytes(method).label(), "out"])
                .inc();
        }
        self.out.push_back(Output::Transmit(t));
    }

    /// Sends what the transaction layer queued and handles its events.
    pub(super) fn pump(&mut self, now: Instant) {
        loop {
            let mut busy = false;
            while let Some(t) = self.txn.poll_transmit() {
                self.send(t);
                busy = true;
            }
            while let Some(e) = self.txn.poll_event() {
                self.on_event(e, now);
                busy = true;
            }
            if !busy {
                break;
            }
        }
        let s = self.txn.stats();
        self.metrics
            .sip_transactions_active
            .set(self.txn.len() as i64);
        let held = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.metrics
            .sip_held_bytes
            .with_label_values(&["transactions"])
            .set(held(self.txn.held_bytes()));
        self.metrics
            .sip_held_bytes
            .with_label_values(&["calls"])
            .set(held(self.call_bytes));
        catch_up(
            &self.metrics.sip_retransmissions,
            s.retransmissions + self.ok_retransmissions,
        );
    }

    /// Sends what the turn queued, handles the transactions' events and
    /// publishes the agents available: after any input for which
    /// [`Core::handle_inbound`] said `true`, and after every other kind.
    pub fn settle(&mut self, now: Instant) {
        self.pump(now);
        self.count_available();
    }

    /// A SIP message from a transport; `false` if it was dropped before it
    /// could change anything but counters and the IDS's tallies (a flood
    /// the IDS refuses, a stranger, garbage), so neither [`Core::settle`]
    /// nor [`Core::poll_timeout`] need follow.
    pub fn handle_inbound(&mut self, inb: Inbound, now: Instant) -> bool {
        // SIP from outside every trunk's peer networks is dropped unanswered
        // (and never reaches the IDS: it costs nothing and tracks nothing).
        let source = inb.peer.addr.ip();
        if self.config.trunk_for(source).is_none() {
            self.metrics.sip_unknown_peer.inc();
            return false;
        }
        let framing = if inb.peer.reliable {
            Framing::Stream
        } else {
            Framing::Datagram
        };
        let m = match Message::parse(&inb.bytes, framing, &self.config.limits) {
            Ok((m, _)) => m,
            Err(e) => {
                self.metrics
                    .sip_parse_failures
                    .with_label_values(&[e.reason()])
                    .inc();
                self.guard.malformed(source, now);
                return false;
            }
        };
        if !self.guard.message(source, &m, now) {
            return false;
        }
        match m.start {
            StartLine::Response { code, .. } => {
                self.metrics
                    .sip_responses
                    .with_label_values(&[status_class(code), "in"])
                    .inc();
                if check_response(&m).is_ok() {
                    self.txn.handle_response(&m, &inb.bytes, now);
                } else {
                    self.metrics
                        .sip_parse_failures
                        .with_label_values(&["bad_response"])
                        .inc();
                }
            }
            StartLine::Request { method, .. } => {
                self.metrics
                    .sip_requests
                    .with_label_values(&[method.label(), "in"])
                    .inc();
                let checked =
                    check_request(&m).and_then(|h| check_support(&m, &h, &TRUNK).map(|()| h));
                match checked {
                    Ok(_) => self.txn.handle_request(&m, &inb.bytes, inb.peer, now),
                    Err(r) if method != Method::Ack => {
                        self.metrics
                            .sip_rejected
                            .with_label_values(&[&r.status.to_string()])
                            .inc();
                        if r.status == 400 {
                            self.guard.malformed(source, now);
                        }
                        let unsupported = unsupported_tags(&m);
                        let mut extra: Vec<(&str, &[u8])> = Vec::new();
                        match r.status {
                            405 => extra.push(("Allow", ALLOW)),
                            420 => extra.push(("Unsupported", &unsupported)),
                            415 => extra.push(("Accept", b"application/sdp")),
                            _ => {}
                        }
                        let tag = self.tokens.token();
                        if let Some(resp) = build::response(
                            &m,
                            r.status,
                            r.reason,
                            Some(tag.as_bytes()),
                            &extra,
                            None,
                        ) {
                            self.send(Transmit {
                                peer: inb.peer,
                                bytes: resp.into(),
                            });
                        }
                    }
                    Err(_) => {}
                }
            }
        }
        true
    }

    fn on_event(&mut self, e: Event, now: Instant) {
        match e {
            Event::Request { key, peer, bytes } => self.on_request(key, peer, bytes, now),
            Event::Response { key, code, bytes } => {
                if !self.refresh_answered(&key, code, &bytes, now)
                    && !self.ended_leg_answered(&key, code, &bytes, now)
                    && !self.on_agent_dial_response(&key, code, &bytes, now)
                    && !self.on_bridge_response(&key, code, &bytes, now)
                    && !self.on_register_response(&key, code, &bytes, now)
                    && code >= 200
                {
                    self.keepalive_answered(&key);
                }
            }
            Event::TimedOut { key } => {
                if !self.refresh_lost(&key, now)
                    && !self.on_agent_dial_timeout(&key, now)
                    && !self.on_bridge_timeout(&key, now)
                    && !self.on_register_timeout(&key, now)
                {
                    self.keepalive_lost(&key);
                }
            }
            Event::Terminated { key } => {
                self.placed.remove(&key);
                self.refreshes.remove(&key);
            }
            Event::Acked { .. } => {}
        }
    }

    /// The call the gateway answered with this Call-ID.
    pub(super) fn call_ref(&self, call_id: &[u8]) -> Option<CallRef> {
        self.call_ids.get(call_id).copied()
    }

    pub(super) fn respond(&mut self, key: &Key, m: &Message<'_>, r: Reply<'_>, now: Instant) {
        if r.code >= 180 && m.method() == Some(Method::Invite) {
            if let Some(id) = m.call_id() {
                self.record_response(id, r.code, now);
            }
        }
        if let Some(bytes) = build::response(m, r.code, r.reason, r.tag, r.extra, None) {
            self.txn.respond(key, bytes, now);
        }
    }

    fn on_request(&mut self, key: Key, peer: Peer, bytes: WipedBytes, now: Instant) {
        let Ok((m, _)) = Message::parse(&bytes, Framing::Stream, &self.config.limits) else {
            return;
        };
        let Ok(head) = check_request(&m) else {
            return;
        };
        let call_id = head.call_id.to_vec();
        // The call the Call-ID names, if the gateway answered it.
        let h = self.call_ref(&call_id);
        match head.method {
            Method::Options => {
                let tag = self.tokens.token();
                self.respond(
                    &key,
                    &m,
                    Reply::new(200, "OK")
                        .tag(tag.as_bytes())
                        .extra(&[("Allow", ALLOW), ("Accept", b"application/sdp")]),
                    now,
                );
            }
            Method::Invite if head.to.tag().is_none() => {
                if h.is_some() {
                    // A second INVITE for a call that exists (a loop or a
                    // forked request): refuse.
                    self.respond(&key, &m, Reply::new(482, "Loop Detected"), now);
                } else {
                    self.new_call(key, peer, &m, &head, &bytes, now);
                    self.record_refused(peer.addr.ip(), now);
                }
            }
            Method::Invite | Method::Update => {
                self.session_request(key, peer, &m, &head, &bytes, now);
            }
            Method::Ack => {
                // Only an ACK carrying our To tag counts: its sender saw our
                // 2xx, which proves the caller's address (a blind spoofer
                // cannot), so media may now go to the signalled address.
                if let Some((h, c)) = h
                    .and_then(|h| Some((h, self.calls.get_mut(&h)?)))
                    .filter(|(_, c)| c.dialog.owns(&m))
                {
                    // Only the ACK for the 2xx in flight (its CSeq): a late
                    // copy of an older one stops nothing.
                    let this_2xx = c.ok.as_ref().is_some_and(|ok| ok.acked_by(&m));
                    if c.state == State::Answered && this_2xx {
                        c.state = State::Confirmed;
                        c.ok = None;
                        if std::mem::take(&mut c.offered_in_2xx) {
                            // Our 2xx offered (the re-INVITE had no SDP):
                            // the ACK answers. Applied before the media's
                            // confirmation below, which then uses it.
                            if !self.answer_in_ack(h, peer, &m, now) {
                                return;
                            }
                        }
                        let Some(c) = self.calls.get_mut(&h) else {
                            return;
                        };
                        // The ACK proves the address it came from. On a
                        // trunk open to anyone, that is all it proves: an
                        // SDP naming another address still waits for media
                        // from there (else one ACKed INVITE could aim a
                        // tone at a third party).
                        if self.config.trusted_peer(c.peer.addr.ip())
                            || crate::unmapped(c.media_ip) == crate::unmapped(c.peer.addr.ip())
                        {
                            let _ = c.media.try_send(Control::Confirmed);
                        }
                    }
                } else {
                    self.far_end_acked(&m, &call_id, peer, now);
                }
            }
            Method::Bye => {
                let ours = h.filter(|h| self.calls.get(h).is_some_and(|c| c.dialog.owns(&m)));
                if let Some(h) = ours {
                    self.respond(&key, &m, Reply::new(200, "OK"), now);
                    self.hang_up_far_end(h, now);
                    self.end_call(h, EndReason::HungUp(Party::Caller), now);
                } else if self.bye_from_far_end(&key, &m, &call_id, now)
                    || self.bye_to_agent_out(&key, &m, &call_id, now)
                {
                    // The far end of a bridged call hung up.
                } else {
                    self.respond(
                        &key,
                        &m,
                        Reply::new(481, "Call/Transaction Does Not Exist"),
                        now,
                    );
                }
            }
            Method::Cancel => {
                let ringing = h
                    .and_then(|h| Some((h, self.calls.get(&h)?)))
                    .filter(|(_, c)| c.state == State::Ringing && c.invite_key.branch == key.branch)
                    .map(|(h, c)| {
                        (
                            h,
                            c.invite_key.clone(),
                            c.invite.clone(),
                            c.dialog.local_tag.clone(),
                        )
                    });
                match ringing {
                    Some((h, invite_key, invite, tag)) => {
                        self.respond(&key, &m, Reply::new(200, "OK"), now);
                        if let Ok((inv, _)) =
                            Message::parse(&invite, Framing::Stream, &self.config.limits)
                        {
                            self.respond(
                                &invite_key,
                                &inv,
                                Reply::new(487, "Request Terminated").tag(&tag),
                                now,
                            );
                        }
                        self.hang_up_far_end(h, now);
                        self.end_call(h, EndReason::Cancelled, now);
                    }
                    None => self.respond(
                        &key,
                        &m,
                        Reply::new(481, "Call/Transaction Does Not Exist"),
                        now,
                    ),
                }
            }
            _ => {}
        }
    }

    /// Sends the 200 OK with our SDP and starts retransmitting it.
    pub(super) fn answer(&mut self, call_id: CallRef, now: Instant) {
        let limits = self.config.limits;
        let max_call = self.config.max_call;
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Ok((inv, _)) = Message::parse(&c.invite, Framing::Stream, &limits) else {
            return;
        };
        let se = c.session_timer.map(|t| t.session_expires());
        let Some(ok) = build::response(
            &inv,
            200,
            "OK",
            Some(&c.dialog.local_tag),
            &ok_headers(&c.contact, se.as_deref()),
            Some(("application/sdp", &c.answer_sdp)),
        ) else {
            return;
        };
        if c.state != State::Answered {
            // A test service's task counts silence from now (a full queue
            // of four controls cannot happen before the first answer).
            let _ = c.media.try_send(Control::Answered);
        }
        c.state = State::Answered;
        c.answer_at = None;
        // RFC 4028: the session timer runs from the 2xx, not from the
        // request (a call that rang a minute is not already due).
        if let Some(t) = c.session_timer.as_mut() {
            t.refreshed(now);
        }
        if c.hangup_at.is_none() {
            // The route's own hangup, or the longest a call may last.
            c.hangup_at = [c.hangup_after, max_call]
                .into_iter()
                .flatten()
                .min()
                .map(|d| now + d);
        }
        let t1 = self.timers.t1;
        let cseq = inv.cseq().and_then(Result::ok).map_or(0, |c| c.seq);
        c.ok = Some(dialog::Resend2xx::new(
            ok.clone().into(),
            c.invite_from,
            cseq,
            now,
            t1,
        ));
        let key = c.invite_key.clone();
        self.txn.respond(&key, ok, now);
        self.record_answered(call_id, now);
    }

    /// What is due at `now` (the loop calls it at [`Core::poll_timeout`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.txn.handle_timeout(now);
        self.records.due(now);
        self.probe_trunks(now);
        self.register_due(now);
        for id in self.calls.due(now) {
            self.call_due(id, now);
        }
        for call in self.agent_out.due(now) {
            self.agent_out_due(call, now);
        }
    }

    /// What is due on call `id` ([`Call::next_deadline`] names each): an
    /// agent's offer running out, the answer, the time limit, the session
    /// timer, and 2xx resends to either end. Each check reads the call
    /// again: an earlier one may have ended it.
    fn call_due(&mut self, id: CallRef, now: Instant) {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        let offered = self
            .calls
            .get(&id)
            .and_then(|c| c.kind.agent())
            .filter(|a| due(a.offer_until))
            .map(|a| a.call);
        if let Some(call) = offered {
            self.agent_refused(call, "no_answer", now);
        }
        if self.calls.get(&id).is_some_and(|c| due(c.answer_at)) {
            self.answer(id, now);
        }
        if let Some(c) = self.calls.get(&id).filter(|c| due(c.hangup_at)) {
            info!(
                call = c.n,
                "the call's time is up (the route's hangup_ms or media.max_call_s): BYE both ways"
            );
            self.hang_up(id, EndReason::MaxDuration, now);
            return;
        }
        // Either leg's session timer: refreshed by us, or lapsed.
        if self.session_due(LegKey::Inbound(id), now) || self.session_due(LegKey::Bridge(id), now) {
            return;
        }
        let t2 = self.timers.t2;
        let mut resend = Vec::new();
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let lost = dialog::Resend2xx::step(&mut c.ok, now, t2, &mut resend);
        let far_lost = c
            .kind
            .bridge_mut()
            .is_some_and(|b| dialog::Resend2xx::step(&mut b.ok, now, t2, &mut resend));
        for t in resend {
            self.send(t);
            self.ok_retransmissions += 1;
        }
        if lost {
            warn!("no ACK for a 200 OK within 64*T1: hanging up");
            self.hang_up(id, EndReason::Failed, now);
        } else if far_lost {
            warn!("no ACK from the far end for a 200 OK within 64*T1: hanging up");
            self.hang_up(id, EndReason::Failed, now);
        }
    }

    /// Our Contact for a dialog with `peer`: over TLS our TLS listener's
    /// port with `transport=tls`, so in-dialog requests come back secured.
    pub(super) fn contact_for(&self, peer: Peer) -> Vec<u8> {
        match (peer.reliable, peer.tls) {
            (_, true) => {
                let port = self
                    .local
                    .tls
                    .first()
                    .map_or(self.sip_addr.port(), |a| a.port());
                format!(
                    "<sip:tollgate@{};transport=tls>",
                    SocketAddr::new(self.sip_addr.ip(), port)
                )
            }
            (true, false) => format!("<sip:tollgate@{};transport=tcp>", self.sip_addr),
            (false, false) => format!("<sip:tollgate@{}>", self.sip_addr),
        }
        .into_bytes()
    }

    /// The inactivity limit for a media task that reports `ended`
    /// (`None` with `media.rtp_timeout_s = 0`).
    pub(super) fn media_timeout(
        &self,
        ended: super::agent_media::MediaEnded,
    ) -> Option<super::media::Timeout> {
        self.config.rtp_timeout.map(|after| super::media::Timeout {
            after,
            tell: self.media_ended.0.clone(),
            ended,
        })
    }
}

/// Raises a Prometheus counter to `total`, a count kept elsewhere.
fn catch_up(counter: &prometheus::IntCounter, total: u64) {
    let shown = counter.get();
    if total > shown {
        counter.inc_by(total - shown);
    }
}

pub(super) fn set_nonblocking(s: std::net::UdpSocket) -> std::io::Result<std::net::UdpSocket> {
    s.set_nonblocking(true)?;
    Ok(s)
}

/// The option tags in Require that Tollgate does not support (for 420).
fn unsupported_tags(m: &Message<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    for t in m
        .values(HeaderName::Require)
        .chain(m.values(HeaderName::ProxyRequire))
    {
        if t.is_empty() || TRUNK.extensions.iter().any(|e| e.eq_ignore_ascii_case(t)) {
            continue;
        }
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(t);
    }
    out
}
