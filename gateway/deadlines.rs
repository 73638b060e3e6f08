//! Tables whose entries each have a deadline of their own (the call
//! core's calls and agents' dials, the SIP transactions), kept with a
//! timer heap, so the next deadline is read off the heap's top instead of
//! a scan of every entry each loop turn, and a timer wake visits only the
//! entries that are due. Written here rather than taken from a crate
//! (`tokio-util`'s `DelayQueue`, `priority-queue`) because an entry's
//! deadline is not set by callers: it is derived from the entry's own
//! fields ([`Timed`]), so it cannot drift from them.
//!
//! Every mutable access marks the entry; the marked entries' deadlines
//! are read again (O(log n) each) before the heap is next consulted.
//! The heap keeps superseded deadlines until they surface, checked
//! against the entry's current one, and is rebuilt when they outnumber
//! the live ones, so it stays within a small multiple of the table.

use std::borrow::Borrow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// An entry that may need the core at a time of its own.
pub(crate) trait Timed {
    /// The earliest time the entry needs the core, if any.
    fn next_deadline(&self) -> Option<Instant>;
}

/// A map whose entries' deadlines are kept in a heap.
pub(crate) struct Table<K, V> {
    map: HashMap<K, V>,
    heap: BinaryHeap<Reverse<(Instant, K)>>,
    /// Each entry's deadline as the heap knows it.
    scheduled: HashMap<K, Instant>,
    /// Entries changed since their deadlines were last read.
    dirty: Vec<K>,
}

impl<K: Hash + Eq + Ord + Clone, V: Timed> Default for Table<K, V> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            heap: BinaryHeap::new(),
            scheduled: HashMap::new(),
            dirty: Vec::new(),
        }
    }
}

impl<K: Hash + Eq + Ord + Clone, V: Timed> Table<K, V> {
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub(crate) fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(k)
    }

    /// The entry, marked for its deadline to be read again.
    pub(crate) fn get_mut<Q>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let key = self.map.get_key_value(k)?.0.clone();
        self.dirty.push(key);
        self.map.get_mut(k)
    }

    pub(crate) fn insert(&mut self, k: K, v: V) -> Option<V> {
        self.dirty.push(k.clone());
        self.map.insert(k, v)
    }

    /// Takes the entry out; its deadline goes with it.
    pub(crate) fn remove<Q>(&mut self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.scheduled.remove(k);
        self.map.remove(k)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.map.keys()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }

    /// Reads the deadlines of the entries changed since the last call.
    fn reschedule(&mut self) {
        for k in std::mem::take(&mut self.dirty) {
            match self.map.get(&k).and_then(Timed::next_deadline) {
                Some(t) => {
                    if self.scheduled.insert(k.clone(), t) != Some(t) {
                        self.heap.push(Reverse((t, k)));
                    }
                }
                None => {
                    self.scheduled.remove(&k);
                }
            }
        }
        if self.heap.len() > 2 * self.scheduled.len() + 64 {
            self.heap = self
                .scheduled
                .iter()
                .map(|(k, t)| Reverse((*t, k.clone())))
                .collect();
        }
    }

    /// The earliest deadline of any entry.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        self.reschedule();
        while let Some(Reverse((t, k))) = self.heap.peek() {
            if self.scheduled.get(k) == Some(t) {
                return Some(*t);
            }
            self.heap.pop();
        }
        None
    }

    /// The entries whose deadline is `now` or past, earliest first; each is
    /// marked, so its next deadline is read again.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<K> {
        self.reschedule();
        let mut out = Vec::new();
        while let Some(Reverse((t, k))) = self.heap.peek() {
            if *t > now {
                break;
            }
            if self.scheduled.get(k) == Some(t) {
                self.scheduled.remove(k);
                out.push(k.clone());
            }
            self.heap.pop();
        }
        self.dirty.extend(out.iter().cloned());
        out
    }
}

impl<K, Q, V> std::ops::Index<&Q> for Table<K, V>
where
    K: Hash + Eq + Borrow<Q>,
    Q: Hash + Eq + ?Sized,
{
    type Output = V;

    fn index(&self, k: &Q) -> &V {
        &self.map[k]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Entry(Option<Instant>);

    impl Timed for Entry {
        fn next_deadline(&self) -> Option<Instant> {
            self.0
        }
    }

    #[test]
    fn the_next_deadline_follows_the_entries_own_fields() {
        let t0 = Instant::now();
        let at = |ms| Some(t0 + Duration::from_millis(ms));
        let mut t: Table<u64, Entry> = Table::default();
        t.insert(1, Entry(at(300)));
        t.insert(2, Entry(at(100)));
        t.insert(3, Entry(None));
        assert_eq!(t.next_deadline(), at(100));
        // Moved later through get_mut: the old 100 ms entry is superseded.
        if let Some(e) = t.get_mut(&2) {
            e.0 = at(500);
        }
        assert_eq!(t.next_deadline(), at(300));
        // Read-only access changes nothing; removal takes the deadline.
        assert!(t.get(&3).is_some());
        t.remove(&1);
        assert_eq!(t.next_deadline(), at(500));
        t.remove(&2);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn a_wake_visits_only_what_is_due_and_reads_it_again() {
        let t0 = Instant::now();
        let at = |ms| Some(t0 + Duration::from_millis(ms));
        let mut t: Table<u64, Entry> = Table::default();
        for k in 0..1000u64 {
            t.insert(k, Entry(at(1000 + k)));
        }
        t.insert(5000, Entry(at(10)));
        t.insert(5001, Entry(at(20)));
        let due = t.due(t0 + Duration::from_millis(20));
        assert_eq!(due, vec![5000, 5001]);
        // Untouched after the wake, an entry keeps its (past) deadline:
        // it is read again, not lost.
        assert_eq!(t.next_deadline(), at(10));
        if let Some(e) = t.get_mut(&5000) {
            e.0 = None;
        }
        if let Some(e) = t.get_mut(&5001) {
            e.0 = None;
        }
        assert_eq!(t.next_deadline(), at(1000));
        assert!(t.due(t0 + Duration::from_millis(999)).is_empty());
    }

    #[test]
    fn superseded_deadlines_do_not_pile_up() {
        let t0 = Instant::now();
        let mut t: Table<u64, Entry> = Table::default();
        t.insert(7, Entry(Some(t0)));
        for ms in 1..10_000u64 {
            if let Some(e) = t.get_mut(&7) {
                // Earlier each time: every old entry stays below the top.
                e.0 = Some(t0 + Duration::from_secs(100_000) - Duration::from_millis(ms));
            }
        }
        assert!(
            t.heap.len() <= 2 * t.scheduled.len() + 64,
            "{}",
            t.heap.len()
        );
        assert_eq!(
            t.next_deadline(),
            Some(t0 + Duration::from_secs(100_000) - Duration::from_millis(9_999))
        );
    }
}
