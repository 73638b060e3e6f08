//! The `tollgate` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[path = "cli/daemon.rs"]
mod daemon;
#[path = "cli/operator.rs"]
mod operator;
use operator::{
    audit_command, cdr_command, keys_command, operator, utc, AuditCommand, CdrCommand, KeysCommand,
};
use tollgate::admin::control::Request;
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
    /// The master key that seals secrets at rest.
    #[command(subcommand)]
    Keys(KeysCommand),
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

#[derive(clap::Args)]
struct AgentArgs {
    #[command(flatten)]
    state: StateArgs,
    /// The gateway's configuration (for the address written into bundles).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Enrol an agent: write its bundle (certificate, key, the gateway's CA
    /// and address) and print its TOTP provisioning URI, once.
    Enroll {
        name: String,
        /// The agent's profile (what it may dial, what it sees); none puts
        /// it in the default queue.
        #[arg(long)]
        profile: Option<String>,
        /// Where to write the bundle (mode 0600; must not exist).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Revoke an agent: a running gateway refuses its certificate within a
    /// second and ends its session.
    Revoke { name: String },
    /// List enrolled agents.
    List,
    /// A headless softphone: log in with a bundle and a TOTP code, answer
    /// or place calls, play and record WAV (8 kHz mono 16-bit), report
    /// packets, loss, jitter and MOS per call.
    Connect(Box<ConnectArgs>),
}

#[derive(clap::Args)]
struct ConnectArgs {
    /// The bundle `tollgate agent enroll` wrote.
    #[arg(long, value_name = "FILE")]
    identity: PathBuf,
    /// The current TOTP code.
    #[arg(
        long,
        value_name = "CODE",
        conflicts_with = "otp_secret_file",
        required_unless_present = "otp_secret_file"
    )]
    otp: Option<String>,
    /// A file holding the TOTP secret (base32 or the otpauth:// URI), to
    /// compute the code (for tests and load runs).
    #[arg(long, value_name = "FILE")]
    otp_secret_file: Option<PathBuf>,
    /// Answer offered calls.
    #[arg(long)]
    auto_answer: bool,
    /// Place calls to NUMBER.
    #[arg(long, value_name = "NUMBER")]
    dial: Option<String>,
    /// Send this audio on each call.
    #[arg(long, value_name = "WAV")]
    play: Option<PathBuf>,
    /// Record what is received (second call on: FILE-2.wav, ...).
    #[arg(long, value_name = "WAV")]
    record: Option<PathBuf>,
    /// Hang up this many seconds after answer.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Stop after N calls.
    #[arg(long, value_name = "N", default_value_t = 1)]
    calls: u32,
    /// Send these DTMF digits (0-9 * # A-D) once answered, 200 ms apart.
    #[arg(long, value_name = "DIGITS")]
    dtmf: Option<String>,
    /// Be available but never answer (to try a queue's ring timeout).
    #[arg(long, conflicts_with = "auto_answer")]
    ignore_offers: bool,
    /// Put the call on hold this many seconds after answer.
    #[arg(long, value_name = "SECONDS")]
    hold_after: Option<f64>,
}

#[derive(clap::Args, Default)]
struct RunArgs {
    /// TOML configuration; the embedded defaults (loopback only) without it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Subcommand)]
enum FirewallCommand {
    /// Validate IDS rules (a copy of rulesets/ids.toml) and say what is
    /// wrong and where; without FILE, the shipped rules.
    Check {
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// List the running gateway's bans: source, reason, time left.
    Bans {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Lift a ban now, in the gateway and in the kernel's set.
    Unban {
        #[arg(value_name = "ADDR")]
        addr: std::net::IpAddr,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Re-read the IDS rules (as SIGHUP does); the old rules stay if the
    /// new ones are invalid.
    Reload {
        #[command(flatten)]
        state: StateArgs,
    },
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Make a self-signed certificate and key (PEM) for the SIP TLS
    /// listener, until one carriers trust is installed; the key file is
    /// readable by its owner only. Refuses to overwrite either file.
    SelfSigned {
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// DNS names or addresses carriers reach the gateway by (the first
        /// is also the subject's name).
        #[arg(long = "name", value_name = "NAME", required = true)]
        names: Vec<String>,
        #[arg(long, default_value_t = 1825)]
        days: i64,
    },
}

fn tls_command(c: TlsCommand) -> Result<String, String> {
    let TlsCommand::SelfSigned {
        cert,
        key,
        names,
        days,
    } = c;
    if !(1..=3650).contains(&days) {
        return Err("--days: 1 to 3650".into());
    }
    let (cert_pem, key_pem) =
        tollgate::agent::pki::self_signed_server(&names, days).map_err(|e| e.to_string())?;
    tollgate::keys::write_private(&key, key_pem.as_bytes(), false)
        .map_err(|e| format!("{}: {e}", key.display()))?;
    if let Err(e) = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&cert)
        .and_then(|mut f| std::io::Write::write_all(&mut f, cert_pem.as_bytes()))
    {
        let _ = std::fs::remove_file(&key);
        return Err(format!("{}: {e}", cert.display()));
    }
    Ok(format!(
        "self-signed certificate for {} in {}, key in {}",
        names.join(", "),
        cert.display(),
        key.display()
    ))
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and say exactly what is wrong and where.
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Also refuse what is valid but unsafe to ship: test numbers
        /// open to all, SDES over cleartext, secrets other users can read,
        /// /metrics open beyond the admin networks.
        #[arg(long)]
        strict: bool,
    },
    /// Print the embedded default configuration, commented.
    Default,
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
        Command::Config(ConfigCommand::Check { file, strict }) => match Config::load(&file) {
            Ok(c) => {
                let findings = if strict {
                    tollgate::config::strict::findings(&file, &c)
                } else {
                    Vec::new()
                };
                if !findings.is_empty() {
                    for f in &findings {
                        eprintln!("{}: {f}", file.display());
                    }
                    eprintln!(
                        "{}: valid, but {} finding(s) under --strict",
                        file.display(),
                        findings.len()
                    );
                    return ExitCode::FAILURE;
                }
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
        Command::Firewall(FirewallCommand::Check { file }) => {
            let (name, text) = match &file {
                Some(f) => match std::fs::read_to_string(f) {
                    Ok(t) => (f.display().to_string(), t),
                    Err(e) => {
                        eprintln!("{}: {e}", f.display());
                        return ExitCode::FAILURE;
                    }
                },
                None => (
                    "shipped IDS rules".to_string(),
                    tollgate::guard::rules::DEFAULT_IDS_TOML.to_string(),
                ),
            };
            match tollgate::guard::rules::Rules::from_toml(&text) {
                Ok(r) => {
                    println!(
                        "{name}: valid ({} scanner patterns, flood {} requests per {} ms, bans from {} s)",
                        r.scan_user_agent.len() + r.scan_from.len() + r.scan_to.len(),
                        r.flood_max,
                        r.flood_window.as_millis(),
                        r.ban_first.as_secs()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{name}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Firewall(FirewallCommand::Bans { json, state }) => {
            operator(&state, &Request::Bans, |r, _| {
                let bans = r.bans.unwrap_or_default();
                if json {
                    for b in &bans {
                        println!("{}", serde_json::to_string(b).unwrap_or_default());
                    }
                } else if bans.is_empty() {
                    println!("no bans");
                } else {
                    println!(
                        "{:<40} {:<14} {:>10}  until (UTC)",
                        "source", "reason", "left (s)"
                    );
                    for b in &bans {
                        println!(
                            "{:<40} {:<14} {:>10}  {}",
                            b.source.to_string(),
                            b.reason,
                            b.remaining_s,
                            utc(b.until_unix_ms)
                        );
                    }
                }
                true
            })
        }
        Command::Firewall(FirewallCommand::Unban { addr, state }) => {
            operator(&state, &Request::Unban { addr }, |r, _| {
                if r.lifted == Some(true) {
                    println!("{addr}: ban lifted");
                    true
                } else {
                    eprintln!("{addr} was not banned");
                    false
                }
            })
        }
        Command::Firewall(FirewallCommand::Reload { state }) => {
            operator(&state, &Request::Reload, |_, _| {
                println!("IDS rules reloaded");
                true
            })
        }
        Command::Cdr(c) => cdr_command(c),
        Command::Audit(c) => audit_command(c),
        Command::Keys(c) => keys_command(c),
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

/// The configuration file, or the embedded defaults.
fn load_config(path: Option<&std::path::Path>) -> Result<Config, String> {
    match path {
        Some(path) => Config::load(path).map_err(|e| format!("{}: {e}", path.display())),
        None => Config::embedded().map_err(|e| format!("embedded defaults: {e}")),
    }
}

fn agent_command(args: AgentArgs) -> Result<(), String> {
    use tollgate::agent::store::Store;
    let store = Store::new(&args.state.data_dir());
    match args.command {
        AgentCommand::Enroll { name, profile, out } => {
            if out.exists() {
                return Err(format!("{}: exists; not overwriting", out.display()));
            }
            // A running gateway enrols (it holds the master key and owns
            // the data directory: an appliance's is not root's to write).
            let socket = tollgate::admin::control::client_path(&args.state.data_dir());
            if socket.exists() {
                return enroll_via_daemon(&socket, &name, profile, &out);
            }
            let config = load_config(args.config.as_deref())?;
            let known = profile
                .as_deref()
                .map(|p| tollgate::agent::store::KnownProfile::check(p, &config))
                .transpose()
                .map_err(|e| e.to_string())?;
            let sealer = args.state.sealer()?;
            let e = store
                .enroll(&sealer, &name, known, &config.agents.address)
                .map_err(|e| e.to_string())?;
            hand_over(&name, profile, &out, &e.bundle, &e.otp_uri, "", || {
                let _ = store.revoke(&name);
            })
        }
        AgentCommand::Connect(c) => connect(c),
        AgentCommand::Revoke { name } => {
            let socket = tollgate::admin::control::client_path(&args.state.data_dir());
            if socket.exists() {
                tollgate::admin::control::ask(
                    &socket,
                    &Request::AgentRevoke { name: name.clone() },
                )?;
            } else {
                store.revoke(&name).map_err(|e| e.to_string())?;
            }
            eprintln!("revoked {name:?}");
            Ok(())
        }
        AgentCommand::List => {
            let agents = store.load().map_err(|e| e.to_string())?;
            println!(
                "{:<24} {:<16} {:<10} {:<20} fingerprint",
                "name", "profile", "state", "enrolled"
            );
            for a in agents {
                let when = time::OffsetDateTime::from_unix_timestamp(a.enrolled as i64)
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_default();
                println!(
                    "{:<24} {:<16} {:<10} {:<20} {}",
                    a.name,
                    a.profile.as_deref().unwrap_or("-"),
                    if a.active() { "active" } else { "revoked" },
                    when,
                    &a.fingerprint[..16.min(a.fingerprint.len())]
                );
            }
            Ok(())
        }
    }
}

/// `agent enroll` through the running gateway's admin socket (admin
/// role): the bundle comes back once and is written to `out`.
fn enroll_via_daemon(
    socket: &std::path::Path,
    name: &str,
    profile: Option<String>,
    out: &std::path::Path,
) -> Result<(), String> {
    let req = Request::AgentEnroll {
        name: name.to_string(),
        profile: profile.clone(),
    };
    let e = tollgate::admin::control::ask(socket, &req)?
        .enrolled
        .ok_or("the gateway answered without a bundle")?;
    hand_over(
        name,
        profile,
        out,
        e.bundle.as_str(),
        e.otp_uri.as_str(),
        " by the running gateway",
        || {
            let _ = tollgate::admin::control::request(
                socket,
                &Request::AgentRevoke {
                    name: name.to_string(),
                },
            );
        },
    )
}

/// Writes an enrolment's bundle to `out` (undoing the enrolment with
/// `undo` if it cannot) and prints its TOTP URI, once.
fn hand_over(
    name: &str,
    profile: Option<String>,
    out: &std::path::Path,
    bundle: &str,
    otp_uri: &str,
    by: &str,
    undo: impl FnOnce(),
) -> Result<(), String> {
    if let Err(err) = tollgate::keys::write_private(out, bundle.as_bytes(), false) {
        // Without its bundle the enrolment is useless.
        undo();
        return Err(format!("{}: {err}", out.display()));
    }
    eprintln!(
        "enrolled {name:?}{}{by}; bundle written to {} (give it to the agent only)",
        profile
            .map(|p| format!(" with profile {p:?}"))
            .unwrap_or_default(),
        out.display()
    );
    eprintln!("TOTP provisioning URI (shown once; scan it into an authenticator app):");
    println!("{otp_uri}");
    Ok(())
}

fn connect(c: Box<ConnectArgs>) -> Result<(), String> {
    use tollgate::agent::{client::Client, phone, store::Bundle, totp, wav};
    let bundle = Bundle::load(&c.identity)?;
    let otp = match (&c.otp, &c.otp_secret_file) {
        (Some(code), _) => zeroize::Zeroizing::new(code.clone()),
        (None, Some(f)) => {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?,
            );
            let secret = totp::Secret::parse(&text)
                .ok_or_else(|| format!("{}: not a TOTP secret or otpauth:// URI", f.display()))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            zeroize::Zeroizing::new(totp::code_at(&secret, now))
        }
        (None, None) => return Err("--otp or --otp-secret-file is required".into()),
    };
    let play = c.play.as_deref().map(wav::read).transpose()?;
    let duration = match c.duration {
        Some(d) if d.is_finite() && d > 0.0 && d < 86_400.0 => {
            Some(std::time::Duration::from_secs_f64(d))
        }
        Some(_) => return Err("--duration must be between 0 and 86400 seconds".into()),
        None => None,
    };
    let opts = phone::Options {
        auto_answer: c.auto_answer,
        dial: c.dial.clone(),
        play,
        record: c.record.clone(),
        duration,
        calls: c.calls,
        dtmf: c.dtmf.clone(),
        ignore_offers: c.ignore_offers,
        hold_after: match c.hold_after {
            Some(h) if h.is_finite() && (0.0..86_400.0).contains(&h) => {
                Some(std::time::Duration::from_secs_f64(h))
            }
            Some(_) => return Err("--hold-after must be between 0 and 86400 seconds".into()),
            None => None,
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async {
        let client = Client::connect(&bundle, &otp)
            .await
            .map_err(|e| e.to_string())?;
        eprintln!("logged in to {} as {:?}", bundle.gateway, client.agent);
        let reports = phone::run(client, opts, |p| match p {
            phone::Progress::Report(r) => println!("{r}"),
            phone::Progress::Notice(n) => eprintln!("{n}"),
        })
        .await
        .map_err(|e| e.to_string())?;
        if reports.iter().all(|r| r.answered) {
            Ok(())
        } else {
            Err("a call was not answered".to_string())
        }
    })
}
