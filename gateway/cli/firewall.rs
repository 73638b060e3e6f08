//! `tollgate firewall`: check IDS rules, and the running gateway's bans
//! (list, lift) and rules (reload) through the admin socket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use tollgate::admin::control::Request;

use super::operator::{operator, utc};
use super::StateArgs;

#[derive(Subcommand)]
pub(crate) enum FirewallCommand {
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

pub(crate) fn firewall_command(c: FirewallCommand) -> ExitCode {
    match c {
        FirewallCommand::Check { file } => {
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
                    tollgate::config::rules::DEFAULT_IDS_TOML.to_string(),
                ),
            };
            match tollgate::config::rules::Rules::from_toml(&text) {
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
        FirewallCommand::Bans { json, state } => operator(&state, &Request::Bans, |r, _| {
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
        }),
        FirewallCommand::Unban { addr, state } => {
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
        FirewallCommand::Reload { state } => operator(&state, &Request::Reload, |_, _| {
            println!("IDS rules reloaded");
            true
        }),
    }
}
