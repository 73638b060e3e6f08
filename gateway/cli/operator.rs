//! The operator commands of `tollgate`: call records, the audit trail and
//! firewall bans, asked of the running daemon over its admin socket and
//! printed for a person (or as JSON lines for scripts).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use tollgate::admin::control::{Request, Response, SecretText};

use super::StateArgs;

#[derive(clap::Args, Clone)]
pub(crate) struct Span {
    /// From this time: 2026-11-28, 2026-11-28T09:00:00Z or Unix ms.
    #[arg(long)]
    from: Option<String>,
    /// Up to (not including) this time.
    #[arg(long)]
    to: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum CdrCommand {
    /// List records, oldest first.
    List {
        #[command(flatten)]
        span: Span,
        /// Only this agent's calls.
        #[arg(long)]
        agent: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// One record, whole.
    Show {
        id: String,
        #[command(flatten)]
        state: StateArgs,
    },
    /// What retention would shred now and whether its hourly run holds
    /// it (a clock jump, or many days at once); with --confirm, shred it
    /// (admin role). Cannot be undone.
    Shred {
        /// Shred what is past retention, held or not.
        #[arg(long)]
        confirm: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Export records with whole numbers (auditor role), with a second
    /// person's approval: `--reason` files a request that someone holding
    /// the approver role approves (`tollgate approvals approve ID`); then
    /// `--approval ID` runs it, once, within `[admin] approval_window_s`.
    Export {
        #[arg(long, value_parser = ["csv", "jsonl"], required_unless_present = "approval")]
        format: Option<String>,
        /// Why the data must leave: files a request for approval.
        #[arg(
            long,
            required_unless_present = "approval",
            conflicts_with = "approval"
        )]
        reason: Option<String>,
        /// Run the approved request ID (its filters and format).
        #[arg(long, value_name = "ID", conflicts_with_all = ["format", "from", "to"])]
        approval: Option<String>,
        #[command(flatten)]
        span: Span,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Erase every finished record of one number (a data subject's
    /// request; auditor role), with a second person's approval, as for
    /// an export: `--reason` files the request, `--approval ID` runs it
    /// once. The number is given both times; requests and the audit trail
    /// keep only its keyed hash. Give it as the carrier delivers it
    /// (E.164): its digits are matched. Cannot be undone.
    Erase {
        /// The number (digits, an optional leading +, spaces or dashes).
        #[arg(long)]
        number: String,
        /// Why it must be erased: files a request for approval.
        #[arg(
            long,
            required_unless_present = "approval",
            conflicts_with = "approval"
        )]
        reason: Option<String>,
        /// Run the approved request ID.
        #[arg(long, value_name = "ID")]
        approval: Option<String>,
        #[command(flatten)]
        state: StateArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum ApprovalsCommand {
    /// Requests to take data out, and where each stands (approver or
    /// auditor role).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Approve someone else's request (approver role): it may then run
    /// once.
    Approve {
        id: String,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Refuse someone else's request (approver role).
    Refuse {
        id: String,
        #[command(flatten)]
        state: StateArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// List entries (auditor role).
    List {
        #[command(flatten)]
        span: Span,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Check the whole chain; names the first entry changed, removed or
    /// reordered.
    Verify {
        #[command(flatten)]
        state: StateArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Re-seal everything kept under the master key (call records' day
    /// keys, the audit key, the agent CA's key, agents' TOTP secrets)
    /// under a new one, while the gateway runs (admin role).
    RotateMaster {
        /// The new key: read from FILE if it exists (32 bytes, or 64 hex
        /// digits), else made and written there (mode 0600).
        #[arg(long, value_name = "FILE")]
        new_key: PathBuf,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Print a key file's id: which key is which, as the gateway names
    /// them in its messages and the audit trail.
    Id {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

pub(crate) fn keys_command(c: KeysCommand) -> ExitCode {
    match c {
        KeysCommand::Id { file } => match tollgate::keys::Sealer::load(&file, false) {
            Ok(s) => {
                println!("{}", s.id());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        KeysCommand::RotateMaster { new_key, state } => {
            let key = match read_or_make_key(&new_key) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("tollgate keys rotate-master: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let req = Request::RotateMaster {
                key: zeroize::Zeroizing::new(data_encoding::HEXLOWER.encode(&key[..])).into(),
            };
            operator(&state, &req, |r, _| {
                let Some(r) = r.rotated else {
                    return false;
                };
                println!(
                    "master key rotated: key {} replaced key {}",
                    r.new_key, r.old_key
                );
                println!(
                    "re-sealed: the record keys of {} day(s), the audit key, the agent CA's key and {} agent enrolment(s)",
                    r.record_days, r.agents
                );
                if let Some(why) = &r.unfinished {
                    eprintln!("warning: the gateway uses the new key, but a file switch stopped ({why}); its next start finishes it");
                }
                if r.dev_key_replaced {
                    println!("the development key file now holds the new key");
                } else {
                    println!(
                        "the gateway runs on the new key from {}. Before it next starts, install that key where it reads its master key (the systemd credential master-key, or --master-key-file), then destroy the old key and this file.",
                        new_key.display()
                    );
                }
                true
            })
        }
    }
}

/// The new key for a rotation: the file's if it exists, else a new random
/// one written there, readable by its owner only.
fn read_or_make_key(
    path: &std::path::Path,
) -> Result<zeroize::Zeroizing<[u8; tollgate::keys::KEY_LEN]>, String> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = zeroize::Zeroizing::new(bytes);
            tollgate::keys::parse_key(&bytes).ok_or_else(|| {
                format!(
                    "{}: must hold 32 bytes, raw or as 64 hex digits",
                    path.display()
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = tollgate::keys::new_key().map_err(|e| e.to_string())?;
            let hex = zeroize::Zeroizing::new(data_encoding::HEXLOWER.encode(&key[..]) + "\n");
            tollgate::keys::write_private(path, hex.as_bytes(), false)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Sends `req` to the running gateway; `done` handles a successful answer
/// and the data lines after it, and says whether the command succeeded.
pub(crate) fn operator(
    state: &StateArgs,
    req: &Request,
    done: impl FnOnce(Response, &mut dyn Iterator<Item = String>) -> bool,
) -> ExitCode {
    let socket = tollgate::admin::control::client_path(&state.data_dir());
    match tollgate::admin::control::request(&socket, req) {
        Ok((r, mut lines)) if r.ok => {
            if done(r, &mut lines) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok((r, _)) => {
            eprintln!("{}", r.error.unwrap_or_default());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// A time for --from/--to as Unix ms: a date (midnight UTC), an RFC 3339
/// time, or Unix ms.
fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return u64::try_from(t.as_millisecond()).map_err(|e| e.to_string());
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        if let Ok(z) = d.to_zoned(jiff::tz::TimeZone::UTC) {
            return u64::try_from(z.timestamp().as_millisecond()).map_err(|e| e.to_string());
        }
    }
    Err(format!(
        "{s:?} is not a time (2026-11-28, 2026-11-28T09:00:00Z or Unix ms)"
    ))
}

/// --from and --to as Unix ms (all time when absent); says what is wrong
/// and gives None on a bad time.
fn span(s: &Span) -> Option<(u64, u64)> {
    let parse = |t: &Option<String>, default: u64| match t.as_deref().map(parse_time) {
        None => Some(default),
        Some(Ok(ms)) => Some(ms),
        Some(Err(e)) => {
            eprintln!("{e}");
            None
        }
    };
    Some((parse(&s.from, 0)?, parse(&s.to, u64::MAX)?))
}

pub(crate) fn cdr_command(c: CdrCommand) -> ExitCode {
    use tollgate::admin::control::{Format, Listed};
    match c {
        CdrCommand::List {
            span: sp,
            agent,
            json,
            state,
        } => {
            let Some((from_ms, to_ms)) = span(&sp) else {
                return ExitCode::FAILURE;
            };
            operator(
                &state,
                &Request::CdrList {
                    from_ms,
                    to_ms,
                    agent,
                },
                |_, lines| {
                    if !json {
                        println!(
                            "{:<24} {:<19} {:<8} {:<16} {:<16} {:<10} {:>7} {:<11} status",
                            "id",
                            "start (UTC)",
                            "dir",
                            "caller",
                            "callee",
                            "agent",
                            "secs",
                            "outcome"
                        );
                    }
                    let mut clean = true;
                    for l in lines {
                        if let Some(d) = damaged(&l) {
                            eprintln!("{d}");
                            clean = false;
                            continue;
                        }
                        if json {
                            println!("{l}");
                            continue;
                        }
                        let Ok(x) = serde_json::from_str::<Listed>(&l) else {
                            continue;
                        };
                        let r = x.record;
                        println!(
                            "{:<24} {:<19} {:<8} {:<16} {:<16} {:<10} {:>7} {:<11} {}",
                            x.id,
                            utc(r.start_ms),
                            format!("{:?}", r.direction).to_lowercase(),
                            // As the gateway sent them: masked unless
                            // the operator is an auditor.
                            r.caller.audited(),
                            r.callee.audited(),
                            r.agent.as_deref().unwrap_or("-"),
                            r.duration_ms / 1000,
                            r.outcome.label(),
                            r.sip_status
                        );
                    }
                    clean
                },
            )
        }
        CdrCommand::Shred { confirm, state } => {
            operator(&state, &Request::CdrShred { confirm }, |r, _| {
                let Some(s) = r.shred else {
                    return false;
                };
                let day = |d: u32| {
                    let t = utc(u64::from(d) * 86_400_000);
                    t.get(..10).map_or_else(|| t.clone(), str::to_string)
                };
                let span = match (s.due_days.first(), s.due_days.last()) {
                    (Some(a), Some(b)) => format!("{} to {}", day(*a), day(*b)),
                    _ => "none".into(),
                };
                println!(
                    "retention: {} days; days past it: {} ({span})",
                    s.retention_days,
                    s.due_days.len()
                );
                match &s.held {
                    Some(why) => println!("the hourly run holds them: {why}"),
                    None => println!("the hourly run is not holding anything"),
                }
                if confirm {
                    println!(
                        "shredded {} days ({} records): their keys are gone, the records unreadable",
                        s.shredded_days, s.shredded_records
                    );
                } else if !s.due_days.is_empty() {
                    println!(
                        "nothing shredded; check the clock, then: tollgate records shred --confirm"
                    );
                }
                true
            })
        }
        CdrCommand::Show { id, state } => operator(&state, &Request::CdrShow { id }, |_, lines| {
            for l in lines {
                match serde_json::from_str::<serde_json::Value>(&l) {
                    Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or(l)),
                    Err(_) => println!("{l}"),
                }
            }
            true
        }),
        CdrCommand::Export {
            format,
            reason,
            approval,
            span: sp,
            state,
        } => {
            let Some(approval) = approval else {
                let Some((from_ms, to_ms)) = span(&sp) else {
                    return ExitCode::FAILURE;
                };
                let format = if format.as_deref() == Some("csv") {
                    Format::Csv
                } else {
                    Format::Jsonl
                };
                let req = Request::ExportRequest {
                    from_ms,
                    to_ms,
                    format,
                    reason: reason.unwrap_or_default(),
                };
                return operator(&state, &req, |r, _| {
                    let Some(a) = r.approval else {
                        return false;
                    };
                    println!("{}", a.id);
                    eprintln!(
                        "export request {} filed; someone else with the approver role runs `tollgate approvals approve {}`, then you run `tollgate cdr export --approval {}`",
                        a.id, a.id, a.id
                    );
                    true
                });
            };
            operator(&state, &Request::CdrExport { approval }, |_, lines| {
                use std::io::Write;
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                let mut clean = true;
                for l in lines {
                    if let Some(d) = damaged(&l) {
                        eprintln!("{d}");
                        clean = false;
                        continue;
                    }
                    if writeln!(out, "{l}").is_err() {
                        return false;
                    }
                }
                out.flush().is_ok() && clean
            })
        }
        CdrCommand::Erase {
            number,
            reason,
            approval,
            state,
        } => erase(number, reason, approval, &state),
    }
}

/// `cdr erase`: files the request, or runs the approved one.
fn erase(
    number: String,
    reason: Option<String>,
    approval: Option<String>,
    state: &StateArgs,
) -> ExitCode {
    let number = SecretText::new(&number);
    let Some(approval) = approval else {
        let req = Request::EraseRequest {
            number,
            reason: reason.unwrap_or_default(),
        };
        return operator(state, &req, |r, _| {
            let Some(a) = r.approval else {
                return false;
            };
            println!("{}", a.id);
            eprintln!(
                "erasure request {} filed ({}); someone else with the approver role runs `tollgate approvals approve {}`, then you run `tollgate cdr erase --number N --approval {}` with the same number",
                a.id, a.action, a.id, a.id
            );
            true
        });
    };
    operator(state, &Request::CdrErase { approval, number }, |r, _| {
        let Some(e) = r.erased else {
            return false;
        };
        println!(
            "erased {} records (read {}); kept {} of calls still in progress; {} unreadable",
            e.removed, e.scanned, e.in_progress, e.damaged
        );
        if e.in_progress > 0 {
            eprintln!("calls with that number are in progress: when they end, file another erasure for their records");
        }
        true
    })
}

/// A data line that reports a damaged record: the message to print.
fn damaged(line: &str) -> Option<String> {
    if !line.starts_with("{\"damaged\"") {
        return None;
    }
    serde_json::from_str::<serde_json::Value>(line)
        .ok()?
        .get("damaged")?
        .as_str()
        .map(str::to_string)
}

pub(crate) fn audit_command(c: AuditCommand) -> ExitCode {
    match c {
        AuditCommand::List {
            span: sp,
            json,
            state,
        } => {
            let Some((from_ms, to_ms)) = span(&sp) else {
                return ExitCode::FAILURE;
            };
            operator(
                &state,
                &Request::AuditList { from_ms, to_ms },
                |_, lines| {
                    for l in lines {
                        if json {
                            println!("{l}");
                            continue;
                        }
                        let Ok(e) = serde_json::from_str::<tollgate::telemetry::audit::Entry>(&l)
                        else {
                            continue;
                        };
                        println!(
                            "{:>6} {} {:<28} {:<20} {:<24} {}",
                            e.seq,
                            utc(e.time_ms),
                            e.actor,
                            e.action,
                            e.target,
                            e.outcome
                        );
                    }
                    true
                },
            )
        }
        AuditCommand::Verify { state } => operator(&state, &Request::AuditVerify, |r, _| {
            println!("audit trail {}", r.verified.unwrap_or_default());
            true
        }),
    }
}

/// "2026-11-28 12:00:00" for Unix milliseconds.
pub(crate) fn utc(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

pub(crate) fn approvals_command(c: ApprovalsCommand) -> ExitCode {
    match c {
        ApprovalsCommand::List { json, state } => {
            operator(&state, &Request::ApprovalsList, |r, _| {
                for a in r.approvals.unwrap_or_default() {
                    if json {
                        println!("{}", serde_json::to_string(&a).unwrap_or_default());
                        continue;
                    }
                    let state = serde_json::to_value(&a.state)
                        .ok()
                        .and_then(|v| v.get("state")?.as_str().map(str::to_string))
                        .unwrap_or_default();
                    println!(
                        "{:<16} {:<19} {:<9} {:<24} {}  ({})",
                        a.id,
                        utc(a.filed_ms),
                        state,
                        a.requester,
                        a.action,
                        a.reason
                    );
                }
                true
            })
        }
        ApprovalsCommand::Approve { id, state } => decide(&state, id, true),
        ApprovalsCommand::Refuse { id, state } => decide(&state, id, false),
    }
}

fn decide(state: &StateArgs, id: String, approve: bool) -> ExitCode {
    operator(state, &Request::ApprovalDecide { id, approve }, |r, _| {
        if let Some(a) = r.approval {
            println!(
                "request {} ({} by {}): {}",
                a.id,
                a.action,
                a.requester,
                if approve { "approved" } else { "refused" }
            );
        }
        true
    })
}
