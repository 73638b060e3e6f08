//! `tollgate run`: opens the state, binds every listener and serves until a
//! signal, with the background jobs (retention, storage gauges) beside it.

use std::path::PathBuf;
use std::process::ExitCode;

use tollgate::config::Config;
use tracing::{error, info, warn};

use super::{load_config, RunArgs};

pub(crate) fn run(args: RunArgs) -> ExitCode {
    let config = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let data_dir = args.state.data_dir();
    if let Err(e) = std::fs::create_dir_all(&data_dir) {
        error!(
            "cannot create the data directory {}: {e}",
            data_dir.display()
        );
        return ExitCode::FAILURE;
    }
    // A master-key rotation a crash interrupted is finished (or undone)
    // before the key is read: the development key file may be part of it.
    let (key_path, dev) = args.state.key_path();
    let dev_key = dev.then_some(key_path);
    match tollgate::keys::rotate::recover(&data_dir, dev_key.as_deref()) {
        Ok(tollgate::keys::rotate::Recovered::Nothing) => {}
        Ok(r) => warn!("an interrupted master-key rotation was completed: {r:?}"),
        Err(e) => {
            error!("master-key rotation: {e}");
            return ExitCode::FAILURE;
        }
    }
    let sealer = match args.state.sealer() {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // The record store first: a wrong master key stops here, before
    // anything in the data directory is touched. A disk with no room
    // does not: the gateway serves calls without records and says so
    // (tollgate_cdr_storage_ok 0), rather than fail in a restart loop.
    use tollgate::cdr::store::{CdrError, Store};
    let opened = match args.state.sealer() {
        Ok(s) => Store::open(&data_dir, std::sync::Arc::new(s)),
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let store = match opened {
        Ok(s) => Some(std::sync::Arc::new(s)),
        Err(CdrError::NoSpace(why)) => {
            error!(
                "call records are NOT being kept: the record store cannot open ({why}); serving calls without records. Free space in {} and restart",
                data_dir.display()
            );
            None
        }
        Err(e) => {
            error!("call records: {e}");
            return ExitCode::FAILURE;
        }
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
        Some(Err(e)) => {
            error!("call records: {e}");
            return ExitCode::FAILURE;
        }
    }
    let suites = match tollgate::media::selftest::run() {
        Ok(s) => s,
        Err(e) => {
            error!("{e}; refusing to start");
            return ExitCode::FAILURE;
        }
    };
    let names: Vec<_> = suites.iter().map(|s| s.sdes_name()).collect();
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %args.config.as_ref().map_or("embedded defaults".into(), |p| p.display().to_string()),
        data_dir = %data_dir.display(),
        "tollgate starting"
    );
    info!(suites = %names.join(" "), "media core self-test passed");
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let path = args.config.clone();
    match rt.block_on(serve(config, path, data_dir, sealer, dev_key, store)) {
        Ok(()) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds every listener, says what is served, and runs until a signal.
async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    data_dir: PathBuf,
    sealer: tollgate::keys::Sealer,
    dev_key: Option<PathBuf>,
    store: Option<std::sync::Arc<tollgate::cdr::store::Store>>,
) -> Result<(), String> {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use tollgate::admin::http::{self, AdminState};
    use tollgate::admin::metrics::Metrics;
    use tollgate::sip::transport::{Transport, TransportConfig};

    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new().map_err(|e| format!("metrics: {e}"))?);
    metrics.prime();
    let admin = Arc::new(AdminState {
        metrics: metrics.clone(),
        ready: false.into(),
        admin_networks: std::sync::RwLock::new(config.firewall.admin_networks.clone()),
    });
    let (admin_addr, admin_server) = http::bind(config.admin_listen, admin.clone())
        .await
        .map_err(|e| format!("admin listener {}: {e}", config.admin_listen))?;
    tokio::spawn(async move {
        if let Err(e) = admin_server.await {
            error!("admin listener: {e}");
        }
    });
    let server_cert = match (&config.tls_certificate, &config.tls_private_key) {
        (Some(c), Some(k)) if !config.sip_tls.is_empty() => Some(
            tollgate::sip::transport::ServerCert::load(c, k)
                .map_err(|e| format!("SIP TLS: {e}"))?,
        ),
        _ => None,
    };
    let tls_config = server_cert
        .as_ref()
        .map(|c| c.server_config().map(Arc::new))
        .transpose()
        .map_err(|e| format!("SIP TLS: {e}"))?;
    let tls_peers = tollgate::calls::reload::tls_peers(&config)?;
    let (inbound_tx, inbound_rx) = tokio::sync::mpsc::channel(4096);
    let transport = Transport::bind(
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
            peers: std::sync::Arc::new(std::sync::RwLock::new(
                config.peer_networks().into_iter().map(|(n, _)| n).collect(),
            )),
            max_connections: config.max_connections,
            max_connections_per_peer: config.max_connections_per_peer,
        },
        inbound_tx,
        tollgate::sip::transport::TransportStats::new(|event| {
            metrics.sip_transport_events.with_label_values(&[event])
        }),
    )
    .await
    .map_err(|e| format!("SIP listeners: {e}"))?;
    let list = |v: &[std::net::SocketAddr]| {
        v.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    info!(
        udp = %list(&transport.local_udp),
        tcp = %list(&transport.local_tcp),
        tls = %list(&transport.local_tls),
        admin = %format!("http://{admin_addr}/metrics"),
        rtp = %format!("{}-{}", config.rtp_ports.0, config.rtp_ports.1),
        numbers = %config.routes.iter().map(|r| r.number.as_str()).collect::<Vec<_>>().join(" "),
        "serving SIP trunks"
    );
    let mut core = tollgate::calls::core::Core::new(config.clone(), metrics.clone(), transport);
    let writer = tollgate::cdr::writer::Writer::start(
        tollgate::cdr::writer::Target {
            store: store.clone(),
            dir: tollgate::cdr::store::Store::dir(&data_dir),
            min_free: config.records_min_free,
        },
        metrics.clone(),
    )
    .map_err(|e| format!("call record writer: {e}"))?;
    core.set_records(writer.clone());
    let audit_key = tollgate::admin::audit::key(&data_dir, &sealer).map_err(|e| e.to_string())?;
    let master = Arc::new(tollgate::keys::Master::new(sealer));
    let audit = tollgate::admin::audit::Audit::open(&data_dir, audit_key.clone(), metrics.clone())
        .map_err(|e| e.to_string())?;
    audit.record("gateway", "start", env!("CARGO_PKG_VERSION"), "ok");
    core.set_audit(audit.clone());
    let (retention, retention_rx) = tokio::sync::watch::channel(config.retention_days);
    if let Some(store) = &store {
        spawn_retention(store.clone(), retention_rx, metrics.clone());
    }
    spawn_storage_gauges(store.clone(), data_dir.clone(), metrics.clone());
    let firewall = tollgate::guard::nft::start(&config, metrics.clone()).await?;
    if let Some(f) = &firewall {
        core.set_firewall(f.clone());
    }
    core.keep_bans(data_dir.join("bans.json"));
    let (agent_tx, agent_rx) = tokio::sync::mpsc::channel(4096);
    let agents = tollgate::agent::server::AgentServer::bind(
        &config.agents,
        data_dir.clone(),
        master.clone(),
        metrics.clone(),
        agent_tx,
        Some(audit.clone()),
    )
    .map_err(|e| format!("agents: {e}"))?;
    info!(
        quic = %agents.local_addr,
        bundles = %config.agents.address,
        "serving agents (QUIC, client certificate + TOTP)"
    );
    if let Ok(enrolled) = tollgate::agent::store::Store::new(&data_dir).load() {
        let orphans = tollgate::agent::store::orphans(&enrolled, &config);
        if !orphans.is_empty() {
            warn!(
                agents = %orphans.join(", "),
                "agents enrolled with a profile the configuration lacks cannot dial until it is added"
            );
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (guard_tx, guard_rx) = tokio::sync::mpsc::channel(64);
    let socket = tollgate::admin::control::path(&data_dir);
    let (running_tx, running_rx) = tokio::sync::watch::channel(config.clone());
    let control = tollgate::admin::control::serve(
        &socket,
        tollgate::admin::control::Admin {
            core: guard_tx.clone(),
            store: store.clone(),
            roles: tollgate::admin::roles::Roles::new(
                &config.role_groups,
                tollgate::admin::roles::current_uid(),
            ),
            audit: audit.clone(),
            audit_key,
            data_dir: data_dir.clone(),
            master,
            dev_key,
            agents_address: config.agents.address.clone(),
            config: running_rx,
            retention_held: metrics.cdr_retention_held.clone(),
        },
    )
    .map_err(|e| format!("admin socket {}: {e}", socket.display()))?;
    let core = tokio::spawn(core.run(inbound_rx, agent_rx, guard_rx, stop_rx));
    admin.ready.store(true, Ordering::Release);
    info!(admin_socket = %control.display(), "ready");
    tollgate::admin::systemd::ready("serving");
    tollgate::admin::systemd::spawn_watchdog(guard_tx.clone());
    let mut reloader = tollgate::admin::reload::Reloader {
        path: config_path,
        running: running_tx,
        http: admin.clone(),
        data_dir: data_dir.clone(),
        core: guard_tx.clone(),
        firewall: firewall.clone(),
        server_cert,
        retention,
        audit: audit.clone(),
        metrics: metrics.clone(),
    };
    wait_for_stop(&mut reloader).await;
    tollgate::admin::systemd::stopping();
    info!("stopping: ending calls");
    let _ = stop_tx.send(true);
    let _ = core.await;
    // Every record handed over is on disk before the process ends.
    let _ = tokio::task::spawn_blocking(move || writer.stop()).await;
    agents.close();
    if let Some(f) = firewall {
        f.stop().await;
    }
    let _ = std::fs::remove_file(&control);
    audit.record("gateway", "stop", "", "ok");
    audit.sync();
    Ok(())
}

/// Crypto-shreds call records past retention now, every hour, and when a
/// reload changes the period; a run the store holds (a clock jump, many
/// days at once) is logged, shown in `tollgate_cdr_retention_held` and
/// waits for `tollgate records shred --confirm`.
fn spawn_retention(
    store: std::sync::Arc<tollgate::cdr::store::Store>,
    mut period: tokio::sync::watch::Receiver<u32>,
    metrics: std::sync::Arc<tollgate::admin::metrics::Metrics>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = period.changed() => if changed.is_err() { return },
            }
            let days = *period.borrow_and_update();
            let store = store.clone();
            let now = tollgate::now_ms();
            match tokio::task::spawn_blocking(move || store.expire(days, now)).await {
                Ok(Ok(tollgate::cdr::store::Expired { held: Some(h), .. })) => {
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
    });
}

/// Keeps the storage gauges current (every 30 s): free and total bytes of
/// the data directory's filesystem (`fs2`, statvfs) and the record
/// database's size, for the disk-full alert.
fn spawn_storage_gauges(
    store: Option<std::sync::Arc<tollgate::cdr::store::Store>>,
    data_dir: PathBuf,
    metrics: std::sync::Arc<tollgate::admin::metrics::Metrics>,
) {
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
    });
}

/// Waits for Ctrl-C or SIGTERM; SIGHUP reloads the configuration (and so
/// the IDS rules) meanwhile.
async fn wait_for_stop(reloader: &mut tollgate::admin::reload::Reloader) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        shutdown_signal().await;
        return;
    };
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = hup.recv() => {
                info!("SIGHUP: reloading the configuration");
                tollgate::admin::systemd::reloading();
                let status = match reloader.reload().await {
                    Ok(summary) => format!("serving; configuration reloaded: {summary}"),
                    Err(e) => format!("serving; configuration NOT reloaded: {e}"),
                };
                tollgate::admin::systemd::ready(&status);
            }
        }
    }
}

/// Waits for Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
