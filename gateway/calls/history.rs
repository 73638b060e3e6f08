//! An agent's own recent calls, read from the record store for the agent
//! protocol's `history` request.
//!
//! Only records naming the asking agent are read out, and each only as
//! the agent's profile may see it (the one masking policy; a withheld
//! caller stays `withheld`). The read runs off the core's thread (the
//! store is on disk), newest first, and is bounded: at most
//! [`SCAN_DAYS`] back and [`SCAN_RECORDS`] records opened per request,
//! at most [`CONCURRENT`] requests at once for the whole gateway and one a
//! second per session, so agents asking cannot slow calls or each other
//! much.

use std::sync::Arc;
use std::time::Duration;

use crate::agent::protocol::PastCall;
use crate::cdr::record::Direction;
use crate::cdr::store::Store;
use crate::number::Mask;

/// How far back a history looks.
pub const SCAN_DAYS: u64 = 30;
/// Records opened per request at most (every agent's calls, newest
/// first), however few are the asking agent's.
pub const SCAN_RECORDS: usize = 5_000;
/// History reads running at once, gateway-wide.
pub const CONCURRENT: usize = 2;
/// Shortest interval between one session's requests.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// How an agent may see the other party.
#[derive(Clone, Copy, Debug)]
pub struct View {
    /// The profile shows whole numbers.
    pub whole: bool,
    pub mask: Mask,
}

/// `agent`'s calls that started in `[since_ms, now_ms]` (`since_ms`: its
/// enrolment, so a name enrolled again after a revocation does not see
/// its predecessor's calls), newest first, at most `limit`. Damaged
/// records are skipped (the auditors' tools report them).
pub fn own_calls(
    store: &Store,
    agent: &str,
    since_ms: u64,
    now_ms: u64,
    limit: usize,
    view: View,
) -> Vec<PastCall> {
    let from = now_ms
        .saturating_sub(SCAN_DAYS * 24 * 3600 * 1000)
        .max(since_ms);
    store
        .range(from, now_ms.saturating_add(1))
        .rev()
        .take(SCAN_RECORDS)
        .filter_map(Result::ok)
        .filter(|(_, r)| r.agent.as_deref() == Some(agent))
        .take(limit)
        .map(|(_, r)| {
            let party = match r.direction {
                Direction::Inbound => &r.caller,
                Direction::Outbound => &r.callee,
            };
            PastCall {
                start_ms: r.start_ms,
                direction: match r.direction {
                    Direction::Inbound => "inbound",
                    Direction::Outbound => "outbound",
                }
                .into(),
                duration_s: r.duration_ms / 1000,
                outcome: r.outcome.label().into(),
                party: if view.whole {
                    party.shown().to_string()
                } else {
                    party.masked(view.mask)
                },
            }
        })
        .collect()
}

/// Gateway-wide permits for history reads.
pub fn permits() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(CONCURRENT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::record::{Outcome, Party, Record};
    use crate::cdr::store::RecordId;
    use crate::keys::Sealer;
    use crate::number::PhoneNumber;

    #[test]
    fn an_agent_reads_only_its_own_calls_newest_first_as_its_profile_sees_them() {
        let d = std::env::temp_dir().join(format!("tollgate-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let s = Store::open(&d, Arc::new(Sealer::from_key(&[3; 32]))).expect("open");
        let day0 = 20_000 * 24 * 3600 * 1000;
        let rec = |i: u64, agent: &str, dir: Direction| {
            let mut r = Record::new("c", dir, "+447700900123", "+442079460000", day0 + i);
            r.agent = Some(agent.into());
            r.answer_ms = Some(day0 + i);
            r.finish(
                day0 + i + 42_000,
                Outcome::Answered,
                200,
                Some(Party::Callee),
            );
            (
                RecordId {
                    start_ms: day0 + i,
                    seq: i as u32,
                },
                r,
            )
        };
        let mut withheld = rec(5, "alice", Direction::Inbound);
        withheld.1.caller = PhoneNumber::withheld(Some("+447700900999".into()));
        s.put_all(&[
            rec(1, "alice", Direction::Inbound),
            rec(2, "bob", Direction::Inbound),
            rec(3, "alice", Direction::Outbound),
            rec(4, "bob", Direction::Outbound),
            withheld,
            // Not yet started as of "now": not listed.
            rec(10_000, "alice", Direction::Inbound),
        ])
        .expect("put");
        let masked = View {
            whole: false,
            mask: Mask::default(),
        };
        let got = own_calls(&s, "alice", 0, day0 + 100, 20, masked);
        let starts: Vec<u64> = got.iter().map(|c| c.start_ms - day0).collect();
        assert_eq!(starts, [5, 3, 1]);
        assert_eq!(got[0].party, "withheld");
        assert_eq!(got[1].direction, "outbound");
        // Outbound: the number the agent dialled.
        assert_eq!(got[1].party, "+********0000");
        assert_eq!(got[2].party, "+********0123");
        assert_eq!(
            (got[2].duration_s, got[2].outcome.as_str()),
            (42, "answered")
        );
        // A profile with whole numbers: whole, but a withheld caller is not.
        let whole = View {
            whole: true,
            mask: Mask::default(),
        };
        let got = own_calls(&s, "alice", 0, day0 + 100, 2, whole);
        let parties: Vec<&str> = got.iter().map(|c| c.party.as_str()).collect();
        assert_eq!(parties, ["withheld", "+442079460000"]);
        // Bob's are his; nobody else's appear; an unknown agent has none.
        assert_eq!(own_calls(&s, "bob", 0, day0 + 100, 20, masked).len(), 2);
        assert!(own_calls(&s, "mallory", 0, day0 + 100, 20, masked).is_empty());
        // Alice enrolled again after a revocation, at day0 + 4: the
        // previous Alice's calls are not hers.
        let again = own_calls(&s, "alice", day0 + 4, day0 + 100, 20, masked);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].start_ms, day0 + 5);
        drop(s);
        let _ = std::fs::remove_dir_all(&d);
    }
}
