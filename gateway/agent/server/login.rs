//! What a login meets besides its code: an incident lockdown (refused
//! unless break-glass, and live sessions ended when one begins), failures
//! counted and audited in a per-source digest, lockouts, and logins from
//! a new network or outside the profile's hours reported as anomalies.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{write_msg, Shared};
use crate::agent::engine::Conn;
use crate::agent::guard::{Address, Refused};
use crate::agent::protocol::{close, ServerMsg};

/// Sources whose failures one audit digest names; the rest are summed.
const DIGEST_SOURCES: usize = 1024;
/// How often failed logins are written to the audit trail.
const DIGEST_EVERY: Duration = Duration::from_secs(60);

/// Failed logins by source and reason: a source's first failure in a
/// minute is audited at once, the rest in one entry per source a minute,
/// not one entry (and one fsync) per forged packet.
#[derive(Default)]
pub(super) struct FailureDigest {
    by_source: HashMap<IpAddr, HashMap<&'static str, u64>>,
    /// Failures from sources past [`DIGEST_SOURCES`].
    others: u64,
}

impl FailureDigest {
    /// Notes a failure; true if it is the source's first this minute (to
    /// be audited now).
    fn note(&mut self, source: IpAddr, reason: &'static str) -> bool {
        if let Some(reasons) = self.by_source.get_mut(&source) {
            *reasons.entry(reason).or_default() += 1;
            return false;
        }
        if self.by_source.len() >= DIGEST_SOURCES {
            self.others += 1;
            return false;
        }
        self.by_source.insert(source, HashMap::new());
        true
    }

    /// The audit entries (target, outcome) for failures after each
    /// source's first, emptied for the next minute.
    fn take(&mut self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .by_source
            .drain()
            .filter(|(_, reasons)| !reasons.is_empty())
            .map(|(ip, reasons)| {
                let total: u64 = reasons.values().sum();
                let mut r: Vec<_> = reasons.into_iter().collect();
                r.sort();
                let detail = r
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                (
                    ip.to_string(),
                    format!("failed {total} more times: {detail}"),
                )
            })
            .collect();
        out.sort();
        if self.others > 0 {
            out.push((
                "other sources".into(),
                format!("failed {} times", std::mem::take(&mut self.others)),
            ));
        }
        out
    }
}

/// Whether `name` may be logged in now: not during a lockdown, unless a
/// break-glass agent.
pub(super) fn admitted(shared: &Shared, name: &str) -> bool {
    !shared.incident.active() || shared.config.borrow().break_glass.iter().any(|b| b == name)
}

/// Refuses a login because of a lockdown.
pub(super) fn refuse_in_lockdown(conn: &Conn, shared: &Shared) {
    refuse(
        conn,
        shared,
        "lockdown",
        close::LOCKDOWN,
        "incident lockdown: logins are refused",
    );
}

/// Ends every session but break-glass agents' when a lockdown begins.
pub(super) async fn end_sessions_at_lockdown(shared: Arc<Shared>) {
    let mut changes = shared.incident.subscribe();
    while changes.changed().await.is_ok() {
        if !*changes.borrow_and_update() {
            continue;
        }
        let ended: Vec<(String, Conn)> = match shared.sessions.lock() {
            Ok(s) => s
                .values()
                .filter(|(name, _, _)| !admitted(&shared, name))
                .map(|(name, _, conn)| (name.clone(), conn.clone()))
                .collect(),
            Err(_) => Vec::new(),
        };
        for (name, conn) in &ended {
            conn.close(close::LOCKDOWN, b"incident lockdown");
            info!(agent = %name, "agent session ended by the incident lockdown");
        }
        warn!(
            sessions = ended.len(),
            "incident lockdown: agent sessions ended, logins refused but break-glass agents'"
        );
    }
}

/// Writes failed logins to the audit trail once a minute, per source.
pub(super) async fn audit_failures(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(DIGEST_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let entries = match shared.digest.lock() {
            Ok(mut d) => d.take(),
            Err(_) => continue,
        };
        if let Some(audit) = &shared.audit {
            for (source, outcome) in entries {
                audit.record("agents", "agent login", &source, &outcome);
            }
        }
    }
}

impl Shared {
    pub(super) fn fail_count(&self, reason: &str) {
        self.metrics
            .agent_auth_failures
            .with_label_values(&[reason])
            .inc();
    }

    /// A failed login from `source`, for the audit digest.
    pub(super) fn note_failure(&self, source: IpAddr, reason: &'static str) {
        let first = self.digest.lock().is_ok_and(|mut d| d.note(source, reason));
        if let (true, Some(audit)) = (first, &self.audit) {
            audit.record(
                "agents",
                "agent login",
                &source.to_string(),
                &format!("failed: {reason} (more from here are summed each minute)"),
            );
        }
    }
}

/// Ends a session that failed before login.
pub(super) fn refuse(conn: &Conn, shared: &Shared, reason: &'static str, code: u32, why: &str) {
    shared.fail_count(reason);
    shared.note_failure(conn.remote_address().ip(), reason);
    conn.close(code, why.as_bytes());
}

/// Answers a login whose code was refused.
pub(super) fn login_refused(
    conn: &Conn,
    shared: &Shared,
    name: &str,
    source: IpAddr,
    why: Refused,
) {
    let (reason, code, text) = match why {
        Refused::Locked { .. } => ("locked_out", close::LOCKED_OUT, "locked out"),
        Refused::BadCode { locked_for } => {
            if let Some(secs) = locked_for {
                shared.metrics.agent_lockouts.inc();
                warn!(agent = %name, %source, lockout_s = secs, "agent locked out after repeated failed logins");
                if let Some(audit) = &shared.audit {
                    audit.record("agents", "agent locked out", name, &format!("{secs} s"));
                }
            }
            ("bad_otp", close::AUTH, "authentication failed")
        }
    };
    write_msg(
        conn,
        &ServerMsg::Error {
            code: "auth".into(),
            message: text.into(),
            call: None,
        },
    );
    refuse(conn, shared, reason, code, text);
}

/// Reports a login from a network the agent never used, or outside its
/// profile's hours: flagged, not refused (agents move, shifts overrun).
pub(super) fn unusual_login(shared: &Shared, name: &str, profile: Option<&str>, address: Address) {
    use crate::telemetry::anomaly::Kind;
    let actor = format!("agent {name}");
    if let Address::New(net) = address {
        shared.anomalies.raise(
            Kind::AgentNewAddress,
            &actor,
            &format!("login from {net}, a network it has not used before"),
            false,
        );
    }
    let config = shared.config.borrow().clone();
    if let Some(p) = profile.and_then(|p| config.profile(p)) {
        if !p.open.always() && !p.open.contains(jiff::Timestamp::now()) {
            shared.anomalies.raise(
                Kind::AgentOffHours,
                &actor,
                &format!("login outside profile {}'s hours ({})", p.name, p.open),
                false,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_logins_are_audited_once_then_summed_per_source() {
        let mut d = FailureDigest::default();
        let (a, b): (IpAddr, IpAddr) = ([192, 0, 2, 1].into(), [192, 0, 2, 2].into());
        assert!(d.note(a, "bad_otp"));
        for _ in 0..500 {
            assert!(!d.note(a, "handshake"));
        }
        assert!(!d.note(a, "bad_otp"));
        assert!(d.note(b, "unknown_ca"));
        assert_eq!(
            d.take(),
            vec![(
                "192.0.2.1".to_string(),
                "failed 501 more times: bad_otp 1, handshake 500".to_string()
            )]
        );
        // A new minute: the first failure is audited at once again.
        assert!(d.note(a, "bad_otp"));
        assert!(d.take().is_empty());
        // Bounded: sources past the limit are only summed.
        for i in 0..DIGEST_SOURCES as u32 + 10 {
            d.note(IpAddr::from(i.to_be_bytes()), "handshake");
        }
        assert_eq!(d.by_source.len(), DIGEST_SOURCES);
        assert_eq!(
            d.take().last(),
            Some(&("other sources".to_string(), "failed 10 times".to_string()))
        );
    }
}
