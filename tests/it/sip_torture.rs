//! RFC 4475 and RFC 5118 torture messages (copied from the shared vectors
//! into `tests/vectors/sip_torture/`, labels in `index.json`). Each message
//! goes through framing, the request or response checks and the trunk
//! side's capability checks; the outcome must be the one the RFC expects.

use std::collections::BTreeMap;

use tollgate::sip::check::{check_request, check_response, check_support, TRUNK};
use tollgate::sip::message::{Framing, Limits, Message};

/// What the gateway does with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// A request that passes every check (a UAS processes it).
    Accept,
    /// A response that passes its checks.
    AcceptResponse,
    /// Answered with this status.
    Reply(u16),
    /// Dropped without an answer.
    Drop,
}

fn outcome(bytes: &[u8]) -> Outcome {
    let (m, _) = match Message::parse(bytes, Framing::Datagram, &Limits::default()) {
        Ok(x) => x,
        Err(e) => {
            let is_request = !bytes.starts_with(b"SIP/");
            return match e.status() {
                Some(s) if is_request => Outcome::Reply(s),
                _ => Outcome::Drop,
            };
        }
    };
    if m.status().is_some() {
        return match check_response(&m) {
            Ok(()) => Outcome::AcceptResponse,
            Err(_) => Outcome::Drop,
        };
    }
    match check_request(&m).and_then(|h| check_support(&m, &h, &TRUNK).map(|()| h)) {
        Ok(_) => Outcome::Accept,
        Err(r) => Outcome::Reply(r.status),
    }
}

fn expected() -> BTreeMap<&'static str, Outcome> {
    use Outcome::*;
    BTreeMap::from([
        // RFC 4475 3.1.1: valid messages.
        ("wsinv", Accept),
        ("intmeth", Reply(501)), // unknown method at an endpoint
        ("esc01", Accept),
        ("escnull", Reply(405)), // REGISTER: Tollgate is not a registrar
        ("esc02", Reply(501)),   // RE%47IST%45R is an unknown method
        ("lwsdisp", Accept),
        ("longreq", Accept),
        ("dblreq", Reply(405)), // the REGISTER, trailing octets ignored
        ("semiuri", Accept),
        ("transports", Accept),
        ("mpart01", Reply(405)), // MESSAGE, framed by Content-Length
        ("unreason", AcceptResponse),
        ("noreason", AcceptResponse),
        // RFC 4475 3.1.2: invalid messages.
        ("badinv01", Reply(400)),
        ("clerr", Reply(400)),
        ("ncl", Drop),
        ("scalar02", Reply(400)),
        ("scalarlg", Drop),
        ("quotbal", Reply(400)),
        ("ltgtruri", Reply(400)),
        ("lwsruri", Reply(400)),
        ("lwsstart", Reply(400)),
        ("trws", Reply(400)),
        ("escruri", Reply(400)),
        ("baddate", Reply(400)),
        ("regbadct", Reply(400)),
        ("badaspec", Reply(400)),
        ("baddn", Reply(400)),
        ("badvers", Reply(505)),
        ("mismatch01", Reply(400)),
        ("mismatch02", Reply(400)), // 501 preferred, 400 acceptable
        ("bigcode", Drop),
        // RFC 4475 3.2-3.4: transaction and application layer.
        ("badbranch", Reply(400)),
        ("insuf", Reply(400)),
        ("unkscm", Reply(416)),
        ("novelsc", Reply(416)),
        ("unksm2", Reply(405)), // REGISTER
        ("bext01", Reply(420)),
        ("invut", Reply(415)),
        ("regaut01", Reply(405)),
        ("multi01", Reply(400)),
        ("mcl01", Drop),
        ("bcast", AcceptResponse),
        ("zeromf", Accept), // a UAS processes Max-Forwards 0 normally
        ("cparam01", Reply(405)),
        ("cparam02", Reply(405)),
        ("regescrt", Reply(405)),
        ("sdp01", Reply(406)),
        ("inv2543", Accept),
        // RFC 5118: IPv6.
        ("ipv6-good", Reply(405)), // REGISTER; its IPv6 references parse
        ("ipv6-bad", Reply(400)),
        ("port-ambiguous", Reply(405)), // REGISTER, as above
        ("port-unambiguous", Reply(405)),
        ("via-received-param-with-delim", Accept), // robust: parse and go on
        ("via-received-param-no-delim", Accept),
        ("ipv6-in-sdp", Accept),
        ("mult-ip-in-header", Accept),
        ("mult-ip-in-sdp", Accept),
        ("ipv4-mapped-ipv6", Accept),
        ("ipv6-bug-abnf-3-colons", Reply(400)),
        ("ipv6-correct-abnf-2-colons", Accept),
    ])
}

fn read(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/vectors/sip_torture/{name}.sip",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_torture_message_gets_the_expected_outcome() {
    let index: serde_json::Value = serde_json::from_slice(&read_index()).expect("index");
    let table = expected();
    let mut wrong = Vec::new();
    let mut seen = 0;
    for (name, meta) in index.as_object().expect("object") {
        if name == "_meta" {
            continue;
        }
        seen += 1;
        let want = *table
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{name} has no expected outcome"));
        // The table must agree with the label: invalid messages are never
        // accepted as they stand, except where the RFC asks for robustness.
        if meta["verdict"] == "invalid" && name != "via-received-param-with-delim" {
            assert!(
                !matches!(want, Outcome::Accept | Outcome::AcceptResponse),
                "{name}: invalid but expected to be accepted"
            );
        }
        let got = outcome(&read(name));
        if got != want {
            wrong.push(format!("{name}: got {got:?}, want {want:?}"));
        }
    }
    assert_eq!(seen, 61, "RFC 4475 has 49 messages and RFC 5118 12");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn read_index() -> Vec<u8> {
    let path = format!(
        "{}/tests/vectors/sip_torture/index.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn valid_messages_parse_to_the_right_values() {
    use tollgate::sip::header::Method;
    use tollgate::sip::message::HeaderName;
    use tollgate::sip::uri::{Host, Uri};
    let l = Limits::default();

    let wsinv = read("wsinv");
    let (m, _) = Message::parse(&wsinv, Framing::Datagram, &l).expect("wsinv");
    let h = check_request(&m).expect("wsinv checks");
    assert_eq!(h.method, Method::Invite);
    assert_eq!(h.max_forwards, Some(68));
    assert_eq!((h.cseq.seq, h.cseq.method), (9, Method::Invite));
    assert_eq!(h.to.tag(), Some(&b"1918181833n"[..]));
    assert_eq!(h.from.tag(), Some(&b"98asjd8"[..]));
    assert_eq!(h.call_id, b"wsinv.ndaksdj@192.0.2.1");
    assert_eq!(h.via.branch(), Some(&b"390skdjuw"[..]));
    assert_eq!(m.values(HeaderName::Via).count(), 3);
    assert_eq!(m.body.len(), 150);
    assert_eq!(
        m.header(HeaderName::Subject).map(|h| h.value),
        Some(&b""[..])
    );
    let contact = m.values(HeaderName::Contact).next().expect("contact");
    let c = tollgate::sip::header::NameAddr::parse(contact).expect("contact parses");
    assert_eq!(c.params.get(b"q"), Some(Some(&b"0.33"[..])));
    assert_eq!(c.params.get(b"newparam"), Some(Some(&b"newvalue"[..])));

    let esc01 = read("esc01");
    let (m, _) = Message::parse(&esc01, Framing::Datagram, &l).expect("esc01");
    let h = check_request(&m).expect("esc01 checks");
    let Uri::Sip(u) = h.uri else {
        panic!("sip uri")
    };
    assert_eq!(u.user, Some(&b"sips%3Auser%40example.com"[..]));

    let semi = read("semiuri");
    let (m, _) = Message::parse(&semi, Framing::Datagram, &l).expect("semiuri");
    let h = check_request(&m).expect("semiuri checks");
    assert_eq!(
        h.uri.sip().and_then(|u| u.user),
        Some(&b"user;par=u%40example.net"[..])
    );

    let port = read("port-unambiguous");
    let (m, _) = Message::parse(&port, Framing::Datagram, &l).expect("port");
    let h = check_request(&m).expect("port checks");
    let u = h.uri.sip().expect("sip");
    assert_eq!(u.host, Host::V6("2001:db8::10".parse().expect("v6")));
    assert_eq!(u.port, Some(5070));

    let dbl = read("dblreq");
    let (m, used) = Message::parse(&dbl, Framing::Datagram, &l).expect("dblreq");
    assert_eq!(m.method(), Some(Method::Register));
    assert!(
        m.body.is_empty() && used < dbl.len(),
        "trailing INVITE ignored"
    );

    let mpart = read("mpart01");
    let (m, _) = Message::parse(&mpart, Framing::Datagram, &l).expect("mpart01");
    let declared = m.header(HeaderName::ContentLength).expect("cl").value;
    assert_eq!(m.body.len().to_string().as_bytes(), declared);
    assert!(m.body.contains(&0), "binary part kept whole");

    let inv = read("inv2543");
    let (m, _) = Message::parse(&inv, Framing::Datagram, &l).expect("inv2543");
    assert!(m.header(HeaderName::ContentLength).is_none());
    assert!(
        m.body.starts_with(b"v=0"),
        "body runs to the end of the datagram"
    );

    let noreason = read("noreason");
    let (m, _) = Message::parse(&noreason, Framing::Datagram, &l).expect("noreason");
    assert_eq!(m.status(), Some(100));
}

#[test]
fn torture_messages_reserialize_to_equivalent_messages() {
    // Every message that parses writes out canonically and parses back to
    // the same start line, headers (by name and unfolded value) and body.
    let l = Limits::default();
    let index: serde_json::Value = serde_json::from_slice(&read_index()).expect("index");
    let mut checked = 0;
    for name in index.as_object().expect("object").keys() {
        if name == "_meta" {
            continue;
        }
        let bytes = read(name);
        let Ok((m, _)) = Message::parse(&bytes, Framing::Datagram, &l) else {
            continue;
        };
        let mut out = Vec::new();
        m.write_to(&mut out);
        let (again, used) = Message::parse(&out, Framing::Stream, &l)
            .unwrap_or_else(|e| panic!("{name}: reserialized form fails: {e}"));
        assert_eq!(used, out.len(), "{name}");
        assert_eq!(again.start, m.start, "{name}");
        assert_eq!(again.body, m.body, "{name}");
        let names = |m: &Message<'_>| {
            m.headers
                .iter()
                .filter(|h| h.name != tollgate::sip::message::HeaderName::ContentLength)
                .map(|h| h.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&again), names(&m), "{name}");
        checked += 1;
    }
    assert!(checked >= 50, "only {checked} parsed");
}
