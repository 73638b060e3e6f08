//! Two-person approval for data leaving the appliance.
//!
//! A bulk read that reveals whole numbers (`tollgate cdr export`) no
//! longer runs at once: the requester files a request naming the filters
//! and a reason; a different person holding the `approver` role (a group
//! of its own, implied by no other role) approves or refuses it; the
//! requester then runs it once, within `[admin] approval_window_s` of the
//! approval. An approval is for one export, not a standing right.
//!
//! Requests are kept in `approvals.json` in the data directory (mode
//! 0600, written whole on each change through a synced temporary file and
//! a rename). A restart keeps pending requests but lapses approved ones
//! not yet run, so a file restored from an older copy (a power loss, a
//! backup) cannot run a used approval again. An unreadable file is moved
//! aside and the gateway starts with none (calls never wait on it).
//! Bounded: at most [`MAX_PENDING_PER_UID`] pending requests per person
//! and [`MAX_KEPT`] in all (the oldest refused, used or lapsed go first);
//! a pending request lapses after [`PENDING_MS`]. Every filing and
//! decision is in the audit trail too.
//!
//! Not yet: the file carries no MAC (an offline edit by someone who can
//! write the data directory, who could also replace the binary, is not
//! detected here), and two uids of one person (sudo) are two people.

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
/// How long a request may wait for a decision.
pub const PENDING_MS: u64 = 7 * 24 * 3600 * 1000;

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
    /// `cdr erase` of every finished record of one number, named here
    /// only by its keyed hash ([`super::erase::NumberHash`]).
    Erase { number_hash: String },
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Export {
                from_ms,
                to_ms,
                format,
            } => write!(f, "cdr export {from_ms}..{to_ms} {format:?}"),
            Action::Erase { number_hash } => write!(f, "cdr erase number hmac {number_hash}"),
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
        #[serde(default)]
        approved_by_uid: u32,
        at_ms: u64,
    },
    /// Not decided in time, not run in time, or approved before a restart.
    Lapsed {
        at_ms: u64,
    },
}

impl State {
    fn finished(&self) -> bool {
        matches!(
            self,
            State::Refused { .. } | State::Used { .. } | State::Lapsed { .. }
        )
    }
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
    /// Approved requests not yet run lapse (see the module doc).
    pub fn open(data_dir: &Path, window_ms: u64, now_ms: u64) -> Self {
        let path = data_dir.join("approvals.json");
        let mut list: Vec<Approval> = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                let aside = path.with_extension(format!("json.unreadable-{now_ms}"));
                tracing::warn!(
                    "{}: unreadable ({e}); moved to {} and starting with no requests",
                    path.display(),
                    aside.display()
                );
                let _ = std::fs::rename(&path, &aside);
                Vec::new()
            }),
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("{}: {e}; starting with no requests", path.display());
                }
                Vec::new()
            }
        };
        for a in &mut list {
            if matches!(a.state, State::Approved { .. }) {
                a.state = State::Lapsed { at_ms: now_ms };
            }
        }
        Self {
            path,
            window_ms,
            list: Mutex::new(list),
        }
    }

    fn save(&self, list: &[Approval]) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(list).map_err(|e| e.to_string())?;
        crate::keys::write_private(&self.path, &text, true)
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }

    /// Lapses pending requests past [`PENDING_MS`] and approvals past the
    /// window (or stamped in the future: the clock went back).
    fn lapse(&self, list: &mut [Approval], now_ms: u64) {
        for a in list {
            let lapsed = match &a.state {
                State::Pending => now_ms < a.filed_ms || now_ms - a.filed_ms > PENDING_MS,
                State::Approved { at_ms, .. } => {
                    now_ms < *at_ms || now_ms - *at_ms > self.window_ms
                }
                _ => false,
            };
            if lapsed {
                a.state = State::Lapsed { at_ms: now_ms };
            }
        }
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

    /// [`Approvals::change`] on request `id`, as it stands at `now_ms`.
    fn change_one<T>(
        &self,
        id: &str,
        now_ms: u64,
        f: impl FnOnce(&mut Approval) -> Result<T, String>,
    ) -> Result<T, String> {
        self.change(|list| {
            self.lapse(list, now_ms);
            let a = list
                .iter_mut()
                .find(|a| a.id == id)
                .ok_or_else(|| format!("no request {id}"))?;
            f(a)
        })
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
            self.lapse(list, now_ms);
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
                match list.iter().position(|a| a.state.finished()) {
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
    pub fn list(&self, now_ms: u64) -> Vec<Approval> {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        self.lapse(&mut list, now_ms);
        list.clone()
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
        self.change_one(id, now_ms, |a| {
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
    /// the window, and only for what `fits` accepts (an erasure's number
    /// must be the one approved; a refusal leaves the approval unused).
    /// Returns it as it was approved.
    pub fn take(
        &self,
        id: &str,
        op: &Operator,
        now_ms: u64,
        fits: impl FnOnce(&Action) -> Result<(), String>,
    ) -> Result<Approval, String> {
        self.change_one(id, now_ms, |a| {
            if a.requester_uid != op.uid {
                return Err(format!(
                    "request {id} is {}'s to run, not {}'s",
                    a.requester,
                    op.actor()
                ));
            }
            fits(&a.action)?;
            let approved = match &a.state {
                State::Approved { .. } => a.clone(),
                State::Lapsed { .. } => {
                    return Err(format!(
                        "request {id} has lapsed (undecided for {} days, not run within {} s of its approval, or approved before a restart); file another",
                        PENDING_MS / (24 * 3600 * 1000),
                        self.window_ms / 1000
                    ))
                }
                State::Pending => return Err(format!("request {id} is not approved yet")),
                State::Refused { by, .. } => {
                    return Err(format!("request {id} was refused by {by}"))
                }
                State::Used { .. } => {
                    return Err(format!("request {id} was used already; file another"))
                }
            };
            let (approved_by, approved_by_uid) = match &approved.state {
                State::Approved { by, by_uid, .. } => (by.clone(), *by_uid),
                _ => (String::new(), 0),
            };
            a.state = State::Used {
                approved_by,
                approved_by_uid,
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

    fn any(_: &Action) -> Result<(), String> {
        Ok(())
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
        let a = Approvals::open(&d, 60_000, 0);
        assert!(a.file(&op(1), export(), "  ", 0).is_err(), "no reason");
        let r = a.file(&op(1), export(), "dispute 42", 0).expect("file");
        // Not yet approved; not self-approved.
        assert!(a
            .take(&r.id, &op(1), 1, any)
            .expect_err("refused")
            .contains("not approved"));
        assert!(a
            .decide(&r.id, &op(1), true, 1)
            .expect_err("refused")
            .contains("someone else"));
        a.decide(&r.id, &op(2), true, 1_000).expect("approved");
        assert!(
            a.decide(&r.id, &op(3), false, 1_500).is_err(),
            "decided once"
        );
        // Only its requester runs it, only for what it was approved
        // for (a refusal leaves it unused), once.
        assert!(a.take(&r.id, &op(2), 2_000, any).is_err());
        assert!(a
            .take(&r.id, &op(1), 2_000, |_| Err("another number".into()))
            .expect_err("refused")
            .contains("another number"));
        let ran = a.take(&r.id, &op(1), 2_000, any).expect("run");
        assert_eq!(ran.action, export());
        assert!(matches!(ran.state, State::Approved { by_uid: 2, .. }));
        assert!(a
            .take(&r.id, &op(1), 3_000, any)
            .expect_err("refused")
            .contains("used"));
        // A restart keeps that, and lapses an approval not yet run (a
        // file restored from before its use cannot run it again).
        let pending = a.file(&op(1), export(), "restart", 0).expect("file");
        let approved = a.file(&op(1), export(), "restored", 0).expect("file");
        a.decide(&approved.id, &op(2), true, 3_000)
            .expect("approve");
        let again = Approvals::open(&d, 60_000, 4_000);
        assert!(again.take(&r.id, &op(1), 4_000, any).is_err());
        let list = again.list(4_000);
        assert!(matches!(
            list[0].state,
            State::Used {
                approved_by_uid: 2,
                ..
            }
        ));
        assert_eq!(list[1].state, State::Pending);
        assert!(again
            .take(&approved.id, &op(1), 4_000, any)
            .expect_err("lapsed")
            .contains("lapsed"));
        again
            .decide(&pending.id, &op(2), true, 5_000)
            .expect("approve");
        // The clock went back: an approval from the future lapses.
        assert!(again
            .take(&pending.id, &op(1), 4_000, any)
            .expect_err("lapsed")
            .contains("lapsed"));
        // A pending request lapses after a week undecided.
        let slow = again.file(&op(1), export(), "slow", 0).expect("file");
        assert!(again
            .decide(&slow.id, &op(2), true, PENDING_MS + 1)
            .is_err());
        // An approval lapses after the window; a refusal is final.
        let late = again.file(&op(1), export(), "late", 0).expect("file");
        again.decide(&late.id, &op(2), true, 0).expect("approve");
        assert!(again
            .take(&late.id, &op(1), 60_001, any)
            .expect_err("refused")
            .contains("lapsed"));
        let no = again.file(&op(1), export(), "no", 0).expect("file");
        again.decide(&no.id, &op(2), false, 0).expect("refuse");
        assert!(again
            .take(&no.id, &op(1), 1, any)
            .expect_err("refused")
            .contains("refused"));
        // Bounded per person.
        for i in 0..MAX_PENDING_PER_UID {
            again
                .file(&op(7), export(), &format!("r{i}"), 0)
                .expect("file");
        }
        assert!(again.file(&op(7), export(), "one more", 0).is_err());
        // An unreadable file is moved aside; the gateway starts anyway.
        std::fs::write(d.join("approvals.json"), b"{ not json").expect("write");
        assert!(Approvals::open(&d, 60_000, 9).list(9).is_empty());
        assert!(d.join("approvals.json.unreadable-9").exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}
