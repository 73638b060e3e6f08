//! Lockouts after failed logins, per agent and per source address,
//! sans-IO (the caller passes `now`). Each table is bounded: when full,
//! entries whose lockout has passed are dropped first, and a source that
//! still finds no room is treated as locked (refusing is the safe side
//! under a flood of sources).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Most entries per table.
pub const MAX_ENTRIES: usize = 65_536;

#[derive(Clone, Copy, Debug)]
struct Strikes {
    count: u32,
    until: Option<Instant>,
}

/// Failed attempts by key.
#[derive(Debug)]
pub struct Lockout<K> {
    max_failures: u32,
    lockout: Duration,
    table: HashMap<K, Strikes>,
}

impl<K: Hash + Eq + Clone> Lockout<K> {
    pub fn new(max_failures: u32, lockout: Duration) -> Self {
        Self {
            max_failures: max_failures.max(1),
            lockout,
            table: HashMap::new(),
        }
    }

    /// Whether `key` is locked out at `now`.
    pub fn locked(&mut self, key: &K, now: Instant) -> bool {
        match self.table.get(key).and_then(|s| s.until) {
            Some(until) if until > now => true,
            Some(_) => {
                // The lockout passed: start again from zero.
                self.table.remove(key);
                false
            }
            None => false,
        }
    }

    /// Records a failure; returns true if `key` is now locked out.
    pub fn fail(&mut self, key: &K, now: Instant) -> bool {
        if !self.table.contains_key(key) && self.table.len() >= MAX_ENTRIES {
            self.table.retain(|_, s| s.until.is_none_or(|u| u > now));
            if self.table.len() >= MAX_ENTRIES {
                return true;
            }
        }
        let s = self.table.entry(key.clone()).or_insert(Strikes {
            count: 0,
            until: None,
        });
        s.count += 1;
        if s.count >= self.max_failures {
            s.until = Some(now + self.lockout);
        }
        s.until.is_some()
    }

    /// A success clears the count.
    pub fn succeed(&mut self, key: &K) {
        self.table.remove(key);
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_failures_for_the_lockout_then_forgives() {
        let t0 = Instant::now();
        let mut l = Lockout::new(3, Duration::from_secs(60));
        assert!(!l.fail(&"a", t0));
        assert!(!l.fail(&"a", t0));
        assert!(!l.locked(&"a", t0));
        assert!(l.fail(&"a", t0));
        assert!(l.locked(&"a", t0 + Duration::from_secs(59)));
        assert!(!l.locked(&"b", t0));
        assert!(!l.locked(&"a", t0 + Duration::from_secs(60)));
        // Forgiven: a fresh count.
        assert!(!l.fail(&"a", t0 + Duration::from_secs(61)));
        l.succeed(&"a");
        assert!(l.is_empty());
    }

    #[test]
    fn table_is_bounded() {
        let t0 = Instant::now();
        let mut l = Lockout::new(1, Duration::from_secs(1));
        for i in 0..MAX_ENTRIES as u32 {
            l.fail(&i, t0);
        }
        assert_eq!(l.len(), MAX_ENTRIES);
        // Full of live lockouts: a new key is refused, the table stays put.
        assert!(l.fail(&u32::MAX, t0));
        assert_eq!(l.len(), MAX_ENTRIES);
        // Once they expire, room is made.
        assert!(l.fail(&u32::MAX, t0 + Duration::from_secs(2)));
        assert_eq!(l.len(), 1);
    }
}
