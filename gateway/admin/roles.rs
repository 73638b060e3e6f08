//! Operators' roles from their Unix identity: the admin socket's peer
//! credentials (uid, gid, pid) and the peer's supplementary groups (read
//! from `/proc/<pid>/status`, so no libc call and no `unsafe`) are mapped
//! to roles through the configured groups.
//!
//! Roles are a set, not a ladder: an admin runs the system but sees no
//! phone numbers unless also an auditor (separation of duties). Viewer
//! rights come with auditor or admin. An approver decides others'
//! requests to take data out ([`super::approvals`]) and holds no other
//! right by it. Root and the daemon's own user hold every role but that
//! one: an approver is always someone in the approver group, so an
//! auditor with sudo does not approve their own export as root.

use std::fmt;

/// An operator role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Auditor,
    Admin,
    Approver,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
            Role::Approver => "approver",
        })
    }
}

/// Who is asking, and what they may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    pub uid: u32,
    pub name: String,
    pub roles: Vec<Role>,
}

impl Operator {
    pub fn has(&self, r: Role) -> bool {
        self.roles.contains(&r)
            || (r == Role::Viewer
                && self
                    .roles
                    .iter()
                    .any(|x| matches!(x, Role::Auditor | Role::Admin)))
    }

    /// How the audit trail names them: `alice (uid 1001)`.
    pub fn actor(&self) -> String {
        format!("{} (uid {})", self.name, self.uid)
    }
}

/// The configured groups, resolved to gids.
#[derive(Clone, Debug)]
pub struct Roles {
    /// (role, gid, how the configuration named it).
    groups: Vec<(Role, Option<u32>, String)>,
    daemon_uid: u32,
}

/// A group name's gid from `group` text (the format of /etc/group), or a
/// numeric gid as given.
pub fn gid_of(name: &str, group: &str) -> Option<u32> {
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    group.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

/// A uid's user name from `passwd` text, else the number.
fn user_name(uid: u32, passwd: &str) -> String {
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.get(2)?.parse::<u32>().ok()? == uid).then(|| f[0].to_string())
        })
        .unwrap_or_else(|| uid.to_string())
}

/// A field of this process's `/proc/self/status` (`"Uid:"`, `"Groups:"`),
/// trimmed.
pub(crate) fn own_status(field: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_string())
}

/// This process's uid, from `/proc/self/status` (no `unsafe` call).
pub fn current_uid() -> u32 {
    own_status("Uid:")
        .and_then(|u| u.split_whitespace().next()?.parse().ok())
        .unwrap_or(u32::MAX)
}

impl Roles {
    /// `names` are the viewer, auditor, admin and approver groups of the
    /// config.
    pub fn new(names: &[String; 4], daemon_uid: u32) -> Self {
        let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        let groups = [Role::Viewer, Role::Auditor, Role::Admin, Role::Approver]
            .into_iter()
            .zip(names.iter())
            .map(|(r, n)| (r, gid_of(n, &group), n.clone()))
            .collect::<Vec<_>>();
        for (r, gid, name) in &groups {
            if gid.is_none() {
                tracing::warn!(
                    "[admin] {r}_group {name:?}: no such group; nobody holds the {r} role{}",
                    if *r == Role::Approver {
                        " and no export can be approved"
                    } else {
                        ""
                    }
                );
            }
        }
        Self { groups, daemon_uid }
    }

    /// The group that gives `r`, as configured.
    pub fn group_for(&self, r: Role) -> &str {
        self.groups
            .iter()
            .find(|g| g.0 == r)
            .map_or("", |g| g.2.as_str())
    }

    /// The operator with `uid`, primary `gid` and supplementary `groups`.
    pub fn operator(&self, uid: u32, gid: u32, groups: &[u32]) -> Operator {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let member = |r: Role| {
            self.groups
                .iter()
                .any(|(x, g, _)| *x == r && g.is_some_and(|g| g == gid || groups.contains(&g)))
        };
        let roles = if uid == 0 || uid == self.daemon_uid {
            let mut all = vec![Role::Viewer, Role::Auditor, Role::Admin];
            if member(Role::Approver) {
                all.push(Role::Approver);
            }
            all
        } else {
            [Role::Viewer, Role::Auditor, Role::Admin, Role::Approver]
                .into_iter()
                .filter(|r| member(*r))
                .collect()
        };
        Operator {
            uid,
            name: user_name(uid, &passwd),
            roles,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_give_roles_and_roles_do_not_include_each_other() {
        let group = "root:x:0:\ntollgate-viewer:x:4100:bob\ntollgate-admin:x:4102:\n";
        assert_eq!(gid_of("tollgate-viewer", group), Some(4100));
        assert_eq!(gid_of("4101", group), Some(4101));
        assert_eq!(gid_of("nosuch", group), None);
        let roles = Roles {
            groups: vec![
                (Role::Viewer, Some(4100), "tollgate-viewer".into()),
                (Role::Auditor, Some(4101), "4101".into()),
                (Role::Admin, Some(4102), "tollgate-admin".into()),
            ],
            daemon_uid: 999,
        };
        let viewer = roles.operator(5000, 5000, &[4100]);
        assert_eq!(viewer.roles, vec![Role::Viewer]);
        assert!(viewer.has(Role::Viewer) && !viewer.has(Role::Auditor));
        let admin = roles.operator(5001, 4102, &[]);
        assert!(admin.has(Role::Admin) && admin.has(Role::Viewer) && !admin.has(Role::Auditor));
        let nobody = roles.operator(5002, 5002, &[]);
        assert!(!nobody.has(Role::Viewer));
        assert!(roles.operator(0, 0, &[]).has(Role::Auditor));
        assert!(roles.operator(999, 999, &[]).has(Role::Admin));
        assert_eq!(roles.group_for(Role::Auditor), "4101");
    }
}
