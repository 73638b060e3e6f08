//! What the report states, read from the running appliance: each part
//! from the one place that owns it (the record store, the audit trail,
//! the agents' registry and login state, the approvals, the metrics, the
//! configuration in force, `/etc/group`). Nothing here names a phone
//! number: records are counted, never listed, and operators' free text
//! (reasons) passes [`super::scrub`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::admin::approvals::{Approval, State};
use crate::admin::roles::Role;
use crate::config::Transport;
use crate::telemetry::audit::{self, Entry};

/// How far back the protection counts look.
pub const PROTECTION_WINDOW_MS: u64 = 24 * 3600 * 1000;
/// How far back anomalies and incidents are shown.
pub const EVENTS_WINDOW_MS: u64 = 90 * 24 * 3600 * 1000;
/// How far back a drill is looked for (a rehearsal a year).
pub const DRILL_WINDOW_MS: u64 = 365 * 24 * 3600 * 1000;
/// Rows of a long list kept in the report (the counts stay whole).
pub const MAX_ROWS: usize = 200;

/// Everything the report states.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Facts {
    pub generated_ms: u64,
    pub appliance: Appliance,
    pub protection: Protection,
    pub hardening: Hardening,
    pub firewall: Firewall,
    pub ids: Ids,
    pub audit: AuditState,
    pub keys: Keys,
    pub retention: Retention,
    pub agents: AgentsState,
    pub operators: Vec<RoleHolders>,
    pub approvals: ApprovalsState,
    pub anomalies: AnomalyCounts,
    pub incidents: IncidentState,
    pub settings: Settings,
    /// Sources that could not be read, by name ([`SOURCES`]), and why:
    /// the controls resting on one are not marked pass.
    pub unread: BTreeMap<String, String>,
}

/// The sources a report reads that can fail, by the name [`Facts::unread`]
/// gives them.
pub mod source {
    pub const BANS: &str = "bans";
    pub const GROUPS: &str = "groups";
    pub const AUDIT_EVENTS: &str = "audit events";
    pub const LOGINS: &str = "agent logins";
    pub const RECORDS: &str = "records";
}

impl Facts {
    /// Whether `source` could not be read.
    pub fn missing(&self, source: &str) -> bool {
        self.unread.contains_key(source)
    }
}

/// Anomalies over [`EVENTS_WINDOW_MS`]: counted whole, the latest listed.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AnomalyCounts {
    pub by_kind: BTreeMap<String, u64>,
    /// Unix day number to count.
    pub by_day: BTreeMap<u64, u64>,
    /// The latest [`MAX_ROWS`], oldest first.
    pub recent: Vec<Event>,
}

/// The settings in force that controls are judged against.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    /// Wrong codes before an agent is locked out, and for how long.
    pub max_failures: u32,
    pub lockout_s: u64,
    /// Working hours by role, as written.
    pub hours: Vec<(String, String)>,
    pub refuse_off_hours: bool,
    pub bulk_read_records: u64,
    pub bulk_read_window_s: u64,
    pub approval_window_s: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Appliance {
    pub version: String,
    pub hostname: String,
    /// The configuration file, or "embedded defaults".
    pub config_source: String,
    /// SHA-256 (hex) of its bytes as they are now.
    pub config_sha256: String,
    /// Whether the file on disk differs from what runs (a restart waits).
    pub restart_pending: bool,
}

/// Calls per protection, by leg, over [`PROTECTION_WINDOW_MS`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Protection {
    pub window_ms: u64,
    pub calls: u64,
    /// Trunk legs by what protected them: `TLS + SRTP`, `UDP, RTP in clear`, ...
    pub trunk: BTreeMap<String, u64>,
    /// Agent legs by SRTP suite.
    pub agent: BTreeMap<String, u64>,
    /// The trunks configured now.
    pub trunks: Vec<TrunkPolicy>,
    /// The suite agents are offered now.
    pub agent_suite: String,
    /// Records that could not be opened (damaged) while counting.
    pub unreadable: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TrunkPolicy {
    pub name: String,
    pub transport: String,
    /// `off`, `offered` or `required`.
    pub srtp: String,
    /// Whether signalling and media are both encrypted whatever the peer
    /// offers.
    pub encrypted: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Hardening {
    /// The unit the daemon runs as, when under systemd.
    pub unit: Option<String>,
    /// `systemd-analyze security` exposure (0 best, 10 worst) and rating.
    pub exposure: Option<f64>,
    pub rating: Option<String>,
    /// Why there is no score, or what it is of.
    pub note: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Firewall {
    /// Tollgate's nftables table is loaded.
    pub active: bool,
    /// Packets the kernel dropped, by rule (its counters).
    pub dropped: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Ids {
    pub bans_active: u64,
    /// Sources banned now, with why (addresses of hostile senders, never
    /// a number).
    pub bans: Vec<(String, String)>,
    /// Verdicts since start, `verdict/reason` to count.
    pub verdicts: BTreeMap<String, u64>,
    pub agent_lockouts: u64,
    /// Agents locked out now.
    pub agents_locked: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AuditState {
    pub intact: bool,
    /// The verifier's words.
    pub verdict: String,
    pub entries: u64,
    pub gaps: Vec<String>,
    /// The anchor the trail must reach: sequence and hash.
    pub anchor: Option<(u64, String)>,
    /// The first entry's time: when this appliance's trail began.
    pub since_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Keys {
    pub master_id: String,
    /// A development key file in the data directory (not for production).
    pub master_dev: bool,
    /// When the master key came into use: its last rotation, else when
    /// the trail began.
    pub master_since_ms: Option<u64>,
    pub master_rotated: bool,
    pub day_keys: u64,
    /// Oldest and newest day key (Unix day numbers).
    pub oldest_day: Option<u32>,
    pub newest_day: Option<u32>,
    /// The appliance's report-signing key.
    pub signing_key: String,
    pub signing_fingerprint: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Retention {
    pub days: u32,
    /// Days past retention still held, and why.
    pub due_days: u64,
    pub held: Option<String>,
    /// An incident lockdown suspends it.
    pub suspended: bool,
    pub records: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentsState {
    pub enrolled: u64,
    pub active: u64,
    pub revoked: u64,
    pub list: Vec<AgentFact>,
    /// Its reading failed: why.
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentFact {
    pub name: String,
    pub profile: String,
    pub active: bool,
    /// Its factors: the certificate and, when a secret is sealed, TOTP.
    pub mfa: bool,
    pub enrolled_ms: u64,
    pub last_login_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RoleHolders {
    pub role: String,
    pub group: String,
    /// Whether the group exists.
    pub exists: bool,
    pub members: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ApprovalsState {
    pub pending: u64,
    pub approved: u64,
    pub refused: u64,
    pub used: u64,
    pub lapsed: u64,
    /// Newest first.
    pub list: Vec<ApprovalFact>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ApprovalFact {
    pub id: String,
    pub action: String,
    pub requester: String,
    pub reason: String,
    pub filed_ms: u64,
    pub state: String,
    /// Who approved or refused.
    pub decided_by: Option<String>,
}

/// An audit entry worth showing: its time, who, what, how it ended.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub at_ms: u64,
    pub actor: String,
    /// For anomalies, the kind; else the action.
    pub what: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct IncidentState {
    /// In force now: since, reason, by.
    pub active: Option<(u64, String, String)>,
    /// Lockdowns and releases.
    pub events: Vec<Event>,
    /// The last rehearsal (`tollgate incident drill`), when one ran.
    pub last_drill_ms: Option<u64>,
    pub break_glass: Vec<String>,
}

/// A trunk leg's protection, as the report names it, from its trunk's
/// transport (as configured now) and the record's SRTP text
/// ([`crate::cdr::record::trunk_srtp`]).
pub fn trunk_label(transport: Option<Transport>, srtp: &str) -> String {
    let t = match transport {
        Some(Transport::Tls) => "TLS",
        Some(Transport::Tcp) => "TCP",
        Some(Transport::Udp) => "UDP",
        None => "unknown transport",
    };
    let (suite, clear_key) = crate::cdr::record::trunk_srtp_parts(srtp);
    let encrypts = crate::media::srtp::Suite::from_sdes_name(suite).is_some_and(|s| s.encrypts());
    if suite == "none" || suite.is_empty() {
        format!("{t}, RTP in clear")
    } else if !encrypts {
        format!("{t}, SRTP without encryption ({suite})")
    } else if clear_key || transport != Some(Transport::Tls) {
        format!("{t} + SRTP ({suite}), key in clear signalling")
    } else {
        format!("TLS + SRTP ({suite})")
    }
}

/// How an agent leg's suite stands: AEAD-GCM passes, another suite that
/// encrypts warns, none or a null cipher fails.
pub fn agent_suite_mark(suite: &str) -> super::controls::Mark {
    use super::controls::Mark;
    match crate::media::srtp::Suite::from_sdes_name(suite) {
        Some(s) if s.is_aead() => Mark::Pass,
        Some(s) if s.encrypts() => Mark::Warn,
        _ => Mark::Fail,
    }
}

/// Whether a trunk label is fully encrypted.
pub fn trunk_label_encrypted(label: &str) -> bool {
    label.starts_with("TLS + SRTP")
}

/// Counts one record's legs into `p`.
pub fn count_record(
    p: &mut Protection,
    record: &crate::cdr::record::Record,
    transport_of: impl Fn(&str) -> Option<Transport>,
) {
    p.calls += 1;
    let suite = |leg: &str| {
        record
            .srtp
            .iter()
            .find(|(l, _)| l == leg)
            .map(|(_, s)| s.as_str())
    };
    if record.trunk.is_some() || suite("trunk").is_some() {
        let transport = record.trunk.as_deref().and_then(&transport_of);
        *p.trunk
            .entry(trunk_label(transport, suite("trunk").unwrap_or("none")))
            .or_default() += 1;
    }
    // A bridge's second trunk leg: its trunk is not in the record, but its
    // text says whether its key crossed in clear (so it was keyed over TLS
    // if it says not); a plain leg's transport is unknown.
    if let Some(text) = suite("far_end") {
        let (suite, clear_key) = crate::cdr::record::trunk_srtp_parts(text);
        let transport = (!clear_key && suite != "none").then_some(Transport::Tls);
        *p.trunk.entry(trunk_label(transport, text)).or_default() += 1;
    }
    if record.agent.is_some() {
        let s = suite("agent").unwrap_or("none").to_string();
        *p.agent.entry(s).or_default() += 1;
    }
}

/// The trunks as configured.
pub fn trunk_policies(config: &crate::config::Config) -> Vec<TrunkPolicy> {
    use crate::sip::sdp::SrtpMode;
    config
        .trunks
        .iter()
        .map(|t| {
            let srtp = t.srtp_over(t.transport == Transport::Tls);
            TrunkPolicy {
                name: t.name.clone(),
                transport: format!("{:?}", t.transport).to_uppercase(),
                srtp: match srtp {
                    Some(SrtpMode::Required) => "required",
                    Some(SrtpMode::Offered) => "offered",
                    Some(SrtpMode::Off) | None => "off",
                }
                .to_string(),
                encrypted: t.transport == Transport::Tls && srtp == Some(SrtpMode::Required),
            }
        })
        .collect()
}

/// The overall line of `systemd-analyze security` output: exposure and
/// rating ("2.0", "OK").
pub fn analyze_rating(out: &str) -> Option<(f64, String)> {
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level for"))?;
    let mut words = line.rsplit(':').next()?.split_whitespace();
    let exposure = words.next()?.parse().ok()?;
    let rating = words.next()?.to_string();
    Some((exposure, rating))
}

/// The service unit this process runs in, from its cgroup, when it runs
/// under systemd.
fn own_unit() -> Option<String> {
    std::env::var_os("INVOCATION_ID")?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .find(|u| u.ends_with(".service"))
        .map(str::to_string)
}

/// Runs `systemd-analyze security --offline` on `file`, for at most
/// [`ANALYZE_WITHIN`]; its output.
fn analyze(file: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut child = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let end = std::time::Instant::now() + ANALYZE_WITHIN;
    while child.try_wait()?.is_none() {
        if std::time::Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", ANALYZE_WITHIN.as_secs()),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut out)?;
    }
    Ok(out)
}

/// How long `systemd-analyze` may take.
const ANALYZE_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// `systemd-analyze security` of the unit file the daemon runs from
/// (offline: no D-Bus inside the sandbox).
pub fn hardening() -> Hardening {
    let Some(unit) = own_unit() else {
        return Hardening {
            note: "not running under systemd: the service sandbox is not in force".into(),
            ..Hardening::default()
        };
    };
    let file = [
        "/etc/systemd/system",
        "/usr/lib/systemd/system",
        "/lib/systemd/system",
    ]
    .iter()
    .map(|d| Path::new(d).join(&unit))
    .find(|p| p.exists());
    let Some(file) = file else {
        return Hardening {
            note: format!("{unit}: its unit file was not found"),
            unit: Some(unit),
            ..Hardening::default()
        };
    };
    match analyze(&file) {
        Ok(text) => match analyze_rating(&text) {
            Some((exposure, rating)) => Hardening {
                note: format!("systemd-analyze security --offline of {}", file.display()),
                unit: Some(unit),
                exposure: Some(exposure),
                rating: Some(rating),
            },
            None => Hardening {
                note: "systemd-analyze gave no rating".into(),
                unit: Some(unit),
                ..Hardening::default()
            },
        },
        Err(e) => Hardening {
            note: format!("systemd-analyze could not run: {e}"),
            unit: Some(unit),
            ..Hardening::default()
        },
    }
}

/// Who holds each role: the group's members and the users whose primary
/// group it is, from `group` and `passwd` text (their file formats).
/// Root and the daemon's own user hold viewer, auditor and admin besides.
pub fn role_holders(names: &[String; 4], group: &str, passwd: &str) -> Vec<RoleHolders> {
    [Role::Viewer, Role::Auditor, Role::Admin, Role::Approver]
        .into_iter()
        .zip(names.iter())
        .map(|(role, name)| {
            let gid = crate::admin::roles::gid_of(name, group);
            let mut members: Vec<String> = group
                .lines()
                .find(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    f.len() >= 4 && (f[0] == name || (gid.is_some() && f[2].parse().ok() == gid))
                })
                .map(|l| {
                    l.split(':')
                        .nth(3)
                        .unwrap_or("")
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            if let Some(gid) = gid {
                for l in passwd.lines() {
                    let f: Vec<&str> = l.split(':').collect();
                    if f.len() >= 4 && f[3].parse::<u32>().ok() == Some(gid) {
                        members.push(f[0].to_string());
                    }
                }
            }
            members.sort();
            members.dedup();
            RoleHolders {
                role: role.to_string(),
                group: name.clone(),
                exists: gid.is_some()
                    && group
                        .lines()
                        .any(|l| l.split(':').nth(2).and_then(|g| g.parse().ok()) == gid),
                members,
            }
        })
        .collect()
}

/// The approvals, counted, and the newest [`MAX_ROWS`].
pub fn approvals(all: &[Approval]) -> ApprovalsState {
    let mut s = ApprovalsState::default();
    for a in all {
        match a.state {
            State::Pending => s.pending += 1,
            State::Approved { .. } => s.approved += 1,
            State::Refused { .. } => s.refused += 1,
            State::Used { .. } => s.used += 1,
            State::Lapsed { .. } => s.lapsed += 1,
        }
    }
    let mut newest: Vec<&Approval> = all.iter().collect();
    newest.sort_by_key(|a| std::cmp::Reverse(a.filed_ms));
    s.list = newest
        .into_iter()
        .take(MAX_ROWS)
        .map(|a| {
            let (state, by) = match &a.state {
                State::Pending => ("pending", None),
                State::Approved { by, .. } => ("approved", Some(by.clone())),
                State::Refused { by, .. } => ("refused", Some(by.clone())),
                State::Used { approved_by, .. } => ("used", Some(approved_by.clone())),
                State::Lapsed { .. } => ("lapsed", None),
            };
            ApprovalFact {
                id: a.id.clone(),
                action: a.action.to_string(),
                requester: a.requester.clone(),
                reason: super::scrub(&a.reason),
                filed_ms: a.filed_ms,
                state: state.to_string(),
                decided_by: by,
            }
        })
        .collect();
    s
}

/// What the audit trail says about anomalies and incidents (since
/// `since_ms`) and the last drill that ran every step (at any time in
/// `entries`): its throw-away agent enrolled, locked out by the gateway
/// and revoked, each entry written by the daemon.
pub fn events(entries: &[Entry], since_ms: u64) -> (AnomalyCounts, Vec<Event>, Option<u64>) {
    let mut anomalies = AnomalyCounts::default();
    let mut incidents = Vec::new();
    let mut drills: BTreeMap<&str, (Option<u64>, bool, bool)> = BTreeMap::new();
    for e in entries {
        if e.action == crate::telemetry::anomaly::ACTION && e.time_ms >= since_ms {
            let kind = e.target.split(':').next().unwrap_or("").trim().to_string();
            *anomalies.by_kind.entry(kind.clone()).or_default() += 1;
            *anomalies.by_day.entry(e.time_ms / 86_400_000).or_default() += 1;
            anomalies.recent.push(Event {
                at_ms: e.time_ms,
                actor: e.actor.clone(),
                what: kind,
                outcome: e.outcome.clone(),
            });
            if anomalies.recent.len() > 2 * MAX_ROWS {
                anomalies.recent.drain(..MAX_ROWS);
            }
        } else if (e.action == "incident lockdown" || e.action == "incident release")
            && e.time_ms >= since_ms
        {
            incidents.push(Event {
                at_ms: e.time_ms,
                actor: e.actor.clone(),
                what: e.action.clone(),
                outcome: e.outcome.clone(),
            });
            if incidents.len() > 2 * MAX_ROWS {
                incidents.drain(..MAX_ROWS);
            }
        } else if let Some(name) = e
            .target
            .split_whitespace()
            .next()
            .filter(|n| n.starts_with(crate::admin::drill::PREFIX))
        {
            let d = drills.entry(name).or_default();
            match (e.action.as_str(), e.outcome.starts_with("ok")) {
                ("agent enroll", true) => d.0 = Some(e.time_ms),
                ("agent locked out", _) => d.1 = true,
                ("agent revoke", true) => d.2 = true,
                _ => {}
            }
        }
    }
    let keep = |v: &mut Vec<Event>| {
        let cut = v.len().saturating_sub(MAX_ROWS);
        v.drain(..cut);
    };
    keep(&mut anomalies.recent);
    keep(&mut incidents);
    let drill = drills
        .values()
        .filter(|(_, locked, revoked)| *locked && *revoked)
        .filter_map(|(at, _, _)| *at)
        .max();
    (anomalies, incidents, drill)
}

/// The anchor beside the trail, if there is one.
pub fn anchor(trail: &Path) -> Option<(u64, String)> {
    audit::Anchor::load(trail)
        .ok()
        .flatten()
        .map(|a| (a.seq, a.hash))
}

/// The config file's digest, or the embedded defaults'.
pub fn config_digest(source: Option<&PathBuf>) -> (String, String) {
    use sha2::{Digest, Sha256};
    match source {
        Some(p) => match std::fs::read(p) {
            Ok(b) => (p.display().to_string(), hex::encode(Sha256::digest(&b))),
            Err(e) => (format!("{} (unreadable: {e})", p.display()), String::new()),
        },
        None => (
            "embedded defaults".into(),
            hex::encode(Sha256::digest(crate::config::DEFAULT_TOML.as_bytes())),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rating_is_read_from_systemd_analyze() {
        let out = "  NAME  DESCRIPTION  EXPOSURE\n\u{2192} Overall exposure level for tollgate.service: 2.0 OK \u{1f642}\n";
        assert_eq!(analyze_rating(out), Some((2.0, "OK".into())));
        assert_eq!(analyze_rating("nothing"), None);
    }

    #[test]
    fn role_holders_come_from_group_members_and_primary_groups() {
        let names = [
            "tg-view".to_string(),
            "tg-audit".into(),
            "tg-admin".into(),
            "tg-approve".into(),
        ];
        let group = "root:x:0:\ntg-view:x:901:ann,bob\ntg-audit:x:902:\ntg-admin:x:903:bob\n";
        let passwd = "root:x:0:0::/root:/bin/sh\ncarol:x:1003:902::/home/carol:/bin/sh\n";
        let h = role_holders(&names, group, passwd);
        assert_eq!(h[0].members, ["ann", "bob"]);
        assert_eq!(h[1].members, ["carol"]);
        assert_eq!(h[2].members, ["bob"]);
        assert!(h[2].exists);
        assert!(!h[3].exists, "no tg-approve group");
        assert!(h[3].members.is_empty());
    }

    #[test]
    fn legs_are_counted_by_their_protection() {
        use crate::cdr::record::{Direction, Record};
        let mut r = Record::new("c", Direction::Inbound, "+441632960000", "+441632960001", 1);
        r.trunk = Some("carrier".into());
        r.agent = Some("ann".into());
        r.srtp = vec![
            ("trunk".into(), "none".into()),
            ("agent".into(), "AEAD_AES_128_GCM".into()),
        ];
        let mut p = Protection::default();
        count_record(&mut p, &r, |_| Some(Transport::Udp));
        r.srtp[0].1 = "AES_CM_128_HMAC_SHA1_80".into();
        count_record(&mut p, &r, |_| Some(Transport::Tls));
        assert_eq!(p.calls, 2);
        assert_eq!(p.trunk["UDP, RTP in clear"], 1);
        assert_eq!(p.trunk["TLS + SRTP (AES_CM_128_HMAC_SHA1_80)"], 1);
        assert_eq!(p.agent["AEAD_AES_128_GCM"], 2);
        // A bridge: both trunk legs count, the far one by its own text.
        let mut b = Record::new("b", Direction::Inbound, "+441632960000", "+442079460000", 1);
        b.trunk = Some("carrier".into());
        b.srtp = vec![
            ("trunk".into(), "none".into()),
            (
                "far_end".into(),
                crate::cdr::record::trunk_srtp("AES_CM_128_HMAC_SHA1_80", false),
            ),
        ];
        count_record(&mut p, &b, |_| Some(Transport::Udp));
        b.srtp[1].1 = crate::cdr::record::trunk_srtp("AEAD_AES_128_GCM", true);
        count_record(&mut p, &b, |_| Some(Transport::Udp));
        b.srtp[1].1 = "none".into();
        count_record(&mut p, &b, |_| Some(Transport::Udp));
        assert_eq!(p.calls, 5);
        assert_eq!(p.trunk["UDP, RTP in clear"], 4);
        assert_eq!(
            p.trunk["unknown transport + SRTP (AES_CM_128_HMAC_SHA1_80), key in clear signalling"],
            1
        );
        assert_eq!(p.trunk["TLS + SRTP (AEAD_AES_128_GCM)"], 1);
        assert_eq!(p.trunk["unknown transport, RTP in clear"], 1);
        assert!(trunk_label_encrypted(
            "TLS + SRTP (AES_CM_128_HMAC_SHA1_80)"
        ));
        assert!(!trunk_label_encrypted(&trunk_label(
            Some(Transport::Udp),
            "AEAD_AES_128_GCM"
        )));
    }
}

#[cfg(test)]
mod events_tests {
    use super::*;

    fn entry(time_ms: u64, actor: &str, action: &str, target: &str, outcome: &str) -> Entry {
        Entry {
            seq: 0,
            time_ms,
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            outcome: outcome.into(),
            prev: String::new(),
            mac: String::new(),
        }
    }

    #[test]
    fn anomalies_incidents_and_whole_drills_are_read_from_the_trail() {
        let day = 86_400_000;
        let e = [
            entry(
                100 * day,
                "root (uid 0)",
                "anomaly",
                "operator_off_hours: cdr list",
                "flagged",
            ),
            entry(
                5 * day,
                "root (uid 0)",
                "anomaly",
                "bulk_read: old",
                "flagged",
            ),
            entry(
                101 * day,
                "root (uid 0)",
                "incident lockdown",
                "reason=\"x\"",
                "ok: lockdown",
            ),
            // A drill that ran every step, and a name enrolled by hand.
            entry(
                102 * day,
                "root (uid 0)",
                "agent enroll",
                "drill-0a0b0c0d",
                "ok",
            ),
            entry(
                102 * day + 5,
                "agents",
                "agent locked out",
                "drill-0a0b0c0d",
                "300 s",
            ),
            entry(
                102 * day + 9,
                "root (uid 0)",
                "agent revoke",
                "drill-0a0b0c0d",
                "ok",
            ),
            entry(
                103 * day,
                "root (uid 0)",
                "agent enroll",
                "drill-fake",
                "ok",
            ),
        ];
        let (a, i, drill) = events(&e, 50 * day);
        assert_eq!(a.by_kind.len(), 1, "{a:?}");
        assert_eq!(a.by_kind["operator_off_hours"], 1);
        assert_eq!(a.by_day[&100], 1);
        assert_eq!(a.recent.len(), 1);
        assert_eq!(i.len(), 1);
        assert_eq!(drill, Some(102 * day));
    }
}
