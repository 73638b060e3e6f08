//! A sliding window of recently seen packet indices (RFC 3711 section 3.3.2).
//!
//! The window is a bitmap used as a ring (the scheme of RFC 6479): bit `i`
//! of the ring stands for the index `i mod RING_BITS`, and advancing the top
//! of the window clears only the words it passes over, so an in-order packet
//! costs a couple of word operations whatever the window size. The ring holds
//! one word more than the largest window so that the word holding the top
//! never shares bits with the oldest index still accepted.
//!
//! Memory: `RING_WORDS * 8` = 136 bytes per stream, whatever the window size.
//!
//! The same window serves SRTP (48-bit packet index), SRTCP (31-bit index)
//! and duplicate detection in the receive statistics.

/// The default window size in packets, as libsrtp and RFC 3711 suggest.
pub const DEFAULT_WINDOW: u16 = 128;
/// The largest window this implementation accepts.
pub const MAX_WINDOW: u16 = 1024;
/// The smallest window RFC 3711 allows (section 3.3.2: at least 64).
pub const MIN_WINDOW: u16 = 64;

const RING_WORDS: usize = MAX_WINDOW as usize / 64 + 1;
const RING_BITS: u64 = RING_WORDS as u64 * 64;

/// Why an index was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayCheck {
    /// The index is new and inside (or ahead of) the window.
    Fresh,
    /// The index was already seen.
    Duplicate,
    /// The index is older than the window remembers.
    TooOld,
}

/// A replay window over 64-bit indices.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    /// Highest index accepted so far, if any.
    top: Option<u64>,
    size: u64,
    ring: [u64; RING_WORDS],
}

impl ReplayWindow {
    /// A window remembering `size` indices below the highest one seen.
    /// `size` is clamped to `MIN_WINDOW..=MAX_WINDOW`; callers validate
    /// configured sizes with [`ReplayWindow::valid_size`] first.
    pub fn new(size: u16) -> Self {
        Self {
            top: None,
            size: u64::from(size.clamp(MIN_WINDOW, MAX_WINDOW)),
            ring: [0; RING_WORDS],
        }
    }

    /// Whether `size` is a window size this implementation accepts.
    pub fn valid_size(size: u16) -> bool {
        (MIN_WINDOW..=MAX_WINDOW).contains(&size)
    }

    /// The highest index accepted so far.
    pub fn top(&self) -> Option<u64> {
        self.top
    }

    /// Checks `index` without recording it.
    #[inline]
    pub fn check(&self, index: u64) -> ReplayCheck {
        let Some(top) = self.top else {
            return ReplayCheck::Fresh;
        };
        if index > top {
            return ReplayCheck::Fresh;
        }
        if top - index >= self.size {
            return ReplayCheck::TooOld;
        }
        let bit = index % RING_BITS;
        if self.ring[(bit / 64) as usize] & (1 << (bit % 64)) != 0 {
            ReplayCheck::Duplicate
        } else {
            ReplayCheck::Fresh
        }
    }

    /// Records `index` as seen. Call only after [`check`](Self::check)
    /// returned `Fresh` and the packet authenticated.
    #[inline]
    pub fn accept(&mut self, index: u64) {
        match self.top {
            None => {
                self.top = Some(index);
            }
            Some(top) if index > top => {
                // Clear the words between the old top's word and the new one.
                let old_word = top / 64;
                let new_word = index / 64;
                let span = (new_word - old_word).min(RING_WORDS as u64);
                for w in 1..=span {
                    self.ring[((old_word + w) % RING_WORDS as u64) as usize] = 0;
                }
                self.top = Some(index);
            }
            Some(_) => {}
        }
        let bit = index % RING_BITS;
        self.ring[(bit / 64) as usize] |= 1 << (bit % 64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_duplicate_and_too_old() {
        let mut w = ReplayWindow::new(128);
        assert_eq!(w.check(1000), ReplayCheck::Fresh);
        w.accept(1000);
        assert_eq!(w.check(1000), ReplayCheck::Duplicate);
        assert_eq!(w.check(999), ReplayCheck::Fresh);
        assert_eq!(w.check(1000 - 127), ReplayCheck::Fresh);
        assert_eq!(w.check(1000 - 128), ReplayCheck::TooOld);
        w.accept(990);
        assert_eq!(w.check(990), ReplayCheck::Duplicate);
        assert_eq!(w.check(991), ReplayCheck::Fresh);
    }

    #[test]
    fn large_jump_forgets_everything_behind() {
        let mut w = ReplayWindow::new(1024);
        for i in 0..1024 {
            w.accept(i);
        }
        w.accept(100_000);
        assert_eq!(w.check(100_000 - 1), ReplayCheck::Fresh);
        assert_eq!(w.check(100_000 - 1023), ReplayCheck::Fresh);
        assert_eq!(w.check(100_000 - 1024), ReplayCheck::TooOld);
        assert_eq!(w.check(1023), ReplayCheck::TooOld);
    }

    #[test]
    fn matches_a_naive_model_under_reordering() {
        // A bounded pseudo-random walk checked against a set-based model.
        for size in [64u16, 128, 200, 1024] {
            let mut w = ReplayWindow::new(size);
            let mut seen = std::collections::BTreeSet::new();
            let mut top: Option<u64> = None;
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut base = 5_000u64;
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                base += x % 3;
                let idx = base - (x >> 20) % (u64::from(size) + 40);
                let expect = match top {
                    Some(t) if idx <= t && t - idx >= u64::from(size) => ReplayCheck::TooOld,
                    _ if seen.contains(&idx) => ReplayCheck::Duplicate,
                    _ => ReplayCheck::Fresh,
                };
                assert_eq!(w.check(idx), expect, "size {size} index {idx}");
                if expect == ReplayCheck::Fresh {
                    w.accept(idx);
                    seen.insert(idx);
                    top = Some(top.map_or(idx, |t| t.max(idx)));
                }
            }
        }
    }

    #[test]
    fn sizes_outside_the_range_are_invalid() {
        assert!(!ReplayWindow::valid_size(63));
        assert!(ReplayWindow::valid_size(64));
        assert!(ReplayWindow::valid_size(1024));
        assert!(!ReplayWindow::valid_size(1025));
    }
}
