//! Reloading the configuration in a running gateway (SIGHUP, so
//! `systemctl reload tollgate`).
//!
//! The file is read and validated whole first: a file with an error, a
//! TLS trunk whose CA cannot be read, or one that drops a profile enrolled
//! agents use, is refused and nothing changes (the
//! log, systemd's status line, the audit trail and
//! `tollgate_config_last_reload_successful` say so). Otherwise the
//! kernel's trunk and admin sets are refilled in one nft transaction, then
//! the call core takes the new trunks, dial plan and IDS rules, the SIP
//! TLS listeners a renewed certificate (from the next handshake), and
//! record retention its new period. Calls in progress are not touched.
//! What only a restart can change is named, and counted in
//! `tollgate_config_restart_pending`.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::calls::core::GuardRequest;
use crate::config::Config;
use crate::guard::nft;
use crate::telemetry::audit::Audit;
use crate::telemetry::metrics::Metrics;

/// What a reload needs to reach.
pub struct Reloader {
    /// The file, or `None` for the embedded defaults.
    pub path: Option<PathBuf>,
    /// The running configuration, published to the admin socket.
    pub running: watch::Sender<Arc<Config>>,
    /// The admin HTTP listener's state (its admin networks).
    pub http: Arc<super::http::AdminState>,
    /// The data directory (the agent registry, checked against profiles).
    pub data_dir: PathBuf,
    pub core: mpsc::Sender<GuardRequest>,
    pub firewall: Option<nft::Handle>,
    /// The SIP TLS listeners' certificate, when they run.
    pub server_cert: Option<Arc<crate::sip::transport::ServerCert>>,
    pub retention: watch::Sender<u32>,
    pub audit: Audit,
    pub metrics: Arc<Metrics>,
}

impl Reloader {
    /// Reads the file again and applies what can be applied live. `Ok`
    /// carries the summary of what changed; `Err` why nothing did.
    pub async fn reload(&mut self) -> Result<String, String> {
        let r = self.apply().await;
        let (outcome, detail) = match &r {
            Ok(summary) => ("applied", summary.clone()),
            Err(e) => ("refused", e.clone()),
        };
        self.metrics
            .config_reloads
            .with_label_values(&[outcome])
            .inc();
        self.metrics
            .config_last_reload_successful
            .set(i64::from(r.is_ok()));
        self.audit.record("gateway", "reload", &detail, outcome);
        match &r {
            Ok(s) => info!(changes = %s, "configuration reloaded"),
            Err(e) => warn!("configuration NOT reloaded, the running one stays: {e}"),
        }
        r
    }

    async fn apply(&mut self) -> Result<String, String> {
        let new = match &self.path {
            Some(p) => Config::load(p).map_err(|e| format!("{}: {e}", p.display()))?,
            None => Config::embedded().map_err(|e| format!("embedded defaults: {e}"))?,
        };
        let tls = crate::calls::reload::tls_peers(&new)?;
        let renewed = match (
            &self.server_cert,
            &new.tls_certificate,
            &new.tls_private_key,
        ) {
            (Some(served), Some(c), Some(k)) => served
                .read_again(c, k)
                .map_err(|e| format!("SIP TLS: {e}"))?,
            _ => None,
        };
        // Profiles that enrolled agents use stay: removing one would leave
        // those agents unable to dial without anyone being told.
        let agents = crate::agent::store::Store::new(&self.data_dir)
            .load()
            .map_err(|e| format!("the agent registry: {e}"))?;
        let orphans = crate::agent::store::orphans(&agents, &new);
        if !orphans.is_empty() {
            return Err(format!(
                "profiles used by enrolled agents are missing: {} (revoke or re-enrol them first)",
                orphans.join(", ")
            ));
        }
        let mut reloaded = self.running.borrow().reload_from(new);
        if renewed.is_some() {
            reloaded.applied.push("SIP TLS certificate".into());
        }
        let summary = reloaded.summary();
        let pending = reloaded.pending;
        let config = Arc::new(reloaded.config);
        if let Some(f) = &self.firewall {
            f.refill(&config)
                .await
                .map_err(|e| format!("nftables trunk and admin sets: {e}"))?;
        }
        let (tx, rx) = oneshot::channel();
        self.core
            .send(GuardRequest::Configure(Box::new((config.clone(), tls)), tx))
            .await
            .map_err(|_| "the call core is stopping".to_string())?;
        rx.await
            .map_err(|_| "the call core is stopping".to_string())?;
        if let (Some(served), Some(new)) = (&self.server_cert, renewed) {
            served.install(new);
        }
        *self
            .http
            .admin_networks
            .write()
            .unwrap_or_else(|p| p.into_inner()) = config.firewall.admin_networks.clone();
        self.retention.send_if_modified(|days| {
            let changed = *days != config.retention_days;
            *days = config.retention_days;
            changed
        });
        self.metrics
            .config_restart_pending
            .set(pending.len() as i64);
        if !pending.is_empty() {
            warn!(
                keys = %pending.join(", "),
                "changed settings take effect at the next restart (systemctl restart tollgate)"
            );
        }
        self.running.send_replace(config);
        Ok(summary)
    }
}
