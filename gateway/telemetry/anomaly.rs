//! Unusual access to customer data: each anomaly is an `anomaly` entry in
//! the audit trail (who, what kind, what happened, whether it was
//! refused) and a count in `tollgate_privacy_anomalies_total{kind}`,
//! which the alert TollgatePrivacyAnomaly watches. What counts as unusual
//! is decided where the access happens (the admin socket for operators,
//! the agents' listener for logins); this is the one place they report.

use std::sync::Arc;

use super::audit::Audit;
use super::metrics::Metrics;

/// The audit trail's action for every anomaly.
pub const ACTION: &str = "anomaly";

/// What was unusual.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An operator read customer data or moved it outside their role's
    /// working hours.
    OperatorOffHours,
    /// An operator read more whole-number records than the limit allows
    /// in its window.
    BulkRead,
    /// An agent logged in outside its profile's hours.
    AgentOffHours,
    /// An agent logged in from an address it has never used.
    AgentNewAddress,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::OperatorOffHours,
        Kind::BulkRead,
        Kind::AgentOffHours,
        Kind::AgentNewAddress,
    ];

    /// The metric label and the audit target's prefix.
    pub fn label(self) -> &'static str {
        match self {
            Kind::OperatorOffHours => "operator_off_hours",
            Kind::BulkRead => "bulk_read",
            Kind::AgentOffHours => "agent_off_hours",
            Kind::AgentNewAddress => "agent_new_address",
        }
    }
}

/// Where anomalies are reported.
#[derive(Clone)]
pub struct Anomalies {
    audit: Option<Audit>,
    metrics: Arc<Metrics>,
}

impl Anomalies {
    pub fn new(audit: Option<Audit>, metrics: Arc<Metrics>) -> Self {
        Self { audit, metrics }
    }

    /// The audit trail they go to.
    pub fn audit(&self) -> Option<&Audit> {
        self.audit.as_ref()
    }

    /// Reports one: `actor` did `what` (no number in it), and it was
    /// `refused` or only flagged.
    pub fn raise(&self, kind: Kind, actor: &str, what: &str, refused: bool) {
        self.metrics
            .privacy_anomalies
            .with_label_values(&[kind.label()])
            .inc();
        tracing::warn!(
            kind = kind.label(),
            actor,
            refused,
            "privacy anomaly: {what}"
        );
        if let Some(audit) = &self.audit {
            audit.record(
                actor,
                ACTION,
                &format!("{}: {what}", kind.label()),
                if refused { "refused" } else { "flagged" },
            );
        }
    }
}
