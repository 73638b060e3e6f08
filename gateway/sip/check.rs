//! The checks a message passes before the transaction layer sees it, each
//! mapped to the response it earns (RFC 3261 sections 8.2 and 16.3, and
//! the expectations of RFC 4475 and RFC 5118).
//!
//! [`check_request`] is syntax: required headers present exactly once and
//! well formed, the Request-URI a URI, numbers in range. Failing it earns
//! 400 (or 416 for a URI scheme Tollgate cannot route). [`check_support`]
//! is what this user agent can do: extensions (420), body types (415),
//! Accept (406) and methods (405 or 501).

use super::header::{CSeq, Method, NameAddr, Via};
use super::message::{HeaderName, Message, StartLine};
use super::scan::CommaList;
use super::uri::Uri;

/// A refusal: the status to answer with and a static reason phrase (also
/// the metrics label). Never carries bytes from the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub reason: &'static str,
}

const fn bad(reason: &'static str) -> Reject {
    Reject {
        status: 400,
        reason,
    }
}

/// Most Via entries a request may carry, and most bytes of them. A
/// request that passed more proxies than Max-Forwards' usual 70 has
/// looped (RFC 3261 section 16.6), and real paths through carriers'
/// proxies have a handful (RFC 4475's long request has 30). Every
/// response copies them, and the gateway keeps responses and INVITEs
/// while a transaction or call lasts, so a request with a thousand would
/// cost that memory many times over. Route and Record-Route (one entry
/// per proxy at most, kept as a call's route set) have the same bounds.
pub const MAX_VIA: usize = 70;
pub const MAX_VIA_BYTES: usize = 8192;

/// The parts of a request every later layer needs, already validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHead<'a> {
    pub method: Method<'a>,
    pub uri: Uri<'a>,
    pub via: Via<'a>,
    pub from: NameAddr<'a>,
    pub to: NameAddr<'a>,
    pub call_id: &'a [u8],
    pub cseq: CSeq<'a>,
    pub max_forwards: Option<u8>,
}

fn once<'a>(m: &Message<'a>, name: HeaderName, what: &'static str) -> Result<&'a [u8], Reject> {
    let mut it = m.headers_named(name);
    let first = it.next().ok_or(bad(what))?;
    if it.next().is_some() {
        return Err(bad("duplicate header"));
    }
    Ok(first.value)
}

/// Syntax checks on a request; see the module doc.
pub fn check_request<'a>(m: &Message<'a>) -> Result<RequestHead<'a>, Reject> {
    let StartLine::Request { method, uri } = m.start else {
        return Err(bad("not a request"));
    };
    let call_id = once(m, HeaderName::CallId, "missing Call-ID")?;
    if call_id.is_empty() || call_id.iter().any(|&b| b <= b' ') {
        return Err(bad("malformed Call-ID"));
    }
    let from = NameAddr::parse(once(m, HeaderName::From, "missing From")?)
        .map_err(|_| bad("malformed From"))?;
    let to =
        NameAddr::parse(once(m, HeaderName::To, "missing To")?).map_err(|_| bad("malformed To"))?;
    let cseq = CSeq::parse(once(m, HeaderName::CSeq, "missing CSeq")?)
        .map_err(|_| bad("malformed CSeq"))?;
    if cseq.method != method {
        return Err(bad("CSeq method does not match"));
    }
    let max_forwards = match m.count(HeaderName::MaxForwards) {
        0 => None,
        1 => Some(
            super::header::number(once(m, HeaderName::MaxForwards, "")?, 255)
                .map_err(|_| bad("malformed Max-Forwards"))? as u8,
        ),
        _ => return Err(bad("duplicate header")),
    };
    let mut vias = m.values(HeaderName::Via);
    let first = vias.next().ok_or(bad("missing Via"))?;
    let via = Via::parse(first).map_err(|_| bad("malformed Via"))?;
    let (mut count, mut bytes) = (1usize, first.len());
    for v in vias {
        Via::parse(v).map_err(|_| bad("malformed Via"))?;
        count += 1;
        bytes += v.len();
    }
    if count > MAX_VIA || bytes > MAX_VIA_BYTES {
        return Err(bad("too many Via headers"));
    }
    if via.branch() == Some(b"z9hG4bK") {
        return Err(bad("empty branch"));
    }
    for c in m.values(HeaderName::Contact) {
        if c != b"*" {
            NameAddr::parse(c).map_err(|_| bad("malformed Contact"))?;
        }
    }
    for name in [HeaderName::Route, HeaderName::RecordRoute] {
        let (mut count, mut bytes) = (0usize, 0usize);
        for r in m.values(name) {
            NameAddr::parse(r).map_err(|_| bad("malformed Route"))?;
            count += 1;
            bytes += r.len();
        }
        if count > MAX_VIA || bytes > MAX_VIA_BYTES {
            return Err(bad("too many Route headers"));
        }
    }
    for h in m.headers_named(HeaderName::Expires) {
        super::header::number(h.value, u64::from(u32::MAX))
            .map_err(|_| bad("malformed Expires"))?;
    }
    if let Some(d) = m.header(HeaderName::Date) {
        // RFC 3261 20.17: SIP dates are always GMT.
        if !super::scan::trim_lws(d.value).ends_with(b"GMT") {
            return Err(bad("malformed Date"));
        }
    }
    let uri = Uri::parse(uri).map_err(|_| bad("malformed Request-URI"))?;
    match &uri {
        Uri::Sip(u) if u.headers.is_some() => return Err(bad("headers in Request-URI")),
        Uri::Sip(_) => {}
        Uri::Other { scheme, .. } if scheme.eq_ignore_ascii_case(b"tel") => {}
        Uri::Other { .. } => {
            return Err(Reject {
                status: 416,
                reason: "Unsupported URI Scheme",
            })
        }
    }
    Ok(RequestHead {
        method,
        uri,
        via,
        from,
        to,
        call_id,
        cseq,
        max_forwards,
    })
}

/// What this user agent supports, for [`check_support`].
#[derive(Clone, Copy, Debug)]
pub struct Capabilities<'c> {
    /// Methods answered; others known to SIP get 405, unknown ones 501.
    pub methods: &'c [Method<'static>],
    /// Option tags understood in Require / Proxy-Require.
    pub extensions: &'c [&'c [u8]],
}

/// The capabilities of Tollgate's trunk side.
pub const TRUNK: Capabilities<'static> = Capabilities {
    methods: &[
        Method::Invite,
        Method::Ack,
        Method::Bye,
        Method::Cancel,
        Method::Options,
        Method::Update,
    ],
    // Session timers (RFC 4028), as the answering side.
    extensions: &[b"timer"],
};

/// Capability checks on a request that passed [`check_request`].
pub fn check_support(
    m: &Message<'_>,
    head: &RequestHead<'_>,
    caps: &Capabilities<'_>,
) -> Result<(), Reject> {
    if !caps.methods.contains(&head.method) {
        return Err(match head.method {
            Method::Other(_) => Reject {
                status: 501,
                reason: "Not Implemented",
            },
            _ => Reject {
                status: 405,
                reason: "Method Not Allowed",
            },
        });
    }
    if head.method != Method::Ack && head.method != Method::Cancel {
        for name in [HeaderName::Require, HeaderName::ProxyRequire] {
            for tag in m.values(name) {
                if !tag.is_empty() && !caps.extensions.iter().any(|e| e.eq_ignore_ascii_case(tag)) {
                    return Err(Reject {
                        status: 420,
                        reason: "Bad Extension",
                    });
                }
            }
        }
    }
    if !m.body.is_empty() {
        let ct = m
            .header(HeaderName::ContentType)
            .map(|h| h.value)
            .unwrap_or_default();
        if !is_sdp(ct) {
            return Err(Reject {
                status: 415,
                reason: "Unsupported Media Type",
            });
        }
    }
    if head.method == Method::Invite && m.count(HeaderName::Accept) > 0 {
        let accepts_sdp = m
            .values(HeaderName::Accept)
            .any(|a| is_sdp(a) || a.starts_with(b"*/*") || a.starts_with(b"application/*"));
        if !accepts_sdp {
            return Err(Reject {
                status: 406,
                reason: "Not Acceptable",
            });
        }
    }
    Ok(())
}

/// Whether a Content-Type or Accept value is application/sdp.
fn is_sdp(v: &[u8]) -> bool {
    let media = CommaList::new(v).next().unwrap_or_default();
    let media = media.split(|&b| b == b';').next().unwrap_or_default();
    super::scan::trim_lws(media).eq_ignore_ascii_case(b"application/sdp")
}

/// Checks on a response: a Via, a CSeq, Call-ID, From and To. A response
/// that fails is dropped (never answered).
pub fn check_response(m: &Message<'_>) -> Result<(), Reject> {
    if !matches!(m.start, StartLine::Response { .. }) {
        return Err(bad("not a response"));
    }
    once(m, HeaderName::CallId, "missing Call-ID")?;
    NameAddr::parse(once(m, HeaderName::From, "missing From")?)
        .map_err(|_| bad("malformed From"))?;
    NameAddr::parse(once(m, HeaderName::To, "missing To")?).map_err(|_| bad("malformed To"))?;
    CSeq::parse(once(m, HeaderName::CSeq, "missing CSeq")?).map_err(|_| bad("malformed CSeq"))?;
    Via::parse(m.values(HeaderName::Via).next().ok_or(bad("missing Via"))?)
        .map_err(|_| bad("malformed Via"))?;
    for h in m.headers_named(HeaderName::RetryAfter) {
        let v = h
            .value
            .split(|&b| b == b'(' || b == b';')
            .next()
            .unwrap_or_default();
        super::header::number(v, u64::from(u32::MAX)).map_err(|_| bad("malformed Retry-After"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Framing, Limits};

    fn with_vias(vias: &[String]) -> Vec<u8> {
        let mut m = String::from("OPTIONS sip:echo@192.0.2.1 SIP/2.0\r\n");
        for v in vias {
            m.push_str(&format!("Via: {v}\r\n"));
        }
        m.push_str("From: <sip:a@192.0.2.2>;tag=1\r\nTo: <sip:echo@192.0.2.1>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
        m.into_bytes()
    }

    fn check(b: &[u8]) -> Result<(), Reject> {
        let (m, _) = Message::parse(b, Framing::Datagram, &Limits::default()).expect("parses");
        check_request(&m).map(|_| ())
    }

    #[test]
    fn via_paths_are_capped_in_count_and_bytes() {
        let via = |i: usize, pad: usize| {
            format!(
                "SIP/2.0/UDP p{i}.example.net;branch=z9hG4bK{i}{}",
                "x".repeat(pad)
            )
        };
        let ok: Vec<String> = (0..MAX_VIA).map(|i| via(i, 0)).collect();
        assert_eq!(check(&with_vias(&ok)), Ok(()));
        let many: Vec<String> = (0..=MAX_VIA).map(|i| via(i, 0)).collect();
        assert_eq!(check(&with_vias(&many)), Err(bad("too many Via headers")));
        let long: Vec<String> = (0..3).map(|i| via(i, 3000)).collect();
        assert_eq!(check(&with_vias(&long)), Err(bad("too many Via headers")));
        // Comma-joined values count one by one.
        let joined = vec![ok.join(", "), via(99, 0)];
        assert_eq!(check(&with_vias(&joined)), Err(bad("too many Via headers")));
    }

    #[test]
    fn route_sets_are_capped_like_via_paths() {
        let with_routes = |n: usize, pad: usize| {
            let one = format!("<sip:p{}@p.example.net;lr>", "y".repeat(pad));
            let rr: String = (0..n).map(|_| format!("Record-Route: {one}\r\n")).collect();
            let mut m = with_vias(&["SIP/2.0/UDP a;branch=z9hG4bK1".to_string()]);
            let at = m.windows(6).position(|w| w == b"From: ").expect("From");
            m.splice(at..at, rr.into_bytes());
            m
        };
        assert_eq!(check(&with_routes(MAX_VIA, 0)), Ok(()));
        assert_eq!(
            check(&with_routes(MAX_VIA + 1, 0)),
            Err(bad("too many Route headers"))
        );
        assert_eq!(
            check(&with_routes(3, 3000)),
            Err(bad("too many Route headers"))
        );
        // An empty entry is no route.
        let mut empty = with_routes(2, 0);
        let at = empty.windows(3).position(|w| w == b">\r\n").expect("end") + 1;
        empty.splice(at..at, b", ".iter().copied());
        assert_eq!(check(&empty), Err(bad("malformed Route")));
    }
}
