//! The `[admin]` section: the metrics listener, the operators' role
//! groups and the export approvals' window.

use serde::Deserialize;

use super::{invalid, ConfigError};

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
        out
    }
}
