//! Phone numbers, the customer data staff see most: one type, one mask.
//!
//! A [`PhoneNumber`] never shows its digits by accident: `Display` and
//! `Debug` print the number with every digit hidden, so a number that
//! reaches a log line, a panic or an error message says nothing. The
//! whole number comes out only through [`PhoneNumber::reveal`], named so
//! a reviewer sees every place: SIP signalling, the sealed record, and
//! what the auditor role (and agents whose profile says `show_caller`)
//! may read.
//!
//! Everything else any staff member sees (a viewer's record list, an
//! agent's offer, the gateway's logs) goes through the one policy,
//! [`Mask`]: at most the last four digits, fewer if `[privacy]
//! visible_digits` says so. Because every view shows the same trailing
//! digits, no two views together reveal more than one does. (Before,
//! viewers saw the head of a number and agents its tail: together, the
//! whole number.)

use serde::{Deserialize, Serialize};

/// How many trailing digits staff may see: 0 to [`Mask::MAX_VISIBLE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mask {
    visible: u8,
}

impl Mask {
    /// The most digits any policy shows.
    pub const MAX_VISIBLE: u8 = 4;
    /// Shows no digit at all.
    pub const NONE: Mask = Mask { visible: 0 };

    /// The policy showing the last `visible` digits (at most 4).
    pub fn new(visible: u8) -> Option<Self> {
        (visible <= Self::MAX_VISIBLE).then_some(Self { visible })
    }

    pub fn visible(self) -> u8 {
        self.visible
    }

    /// `number` with every digit but the last `visible` as `*`; other
    /// characters (`+`, a name such as `anonymous`) stay.
    pub fn apply(self, number: &str) -> String {
        let digits = number.chars().filter(char::is_ascii_digit).count();
        let mut hide = digits.saturating_sub(usize::from(self.visible));
        number
            .chars()
            .map(|c| {
                if c.is_ascii_digit() && hide > 0 {
                    hide -= 1;
                    '*'
                } else {
                    c
                }
            })
            .collect()
    }
}

impl Default for Mask {
    fn default() -> Self {
        Self {
            visible: Self::MAX_VISIBLE,
        }
    }
}

/// A phone number (E.164 where the gateway could normalize it), or what
/// stood in the From or Request-URI instead (`anonymous`).
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn new(number: impl Into<String>) -> Self {
        Self(number.into())
    }

    /// The number as the policy lets staff see it.
    pub fn masked(&self, mask: Mask) -> String {
        mask.apply(&self.0)
    }

    /// The whole number: for signalling, the sealed record, auditors and
    /// agents whose profile shows callers. Nowhere else.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&Mask::NONE.apply(&self.0))
    }
}

impl std::fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PhoneNumber({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_debug_show_no_digit() {
        let n = PhoneNumber::new("+447700900123");
        assert_eq!(n.to_string(), "+************");
        assert_eq!(format!("{n:?}"), "PhoneNumber(+************)");
        assert_eq!(
            format!("{:?}", Some(&n)),
            "Some(PhoneNumber(+************))"
        );
        assert_eq!(n.reveal(), "+447700900123");
        assert_eq!(PhoneNumber::new("anonymous").to_string(), "anonymous");
    }

    #[test]
    fn the_policy_shows_at_most_four_trailing_digits() {
        let n = PhoneNumber::new("+447700900123");
        assert_eq!(n.masked(Mask::default()), "+********0123");
        assert_eq!(n.masked(Mask::new(2).expect("2")), "+**********23");
        assert_eq!(n.masked(Mask::NONE), "+************");
        assert!(Mask::new(5).is_none());
        // A short number: never more than the policy, even if all of it.
        assert_eq!(PhoneNumber::new("123").masked(Mask::default()), "123");
        assert_eq!(
            PhoneNumber::new("123").masked(Mask::new(1).expect("1")),
            "**3"
        );
    }
}
