//! SIP parsing on hostile bytes, both framings: no panic, and whatever
//! parses writes out canonically and parses back to the same message. A
//! request's calling party (privacy, asserted identity) is read too: a
//! number it yields is only ever a bounded number.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate::sip::check::{check_request, check_response, check_support, TRUNK};
use tollgate::sip::message::{Framing, HeaderName, Limits, Message};
use tollgate::sip::privacy::{caller_id, MAX_DIGITS};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    for framing in [Framing::Datagram, Framing::Stream] {
        let Ok((m, used)) = Message::parse(data, framing, &limits) else {
            continue;
        };
        assert!(used <= data.len());
        if m.status().is_some() {
            let _ = check_response(&m);
        } else if let Ok(head) = check_request(&m) {
            let _ = check_support(&m, &head, &TRUNK);
            let id = caller_id(&m, &head.from, true);
            for n in [id.from, id.asserted].into_iter().flatten() {
                let digits = n.iter().filter(|b| b.is_ascii_digit()).count();
                assert!((1..=MAX_DIGITS).contains(&digits));
                assert!(n.iter().all(|b| b.is_ascii_digit() || b"+-.()".contains(b)));
            }
            assert!(caller_id(&m, &head.from, false).asserted.is_none());
        }
        for h in &m.headers {
            let _ = m.values(h.name).count();
        }
        let mut out = Vec::new();
        m.write_to(&mut out);
        let (again, n) = Message::parse(&out, Framing::Stream, &limits)
            .expect("a parsed message reserializes to a parsable one");
        assert_eq!(n, out.len());
        assert_eq!(again.start, m.start);
        assert_eq!(again.body, m.body);
        let names = |m: &Message<'_>| {
            m.headers
                .iter()
                .filter(|h| h.name != HeaderName::ContentLength)
                .map(|h| h.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&again), names(&m));
    }
});
