//! The agents' QUIC listener: TLS 1.3 with a client certificate from the
//! appliance's CA, then a TOTP code in the first control message.
//!
//! - The TLS verifier accepts only certificates of enrolled, unrevoked
//!   agents, read from the registry that [`super::store::Watch`] reloads
//!   every 250 ms; a revocation also closes that agent's live session.
//! - A source whose address QUIC has not validated gets a Retry before
//!   any handshake work (RFC 9000 section 8.1), so a forged Initial costs
//!   one small packet and no state, and every failure counted below came
//!   from an address that answered. At most [`MAX_HANDSHAKES`] handshakes
//!   run at once, [`MAX_HANDSHAKES_PER_SOURCE`] from one address (an IPv6
//!   /64), each for at most [`HANDSHAKE_TIMEOUT`], so one
//!   source (validated, but perhaps hostile) cannot hold every handshake
//!   place while an office's agents wait.
//! - A handshake failure is counted by the TLS alert it caused (no
//!   certificate, unknown CA, revoked, unknown agent) and audited in
//!   aggregate (one entry per source a minute, [`FailureDigest`]). It is
//!   never held against the address: hundreds of agents share one office
//!   NAT address, and an enrolled agent is never refused for what others
//!   behind it did. Nor does it reach the IDS: no failed login becomes a
//!   kernel ban on every port.
//! - A wrong TOTP is a strike against that agent only; lockouts grow with
//!   repeats and persist ([`super::guard`]).
//! - Each session has one control stream. Pings are answered here; every
//!   other message goes to the call core as an [`AgentEvent`], and the core
//!   answers through the session's [`Link`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

mod login;

use super::engine::{Admit, Conn, Engine, EngineHandle, Listener};
use super::guard::{Logins, Refused};
use super::pki::{fingerprint, Ca};
use super::protocol::{self, close, ClientMsg, Decoder, ServerMsg};
use super::store::{Agent, Watch};
use super::totp;
use crate::keys::Master;
use crate::telemetry::metrics::Metrics;
use login::{
    admitted, audit_failures, end_sessions_at_lockdown, login_refused, refuse, refuse_in_lockdown,
    unusual_login, FailureDigest,
};

/// Handshakes in progress at once; more are refused until some finish.
pub const MAX_HANDSHAKES: usize = 256;
/// Handshakes from one address at once: an office of agents logging in
/// at the start of a shift fits; one source cannot take them all.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 64;
/// Longest a handshake may hold its place: an idle timer alone is reset
/// by every packet, so a peer that trickles could keep one for ever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who a handshake place is counted against: the address, or for IPv6 its
/// /64 (one host usually holds a whole /64, and could otherwise take every
/// place with a few of its addresses).
fn handshake_source(ip: IpAddr) -> IpAddr {
    match crate::unmapped(ip) {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6) & !((1u128 << 64) - 1),
        )),
        v4 => v4,
    }
}
/// How long a new connection has to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the registry file is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// Queued messages to one agent before its session is ended as stuck.
const LINK_QUEUE: usize = 256;

/// What a session tells the call core.
#[derive(Debug)]
pub enum AgentEvent {
    Up {
        session: u64,
        agent: String,
        profile: Option<String>,
        /// When this agent was enrolled (Unix seconds): its history
        /// starts there, so a name enrolled again after a revocation does
        /// not inherit the calls of the agent it replaced.
        enrolled_s: u64,
        link: Link,
    },
    Message {
        session: u64,
        msg: ClientMsg,
    },
    Down {
        session: u64,
    },
}

pub use super::link::Link;

/// What the listener reports to and obeys besides its configuration.
pub struct Oversight {
    /// Where unusual logins are reported.
    pub anomalies: crate::telemetry::anomaly::Anomalies,
    /// Lockdowns end sessions and refuse logins.
    pub incident: Arc<crate::incident::Incident>,
}

/// State shared by the accept loop, the verifier and the watcher.
struct Shared {
    /// Enrolments by certificate fingerprint.
    agents: RwLock<HashMap<String, Agent>>,
    watch: Mutex<Watch>,
    /// Opens TOTP secrets at login; replaced when the master key rotates.
    master: Arc<Master>,
    metrics: Arc<Metrics>,
    /// Per agent: the last TOTP step used, lockouts (kept on disk).
    logins: Logins,
    /// Failed logins waiting for their audit entry.
    digest: Mutex<FailureDigest>,
    /// Handshakes in progress, by source.
    handshakes: Arc<crate::slots::Slots<IpAddr>>,
    /// Live sessions: id to (agent name, fingerprint, connection).
    sessions: Mutex<HashMap<u64, (String, String, Conn)>>,
    /// Where enrolments and revocations seen in the registry are recorded.
    audit: Option<crate::telemetry::audit::Audit>,
    /// The last session number given (shared by every shard's listener).
    sessions_made: std::sync::atomic::AtomicU64,
    /// Where unusual logins are reported (a new address, off hours).
    anomalies: crate::telemetry::anomaly::Anomalies,
    /// An incident lockdown refuses logins but break-glass agents'.
    incident: Arc<crate::incident::Incident>,
    /// The running configuration: profiles' hours.
    config: tokio::sync::watch::Receiver<Arc<crate::config::Config>>,
}

/// The TLS verifier: the CA's signature (webpki), then the registry.
#[derive(Debug)]
struct AgentVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    agents: Arc<SharedAgents>,
}

/// The verifier's view of [`Shared::agents`] (rustls wants `Debug`).
struct SharedAgents(Arc<Shared>);

impl std::fmt::Debug for SharedAgents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedAgents")
    }
}

impl ClientCertVerifier for AgentVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        true
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let fp = fingerprint(end_entity);
        let shared = &self.agents.0;
        let known = |shared: &Shared| {
            shared
                .agents
                .read()
                .ok()
                .and_then(|a| a.get(&fp).map(Agent::active))
        };
        // A certificate of our CA that we do not know yet may be a fresh
        // enrolment: read the registry now rather than at the next poll.
        let state = known(shared).or_else(|| {
            shared.refresh();
            known(shared)
        });
        match state {
            Some(true) => Ok(ClientCertVerified::assertion()),
            Some(false) => Err(rustls::Error::InvalidCertificate(CertificateError::Revoked)),
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The QUIC transport settings both ends use: datagrams on, one control
/// stream, keep-alives well inside the idle timeout that declares a peer
/// gone.
pub fn transport_config(drop_after: Duration) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .datagram_receive_buffer_size(Some(256 * 1024))
        .datagram_send_buffer_size(256 * 1024)
        // Control messages are small: a narrow window bounds what a peer
        // can make the other end hold out of order.
        .stream_receive_window((64u32 * 1024).into())
        .keep_alive_interval(Some(drop_after / 4))
        .max_idle_timeout(quinn::IdleTimeout::try_from(drop_after).ok());
    t
}

/// The rustls provider everything agent-side uses (ring, as elsewhere).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A running agents listener: one QUIC endpoint per media shard, all on
/// the one address (`SO_REUSEPORT`). The kernel hands each source address
/// and port to one of them, so an agent's connection, from handshake to
/// hang-up, stays on one shard, with its calls' media: while its address
/// and port stay the same. An agent whose NAT rebinds, or who moves
/// network, lands on another shard's endpoint, which does not know the
/// connection and resets it: the agent logs in again. With one shard
/// (`media.shards = 1`) quinn follows the move as before. Steering by
/// connection ID (the shard in the ID, a reuseport BPF program reading
/// it) removes that limit; it comes with the shard-driven QUIC loop.
pub struct AgentServer {
    pub local_addr: SocketAddr,
    engines: Vec<EngineHandle>,
}

impl AgentServer {
    /// Opens the CA, loads the registry and binds the listener of the
    /// running configuration's `[agents]`. Sessions report to `events`;
    /// enrolments, refusals and anomalies go to `anomalies`' audit trail.
    pub fn bind(
        config: tokio::sync::watch::Receiver<Arc<crate::config::Config>>,
        data_dir: PathBuf,
        master: Arc<Master>,
        metrics: Arc<Metrics>,
        events: mpsc::Sender<AgentEvent>,
        shards: &crate::shards::Shards,
        oversight: Oversight,
    ) -> Result<Self, String> {
        let Oversight {
            anomalies,
            incident,
        } = oversight;
        let running = config.borrow().clone();
        let cfg = &running.agents;
        let audit = anomalies.audit().cloned();
        let store = super::store::Store::new(&data_dir);
        let ca = Ca::open_or_create(store.dir(), &master.current()).map_err(|e| e.to_string())?;
        let mut watch = Watch::new(&data_dir);
        let initial = match watch.poll() {
            Some(Ok(a)) => a,
            Some(Err(e)) => return Err(e.to_string()),
            None => Vec::new(),
        };
        let shared = Arc::new(Shared {
            agents: RwLock::new(by_fingerprint(initial)),
            watch: Mutex::new(watch),
            master,
            metrics,
            logins: Logins::open(
                store.dir().join(super::guard::FILE),
                cfg.max_failures,
                cfg.lockout.as_secs(),
            ),
            digest: Mutex::new(FailureDigest::default()),
            handshakes: crate::slots::Slots::new(MAX_HANDSHAKES, MAX_HANDSHAKES_PER_SOURCE),
            sessions: Mutex::new(HashMap::new()),
            audit,
            sessions_made: std::sync::atomic::AtomicU64::new(0),
            anomalies,
            incident,
            config,
        });
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca.cert_der().map_err(|e| e.to_string())?)
            .map_err(|e| format!("agent CA: {e}"))?;
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| format!("agent CA: {e}"))?;
        let verifier = Arc::new(AgentVerifier {
            inner,
            agents: Arc::new(SharedAgents(shared.clone())),
        });
        let (cert, key) = ca.issue_server().map_err(|e| e.to_string())?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert], key)
            .map_err(|e| format!("server certificate: {e}"))?;
        tls.alpn_protocols = vec![protocol::ALPN.to_vec()];
        tls.max_early_data_size = 0;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| format!("QUIC TLS: {e}"))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Arc::new(transport_config(cfg.drop_after)));
        let listen = |e: std::io::Error| format!("agents listener {}: {e}", cfg.listen);
        let sockets = reuse_port_sockets(cfg.listen, shards.len()).map_err(listen)?;
        let local_addr = sockets
            .first()
            .map(|s| s.local_addr())
            .transpose()
            .map_err(listen)?
            .unwrap_or(cfg.listen);
        // One endpoint configuration: the shards share its stateless-reset
        // key, as they share the server's token key (a Retry made by one
        // is checked by whichever gets the client's next Initial). Its
        // connection IDs are ours ([`super::cid`]): quinn's default ones
        // clash at a few thousand agents.
        let endpoint_config = Arc::new(super::cid::endpoint_config());
        let server = Arc::new(server);
        let stats = super::socket::Stats::of(&shared.metrics);
        let mut engines = Vec::with_capacity(sockets.len());
        for (i, socket) in sockets.into_iter().enumerate() {
            let shard = shards.handle(i);
            // The engine's socket belongs to the shard's runtime.
            let _in_shard = shard.enter();
            let listener = Arc::new(ShardListener {
                shared: shared.clone(),
                events: events.clone(),
                shard: i,
            });
            let (engine, handle) = Engine::new(
                socket,
                endpoint_config.clone(),
                server.clone(),
                listener,
                HANDSHAKE_TIMEOUT,
                &shared.metrics,
                stats.clone(),
            )
            .map_err(listen)?;
            shard.spawn(engine.run());
            engines.push(handle);
        }
        tokio::spawn(watch_registry(shared.clone()));
        tokio::spawn(end_sessions_at_lockdown(shared.clone()));
        tokio::spawn(audit_failures(shared));
        Ok(Self {
            local_addr,
            engines,
        })
    }

    /// Closes every session and the listener, and waits (a second at
    /// most) for the agents to be told: the shards that send the close
    /// stop with the gateway.
    pub async fn close(&self) {
        let until = tokio::time::Instant::now() + Duration::from_secs(1);
        for e in &self.engines {
            let _ =
                tokio::time::timeout_at(until, e.shutdown(close::SHUTDOWN, b"gateway stopping"))
                    .await;
        }
    }
}

/// Socket buffers asked for on the agents' QUIC sockets (the kernel caps
/// them at net.core.rmem_max / wmem_max, which the image raises:
/// systemd/sysctl.d/60-tollgate.conf).
const AGENT_SOCKET_BUFFER: usize = 8 << 20;

/// `n` UDP sockets bound to `addr` with `SO_REUSEPORT` (the first picks
/// the port when `addr`'s is 0). Only sockets of this process's user may
/// join the group (Linux checks the owner), and the port must be free
/// first: a second gateway on the same address fails to start rather
/// than share the agents' traffic.
fn reuse_port_sockets(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::UdpSocket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    if addr.port() != 0 {
        drop(std::net::UdpSocket::bind(addr)?);
    }
    let mut at = addr;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let s = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_port(true)?;
        // Every agent's media of the shard arrives on this one socket:
        // a turn of the engine that runs long (a burst, the calls' timed
        // work) must find it queued in the kernel, not dropped (the
        // kernel caps it at net.core.rmem_max / wmem_max).
        if let Err(e) = s.set_recv_buffer_size(AGENT_SOCKET_BUFFER) {
            tracing::debug!("agents' QUIC receive buffer: {e}");
        }
        // The kernel cuts the size silently, and reports twice what it
        // granted (its bookkeeping overhead).
        let granted = s.recv_buffer_size().map_or(0, |n| n / 2);
        if out.is_empty() && granted < AGENT_SOCKET_BUFFER {
            tracing::warn!(
                asked = AGENT_SOCKET_BUFFER,
                got = granted,
                "the agents' QUIC receive buffer is smaller than asked: raise net.core.rmem_max (the image's sysctl.d does) or bursts of media are dropped"
            );
        }
        if let Err(e) = s.set_send_buffer_size(AGENT_SOCKET_BUFFER) {
            tracing::debug!("agents' QUIC send buffer: {e}");
        }
        s.bind(&at.into())?;
        let s: std::net::UdpSocket = s.into();
        at = s.local_addr()?;
        out.push(s);
    }
    Ok(out)
}

fn by_fingerprint(agents: Vec<Agent>) -> HashMap<String, Agent> {
    agents
        .into_iter()
        .map(|a| (a.fingerprint.clone(), a))
        .collect()
}

/// Polls the registry for changes.
async fn watch_registry(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        shared.refresh();
    }
}

/// What a shard's engine asks of the listener: whom to let in, and the
/// sessions of those who got in.
struct ShardListener {
    shared: Arc<Shared>,
    events: mpsc::Sender<AgentEvent>,
    shard: usize,
}

impl Listener for ShardListener {
    fn incoming(&self, source: SocketAddr, validated: bool, may_retry: bool) -> Admit {
        // Address validation first: a forged source never sees the Retry,
        // so it never gets a handshake (or a failure counted against it).
        if !validated && may_retry {
            self.shared.metrics.agent_quic_retries.inc();
            return Admit::Retry;
        }
        match self.shared.handshakes.take(handshake_source(source.ip())) {
            Some(place) => Admit::Accept(Box::new(place)),
            None => {
                self.shared.fail_count("busy");
                Admit::Refuse
            }
        }
    }

    fn connected(&self, conn: Conn, control: mpsc::Receiver<bytes::Bytes>) {
        let session = self
            .shared
            .sessions_made
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let (shared, events, shard) = (self.shared.clone(), self.events.clone(), self.shard);
        tokio::spawn(async move {
            run_session(session, shard, conn, control, &shared, &events).await;
        });
    }

    fn failed(&self, source: IpAddr, why: Option<&quinn::ConnectionError>) {
        let reason = why.map_or("handshake", handshake_failure);
        debug!(%source, reason, "agent handshake failed");
        self.shared.fail_count(reason);
        self.shared.note_failure(source, reason);
    }
}

/// The metrics reason for a failed handshake, from the TLS alert it sent.
fn handshake_failure(e: &quinn::ConnectionError) -> &'static str {
    let quinn::ConnectionError::TransportError(t) = e else {
        return "handshake";
    };
    match u64::from(t.code) {
        // TLS alerts are 0x100 + the alert number (RFC 9001 section 4.8).
        0x174 => "no_certificate", // certificate_required (116)
        0x130 => "unknown_ca",     // unknown_ca (48)
        0x12c => "revoked",        // certificate_revoked (44)
        0x131 => "unknown_agent",  // access_denied (49)
        _ => "handshake",
    }
}

impl Shared {
    /// The agent's TOTP secret. Right after a master-key rotation the
    /// registry in memory may still hold secrets sealed under the old key
    /// (the file was re-sealed, the next poll has not read it): then the
    /// registry is re-read at once and the secret tried again.
    fn totp_secret(&self, agent: &Agent) -> Option<super::totp::Secret> {
        let open = |a: &Agent| a.totp_secret(&self.master.current()).ok();
        open(agent).or_else(|| {
            self.refresh();
            let again = self.agents.read().ok()?.get(&agent.fingerprint).cloned()?;
            open(&again)
        })
    }

    /// Reloads the registry if its file changed, and ends the sessions of
    /// agents no longer enrolled or now revoked.
    fn refresh(&self) {
        let polled = match self.watch.lock() {
            Ok(mut w) => w.poll(),
            Err(_) => return,
        };
        let agents = match polled {
            None => return,
            Some(Ok(a)) => by_fingerprint(a),
            Some(Err(e)) => {
                warn!("agent registry: {e}; keeping the previous one");
                return;
            }
        };
        let revoked: Vec<Conn> = match self.sessions.lock() {
            Ok(sessions) => sessions
                .values()
                .filter(|(_, fp, _)| !agents.get(fp).is_some_and(Agent::active))
                .map(|(_, _, c)| c.clone())
                .collect(),
            Err(_) => Vec::new(),
        };
        if let Ok(mut a) = self.agents.write() {
            if let Some(audit) = &self.audit {
                // What changed in the registry (the command wrote it).
                let active = |m: &HashMap<String, Agent>| -> std::collections::BTreeSet<String> {
                    m.values()
                        .filter(|x| x.active())
                        .map(|x| x.name.clone())
                        .collect()
                };
                let (before, after) = (active(&a), active(&agents));
                for name in after.difference(&before) {
                    audit.record("registry", "agent enrolled", name, "ok");
                }
                for name in before.difference(&after) {
                    audit.record("registry", "agent revoked", name, "ok");
                }
            }
            *a = agents;
        }
        for c in revoked {
            info!("agent revoked: closing its session");
            c.close(close::REVOKED, b"certificate revoked");
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Closes a session's connection when dropped, unless already closed.
struct CloseOnDrop(Conn);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if !self.0.is_closed() {
            self.0.close(close::DONE, b"session ended");
        }
    }
}

async fn run_session(
    session: u64,
    shard: usize,
    conn: Conn,
    mut control: mpsc::Receiver<bytes::Bytes>,
    shared: &Arc<Shared>,
    events: &mpsc::Sender<AgentEvent>,
) {
    // However the session ends (a panic, its runtime stopping), its
    // connection does not outlive it.
    let _guard = CloseOnDrop(conn.clone());
    let source = conn.remote_address().ip();
    let fp = conn.peer_certs().first().map(|c| fingerprint(c));
    let agent = fp.and_then(|fp| shared.agents.read().ok()?.get(&fp).cloned());
    let Some(agent) = agent.filter(Agent::active) else {
        refuse(&conn, shared, "unknown_agent", close::AUTH, "unknown agent");
        return;
    };
    let name = agent.name.clone();
    if !admitted(shared, &name) {
        refuse_in_lockdown(&conn, shared);
        return;
    }
    if shared.logins.locked(&name, unix_now()).is_some() {
        refuse(&conn, shared, "locked_out", close::LOCKED_OUT, "locked out");
        return;
    }
    let mut dec = Decoder::default();
    let hello = tokio::time::timeout(HELLO_TIMEOUT, async {
        loop {
            match dec.decode::<ClientMsg>() {
                Ok(Some(m)) => return Some(Ok(m)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            let chunk = control.recv().await?;
            dec.push(&chunk);
        }
    })
    .await;
    let Ok(Some(first)) = hello else {
        refuse(&conn, shared, "timeout", close::PROTOCOL, "no hello");
        return;
    };
    let otp = match first {
        Ok(ClientMsg::Hello { version, otp, .. }) if version == protocol::VERSION => otp,
        Ok(ClientMsg::Hello { .. }) => {
            write_msg(
                &conn,
                &ServerMsg::Error {
                    code: "version".into(),
                    message: format!("this gateway speaks version {}", protocol::VERSION),
                    call: None,
                },
            );
            refuse(
                &conn,
                shared,
                "protocol",
                close::PROTOCOL,
                "unsupported version",
            );
            return;
        }
        _ => {
            refuse(&conn, shared, "protocol", close::PROTOCOL, "expected hello");
            return;
        }
    };
    // The code is checked and its step taken under one lock, and kept on
    // disk before the login is accepted.
    // On a blocking thread: a success is fsynced under the logins lock.
    let secret = shared.totp_secret(&agent);
    // The address is noted with it (on disk when new).
    let checked = tokio::task::spawn_blocking({
        let (shared, name) = (shared.clone(), name.clone());
        move || {
            let now = unix_now();
            shared
                .logins
                .check(&name, now, |last| {
                    secret
                        .as_ref()
                        .and_then(|secret| totp::verify(secret, &otp.0, now, last))
                })
                .map(|_| shared.logins.address(&name, source))
        }
    })
    .await
    .unwrap_or(Err(Refused::BadCode { locked_for: None }));
    let address = match checked {
        Ok(a) => a,
        Err(why) => {
            login_refused(&conn, shared, &name, source, why);
            return;
        }
    };
    unusual_login(shared, &name, agent.profile.as_deref(), address);
    // One session per agent: a new login replaces the old. A lockdown
    // that began while this login was under way is checked again under
    // the sessions lock: either it sees this session and ends it, or
    // this check sees the lockdown.
    let replaced: Vec<Conn> = match shared.sessions.lock() {
        Ok(_) if !admitted(shared, &name) => {
            refuse_in_lockdown(&conn, shared);
            return;
        }
        Ok(mut s) => {
            let old: Vec<u64> = s
                .iter()
                .filter(|(_, (n, _, _))| *n == name)
                .map(|(id, _)| *id)
                .collect();
            let conns = old
                .iter()
                .filter_map(|id| s.remove(id).map(|(_, _, c)| c))
                .collect();
            s.insert(
                session,
                (name.clone(), agent.fingerprint.clone(), conn.clone()),
            );
            conns
        }
        Err(_) => Vec::new(),
    };
    for c in replaced {
        c.close(close::REPLACED, b"logged in elsewhere");
    }
    info!(agent = %name, %source, "agent logged in");
    shared.metrics.agents_connected.inc();
    let (tx, rx) = mpsc::channel(LINK_QUEUE);
    let link = Link::new(conn.clone(), shard, tx);
    link.send(ServerMsg::Welcome {
        version: protocol::VERSION,
        agent: name.clone(),
        profile: agent.profile.clone(),
    });
    let _ = events
        .send(AgentEvent::Up {
            session,
            agent: name.clone(),
            profile: agent.profile.clone(),
            enrolled_s: agent.enrolled,
            link: link.clone(),
        })
        .await;
    let why = serve_session(session, &conn, control, dec, rx, &link, events, shared).await;
    // A session that ends leaves no connection behind.
    let (code, reason) = why.unwrap_or((close::DONE, "session ended".into()));
    if !conn.is_closed() {
        conn.close(code, reason.as_bytes());
    }
    if let Ok(mut s) = shared.sessions.lock() {
        s.remove(&session);
    }
    shared.metrics.agents_connected.dec();
    let _ = events.send(AgentEvent::Down { session }).await;
    info!(agent = %name, "agent session ended");
}

fn write_msg(conn: &Conn, msg: &ServerMsg) {
    let mut out = Vec::with_capacity(256);
    protocol::encode(msg, &mut out);
    conn.write(out.into());
}

/// Runs a logged-in session until it ends; returns the close to send, if
/// the gateway ends it.
#[allow(clippy::too_many_arguments)]
async fn serve_session(
    session: u64,
    conn: &Conn,
    mut control: mpsc::Receiver<bytes::Bytes>,
    mut dec: Decoder,
    mut rx: mpsc::Receiver<ServerMsg>,
    link: &Link,
    events: &mpsc::Sender<AgentEvent>,
    shared: &Shared,
) -> Option<(u32, String)> {
    let mut out = Vec::with_capacity(1024);
    loop {
        // Whatever is already decoded first.
        loop {
            match dec.decode::<ClientMsg>() {
                Ok(None) => break,
                Ok(Some(ClientMsg::Ping { id })) => {
                    link.send(ServerMsg::Pong { id });
                }
                Ok(Some(ClientMsg::Hello { .. })) => {
                    return protocol_error(shared, conn, "hello_again", "hello sent twice");
                }
                Ok(Some(msg)) => {
                    if events
                        .send(AgentEvent::Message { session, msg })
                        .await
                        .is_err()
                    {
                        return Some((close::SHUTDOWN, "gateway stopping".into()));
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    return protocol_error(shared, conn, e.reason(), &why);
                }
            }
        }
        tokio::select! {
            r = control.recv() => match r {
                Some(chunk) => dec.push(&chunk),
                // The agent closed its side, or the connection went.
                None => return Some((close::DONE, "control stream closed".into())),
            },
            m = rx.recv() => {
                let m = m?;
                out.clear();
                protocol::encode(&m, &mut out);
                // Send what else is queued in the same write.
                while let Ok(m) = rx.try_recv() {
                    protocol::encode(&m, &mut out);
                }
                if !conn.write(bytes::Bytes::copy_from_slice(&out)) {
                    return None;
                }
            }
            _ = conn.closed() => return None,
        }
    }
}

/// Counts a protocol error and tells the agent; the caller closes with
/// the same words (the close reason reaches the agent even if the stream
/// write does not).
fn protocol_error(shared: &Shared, conn: &Conn, reason: &str, why: &str) -> Option<(u32, String)> {
    shared
        .metrics
        .agent_protocol_errors
        .with_label_values(&[reason])
        .inc();
    write_msg(
        conn,
        &ServerMsg::Error {
            code: "protocol".into(),
            message: why.to_string(),
            call: None,
        },
    );
    Some((close::PROTOCOL, why.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_share_a_free_port_and_a_taken_one_is_refused() {
        let group = reuse_port_sockets("127.0.0.1:0".parse().expect("addr"), 3).expect("bind");
        assert_eq!(group.len(), 3);
        let port = group[0].local_addr().expect("addr").port();
        assert!(port != 0);
        assert!(group
            .iter()
            .all(|s| s.local_addr().is_ok_and(|a| a.port() == port)));
        // A second gateway on the same address fails to start rather than
        // join the group and take a share of the agents.
        let at = SocketAddr::from(([127, 0, 0, 1], port));
        let again = reuse_port_sockets(at, 2).map(|_| ()).map_err(|e| e.kind());
        assert_eq!(again, Err(std::io::ErrorKind::AddrInUse));
    }

    #[test]
    fn handshake_places_count_an_ipv6_host_by_its_64() {
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        assert_eq!(
            handshake_source(ip("2001:db8:1:2:aaaa::1")),
            handshake_source(ip("2001:db8:1:2:bbbb::7"))
        );
        assert_ne!(
            handshake_source(ip("2001:db8:1:2::1")),
            handshake_source(ip("2001:db8:1:3::1"))
        );
        assert_eq!(handshake_source(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }
}
