//! Who is calling, and whether they asked not to be shown.
//!
//! A caller withholds the number in one of the ways carriers deliver it:
//! - RFC 3323 `Privacy: id`, `user` or `header` (any of them; `none` and
//!   `session` do not hide the number);
//! - an anonymous From: `sip:anonymous@anonymous.invalid` (RFC 3323 4.1.1.3),
//!   or a user part or display name such as `anonymous`, `restricted`,
//!   `private` or `withheld`, as carriers write it;
//! - the older Remote-Party-ID header (draft-ietf-sip-privacy-04) with
//!   `privacy=full` or `privacy=uri`, still sent by some carriers'
//!   switches.
//!
//! The number itself is taken from the From user part when the caller did
//! not withhold it, and from P-Asserted-Identity (RFC 3325; else a
//! calling Remote-Party-ID) when they did: that identity is believed only
//! from a trusted trunk (RFC 3325's trust domain), so an open trunk cannot
//! plant a number in the auditors' record.

use super::header::NameAddr;
use super::message::Message;
use super::scan::CommaList;
use super::uri::{Host, Uri};

/// Longest number kept (E.164 allows 15 digits; national forms and
/// prefixes fit in twice that). Anything longer is not a number.
pub const MAX_DIGITS: usize = 32;

/// From users that mean the number was withheld, as carriers write them.
const ANONYMOUS_USERS: [&[u8]; 4] = [b"anonymous", b"restricted", b"private", b"withheld"];

/// The calling party of an INVITE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallerId<'a> {
    /// The From user part, if it looks like a number.
    pub from: Option<&'a [u8]>,
    /// The number a trusted trunk asserted (P-Asserted-Identity, else a
    /// calling Remote-Party-ID); `None` from an untrusted trunk.
    pub asserted: Option<&'a [u8]>,
    /// Whether the caller asked not to be shown.
    pub withheld: bool,
}

/// Reads the calling party of `m`, whose From is `from`. `trusted`: the
/// request came from a trusted trunk, whose asserted identities count.
pub fn caller_id<'a>(m: &Message<'a>, from: &NameAddr<'a>, trusted: bool) -> CallerId<'a> {
    let from_user = from.uri.sip().and_then(|u| u.user);
    let anonymous_from = from.uri.sip().is_some_and(|u| {
        matches!(u.host, Host::Name(h) if h.eq_ignore_ascii_case(b"anonymous.invalid"))
            || from_user.is_some_and(is_anonymous_user)
    }) || from.display.is_some_and(is_anonymous_user);
    let privacy = values(m, b"Privacy").any(|v| {
        v.split(|&b| b == b';').any(|t| {
            let t = super::scan::trim_lws(t);
            [&b"id"[..], b"user", b"header"]
                .iter()
                .any(|w| t.eq_ignore_ascii_case(w))
        })
    });
    let calling = |r: &NameAddr<'a>| {
        r.params
            .get(b"party")
            .flatten()
            .is_none_or(|p| p.eq_ignore_ascii_case(b"calling"))
    };
    let rpids = || {
        values(m, b"Remote-Party-ID")
            .filter_map(|v| NameAddr::parse(v).ok())
            .filter(calling)
    };
    let rpid = rpids().next();
    let rpid_private = rpids().any(|r| {
        r.params
            .get(b"privacy")
            .flatten()
            .is_some_and(|p| p.eq_ignore_ascii_case(b"full") || p.eq_ignore_ascii_case(b"uri"))
    });
    let asserted = trusted
        .then(|| {
            values(m, b"P-Asserted-Identity")
                .filter_map(|v| NameAddr::parse(v).ok())
                .find_map(|n| number_of(&n.uri))
                .or_else(|| rpid.and_then(|r| number_of(&r.uri)))
        })
        .flatten();
    CallerId {
        from: from_user.and_then(|u| number_part(u)),
        asserted,
        withheld: privacy || anonymous_from || rpid_private,
    }
}

/// Every comma-separated value of every header called `name`.
fn values<'m, 'a: 'm>(m: &'m Message<'a>, name: &'m [u8]) -> impl Iterator<Item = &'a [u8]> + 'm {
    m.headers
        .iter()
        .filter(move |h| h.raw_name.eq_ignore_ascii_case(name))
        .flat_map(|h| CommaList::new(h.value))
}

fn is_anonymous_user(u: &[u8]) -> bool {
    ANONYMOUS_USERS.iter().any(|a| u.eq_ignore_ascii_case(a))
}

/// The number in a `sip:`/`sips:` user part or a `tel:` URI.
fn number_of<'a>(uri: &Uri<'a>) -> Option<&'a [u8]> {
    match uri {
        Uri::Sip(u) => u.user.and_then(number_part),
        Uri::Other { scheme, rest } if scheme.eq_ignore_ascii_case(b"tel") => number_part(rest),
        Uri::Other { .. } => None,
    }
}

/// The number before any `;` parameters (`+4420...;npdi`, a tel URI's
/// `;phone-context=`), if it is one: an optional `+`, then digits and
/// visual separators, at most [`MAX_DIGITS`] digits.
fn number_part(s: &[u8]) -> Option<&[u8]> {
    let n = s.split(|&b| b == b';').next().unwrap_or_default();
    let body = n.strip_prefix(b"+").unwrap_or(n);
    let digits = body.iter().filter(|b| b.is_ascii_digit()).count();
    let ok = (1..=MAX_DIGITS).contains(&digits)
        && body
            .iter()
            .all(|&b| b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'(' | b')'));
    ok.then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Framing, Limits};

    fn caller(headers: &str, trusted: bool) -> (Option<String>, Option<String>, bool) {
        let text = format!(
            "INVITE sip:+442079460000@gw SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
             To: <sip:+442079460000@gw>\r\n\
             Call-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n\
             {headers}Content-Length: 0\r\n\r\n"
        );
        let (m, _) =
            Message::parse(text.as_bytes(), Framing::Datagram, &Limits::default()).expect("parse");
        let from = m.from().expect("from").expect("from parses");
        let id = caller_id(&m, &from, trusted);
        let s = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
        (s(id.from), s(id.asserted), id.withheld)
    }

    const PAI: &str = "P-Asserted-Identity: \"Carol\" <sip:+447700900123@carrier;user=phone>\r\n";

    #[test]
    fn a_plain_caller_is_shown() {
        let (from, asserted, withheld) =
            caller("From: <sip:+447700900123@carrier>;tag=a\r\n", true);
        assert_eq!(from.as_deref(), Some("+447700900123"));
        assert_eq!(asserted, None);
        assert!(!withheld);
    }

    #[test]
    fn privacy_id_withholds_and_keeps_the_asserted_number_from_a_trusted_trunk() {
        let h = format!("From: <sip:+447700900123@carrier>;tag=a\r\nPrivacy: id\r\n{PAI}");
        let (_, asserted, withheld) = caller(&h, true);
        assert!(withheld);
        assert_eq!(asserted.as_deref(), Some("+447700900123"));
        // An open trunk's assertion is not believed.
        let (_, asserted, withheld) = caller(&h, false);
        assert!(withheld);
        assert_eq!(asserted, None);
    }

    #[test]
    fn each_form_of_withholding_is_recognised() {
        let withheld = [
            "From: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=a\r\n",
            "From: <sip:Restricted@carrier>;tag=a\r\n",
            "From: <sip:+447700900123@carrier>;tag=a\r\nPrivacy: user;critical\r\n",
            "From: <sip:+447700900123@carrier>;tag=a\r\nprivacy: HEADER\r\n",
            "From: <sip:+447700900123@carrier>;tag=a\r\n\
             Remote-Party-ID: <sip:+447700900123@carrier>;party=calling;privacy=full\r\n",
            "From: <sip:+447700900123@x.anonymous.example>;tag=a\r\nPrivacy: none, id\r\n",
            // An anonymous display name, whatever the user part.
            "From: \"Anonymous\" <sip:+447700900123@carrier>;tag=a\r\n",
            // A later calling Remote-Party-ID asks for privacy.
            "From: <sip:+447700900123@carrier>;tag=a\r\n\
             Remote-Party-ID: <sip:+447700900123@carrier>;party=calling\r\n\
             Remote-Party-ID: <sip:+447700900123@carrier>;party=calling;privacy=uri\r\n",
        ];
        for h in withheld {
            assert!(caller(h, true).2, "{h}");
        }
        let shown = [
            "From: <sip:+447700900123@carrier>;tag=a\r\nPrivacy: none\r\n",
            "From: <sip:+447700900123@carrier>;tag=a\r\nPrivacy: session\r\n",
            "From: <sip:+447700900123@carrier>;tag=a\r\n\
             Remote-Party-ID: <sip:+447700900123@carrier>;party=calling;privacy=off\r\n",
            // Someone else's privacy (the called party's RPID) is not the caller's.
            "From: <sip:+447700900123@carrier>;tag=a\r\n\
             Remote-Party-ID: <sip:+442079460000@gw>;party=called;privacy=full\r\n",
        ];
        for h in shown {
            assert!(!caller(h, true).2, "{h}");
        }
    }

    #[test]
    fn the_asserted_number_comes_from_pai_then_rpid_in_sip_or_tel_form() {
        let (_, a, _) = caller(
            "From: <sip:anonymous@anonymous.invalid>;tag=a\r\n\
             P-Asserted-Identity: <sip:carol@carrier>, <tel:+44-7700-900123;phone-context=x>\r\n",
            true,
        );
        assert_eq!(a.as_deref(), Some("+44-7700-900123"));
        let (_, a, _) = caller(
            "From: <sip:anonymous@anonymous.invalid>;tag=a\r\n\
             Remote-Party-ID: <sip:+447700900123;npdi@carrier>;privacy=full\r\n",
            true,
        );
        assert_eq!(a.as_deref(), Some("+447700900123"));
        // Not a number, or too long to be one: nothing asserted.
        let long = format!(
            "From: <sip:anonymous@anonymous.invalid>;tag=a\r\nP-Asserted-Identity: <sip:+{}@c>\r\n",
            "1".repeat(MAX_DIGITS + 1)
        );
        assert_eq!(caller(&long, true).1, None);
        let (from, _, _) = caller("From: <sip:carol@carrier>;tag=a\r\n", true);
        assert_eq!(from, None);
    }
}
