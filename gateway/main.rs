//! The `tollgate` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tollgate::config::Config;
use tracing::{error, info};

/// Tollgate: a media gateway between carriers' SIP trunks and a call
/// centre's agents. Trunk RTP is terminated and re-protected as SRTP for
/// agents over QUIC.
#[derive(Parser)]
#[command(name = "tollgate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default when no command is given).
    Run(RunArgs),
    /// Check or print configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(clap::Args, Default)]
struct RunArgs {
    /// TOML configuration; the embedded defaults (loopback only) without it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for state [default: $STATE_DIRECTORY, else ./tollgate-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and say exactly what is wrong and where.
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the embedded default configuration, commented.
    Default,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command.unwrap_or(Command::Run(RunArgs::default())) {
        Command::Run(args) => run(args),
        Command::Config(ConfigCommand::Check { file }) => match Config::load(&file) {
            Ok(c) => {
                println!(
                    "{}: valid ({} trunk(s), {} route(s))",
                    file.display(),
                    c.trunks.len(),
                    c.routes.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::FAILURE
            }
        },
        Command::Config(ConfigCommand::Default) => {
            print!("{}", tollgate::config::DEFAULT_TOML);
            ExitCode::SUCCESS
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    let config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                error!("{}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => match Config::embedded() {
            Ok(c) => c,
            Err(e) => {
                error!("embedded defaults: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let data_dir = tollgate::config::data_dir(args.data_dir);
    if let Err(e) = std::fs::create_dir_all(&data_dir) {
        error!(
            "cannot create the data directory {}: {e}",
            data_dir.display()
        );
        return ExitCode::FAILURE;
    }
    let _ = config;
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
    match rt.block_on(serve(config)) {
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
async fn serve(config: Config) -> Result<(), String> {
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
    });
    let (admin_addr, admin_server) = http::bind(config.admin_listen, admin.clone())
        .await
        .map_err(|e| format!("admin listener {}: {e}", config.admin_listen))?;
    tokio::spawn(async move {
        if let Err(e) = admin_server.await {
            error!("admin listener: {e}");
        }
    });
    let tls_config = match (&config.tls_certificate, &config.tls_private_key) {
        (Some(c), Some(k)) if !config.sip_tls.is_empty() => Some(Arc::new(
            tollgate::sip::transport::tls_server_config(c, k)
                .map_err(|e| format!("SIP TLS: {e}"))?,
        )),
        _ => None,
    };
    let mut tls_peers = std::collections::HashMap::new();
    for t in &config.trunks {
        if let (Some((ca, name)), Some(addr)) = (&t.tls, t.address) {
            let client = tollgate::sip::transport::tls_client_config(ca)
                .map_err(|e| format!("trunk {:?}: {e}", t.name))?;
            let name = rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|e| format!("trunk {:?}: {e}", t.name))?;
            tls_peers.insert(addr, (Arc::new(client), name));
        }
    }
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
            idle_timeout: std::time::Duration::from_secs(600),
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
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let core = tollgate::calls::core::Core::new(config.clone(), metrics.clone(), transport);
    let core = tokio::spawn(core.run(inbound_rx, stop_rx));
    admin.ready.store(true, Ordering::Release);
    shutdown_signal().await;
    info!("stopping: ending calls");
    let _ = stop_tx.send(true);
    let _ = core.await;
    Ok(())
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
