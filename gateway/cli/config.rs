//! `tollgate config`: check a file (with `--strict`, what is valid but
//! unsafe to ship), print the embedded defaults.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use tollgate::config::{Config, ConfigError};

#[derive(Subcommand)]
pub(crate) enum ConfigCommand {
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

pub(crate) fn config_command(c: ConfigCommand) -> ExitCode {
    match c {
        // The file alone: "auto" addresses are this machine's business
        // when the gateway starts, not the checker's.
        ConfigCommand::Check { file, strict } => match Config::check_file(&file) {
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
                    "{}: valid ({} trunk(s), {} route(s)){}",
                    file.display(),
                    c.trunks.len(),
                    c.routes.len(),
                    if c.unresolved() {
                        "; \"auto\" addresses are found when the gateway starts"
                    } else {
                        ""
                    }
                );
                ExitCode::SUCCESS
            }
            Err(ConfigError::Several(all)) => {
                for e in &all {
                    eprintln!("{}: {e}", file.display());
                }
                eprintln!("{}: {} problems", file.display(), all.len());
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::FAILURE
            }
        },
        ConfigCommand::Default => {
            print!("{}", tollgate::config::DEFAULT_TOML);
            ExitCode::SUCCESS
        }
    }
}
