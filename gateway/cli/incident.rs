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
}

pub(crate) fn incident_command(c: IncidentCommand) -> ExitCode {
    match c {
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
                println!(
                    "audit trail head: entry {} sha256 {} (also in the journal: journalctl -u tollgate | grep 'audit anchor')",
                    l.anchor_seq, l.anchor_hash
                );
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
