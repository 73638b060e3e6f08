//! What the admin socket carries: the requests, their responses, and
//! the role each request needs and how the audit trail names it.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::admin::erase::{digits, NumberHash};
use crate::admin::roles::Role;
use crate::guard::BanInfo;

/// Export formats.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Csv,
    Jsonl,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Whoami,
    Bans,
    Unban {
        addr: IpAddr,
    },
    Reload,
    CdrList {
        from_ms: u64,
        to_ms: u64,
        agent: Option<String>,
    },
    CdrShow {
        id: String,
    },
    /// Files a request to export (`cdr export --reason`): an approver
    /// must approve it before it runs.
    ExportRequest {
        from_ms: u64,
        to_ms: u64,
        format: Format,
        reason: String,
    },
    /// Runs an approved export request, once (its requester only).
    CdrExport {
        approval: String,
    },
    /// Files a request to erase one number's records (`cdr erase
    /// --number N --reason R`); it is kept only as a keyed hash.
    EraseRequest {
        number: SecretText,
        reason: String,
    },
    /// Runs an approved erasure, once (its requester only), given the
    /// number again: it must be the one approved.
    CdrErase {
        approval: String,
        number: SecretText,
    },
    ApprovalsList,
    /// An approver approves (or refuses) someone else's request.
    ApprovalDecide {
        id: String,
        approve: bool,
    },
    AuditList {
        from_ms: u64,
        to_ms: u64,
    },
    AuditVerify,
    /// Re-seal everything under a new master key (`keys rotate-master`),
    /// given as 64 hex digits.
    RotateMaster {
        key: SecretText,
    },
    /// Enrol an agent (the daemon holds the master key and owns the data
    /// directory): its bundle and TOTP URI come back, once.
    AgentEnroll {
        name: String,
        profile: Option<String>,
    },
    AgentRevoke {
        name: String,
    },
    /// Retention's shred: what it would do (`confirm: false`), or do it
    /// although a run held it (`confirm: true`).
    CdrShred {
        confirm: bool,
    },
    /// Begins an incident lockdown ([`crate::incident`]).
    IncidentLockdown {
        reason: String,
    },
    /// Ends it: a second person, with the approver role.
    IncidentRelease,
    /// Whether one is in force (any role).
    IncidentStatus,
    /// The signed compliance report ([`crate::admin::compliance`]),
    /// HTML or JSON.
    ComplianceReport {
        #[serde(default)]
        json: bool,
    },
}

/// Secret text between an operator and the daemon (a new master key; an
/// agent's bundle, its TOTP URI): wiped when dropped and never printed by
/// `Debug`.
#[derive(Serialize, Deserialize, PartialEq, Default)]
#[serde(transparent)]
pub struct SecretText(Zeroizing<String>);

impl SecretText {
    pub fn new(s: &str) -> Self {
        Self(Zeroizing::new(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<Zeroizing<String>> for SecretText {
    fn from(s: Zeroizing<String>) -> Self {
        Self(s)
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(..)")
    }
}

/// What `records shred` found or did.
#[derive(Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct Shred {
    pub retention_days: u32,
    /// Days past retention (Unix day numbers) still held.
    pub due_days: Vec<u32>,
    /// Why the hourly run holds them, if it does.
    pub held: Option<String>,
    /// With `--confirm`: days and records shredded.
    pub shredded_days: usize,
    pub shredded_records: usize,
}

/// An enrolment as the daemon returns it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Enrolled {
    pub bundle: SecretText,
    pub otp_uri: SecretText,
}

/// The key a `RotateMaster` request carries (64 hex digits), if it is
/// one.
pub(super) fn rotation_key(hex: &SecretText) -> Option<Zeroizing<[u8; crate::keys::KEY_LEN]>> {
    if hex.as_str().len() != 2 * crate::keys::KEY_LEN {
        return None;
    }
    crate::keys::parse_key(hex.as_str().as_bytes())
}

impl Request {
    /// Whether an incident lockdown refuses it: data leaving, records
    /// erased or shredded (evidence is kept), new agents enrolled (a
    /// break-glass name enrolled afresh would be let in). Whole-number
    /// reads are refused too (the caller checks those, by role).
    pub(super) fn held_in_lockdown(&self) -> bool {
        matches!(
            self,
            Request::AgentEnroll { .. }
                | Request::ExportRequest { .. }
                | Request::CdrExport { .. }
                | Request::EraseRequest { .. }
                | Request::CdrErase { .. }
                | Request::CdrShred { confirm: true }
        )
    }

    /// The role it needs (listing records needs viewer; full numbers
    /// come with auditor).
    pub(super) fn needs(&self) -> Option<Role> {
        match self {
            Request::Whoami => None,
            Request::Bans
            | Request::Unban { .. }
            | Request::Reload
            | Request::RotateMaster { .. }
            | Request::AgentEnroll { .. }
            | Request::AgentRevoke { .. }
            | Request::CdrShred { .. } => Some(Role::Admin),
            Request::CdrList { .. } | Request::CdrShow { .. } => Some(Role::Viewer),
            Request::ExportRequest { .. }
            | Request::CdrExport { .. }
            | Request::EraseRequest { .. }
            | Request::CdrErase { .. }
            | Request::AuditList { .. }
            | Request::AuditVerify
            | Request::ComplianceReport { .. } => Some(Role::Auditor),
            Request::ApprovalDecide { .. } | Request::IncidentRelease => Some(Role::Approver),
            Request::IncidentLockdown { .. } => Some(Role::Admin),
            // Anyone with a role (checked when run).
            Request::IncidentStatus => None,
            // Approvers and auditors (checked when run).
            Request::ApprovalsList => None,
        }
    }

    /// For the audit trail: the action and its target. A number is
    /// named by its keyed hash, never its digits.
    pub(super) fn describe(&self, numbers: &NumberHash) -> (&'static str, String) {
        let hashed = |n: &SecretText| {
            digits(n.as_str()).map_or_else(
                |_| "an unreadable number".to_string(),
                |d| format!("number hmac {}", numbers.of(&d)),
            )
        };
        match self {
            Request::Whoami => ("whoami", String::new()),
            Request::Bans => ("firewall bans", String::new()),
            Request::Unban { addr } => ("firewall unban", addr.to_string()),
            Request::Reload => ("firewall reload", String::new()),
            Request::CdrList {
                from_ms,
                to_ms,
                agent,
            } => (
                "cdr list",
                format!(
                    "{from_ms}..{to_ms} agent={}",
                    agent.as_deref().unwrap_or("*")
                ),
            ),
            Request::CdrShow { id } => ("cdr show", id.clone()),
            Request::ExportRequest {
                from_ms,
                to_ms,
                format,
                reason,
            } => (
                "cdr export request",
                format!("{from_ms}..{to_ms} {format:?} reason={reason:?}"),
            ),
            Request::CdrExport { approval } => ("cdr export", format!("request {approval}")),
            Request::EraseRequest { number, reason } => (
                "cdr erase request",
                format!("{} reason={reason:?}", hashed(number)),
            ),
            Request::CdrErase { approval, number } => (
                "cdr erase",
                format!("request {approval} {}", hashed(number)),
            ),
            Request::ApprovalsList => ("approvals list", String::new()),
            Request::ApprovalDecide { id, approve } => (
                if *approve {
                    "approvals approve"
                } else {
                    "approvals refuse"
                },
                format!("request {id}"),
            ),
            Request::AuditList { from_ms, to_ms } => ("audit list", format!("{from_ms}..{to_ms}")),
            Request::AuditVerify => ("audit verify", String::new()),
            Request::AgentEnroll { name, profile } => (
                "agent enroll",
                match profile {
                    Some(p) => format!("{name} profile={p}"),
                    None => name.clone(),
                },
            ),
            Request::AgentRevoke { name } => ("agent revoke", name.clone()),
            Request::CdrShred { confirm } => (
                "records shred",
                if *confirm { "confirmed" } else { "preview" }.to_string(),
            ),
            Request::IncidentLockdown { reason } => {
                ("incident lockdown", format!("reason={reason:?}"))
            }
            Request::IncidentRelease => ("incident release", String::new()),
            Request::IncidentStatus => ("incident status", String::new()),
            Request::ComplianceReport { json } => (
                "compliance report",
                if *json { "json" } else { "html" }.to_string(),
            ),
            Request::RotateMaster { key } => (
                "keys rotate-master",
                rotation_key(key).map_or_else(
                    || "an unreadable key".to_string(),
                    |k| format!("to key {}", crate::keys::key_id(&k)),
                ),
            ),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, Default, PartialEq)]
pub struct Response {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bans: Option<Vec<BanInfo>>,
    /// For unban: whether the address was banned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifted: Option<bool>,
    /// For whoami: the caller and their roles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<Role>>,
    /// For audit verify: entries checked, or the first broken one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
    /// For keys rotate-master: what was re-sealed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotated: Option<crate::admin::rotate::Rotated>,
    /// For agent enroll: the bundle and TOTP URI, shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrolled: Option<Enrolled>,
    /// For records shred: what retention would or did shred.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shred: Option<Shred>,
    /// For an export request or a decision: the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::admin::approvals::Approval>,
    /// For approvals list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvals: Option<Vec<crate::admin::approvals::Approval>>,
    /// For incident commands: the lockdown begun, ended or in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<crate::incident::Lockdown>,
    /// For cdr erase: what it removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erased: Option<crate::admin::erase::Erased>,
    /// For compliance report: the signed document and its digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<crate::admin::compliance::Rendered>,
    /// Whether data lines follow.
    #[serde(default)]
    pub stream: bool,
}

impl Response {
    pub(super) fn error(e: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(e.into()),
            ..Self::default()
        }
    }
    pub(super) fn ok() -> Self {
        Self {
            ok: true,
            ..Self::default()
        }
    }
}

/// One listed record.
#[derive(Debug, Serialize, Deserialize)]
pub struct Listed {
    pub id: String,
    pub record: crate::cdr::record::Record,
}
