//! One call detail record, as billing and disputes need it. Serialized as
//! JSON inside the seal (readable when opened, stable across versions by
//! field name); [`FORMAT`] is the byte in front of every sealed record.

use serde::{Deserialize, Serialize};

use crate::number::{Mask, PhoneNumber};

/// The format version byte written before each sealed record.
pub const FORMAT: u8 = 1;

/// Which way the call went, from the call centre's point of view.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// A carrier called in (to a queue, an agent, a test number or out
    /// another trunk).
    Inbound,
    /// An agent called out.
    Outbound,
}

/// Who ended the call.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    Caller,
    Callee,
    /// The gateway itself: a timeout, a test number's hang-up, a shutdown.
    Gateway,
}

/// How a call ended.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered, and still going when the record was written.
    Open,
    Answered,
    Rejected,
    Cancelled,
    NoAnswer,
    Failed,
    /// Open when the gateway stopped without finishing it (a crash).
    Interrupted,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Answered => "answered",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
            Self::NoAnswer => "no_answer",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }
}

/// Media measured on one leg in one direction.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct MediaStats {
    /// `trunk`, `agent` or `far_end`.
    pub leg: String,
    /// `in` (received by the gateway) or `out` (sent).
    pub direction: String,
    pub packets: u64,
    pub lost: u64,
    pub jitter_ms: f64,
    /// ITU-T G.107 E-model estimate from loss and jitter.
    pub mos: f64,
}

/// One record. Times are Unix milliseconds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// The SIP Call-ID of the trunk leg.
    pub call_id: String,
    pub direction: Direction,
    pub trunk: Option<String>,
    pub agent: Option<String>,
    /// E.164 where known.
    pub caller: PhoneNumber,
    pub callee: PhoneNumber,
    pub start_ms: u64,
    pub ringing_ms: Option<u64>,
    pub answer_ms: Option<u64>,
    pub end_ms: Option<u64>,
    /// Answer to end; 0 when never answered.
    pub duration_ms: u64,
    pub outcome: Outcome,
    /// The final SIP status the trunk leg got or gave (200, 486, ...).
    pub sip_status: u16,
    pub hung_up_by: Option<Party>,
    pub codec: Option<String>,
    /// SRTP suite per leg (`trunk`, `agent`, `far_end`); "none" for RTP.
    pub srtp: Vec<(String, String)>,
    pub media: Vec<MediaStats>,
    /// What the guard noticed on this call (`rtp_rate_limited`,
    /// `rtp_wrong_source`, ...).
    pub guard: Vec<String>,
}

/// What a record says of a trunk leg's SRTP: the suite, and whether its
/// key crossed the network in clear signalling (SDES without TLS).
pub fn trunk_srtp(suite: &str, over_tls: bool) -> String {
    if over_tls {
        suite.to_string()
    } else {
        format!("{suite}{CLEAR_KEY}")
    }
}

/// How [`trunk_srtp`] marks a key sent in clear signalling.
const CLEAR_KEY: &str = " (key in clear signalling)";

/// A record's trunk SRTP text read back: the suite (`none` for RTP), and
/// whether its key was sent in clear.
pub fn trunk_srtp_parts(text: &str) -> (&str, bool) {
    match text.strip_suffix(CLEAR_KEY) {
        Some(suite) => (suite, true),
        None => (text, false),
    }
}

/// The longest Call-ID kept whole; a longer one (the sender chooses it,
/// up to the SIP size limit) is kept as its head and a hash.
pub const MAX_CALL_ID: usize = 128;
/// The longest caller or callee kept (E.164 is at most 16 characters;
/// a SIP user part can be anything the sender likes).
pub const MAX_PARTY: usize = 64;

/// `s` cut to at most `max` bytes on a character boundary.
fn head(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A Call-ID as recorded: whole up to [`MAX_CALL_ID`] bytes; longer, its
/// first 64 bytes and a SHA-256 prefix of the whole, so a record stays
/// small and still matches the carrier's logs.
pub fn bounded_call_id(call_id: &str) -> String {
    use sha2::{Digest, Sha256};
    if call_id.len() <= MAX_CALL_ID {
        return call_id.to_string();
    }
    let digest = Sha256::digest(call_id.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}...sha256:{hex}", head(call_id, 64))
}

impl Record {
    /// A record with the call's identity and start; the rest filled in as
    /// the call goes. Fields from the network are bounded.
    pub fn new(
        call_id: &str,
        direction: Direction,
        caller: &str,
        callee: &str,
        start_ms: u64,
    ) -> Self {
        Self {
            call_id: bounded_call_id(call_id),
            direction,
            trunk: None,
            agent: None,
            caller: PhoneNumber::new(head(caller, MAX_PARTY)),
            callee: PhoneNumber::new(head(callee, MAX_PARTY)),
            start_ms,
            ringing_ms: None,
            answer_ms: None,
            end_ms: None,
            duration_ms: 0,
            outcome: Outcome::Open,
            sip_status: 0,
            hung_up_by: None,
            codec: None,
            srtp: Vec::new(),
            media: Vec::new(),
            guard: Vec::new(),
        }
    }

    /// Ends the record at `end_ms` with `outcome`.
    pub fn finish(&mut self, end_ms: u64, outcome: Outcome, sip_status: u16, by: Option<Party>) {
        self.end_ms = Some(end_ms);
        self.outcome = outcome;
        if sip_status != 0 {
            self.sip_status = sip_status;
        }
        self.hung_up_by = by;
        self.duration_ms = self.answer_ms.map_or(0, |a| end_ms.saturating_sub(a));
    }

    /// The record as a viewer sees it: numbers under the one masking
    /// policy (`withheld` as a plain string), no Call-ID.
    pub fn masked(&self, mask: Mask) -> Self {
        Self {
            caller: PhoneNumber::new(self.caller.masked(mask)),
            callee: PhoneNumber::new(self.callee.masked(mask)),
            call_id: "-".into(),
            ..self.clone()
        }
    }

    /// The record as it leaves the appliance in an export: whole numbers,
    /// but a withheld caller leaves as the plain string `withheld` (the
    /// format importers know), without the number the carrier asserted
    /// (that stays in the sealed record for auditors).
    pub fn exported(self) -> Self {
        Self {
            caller: PhoneNumber::new(self.caller.shown()),
            callee: PhoneNumber::new(self.callee.shown()),
            ..self
        }
    }
}

/// The CSV header for [`Record::csv_row`].
pub const CSV_HEADER: &str = "id,call_id,direction,trunk,agent,caller,callee,start_ms,ringing_ms,answer_ms,end_ms,duration_ms,outcome,sip_status,hung_up_by,codec";

/// One CSV cell. A cell a spreadsheet would run as a formula (starting
/// with `=`, `+`, `-`, `@`, a tab or a carriage return) gets a leading `'`
/// (OWASP's advice), except a plain E.164 number (`+` and digits), which a
/// spreadsheet can only read as a number: billing keeps its numbers as
/// they are.
fn csv_field(s: &str) -> String {
    let e164 = s
        .strip_prefix('+')
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) && !e164 {
        std::borrow::Cow::Owned(format!("'{s}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.into_owned()
    }
}

impl Record {
    /// One CSV row (billing's fields; media detail is in JSON lines).
    pub fn csv_row(&self, id: &str) -> String {
        let opt = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_default();
        let party = self.hung_up_by.map(|p| match p {
            Party::Caller => "caller",
            Party::Callee => "callee",
            Party::Gateway => "gateway",
        });
        [
            csv_field(id),
            csv_field(&self.call_id),
            match self.direction {
                Direction::Inbound => "inbound".into(),
                Direction::Outbound => "outbound".into(),
            },
            csv_field(self.trunk.as_deref().unwrap_or("")),
            csv_field(self.agent.as_deref().unwrap_or("")),
            csv_field(self.caller.shown()),
            csv_field(self.callee.shown()),
            self.start_ms.to_string(),
            opt(self.ringing_ms),
            opt(self.answer_ms),
            opt(self.end_ms),
            self.duration_ms.to_string(),
            self.outcome.label().into(),
            self.sip_status.to_string(),
            party.unwrap_or("").into(),
            csv_field(self.codec.as_deref().unwrap_or("")),
        ]
        .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_from_the_network_are_bounded() {
        // A short Call-ID is kept whole.
        assert_eq!(
            bounded_call_id("a84b4c76e66710@pc33"),
            "a84b4c76e66710@pc33"
        );
        // An 8 KiB one becomes its head and a hash: two long ids that
        // share the head still differ.
        let long = "é".repeat(4096);
        let other = format!("{}x", "é".repeat(4095));
        let r = Record::new(&long, Direction::Inbound, &"9".repeat(500), "1", 0);
        assert!(r.call_id.len() <= 64 + 11 + 16, "{}", r.call_id.len());
        assert!(r.call_id.starts_with(&"é".repeat(32)), "{}", r.call_id);
        assert_ne!(r.call_id, bounded_call_id(&other));
        assert_eq!(r.call_id, bounded_call_id(&long));
        assert_eq!(r.caller.reveal().len(), MAX_PARTY);
    }

    /// Issue 14 item 6: viewers used to see a number's head and agents
    /// its tail. Every staff view now goes through one policy, so no two
    /// of them together show more digits than the policy allows.
    #[test]
    fn no_two_staff_views_together_reveal_more_than_the_policy() {
        let numbers = [
            "+447700900123",
            "02079460000",
            "+1 (555) 010-9999",
            "123",
            "anonymous",
        ];
        for visible in 0..=Mask::MAX_VISIBLE {
            let m = Mask::new(visible).expect("policy");
            for number in numbers {
                let r = Record::new("c", Direction::Inbound, number, number, 0);
                let views = [
                    // A viewer's cdr list and cdr show.
                    r.masked(m).caller.reveal().to_string(),
                    r.masked(m).callee.reveal().to_string(),
                    // An agent's offer (profile without show_caller).
                    PhoneNumber::new(number).masked(m),
                    // The gateway's log lines.
                    m.apply(number),
                    // Any Display of the number (errors, formatting).
                    r.caller.to_string(),
                ];
                let shown = |v: &str| -> std::collections::BTreeSet<usize> {
                    assert_eq!(v.chars().count(), number.chars().count(), "{v}");
                    number
                        .chars()
                        .zip(v.chars())
                        .enumerate()
                        .filter(|(_, (a, b))| a.is_ascii_digit() && a == b)
                        .map(|(i, _)| i)
                        .collect()
                };
                let digits = number.chars().filter(char::is_ascii_digit).count();
                let allowed = digits.min(usize::from(visible));
                for a in &views {
                    for b in &views {
                        let both = shown(a).union(&shown(b)).count();
                        assert!(both <= allowed, "{a} + {b}: {both} digits of {number}");
                    }
                }
                // The record's Debug (panics, logs) shows no digit of it.
                if digits > 4 {
                    let tail: String = number.chars().filter(char::is_ascii_digit).collect();
                    let debug = format!("{r:?}");
                    assert!(!debug.contains(&tail[tail.len() - 4..]), "{debug}");
                }
            }
        }
    }

    #[test]
    fn a_withheld_caller_leaves_only_in_the_sealed_record() {
        let mut r = Record::new("c1", Direction::Inbound, "", "+442079460000", 1000);
        r.caller = PhoneNumber::withheld(Some("+447700900123".into()));
        // Sealed (what the store keeps): the number, marked.
        let sealed = serde_json::to_string(&r).expect("json");
        assert!(
            sealed.contains(r#""caller":{"withheld":"+447700900123"}"#),
            "{sealed}"
        );
        let back: Record = serde_json::from_str(&sealed).expect("parse");
        assert_eq!(back.caller.audited(), "withheld:+447700900123");
        // Viewers, exports (CSV and JSON lines), Debug: withheld, no digit.
        let views = [
            serde_json::to_string(&r.masked(Mask::default())).expect("json"),
            serde_json::to_string(&r.clone().exported()).expect("json"),
            r.csv_row("1-2"),
            format!("{r:?}"),
        ];
        for v in views {
            assert!(!v.contains("900123"), "{v}");
            assert!(v.contains("withheld"), "{v}");
        }
        assert!(r.csv_row("1-2").contains(",withheld,+442079460000,"));
        // Exports and viewers keep the plain-string format importers know.
        let exported = serde_json::to_string(&r.clone().exported()).expect("json");
        assert!(exported.contains(r#""caller":"withheld""#), "{exported}");
        // The called number (the call centre's line) is untouched.
        assert_eq!(r.clone().exported().callee.shown(), "+442079460000");
    }

    #[test]
    fn masks_under_the_policy_and_finishes_with_a_duration() {
        let mut r = Record::new(
            "c1",
            Direction::Inbound,
            "+447700900123",
            "+442079460000",
            1000,
        );
        r.answer_ms = Some(3000);
        r.finish(63_000, Outcome::Answered, 200, Some(Party::Caller));
        assert_eq!(r.duration_ms, 60_000);
        let m = r.masked(Mask::default());
        assert_eq!(m.caller.reveal(), "+********0123");
        assert_eq!(m.callee.reveal(), "+********0000");
        assert_eq!(m.call_id, "-");
        let row = r.csv_row("1-2");
        assert!(row.starts_with("1-2,c1,inbound,,,+447700900123,"), "{row}");
        assert_eq!(row.split(',').count(), CSV_HEADER.split(',').count());
        let mut odd = r.clone();
        odd.agent = Some("o\"neil, pat".into());
        assert!(odd.csv_row("x").contains("\"o\"\"neil, pat\""));
        // Formula injection: an attacker-chosen Call-ID or name is never
        // a live formula; E.164 numbers stay as they are.
        let mut evil = r.clone();
        evil.call_id = "=HYPERLINK(\"http://x\",\"y\")".into();
        evil.agent = Some("@SUM(1+1)".into());
        evil.trunk = Some("-2+3".into());
        evil.codec = Some("\tx".into());
        let row = evil.csv_row("x");
        assert!(
            row.contains(",\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\","),
            "{row}"
        );
        assert!(row.contains(",'@SUM(1+1),"), "{row}");
        assert!(row.contains(",'-2+3,"), "{row}");
        assert!(row.ends_with(",'\tx"), "{row}");
        assert!(row.contains(",+447700900123,+442079460000,"), "{row}");
    }
}
