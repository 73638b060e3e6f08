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

/// Checks a signed report (HTML or JSON): its signature, that the key
/// is the appliance's (`expected`, a fingerprint), and that the facts it
/// states name that same key. Returns the report it carries.
pub fn verify(document: &[u8], expected: &str) -> Result<Report, sign::VerifyError> {
    use sign::VerifyError;
    let v = sign::verify(document)?;
    if !expected.trim().eq_ignore_ascii_case(&v.fingerprint) {
        return Err(VerifyError::OtherKey {
            found: v.fingerprint,
            expected: expected.trim().to_string(),
        });
    }
    let json = if document.first() == Some(&b'{') {
        v.signed
    } else {
        let mut parts = v.signed.split(html::DATA_OPEN);
        let (_, Some(data), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(VerifyError::Unreadable(
                "no single report-data element".into(),
            ));
        };
        data.split("</script>").next().unwrap_or("")
    };
    let report: Report =
        serde_json::from_str(json).map_err(|e| VerifyError::Unreadable(e.to_string()))?;
    if report.facts.keys.signing_key != v.public_key {
        return Err(VerifyError::Inconsistent);
    }
    Ok(report)
}

/// `text` with every run of six or more digits (any script's digits;
/// spaces, dots, dashes, slashes, underscores and brackets between them
/// allowed) withheld: a name or a reason may hold a number, a report
/// must not.
pub fn scrub(text: &str) -> String {
    let digit = |c: char| c.is_numeric();
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let starts =
            digit(chars[i]) || (chars[i] == '+' && chars.get(i + 1).is_some_and(|&c| digit(c)));
        if !starts {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // The run: digits and separators, ending on a digit.
        let (mut j, mut digits, mut end) = (i, 0, i + 1);
        while j < chars.len() {
            let c = chars[j];
            if digit(c) {
                digits += 1;
                end = j + 1;
            } else if !((c == '+' && j == i) || " .-/_()\u{a0}".contains(c)) {
                break;
            }
            j += 1;
        }
        if digits >= 6 {
            out.push_str(WITHHELD);
        } else {
            out.extend(&chars[i..end]);
        }
        i = end;
    }
    out
}

/// What stands in for withheld digits.
pub const WITHHELD: &str = "[digits withheld]";

/// Fields whose values are digests, key material or ids, not text
/// (hex and base64 have digit runs that are no number).
const NOT_TEXT: [&str; 7] = [
    "config_sha256",
    "signing_key",
    "signing_fingerprint",
    "master_id",
    "anchor",
    "id",
    "action",
];

/// Every text in `facts` scrubbed ([`scrub`]), whatever field it is in,
/// so a field added later is covered too.
fn scrubbed(facts: Facts) -> Result<Facts, String> {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) => *s = scrub(s),
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            serde_json::Value::Object(o) => {
                let fields = std::mem::take(o);
                for (k, mut v) in fields {
                    if !NOT_TEXT.contains(&k.as_str()) {
                        walk(&mut v);
                    }
                    o.insert(scrub(&k), v);
                }
            }
            _ => {}
        }
    }
    let mut v = serde_json::to_value(&facts).map_err(|e| e.to_string())?;
    walk(&mut v);
    serde_json::from_value(v)
        .map_err(|e| format!("the report's facts did not survive scrubbing ({e})"))
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

/// Everything the report states, from the running appliance, scrubbed
/// of numbers. File work runs on a blocking thread. A source that cannot
/// be read is named in [`Facts::unread`] (its controls are not passed);
/// a report that cannot be gathered at all is an error, never a report
/// of defaults.
pub async fn gather(admin: &super::control::Admin) -> Result<Facts, String> {
    use facts::source;
    // The trail first: its writer stamps an entry when it writes it, so
    // entries recorded before this request carry times up to now.
    admin.audit.synced().await;
    let now = crate::now_ms();
    let config = admin.config.borrow().clone();
    let mut f = Facts {
        generated_ms: now,
        ..Facts::default()
    };

    let (config_source, digest) = facts::config_digest(admin.config_source.as_ref());
    f.appliance = facts::Appliance {
        version: env!("CARGO_PKG_VERSION").into(),
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
        config_source,
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
        Ok(()) => rx.await.ok(),
        Err(_) => None,
    };
    if bans.is_none() {
        f.unread
            .insert(source::BANS.into(), "the call core did not answer".into());
    }
    let bans = bans.unwrap_or_default();
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
        .map(|l| (l.since_ms, l.reason.clone(), l.by.clone()));
    f.incidents.break_glass = config.break_glass.clone();

    let signer = sign::Signer::new(&admin.audit_key);
    f.keys.signing_key = signer.public_key();
    f.keys.signing_fingerprint = signer.fingerprint();
    f.keys.master_id = admin.master.current().id().to_string();
    f.keys.master_dev = admin.dev_key.is_some();
    f.approvals = facts::approvals(&admin.approvals.list(now));
    match std::fs::read_to_string("/etc/group") {
        Ok(group) => {
            f.operators = facts::role_holders(
                &config.role_groups,
                &group,
                &std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
            )
        }
        Err(e) => {
            f.unread
                .insert(source::GROUPS.into(), format!("/etc/group: {e}"));
        }
    }
    f.protection.window_ms = facts::PROTECTION_WINDOW_MS;
    f.protection.trunks = facts::trunk_policies(&config);
    f.protection.agent_suite = config.agents.suite.sdes_name().into();
    f.retention.days = config.retention_days;
    f.retention.suspended = incident.is_some();

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
    let gathered = tokio::task::spawn_blocking(move || {
        let mut f = f;
        // The audit trail: verified whole, then its events.
        match crate::telemetry::audit::verify(&trail, &key) {
            Ok(crate::telemetry::audit::Verdict::Intact { entries, gaps }) => {
                f.audit.intact = true;
                f.audit.entries = entries;
                f.audit.verdict = format!("intact: {entries} entries");
                f.audit.gaps = gaps.into_iter().take(facts::MAX_ROWS).collect();
            }
            Ok(crate::telemetry::audit::Verdict::Broken { line, why }) => {
                f.audit.verdict = format!("broken at line {line}: {why}");
            }
            Err(e) => f.audit.verdict = format!("could not be read: {e}"),
        }
        f.audit.anchor = facts::anchor(&trail);
        f.audit.since_ms = crate::telemetry::audit::first_time(&trail);
        match crate::telemetry::audit::list(
            &trail,
            now.saturating_sub(facts::DRILL_WINDOW_MS),
            now + 1,
        ) {
            Ok(recent) => {
                let (anomalies, incidents, drill) =
                    facts::events(&recent, now.saturating_sub(facts::EVENTS_WINDOW_MS));
                f.anomalies = anomalies;
                f.incidents.events = incidents;
                f.incidents.last_drill_ms = drill;
            }
            Err(e) => {
                f.unread.insert(source::AUDIT_EVENTS.into(), e.to_string());
            }
        }

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
            f.unread.insert(
                source::RECORDS.into(),
                "the record store is not open (see the gateway's log)".into(),
            );
        }

        // Agents: the registry and their login state.
        let agents = crate::agent::store::Store::new(&data_dir);
        let seen =
            crate::agent::guard::seen(&agents.dir().join(crate::agent::guard::FILE), now / 1000)
                .unwrap_or_else(|e| {
                    f.unread.insert(source::LOGINS.into(), e);
                    Default::default()
                });
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
                        last_login_ms: s.last_login_s.map(|s| s.saturating_mul(1000)),
                        name: a.name,
                    });
                }
            }
            Err(e) => f.agents.error = Some(e.to_string()),
        }
        f.hardening = facts::hardening();
        f
    })
    .await
    .map_err(|e| format!("the report could not be gathered: {e}"))?;
    scrubbed(gathered)
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
        assert_eq!(scrub("138/0013/8000"), "[digits withheld]");
        assert_eq!(
            scrub("\u{ff11}\u{ff13}\u{ff18}\u{ff10}\u{ff10}\u{ff11}\u{ff13}"),
            WITHHELD
        );
        assert_eq!(scrub("a+b 12"), "a+b 12");
    }

    #[test]
    fn every_text_field_is_scrubbed_but_digests_and_ids() {
        let mut f = Facts::default();
        f.agents.list.push(facts::AgentFact {
            name: "13800138000".into(),
            ..facts::AgentFact::default()
        });
        f.incidents.break_glass = vec!["+8613800138000".into()];
        f.anomalies.recent.push(facts::Event {
            actor: "agent 13800138000".into(),
            ..facts::Event::default()
        });
        f.appliance.config_sha256 = "0123456789".repeat(6);
        f.keys.master_id = "98d7acf27f5dc530".into();
        let s = scrubbed(f.clone()).expect("scrubbed");
        assert_eq!(s.agents.list[0].name, WITHHELD);
        assert_eq!(s.incidents.break_glass[0], WITHHELD);
        assert_eq!(s.anomalies.recent[0].actor, format!("agent {WITHHELD}"));
        assert_eq!(s.appliance.config_sha256, f.appliance.config_sha256);
        assert_eq!(s.keys.master_id, f.keys.master_id);
        assert!(!serde_json::to_string(&s)
            .expect("json")
            .contains("13800138000"));
    }

    fn signed(audit_key: &[u8; 32], json: bool) -> (String, sign::Signer) {
        let signer = sign::Signer::new(audit_key);
        let mut f = Facts::default();
        f.keys.signing_key = signer.public_key();
        (render(&Report::new(f), &signer, json).document, signer)
    }

    #[test]
    fn only_the_appliances_key_verifies() {
        for json in [false, true] {
            let (doc, appliance) = signed(&[1; 32], json);
            let report = verify(doc.as_bytes(), &appliance.fingerprint()).expect("verifies");
            assert_eq!(report.facts.keys.signing_key, appliance.public_key());
            // An insider's own key signs a page of their making: it
            // verifies only against their key, never the appliance's.
            let (forged, insider) = signed(&[2; 32], json);
            assert_eq!(
                verify(forged.as_bytes(), &appliance.fingerprint()).map(|_| ()),
                Err(sign::VerifyError::OtherKey {
                    found: insider.fingerprint(),
                    expected: appliance.fingerprint()
                })
            );
            // Facts naming the appliance's key, signed by another.
            let mut f = Facts::default();
            f.keys.signing_key = appliance.public_key();
            let odd = render(&Report::new(f), &insider, json).document;
            assert_eq!(
                verify(odd.as_bytes(), &insider.fingerprint()).map(|_| ()),
                Err(sign::VerifyError::Inconsistent)
            );
        }
    }
}
