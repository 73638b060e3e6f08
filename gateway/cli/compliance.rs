//! `tollgate compliance`: the signed report an assessor reads, made by
//! the running gateway, and the offline check of its signature.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use tollgate::admin::control::Request;

use super::operator::operator;
use super::StateArgs;

#[derive(Subcommand)]
pub(crate) enum ComplianceCommand {
    /// Write the compliance report (auditor role): one self-contained
    /// HTML page (or JSON) on the appliance's controls, each marked pass,
    /// warn or fail against PCI DSS 4.0, PIPL and HIPAA 164.312, signed
    /// by the appliance. Its SHA-256 goes into the audit trail.
    Report {
        /// Where to write it (created 0600; an existing file is replaced).
        #[arg(long)]
        out: PathBuf,
        /// JSON instead of HTML.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Check a report's signature (offline; no gateway needed). Exits
    /// non-zero when it does not verify.
    Verify {
        /// The report (HTML or JSON).
        file: PathBuf,
        /// The fingerprint the appliance's key must have (SHA256:..), as
        /// `compliance report` printed it and the audit trail holds it: a
        /// signature is only as good as knowing whose key made it.
        #[arg(long)]
        key: String,
    },
}

pub(crate) fn compliance_command(c: ComplianceCommand) -> ExitCode {
    match c {
        ComplianceCommand::Report { out, json, state } => {
            operator(&state, &Request::ComplianceReport { json }, |r, _| {
                let Some(r) = r.report else {
                    eprintln!("the gateway sent no report");
                    return false;
                };
                if let Err(e) = write_new(&out, r.document.as_bytes()) {
                    eprintln!("{}: {e}", out.display());
                    return false;
                }
                println!(
                    "wrote {} ({} bytes): {} pass, {} warn, {} fail",
                    out.display(),
                    r.document.len(),
                    r.pass,
                    r.warn,
                    r.fail
                );
                println!("sha256 {}", r.sha256);
                println!("signed by the appliance key {}", r.key);
                true
            })
        }
        ComplianceCommand::Verify { file, key } => {
            let bytes = match std::fs::read(&file) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    return ExitCode::FAILURE;
                }
            };
            match tollgate::admin::compliance::verify(&bytes, &key) {
                Ok(report) => {
                    let (pass, warn, fail) = report.tally();
                    println!(
                        "{}: signature good, by the appliance key {}",
                        file.display(),
                        key.trim()
                    );
                    println!(
                        "report of {} generated {}: {pass} pass, {warn} warn, {fail} fail",
                        report.facts.appliance.hostname,
                        tollgate::admin::compliance::when(report.facts.generated_ms)
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: NOT VERIFIED: {e}", file.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Writes `bytes` to `path` with mode 0600, replacing what was there.
fn write_new(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
