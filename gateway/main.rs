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
        None => Config::embedded(),
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
        "tollgate starting on embedded defaults"
    );
    info!(suites = %names.join(" "), "media core self-test passed");
    info!(
        "serving: nothing on the network yet. This build has the media core \
         (RTP, RTCP, SRTP/SRTCP, stream statistics); SIP trunks on \
         127.0.0.1:5060 and agents over QUIC on 127.0.0.1:4433 come with \
         later releases. Press Ctrl-C to stop."
    );
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(shutdown_signal());
    info!("stopped");
    ExitCode::SUCCESS
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
