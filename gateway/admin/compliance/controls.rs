//! Each control the appliance enforces, the requirements it serves, and
//! how the facts mark it: pass, warn (in force but weaker than the
//! requirement asks, or not shown yet) or fail (the appliance's own
//! evidence contradicts it). A pure function of [`Facts`], so every
//! mark is tested without a gateway.
//!
//! Requirement numbers: PCI DSS v4.0 requirements; PIPL (the Personal
//! Information Protection Law of the PRC) articles; HIPAA Security Rule
//! technical safeguards, 45 CFR 164.312 paragraphs.

use serde::{Deserialize, Serialize};

use super::facts::{agent_suite_mark, source, trunk_label_encrypted, Facts};

/// How a control stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    Pass,
    Warn,
    Fail,
}

impl Mark {
    pub fn label(self) -> &'static str {
        match self {
            Mark::Pass => "pass",
            Mark::Warn => "warn",
            Mark::Fail => "fail",
        }
    }
}

/// One control, marked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Control {
    /// A stable id (`trunk-encryption`), for scripts and anchors.
    pub id: String,
    pub title: String,
    pub pci: String,
    pub pipl: String,
    pub hipaa: String,
    pub mark: Mark,
    /// What the mark rests on, from the facts.
    pub evidence: String,
}

/// The longest an agent may go without logging in before its account
/// counts as inactive (PCI DSS 8.2.6: 90 days).
pub const INACTIVE_MS: u64 = 90 * 24 * 3600 * 1000;
/// The longest a master key should be in use (a cryptoperiod of a year).
pub const CRYPTOPERIOD_MS: u64 = 365 * 24 * 3600 * 1000;
/// How recent a rehearsal must be (PCI DSS 12.10.2: every 12 months).
pub const DRILL_EVERY_MS: u64 = 365 * 24 * 3600 * 1000;

fn days(ms: u64) -> u64 {
    ms / (24 * 3600 * 1000)
}

fn counts(m: &std::collections::BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// At most 20 names, then how many more.
fn names(list: &[&str]) -> String {
    let mut s = list.iter().take(20).copied().collect::<Vec<_>>().join(", ");
    if list.len() > 20 {
        s += &format!(" and {} more", list.len() - 20);
    }
    s
}

/// Warn when `weak`, else pass.
fn warn_if(weak: bool) -> Mark {
    if weak {
        Mark::Warn
    } else {
        Mark::Pass
    }
}

/// `mark`, unless a source it rests on was not read: then at best warn.
fn resting_on(f: &Facts, sources: &[&str], mark: Mark) -> Mark {
    if sources.iter().any(|s| f.missing(s)) {
        mark.max(Mark::Warn)
    } else {
        mark
    }
}

/// Every control, marked from `f`.
pub fn evaluate(f: &Facts) -> Vec<Control> {
    let now = f.generated_ms;
    let mut out = Vec::new();
    let mut push = |id: &str, title: &str, req: [&str; 3], mark: Mark, evidence: String| {
        out.push(Control {
            id: id.into(),
            title: title.into(),
            pci: req[0].into(),
            pipl: req[1].into(),
            hipaa: req[2].into(),
            mark,
            evidence,
        })
    };

    // Agents' media and signalling.
    let p = &f.protection;
    let agent_mark = p
        .agent
        .keys()
        .map(|s| agent_suite_mark(s))
        .chain([agent_suite_mark(&p.agent_suite)])
        .chain((p.unreadable > 0).then_some(Mark::Warn))
        .max()
        .unwrap_or(Mark::Pass);
    push(
        "agent-encryption",
        "Agent audio and control encrypted (QUIC TLS 1.3, SRTP AEAD-GCM)",
        ["4.2.1", "Art. 51(3)", "164.312(e)(1), (e)(2)(ii)"],
        resting_on(f, &[source::RECORDS], agent_mark),
        format!(
            "agent legs in the last day: {}; agents are offered {}{}",
            counts(&p.agent),
            p.agent_suite,
            if p.unreadable > 0 {
                format!("; {} records could not be opened", p.unreadable)
            } else {
                String::new()
            }
        ),
    );

    // Trunks: the carrier's side.
    let clear_trunk_calls: u64 = p
        .trunk
        .iter()
        .filter(|(l, _)| !trunk_label_encrypted(l))
        .map(|(_, n)| n)
        .sum();
    let clear_trunks: Vec<&str> = p
        .trunks
        .iter()
        .filter(|t| !t.encrypted)
        .map(|t| t.name.as_str())
        .collect();
    push(
        "trunk-encryption",
        "Carrier trunks: signalling over TLS and media as SRTP",
        ["4.2.1", "Art. 51(3)", "164.312(e)(1), (e)(2)(ii)"],
        resting_on(
            f,
            &[source::RECORDS],
            warn_if(clear_trunk_calls > 0 || !clear_trunks.is_empty() || p.unreadable > 0),
        ),
        format!(
            "trunk legs in the last day: {}; trunks not requiring TLS and SRTP: {}",
            counts(&p.trunk),
            if clear_trunks.is_empty() {
                "none".to_string()
            } else {
                names(&clear_trunks)
            }
        ),
    );

    // Records at rest.
    let k = &f.keys;
    push(
        "records-at-rest",
        "Call records sealed at rest (AES-256-GCM under per-day keys wrapped by the master key)",
        ["3.5.1", "Art. 51(3)", "164.312(a)(2)(iv)"],
        if f.retention.records > 0 && k.day_keys == 0 {
            Mark::Fail
        } else {
            resting_on(f, &[source::RECORDS], Mark::Pass)
        },
        format!(
            "{} records under {} day keys sealed by master key {}",
            f.retention.records, k.day_keys, k.master_id
        ),
    );

    // Key management.
    let age = k.master_since_ms.map(|s| now.saturating_sub(s));
    push(
        "master-key",
        "Master key held outside the data and rotated within its cryptoperiod",
        ["3.6.1, 3.7.4", "Art. 51(3)", "164.312(a)(2)(iv)"],
        warn_if(k.master_dev || age.is_none_or(|a| a > CRYPTOPERIOD_MS)),
        format!(
            "key {}{}; in use {}{}",
            k.master_id,
            if k.master_dev {
                " is a development key file in the data directory"
            } else {
                ""
            },
            age.map_or("since an unknown time".into(), |a| format!(
                "for {} days",
                days(a)
            )),
            if k.master_rotated {
                " (since its last rotation)"
            } else {
                " (never rotated)"
            }
        ),
    );

    // Retention.
    let r = &f.retention;
    push(
        "retention",
        "Records kept only for the retention period, then crypto-shredded",
        [
            "3.2.1",
            "Art. 19, Art. 47",
            "n/a (disposal is 164.310(d)(2)(i))",
        ],
        resting_on(
            f,
            &[source::RECORDS],
            warn_if(r.held.is_some() || r.suspended),
        ),
        format!(
            "{} days; {} day(s) past it still held{}{}",
            r.days,
            r.due_days,
            r.held
                .as_deref()
                .map_or(String::new(), |h| format!(" ({h})")),
            if r.suspended {
                "; suspended by the incident lockdown"
            } else {
                ""
            }
        ),
    );

    // Audit trail.
    let a = &f.audit;
    push(
        "audit-trail",
        "Every privileged action in a tamper-evident audit trail (HMAC hash chain, anchored)",
        [
            "10.2.1, 10.2.1.2, 10.3.2, 10.3.4",
            "Art. 51, Art. 54",
            "164.312(b), (c)(1)",
        ],
        if !a.intact {
            Mark::Fail
        } else if !a.gaps.is_empty() || (a.entries > 0 && a.anchor.is_none()) {
            // Without its anchor, a trail cut short still verifies.
            Mark::Warn
        } else {
            Mark::Pass
        },
        format!(
            "{}{}",
            a.verdict,
            a.anchor
                .as_ref()
                .map_or("; no anchor yet".into(), |(s, h)| format!(
                    "; anchored at entry {s} ({})",
                    &h[..h.len().min(16)]
                ))
        ),
    );

    // Agents' authentication.
    let ag = &f.agents;
    let no_mfa: Vec<&str> = ag
        .list
        .iter()
        .filter(|x| x.active && !x.mfa)
        .map(|x| x.name.as_str())
        .collect();
    push(
        "agent-mfa",
        "Agents log in with two factors: a certificate from the appliance's CA and a TOTP code",
        ["8.4.2, 8.4.3", "Art. 51(4)", "164.312(d)"],
        if ag.error.is_some() || !no_mfa.is_empty() {
            Mark::Fail
        } else {
            Mark::Pass
        },
        match &ag.error {
            Some(e) => format!("the agents' registry could not be read: {e}"),
            None => format!(
                "{} active agents, {} with both factors{}",
                ag.active,
                ag.active - no_mfa.len() as u64,
                if no_mfa.is_empty() {
                    String::new()
                } else {
                    format!("; without: {}", names(&no_mfa))
                }
            ),
        },
    );

    let inactive: Vec<&str> = ag
        .list
        .iter()
        .filter(|x| {
            x.active && now.saturating_sub(x.last_login_ms.unwrap_or(x.enrolled_ms)) > INACTIVE_MS
        })
        .map(|x| x.name.as_str())
        .collect();
    push(
        "agent-inactive",
        "Agents unused for 90 days are revoked",
        ["8.2.6", "Art. 51(4)", "164.312(a)(1)"],
        resting_on(
            f,
            &[source::LOGINS],
            warn_if(!inactive.is_empty() || ag.error.is_some()),
        ),
        if inactive.is_empty() {
            format!(
                "every one of {} active agents logged in within 90 days or was enrolled since",
                ag.active
            )
        } else {
            format!(
                "{} active agent(s) unused for over 90 days: {}",
                inactive.len(),
                names(&inactive)
            )
        },
    );

    let s = &f.settings;
    push(
        "login-lockout",
        "Wrong codes lock an agent out (at most 10 tries, at least 30 minutes)",
        ["8.3.4", "Art. 51", "164.312(d)"],
        resting_on(
            f,
            &[source::LOGINS],
            warn_if(s.max_failures > 10 || s.lockout_s < 1800),
        ),
        format!(
            "locked after {} wrong codes for {} minutes (doubling on each further lockout); {} lockouts since start; locked now: {}",
            s.max_failures,
            s.lockout_s / 60,
            f.ids.agent_lockouts,
            f.ids.agents_locked.len()
        ),
    );

    // Operators.
    let holders = |role: &str| {
        f.operators
            .iter()
            .find(|h| h.role == role)
            .map(|h| h.members.clone())
            .unwrap_or_default()
    };
    let approvers = holders("approver");
    let both: Vec<String> = holders("admin")
        .into_iter()
        .filter(|m| approvers.contains(m))
        .collect();
    push(
        "least-privilege",
        "Operators hold roles by Unix group (viewer, auditor, admin, approver); numbers are masked below auditor",
        ["7.2.1, 7.2.2", "Art. 51(4)", "164.312(a)(1), (a)(2)(i)"],
        resting_on(
            f,
            &[source::GROUPS],
            warn_if(!both.is_empty()),
        ),
        format!(
            "{}{}",
            f.operators
                .iter()
                .map(|h| format!("{} ({}): {}", h.role, h.group, h.members.len()))
                .collect::<Vec<_>>()
                .join(", "),
            if both.is_empty() {
                String::new()
            } else {
                format!("; both admin and approver: {}", names(&both.iter().map(String::as_str).collect::<Vec<_>>()))
            }
        ),
    );

    let ap = &f.approvals;
    push(
        "two-person-export",
        "Data leaves (exports, erasures) only with a second person's approval, once",
        [
            "7.2.2, 10.2.1.2",
            "Art. 51(4), Art. 47",
            "164.312(a)(1), (b)",
        ],
        resting_on(f, &[source::GROUPS], warn_if(approvers.is_empty())),
        format!(
            "{} approvers; requests: {} pending, {} approved, {} run, {} refused, {} lapsed",
            approvers.len(),
            ap.pending,
            ap.approved,
            ap.used,
            ap.refused,
            ap.lapsed
        ),
    );

    let unwatched: Vec<&str> = ["auditor", "approver"]
        .into_iter()
        .filter(|r| !s.hours.iter().any(|(role, _)| role == r))
        .collect();
    push(
        "access-monitoring",
        "Off-hours and bulk access to numbers raise an alarm",
        ["10.2.1.1, 10.4.1, 10.4.1.1", "Art. 51, Art. 54", "164.312(b)"],
        resting_on(
            f,
            &[source::AUDIT_EVENTS],
            warn_if(!unwatched.is_empty()),
        ),
        format!(
            "bulk reads over {} records in {} s; working hours for {}{}; anomalies in the last 90 days: {}",
            s.bulk_read_records,
            s.bulk_read_window_s,
            if s.hours.is_empty() {
                "no role".to_string()
            } else {
                s.hours
                    .iter()
                    .map(|(r, h)| format!("{r} ({h})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            if unwatched.is_empty() {
                String::new()
            } else {
                format!(" (none for {})", unwatched.join(", "))
            },
            counts(&f.anomalies.by_kind)
        ),
    );

    // The network.
    push(
        "firewall",
        "Inbound traffic restricted by nftables; sources banned by the IDS",
        ["1.3.1, 1.4.1, 11.5.1", "Art. 51", "164.312(e)(1)"],
        resting_on(f, &[source::BANS], warn_if(!f.firewall.active)),
        format!(
            "nftables table {}; kernel drops: {}; sources banned now: {}",
            if f.firewall.active {
                "loaded"
            } else {
                "not loaded (bans enforced in the process only)"
            },
            counts(&f.firewall.dropped),
            f.ids.bans_active
        ),
    );

    let h = &f.hardening;
    push(
        "service-hardening",
        "The service runs sandboxed by systemd",
        ["2.2.1, 2.2.4", "Art. 51", "164.312(a)(1)"],
        match h.rating.as_deref() {
            Some("SAFE" | "OK") => Mark::Pass,
            Some("UNSAFE" | "EXPOSED") => Mark::Fail,
            _ => Mark::Warn,
        },
        match (h.exposure, &h.rating) {
            (Some(e), Some(r)) => format!("exposure {e:.1} {r} ({})", h.note),
            _ => h.note.clone(),
        },
    );

    // Incident response.
    let i = &f.incidents;
    let drilled = i
        .last_drill_ms
        .is_some_and(|d| now.saturating_sub(d) <= DRILL_EVERY_MS);
    push(
        "incident-response",
        "Incident lockdown ready, with break-glass access, and rehearsed (tollgate incident drill)",
        [
            "12.10.1, 12.10.2",
            "Art. 51(5), Art. 57",
            "164.312(a)(2)(ii) (break-glass; the plan itself is 164.308(a)(6))",
        ],
        resting_on(
            f,
            &[source::AUDIT_EVENTS],
            warn_if(i.active.is_some() || !drilled),
        ),
        format!(
            "{}; last drill: {}; break-glass agents: {}",
            match &i.active {
                Some((since, reason, by)) => format!(
                    "a lockdown is in force since {} ({reason}, by {by})",
                    super::when(*since)
                ),
                None => "no lockdown in force".into(),
            },
            i.last_drill_ms.map_or("never".into(), |d| format!(
                "{} days ago",
                days(now.saturating_sub(d))
            )),
            if i.break_glass.is_empty() {
                "none".into()
            } else {
                names(&i.break_glass.iter().map(String::as_str).collect::<Vec<_>>())
            }
        ),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::super::facts::*;
    use super::*;

    const DAY: u64 = 24 * 3600 * 1000;

    /// An appliance in good order.
    fn good() -> Facts {
        let now = 400 * DAY;
        let mut f = Facts {
            generated_ms: now,
            ..Facts::default()
        };
        f.protection.agent.insert("AEAD_AES_128_GCM".into(), 3);
        f.protection.agent_suite = "AEAD_AES_128_GCM".into();
        f.protection
            .trunk
            .insert("TLS + SRTP (AEAD_AES_128_GCM)".into(), 3);
        f.protection.trunks.push(TrunkPolicy {
            name: "carrier".into(),
            transport: "TLS".into(),
            srtp: "required".into(),
            encrypted: true,
        });
        f.keys.master_id = "abcd".into();
        f.keys.master_since_ms = Some(now - 30 * DAY);
        f.keys.day_keys = 3;
        f.retention.days = 30;
        f.retention.records = 3;
        f.audit.intact = true;
        f.audit.verdict = "intact: 10 entries".into();
        f.audit.entries = 10;
        f.audit.anchor = Some((9, "ab".repeat(32)));
        f.agents.active = 1;
        f.agents.list.push(AgentFact {
            name: "ann".into(),
            active: true,
            mfa: true,
            enrolled_ms: now - 100 * DAY,
            last_login_ms: Some(now - DAY),
            ..AgentFact::default()
        });
        f.settings.max_failures = 5;
        f.settings.lockout_s = 1800;
        f.settings.hours = vec![
            ("auditor".into(), "Mon-Fri 08:00-18:00 UTC".into()),
            ("approver".into(), "Mon-Fri 08:00-18:00 UTC".into()),
        ];
        for (role, members) in [("admin", vec!["bob"]), ("approver", vec!["carol"])] {
            f.operators.push(RoleHolders {
                role: role.into(),
                group: format!("tg-{role}"),
                exists: true,
                members: members.into_iter().map(String::from).collect(),
            });
        }
        f.firewall.active = true;
        f.hardening.exposure = Some(2.0);
        f.hardening.rating = Some("OK".into());
        f.incidents.last_drill_ms = Some(now - 10 * DAY);
        f
    }

    fn mark(f: &Facts, id: &str) -> Mark {
        evaluate(f)
            .into_iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no control {id}"))
            .mark
    }

    #[test]
    fn an_appliance_in_good_order_passes_everything() {
        let f = good();
        for c in evaluate(&f) {
            assert_eq!(c.mark, Mark::Pass, "{}: {}", c.id, c.evidence);
        }
    }

    #[test]
    fn each_weakness_marks_its_control() {
        let mut f = good();
        f.protection.trunk.insert("UDP, RTP in clear".into(), 1);
        assert_eq!(mark(&f, "trunk-encryption"), Mark::Warn);
        let mut f = good();
        f.protection.trunks[0].encrypted = false;
        assert_eq!(mark(&f, "trunk-encryption"), Mark::Warn);
        let mut f = good();
        f.protection.agent.insert("none".into(), 1);
        assert_eq!(mark(&f, "agent-encryption"), Mark::Fail);
        let mut f = good();
        f.protection
            .agent
            .insert("AES_CM_128_HMAC_SHA1_80".into(), 1);
        assert_eq!(mark(&f, "agent-encryption"), Mark::Warn);
        let mut f = good();
        f.protection.agent_suite = "NULL_HMAC_SHA1_80".into();
        assert_eq!(mark(&f, "agent-encryption"), Mark::Fail);
        let mut f = good();
        f.protection.unreadable = 1;
        assert_eq!(mark(&f, "agent-encryption"), Mark::Warn);
        let mut f = good();
        f.audit.anchor = None;
        assert_eq!(mark(&f, "audit-trail"), Mark::Warn);
        let mut f = good();
        f.audit.intact = false;
        assert_eq!(mark(&f, "audit-trail"), Mark::Fail);
        let mut f = good();
        f.audit.gaps.push("12 entries lost".into());
        assert_eq!(mark(&f, "audit-trail"), Mark::Warn);
        let mut f = good();
        f.keys.master_since_ms = Some(f.generated_ms - 400 * DAY);
        assert_eq!(mark(&f, "master-key"), Mark::Warn);
        let mut f = good();
        f.keys.master_dev = true;
        assert_eq!(mark(&f, "master-key"), Mark::Warn);
        let mut f = good();
        f.agents.list[0].last_login_ms = Some(f.generated_ms - 91 * DAY);
        assert_eq!(mark(&f, "agent-inactive"), Mark::Warn);
        let mut f = good();
        f.agents.list[0].mfa = false;
        assert_eq!(mark(&f, "agent-mfa"), Mark::Fail);
        let mut f = good();
        f.settings.max_failures = 11;
        assert_eq!(mark(&f, "login-lockout"), Mark::Warn);
        let mut f = good();
        f.operators[1].members.push("bob".into());
        assert_eq!(mark(&f, "least-privilege"), Mark::Warn);
        let mut f = good();
        f.operators[1].members.clear();
        assert_eq!(mark(&f, "two-person-export"), Mark::Warn);
        let mut f = good();
        f.settings.hours.pop();
        assert_eq!(mark(&f, "access-monitoring"), Mark::Warn);
        let mut f = good();
        f.firewall.active = false;
        assert_eq!(mark(&f, "firewall"), Mark::Warn);
        let mut f = good();
        f.hardening.rating = None;
        assert_eq!(mark(&f, "service-hardening"), Mark::Warn);
        f.hardening.rating = Some("EXPOSED".into());
        assert_eq!(mark(&f, "service-hardening"), Mark::Fail);
        let mut f = good();
        f.incidents.last_drill_ms = None;
        assert_eq!(mark(&f, "incident-response"), Mark::Warn);
        let mut f = good();
        f.retention.held = Some("a clock jump".into());
        assert_eq!(mark(&f, "retention"), Mark::Warn);
    }

    #[test]
    fn a_source_not_read_never_passes_what_rests_on_it() {
        for (source, controls) in [
            (source::BANS, &["firewall"][..]),
            (source::GROUPS, &["least-privilege", "two-person-export"]),
            (
                source::AUDIT_EVENTS,
                &["access-monitoring", "incident-response"],
            ),
            (source::LOGINS, &["agent-inactive", "login-lockout"]),
            (
                source::RECORDS,
                &[
                    "agent-encryption",
                    "trunk-encryption",
                    "records-at-rest",
                    "retention",
                ],
            ),
        ] {
            let mut f = good();
            f.unread.insert(source.into(), "unreadable".into());
            for c in controls {
                assert_eq!(mark(&f, c), Mark::Warn, "{c} without {source}");
            }
        }
    }

    #[test]
    fn every_control_names_a_requirement_of_each_framework() {
        for c in evaluate(&good()) {
            assert!(
                !c.pci.is_empty() && !c.pipl.is_empty() && !c.hipaa.is_empty(),
                "{}",
                c.id
            );
            assert!(
                c.hipaa.starts_with("164.312") || c.hipaa.starts_with("n/a ("),
                "{}: {}",
                c.id,
                c.hipaa
            );
        }
    }
}
