//! The `tollgate` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[path = "cli/agent.rs"]
mod agent;
#[path = "cli/compliance.rs"]
mod compliance;
#[path = "cli/config.rs"]
mod config;
#[path = "cli/daemon.rs"]
mod daemon;
#[path = "cli/firewall.rs"]
mod firewall;
#[path = "cli/incident.rs"]
mod incident;
#[path = "cli/operator.rs"]
mod operator;
#[path = "cli/tls.rs"]
mod tls;
use agent::{agent_command, AgentArgs};
use compliance::{compliance_command, ComplianceCommand};
use config::{config_command, ConfigCommand};
use firewall::{firewall_command, FirewallCommand};
use incident::{incident_command, IncidentCommand};
use operator::{
    approvals_command, audit_command, cdr_command, keys_command, ApprovalsCommand, AuditCommand,
    CdrCommand, KeysCommand,
};
use tls::{tls_command, TlsCommand};
use tollgate::config::Config;

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
    /// Enrol, revoke and list agents (whether or not the gateway runs).
    Agent(AgentArgs),
    /// Firewall and IDS rules.
    #[command(subcommand)]
    Firewall(FirewallCommand),
    /// Call records, through the running gateway (numbers masked unless
    /// you hold the auditor role).
    #[command(subcommand, visible_alias = "records")]
    Cdr(CdrCommand),
    /// The audit trail: who did what, tamper-evident.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Requests to take data out (exports), approved by a second person.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// The master key that seals secrets at rest.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Incident response: lockdown, release (by a second person), status.
    #[command(subcommand)]
    Incident(IncidentCommand),
    /// The signed compliance report for an assessor, and its check.
    #[command(subcommand)]
    Compliance(ComplianceCommand),
    /// Certificates for SIP over TLS.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Start a gateway on loopback with a built-in carrier and agents,
    /// place calls each way, and print what happened.
    Demo {
        /// Calls each way.
        #[arg(long, default_value_t = 2)]
        calls: u32,
        /// Seconds each call lasts.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// Measure the media path: start a gateway, log in one agent per
    /// call over QUIC, place the calls over SIP, relay checked audio both
    /// ways and report loss, latency and the gateway's CPU per packet.
    Loadgen(LoadgenArgs),
}

#[derive(clap::Args)]
struct LoadgenArgs {
    /// Two-way calls (each with its own agent and QUIC connection).
    #[arg(long, default_value_t = 100)]
    calls: u32,
    /// Seconds measured, once every call is up.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// New calls a second while setting up.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds between every call up and the measured window.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Pin the gateway to these CPUs (`taskset -c` list); run the load
    /// generator itself under `taskset` on the others.
    #[arg(long, value_name = "LIST")]
    gateway_cpus: Option<String>,
    /// Measure a running rtpengine instead of starting a gateway: its ng
    /// control address (the reference run of `benches/vs_rtpengine.sh`).
    #[arg(long, value_name = "ADDR", requires = "pid")]
    rtpengine: Option<std::net::SocketAddr>,
    /// The process whose CPU is measured with `--rtpengine`.
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Where the state is: shared by `run` and the commands that work on it.
#[derive(clap::Args, Default, Clone)]
struct StateArgs {
    /// Directory for state [default: $STATE_DIRECTORY, else ./tollgate-data].
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// The master key that seals secrets at rest [default: the systemd
    /// credential `master-key`, else $TOLLGATE_MASTER_KEY, else a
    /// development key beside the data directory, made on first use].
    #[arg(long, value_name = "FILE", global = true, alias = "master-key-file")]
    master_key: Option<PathBuf>,
}

impl StateArgs {
    fn data_dir(&self) -> PathBuf {
        tollgate::config::data_dir(self.data_dir.clone())
    }

    /// The master key's file, and whether it is the development key.
    fn key_path(&self) -> (PathBuf, bool) {
        tollgate::keys::master_key_path(self.master_key.as_deref(), &self.data_dir())
    }

    fn sealer(&self) -> Result<tollgate::keys::Sealer, String> {
        let (path, dev) = self.key_path();
        tollgate::keys::Sealer::load_master(&path, dev).map_err(|e| e.to_string())
    }
}

#[derive(clap::Args, Default)]
struct RunArgs {
    /// TOML configuration; the embedded defaults (loopback only) without it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    state: StateArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo runs a gateway in this process: its start-up and per-call
    // lines would bury the demo's own report, so only warnings show.
    let quiet = matches!(cli.command, Some(Command::Demo { .. }));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if quiet { "warn" } else { "info" })
            }),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command.unwrap_or(Command::Run(RunArgs::default())) {
        Command::Run(args) => daemon::run(args),
        Command::Config(c) => config_command(c),
        Command::Demo { calls, seconds } => {
            if !(1..=20).contains(&calls) || !(0.5..=60.0).contains(&seconds) {
                eprintln!("tollgate demo: --calls 1 to 20, --seconds 0.5 to 60");
                return ExitCode::FAILURE;
            }
            match tollgate::demo::run(calls, seconds, |line| println!("{line}")) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tollgate demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Loadgen(a) => loadgen(a),
        Command::Firewall(c) => firewall_command(c),
        Command::Cdr(c) => cdr_command(c),
        Command::Audit(c) => audit_command(c),
        Command::Approvals(c) => approvals_command(c),
        Command::Keys(c) => keys_command(c),
        Command::Incident(c) => incident_command(c),
        Command::Compliance(c) => compliance_command(c),
        Command::Tls(c) => match tls_command(c) {
            Ok(said) => {
                println!("{said}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tollgate tls: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Agent(args) => match agent_command(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tollgate agent: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn loadgen(a: LoadgenArgs) -> ExitCode {
    let ok = (1..=5000).contains(&a.calls)
        && (0.5..=3600.0).contains(&a.seconds)
        && (1.0..=2000.0).contains(&a.rate)
        && (0.0..=60.0).contains(&a.warmup);
    if !ok {
        eprintln!("tollgate loadgen: --calls 1 to 5000, --seconds 0.5 to 3600, --rate 1 to 2000, --warmup 0 to 60");
        return ExitCode::FAILURE;
    }
    let opts = tollgate::loadgen::Options {
        calls: a.calls,
        seconds: a.seconds,
        rate: a.rate,
        warmup: a.warmup,
        gateway_cpus: a.gateway_cpus,
    };
    let ran = match (a.rtpengine, a.pid) {
        (Some(ng), Some(pid)) => {
            tollgate::loadgen::run_rtpengine(&opts, ng, pid, |p| eprintln!("{p}"))
        }
        _ => tollgate::loadgen::run(&opts, |p| eprintln!("{p}")),
    };
    match ran {
        Ok(r) if a.json => {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(r) => {
            println!("{r}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tollgate loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration file, or the embedded defaults.
fn load_config(path: Option<&std::path::Path>) -> Result<Config, String> {
    match path {
        Some(path) => Config::load(path).map_err(|e| format!("{}: {e}", path.display())),
        None => Config::embedded().map_err(|e| format!("embedded defaults: {e}")),
    }
}
