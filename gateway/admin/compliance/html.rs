//! The report as one self-contained HTML page: inline CSS, inline SVG
//! charts, no script that runs and nothing fetched (an assessor opens it
//! offline). The facts ride along as JSON in a
//! `<script type="application/json">` element for tools. Every text from
//! the appliance is escaped.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::controls::Mark;
use super::facts::Facts;
use super::sign::Signer;
use super::{when, Report};

const DAY_MS: u64 = 24 * 3600 * 1000;
/// What opens the element that carries the report's data.
pub const DATA_OPEN: &str = "<script type=\"application/json\" id=\"report-data\">";
/// Days the anomalies chart spans.
const CHART_DAYS: u64 = 30;

const STYLE: &str = "
body{font:14px/1.45 'DejaVu Sans',system-ui,sans-serif;color:#1d2430;margin:0;background:#f4f6f9}
main{max-width:1100px;margin:0 auto;padding:24px}
header{background:#1d2f4f;color:#fff;padding:20px 24px}
header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;opacity:.85}
section{background:#fff;border:1px solid #d8dde6;border-radius:6px;margin:16px 0;padding:12px 18px}
h2{font-size:17px;margin:4px 0 10px}
table{border-collapse:collapse;width:100%;margin:6px 0}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e4e8ee;vertical-align:top}
th{background:#f0f3f7;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.mark{display:inline-block;min-width:40px;text-align:center;border-radius:3px;padding:1px 6px;font-weight:700;text-transform:uppercase;font-size:12px}
.pass{background:#d9f2df;color:#17602b}
.warn{background:#fff1c2;color:#7a5600}
.fail{background:#fbd5d5;color:#8e1b1b}
.tally{margin-top:10px}
.tally .mark{font-size:14px;padding:3px 10px;margin-right:6px}
code{font-family:'DejaVu Sans Mono',monospace;font-size:12px;word-break:break-all}
.muted{color:#5d6877}
svg text{font:12px 'DejaVu Sans',sans-serif;fill:#1d2430}
";

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn mark(m: Mark) -> String {
    format!("<span class=\"mark {0}\">{0}</span>", m.label())
}

fn row(cells: &[String]) -> String {
    let mut s = String::from("<tr>");
    for c in cells {
        let _ = write!(s, "<td>{c}</td>");
    }
    s.push_str("</tr>");
    s
}

fn table(head: &[&str], rows: &[String], empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"muted\">{}</p>", esc(empty));
    }
    let mut s = String::from("<table><thead><tr>");
    for h in head {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr></thead><tbody>");
    for r in rows {
        s.push_str(r);
    }
    s.push_str("</tbody></table>");
    s
}

/// A two-column table of names and values.
fn pairs(items: &[(&str, String)]) -> String {
    let rows: Vec<String> = items
        .iter()
        .map(|(k, v)| format!("<tr><th scope=\"row\">{}</th><td>{v}</td></tr>", esc(k)))
        .collect();
    format!("<table>{}</table>", rows.join(""))
}

/// Horizontal bars, one per item: label, count, colour class.
fn bars(title: &str, items: &[(String, u64, &str)]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let max = items.iter().map(|i| i.1).max().unwrap_or(1).max(1);
    let (label_w, bar_w, row_h) = (280u64, 360u64, 26u64);
    let height = row_h * items.len() as u64 + 8;
    let mut s = format!(
        "<svg role=\"img\" aria-label=\"{}\" width=\"{}\" height=\"{height}\" viewBox=\"0 0 {} {height}\">",
        esc(title),
        label_w + bar_w + 70,
        label_w + bar_w + 70
    );
    for (i, (label, n, class)) in items.iter().enumerate() {
        let y = 4 + row_h * i as u64;
        let w = (bar_w * n / max).max(2);
        let fill = match *class {
            "pass" => "#3c9a55",
            "warn" => "#d9a400",
            "fail" => "#c23b3b",
            _ => "#4a6fa5",
        };
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><rect x=\"{label_w}\" y=\"{y}\" width=\"{w}\" height=\"{}\" fill=\"{fill}\"/><text x=\"{}\" y=\"{}\">{n}</text>",
            label_w - 8,
            y + 16,
            esc(label),
            row_h - 8,
            label_w + w + 6,
            y + 16
        );
    }
    s.push_str("</svg>");
    s
}

/// Anomalies per day over the last [`CHART_DAYS`] days, as columns.
fn timeline(by_day: &BTreeMap<u64, u64>, now: u64) -> String {
    let today = now / DAY_MS;
    let first = (today + 1).saturating_sub(CHART_DAYS);
    let per_day: Vec<u64> = (first..first + CHART_DAYS)
        .map(|d| by_day.get(&d).copied().unwrap_or(0))
        .collect();
    let max = per_day.iter().copied().max().unwrap_or(0).max(1);
    let (col, h, base) = (20u64, 120u64, 140u64);
    let width = col * CHART_DAYS + 40;
    let mut s = format!(
        "<svg role=\"img\" aria-label=\"anomalies per day, last {CHART_DAYS} days\" width=\"{width}\" height=\"170\" viewBox=\"0 0 {width} 170\"><line x1=\"30\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#8a94a3\"/><text x=\"0\" y=\"{}\">{max}</text><text x=\"0\" y=\"{base}\">0</text>",
        width - 4,
        base - h + 4
    );
    for (i, n) in per_day.iter().enumerate() {
        let x = 32 + col * i as u64;
        if *n > 0 {
            let bh = (h * n / max).max(2);
            let _ = write!(
                s,
                "<rect x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{bh}\" fill=\"#c23b3b\"><title>{n}</title></rect>",
                base - bh,
                col - 4
            );
        }
        if i % 7 == 0 || i as u64 == CHART_DAYS - 1 {
            let label = when((first + i as u64) * DAY_MS);
            let _ = write!(
                s,
                "<text x=\"{x}\" y=\"{}\">{}</text>",
                base + 16,
                esc(label.get(5..10).unwrap_or(""))
            );
        }
    }
    s.push_str("</svg>");
    s
}

fn opt_when(ms: Option<u64>) -> String {
    ms.map_or("never".into(), when)
}

fn section(id: &str, title: &str, body: &str) -> String {
    format!(
        "<section id=\"{id}\"><h2>{}</h2>{body}</section>\n",
        esc(title)
    )
}

fn counts_table(head: &[&str], m: &BTreeMap<String, u64>, empty: &str) -> String {
    let rows: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("<tr><td>{}</td><td class=\"num\">{v}</td></tr>", esc(k)))
        .collect();
    table(head, &rows, empty)
}

/// The page, unsigned (the signer adds its last line).
pub fn page(report: &Report, signer: &Signer) -> String {
    let f: &Facts = &report.facts;
    let (pass, warn, fail) = report.tally();
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n{}\n<title>Tollgate compliance report: {} at {}</title>\n<style>{STYLE}</style></head>\n<body>\n<header><h1>Tollgate compliance report</h1><p>{} &middot; Tollgate {} &middot; generated {}</p>\n<div class=\"tally\" id=\"tally\" data-pass=\"{pass}\" data-warn=\"{warn}\" data-fail=\"{fail}\"><span class=\"mark pass\">{pass} pass</span><span class=\"mark warn\">{warn} warn</span><span class=\"mark fail\">{fail} fail</span></div></header>\n<main>\n",
        signer.key_meta(),
        esc(&f.appliance.hostname),
        esc(&when(f.generated_ms)),
        esc(&f.appliance.hostname),
        esc(&f.appliance.version),
        esc(&when(f.generated_ms)),
    );

    let a = &f.appliance;
    out += &section(
        "appliance",
        "Appliance",
        &pairs(&[
            ("Host", esc(&a.hostname)),
            ("Version", esc(&a.version)),
            ("Configuration", esc(&a.config_source)),
            (
                "Configuration SHA-256",
                format!("<code>{}</code>", esc(&a.config_sha256)),
            ),
            (
                "Sources not read",
                if f.unread.is_empty() {
                    "none: every source below was read".into()
                } else {
                    format!(
                        "{} {}",
                        mark(Mark::Warn),
                        esc(&f
                            .unread
                            .iter()
                            .map(|(k, v)| format!("{k} ({v})"))
                            .collect::<Vec<_>>()
                            .join("; "))
                    )
                },
            ),
            (
                "Restart pending",
                if a.restart_pending {
                    "yes: the file on disk differs from what runs".into()
                } else {
                    "no: what runs is what the file says".into()
                },
            ),
        ]),
    );

    // Controls.
    let rows: Vec<String> = report
        .controls
        .iter()
        .map(|c| {
            format!(
                "<tr id=\"control-{}\" data-mark=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.id),
                c.mark.label(),
                esc(&c.title),
                esc(&c.pci),
                esc(&c.pipl),
                esc(&c.hipaa),
                mark(c.mark),
                esc(&c.evidence)
            )
        })
        .collect();
    out += &section(
        "controls",
        "Controls and the requirements they serve",
        &format!(
            "{}<p class=\"muted\">PCI DSS v4.0 requirement numbers; PIPL articles; HIPAA Security Rule, 45 CFR 164.312. Pass: in force and shown by the appliance's own state. Warn: in force but weaker than the requirement, or not shown yet. Fail: the state contradicts it.</p>",
            table(
                &["Control", "PCI DSS 4.0", "PIPL", "HIPAA 164.312", "Mark", "Evidence"],
                &rows,
                "no controls",
            )
        ),
    );

    // Protection per leg.
    let p = &f.protection;
    let mut items: Vec<(String, u64, &str)> = p
        .trunk
        .iter()
        .map(|(k, v)| {
            let class = if super::facts::trunk_label_encrypted(k) {
                "pass"
            } else {
                "warn"
            };
            (format!("trunk: {k}"), *v, class)
        })
        .collect();
    items.extend(p.agent.iter().map(|(k, v)| {
        let class = if k.starts_with("AEAD_") {
            "pass"
        } else {
            "fail"
        };
        (format!("agent: {k}"), *v, class)
    }));
    let trunks: Vec<String> = p
        .trunks
        .iter()
        .map(|t| {
            row(&[
                esc(&t.name),
                esc(&t.transport),
                esc(&t.srtp),
                mark(if t.encrypted { Mark::Pass } else { Mark::Warn }),
            ])
        })
        .collect();
    out += &section(
        "protection",
        "Protection per leg (last 24 hours)",
        &format!(
            "<p>Calls started in the last day: {}{}.</p>{}{}<h3>Trunks as configured</h3>{}<p>Agents are offered <code>{}</code> inside QUIC (TLS 1.3). A trunk leg's transport is its trunk's as configured now.</p>",
            p.calls,
            if p.unreadable > 0 {
                format!(" ({} records could not be opened)", p.unreadable)
            } else {
                String::new()
            },
            bars("calls by protection", &items),
            counts_table(&["Leg protection", "Calls"], &{
                let mut m = BTreeMap::new();
                for (k, v, _) in &items {
                    m.insert(k.clone(), *v);
                }
                m
            }, "no calls in the last day"),
            table(&["Trunk", "Transport", "SRTP", "Encrypted"], &trunks, "no trunks"),
            esc(&p.agent_suite)
        ),
    );

    let h = &f.hardening;
    out += &section(
        "hardening",
        "Service hardening",
        &pairs(&[
            ("Unit", esc(h.unit.as_deref().unwrap_or("none"))),
            (
                "systemd-analyze security",
                match (h.exposure, &h.rating) {
                    (Some(e), Some(r)) => format!("{e:.1} {}", esc(r)),
                    _ => "not measured".into(),
                },
            ),
            ("Note", esc(&h.note)),
        ]),
    );

    let fw = &f.firewall;
    let bans: Vec<String> = f
        .ids
        .bans
        .iter()
        .map(|(a, why)| row(&[esc(a), esc(why)]))
        .collect();
    out += &section(
        "firewall",
        "Firewall and intrusion detection",
        &format!(
            "{}<h3>Kernel drops by rule</h3>{}<h3>Banned now</h3>{}<h3>IDS verdicts since start</h3>{}",
            pairs(&[
                (
                    "nftables table",
                    if fw.active {
                        "loaded".into()
                    } else {
                        "not loaded: bans are enforced in the process only".into()
                    },
                ),
                ("Sources banned now", f.ids.bans_active.to_string()),
                ("Agent lockouts since start", f.ids.agent_lockouts.to_string()),
                (
                    "Agents locked out now",
                    esc(&if f.ids.agents_locked.is_empty() {
                        "none".to_string()
                    } else {
                        f.ids.agents_locked.join(", ")
                    }),
                ),
            ]),
            counts_table(&["Rule", "Packets"], &fw.dropped, "no packets dropped by the kernel"),
            table(&["Source", "Why"], &bans, "no source is banned"),
            counts_table(&["Verdict / reason", "Count"], &f.ids.verdicts, "no verdicts yet"),
        ),
    );

    let au = &f.audit;
    out += &section(
        "audit",
        "Audit trail",
        &pairs(&[
            (
                "Verification",
                format!(
                    "{} {}",
                    mark(if !au.intact {
                        Mark::Fail
                    } else if au.gaps.is_empty() {
                        Mark::Pass
                    } else {
                        Mark::Warn
                    }),
                    esc(&au.verdict)
                ),
            ),
            ("Entries", au.entries.to_string()),
            (
                "Recorded gaps",
                esc(&if au.gaps.is_empty() {
                    "none".to_string()
                } else {
                    au.gaps.join("; ")
                }),
            ),
            (
                "Anchor",
                au.anchor.as_ref().map_or("none yet".into(), |(s, h)| {
                    format!("entry {s}, SHA-256 <code>{}</code>", esc(h))
                }),
            ),
            ("Began", opt_when(au.since_ms)),
        ]),
    );

    let k = &f.keys;
    let day = |d: Option<u32>| {
        d.map_or("none".into(), |d| {
            when(u64::from(d) * DAY_MS)[..10].to_string()
        })
    };
    out += &section(
        "keys",
        "Keys",
        &pairs(&[
            (
                "Master key",
                format!(
                    "id <code>{}</code>{}",
                    esc(&k.master_id),
                    if k.master_dev {
                        " (development key file)"
                    } else {
                        ""
                    }
                ),
            ),
            ("Master key in use since", opt_when(k.master_since_ms)),
            (
                "Last rotation",
                if k.master_rotated {
                    opt_when(k.master_since_ms)
                } else {
                    "never".into()
                },
            ),
            (
                "Day keys",
                format!(
                    "{} (oldest {}, newest {})",
                    k.day_keys,
                    day(k.oldest_day),
                    day(k.newest_day)
                ),
            ),
            (
                "Report signing key",
                format!("<code>ed25519:{}</code>", esc(&k.signing_key)),
            ),
            (
                "Its fingerprint",
                format!("<code>{}</code>", esc(&k.signing_fingerprint)),
            ),
        ]),
    );

    let r = &f.retention;
    out += &section(
        "retention",
        "Retention",
        &pairs(&[
            ("Records kept for", format!("{} days", r.days)),
            ("Records held", r.records.to_string()),
            ("Days past retention still held", r.due_days.to_string()),
            ("Held because", esc(r.held.as_deref().unwrap_or("not held"))),
            (
                "Suspended by an incident",
                if r.suspended {
                    "yes".into()
                } else {
                    "no".into()
                },
            ),
        ]),
    );

    let ag = &f.agents;
    let rows: Vec<String> = ag
        .list
        .iter()
        .take(super::facts::MAX_ROWS)
        .map(|x| {
            row(&[
                esc(&x.name),
                esc(if x.profile.is_empty() {
                    "(none)"
                } else {
                    &x.profile
                }),
                if x.active {
                    "active".into()
                } else {
                    "revoked".into()
                },
                if x.mfa {
                    "certificate + TOTP".into()
                } else {
                    mark(Mark::Fail)
                },
                when(x.enrolled_ms),
                opt_when(x.last_login_ms),
            ])
        })
        .collect();
    out += &section(
        "agents",
        "Enrolled agents",
        &format!(
            "<p>{} enrolled: {} active, {} revoked.{}</p>{}",
            ag.enrolled,
            ag.active,
            ag.revoked,
            ag.error.as_deref().map_or(String::new(), |e| format!(
                " The registry could not be read: {}",
                esc(e)
            )),
            table(
                &[
                    "Agent",
                    "Profile",
                    "State",
                    "Factors",
                    "Enrolled",
                    "Last login"
                ],
                &rows,
                "no agents enrolled"
            )
        ),
    );

    let rows: Vec<String> = f
        .operators
        .iter()
        .map(|h| {
            row(&[
                esc(&h.role),
                format!(
                    "{}{}",
                    esc(&h.group),
                    if h.exists { "" } else { " (no such group)" }
                ),
                esc(&if h.members.is_empty() {
                    "nobody".to_string()
                } else {
                    h.members.join(", ")
                }),
            ])
        })
        .collect();
    out += &section(
        "operators",
        "Operators by role",
        &format!(
            "{}<p class=\"muted\">Root and the service's own user hold viewer, auditor and admin besides; approver only by the group.</p>",
            table(&["Role", "Unix group", "Members"], &rows, "no roles")
        ),
    );

    let ap = &f.approvals;
    let rows: Vec<String> = ap
        .list
        .iter()
        .map(|x| {
            row(&[
                format!("<code>{}</code>", esc(&x.id)),
                esc(&x.action),
                esc(&x.requester),
                esc(&x.reason),
                when(x.filed_ms),
                esc(&x.state),
                esc(x.decided_by.as_deref().unwrap_or("")),
            ])
        })
        .collect();
    out += &section(
        "approvals",
        "Approvals (data leaving)",
        &format!(
            "<p>{} pending, {} approved, {} run, {} refused, {} lapsed.</p>{}",
            ap.pending,
            ap.approved,
            ap.used,
            ap.refused,
            ap.lapsed,
            table(
                &[
                    "Request",
                    "Action",
                    "Requester",
                    "Reason",
                    "Filed",
                    "State",
                    "Decided by"
                ],
                &rows,
                "no requests"
            )
        ),
    );

    let rows: Vec<String> = f
        .anomalies
        .recent
        .iter()
        .rev()
        .map(|e| row(&[when(e.at_ms), esc(&e.what), esc(&e.actor), esc(&e.outcome)]))
        .collect();
    out += &section(
        "anomalies",
        "Anomalies (last 90 days)",
        &format!(
            "{}{}<h3>Most recent</h3>{}",
            timeline(&f.anomalies.by_day, f.generated_ms),
            counts_table(&["Kind", "Count"], &f.anomalies.by_kind, "no anomalies"),
            table(&["When", "Kind", "Who", "Outcome"], &rows, "no anomalies")
        ),
    );

    let i = &f.incidents;
    let rows: Vec<String> = i
        .events
        .iter()
        .map(|e| row(&[when(e.at_ms), esc(&e.what), esc(&e.actor), esc(&e.outcome)]))
        .collect();
    out += &section(
        "incidents",
        "Incidents",
        &format!(
            "{}{}",
            pairs(&[
                (
                    "Lockdown",
                    match &i.active {
                        Some((since, reason, by)) => format!(
                            "{} in force since {} ({}, by {})",
                            mark(Mark::Warn),
                            when(*since),
                            esc(reason),
                            esc(by)
                        ),
                        None => "none in force".into(),
                    },
                ),
                ("Last drill", opt_when(i.last_drill_ms)),
                (
                    "Break-glass agents",
                    esc(&if i.break_glass.is_empty() {
                        "none".to_string()
                    } else {
                        i.break_glass.join(", ")
                    })
                ),
            ]),
            table(
                &["When", "Action", "Who", "Outcome"],
                &rows,
                "no lockdown or release in the last 90 days"
            )
        ),
    );

    out += &section(
        "signature",
        "Signature",
        &format!(
            "<p>This page is signed by the appliance with Ed25519. Key <code>ed25519:{}</code>, fingerprint <code>{}</code>. The signature is the last line of the file and covers every byte before it. Check it with <code>tollgate compliance verify FILE --key {}</code>, and compare the fingerprint with the one the appliance's audit trail records for this report.</p>",
            esc(&signer.public_key()),
            esc(&signer.fingerprint()),
            esc(&signer.fingerprint())
        ),
    );

    // The facts for tools. `<`, `>` and `&` occur only inside JSON
    // strings, where their escapes mean the same: nothing in the data can
    // end the element or open a comment.
    let data = serde_json::to_string(report)
        .unwrap_or_default()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    let _ = write!(out, "{DATA_OPEN}{data}</script>\n</main>\n</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("<b a=\"x\">&'"), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn a_page_holds_every_section_and_no_outside_asset() {
        let mut f = Facts {
            generated_ms: 1_800_000_000_000,
            ..Facts::default()
        };
        f.appliance.hostname = "<gw>".into();
        f.protection.trunk.insert("UDP, RTP in clear".into(), 2);
        f.anomalies.recent.push(super::super::facts::Event {
            at_ms: f.generated_ms - DAY_MS,
            actor: "ann (uid 1001)".into(),
            what: "bulk_read".into(),
            outcome: "flagged".into(),
        });
        f.anomalies.by_day.insert(f.generated_ms / DAY_MS - 1, 1);
        f.anomalies.by_kind.insert("bulk_read".into(), 1);
        let report = Report::new(f);
        let signer = Signer::new(&[1; 32]);
        let page = page(&report, &signer);
        for id in super::super::SECTIONS {
            assert!(page.contains(&format!("<section id=\"{id}\">")), "no {id}");
        }
        assert!(page.contains("&lt;gw&gt;") && !page.contains("<gw>"));
        assert!(page.contains("<svg") && page.contains("trunk: UDP, RTP in clear"));
        for outside in ["http://", "https://", "src=", "<link", "@import"] {
            assert!(!page.contains(outside), "{outside} in the page");
        }
        assert!(page.contains("id=\"control-trunk-encryption\" data-mark=\"warn\""));
        // The facts for tools read back as they were.
        let data = page
            .split(DATA_OPEN)
            .nth(1)
            .and_then(|s| s.split("</script>").next())
            .expect("the data element");
        let back: Report = serde_json::from_str(data).expect("JSON");
        assert_eq!(back, report);
    }
}
