//! Operators' unusual access to customer data (`[admin.hours.<role>]`,
//! `[admin] bulk_read_records`): a request that reads records or moves
//! them (list, show, export, erase, and approving those) outside the
//! working hours of the role that grants it, and one operator reading
//! more whole-number records than the limit within its window, are
//! anomalies ([`crate::telemetry::anomaly`]). With `[admin]
//! refuse_off_hours`, an off-hours request that would show whole numbers
//! is refused as well as reported.
//!
//! Windows are measured on the monotonic clock, so a wall-clock jump
//! neither resets nor stretches them; the working hours are wall-clock
//! by nature (a clock set to the night flags reads, which is the safe
//! side).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::control::{Admin, Request};
use super::roles::{Operator, Role};
use crate::telemetry::anomaly::Kind;

/// Operators whose reads are counted at once (more are forgotten oldest
/// window first; operators are people, so this is never reached).
const MAX_COUNTED: usize = 4096;

/// What a request does with customer data: the role whose working hours
/// apply, and whether it shows whole numbers. `None` for requests that
/// touch no customer data.
pub fn touches(req: &Request, op: &Operator) -> Option<(Role, bool)> {
    match req {
        Request::CdrList { .. } | Request::CdrShow { .. } => Some(if op.has(Role::Auditor) {
            (Role::Auditor, true)
        } else {
            (Role::Viewer, false)
        }),
        Request::CdrExport { .. } => Some((Role::Auditor, true)),
        Request::ExportRequest { .. } | Request::EraseRequest { .. } | Request::CdrErase { .. } => {
            Some((Role::Auditor, false))
        }
        Request::ApprovalDecide { .. } => Some((Role::Approver, false)),
        _ => None,
    }
}

struct Window {
    start: Instant,
    records: u64,
    flagged: bool,
}

/// Whole-number records read per operator in the current window.
#[derive(Default)]
pub struct Reads(Mutex<HashMap<u32, Window>>);

impl Reads {
    /// Counts `n` records read by `uid` at `now`; returns the window's
    /// total the first time in a window it goes over `limit`.
    pub fn add(&self, uid: u32, n: u64, now: Instant, limit: u64, window: Duration) -> Option<u64> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_COUNTED && !map.contains_key(&uid) {
            map.retain(|_, w| now.saturating_duration_since(w.start) < window);
            if map.len() >= MAX_COUNTED {
                let oldest = map.iter().min_by_key(|(_, w)| w.start).map(|(u, _)| *u);
                if let Some(u) = oldest {
                    map.remove(&u);
                }
            }
        }
        let w = map.entry(uid).or_insert(Window {
            start: now,
            records: 0,
            flagged: false,
        });
        if now.saturating_duration_since(w.start) >= window {
            *w = Window {
                start: now,
                records: 0,
                flagged: false,
            };
        }
        w.records = w.records.saturating_add(n);
        if w.records > limit && !w.flagged {
            w.flagged = true;
            return Some(w.records);
        }
        None
    }
}

/// Flags a request that reads or moves customer data outside the
/// working hours of the role that grants it; with `[admin]
/// refuse_off_hours`, one that shows whole numbers is refused: why.
pub(super) fn off_hours(
    req: &Request,
    op: &Operator,
    admin: &Admin,
    action: &str,
    target: &str,
) -> Option<String> {
    let (role, reveals) = touches(req, op)?;
    let config = admin.config.borrow().clone();
    let hours = config.oversight.hours_of(&role.to_string())?;
    if hours.contains(jiff::Timestamp::now()) {
        return None;
    }
    let refuse = reveals && config.oversight.refuse_off_hours;
    admin.anomalies.raise(
        Kind::OperatorOffHours,
        &op.actor(),
        &format!("{action} {target} outside the {role} role's hours ({hours})"),
        refuse,
    );
    refuse.then(|| {
        format!(
            "refused: {action} shows whole numbers and it is outside the {role} role's working hours ({hours}); [admin] refuse_off_hours is on"
        )
    })
}

/// Counts whole-number records `op` read; past `[admin]
/// bulk_read_records` in its window, an anomaly.
pub(super) fn count_reads(admin: &Admin, op: &Operator, n: u64) {
    let o = admin.config.borrow().oversight.clone();
    let now = std::time::Instant::now();
    if let Some(total) = admin
        .reads
        .add(op.uid, n, now, o.bulk_read_records, o.bulk_read_window)
    {
        admin.anomalies.raise(
            Kind::BulkRead,
            &op.actor(),
            &format!(
                "{total} whole-number records read within {} s (limit {})",
                o.bulk_read_window.as_secs(),
                o.bulk_read_records
            ),
            false,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bulk_read_is_flagged_once_per_window_per_operator() {
        let r = Reads::default();
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        assert_eq!(r.add(1, 60, t0, 100, hour), None);
        // Another operator's reads are theirs.
        assert_eq!(r.add(2, 90, t0, 100, hour), None);
        assert_eq!(
            r.add(1, 41, t0 + Duration::from_secs(60), 100, hour),
            Some(101)
        );
        assert_eq!(
            r.add(1, 500, t0 + Duration::from_secs(120), 100, hour),
            None
        );
        // A new window starts afresh.
        assert_eq!(r.add(1, 100, t0 + hour, 100, hour), None);
        assert_eq!(r.add(1, 1, t0 + hour, 100, hour), Some(101));
    }

    #[test]
    fn reads_and_moves_of_customer_data_have_a_role_whose_hours_apply() {
        let op = |roles: Vec<Role>| Operator {
            uid: 1,
            name: "u".into(),
            roles,
        };
        let list = Request::CdrList {
            from_ms: 0,
            to_ms: 1,
            agent: None,
        };
        assert_eq!(
            touches(&list, &op(vec![Role::Auditor])),
            Some((Role::Auditor, true))
        );
        assert_eq!(
            touches(&list, &op(vec![Role::Admin])),
            Some((Role::Viewer, false))
        );
        assert_eq!(
            touches(
                &Request::CdrExport {
                    approval: "x".into()
                },
                &op(vec![Role::Auditor])
            ),
            Some((Role::Auditor, true))
        );
        assert_eq!(touches(&Request::Bans, &op(vec![Role::Admin])), None);
    }
}
