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
///
/// A caller who withheld the number (RFC 3323 `Privacy: id`, an anonymous
/// From) is [`PhoneNumber::withheld`]: every view staff have (agents,
/// whatever their profile; viewers; logs; exports) shows
/// [`PhoneNumber::WITHHELD`], and the number the carrier asserted, if any,
/// stays in the sealed record for auditors only ([`PhoneNumber::audited`]).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct PhoneNumber {
    number: String,
    withheld: bool,
}

impl PhoneNumber {
    /// What every staff view shows of a withheld number.
    pub const WITHHELD: &'static str = "withheld";

    pub fn new(number: impl Into<String>) -> Self {
        Self {
            number: number.into(),
            withheld: false,
        }
    }

    /// A caller who asked not to be shown; `asserted` is the number the
    /// carrier vouched for (P-Asserted-Identity from a trusted trunk), if
    /// it sent one.
    pub fn withheld(asserted: Option<String>) -> Self {
        Self {
            number: asserted.unwrap_or_default(),
            withheld: true,
        }
    }

    pub fn is_withheld(&self) -> bool {
        self.withheld
    }

    /// The number as the policy lets staff see it.
    pub fn masked(&self, mask: Mask) -> String {
        if self.withheld {
            Self::WITHHELD.into()
        } else {
            mask.apply(&self.number)
        }
    }

    /// The number as staff entitled to whole numbers see it (an agent
    /// whose profile shows callers, an export): whole, unless withheld.
    pub fn shown(&self) -> &str {
        if self.withheld {
            Self::WITHHELD
        } else {
            &self.number
        }
    }

    /// The number as an auditor reads it from the sealed record: whole,
    /// and marked `withheld:` if the caller asked not to be shown.
    pub fn audited(&self) -> std::borrow::Cow<'_, str> {
        if self.withheld && self.number.is_empty() {
            Self::WITHHELD.into()
        } else if self.withheld {
            format!("{}:{}", Self::WITHHELD, self.number).into()
        } else {
            self.number.as_str().into()
        }
    }

    /// The whole number, withheld or not (empty if withheld and never
    /// asserted): for signalling towards a carrier (P-Asserted-Identity)
    /// and the sealed record. Nowhere else.
    pub fn reveal(&self) -> &str {
        &self.number
    }
}

impl std::fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.masked(Mask::NONE))
    }
}

impl std::fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PhoneNumber({self})")
    }
}

/// How a number is written in a record: a plain string (as every record
/// before withheld numbers were kept), or `{"withheld": number}`.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Stored {
    Plain(String),
    Withheld { withheld: String },
}

impl Serialize for PhoneNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.withheld {
            Stored::Withheld {
                withheld: self.number.clone(),
            }
            .serialize(s)
        } else {
            self.number.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for PhoneNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Stored::deserialize(d)? {
            Stored::Plain(number) => Self::new(number),
            Stored::Withheld { withheld } => Self {
                number: withheld,
                withheld: true,
            },
        })
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
    fn a_withheld_number_shows_only_to_auditors() {
        let n = PhoneNumber::withheld(Some("+447700900123".into()));
        for shown in [
            n.to_string(),
            format!("{n:?}"),
            n.masked(Mask::default()),
            n.shown().to_string(),
        ] {
            assert!(!shown.contains("0123"), "{shown}");
            assert!(shown.contains("withheld"), "{shown}");
        }
        assert_eq!(n.audited(), "withheld:+447700900123");
        assert_eq!(n.reveal(), "+447700900123");
        let none = PhoneNumber::withheld(None);
        assert_eq!(none.audited(), "withheld");
        assert_eq!(none.reveal(), "");
        assert_eq!(none.shown(), "withheld");
        let plain = PhoneNumber::new("+447700900123");
        assert_eq!(plain.shown(), "+447700900123");
        assert_eq!(plain.audited(), "+447700900123");
    }

    #[test]
    fn records_keep_old_plain_numbers_and_mark_withheld_ones() {
        let plain = PhoneNumber::new("+447700900123");
        let withheld = PhoneNumber::withheld(Some("+447700900123".into()));
        let a = serde_json::to_string(&plain).expect("json");
        let b = serde_json::to_string(&withheld).expect("json");
        assert_eq!(a, r#""+447700900123""#);
        assert_eq!(b, r#"{"withheld":"+447700900123"}"#);
        assert_eq!(serde_json::from_str::<PhoneNumber>(&a).expect("a"), plain);
        assert_eq!(
            serde_json::from_str::<PhoneNumber>(&b).expect("b"),
            withheld
        );
        assert!(serde_json::from_str::<PhoneNumber>("{\"other\":1}").is_err());
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
