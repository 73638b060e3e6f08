//! Two-person approval for data leaving the appliance.
//!
//! A bulk read that reveals whole numbers (`tollgate cdr export`) no
//! longer runs at once: the requester files a request naming the filters
//! and a reason; a different person holding the `approver` role (a group
//! of its own, implied by no other role) approves or refuses it; the
//! requester then runs it once, within `[admin] approval_window_s` of the
//! approval. An approval is for one export, not a standing right.
//!
//! Requests are kept in `approvals.json` in the data directory (written
//! whole on each change, through a temporary file and a rename), so a
//! restart neither loses a pending request nor revives a used one.
//! Bounded: at most [`MAX_PENDING_PER_UID`] pending requests per person
//! and [`MAX_KEPT`] in all (the oldest finished ones go first; every
//! decision is in the audit trail anyway).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::roles::Operator;

/// Pending requests one person may have.
pub const MAX_PENDING_PER_UID: usize = 10;
/// Requests kept in all.
pub const MAX_KEPT: usize = 1000;
/// Longest reason, in characters.
pub const MAX_REASON: usize = 500;

/// What a request asks to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// `cdr export` of the records that started in `[from_ms, to_ms)`.
    Export {
        from_ms: u64,
        to_ms: u64,
        format: super::control::Format,
    },
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Export {
                from_ms,
                to_ms,
                format,
            } => write!(f, "cdr export {from_ms}..{to_ms} {format:?}"),
        }
    }
}

/// Where a request stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    Pending,
    Approved {
        by: String,
        by_uid: u32,
        at_ms: u64,
    },
    Refused {
        by: String,
        by_uid: u32,
        at_ms: u64,
    },
    /// Run once; it cannot run again.
    Used {
        approved_by: String,
        at_ms: u64,
    },
}

/// One request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    pub requester: String,
    pub requester_uid: u32,
    pub action: Action,
    pub reason: String,
    pub filed_ms: u64,
    #[serde(flatten)]
    pub state: State,
}

/// The requests, persisted.
pub struct Approvals {
    path: PathBuf,
    window_ms: u64,
    list: Mutex<Vec<Approval>>,
}

impl Approvals {
    /// The requests in `data_dir`; an approval is good for `window_ms`.
    pub fn open(data_dir: &Path, window_ms: u64) -> Result<Self, String> {
        let path = data_dir.join("approvals.json");
        let list = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| format!("{}: unreadable ({e})", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(Self {
            path,
            window_ms,
            list: Mutex::new(list),
        })
    }

    fn save(&self, list: &[Approval]) -> Result<(), String> {
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(list).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }

    /// Runs `f` on the list and saves it if `f` succeeded; a failed save
    /// undoes the change.
    fn change<T>(
        &self,
        f: impl FnOnce(&mut Vec<Approval>) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        let before = list.clone();
        let out = f(&mut list)?;
        if let Err(e) = self.save(&list) {
            *list = before;
            return Err(e);
        }
        Ok(out)
    }

    /// Files a request by `op`.
    pub fn file(
        &self,
        op: &Operator,
        action: Action,
        reason: &str,
        now_ms: u64,
    ) -> Result<Approval, String> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err("a request needs a reason (--reason)".into());
        }
        if reason.chars().count() > MAX_REASON || reason.chars().any(char::is_control) {
            return Err(format!(
                "a reason is one line of at most {MAX_REASON} characters"
            ));
        }
        self.change(|list| {
            let pending = list
                .iter()
                .filter(|a| a.requester_uid == op.uid && a.state == State::Pending)
                .count();
            if pending >= MAX_PENDING_PER_UID {
                return Err(format!(
                    "{} has {pending} requests pending already; wait for a decision",
                    op.actor()
                ));
            }
            while list.len() >= MAX_KEPT {
                match list.iter().position(|a| a.state != State::Pending) {
                    Some(i) => {
                        list.remove(i);
                    }
                    None => return Err("too many requests pending".into()),
                }
            }
            let a = Approval {
                id: hex::encode(crate::crypto::random_u32().to_be_bytes())
                    + &hex::encode(crate::crypto::random_u32().to_be_bytes()),
                requester: op.actor(),
                requester_uid: op.uid,
                action,
                reason: reason.to_string(),
                filed_ms: now_ms,
                state: State::Pending,
            };
            list.push(a.clone());
            Ok(a)
        })
    }

    /// Every request kept, oldest first.
    pub fn list(&self) -> Vec<Approval> {
        self.list.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `op` approves or refuses request `id`: only someone other than the
    /// requester, only while it is pending.
    pub fn decide(
        &self,
        id: &str,
        op: &Operator,
        approve: bool,
        now_ms: u64,
    ) -> Result<Approval, String> {
        self.change(|list| {
            let a = list
                .iter_mut()
                .find(|a| a.id == id)
                .ok_or_else(|| format!("no request {id}"))?;
            if a.requester_uid == op.uid {
                return Err(format!(
                    "{} filed request {id}: someone else must decide it",
                    op.actor()
                ));
            }
            if a.state != State::Pending {
                return Err(format!("request {id} is decided already"));
            }
            let (by, by_uid, at_ms) = (op.actor(), op.uid, now_ms);
            a.state = if approve {
                State::Approved { by, by_uid, at_ms }
            } else {
                State::Refused { by, by_uid, at_ms }
            };
            Ok(a.clone())
        })
    }

    /// `op` runs approved request `id`, once: its requester only, within
    /// the window. Returns it as it was approved.
    pub fn take(&self, id: &str, op: &Operator, now_ms: u64) -> Result<Approval, String> {
        let window = self.window_ms;
        self.change(|list| {
            let a = list
                .iter_mut()
                .find(|a| a.id == id)
                .ok_or_else(|| format!("no request {id}"))?;
            if a.requester_uid != op.uid {
                return Err(format!(
                    "request {id} is {}'s to run, not {}'s",
                    a.requester,
                    op.actor()
                ));
            }
            let approved = match &a.state {
                State::Approved { at_ms, .. } => {
                    if now_ms.saturating_sub(*at_ms) > window {
                        return Err(format!(
                            "the approval of request {id} has lapsed ({} s to use it); file another",
                            window / 1000
                        ));
                    }
                    a.clone()
                }
                State::Pending => return Err(format!("request {id} is not approved yet")),
                State::Refused { by, .. } => {
                    return Err(format!("request {id} was refused by {by}"))
                }
                State::Used { .. } => {
                    return Err(format!("request {id} was used already; file another"))
                }
            };
            let approved_by = match &approved.state {
                State::Approved { by, .. } => by.clone(),
                _ => String::new(),
            };
            a.state = State::Used {
                approved_by,
                at_ms: now_ms,
            };
            Ok(approved)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::control::Format;
    use crate::admin::roles::Role;

    fn op(uid: u32) -> Operator {
        Operator {
            uid,
            name: format!("u{uid}"),
            roles: vec![Role::Auditor, Role::Approver],
        }
    }

    fn export() -> Action {
        Action::Export {
            from_ms: 0,
            to_ms: 10,
            format: Format::Csv,
        }
    }

    #[test]
    fn a_request_needs_a_second_person_and_runs_once_within_the_window() {
        let d = std::env::temp_dir().join(format!("tollgate-approvals-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        let a = Approvals::open(&d, 60_000).expect("open");
        assert!(a.file(&op(1), export(), "  ", 0).is_err(), "no reason");
        let r = a.file(&op(1), export(), "dispute 42", 0).expect("file");
        // Not yet approved; not self-approved.
        assert!(a
            .take(&r.id, &op(1), 1)
            .expect_err("refused")
            .contains("not approved"));
        assert!(a
            .decide(&r.id, &op(1), true, 1)
            .expect_err("refused")
            .contains("someone else"));
        a.decide(&r.id, &op(2), true, 1_000).expect("approved");
        assert!(a.decide(&r.id, &op(3), false, 2).is_err(), "decided once");
        // Only its requester runs it, once.
        assert!(a.take(&r.id, &op(2), 2_000).is_err());
        let ran = a.take(&r.id, &op(1), 2_000).expect("run");
        assert_eq!(ran.action, export());
        assert!(matches!(ran.state, State::Approved { by_uid: 2, .. }));
        assert!(a
            .take(&r.id, &op(1), 3_000)
            .expect_err("refused")
            .contains("used"));
        // A restart keeps that.
        let again = Approvals::open(&d, 60_000).expect("reopen");
        assert!(again.take(&r.id, &op(1), 4_000).is_err());
        assert!(matches!(again.list()[0].state, State::Used { .. }));
        // An approval lapses after the window; a refusal is final.
        let late = again.file(&op(1), export(), "late", 0).expect("file");
        again.decide(&late.id, &op(2), true, 0).expect("approve");
        assert!(again
            .take(&late.id, &op(1), 60_001)
            .expect_err("refused")
            .contains("lapsed"));
        let no = again.file(&op(1), export(), "no", 0).expect("file");
        again.decide(&no.id, &op(2), false, 0).expect("refuse");
        assert!(again
            .take(&no.id, &op(1), 1)
            .expect_err("refused")
            .contains("refused"));
        // Bounded per person.
        for i in 0..MAX_PENDING_PER_UID {
            again
                .file(&op(7), export(), &format!("r{i}"), 0)
                .expect("file");
        }
        assert!(again.file(&op(7), export(), "one more", 0).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
