//! Incident lockdown (`tollgate incident lockdown --reason TEXT`): the
//! appliance's state while a breach is handled.
//!
//! While it holds, the agents' listener ends every session and refuses
//! logins but those of `[incident] break_glass` agents; the admin socket
//! refuses exports, erasures and confirmed shreds; retention's hourly
//! shred is suspended (evidence is kept); `tollgate_incident_active` is 1
//! (alert TollgateIncidentActive). Lockdown anchors the audit chain's
//! head in the journal and keeps it here. Release (`tollgate incident
//! release`) needs a second person holding the approver role: not the
//! one who locked down. Both are audited by the admin socket.
//!
//! The state is `incident.json` in the data directory (0600, synced
//! through a rename) and outlives a restart: restarting the daemon does
//! not lift a lockdown. An unreadable file keeps the appliance locked
//! down (the safe side) until someone releases it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Longest reason, in characters.
pub const MAX_REASON: usize = 500;

/// A lockdown in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lockdown {
    pub since_ms: u64,
    pub reason: String,
    /// Who locked down (`name (uid N)`), and their uid.
    pub by: String,
    pub by_uid: u32,
    /// The audit chain's head when it began: sequence number and hash.
    pub anchor_seq: u64,
    pub anchor_hash: String,
}

/// The appliance's incident state.
pub struct Incident {
    path: PathBuf,
    state: Mutex<Option<Lockdown>>,
    active: AtomicBool,
    changes: tokio::sync::watch::Sender<bool>,
    gauge: prometheus::IntGauge,
}

impl Incident {
    /// The state kept in `data_dir`, published on `gauge`.
    pub fn open(data_dir: &Path, gauge: prometheus::IntGauge) -> Self {
        let path = data_dir.join("incident.json");
        let state = match std::fs::read(&path) {
            Ok(b) => Some(serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::error!(
                    "{}: unreadable ({e}); staying in lockdown until someone with the approver role releases it",
                    path.display()
                );
                Lockdown {
                    since_ms: 0,
                    reason: format!("{} unreadable at start", path.display()),
                    by: "the gateway".into(),
                    by_uid: u32::MAX,
                    anchor_seq: 0,
                    anchor_hash: String::new(),
                }
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::error!(
                    "{}: {e}; staying in lockdown until someone with the approver role releases it",
                    path.display()
                );
                Some(Lockdown {
                    since_ms: 0,
                    reason: format!("{} unreadable at start ({e})", path.display()),
                    by: "the gateway".into(),
                    by_uid: u32::MAX,
                    anchor_seq: 0,
                    anchor_hash: String::new(),
                })
            }
        };
        let active = state.is_some();
        if let Some(l) = &state {
            tracing::warn!(reason = %l.reason, by = %l.by, "incident lockdown in force since before this start");
        }
        gauge.set(i64::from(active));
        Self {
            path,
            state: Mutex::new(state),
            active: AtomicBool::new(active),
            changes: tokio::sync::watch::channel(active).0,
            gauge,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Lockdown>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a lockdown is in force (cheap: one load).
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// The lockdown in force, if any.
    pub fn current(&self) -> Option<Lockdown> {
        self.lock().clone()
    }

    /// Tells when a lockdown begins (`true`) or ends.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.changes.subscribe()
    }

    fn set(&self, active: bool) {
        self.active.store(active, Ordering::Release);
        self.gauge.set(i64::from(active));
        self.changes.send_replace(active);
    }

    /// Begins `l`, on disk first. Refused while one is in force.
    pub fn lock_down(&self, l: Lockdown) -> Result<Lockdown, String> {
        let reason = l.reason.trim();
        if reason.is_empty()
            || reason.chars().count() > MAX_REASON
            || reason.chars().any(char::is_control)
        {
            return Err(format!(
                "a lockdown needs a reason (--reason), one line of at most {MAX_REASON} characters"
            ));
        }
        let mut state = self.lock();
        if let Some(now) = &*state {
            return Err(format!(
                "already in lockdown since {} by {}",
                now.since_ms, now.by
            ));
        }
        let text = serde_json::to_vec_pretty(&l).map_err(|e| e.to_string())?;
        crate::keys::write_private(&self.path, &text, true)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        *state = Some(l.clone());
        self.set(true);
        Ok(l)
    }

    /// Ends the lockdown, by `by_uid`: someone other than who began it
    /// (the caller checks the approver role).
    pub fn release(&self, by_uid: u32) -> Result<Lockdown, String> {
        let mut state = self.lock();
        let Some(l) = state.clone() else {
            return Err("no lockdown is in force".into());
        };
        if l.by_uid == by_uid {
            return Err(format!(
                "{} began this lockdown: a second person with the approver role releases it",
                l.by
            ));
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", self.path.display())),
        }
        let _ = crate::keys::sync_parent(&self.path);
        *state = None;
        self.set(false);
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lockdown(uid: u32) -> Lockdown {
        Lockdown {
            since_ms: 1,
            reason: "stolen laptop".into(),
            by: format!("u (uid {uid})"),
            by_uid: uid,
            anchor_seq: 7,
            anchor_hash: "ab".into(),
        }
    }

    #[test]
    fn a_lockdown_outlives_a_restart_and_needs_someone_else_to_release_it() {
        let d = std::env::temp_dir().join(format!("tollgate-incident-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        let gauge = prometheus::IntGauge::new("g", "g").expect("gauge");
        let i = Incident::open(&d, gauge.clone());
        assert!(!i.active());
        let mut changes = i.subscribe();
        let mut blank = lockdown(1);
        blank.reason = " ".into();
        assert!(i.lock_down(blank).is_err());
        i.lock_down(lockdown(1)).expect("lockdown");
        assert!(i.active() && gauge.get() == 1);
        assert!(changes.has_changed().expect("open") && *changes.borrow_and_update());
        assert!(i.lock_down(lockdown(2)).is_err(), "one at a time");
        drop(i);
        let i = Incident::open(&d, gauge.clone());
        assert_eq!(i.current(), Some(lockdown(1)));
        assert!(i
            .release(1)
            .expect_err("same person")
            .contains("second person"));
        assert_eq!(i.release(2).expect("released"), lockdown(1));
        assert!(!i.active() && gauge.get() == 0);
        assert!(Incident::open(&d, gauge.clone()).current().is_none());
        // An unreadable file keeps the appliance locked down.
        std::fs::write(d.join("incident.json"), b"{").expect("write");
        let i = Incident::open(&d, gauge);
        assert!(i.active());
        i.release(1).expect("anyone else releases it");
        let _ = std::fs::remove_dir_all(&d);
    }
}
