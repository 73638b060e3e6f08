//! The gateway as a library type: [`Gateway::builder`] opens the state,
//! binds every listener and starts the call core, and the [`Gateway`] it
//! returns can be reloaded and shut down. `tollgate run` is this plus
//! signals; tests and the demo can run it in-process on ephemeral ports
//! (port 0 anywhere a listener is configured).
//!
//! Start-up fails with a [`StartError`] naming its stage, so a caller (a
//! test, systemd's journal, an admin at 3 am) knows whether the config,
//! the keys, the records, a listener, the firewall or the agents' side
//! stopped it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::{error, info, warn};

use crate::admin::http::{self, AdminState};
use crate::cdr::store::{CdrError, Store};
use crate::config::Config;
use crate::sip::transport::{Transport, TransportConfig};
use crate::telemetry::metrics::Metrics;

/// The stage start-up failed at, with why.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration cannot be served (a TLS trunk's CA, the data
    /// directory).
    #[error("configuration: {0}")]
    Config(String),
    /// The master key, an interrupted rotation, the audit key, or the
    /// media self-test.
    #[error("keys: {0}")]
    Keys(String),
    /// The call record store, its writer, or the audit trail.
    #[error("records: {0}")]
    Records(String),
    /// A listener (SIP, admin HTTP, admin socket) or the runtime's parts.
    #[error("listen: {0}")]
    Listen(String),
    /// nftables was required and could not be set up.
    #[error("firewall: {0}")]
    Firewall(String),
    /// The agents' QUIC listener or their registry.
    #[error("agents: {0}")]
    Agents(String),
}

/// What [`Gateway::builder`] starts.
pub struct Builder {
    config: Config,
    config_path: Option<PathBuf>,
    data_dir: PathBuf,
    master_key: Option<PathBuf>,
}

impl Builder {
    /// The file reloads read again (`None`, the default: the configuration
    /// given is all there is, and a reload re-reads the embedded defaults).
    pub fn config_file(mut self, path: Option<PathBuf>) -> Self {
        self.config_path = path;
        self
    }

    /// The state directory (records, agents, keys, audit trail, admin
    /// socket). Default: `$STATE_DIRECTORY`, else `./tollgate-data`.
    pub fn data_dir(mut self, dir: PathBuf) -> Self {
        self.data_dir = dir;
        self
    }

    /// The master key's file. Default: the systemd credential
    /// `master-key`, else `$TOLLGATE_MASTER_KEY`, else a development key
    /// beside the data directory, made on first use.
    pub fn master_key(mut self, path: Option<PathBuf>) -> Self {
        self.master_key = path;
        self
    }

    /// Opens the state, binds every listener and starts serving. Runs on
    /// the caller's tokio runtime (a multi-threaded one: the call core,
    /// agents and writer are tasks and threads of their own). Blocks the
    /// calling task while the record store opens.
    pub async fn start(self) -> Result<Gateway, StartError> {
        let Builder {
            config,
            config_path,
            data_dir,
            master_key,
        } = self;
        // "auto" addresses are this machine's, found now.
        let config = config
            .resolve()
            .map_err(|e| StartError::Config(e.to_string()))?;
        std::fs::create_dir_all(&data_dir).map_err(|e| {
            StartError::Config(format!(
                "cannot create the data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        // A master-key rotation a crash interrupted is finished (or undone)
        // before the key is read: the development key file may be part of it.
        let (key_path, dev) = crate::keys::master_key_path(master_key.as_deref(), &data_dir);
        let dev_key = dev.then(|| key_path.clone());
        match crate::admin::rotate::recover(&data_dir, dev_key.as_deref()) {
            Ok(crate::admin::rotate::Recovered::Nothing) => {}
            Ok(r) => warn!("an interrupted master-key rotation was completed: {r:?}"),
            Err(e) => return Err(StartError::Keys(format!("master-key rotation: {e}"))),
        }
        let sealer = || {
            crate::keys::Sealer::load_master(&key_path, dev)
                .map_err(|e| StartError::Keys(e.to_string()))
        };
        let sealer_for_state = sealer()?;
        // The record store first: a wrong master key stops here, before
        // anything in the data directory is touched. A disk with no room
        // does not: the gateway serves calls without records and says so
        // (tollgate_cdr_storage_ok 0), rather than fail in a restart loop.
        let store = match Store::open(&data_dir, Arc::new(sealer()?)) {
            Ok(s) => Some(Arc::new(s)),
            Err(CdrError::NoSpace(why)) => {
                error!(
                    "call records are NOT being kept: the record store cannot open ({why}); serving calls without records. Free space in {} and restart",
                    data_dir.display()
                );
                None
            }
            Err(e) => return Err(StartError::Records(e.to_string())),
        };
        match store.as_deref().map(Store::recover_open) {
            None | Some(Ok(0)) => {}
            Some(Ok(n)) => warn!(
                records = n,
                "call records left open by an earlier run marked interrupted"
            ),
            Some(Err(CdrError::NoSpace(why))) => warn!(
                "call records left open by an earlier run stay open until the disk has room ({why})"
            ),
            Some(Err(e)) => return Err(StartError::Records(e.to_string())),
        }
        let suites = crate::media::selftest::run()
            .map_err(|e| StartError::Keys(format!("{e}; refusing to start")))?;
        let names: Vec<_> = suites.iter().map(|s| s.sdes_name()).collect();
        info!(
            version = env!("CARGO_PKG_VERSION"),
            config = %config_path.as_ref().map_or("embedded defaults".into(), |p| p.display().to_string()),
            data_dir = %data_dir.display(),
            "tollgate starting"
        );
        info!(suites = %names.join(" "), "media core self-test passed");
        serve(
            config,
            config_path,
            data_dir,
            sealer_for_state,
            dev_key,
            store,
        )
        .await
    }
}

/// A running gateway: its listeners' addresses, and what reloads and
/// stops it.
pub struct Gateway {
    /// SIP listeners as bound (port 0 in the configuration is resolved).
    pub sip_udp: Vec<SocketAddr>,
    pub sip_tcp: Vec<SocketAddr>,
    pub sip_tls: Vec<SocketAddr>,
    /// The admin HTTP listener (`/metrics`, `/healthz`).
    pub admin: SocketAddr,
    /// The agents' QUIC listener.
    pub agents: SocketAddr,
    /// The admin socket (`tollgate` operator commands).
    pub control: PathBuf,
    reloader: crate::admin::reload::Reloader,
    stop: tokio::sync::watch::Sender<bool>,
    core: tokio::task::JoinHandle<()>,
    writer: crate::cdr::writer::Writer,
    agent_server: crate::agent::server::AgentServer,
    /// The media shards (stopped when the gateway is dropped).
    _shards: std::sync::Arc<crate::shards::Shards>,
    firewall: Option<crate::guard::nft::Handle>,
    audit: crate::telemetry::audit::Audit,
    /// The admin listener, retention and storage gauges.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// A gateway to start with `config`.
    pub fn builder(config: Config) -> Builder {
        Builder {
            config,
            config_path: None,
            data_dir: crate::config::data_dir(None),
            master_key: None,
        }
    }

    /// Reads the configuration file again and applies what can be applied
    /// live (as SIGHUP does). `Ok` says what changed; `Err` why nothing did.
    pub async fn reload(&mut self) -> Result<String, String> {
        self.reloader.reload().await
    }

    /// Ends every call (BYE, CANCEL or 503), writes every record handed
    /// over, closes the agents' connections, takes the firewall's rules
    /// out and removes the admin socket.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.core.await;
        // Every record handed over is on disk before this returns.
        let writer = self.writer;
        let _ = tokio::task::spawn_blocking(move || writer.stop()).await;
        self.agent_server.close().await;
        if let Some(f) = self.firewall {
            f.stop().await;
        }
        let _ = std::fs::remove_file(&self.control);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        self.audit.record("gateway", "stop", "", "ok");
        self.audit.synced().await;
    }
}

/// The SIP transport's settings from `config`, with the SIP TLS
/// listeners' server configuration and the TLS trunks' peers.
pub fn transport_config(
    config: &Config,
    tls_config: Option<Arc<rustls::ServerConfig>>,
    tls_peers: crate::sip::transport::TlsPeers,
) -> TransportConfig {
    TransportConfig {
        udp: config.sip_udp.clone(),
        tcp: config.sip_tcp.clone(),
        tls: config.sip_tls.clone(),
        tls_config,
        tls_peers,
        limits: config.limits,
        partial_message_timeout: config.partial_message_timeout,
        // Carriers keep TCP and TLS connections up with CRLF pings
        // (RFC 5626) every 30 to 120 s.
        idle_timeout: std::time::Duration::from_secs(180),
        peers: Arc::new(std::sync::RwLock::new(
            config.peer_networks().into_iter().map(|(n, _)| n).collect(),
        )),
        max_connections: config.max_connections,
        max_connections_per_peer: config.max_connections_per_peer,
    }
}

/// The transport's counters, as `tollgate_sip_transport_events_total`.
pub fn transport_stats(metrics: &Metrics) -> crate::sip::transport::TransportStats {
    crate::sip::transport::TransportStats::new(|event| {
        metrics.sip_transport_events.with_label_values(&[event])
    })
}

/// Binds every listener, says what is served, and starts the core.
async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    data_dir: PathBuf,
    sealer: crate::keys::Sealer,
    dev_key: Option<PathBuf>,
    store: Option<Arc<Store>>,
) -> Result<Gateway, StartError> {
    let listen = StartError::Listen;
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new().map_err(|e| listen(format!("metrics: {e}")))?);
    prime_metrics(&metrics);
    let admin = Arc::new(AdminState {
        metrics: metrics.clone(),
        ready: false.into(),
        admin_networks: std::sync::RwLock::new(config.firewall.admin_networks.clone()),
    });
    let (admin_addr, admin_server) = http::bind(config.admin_listen, admin.clone())
        .await
        .map_err(|e| listen(format!("admin listener {}: {e}", config.admin_listen)))?;
    // Tasks that serve until shutdown aborts them.
    let mut tasks = vec![tokio::spawn(async move {
        if let Err(e) = admin_server.await {
            error!("admin listener: {e}");
        }
    })];
    let server_cert = match (&config.tls_certificate, &config.tls_private_key) {
        (Some(c), Some(k)) if !config.sip_tls.is_empty() => Some(
            crate::sip::transport::ServerCert::load(c, k)
                .map_err(|e| listen(format!("SIP TLS: {e}")))?,
        ),
        _ => None,
    };
    let tls_config = server_cert
        .as_ref()
        .map(|c| c.server_config().map(Arc::new))
        .transpose()
        .map_err(|e| listen(format!("SIP TLS: {e}")))?;
    let tls_peers = crate::calls::reload::tls_peers(&config).map_err(StartError::Config)?;
    let (inbound_tx, inbound_rx) = tokio::sync::mpsc::channel(4096);
    let transport = Transport::bind(
        transport_config(&config, tls_config, tls_peers),
        inbound_tx,
        transport_stats(&metrics),
    )
    .await
    .map_err(|e| listen(format!("SIP listeners: {e}")))?;
    let (sip_udp, sip_tcp, sip_tls) = (
        transport.local_udp.clone(),
        transport.local_tcp.clone(),
        transport.local_tls.clone(),
    );
    let list = |v: &[SocketAddr]| {
        v.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    info!(
        udp = %list(&sip_udp),
        tcp = %list(&sip_tcp),
        tls = %list(&sip_tls),
        admin = %format!("http://{admin_addr}/metrics"),
        rtp = %format!("{}-{}", config.rtp_ports.0, config.rtp_ports.1),
        numbers = %config.routes.iter().map(|r| r.number.as_str()).collect::<Vec<_>>().join(" "),
        "serving SIP trunks"
    );
    let mut core = crate::calls::core::Core::new(
        config.clone(),
        metrics.clone(),
        crate::calls::core::Local::of(&transport),
        crate::calls::core::Env::system(),
    );
    let writer = crate::cdr::writer::Writer::start(
        crate::cdr::writer::Target {
            store: store.clone(),
            dir: Store::dir(&data_dir),
            min_free: config.records_min_free,
        },
        metrics.clone(),
    )
    .map_err(|e| StartError::Records(format!("call record writer: {e}")))?;
    core.set_records(writer.clone());
    let audit_key = crate::telemetry::audit::key(&data_dir, &sealer)
        .map_err(|e| StartError::Keys(e.to_string()))?;
    let master = Arc::new(crate::keys::Master::new(sealer));
    let audit = crate::telemetry::audit::Audit::open(&data_dir, audit_key.clone(), metrics.clone())
        .map_err(|e| StartError::Records(format!("audit trail: {e}")))?;
    audit.record("gateway", "start", env!("CARGO_PKG_VERSION"), "ok");
    core.set_audit(audit.clone());
    let incident = Arc::new(crate::incident::Incident::open(
        &data_dir,
        metrics.incident_active.clone(),
    ));
    let (retention, retention_rx) = tokio::sync::watch::channel(config.retention_days);
    if let Some(store) = &store {
        tasks.push(spawn_retention(
            store.clone(),
            retention_rx,
            metrics.clone(),
            incident.clone(),
        ));
    }
    tasks.push(spawn_storage_gauges(
        store.clone(),
        data_dir.clone(),
        metrics.clone(),
    ));
    let firewall = crate::guard::nft::start(&config, metrics.clone())
        .await
        .map_err(StartError::Firewall)?;
    if let Some(f) = &firewall {
        core.set_firewall(f.clone());
    }
    core.keep_bans(data_dir.join("bans.json"), std::time::Instant::now());
    let shards = crate::shards::Shards::start(
        config
            .media_shards
            .unwrap_or_else(crate::shards::Shards::default_count),
    )
    .map_err(|e| StartError::Agents(format!("media shards: {e}")))?;
    let anomalies = crate::telemetry::anomaly::Anomalies::new(Some(audit.clone()), metrics.clone());
    let (running_tx, running_rx) = tokio::sync::watch::channel(config.clone());
    let (agent_tx, agent_rx) = tokio::sync::mpsc::channel(4096);
    let agent_server = crate::agent::server::AgentServer::bind(
        running_rx.clone(),
        data_dir.clone(),
        master.clone(),
        metrics.clone(),
        agent_tx,
        &shards,
        crate::agent::server::Oversight {
            anomalies: anomalies.clone(),
            incident: incident.clone(),
        },
    )
    .map_err(|e| StartError::Agents(e.to_string()))?;
    info!(
        quic = %agent_server.local_addr,
        bundles = %config.agents.address,
        "serving agents (QUIC, client certificate + TOTP)"
    );
    if let Ok(enrolled) = crate::agent::store::Store::new(&data_dir).load() {
        let orphans = crate::agent::store::orphans(&enrolled, &config);
        if !orphans.is_empty() {
            warn!(
                agents = %orphans.join(", "),
                "agents enrolled with a profile the configuration lacks cannot dial until it is added"
            );
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (guard_tx, guard_rx) = tokio::sync::mpsc::channel(64);
    let socket = crate::admin::control::path(&data_dir);
    let control = crate::admin::control::serve(
        &socket,
        crate::admin::control::Admin {
            core: guard_tx.clone(),
            store: store.clone(),
            roles: crate::admin::roles::Roles::new(
                &config.role_groups,
                crate::admin::roles::current_uid(),
            ),
            audit: audit.clone(),
            numbers: crate::admin::erase::NumberHash::new(&audit_key),
            audit_key,
            data_dir: data_dir.clone(),
            master,
            dev_key,
            agents_address: config.agents.address.clone(),
            config: running_rx,
            retention_held: metrics.cdr_retention_held.clone(),
            anomalies: anomalies.clone(),
            reads: crate::admin::oversight::Reads::default(),
            incident: incident.clone(),
            metrics: metrics.clone(),
            config_source: config_path.clone(),
            reports: tokio::sync::Mutex::new(()),
            approvals: Arc::new(crate::admin::approvals::Approvals::open(
                &data_dir,
                u64::try_from(config.approval_window.as_millis()).unwrap_or(u64::MAX),
                crate::unix_ms(std::time::SystemTime::now()),
            )),
        },
    )
    .map_err(|e| listen(format!("admin socket {}: {e}", socket.display())))?;
    let agents = agent_server.local_addr;
    let core = tokio::spawn(crate::calls::driver::run(
        core,
        transport,
        inbound_rx,
        agent_rx,
        guard_rx,
        stop_rx,
        shards.clone(),
    ));
    admin.ready.store(true, Ordering::Release);
    info!(admin_socket = %control.display(), "ready");
    crate::admin::systemd::ready("serving");
    crate::admin::systemd::spawn_watchdog(guard_tx.clone());
    let reloader = crate::admin::reload::Reloader {
        path: config_path,
        running: running_tx,
        http: admin.clone(),
        data_dir,
        core: guard_tx,
        firewall: firewall.clone(),
        server_cert,
        retention,
        audit: audit.clone(),
        metrics,
    };
    Ok(Gateway {
        sip_udp,
        sip_tcp,
        sip_tls,
        admin: admin_addr,
        agents,
        control,
        reloader,
        stop: stop_tx,
        core,
        writer,
        agent_server,
        _shards: shards,
        firewall,
        audit,
        tasks,
    })
}

/// Crypto-shreds call records past retention now, every hour, and when a
/// reload changes the period; a run the store holds (a clock jump, many
/// days at once) is logged, shown in `tollgate_cdr_retention_held` and
/// waits for `tollgate records shred --confirm`.
fn spawn_retention(
    store: std::sync::Arc<crate::cdr::store::Store>,
    mut period: tokio::sync::watch::Receiver<u32>,
    metrics: std::sync::Arc<crate::telemetry::metrics::Metrics>,
    incident: std::sync::Arc<crate::incident::Incident>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = period.changed() => if changed.is_err() { return },
            }
            if incident.active() {
                // Evidence is kept while a breach is handled.
                warn!("call record retention suspended: incident lockdown in force");
                continue;
            }
            let days = *period.borrow_and_update();
            let store = store.clone();
            let now = crate::now_ms();
            match tokio::task::spawn_blocking(move || store.expire(days, now)).await {
                Ok(Ok(crate::cdr::store::Expired { held: Some(h), .. })) => {
                    metrics.cdr_retention_held.set(1);
                    error!(
                        "call record retention HELD, nothing shredded: {h}. Check the clock (timedatectl), then run: tollgate records shred (to see what would go) and tollgate records shred --confirm"
                    );
                }
                Ok(Ok(e)) if e.days > 0 => {
                    metrics.cdr_retention_held.set(0);
                    info!(
                        days = e.days,
                        records = e.records,
                        "call records past retention shredded"
                    )
                }
                Ok(Ok(_)) => metrics.cdr_retention_held.set(0),
                Ok(Err(e)) => error!("call record retention: {e}"),
                Err(e) => error!("call record retention: {e}"),
            }
        }
    })
}

/// Keeps the storage gauges current (every 30 s): free and total bytes of
/// the data directory's filesystem (`fs2`, statvfs) and the record
/// database's size, for the disk-full alert.
fn spawn_storage_gauges(
    store: Option<std::sync::Arc<crate::cdr::store::Store>>,
    data_dir: PathBuf,
    metrics: std::sync::Arc<crate::telemetry::metrics::Metrics>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tick.tick().await;
            let (store, dir, m) = (store.clone(), data_dir.clone(), metrics.clone());
            let _ = tokio::task::spawn_blocking(move || {
                let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                if let Ok(free) = fs2::available_space(&dir) {
                    m.data_free_bytes.set(gauge(free));
                }
                if let Ok(total) = fs2::total_space(&dir) {
                    m.data_total_bytes.set(gauge(total));
                }
                if let Some(Ok(size)) = store.as_deref().map(|s| s.size_on_disk()) {
                    m.cdr_store_bytes.set(gauge(size));
                }
            })
            .await;
        }
    })
}

/// Every label set an admin expects to see at zero: the metrics' own
/// ([`Metrics::prime`]) and those named by the components (metrics sit
/// below them and do not know their vocabularies).
fn prime_metrics(metrics: &Metrics) {
    metrics.prime();
    for r in crate::media::leg::Dropped::REASONS {
        metrics.rtp_dropped.with_label_values(&[r]);
    }
    for s in crate::sip::sdp::AddrScope::ALL {
        if s != crate::sip::sdp::AddrScope::Public {
            metrics.sdp_address_refused.with_label_values(&[s.name()]);
        }
    }
    metrics
        .sdp_address_refused
        .with_label_values(&[crate::config::NOT_SIGNALLING_SOURCE]);
    // The kernel's drop rules, at 0 whether or not the table loads (so
    // dashboards and alerts see the same series on every box).
    for rule in crate::guard::nft::drop_rules() {
        metrics.firewall_dropped_packets.with_label_values(&[rule]);
    }
    metrics.ids_verdicts.with_label_values(&["pass", "none"]);
    for r in crate::guard::ids::Reason::ALL {
        metrics.ids_verdicts.with_label_values(&["drop", r.label()]);
        metrics.ids_verdicts.with_label_values(&["ban", r.label()]);
    }
}
