//! The agent side of the protocol, for `tollgate agent connect`, the demo
//! and tests: connects with a bundle and a TOTP code, then exchanges
//! control messages and media datagrams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::protocol::{self, ClientMsg, Decoder, ServerMsg};
use super::server::{provider, transport_config};
use super::store::Bundle;

/// Why a connection or a session failed, in words for a person.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bundle: {0}")]
    Bundle(String),
    #[error("cannot reach the gateway at {0}: {1}")]
    Connect(String, String),
    #[error("the gateway closed the session: {0}")]
    Closed(String),
    #[error("the gateway refused the login: {0}")]
    Refused(String),
    #[error("control stream: {0}")]
    Protocol(String),
    #[error("timed out waiting for the gateway")]
    Timeout,
}

fn describe(e: &quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => format!(
            "{} (code {})",
            String::from_utf8_lossy(&c.reason),
            c.error_code
        ),
        other => other.to_string(),
    }
}

/// How to connect (tests vary them).
pub struct Options {
    pub identity: Identity,
    /// How long silence means the gateway is gone.
    pub drop_after: Duration,
    /// Local address to send from (default: any).
    pub bind: Option<SocketAddr>,
    /// An endpoint to share with other agents (a load generator's);
    /// `bind` is then not used. Default: an endpoint of its own.
    pub endpoint: Option<quinn::Endpoint>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            identity: Identity::Bundle,
            drop_after: Duration::from_secs(2),
            bind: None,
            endpoint: None,
        }
    }
}

/// Which client certificate to present (tests use the odd ones).
pub enum Identity {
    Bundle,
    None,
    Other {
        cert: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
    },
}

/// A logged-in agent session.
pub struct Client {
    pub conn: quinn::Connection,
    _endpoint: quinn::Endpoint,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    dec: Decoder,
    buf: Vec<u8>,
    pub agent: String,
}

impl Client {
    /// Connects and logs in: TLS with the bundle's certificate, then hello
    /// with `otp`. Returns once the gateway has welcomed the agent.
    pub async fn connect(bundle: &Bundle, otp: &str) -> Result<Self, ClientError> {
        Self::connect_with(bundle, otp, Options::default()).await
    }

    pub async fn connect_with(
        bundle: &Bundle,
        otp: &str,
        opts: Options,
    ) -> Result<Self, ClientError> {
        let bad = |e: &dyn std::fmt::Display| ClientError::Bundle(e.to_string());
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut bundle.ca.as_bytes()) {
            roots.add(c.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| bad(&e))?
            .with_root_certificates(roots);
        let mut tls = match opts.identity {
            Identity::Bundle => {
                let certs = rustls_pemfile::certs(&mut bundle.certificate.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(&e))?;
                let key = rustls_pemfile::private_key(&mut bundle.private_key.as_bytes())
                    .map_err(|e| bad(&e))?
                    .ok_or_else(|| ClientError::Bundle("no private key".into()))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| bad(&e))?
            }
            Identity::Other { cert, key } => builder
                .with_client_auth_cert(vec![cert], key)
                .map_err(|e| bad(&e))?,
            Identity::None => builder.with_no_client_auth(),
        };
        tls.alpn_protocols = vec![protocol::ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| bad(&e))?;
        let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
        cfg.transport_config(Arc::new(transport_config(opts.drop_after)));
        let addr = resolve(&bundle.gateway)?;
        let bind: SocketAddr = match opts.bind {
            Some(b) => b,
            None if addr.is_ipv4() => SocketAddr::from(([0, 0, 0, 0], 0)),
            None => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
        };
        let endpoint = match opts.endpoint {
            Some(e) => e,
            None => quinn::Endpoint::client(bind)
                .map_err(|e| ClientError::Connect(bundle.gateway.clone(), e.to_string()))?,
        };
        let conn = endpoint
            .connect_with(cfg, addr, &bundle.server_name)
            .map_err(|e| ClientError::Connect(bundle.gateway.clone(), e.to_string()))?
            .await
            .map_err(|e| ClientError::Connect(bundle.gateway.clone(), describe(&e)))?;
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| ClientError::Refused(describe(&e)))?;
        let mut c = Self {
            conn,
            _endpoint: endpoint,
            send,
            recv,
            dec: Decoder::default(),
            buf: vec![0; 4096],
            agent: String::new(),
        };
        c.send(&ClientMsg::Hello {
            version: protocol::VERSION,
            otp: protocol::Secret(otp.to_string()),
            client: Some(format!("tollgate {}", env!("CARGO_PKG_VERSION"))),
        })
        .await?;
        match tokio::time::timeout(Duration::from_secs(10), c.recv()).await {
            Ok(Ok(ServerMsg::Welcome { agent, .. })) => {
                c.agent = agent;
                Ok(c)
            }
            Ok(Ok(ServerMsg::Error { message, .. })) => Err(ClientError::Refused(message)),
            Ok(Ok(other)) => Err(ClientError::Protocol(format!(
                "expected welcome, got {other:?}"
            ))),
            Ok(Err(ClientError::Closed(why))) => Err(ClientError::Refused(why)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClientError::Timeout),
        }
    }

    pub async fn send(&mut self, msg: &ClientMsg) -> Result<(), ClientError> {
        let mut out = Vec::with_capacity(128);
        protocol::encode(msg, &mut out);
        self.send
            .write_all(&out)
            .await
            .map_err(|_| self.closed_error())
    }

    fn closed_error(&self) -> ClientError {
        match self.conn.close_reason() {
            Some(e) => ClientError::Closed(describe(&e)),
            None => ClientError::Closed("control stream closed".into()),
        }
    }

    /// This agent's own recent calls, newest first (at most `limit`).
    /// Other messages arriving meanwhile are passed over; waits at most
    /// ten seconds.
    pub async fn history(
        &mut self,
        limit: Option<u16>,
    ) -> Result<Vec<protocol::PastCall>, ClientError> {
        self.send(&ClientMsg::History { limit }).await?;
        let wait = async {
            loop {
                match self.recv().await? {
                    ServerMsg::History { calls } => return Ok(calls),
                    ServerMsg::Error {
                        code,
                        message,
                        call: None,
                    } => return Err(ClientError::Refused(format!("{code}: {message}"))),
                    _ => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or(Err(ClientError::Timeout))
    }

    /// The next control message from the gateway.
    pub async fn recv(&mut self) -> Result<ServerMsg, ClientError> {
        loop {
            match self.dec.decode::<ServerMsg>() {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {}
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
            }
            match self.recv.read(&mut self.buf).await {
                Ok(Some(n)) => {
                    let b = &self.buf[..n];
                    self.dec.push(b);
                }
                Ok(None) => return Err(ClientError::Closed("control stream closed".into())),
                Err(_) => {
                    // Give the close frame a moment to be recorded.
                    let e = self.conn.closed().await;
                    return Err(ClientError::Closed(describe(&e)));
                }
            }
        }
    }

    /// Sends one media datagram (flow id then packet).
    pub fn send_datagram(&self, d: Bytes) -> Result<(), quinn::SendDatagramError> {
        self.conn.send_datagram(d)
    }

    pub async fn read_datagram(&self) -> Result<Bytes, ClientError> {
        self.conn
            .read_datagram()
            .await
            .map_err(|e| ClientError::Closed(describe(&e)))
    }

    /// Ends the session politely.
    pub fn close(&self) {
        self.conn
            .close(protocol::close::DONE.into(), b"agent hung up");
    }
}

fn resolve(hostport: &str) -> Result<SocketAddr, ClientError> {
    use std::net::ToSocketAddrs;
    hostport
        .to_socket_addrs()
        .map_err(|e| ClientError::Connect(hostport.into(), e.to_string()))?
        .next()
        .ok_or_else(|| ClientError::Connect(hostport.into(), "no address".into()))
}
