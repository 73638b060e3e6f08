//! SIP over UDP and TCP: the only part of `sip` that touches the kernel.
//!
//! Every received message is handed to the core as an [`Inbound`] through
//! a bounded channel (when the core falls behind, datagrams are dropped and
//! counted rather than queued without bound). TCP connections are framed
//! by Content-Length with the parser's limits; a message must arrive whole
//! within the partial-message timeout, so a slow sender cannot hold a
//! connection, and connections are capped in total and per peer address.
//! RFC 5626 keepalives (a double CRLF) are answered with a single CRLF.
//! TLS (rustls, TLS 1.2 and 1.3, certificate and key from PEM files) runs
//! the same framing over the decrypted stream; the handshake must finish
//! within the partial-message timeout.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus::IntCounter;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::framer::Frame;
use super::message::{Framing, HeaderName, Limits, Message};
use super::transaction::{Peer, Transmit};

/// A message received, with where it came from.
pub struct Inbound {
    pub bytes: super::WipedBytes,
    pub peer: Peer,
}

/// Peers the gateway dials over TLS: per address, the client
/// configuration and the name the peer's certificate must carry.
pub type TlsPeers = HashMap<
    SocketAddr,
    (
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    ),
>;

/// Settings for the listeners.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    /// TLS listeners and the server configuration they use.
    pub tls: Vec<SocketAddr>,
    pub tls_config: Option<Arc<rustls::ServerConfig>>,
    /// Peers the gateway dials over TLS: their client configuration and
    /// the name their certificate must carry.
    pub tls_peers: TlsPeers,
    pub limits: Limits,
    pub partial_message_timeout: Duration,
    /// A TCP connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Who may connect: a connection from elsewhere is closed at accept,
    /// before any TLS handshake or read (the core would drop its messages
    /// anyway; this spares the handshake and the connection slot).
    pub peers: PeerNetworks,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
}

/// Counters the transport keeps. They are the exported Prometheus
/// counters themselves (resolved by the caller), so an event that never
/// reaches the call core, such as a refused connection, still shows at
/// once.
#[derive(Debug)]
pub struct TransportStats {
    pub inbound_dropped: IntCounter,
    pub outbound_dropped: IntCounter,
    pub connections_refused: IntCounter,
    pub connections_timed_out: IntCounter,
    pub stream_parse_failures: IntCounter,
    pub tls_handshake_failures: IntCounter,
    /// Connections closed at accept: the source is not a trunk peer.
    pub connections_not_peers: IntCounter,
}

impl TransportStats {
    /// The event names, in field order.
    pub const EVENTS: [&'static str; 7] = [
        "inbound_dropped",
        "outbound_dropped",
        "connection_refused",
        "connection_timed_out",
        "stream_framing_lost",
        "tls_handshake_failed",
        "connection_not_a_peer",
    ];

    /// Counters from `counter(event name)`.
    pub fn new(counter: impl Fn(&str) -> IntCounter) -> Self {
        let [a, b, c, d, e, f, g] = Self::EVENTS.map(counter);
        Self {
            inbound_dropped: a,
            outbound_dropped: b,
            connections_refused: c,
            connections_timed_out: d,
            stream_parse_failures: e,
            tls_handshake_failures: f,
            connections_not_peers: g,
        }
    }
}

/// The networks that may open SIP connections (every trunk's peers),
/// shared with the accept loops and replaced by a reload.
pub type PeerNetworks = Arc<std::sync::RwLock<Vec<ipnet::IpNet>>>;

fn is_peer(peers: &PeerNetworks, ip: IpAddr) -> bool {
    crate::in_networks(&peers.read().unwrap_or_else(|p| p.into_inner()), ip)
}

/// A rustls client configuration that trusts the CA certificates in a PEM
/// file (a carrier's CA), TLS 1.2 and 1.3.
pub fn tls_client_config(ca: &std::path::Path) -> Result<rustls::ClientConfig, String> {
    let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no CA certificate in it", ca.display()));
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// The SIP TLS listeners' certificate and key, swapped in place by a
/// reload: a renewed certificate serves the next handshake, and
/// connections already open keep the one they were made with.
pub struct ServerCert {
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerCert")
    }
}

impl ServerCert {
    /// Reads a PEM certificate chain and its key; refuses a key that is
    /// not the certificate's.
    pub fn load(cert: &std::path::Path, key: &std::path::Path) -> Result<Arc<Self>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = std::sync::RwLock::new(Arc::new(certified(cert, key, &provider)?));
        Ok(Arc::new(Self { current, provider }))
    }

    /// Reads the files again (a reload): the pair to [`ServerCert::install`]
    /// if it differs from the one served, `None` if it is the same. Nothing
    /// changes until it is installed.
    pub fn read_again(
        &self,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<Option<rustls::sign::CertifiedKey>, String> {
        let new = certified(cert, key, &self.provider)?;
        let served = self.current.read().unwrap_or_else(|p| p.into_inner());
        Ok((served.cert != new.cert).then_some(new))
    }

    /// Serves `new` from the next handshake on.
    pub fn install(&self, new: rustls::sign::CertifiedKey) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
    }

    /// A rustls server configuration that serves this certificate, TLS 1.2
    /// and 1.3.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, String> {
        Ok(
            rustls::ServerConfig::builder_with_provider(self.provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_no_client_auth()
                .with_cert_resolver(self.clone()),
        )
    }
}

impl rustls::server::ResolvesServerCert for ServerCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn certified(
    cert: &std::path::Path,
    key: &std::path::Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<rustls::sign::CertifiedKey, String> {
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let certs = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let key_der = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| format!("{}: {e}", key.display()))?
        .ok_or_else(|| format!("{}: no private key in it", key.display()))?;
    rustls::sign::CertifiedKey::from_der(certs, key_der, provider)
        .map_err(|e| format!("certificate and key do not match: {e}"))
}

/// A rustls server configuration from PEM certificate chain and key files.
pub fn tls_server_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<rustls::ServerConfig, String> {
    ServerCert::load(cert, key)?.server_config()
}

/// Open connections by (peer address, TLS or not): a TLS peer's
/// messages only ever take a TLS connection.
type Connections = Arc<Mutex<HashMap<(SocketAddr, bool), mpsc::Sender<super::WipedBytes>>>>;

/// Connections being dialled at once, at most: a flood of responses to
/// peers whose connections closed cannot make the gateway open thousands.
const MAX_DIALS: usize = 64;

/// Connections being dialled to one IP at once, at most: a peer that
/// makes the gateway dial it back (closing its connections from many
/// ports, naming ports in its Via) cannot take the dials that carriers'
/// reconnections need.
const MAX_DIALS_PER_IP: usize = 4;

/// The bound listeners and the way back to each peer.
pub struct Transport {
    udp: Vec<Arc<UdpSocket>>,
    conns: Connections,
    /// Connections being dialled now (at most [`MAX_DIALS`], and
    /// [`MAX_DIALS_PER_IP`] to one IP).
    dials: Arc<crate::slots::Slots<IpAddr>>,
    /// For connections the gateway opens (to TCP trunks).
    cfg: TransportConfig,
    inbound: mpsc::Sender<Inbound>,
    pub stats: Arc<TransportStats>,
    pub local_udp: Vec<SocketAddr>,
    pub local_tcp: Vec<SocketAddr>,
    pub local_tls: Vec<SocketAddr>,
    /// The listeners' tasks: they hold the sockets, so dropping the
    /// transport ends them and frees the ports.
    _listeners: Listeners,
}

/// Listener tasks, aborted when dropped.
struct Listeners(Vec<tokio::task::AbortHandle>);

impl Drop for Listeners {
    fn drop(&mut self) {
        for l in &self.0 {
            l.abort();
        }
    }
}

impl Transport {
    /// Binds every listener and starts their tasks; received messages go
    /// to `inbound`.
    pub async fn bind(
        cfg: TransportConfig,
        inbound: mpsc::Sender<Inbound>,
        stats: TransportStats,
    ) -> io::Result<Self> {
        let stats = Arc::new(stats);
        let conns: Connections = Arc::default();
        let mut udp = Vec::new();
        let mut local_udp = Vec::new();
        // Aborted if a later listener fails to bind, as on drop.
        let mut tasks = Listeners(Vec::new());
        for addr in &cfg.udp {
            let sock = Arc::new(bind_udp(*addr)?);
            local_udp.push(sock.local_addr()?);
            tasks.0.push(
                tokio::spawn(udp_loop(
                    sock.clone(),
                    inbound.clone(),
                    stats.clone(),
                    cfg.limits,
                ))
                .abort_handle(),
            );
            udp.push(sock);
        }
        let mut local_tcp = Vec::new();
        let open = Arc::new(AtomicUsize::new(0));
        let per_peer: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
        let mut local_tls = Vec::new();
        let tls = cfg.tls_config.clone().map(tokio_rustls::TlsAcceptor::from);
        let listeners = cfg
            .tcp
            .iter()
            .map(|a| (a, None))
            .chain(cfg.tls.iter().map(|a| (a, tls.clone())));
        for (addr, acceptor) in listeners {
            let is_tls = cfg.tls.contains(addr) && acceptor.is_some();
            if cfg.tls.contains(addr) && acceptor.is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "TLS listener without a certificate",
                ));
            }
            let listener = TcpListener::bind(addr).await?;
            if is_tls {
                local_tls.push(listener.local_addr()?);
            } else {
                local_tcp.push(listener.local_addr()?);
            }
            tasks.0.push(
                tokio::spawn(accept_loop(
                    listener,
                    acceptor,
                    cfg.clone(),
                    inbound.clone(),
                    conns.clone(),
                    stats.clone(),
                    open.clone(),
                    per_peer.clone(),
                ))
                .abort_handle(),
            );
        }
        Ok(Self {
            udp,
            conns,
            dials: crate::slots::Slots::new(MAX_DIALS, MAX_DIALS_PER_IP),
            cfg,
            inbound,
            stats,
            local_udp,
            local_tcp,
            local_tls,
            _listeners: tasks,
        })
    }

    /// New TLS peers (a reload): connections opened from now on verify
    /// by them; open ones keep the peer they verified.
    pub fn set_tls_peers(&mut self, peers: TlsPeers) {
        self.cfg.tls_peers = peers;
    }

    /// New trunk peer networks (a reload): who may connect from now on.
    pub fn set_peers(&self, networks: Vec<ipnet::IpNet>) {
        *self.cfg.peers.write().unwrap_or_else(|p| p.into_inner()) = networks;
    }

    /// Sends without waiting: over UDP from the first socket, over TCP or
    /// TLS on the peer's open connection of that kind. What cannot go now
    /// is dropped and counted (SIP retransmits over UDP; a TCP peer whose
    /// queue is full is not keeping up).
    ///
    /// With no open connection, one is opened as RFC 3261 section 18.2.2
    /// says: a response goes to the source IP at the port of its top
    /// Via's sent-by (5060, or 5061 for TLS, when absent), a request to
    /// the peer's address. A TLS peer gets a TLS connection only, and only
    /// to a configured TLS trunk whose CA verifies it; otherwise the
    /// message is dropped and counted, never sent in clear.
    pub fn send(&self, t: &Transmit) {
        let sent = if t.peer.reliable {
            let key = (t.peer.addr, t.peer.tls);
            let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            match conns.get(&key) {
                Some(tx) => tx.try_send(t.bytes.clone()).is_ok(),
                None => {
                    let to = reconnect_to(t);
                    let tls = if t.peer.tls {
                        match self.cfg.tls_peers.get(&to) {
                            Some(c) => Some(c.clone()),
                            None => {
                                debug!("no TLS connection to that peer and none can be opened: dropped");
                                self.stats.outbound_dropped.inc();
                                return;
                            }
                        }
                    } else {
                        None
                    };
                    let Some(slot) = self.dials.take(to.ip()) else {
                        self.stats.outbound_dropped.inc();
                        return;
                    };
                    // Its queue exists at once, so what is sent while it
                    // connects waits in order.
                    let (tx, rx) = mpsc::channel::<super::WipedBytes>(64);
                    let queued = tx.try_send(t.bytes.clone()).is_ok();
                    conns.insert(key, tx.clone());
                    tokio::spawn(dial(
                        Dial { key, to, tls, slot },
                        (tx, rx),
                        self.cfg.clone(),
                        self.inbound.clone(),
                        self.conns.clone(),
                        self.stats.clone(),
                    ));
                    queued
                }
            }
        } else {
            self.udp
                .first()
                .is_some_and(|s| s.try_send_to(&t.bytes, t.peer.addr).is_ok())
        };
        if !sent {
            self.stats.outbound_dropped.inc();
        }
    }
}

async fn udp_loop(
    sock: Arc<UdpSocket>,
    inbound: mpsc::Sender<Inbound>,
    stats: Arc<TransportStats>,
    limits: Limits,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors surface here on Linux; they are not fatal.
                debug!("sip udp receive: {e}");
                continue;
            }
        };
        let data = &buf[..n];
        if data.iter().all(|&b| b == b'\r' || b == b'\n') {
            continue; // keepalive
        }
        if n > limits.max_size {
            stats.inbound_dropped.inc();
            zeroize::Zeroize::zeroize(&mut buf[..n]);
            continue;
        }
        let msg = Inbound {
            bytes: data.to_vec().into(),
            peer: Peer {
                addr: from,
                reliable: false,
                tls: false,
            },
        };
        // The copy goes on; what stays in the reused buffer is wiped.
        zeroize::Zeroize::zeroize(&mut buf[..n]);
        if inbound.try_send(msg).is_err() {
            stats.inbound_dropped.inc();
        }
    }
}

#[allow(clippy::too_many_arguments)] // one task's whole context, passed once
async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    cfg: TransportConfig,
    inbound: mpsc::Sender<Inbound>,
    conns: Connections,
    stats: Arc<TransportStats>,
    open: Arc<AtomicUsize>,
    per_peer: Arc<Mutex<HashMap<IpAddr, usize>>>,
) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("sip tcp accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !is_peer(&cfg.peers, from.ip()) {
            stats.connections_not_peers.inc();
            drop(stream);
            continue;
        }
        let admitted = {
            let mut pp = per_peer.lock().unwrap_or_else(|p| p.into_inner());
            let n = pp.entry(from.ip()).or_insert(0);
            if open.load(Ordering::Relaxed) >= cfg.max_connections
                || *n >= cfg.max_connections_per_peer
            {
                false
            } else {
                *n += 1;
                open.fetch_add(1, Ordering::Relaxed);
                true
            }
        };
        if !admitted {
            stats.connections_refused.inc();
            drop(stream);
            continue;
        }
        let (tls, cfg, inbound, conns, stats, open, per_peer) = (
            tls.clone(),
            cfg.clone(),
            inbound.clone(),
            conns.clone(),
            stats.clone(),
            open.clone(),
            per_peer.clone(),
        );
        let tls_kind = tls.is_some();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match tls {
                None => connection(stream, from, false, &cfg, inbound, &conns, &stats).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(cfg.partial_message_timeout, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls_stream)) => {
                            connection(tls_stream, from, true, &cfg, inbound, &conns, &stats).await
                        }
                        _ => {
                            stats.tls_handshake_failures.inc();
                        }
                    }
                }
            }
            conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(from, tls_kind));
            open.fetch_sub(1, Ordering::Relaxed);
            let mut pp = per_peer.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = pp.get_mut(&from.ip()) {
                *n -= 1;
                if *n == 0 {
                    pp.remove(&from.ip());
                }
            }
        });
    }
}

/// Where a new connection for `t` goes (RFC 3261 section 18.2.2): a
/// response to the source IP at its top Via's sent-by port (the default
/// port of the transport when it has none), a request to the peer.
fn reconnect_to(t: &Transmit) -> SocketAddr {
    if !t.bytes.starts_with(b"SIP/2.0 ") {
        return t.peer.addr;
    }
    let default = if t.peer.tls { 5061 } else { 5060 };
    let port = Message::parse(&t.bytes, Framing::Datagram, &Limits::default())
        .ok()
        .and_then(|(m, _)| {
            let v = m.values(HeaderName::Via).next()?;
            Some(super::header::Via::parse(v).ok()?.port.unwrap_or(default))
        })
        .unwrap_or(default);
    SocketAddr::new(t.peer.addr.ip(), port)
}

/// A connection to open: the key its queue is known by, where it goes,
/// its TLS client configuration when it is TLS, and its dial slot (held
/// until connected).
struct Dial {
    key: (SocketAddr, bool),
    to: SocketAddr,
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    slot: crate::slots::Slot<IpAddr>,
}

/// Opens a TCP (or TLS) connection to `d.to` and serves it like an
/// accepted one, under `d.key`.
async fn dial(
    d: Dial,
    queue: (
        mpsc::Sender<super::WipedBytes>,
        mpsc::Receiver<super::WipedBytes>,
    ),
    cfg: TransportConfig,
    inbound: mpsc::Sender<Inbound>,
    conns: Connections,
    stats: Arc<TransportStats>,
) {
    let limit = cfg.partial_message_timeout.max(Duration::from_secs(2));
    let connected = tokio::time::timeout(limit, tokio::net::TcpStream::connect(d.to)).await;
    let from = d.key.0;
    let stream = match connected {
        Ok(Ok(stream)) => stream,
        _ => {
            debug!("sip tcp connect to a peer failed");
            stats.outbound_dropped.inc();
            conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&d.key);
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    match d.tls {
        None => {
            drop(d.slot);
            serve(stream, from, false, &cfg, inbound, &conns, &stats, queue).await
        }
        Some((client, name)) => {
            let connector = tokio_rustls::TlsConnector::from(client);
            let handshake = tokio::time::timeout(limit, connector.connect(name, stream)).await;
            drop(d.slot);
            match handshake {
                Ok(Ok(tls)) => serve(tls, from, true, &cfg, inbound, &conns, &stats, queue).await,
                _ => {
                    warn!("TLS handshake with a trunk peer failed (certificate or protocol)");
                    stats.tls_handshake_failures.inc();
                    conns
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&d.key);
                }
            }
        }
    }
}

/// Serves one accepted TCP or TLS connection until it closes, errs or
/// times out.
async fn connection<S: AsyncRead + AsyncWrite + Send + 'static>(
    stream: S,
    from: SocketAddr,
    tls: bool,
    cfg: &TransportConfig,
    inbound: mpsc::Sender<Inbound>,
    conns: &Connections,
    stats: &TransportStats,
) {
    let (tx, rx) = mpsc::channel::<super::WipedBytes>(64);
    conns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((from, tls), tx.clone());
    serve(stream, from, tls, cfg, inbound, conns, stats, (tx, rx)).await;
}

/// Reads, frames and hands on messages from one connection, and writes
/// what its queue holds, until it closes, errs or times out.
#[allow(clippy::too_many_arguments)]
async fn serve<S: AsyncRead + AsyncWrite + Send + 'static>(
    stream: S,
    from: SocketAddr,
    tls: bool,
    cfg: &TransportConfig,
    inbound: mpsc::Sender<Inbound>,
    conns: &Connections,
    stats: &TransportStats,
    (tx, mut rx): (
        mpsc::Sender<super::WipedBytes>,
        mpsc::Receiver<super::WipedBytes>,
    ),
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
    });
    let mut framer = super::framer::Framer::new(cfg.limits);
    let mut chunk = vec![0u8; 16 * 1024];
    // When the bytes of an incomplete message started to arrive.
    let mut partial_since: Option<tokio::time::Instant> = None;
    // Whether the peer closed its sending side cleanly (it may still be
    // waiting for our responses).
    let mut half_closed = false;
    'conn: loop {
        let deadline = match partial_since {
            Some(t) => t + cfg.partial_message_timeout,
            None => tokio::time::Instant::now() + cfg.idle_timeout,
        };
        let n = match tokio::time::timeout_at(deadline, rd.read(&mut chunk)).await {
            Err(_) => {
                stats.connections_timed_out.inc();
                break;
            }
            Ok(Ok(0)) => {
                half_closed = true;
                break;
            }
            Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
        };
        framer.push(&chunk[..n]);
        zeroize::Zeroize::zeroize(&mut chunk[..n]);
        loop {
            match framer.next_frame() {
                Ok(Some(Frame::Ping)) => {
                    // RFC 5626 keepalive: CRLFCRLF ping, CRLF pong.
                    let _ = tx.try_send(b"\r\n".to_vec().into());
                }
                Ok(Some(Frame::Message(bytes))) => {
                    let msg = Inbound {
                        bytes: bytes.into(),
                        peer: Peer {
                            addr: from,
                            reliable: true,
                            tls,
                        },
                    };
                    if inbound.try_send(msg).is_err() {
                        stats.inbound_dropped.inc();
                    }
                    partial_since = None;
                }
                Ok(None) => {
                    if framer.is_partial() {
                        partial_since.get_or_insert_with(tokio::time::Instant::now);
                    } else {
                        partial_since = None;
                    }
                    break;
                }
                Err(_) => {
                    // Framing is lost: nothing after this can be trusted.
                    stats.stream_parse_failures.inc();
                    break 'conn;
                }
            }
        }
    }
    if half_closed {
        // Give the core a moment to answer what it already received.
        tokio::time::sleep(HALF_CLOSE_LINGER).await;
    }
    conns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&(from, tls));
    drop(tx);
    writer.abort();
}

/// How long a connection the peer half-closed stays open for our answers.
const HALF_CLOSE_LINGER: Duration = Duration::from_millis(500);

/// Receive buffer asked for on SIP's UDP sockets: a carrier's burst or a
/// flood the IDS is shedding must queue in the kernel rather than be lost
/// before the gateway sees it (the kernel caps it at net.core.rmem_max).
const UDP_RECV_BUFFER: usize = 4 << 20;

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if let Err(e) = sock.set_recv_buffer_size(UDP_RECV_BUFFER) {
        debug!("SIP UDP receive buffer: {e}");
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}
