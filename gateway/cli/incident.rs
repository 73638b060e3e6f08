//! `tollgate incident`: lockdown, release and status of the running
//! gateway's incident state (see `docs/INCIDENT.md`).

use std::process::ExitCode;

use clap::Subcommand;
use tollgate::admin::control::Request;

use super::operator::{operator, utc};
use super::StateArgs;

#[derive(Subcommand)]
pub(crate) enum IncidentCommand {
    /// Lock the appliance down (admin role): end every agent session but
    /// the [incident] break_glass agents', refuse their logins, refuse
    /// exports, erasures and shredding, and anchor the audit trail's head
    /// in the journal. Lasts until a second person releases it.
    Lockdown {
        /// What happened (one line; goes into the audit trail).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        state: StateArgs,
    },
    /// End the lockdown (approver role; not the person who began it).
    Release {
        #[command(flatten)]
        state: StateArgs,
    },
    /// Whether a lockdown is in force, since when, by whom and why.
    Status {
        #[command(flatten)]
        state: StateArgs,
    },
    /// Rehearse an incident against the running gateway (admin and
    /// auditor roles): a throw-away agent's bundle used from a new
    /// network, a burst of failed logins, a bulk read; checks each was
    /// detected and audited, removes the agent and reports how fast.
    /// Sets off the alerts a real incident would.
    Drill {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
}

pub(crate) fn incident_command(c: IncidentCommand) -> ExitCode {
    match c {
        IncidentCommand::Drill { json, state } => drill(json, &state),
        IncidentCommand::Lockdown { reason, state } => {
            operator(&state, &Request::IncidentLockdown { reason }, |r, _| {
                let Some(l) = r.incident else {
                    return false;
                };
                println!(
                    "LOCKDOWN in force since {} UTC by {}",
                    utc(l.since_ms),
                    l.by
                );
                if l.anchor_hash.is_empty() {
                    println!("audit trail head: NOT ANCHORED (the audit writer did not answer; check the data disk, then tollgate audit verify)");
                } else {
                    println!(
                        "audit trail head: entry {} sha256 {} (also in the journal: journalctl -u tollgate | grep 'audit anchor')",
                        l.anchor_seq, l.anchor_hash
                    );
                }
                println!("agents are out but break-glass; exports, erasures and shredding are refused; retention is suspended");
                println!(
                    "release: tollgate incident release (a second person with the approver role)"
                );
                true
            })
        }
        IncidentCommand::Release { state } => {
            operator(&state, &Request::IncidentRelease, |r, _| {
                if let Some(l) = r.incident {
                    println!(
                        "lockdown of {} UTC by {} ({}) released",
                        utc(l.since_ms),
                        l.by,
                        l.reason
                    );
                }
                true
            })
        }
        IncidentCommand::Status { state } => operator(&state, &Request::IncidentStatus, |r, _| {
            match r.incident {
                Some(l) => println!(
                    "LOCKDOWN since {} UTC by {}: {} (audit head at entry {})",
                    utc(l.since_ms),
                    l.by,
                    l.reason,
                    l.anchor_seq
                ),
                None => println!("no lockdown in force"),
            }
            true
        }),
    }
}

fn drill(json: bool, state: &StateArgs) -> ExitCode {
    let socket = tollgate::admin::control::client_path(&state.data_dir());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tollgate incident drill: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = match rt.block_on(tollgate::admin::drill::run(&socket)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tollgate incident drill: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        println!(
            "incident drill at {} UTC with throw-away agent {}",
            utc(report.started_ms),
            report.agent
        );
        for s in &report.steps {
            let when = match (s.detected, s.detected_ms, &s.skipped) {
                (_, _, Some(why)) => format!("NOT REHEARSED ({why})"),
                (true, Some(ms), _) => format!("detected in {ms} ms"),
                _ => "NOT DETECTED".to_string(),
            };
            println!("- {}: {when}", s.step);
            println!("    contained: {}", s.contained);
            if let Some(a) = &s.audited {
                println!("    audited: {a}");
            }
        }
        println!(
            "{}",
            if report.passed() {
                "every step was detected and audited"
            } else {
                "the drill found gaps: see the steps above"
            }
        );
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
