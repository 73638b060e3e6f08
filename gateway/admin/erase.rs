//! A data subject's erasure (`tollgate cdr erase --number N`), PIPL
//! article 47 style: every finished record whose caller or callee is that
//! number is removed from the record store.
//!
//! It runs through the same two-person approval as an export
//! ([`crate::admin::approvals`]), and the number itself is never kept:
//! the request, the approvals file and the audit trail name it by a
//! keyed hash ([`NumberHash`]), an HMAC-SHA256 under a key derived from
//! the audit key. The same number always gives the same hash on one
//! appliance, so an auditor can match the request to its erasure, and
//! the hash does not give the number back (a list of every number
//! cannot be hashed without the key, which never leaves the daemon).
//! Running the approved erasure needs the number again, and it must hash
//! to what was approved.
//!
//! A number matches by its digits: `+44 7700 900123`, `447700900123` and
//! `+447700900123` are one number; a national form (`07700 900123`) is
//! another, so give the number as the carrier delivers it (E.164). A
//! withheld caller's number kept for auditors matches too. Records of
//! calls still in progress are left (their final record is written when
//! they end) and counted, so the requester can erase again afterwards.
//!
//! Removed records are gone from the store at once and durable before
//! the command answers. sled may keep their sealed bytes in free log
//! space until it reuses it; those open only with their day's key, which
//! retention shreds at the end of the retention period.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::cdr::record::Outcome;
use crate::cdr::store::{CdrError, RecordId, Store};
use crate::number::PhoneNumber;

/// The fewest digits an erasure accepts (shorter are service codes and
/// extensions, shared by many callers).
pub const MIN_DIGITS: usize = 6;
/// The most (E.164 has 15; a little room for prefixes).
pub const MAX_DIGITS: usize = 20;
/// Records removed per sled batch.
const BATCH: usize = 1024;

/// The digits of `number` as an erasure matches them: an optional
/// leading `+`, digits, and spaces, dashes, dots or brackets between.
/// The error never repeats the number.
pub fn digits(number: &str) -> Result<String, String> {
    let number = number.trim();
    let rest = number.strip_prefix('+').unwrap_or(number);
    let mut out = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => out.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => {
                return Err(
                    "a number is digits, with an optional leading + and spaces or dashes between"
                        .into(),
                )
            }
        }
    }
    if !(MIN_DIGITS..=MAX_DIGITS).contains(&out.len()) {
        return Err(format!(
            "a number to erase has {MIN_DIGITS} to {MAX_DIGITS} digits"
        ));
    }
    Ok(out)
}

/// The keyed hash that names a number in requests and the audit trail.
pub struct NumberHash(Zeroizing<[u8; 32]>);

impl NumberHash {
    /// Derived from the audit key (random, sealed under the master key,
    /// unchanged by a master-key rotation), for this purpose only.
    pub fn new(audit_key: &[u8; 32]) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&Self::mac(audit_key, b"tollgate-number-hash-v1"));
        Self(key)
    }

    fn mac(key: &[u8], data: &[u8]) -> [u8; 32] {
        // HMAC takes a key of any length.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
        m.update(data);
        m.finalize().into_bytes().into()
    }

    /// The hash of `digits` (as [`digits`] gives them): 32 hex digits.
    pub fn of(&self, digits: &str) -> String {
        hex::encode(&Self::mac(&self.0[..], digits.as_bytes())[..16])
    }
}

/// What an erasure did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erased {
    /// Records read.
    pub scanned: u64,
    /// Records removed.
    pub removed: u64,
    /// Matching records of calls still in progress, left in place.
    pub in_progress: u64,
    /// Records that could not be opened (so could not be checked).
    pub damaged: u64,
}

/// Whether `n`'s digits are `digits`, without allocating.
fn matches(n: &PhoneNumber, digits: &str) -> bool {
    let mut mine = n.reveal().bytes().filter(u8::is_ascii_digit);
    let mut theirs = digits.bytes();
    loop {
        match (mine.next(), theirs.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Removes every finished record of `digits` from `store`, durably. Runs
/// on a blocking thread: it reads the whole store.
pub fn erase(store: &Store, digits: &str) -> Result<Erased, CdrError> {
    let mut out = Erased::default();
    let mut ids: Vec<RecordId> = Vec::new();
    for item in store.range(0, u64::MAX) {
        out.scanned += 1;
        let (id, r) = match item {
            Ok(x) => x,
            Err(CdrError::Damaged(_)) | Err(CdrError::Shredded(_)) => {
                out.damaged += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        if !(matches(&r.caller, digits) || matches(&r.callee, digits)) {
            continue;
        }
        if r.outcome == Outcome::Open {
            out.in_progress += 1;
            continue;
        }
        ids.push(id);
        if ids.len() == BATCH {
            store.remove_all(&ids)?;
            out.removed += ids.len() as u64;
            ids.clear();
        }
    }
    store.remove_all(&ids)?;
    out.removed += ids.len() as u64;
    store.flush()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_accept_the_written_forms_and_never_echo_the_number() {
        assert_eq!(digits(" +44 7700-900.123 ").as_deref(), Ok("447700900123"));
        assert_eq!(digits("(020) 7946 0000").as_deref(), Ok("02079460000"));
        for bad in [
            "+44 7700 9001x3",
            "447700900123;ext=1",
            "12345",
            "+1234567890123456789012",
        ] {
            let e = digits(bad).expect_err(bad);
            assert!(!e.contains("7700") && !e.contains("12345"), "{e}");
        }
    }

    #[test]
    fn the_hash_is_keyed_stable_and_per_number() {
        let a = NumberHash::new(&[1; 32]);
        let b = NumberHash::new(&[2; 32]);
        assert_eq!(a.of("447700900123"), a.of("447700900123"));
        assert_ne!(a.of("447700900123"), a.of("447700900124"));
        assert_ne!(a.of("447700900123"), b.of("447700900123"));
        assert_eq!(a.of("447700900123").len(), 32);
        assert!(!a.of("447700900123").contains("7700900123"));
    }

    #[test]
    fn numbers_match_by_their_digits_only() {
        assert!(matches(&PhoneNumber::new("+447700900123"), "447700900123"));
        assert!(matches(
            &PhoneNumber::withheld(Some("+447700900123".into())),
            "447700900123"
        ));
        assert!(!matches(
            &PhoneNumber::new("+4477009001234"),
            "447700900123"
        ));
        assert!(!matches(&PhoneNumber::new("+44770090012"), "447700900123"));
        assert!(!matches(&PhoneNumber::withheld(None), "447700900123"));
    }

    #[test]
    fn erase_removes_only_that_numbers_finished_records_durably() {
        use crate::cdr::record::{Direction, Party, Record};
        use std::sync::Arc;
        let d = std::env::temp_dir().join(format!("tollgate-erase-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let master = Arc::new(crate::keys::Sealer::from_key(&[3; 32]));
        let store = Store::open(&d, master.clone()).expect("open");
        let day = 20_000 * 86_400_000u64;
        let rec = |i: u64, caller: PhoneNumber, callee: &str, open: bool| {
            let mut r = Record::new("c@x", Direction::Inbound, "", callee, day + i);
            r.caller = caller;
            if !open {
                r.finish(day + i + 1000, Outcome::Answered, 200, Some(Party::Caller));
            } else {
                r.outcome = Outcome::Open;
            }
            (
                RecordId {
                    start_ms: day + i,
                    seq: i as u32,
                },
                r,
            )
        };
        let subject = "+447700900123";
        let other = "+447700900999";
        let items = vec![
            rec(1, PhoneNumber::new(subject), "+442079460000", false),
            rec(2, PhoneNumber::new(other), "+442079460000", false),
            // Outbound to the subject.
            rec(3, PhoneNumber::new("+442079460000"), subject, false),
            // Withheld, the number kept for auditors.
            rec(
                4,
                PhoneNumber::withheld(Some(subject.into())),
                "+442079460000",
                false,
            ),
            // Still in progress: left, counted.
            rec(5, PhoneNumber::new(subject), "+442079460000", true),
            // A longer number ending in the same digits is someone else.
            rec(
                6,
                PhoneNumber::new("+4477009001234"),
                "+442079460000",
                false,
            ),
        ];
        store.put_all(&items).expect("put");
        store.flush().expect("flush");
        let erased = erase(&store, &digits(subject).expect("digits")).expect("erase");
        assert_eq!(
            erased,
            Erased {
                scanned: 6,
                removed: 3,
                in_progress: 1,
                damaged: 0
            }
        );
        drop(store);
        // Durable: a reopened store has only the others.
        let store = Store::open(&d, master).expect("reopen");
        let left: Vec<u32> = store
            .range(0, u64::MAX)
            .map(|r| r.expect("opens").0.seq)
            .collect();
        assert_eq!(left, vec![2, 5, 6]);
        let again = erase(&store, "447700900123").expect("erase");
        assert_eq!((again.removed, again.in_progress), (0, 1));
        let _ = std::fs::remove_dir_all(&d);
    }
}
