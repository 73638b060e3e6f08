//! `tollgate compliance report`: what an assessor checks, built from the
//! running appliance and signed by it. The daemon gathers the facts
//! ([`facts`]) from the parts that own them, marks each control against
//! the requirements it serves ([`controls`]), renders one
//! self-contained HTML page with inline SVG charts or a JSON document
//! ([`html`]), and signs it ([`sign`]); `tollgate compliance verify`
//! checks the signature offline. The report's SHA-256 and the signing
//! key's fingerprint go into the audit trail, so a report shown later
//! can be matched to the request that made it.
//!
//! No phone number is in a report: records are counted, never listed;
//! operators' free text (reasons) has digit runs withheld.

pub mod controls;
pub mod facts;
mod html;
pub mod sign;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use controls::{Control, Mark};
use facts::Facts;

/// A report: the facts and the controls marked from them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub format: String,
    pub facts: Facts,
    pub controls: Vec<Control>,
}

/// The HTML page's sections, by element id, in order.
pub const SECTIONS: [&str; 14] = [
    "appliance",
    "controls",
    "protection",
    "hardening",
    "firewall",
    "audit",
    "keys",
    "retention",
    "agents",
    "operators",
    "approvals",
    "anomalies",
    "incidents",
    "signature",
];

/// The report's format tag.
pub const FORMAT: &str = "tollgate-compliance-report-v1";

impl Report {
    pub fn new(facts: Facts) -> Self {
        let controls = controls::evaluate(&facts);
        Self {
            format: FORMAT.into(),
            facts,
            controls,
        }
    }

    /// Controls by mark: pass, warn, fail.
    pub fn tally(&self) -> (usize, usize, usize) {
        let n = |m| self.controls.iter().filter(|c| c.mark == m).count();
        (n(Mark::Pass), n(Mark::Warn), n(Mark::Fail))
    }
}

/// What the admin socket returns for a report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct Rendered {
    /// The signed document, HTML or JSON.
    pub document: String,
    /// SHA-256 (hex) of `document`.
    pub sha256: String,
    /// The signing key's fingerprint.
    pub key: String,
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
}

/// Renders and signs `report`.
pub fn render(report: &Report, signer: &sign::Signer, json: bool) -> Rendered {
    let document = if json {
        let body = serde_json::to_string(report).unwrap_or_default();
        signer.sign_json(&body)
    } else {
        signer.sign_html(html::page(report, signer))
    };
    let (pass, warn, fail) = report.tally();
    Rendered {
        sha256: hex::encode(Sha256::digest(document.as_bytes())),
        key: signer.fingerprint(),
        document,
        pass,
        warn,
        fail,
    }
}

/// `text` with every run of six or more digits (spaces, dots, dashes and
/// brackets between them allowed) withheld: operators' reasons may quote
/// a number, a report must not.
pub fn scrub(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit()
            || (chars[i] == '+' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // The run: digits and separators, ending on a digit.
            let mut j = i;
            let mut digits = 0;
            let mut end = i;
            while j < chars.len() {
                let c = chars[j];
                if c.is_ascii_digit() {
                    digits += 1;
                    end = j + 1;
                } else if !(c == '+' && j == i || " .-()".contains(c)) {
                    break;
                }
                j += 1;
            }
            if digits >= 6 {
                out.push_str("[digits withheld]");
            } else {
                out.extend(&chars[i..end.max(i + 1)]);
            }
            i = end.max(i + 1);
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// A Unix-ms time as an assessor reads it: UTC to the minute.
pub fn when(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(i64::MAX)).map_or_else(
        |_| format!("{ms} ms"),
        |t| t.strftime("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

/// Label values joined by `/` to the counter's value, for a counter vec
/// (zeros left out).
fn by_labels(v: &prometheus::IntCounterVec) -> BTreeMap<String, u64> {
    use prometheus::core::Collector;
    let mut out = BTreeMap::new();
    for family in v.collect() {
        for m in family.get_metric() {
            let key = m
                .get_label()
                .iter()
                .map(|l| l.value())
                .collect::<Vec<_>>()
                .join("/");
            let value = m.get_counter().get_value() as u64;
            if value > 0 {
                out.insert(key, value);
            }
        }
    }
    out
}

/// Everything the report states, from the running appliance. File work
/// runs on a blocking thread.
pub async fn gather(admin: &super::control::Admin) -> Facts {
    let now = crate::now_ms();
    let config = admin.config.borrow().clone();
    let mut f = Facts {
        generated_ms: now,
        ..Facts::default()
    };

    let (source, digest) = facts::config_digest(admin.config_source.as_ref());
    f.appliance = facts::Appliance {
        version: env!("CARGO_PKG_VERSION").into(),
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
        config_source: source,
        config_sha256: digest,
        restart_pending: admin.metrics.config_restart_pending.get() != 0,
    };

    f.settings = facts::Settings {
        max_failures: config.agents.max_failures,
        lockout_s: config.agents.lockout.as_secs(),
        hours: config
            .oversight
            .hours
            .iter()
            .map(|(r, h)| (r.clone(), h.to_string()))
            .collect(),
        refuse_off_hours: config.oversight.refuse_off_hours,
        bulk_read_records: config.oversight.bulk_read_records,
        bulk_read_window_s: config.oversight.bulk_read_window.as_secs(),
        approval_window_s: config.approval_window.as_secs(),
    };

    // The bans the guard holds now, from the call core.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let bans = match admin
        .core
        .send(crate::calls::core::GuardRequest::Bans(tx))
        .await
    {
        Ok(()) => rx.await.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let m = &admin.metrics;
    f.firewall = facts::Firewall {
        active: m.firewall_active.get() == 1,
        dropped: by_labels(&m.firewall_dropped_packets),
    };
    f.ids = facts::Ids {
        bans_active: bans.len() as u64,
        bans: bans
            .iter()
            .take(facts::MAX_ROWS)
            .map(|b| (b.source.to_string(), b.reason.clone()))
            .collect(),
        verdicts: by_labels(&m.ids_verdicts),
        agent_lockouts: m.agent_lockouts.get(),
        agents_locked: Vec::new(),
    };

    let incident = admin.incident.current();
    f.incidents.active = incident
        .as_ref()
        .map(|l| (l.since_ms, scrub(&l.reason), l.by.clone()));
    f.incidents.break_glass = config.break_glass.clone();

    let signer = sign::Signer::new(&admin.audit_key);
    f.keys.signing_key = signer.public_key();
    f.keys.signing_fingerprint = signer.fingerprint();
    f.keys.master_id = admin.master.current().id().to_string();
    f.keys.master_dev = admin.dev_key.is_some();
    f.approvals = facts::approvals(&admin.approvals.list(now));
    f.operators = facts::role_holders(
        &config.role_groups,
        &std::fs::read_to_string("/etc/group").unwrap_or_default(),
        &std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
    );
    f.protection.window_ms = facts::PROTECTION_WINDOW_MS;
    f.protection.trunks = facts::trunk_policies(&config);
    f.protection.agent_suite = config.agents.suite.sdes_name().into();
    f.retention.days = config.retention_days;
    f.retention.suspended = incident.is_some();

    admin.audit.synced().await;
    let trail = admin.audit.path().to_path_buf();
    let key = admin.audit_key.clone();
    let store = admin.store.clone();
    let data_dir = admin.data_dir.clone();
    let transports: Vec<(String, crate::config::Transport)> = config
        .trunks
        .iter()
        .map(|t| (t.name.clone(), t.transport))
        .collect();
    let retention_days = config.retention_days;
    let files = tokio::task::spawn_blocking(move || {
        let mut f = f;
        // The audit trail: verified whole, then its recent events.
        match crate::telemetry::audit::verify(&trail, &key) {
            Ok(crate::telemetry::audit::Verdict::Intact { entries, gaps }) => {
                f.audit.intact = true;
                f.audit.entries = entries;
                f.audit.verdict = format!("intact: {entries} entries");
                f.audit.gaps = gaps;
            }
            Ok(crate::telemetry::audit::Verdict::Broken { line, why }) => {
                f.audit.verdict = format!("broken at line {line}: {why}");
            }
            Err(e) => f.audit.verdict = format!("could not be read: {e}"),
        }
        f.audit.anchor = facts::anchor(&trail);
        f.audit.since_ms = facts::trail_began(&trail);
        let recent = crate::telemetry::audit::list(
            &trail,
            now.saturating_sub(facts::EVENTS_WINDOW_MS),
            now + 1,
        )
        .unwrap_or_default();
        let (anomalies, incidents, drill) = facts::events(&recent);
        f.anomalies = anomalies;
        f.incidents.events = incidents;
        f.incidents.last_drill_ms = drill;

        // The record store: keys, retention, and protection per leg.
        if let Some(store) = store {
            let k = store.key_state();
            f.keys.day_keys = k.days as u64;
            f.keys.oldest_day = k.oldest_day;
            f.keys.newest_day = k.newest_day;
            f.keys.master_rotated = k.rotated_ms.is_some();
            f.keys.master_since_ms = k.rotated_ms.or(f.audit.since_ms);
            let (due, held) = store.retention_plan(retention_days, now);
            f.retention.due_days = due.len() as u64;
            f.retention.held = held.map(|h| h.to_string());
            f.retention.records = store.len() as u64;
            let transport_of =
                |name: &str| transports.iter().find(|(n, _)| n == name).map(|(_, t)| *t);
            for r in store.range(now.saturating_sub(facts::PROTECTION_WINDOW_MS), now + 1) {
                match r {
                    Ok((_, record)) => {
                        facts::count_record(&mut f.protection, &record, transport_of)
                    }
                    Err(_) => f.protection.unreadable += 1,
                }
            }
        } else {
            f.keys.master_since_ms = f.audit.since_ms;
            f.retention.held = Some("the record store is not open".into());
        }

        // Agents: the registry and their login state.
        let agents = crate::agent::store::Store::new(&data_dir);
        let seen = crate::agent::guard::seen(&agents.dir().join("logins.json"), now / 1000);
        match agents.load() {
            Ok(list) => {
                for a in list {
                    let s = seen.get(&a.name).cloned().unwrap_or_default();
                    if s.locked {
                        f.ids.agents_locked.push(a.name.clone());
                    }
                    f.agents.enrolled += 1;
                    if a.active() {
                        f.agents.active += 1;
                    } else {
                        f.agents.revoked += 1;
                    }
                    f.agents.list.push(facts::AgentFact {
                        active: a.active(),
                        mfa: !a.totp.is_empty() && !a.fingerprint.is_empty(),
                        profile: a.profile.clone().unwrap_or_default(),
                        enrolled_ms: a.enrolled.saturating_mul(1000),
                        last_login_ms: s.last_login_s.map(|s| s * 1000),
                        name: a.name,
                    });
                }
            }
            Err(e) => f.agents.error = Some(e.to_string()),
        }
        f.hardening = facts::hardening();
        f
    });
    match files.await {
        Ok(f) => f,
        Err(e) => {
            let mut f = Facts {
                generated_ms: now,
                ..Facts::default()
            };
            f.audit.verdict = format!("the report could not be gathered: {e}");
            f
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_free_text_are_withheld() {
        assert_eq!(
            scrub("customer +44 1632 960123 asked"),
            "customer [digits withheld] asked"
        );
        assert_eq!(scrub("ticket 4711, room 12"), "ticket 4711, room 12");
        assert_eq!(scrub("call 0800-123-456 now"), "call [digits withheld] now");
        assert_eq!(scrub("(555) 0100 1234"), "([digits withheld]");
        assert_eq!(scrub("2026-12-05"), "[digits withheld]");
        assert_eq!(scrub("a+b 12"), "a+b 12");
    }
}
