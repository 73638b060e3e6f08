//! `tollgate agent`: enrol, revoke and list agents (through the running
//! gateway when there is one), and the headless softphone.

use std::path::PathBuf;

use clap::Subcommand;

use tollgate::admin::control::Request;

use super::{load_config, StateArgs};

#[derive(clap::Args)]
pub(crate) struct AgentArgs {
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
    /// Withhold the call centre's number from the called party.
    #[arg(long, requires = "dial")]
    withhold: bool,
    /// Show this agent's own recent calls (after its calls, if it takes or
    /// places any): time, direction, duration, outcome, the other party
    /// as the agent's profile shows it.
    #[arg(long)]
    history: bool,
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

pub(crate) fn agent_command(args: AgentArgs) -> Result<(), String> {
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
        withhold: c.withhold,
        history: c.history,
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
            phone::Progress::History(calls) => print_history(calls),
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

/// The agent's own recent calls, one line each, newest first.
fn print_history(calls: &[tollgate::agent::protocol::PastCall]) {
    if calls.is_empty() {
        println!("history: no calls");
    }
    for c in calls {
        println!(
            "history: {} {:<8} {:>6} s {:<11} {}",
            super::operator::utc(c.start_ms),
            c.direction,
            c.duration_s,
            c.outcome,
            c.party
        );
    }
}
