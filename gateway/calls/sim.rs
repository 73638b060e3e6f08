//! Whole-call simulation: the real [`Core`] with carriers' user agents
//! around it, on virtual time. Nothing is sent: each message a UA sends
//! goes straight into [`Core::handle_inbound`], what the core queues
//! ([`Core::poll_output`]) is read back per destination, and time moves
//! only when a test says so, from deadline to deadline as
//! [`Core::poll_timeout`] names them (the driver's loop, without its
//! sleeping). A 90-second session timer takes microseconds, and the wall
//! clock (records, calling hours) follows the virtual one from
//! [`START_UNIX_S`].
//!
//! The media tasks the core asks for ([`Output::StartMedia`]) run on the
//! test's runtime with real loopback RTP ports, as the driver runs them
//! (they are the media engine's, tested on their own); the SIP side is
//! what these tests drive.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::core::{Core, Env, Local, Output};
use crate::config::Config;
use crate::sip::transaction::Peer;
use crate::sip::transport::Inbound;
use crate::telemetry::metrics::Metrics;

/// The gateway's SIP address in every simulation.
pub(super) const GATEWAY: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5060);

/// The wall clock at the start of every simulation: Monday 30 November
/// 2026, 08:58 UTC.
pub(super) const START_UNIX_S: u64 = 1_796_029_080;

/// One message the core sent.
#[derive(Clone, Debug)]
pub(super) struct Sent {
    pub(super) to: SocketAddr,
    /// When, on the simulation's clock.
    pub(super) at: Instant,
    pub(super) text: String,
}

impl Sent {
    /// The status of a response; `None` for a request.
    pub(super) fn status(&self) -> Option<u16> {
        self.text
            .strip_prefix("SIP/2.0 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
    }

    /// The method of a request; `None` for a response.
    pub(super) fn method(&self) -> Option<&str> {
        if self.text.starts_with("SIP/2.0 ") {
            return None;
        }
        self.text.split(' ').next()
    }

    /// The first value of header `name` (full name, any case).
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        header(&self.text, name)
    }

    /// The CSeq method.
    pub(super) fn cseq_method(&self) -> Option<&str> {
        self.header("CSeq")?.split_whitespace().nth(1)
    }

    pub(super) fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    /// The tag parameter of the To header.
    pub(super) fn to_tag(&self) -> Option<String> {
        tag_of(self.header("To")?)
    }

    /// What it is, for assertion messages: the start line.
    pub(super) fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or_default()
    }
}

pub(super) fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.split("\r\n\r\n")
        .next()?
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

pub(super) fn tag_of(v: &str) -> Option<String> {
    v.split(';')
        .find_map(|p| p.trim().strip_prefix("tag="))
        .map(str::to_string)
}

/// The core on virtual time, and what it sent.
pub(super) struct Sim {
    pub(super) core: Core,
    pub(super) metrics: Arc<Metrics>,
    pub(super) now: Instant,
    sent: VecDeque<Sent>,
    /// The media tasks started, to wait for their end.
    media: Vec<tokio::task::JoinHandle<()>>,
}

impl Sim {
    /// A core on `toml` (its `[sip]` is the simulation's, and its RTP
    /// ports must be free loopback ports), its tokens from seed 1. Needs
    /// a Tokio runtime: media tasks are spawned on it.
    pub(super) fn new(toml: &str) -> Self {
        Self::seeded(toml, 1)
    }

    /// [`Sim::new`] with the tokens (tags, branches, Call-IDs) of `seed`.
    pub(super) fn seeded(toml: &str, seed: u64) -> Self {
        let config = Arc::new(Config::from_toml(toml).expect("a valid simulation config"));
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let local = Local {
            udp: vec![GATEWAY],
            ..Local::default()
        };
        let now = Instant::now();
        let start = std::time::UNIX_EPOCH + Duration::from_secs(START_UNIX_S);
        let env = Env {
            now,
            tokens: crate::sip::build::Tokens::seeded(seed),
            wall: crate::Wall::following(now, start),
        };
        let core = Core::new(config, metrics.clone(), local, env);
        Self {
            core,
            metrics,
            now,
            sent: VecDeque::new(),
            media: Vec::new(),
        }
    }

    /// `text` from `from` over UDP, handled as the driver would.
    pub(super) fn deliver(&mut self, from: SocketAddr, text: &str) {
        let inb = Inbound {
            bytes: text.as_bytes().to_vec().into(),
            peer: Peer {
                addr: from,
                reliable: false,
                tls: false,
            },
        };
        if self.core.handle_inbound(inb, self.now) {
            self.core.settle(self.now);
        }
        self.collect();
    }

    /// Moves time on by `by`, handling each deadline on the way at its
    /// own instant, as the driver's timer would.
    pub(super) fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        // Bounded: a deadline that never moves on would otherwise spin.
        for _ in 0..100_000 {
            match self.core.poll_timeout() {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.core.handle_timeout(self.now);
                    self.core.guard.tick(self.now);
                    self.core.settle(self.now);
                    self.collect();
                }
                _ => {
                    self.now = end;
                    return;
                }
            }
        }
        panic!("a deadline in the past did not move on");
    }

    fn collect(&mut self) {
        while let Some(o) = self.core.poll_output() {
            match o {
                Output::Transmit(t) => self.sent.push_back(Sent {
                    to: t.peer.addr,
                    at: self.now,
                    text: String::from_utf8_lossy(&t.bytes).into_owned(),
                }),
                Output::StartMedia(task) => {
                    self.media
                        .push(tokio::spawn(task.run(self.metrics.clone())));
                }
                Output::Peers { .. } => {}
            }
        }
    }

    /// How many media tasks the core has asked for so far.
    pub(super) fn media_started(&self) -> usize {
        self.media.len()
    }

    /// Waits (five seconds at most) until every media task started so
    /// far has stopped, and every agent call its engine ran has given its
    /// port back; panics if one has not.
    pub(super) async fn media_stopped(&mut self) {
        let tasks = std::mem::take(&mut self.media);
        let ports = &self.core.ports;
        tokio::time::timeout(Duration::from_secs(5), async {
            for t in tasks {
                t.await.expect("a media task does not panic");
            }
            while ports.in_use() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("every call's media stops once its call has ended");
    }

    /// Takes every message sent to `to` so far, oldest first.
    pub(super) fn take(&mut self, to: SocketAddr) -> Vec<Sent> {
        let (mine, rest): (VecDeque<_>, VecDeque<_>) =
            self.sent.drain(..).partition(|s| s.to == to);
        self.sent = rest;
        mine.into()
    }

    /// Takes what was sent to `to` and returns the one response with
    /// `status` (provisional ones before it are dropped); panics naming
    /// what came instead.
    pub(super) fn response(&mut self, to: SocketAddr, status: u16) -> Sent {
        let got = self.take(to);
        let lines: Vec<_> = got.iter().map(|s| s.first_line().to_string()).collect();
        got.into_iter()
            .find(|s| s.status() == Some(status))
            .unwrap_or_else(|| panic!("expected {status} at {to}, got {lines:?}"))
    }

    /// Takes what was sent to `to` and returns the one request `method`.
    pub(super) fn request(&mut self, to: SocketAddr, method: &str) -> Sent {
        let got = self.take(to);
        let lines: Vec<_> = got.iter().map(|s| s.first_line().to_string()).collect();
        got.into_iter()
            .find(|s| s.method() == Some(method))
            .unwrap_or_else(|| panic!("expected {method} at {to}, got {lines:?}"))
    }

    /// Calls ended with `label` so far.
    pub(super) fn ended(&self, label: &str) -> u64 {
        self.metrics.calls_total.with_label_values(&[label]).get()
    }

    pub(super) fn active(&self) -> i64 {
        self.metrics.calls_active.get()
    }
}

/// A carrier's user agent: one dialog it starts, and the answers it
/// gives to requests in dialogs the gateway starts.
pub(super) struct Ua {
    pub(super) addr: SocketAddr,
    pub(super) call_id: String,
    from_tag: String,
    pub(super) to_tag: Option<String>,
    cseq: u32,
    uri: String,
    branches: u32,
    invite_branch: String,
    /// Our number (From).
    pub(super) from_user: String,
}

impl Ua {
    pub(super) fn new(addr: SocketAddr, call: &str) -> Self {
        Self {
            addr,
            call_id: format!("{call}@sim"),
            from_tag: format!("{call}-tag"),
            to_tag: None,
            cseq: 0,
            uri: String::new(),
            branches: 0,
            invite_branch: String::new(),
            from_user: "+442071838750".into(),
        }
    }

    fn branch(&mut self) -> String {
        self.branches += 1;
        format!("z9hG4bK-{}-{}", self.from_tag, self.branches)
    }

    fn to(&self) -> String {
        match &self.to_tag {
            Some(t) => format!("<{}>;tag={t}", self.uri),
            None => format!("<{}>", self.uri),
        }
    }

    fn request(
        &mut self,
        method: &str,
        branch: &str,
        cseq: u32,
        extra: &str,
        body: &str,
    ) -> String {
        let ct = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".into()
        };
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch={branch}\r\n\
Max-Forwards: 70\r\nFrom: <sip:{user}@{addr}>;tag={ftag}\r\nTo: {to}\r\n\
Call-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContact: <sip:ua@{addr}>\r\n{extra}{ct}\
Content-Length: {len}\r\n\r\n{body}",
            uri = self.uri,
            addr = self.addr,
            user = self.from_user,
            ftag = self.from_tag,
            to = self.to(),
            cid = self.call_id,
            len = body.len(),
        )
    }

    /// The INVITE that starts the dialog, to `number` at the gateway.
    pub(super) fn invite(&mut self, number: &str, sdp: &str, extra: &str) -> String {
        self.uri = format!("sip:{number}@{GATEWAY}");
        self.cseq += 1;
        self.invite_branch = self.branch();
        let branch = self.invite_branch.clone();
        self.request("INVITE", &branch, self.cseq, extra, sdp)
    }

    /// Notes the gateway's To tag from a response to our INVITE.
    pub(super) fn answered(&mut self, r: &Sent) {
        self.to_tag = r.to_tag();
    }

    /// ACK for the 2xx to our last INVITE.
    pub(super) fn ack(&mut self) -> String {
        self.ack_with("")
    }

    /// ACK for the 2xx to our last INVITE, carrying `sdp` (the answer to
    /// an offer in that 2xx).
    pub(super) fn ack_with(&mut self, sdp: &str) -> String {
        let branch = self.branch();
        self.request("ACK", &branch, self.cseq, "", sdp)
    }

    /// ACK for a failure response to our INVITE: the INVITE's branch
    /// (RFC 3261 17.1.1.3), so it reaches the same transaction.
    pub(super) fn ack_failure(&mut self) -> String {
        let branch = self.invite_branch.clone();
        self.request("ACK", &branch, self.cseq, "", "")
    }

    /// CANCEL of our INVITE (its branch and CSeq number).
    pub(super) fn cancel(&mut self) -> String {
        let branch = self.invite_branch.clone();
        let to = self.to_tag.take();
        let c = self.request("CANCEL", &branch, self.cseq, "", "");
        self.to_tag = to;
        c
    }

    /// A request in the dialog (BYE, UPDATE, a re-INVITE).
    pub(super) fn in_dialog(&mut self, method: &str, extra: &str, body: &str) -> String {
        self.cseq += 1;
        let branch = self.branch();
        if method == "INVITE" {
            self.invite_branch = branch.clone();
        }
        self.request(method, &branch, self.cseq, extra, body)
    }

    /// Our response to a request the gateway sent; a dialog-forming one
    /// carries our tag and Contact.
    pub(super) fn reply(&mut self, req: &Sent, code: u16, reason: &str, body: &str) -> String {
        self.reply_with(req, code, reason, "", body)
    }

    /// [`Ua::reply`] with `extra` header lines.
    pub(super) fn reply_with(
        &mut self,
        req: &Sent,
        code: u16,
        reason: &str,
        extra: &str,
        body: &str,
    ) -> String {
        let to = req.header("To").unwrap_or_default();
        let to = if tag_of(to).is_some() || code == 100 {
            to.to_string()
        } else {
            format!("{to};tag={}", self.from_tag)
        };
        let ct = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".into()
        };
        let rr: String = req
            .text
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("record-route:"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        format!(
            "SIP/2.0 {code} {reason}\r\nVia: {via}\r\nFrom: {from}\r\nTo: {to}\r\n\
Call-ID: {cid}\r\nCSeq: {cseq}\r\n{rr}Contact: <sip:ua@{addr}>\r\n{extra}{ct}Content-Length: {len}\r\n\r\n{body}",
            via = req.header("Via").unwrap_or_default(),
            from = req.header("From").unwrap_or_default(),
            cid = req.header("Call-ID").unwrap_or_default(),
            cseq = req.header("CSeq").unwrap_or_default(),
            addr = self.addr,
            len = body.len(),
        )
    }

    /// Takes the dialog the gateway started with `invite` (the far end of
    /// a bridge): its Call-ID and tags, so in-dialog requests can follow.
    pub(super) fn accept(&mut self, invite: &Sent) {
        self.call_id = invite.header("Call-ID").unwrap_or_default().to_string();
        let from = invite.header("From").unwrap_or_default();
        // Our requests go back the other way: the gateway's From is our To.
        self.to_tag = tag_of(from);
        self.uri = from
            .split_once('<')
            .and_then(|(_, r)| r.split_once('>'))
            .map_or_else(String::new, |(u, _)| u.to_string());
        self.cseq = 100;
    }
}

/// An audio offer from `addr`'s host on `port` (PCMU, PCMA and events).
pub(super) fn offer(host: SocketAddr, port: u16, direction: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na={direction}\r\n",
        ip = host.ip()
    )
}

/// The direction attribute of an SDP body.
pub(super) fn direction(sdp: &str) -> Option<&str> {
    sdp.lines().find_map(|l| {
        let a = l.trim().strip_prefix("a=")?;
        ["sendrecv", "sendonly", "recvonly", "inactive"]
            .contains(&a)
            .then_some(a)
    })
}

/// An agent logged in to the simulated core: a real QUIC connection on
/// loopback (the core's media tasks send on it), and the queue where the
/// core's messages to the agent land.
pub(super) struct Agent {
    pub(super) session: u64,
    heard: tokio::sync::mpsc::Receiver<crate::agent::protocol::ServerMsg>,
    _quic: (
        quinn::Connection,
        quinn::Endpoint,
        crate::agent::engine::EngineHandle,
    ),
}

impl Agent {
    /// What the core told the agent since last asked.
    pub(super) fn heard(&mut self) -> Vec<crate::agent::protocol::ServerMsg> {
        std::iter::from_fn(|| self.heard.try_recv().ok()).collect()
    }
}

/// Lets every connection in and hands over its session.
struct Admit(tokio::sync::mpsc::UnboundedSender<crate::agent::engine::Conn>);

impl crate::agent::engine::Listener for Admit {
    fn incoming(&self, _: SocketAddr, _: bool, _: bool) -> crate::agent::engine::Admit {
        crate::agent::engine::Admit::Accept(Box::new(()))
    }
    fn connected(
        &self,
        conn: crate::agent::engine::Conn,
        _: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    ) {
        let _ = self.0.send(conn);
    }
    fn failed(&self, _: std::net::IpAddr, _: Option<&quinn::ConnectionError>) {}
}

/// A real QUIC connection on loopback, to a shard engine of its own in
/// this runtime (which runs the agent's calls' media, as in the
/// gateway): the engine's side, and what keeps the rest alive.
async fn quic_pair() -> (
    crate::agent::engine::Conn,
    (
        quinn::Connection,
        quinn::Endpoint,
        crate::agent::engine::EngineHandle,
    ),
) {
    let (server, client_config) =
        crate::agent::pki::localhost_quic_configs().expect("QUIC configs");
    let (tx, mut conns) = tokio::sync::mpsc::unbounded_channel();
    let metrics = crate::telemetry::metrics::Metrics::new().expect("metrics");
    let (engine, handle) = crate::agent::engine::Engine::new(
        std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"),
        Arc::new(quinn::EndpointConfig::default()),
        Arc::new(server),
        Arc::new(Admit(tx)),
        Duration::from_secs(10),
        &metrics,
        crate::agent::socket::Stats::default(),
    )
    .expect("engine");
    let to = engine.local_addr().expect("bound");
    tokio::spawn(engine.run());
    let mut client = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).expect("client");
    client.set_default_client_config(client_config);
    let connected = client
        .connect(to, "localhost")
        .expect("connect")
        .await
        .expect("connected");
    let conn = conns.recv().await.expect("a session");
    (conn, (connected, client, handle))
}

impl Sim {
    /// Agent `name` (of `profile`) logs in as `session`, available.
    pub(super) async fn agent(&mut self, session: u64, name: &str, profile: Option<&str>) -> Agent {
        use crate::agent::protocol::ClientMsg;
        use crate::agent::server::{AgentEvent, Link};
        let (conn, quic) = quic_pair().await;
        let (tx, heard) = tokio::sync::mpsc::channel(64);
        self.agent_event(AgentEvent::Up {
            session,
            agent: name.into(),
            profile: profile.map(str::to_string),
            enrolled_s: 0,
            link: Link::new(conn, 0, tx),
        });
        self.agent_event(AgentEvent::Message {
            session,
            msg: ClientMsg::Available { available: true },
        });
        Agent {
            session,
            heard,
            _quic: quic,
        }
    }

    /// `msg` from the agent.
    pub(super) fn agent_says(&mut self, a: &Agent, msg: crate::agent::protocol::ClientMsg) {
        self.agent_event(crate::agent::server::AgentEvent::Message {
            session: a.session,
            msg,
        });
    }

    /// The agent's session ends (its connection dropped).
    pub(super) fn agent_gone(&mut self, a: &Agent) {
        self.agent_event(crate::agent::server::AgentEvent::Down { session: a.session });
    }

    fn agent_event(&mut self, e: crate::agent::server::AgentEvent) {
        self.core.on_agent_event(e, self.now);
        self.core.settle(self.now);
        self.collect();
    }
}
