//! The `[admin]` section: the metrics listener, the operators' role
//! groups, the export approvals' window, and what counts as unusual
//! access (each role's working hours, bulk reads).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::hours::{Hours, HoursFile};
use super::{invalid, ConfigError};

/// The roles `[admin.hours.<role>]` may name.
pub const ROLES: [&str; 4] = ["viewer", "auditor", "admin", "approver"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminFile {
    pub listen: String,
    pub viewer_group: String,
    pub auditor_group: String,
    pub admin_group: String,
    /// Who approves others' requests to take data out (`cdr export`):
    /// implied by no other role.
    pub approver_group: String,
    /// How long an approved request may wait to be run.
    pub approval_window_s: u64,
    /// The group the admin socket belongs to (mode 0660), so that only its
    /// members can connect at all; unset, anyone local may connect (mode
    /// 0666) and the role groups alone decide what they may do.
    pub socket_group: Option<String>,
    /// Working hours per role (`[admin.hours.auditor]`): a request that
    /// reads customer data outside them is an anomaly.
    pub hours: BTreeMap<String, HoursFile>,
    /// Refuse (not only flag) whole-number reads outside the hours.
    pub refuse_off_hours: bool,
    /// Whole-number records one operator may read in the window before
    /// it is an anomaly (approved exports do not count).
    pub bulk_read_records: u64,
    pub bulk_read_window_s: u64,
}

/// When operators are expected, and how much they read.
#[derive(Debug, Clone, PartialEq)]
pub struct Oversight {
    /// Working hours by role name; a role not here has none.
    pub hours: Vec<(String, Hours)>,
    pub refuse_off_hours: bool,
    pub bulk_read_records: u64,
    pub bulk_read_window: std::time::Duration,
}

impl Default for Oversight {
    fn default() -> Self {
        Self {
            hours: Vec::new(),
            refuse_off_hours: false,
            bulk_read_records: 1000,
            bulk_read_window: std::time::Duration::from_secs(3600),
        }
    }
}

impl Oversight {
    /// `role`'s working hours, if it has any.
    pub fn hours_of(&self, role: &str) -> Option<&Hours> {
        self.hours.iter().find(|(r, _)| r == role).map(|(_, h)| h)
    }
}

impl Default for AdminFile {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9100".into(),
            viewer_group: "tollgate-viewer".into(),
            auditor_group: "tollgate-auditor".into(),
            admin_group: "tollgate-admin".into(),
            approver_group: "tollgate-approver".into(),
            approval_window_s: 3600,
            socket_group: None,
            hours: BTreeMap::new(),
            refuse_off_hours: false,
            bulk_read_records: Oversight::default().bulk_read_records,
            bulk_read_window_s: Oversight::default().bulk_read_window.as_secs(),
        }
    }
}

impl AdminFile {
    /// What is wrong with the section, each where it is.
    pub(super) fn problems(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        if !(60..=86_400).contains(&self.approval_window_s) {
            out.push(invalid(
                "admin.approval_window_s",
                "60 to 86400 seconds (an approval is for one export soon, not a standing right)",
            ));
        }
        let others = [&self.viewer_group, &self.auditor_group, &self.admin_group];
        if others.contains(&&self.approver_group) {
            out.push(invalid(
                "admin.approver_group",
                "a group of its own (the approver role is implied by no other)",
            ));
        }
        if self.bulk_read_records == 0 || !(60..=7 * 86_400).contains(&self.bulk_read_window_s) {
            out.push(invalid(
                "admin.bulk_read_records",
                "at least 1 record, in a bulk_read_window_s of 60 to 604800 seconds",
            ));
        }
        if let Err(e) = self.oversight() {
            out.push(e);
        }
        out
    }

    /// The working hours and bulk-read limit, checked.
    pub(super) fn oversight(&self) -> Result<Oversight, ConfigError> {
        let mut hours = Vec::new();
        for (role, f) in &self.hours {
            let at = format!("admin.hours.{role}");
            if !ROLES.contains(&role.as_str()) {
                return Err(invalid(at, "a role: viewer, auditor, admin or approver"));
            }
            hours.push((role.clone(), Hours::parse(&at, f)?));
        }
        Ok(Oversight {
            hours,
            refuse_off_hours: self.refuse_off_hours,
            bulk_read_records: self.bulk_read_records,
            bulk_read_window: std::time::Duration::from_secs(self.bulk_read_window_s),
        })
    }
}
