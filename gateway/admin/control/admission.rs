//! Who may hold an admin-socket connection: at most
//! [`MAX_CONNECTIONS`], [`MAX_CONNECTIONS_PER_USER`] per local user (root
//! and the gateway's own user are held only to the total).

use std::collections::HashMap;
use std::sync::Arc;

use super::{MAX_CONNECTIONS, MAX_CONNECTIONS_PER_USER};

/// Connections open now, in all and by uid.
#[derive(Default)]
pub(super) struct Admission {
    total: usize,
    by_uid: HashMap<u32, usize>,
}

/// One admitted connection; its place is given back when dropped.
pub(super) struct Admitted {
    table: Arc<std::sync::Mutex<Admission>>,
    uid: u32,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.total = t.total.saturating_sub(1);
        if let Some(n) = t.by_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                t.by_uid.remove(&self.uid);
            }
        }
    }
}

/// A place for a connection from `uid`, if there is one.
pub(super) fn admit(
    table: &Arc<std::sync::Mutex<Admission>>,
    uid: u32,
    own: u32,
) -> Option<Admitted> {
    let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
    let mine = t.by_uid.get(&uid).copied().unwrap_or(0);
    let exempt = uid == 0 || uid == own;
    if t.total >= MAX_CONNECTIONS || (!exempt && mine >= MAX_CONNECTIONS_PER_USER) {
        return None;
    }
    t.total += 1;
    *t.by_uid.entry(uid).or_default() += 1;
    Some(Admitted {
        table: table.clone(),
        uid,
    })
}
