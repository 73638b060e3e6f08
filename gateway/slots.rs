//! Places for work in flight (dials, handshakes), capped in total and per
//! source, so one address cannot take every place that others need. A
//! place is a guard: it comes back when dropped, on every path.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// At most `total` places at once, `per_key` of them for one key.
pub struct Slots<K: Eq + Hash + Copy> {
    total: usize,
    per_key: usize,
    /// Places taken: in all, and by key.
    taken: Mutex<(usize, HashMap<K, usize>)>,
}

/// One place in [`Slots`], given back when dropped.
pub struct Slot<K: Eq + Hash + Copy> {
    slots: Arc<Slots<K>>,
    key: K,
}

impl<K: Eq + Hash + Copy> Slots<K> {
    pub fn new(total: usize, per_key: usize) -> Arc<Self> {
        Arc::new(Self {
            total,
            per_key,
            taken: Mutex::default(),
        })
    }

    /// A place for `key`, if neither cap is reached.
    pub fn take(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        let mut guard = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        let (total, m) = &mut *guard;
        let mine = m.get(&key).copied().unwrap_or(0);
        if *total >= self.total || mine >= self.per_key {
            return None;
        }
        m.insert(key, mine + 1);
        *total += 1;
        Some(Slot {
            slots: self.clone(),
            key,
        })
    }

    /// Places taken now.
    pub fn taken(&self) -> usize {
        self.taken.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

impl<K: Eq + Hash + Copy> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut guard = self.slots.taken.lock().unwrap_or_else(|p| p.into_inner());
        let (total, m) = &mut *guard;
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            *total -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn one_key_cannot_take_every_place_and_places_come_back() {
        let slots = Slots::new(64, 4);
        let ip = |n: u8| IpAddr::from([192, 0, 2, n]);
        let mine: Vec<_> = (0..10).filter_map(|_| slots.take(ip(1))).collect();
        assert_eq!(mine.len(), 4);
        // Others still get places, up to the total.
        let others: Vec<_> = (2..=255).filter_map(|n| slots.take(ip(n))).collect();
        assert_eq!(others.len(), 60);
        assert!(slots.take(ip(2)).is_none(), "the total is reached");
        // A finished one gives its place back, to anyone.
        drop(mine);
        assert!(slots.take(ip(2)).is_some());
        drop(others);
        assert_eq!(slots.taken(), 0, "nothing left");
        assert!(slots.taken.lock().expect("lock").1.is_empty());
    }
}
