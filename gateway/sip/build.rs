//! Building SIP messages the gateway sends: responses to requests it
//! received (RFC 3261 8.2.6) and requests it originates (8.1.1, 12.2.1).

use std::net::SocketAddr;

use super::header::Method;
use super::message::{push_u64, push_unfolded, HeaderName, Message};

/// Appends `v` unfolded, then CRLF.
pub(crate) fn push_value(out: &mut Vec<u8>, v: &[u8]) {
    push_unfolded(out, v);
    out.extend_from_slice(b"\r\n");
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    push_value(out, value);
}

fn push_body(out: &mut Vec<u8>, body: Option<(&str, &[u8])>) {
    match body {
        Some((content_type, b)) => {
            push_header(out, "Content-Type", content_type.as_bytes());
            out.extend_from_slice(b"Content-Length: ");
            push_u64(out, b.len() as u64);
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
    }
}

/// A response to `req`: its Vias, From, Call-ID and CSeq, its To with
/// `to_tag` added when the request's To has none, then `extra` headers and
/// the body. `None` if the request lacks a header a response must copy.
///
/// A response that makes a dialog (101 to 299 to an INVITE) also carries
/// the request's Record-Route headers, in order (RFC 3261 12.1.1), so that
/// the proxies that record-routed, a carrier's edge proxy above all, see
/// the caller's ACK and BYE.
pub fn response(
    req: &Message<'_>,
    code: u16,
    reason: &str,
    to_tag: Option<&[u8]>,
    extra: &[(&str, &[u8])],
    body: Option<(&str, &[u8])>,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(512 + body.map_or(0, |(_, b)| b.len()));
    out.extend_from_slice(b"SIP/2.0 ");
    push_u64(&mut out, u64::from(code));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut vias = 0;
    for h in req.headers_named(HeaderName::Via) {
        push_header(&mut out, "Via", h.value);
        vias += 1;
    }
    if vias == 0 {
        return None;
    }
    push_header(&mut out, "From", req.header(HeaderName::From)?.value);
    let to = req.header(HeaderName::To)?.value;
    let has_tag = req
        .to()
        .and_then(Result::ok)
        .and_then(|t| t.tag())
        .is_some();
    match to_tag {
        Some(tag) if !has_tag => {
            let mut v = to.to_vec();
            v.extend_from_slice(b";tag=");
            v.extend_from_slice(tag);
            push_header(&mut out, "To", &v);
        }
        _ => push_header(&mut out, "To", to),
    }
    push_header(&mut out, "Call-ID", req.call_id()?);
    push_header(&mut out, "CSeq", req.header(HeaderName::CSeq)?.value);
    if (101..=299).contains(&code) && req.method() == Some(Method::Invite) {
        for h in req.headers_named(HeaderName::RecordRoute) {
            push_header(&mut out, "Record-Route", h.value);
        }
    }
    for (name, value) in extra {
        push_header(&mut out, name, value);
    }
    push_body(&mut out, body);
    Some(out)
}

/// What a request the gateway originates needs.
pub struct RequestSpec<'a> {
    pub method: &'a str,
    pub uri: &'a [u8],
    /// Our address for the Via sent-by, and its transport name.
    pub via: SocketAddr,
    pub transport: &'a str,
    pub branch: &'a [u8],
    pub from: &'a [u8],
    pub to: &'a [u8],
    pub call_id: &'a [u8],
    pub cseq: u32,
    pub extra: &'a [(&'a str, &'a [u8])],
    pub body: Option<(&'a str, &'a [u8])>,
}

/// A request from `spec`, with Max-Forwards 70 unless `spec.extra` gives
/// one (a bridged call's outbound INVITE carries the caller's, less one).
pub fn request(spec: &RequestSpec<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(spec.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(spec.uri);
    out.extend_from_slice(b" SIP/2.0\r\nVia: SIP/2.0/");
    out.extend_from_slice(spec.transport.as_bytes());
    out.push(b' ');
    out.extend_from_slice(spec.via.to_string().as_bytes());
    out.extend_from_slice(b";branch=");
    out.extend_from_slice(spec.branch);
    out.extend_from_slice(b";rport\r\n");
    if !spec
        .extra
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("Max-Forwards"))
    {
        out.extend_from_slice(b"Max-Forwards: 70\r\n");
    }
    push_header(&mut out, "From", spec.from);
    push_header(&mut out, "To", spec.to);
    push_header(&mut out, "Call-ID", spec.call_id);
    out.extend_from_slice(b"CSeq: ");
    push_u64(&mut out, u64::from(spec.cseq));
    out.push(b' ');
    out.extend_from_slice(spec.method.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in spec.extra {
        push_header(&mut out, name, value);
    }
    push_body(&mut out, spec.body);
    out
}

/// A random token for tags, branches and Call-IDs: 16 hex digits from the
/// operating system's random source (unguessable, so an off-path attacker
/// cannot forge in-dialog requests).
pub fn token() -> String {
    let mut b = [0u8; 8];
    // Never a clock reading or zeros: guessable tags would let an
    // off-path attacker forge in-dialog requests.
    crate::crypto::random_or_stop(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A fresh RFC 3261 branch (with the magic cookie).
pub fn branch() -> String {
    format!("z9hG4bK{}", token())
}

/// The call core's source of tags, branches, Call-IDs, SSRCs, first
/// sequence numbers, SDP session ids and port picks: HMAC-SHA256 of
/// a counter under a 256-bit key, a pseudorandom function in counter
/// mode. Keyed from the operating system it is as unguessable as
/// [`token`] without a system call per token; keyed from a seed
/// ([`Tokens::seeded`]) a simulation replays the same identifiers.
pub struct Tokens {
    key: zeroize::Zeroizing<[u8; 32]>,
    n: u64,
}

impl Tokens {
    /// Keyed from the operating system's random source.
    pub fn from_os() -> Self {
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        crate::crypto::random_or_stop(key.as_mut_slice());
        Self { key, n: 0 }
    }

    /// Keyed from `seed`: the same seed gives the same tokens. For tests
    /// and simulations only: a seed an attacker can guess makes every tag
    /// guessable.
    #[cfg(test)]
    pub fn seeded(seed: u64) -> Self {
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        key[..8].copy_from_slice(&seed.to_be_bytes());
        Self { key, n: 0 }
    }

    /// The next 8 bytes of the stream.
    fn next(&mut self) -> [u8; 8] {
        use hmac::Mac;
        self.n += 1;
        let mut b = [0u8; 8];
        match hmac::Hmac::<sha2::Sha256>::new_from_slice(self.key.as_slice()) {
            Ok(mut mac) => {
                mac.update(&self.n.to_be_bytes());
                b.copy_from_slice(&mac.finalize().into_bytes()[..8]);
            }
            // HMAC takes a key of any length: this cannot happen.
            Err(_) => crate::crypto::random_or_stop(&mut b),
        }
        b
    }

    /// 16 hex digits, as [`token`].
    pub fn token(&mut self) -> String {
        self.next().iter().map(|x| format!("{x:02x}")).collect()
    }

    /// A 32-bit value (SSRCs, first sequence numbers, SDP session ids,
    /// where a call's ports start).
    pub fn u32(&mut self) -> u32 {
        let b = self.next();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// A fresh RFC 3261 branch (with the magic cookie).
    pub fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.token())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_a_seed_replays_them() {
        let run = |mut t: Tokens| (0..1000).map(|_| t.token()).collect::<Vec<_>>();
        let a = run(Tokens::seeded(7));
        assert_eq!(a, run(Tokens::seeded(7)));
        assert_ne!(a, run(Tokens::seeded(8)));
        assert_ne!(a, run(Tokens::from_os()));
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert_eq!(distinct.len(), a.len());
        assert!(a
            .iter()
            .all(|t| t.len() == 16 && t.bytes().all(|b| b.is_ascii_hexdigit())));
        assert!(Tokens::seeded(1).branch().starts_with("z9hG4bK"));
    }
    use crate::sip::message::{Framing, Limits};

    #[test]
    fn responses_copy_the_right_headers_and_add_the_tag() {
        let req = b"INVITE sip:echo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n\
Via: SIP/2.0/UDP b;branch=z9hG4bK2\r\nFrom: <sip:c@d>;tag=f\r\nTo: <sip:echo@127.0.0.1>\r\n\
Call-ID: x\r\nCSeq: 7\r\n INVITE\r\nContent-Length: 0\r\n\r\n";
        let (m, _) = Message::parse(req, Framing::Datagram, &Limits::default()).expect("parses");
        let r = response(
            &m,
            200,
            "OK",
            Some(b"t1"),
            &[("Contact", b"<sip:gw>")],
            Some(("application/sdp", b"v=0\r\n")),
        )
        .expect("builds");
        let (p, _) =
            Message::parse(&r, Framing::Stream, &Limits::default()).expect("response parses");
        assert_eq!(p.status(), Some(200));
        assert_eq!(p.values(HeaderName::Via).count(), 2);
        assert_eq!(p.to().expect("to").expect("ok").tag(), Some(&b"t1"[..]));
        assert_eq!(p.cseq().expect("cseq").expect("ok").seq, 7);
        assert_eq!(p.body, b"v=0\r\n");
        assert_eq!(
            p.header(HeaderName::Contact).map(|h| h.value),
            Some(&b"<sip:gw>"[..])
        );
        assert!(crate::sip::check::check_response(&p).is_ok());
    }

    #[test]
    fn a_request_carries_one_max_forwards_the_given_one_if_any() {
        let spec = |extra: &[(&str, &[u8])]| {
            request(&RequestSpec {
                method: "INVITE",
                uri: b"sip:1@b",
                via: "192.0.2.1:5060".parse().expect("addr"),
                transport: "UDP",
                branch: b"z9hG4bK1",
                from: b"<sip:a@b>;tag=1",
                to: b"<sip:1@b>",
                call_id: b"c",
                cseq: 1,
                extra,
                body: None,
            })
        };
        let given: [(&str, &[u8]); 1] = [("Max-Forwards", b"12")];
        for (extra, want) in [(&[][..], &b"70"[..]), (&given[..], &b"12"[..])] {
            let bytes = spec(extra);
            let (m, _) =
                Message::parse(&bytes, Framing::Stream, &Limits::default()).expect("parses");
            assert_eq!(m.count(HeaderName::MaxForwards), 1);
            assert_eq!(
                m.header(HeaderName::MaxForwards).map(|h| h.value),
                Some(want)
            );
        }
    }

    #[test]
    fn a_dialog_making_response_keeps_the_record_route_in_order() {
        let req = b"INVITE sip:echo@gw SIP/2.0\r\nVia: SIP/2.0/UDP p2;branch=z9hG4bK2\r\n\
Via: SIP/2.0/UDP p1;branch=z9hG4bK1\r\nRecord-Route: <sip:p2;lr>\r\n\
Record-Route: <sip:p1;lr;ftag=x>, <sip:p0;lr>\r\nFrom: <sip:c@d>;tag=f\r\n\
To: <sip:echo@gw>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let (m, _) = Message::parse(req, Framing::Datagram, &Limits::default()).expect("parses");
        let routes = |code: u16| -> Vec<Vec<u8>> {
            let r = response(&m, code, "X", Some(b"t"), &[], None).expect("builds");
            let (p, _) = Message::parse(&r, Framing::Stream, &Limits::default()).expect("parses");
            p.values(HeaderName::RecordRoute)
                .map(|v| v.to_vec())
                .collect()
        };
        let want: Vec<Vec<u8>> = vec![
            b"<sip:p2;lr>".to_vec(),
            b"<sip:p1;lr;ftag=x>".to_vec(),
            b"<sip:p0;lr>".to_vec(),
        ];
        assert_eq!(routes(200), want);
        assert_eq!(routes(180), want);
        // Neither a 100 nor a final refusal makes a dialog.
        assert!(routes(100).is_empty());
        assert!(routes(486).is_empty());
    }

    #[test]
    fn requests_are_well_formed_and_tokens_unique() {
        let b = branch();
        let r = request(&RequestSpec {
            method: "BYE",
            uri: b"sip:carrier@127.0.0.1:5070",
            via: "127.0.0.1:5060".parse().expect("addr"),
            transport: "UDP",
            branch: b.as_bytes(),
            from: b"<sip:echo@127.0.0.1>;tag=a",
            to: b"<sip:c@127.0.0.1>;tag=b",
            call_id: b"cid",
            cseq: 2,
            extra: &[],
            body: None,
        });
        let (m, _) = Message::parse(&r, Framing::Stream, &Limits::default()).expect("parses");
        let head = crate::sip::check::check_request(&m).expect("passes the checks");
        assert_eq!(head.via.branch(), Some(b.as_bytes()));
        assert_ne!(token(), token());
        assert!(b.starts_with("z9hG4bK") && b.len() == 23);
    }
}
