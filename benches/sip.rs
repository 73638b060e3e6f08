//! Parse plus serialize of a typical carrier INVITE (with SDP), including
//! the request checks every INVITE passes. Goal: under 5 microseconds.
//! `cargo bench --bench sip`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::sip::check::{check_request, check_support, TRUNK};
use tollgate::sip::message::{Framing, Limits, Message};

const INVITE: &[u8] = b"INVITE sip:+442071838750@198.51.100.10:5060;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-524287-1---6f6ee0ab3b1e4a57;rport\r\n\
Via: SIP/2.0/UDP 10.20.30.40:5060;branch=z9hG4bK1d8a.2c9f63f4.0;received=10.20.30.40\r\n\
Max-Forwards: 69\r\n\
Record-Route: <sip:203.0.113.5;lr;ftag=as4f7c1c8e>\r\n\
Contact: <sip:+447700900123@203.0.113.5:5060;transport=udp>\r\n\
To: <sip:+442071838750@198.51.100.10;user=phone>\r\n\
From: \"Caller\" <sip:+447700900123@203.0.113.5;user=phone>;tag=as4f7c1c8e\r\n\
Call-ID: 6a1b5f3e2c7d4e8f9a0b1c2d3e4f5a6b@203.0.113.5\r\n\
CSeq: 102 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, SUBSCRIBE, NOTIFY, INFO, PUBLISH, MESSAGE\r\n\
Supported: replaces, timer\r\n\
P-Asserted-Identity: <sip:+447700900123@203.0.113.5;user=phone>\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Min-SE: 90\r\n\
User-Agent: CarrierSBC 4.2\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 265\r\n\
\r\n\
v=0\r\n\
o=- 1795548160 1795548160 IN IP4 203.0.113.5\r\n\
s=Carrier\r\n\
c=IN IP4 203.0.113.5\r\n\
t=0 0\r\n\
m=audio 18074 RTP/AVP 8 0 9 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

fn parse_and_serialize(c: &mut Criterion) {
    let limits = Limits::default();
    let (m, _) = Message::parse(INVITE, Framing::Datagram, &limits).expect("parses");
    assert_eq!(m.body.len(), 265, "the SDP is exactly the Content-Length");
    let mut out = Vec::with_capacity(2048);
    c.bench_function("sip/invite parse+check+serialize", |b| {
        b.iter(|| {
            let (m, _) =
                Message::parse(black_box(INVITE), Framing::Datagram, &limits).expect("parses");
            let head = check_request(&m).expect("valid");
            check_support(&m, &head, &TRUNK).expect("supported");
            out.clear();
            m.write_to(&mut out);
            black_box(out.len())
        })
    });
    c.bench_function("sip/invite parse", |b| {
        b.iter(|| {
            black_box(
                Message::parse(black_box(INVITE), Framing::Datagram, &limits)
                    .map(|(m, _)| m.headers.len()),
            )
        })
    });
}

criterion_group!(benches, parse_and_serialize);
criterion_main!(benches);
