//! `tollgate tls`: certificates for SIP over TLS.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum TlsCommand {
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

pub(crate) fn tls_command(c: TlsCommand) -> Result<String, String> {
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
