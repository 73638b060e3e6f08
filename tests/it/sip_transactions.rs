//! The transaction layer (RFC 3261 section 17) driven with a virtual
//! clock: retransmission schedules, timeouts, absorption of retransmitted
//! requests and responses, ACK handling, and reliable transports.

use std::time::{Duration, Instant};

use tollgate::sip::message::{Framing, Limits, Message};
use tollgate::sip::transaction::{build_response, Event, Peer, TimerConfig, Transactions};

const UDP: Peer = Peer {
    addr: std::net::SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::new(127, 0, 0, 1),
        5070,
    )),
    reliable: false,
    tls: false,
};
const TCP: Peer = Peer {
    reliable: true,
    ..UDP
};

fn request(method: &str, branch: &str) -> Vec<u8> {
    format!(
        "{method} sip:echo@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n\
Max-Forwards: 70\r\n\
From: <sip:carrier@127.0.0.1>;tag=abc\r\n\
To: <sip:echo@127.0.0.1>\r\n\
Call-ID: call-{branch}\r\n\
CSeq: 1 {method}\r\n\
Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn parse(b: &[u8]) -> Message<'_> {
    Message::parse(b, Framing::Stream, &Limits::default())
        .expect("test message parses")
        .0
}

fn response_to(req: &[u8], code: u16) -> Vec<u8> {
    build_response(&parse(req), code, "Reason", Some(b"totag")).expect("response")
}

/// Runs the clock from `start` to `end` in 10 ms steps, firing timers and
/// recording when something was sent.
fn run(t: &mut Transactions, start: Instant, end: Instant) -> (Vec<Duration>, Vec<Event>) {
    let (mut sends, mut events) = (Vec::new(), Vec::new());
    let mut now = start;
    while now <= end {
        if t.poll_timeout().is_some_and(|d| d <= now) {
            t.handle_timeout(now);
        }
        while t.poll_transmit().is_some() {
            sends.push(now - start);
        }
        events.extend(std::iter::from_fn(|| t.poll_event()));
        now += Duration::from_millis(10);
    }
    (sends, events)
}

fn secs(v: &[f64]) -> Vec<Duration> {
    v.iter().map(|s| Duration::from_secs_f64(*s)).collect()
}

fn drain(t: &mut Transactions) -> (usize, Vec<Event>) {
    let mut n = 0;
    while t.poll_transmit().is_some() {
        n += 1;
    }
    (n, std::iter::from_fn(|| t.poll_event()).collect())
}

#[test]
fn invite_client_retransmits_on_timer_a_until_timer_b() {
    let mut t = Transactions::new(TimerConfig::default(), 100);
    let t0 = Instant::now();
    let key = t
        .start_client(request("INVITE", "z9hG4bKa"), UDP, t0)
        .expect("starts");
    let (sends, events) = run(&mut t, t0, t0 + Duration::from_secs(40));
    // Sent at 0, then A doubles from T1: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5.
    assert_eq!(sends, secs(&[0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]));
    assert_eq!(
        events,
        vec![
            Event::TimedOut { key: key.clone() },
            Event::Terminated { key }
        ]
    );
    assert!(t.is_empty());
    assert_eq!(t.stats().retransmissions, 6);
    assert_eq!(t.stats().timeouts, 1);
}

#[test]
fn non_invite_client_timer_e_caps_at_t2_and_f_times_out() {
    let mut t = Transactions::new(TimerConfig::default(), 100);
    let t0 = Instant::now();
    t.start_client(request("OPTIONS", "z9hG4bKo"), UDP, t0)
        .expect("starts");
    let (sends, events) = run(&mut t, t0, t0 + Duration::from_secs(40));
    assert_eq!(
        sends,
        secs(&[0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5])
    );
    assert!(matches!(events[0], Event::TimedOut { .. }));
}

#[test]
fn invite_client_non_2xx_is_acked_and_retransmissions_absorbed() {
    let mut t = Transactions::new(TimerConfig::default(), 100);
    let t0 = Instant::now();
    let inv = request("INVITE", "z9hG4bKb");
    let key = t.start_client(inv.clone(), UDP, t0).expect("starts");
    drain(&mut t);
    let ringing = response_to(&inv, 180);
    t.handle_response(&parse(&ringing), &ringing, t0 + Duration::from_millis(100));
    let (sent, ev) = drain(&mut t);
    assert_eq!(sent, 0);
    assert!(matches!(ev[..], [Event::Response { code: 180, .. }]));
    // Proceeding: no retransmissions and no Timer B for a long while.
    let (sends, events) = run(
        &mut t,
        t0 + Duration::from_millis(110),
        t0 + Duration::from_secs(60),
    );
    assert!(
        sends.is_empty() && events.is_empty(),
        "{sends:?} {events:?}"
    );

    let busy = response_to(&inv, 486);
    let now = t0 + Duration::from_secs(61);
    t.handle_response(&parse(&busy), &busy, now);
    let mut acks = Vec::new();
    while let Some(x) = t.poll_transmit() {
        acks.push(x.bytes);
    }
    assert_eq!(acks.len(), 1, "ACK sent");
    let ack = parse(&acks[0]);
    assert_eq!(ack.method(), Some(tollgate::sip::header::Method::Ack));
    assert_eq!(ack.cseq().expect("cseq").expect("ok").seq, 1);
    assert_eq!(
        ack.to().expect("to").expect("ok").tag(),
        Some(&b"totag"[..])
    );
    assert_eq!(
        ack.top_via().expect("via").expect("ok").branch(),
        Some(&b"z9hG4bKb"[..])
    );
    let (_, ev) = drain(&mut t);
    assert!(matches!(ev[..], [Event::Response { code: 486, .. }]));
    // The 486 again: the ACK again, nothing for the user.
    t.handle_response(&parse(&busy), &busy, now + Duration::from_millis(500));
    let (sent, ev) = drain(&mut t);
    assert_eq!((sent, ev.len()), (1, 0));
    // Timer D (32 s) ends it.
    let (_, events) = run(
        &mut t,
        now + Duration::from_secs(1),
        now + Duration::from_secs(33),
    );
    assert_eq!(events, vec![Event::Terminated { key }]);
}

#[test]
fn reliable_transports_do_not_retransmit_and_end_at_once() {
    let mut t = Transactions::new(TimerConfig::default(), 100);
    let t0 = Instant::now();
    let req = request("BYE", "z9hG4bKc");
    let key = t.start_client(req.clone(), TCP, t0).expect("starts");
    let (sends, _) = run(&mut t, t0, t0 + Duration::from_secs(5));
    assert_eq!(sends, secs(&[0.0]), "sent once over TCP");
    let ok = response_to(&req, 200);
    t.handle_response(&parse(&ok), &ok, t0 + Duration::from_secs(5));
    let (_, events) = run(
        &mut t,
        t0 + Duration::from_secs(5),
        t0 + Duration::from_secs(6),
    );
    assert!(matches!(events[0], Event::Response { code: 200, .. }));
    assert_eq!(events[1], Event::Terminated { key }, "Timer K is zero");
}

#[test]
fn invite_server_sends_trying_absorbs_retransmissions_and_retransmits_final() {
    let mut t = Transactions::new(TimerConfig::default(), 100);
    let t0 = Instant::now();
    let inv = request("INVITE", "z9hG4bKd");
    t.handle_request(&parse(&inv), &inv, UDP, t0);
    let mut sent = Vec::new();
    while let Some(x) = t.poll_transmit() {
        sent.push(x.bytes);
    }
    assert_eq!(sent.len(), 1);
    assert!(sent[0].starts_with(b"SIP/2.0 100 Trying\r\n"));
    let ev: Vec<_> = std::iter::from_fn(|| t.poll_event()).collect();
    let key = match &ev[..] {
        [Event::Request { key, .. }] => key.clone(),
        other => panic!("{other:?}"),
    };
    // A retransmitted INVITE: the 100 again, no new request event.
    t.handle_request(&parse(&inv), &inv, UDP, t0 + Duration::from_millis(500));
    let (n, ev) = drain(&mut t);
    assert_eq!((n, ev.len()), (1, 0));
    assert_eq!(t.stats().absorbed, 1);

    let busy = response_to(&inv, 486);
    t.respond(&key, busy, t0 + Duration::from_secs(1));
    let (sends, events) = run(
        &mut t,
        t0 + Duration::from_secs(1),
        t0 + Duration::from_secs(40),
    );
    // Sent at once, then G from T1 capped at T2 until H (64*T1 = 32 s).
    assert_eq!(
        sends,
        secs(&[0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5])
    );
    assert_eq!(
        events,
        vec![
            Event::TimedOut { key: key.clone() },
            Event::Terminated { key }
        ],
        "Timer H without an ACK"
    );
}

#[test]
fn invite_server_ack_confirms_then_timer_i_ends_it() {
    let mut t = Transactions::new(TimerConfig::default(), 100);
    let t0 = Instant::now();
    let inv = request("INVITE", "z9hG4bKe");
    t.handle_request(&parse(&inv), &inv, UDP, t0);
    let (_, ev) = drain(&mut t);
    let Event::Request { key, .. } = ev[0].clone() else {
        panic!("request")
    };
    t.respond(&key, response_to(&inv, 404), t0);
    drain(&mut t);
    let ack = request("ACK", "z9hG4bKe");
    t.handle_request(&parse(&ack), &ack, UDP, t0 + Duration::from_millis(200));
    let (n, ev) = drain(&mut t);
    assert_eq!((n, ev), (0, vec![Event::Acked { key: key.clone() }]));
    let (sends, events) = run(
        &mut t,
        t0 + Duration::from_millis(200),
        t0 + Duration::from_secs(6),
    );
    assert!(sends.is_empty(), "no more retransmissions after the ACK");
    assert_eq!(events, vec![Event::Terminated { key }], "Timer I (T4)");
}

#[test]
fn invite_server_2xx_accepted_absorbs_invites_and_passes_acks_up() {
    let mut t = Transactions::new(TimerConfig::default(), 100);
    let t0 = Instant::now();
    let inv = request("INVITE", "z9hG4bKf");
    t.handle_request(&parse(&inv), &inv, UDP, t0);
    let (_, ev) = drain(&mut t);
    let Event::Request { key, .. } = ev[0].clone() else {
        panic!("request")
    };
    t.respond(&key, response_to(&inv, 200), t0);
    drain(&mut t);
    t.handle_request(&parse(&inv), &inv, UDP, t0 + Duration::from_millis(500));
    assert_eq!(drain(&mut t), (0, vec![]), "retransmitted INVITE absorbed");
    let ack = request("ACK", "z9hG4bKf");
    t.handle_request(&parse(&ack), &ack, UDP, t0 + Duration::from_millis(600));
    let (_, ev) = drain(&mut t);
    assert!(
        matches!(ev[..], [Event::Request { .. }]),
        "2xx ACK goes to the dialog"
    );
    let (_, events) = run(
        &mut t,
        t0 + Duration::from_secs(1),
        t0 + Duration::from_secs(33),
    );
    assert_eq!(events, vec![Event::Terminated { key }], "Timer L");
}

#[test]
fn non_invite_server_resends_final_and_timer_j_ends_it() {
    let mut t = Transactions::new(TimerConfig::default(), 100);
    let t0 = Instant::now();
    let opt = request("OPTIONS", "z9hG4bKg");
    t.handle_request(&parse(&opt), &opt, UDP, t0);
    let (n, ev) = drain(&mut t);
    assert_eq!(n, 0, "no 100 Trying for non-INVITE");
    let Event::Request { key, .. } = ev[0].clone() else {
        panic!("request")
    };
    // Retransmitted before any response: absorbed silently.
    t.handle_request(&parse(&opt), &opt, UDP, t0 + Duration::from_millis(100));
    assert_eq!(drain(&mut t), (0, vec![]));
    t.respond(
        &key,
        response_to(&opt, 200),
        t0 + Duration::from_millis(200),
    );
    assert_eq!(drain(&mut t).0, 1);
    t.handle_request(&parse(&opt), &opt, UDP, t0 + Duration::from_millis(700));
    assert_eq!(drain(&mut t), (1, vec![]), "the 200 again");
    let (_, events) = run(
        &mut t,
        t0 + Duration::from_secs(1),
        t0 + Duration::from_secs(33),
    );
    assert_eq!(events, vec![Event::Terminated { key }]);
}

#[test]
fn a_full_table_answers_503_and_remembers_nothing() {
    let mut t = Transactions::new(TimerConfig::default(), 2);
    let t0 = Instant::now();
    for b in ["z9hG4bK1", "z9hG4bK2", "z9hG4bK3"] {
        let r = request("OPTIONS", b);
        t.handle_request(&parse(&r), &r, UDP, t0);
    }
    assert_eq!(t.len(), 2);
    let mut sent = Vec::new();
    while let Some(x) = t.poll_transmit() {
        sent.push(x.bytes);
    }
    assert_eq!(sent.len(), 1);
    assert!(sent[0].starts_with(b"SIP/2.0 503 "));
    assert_eq!(t.stats().overloaded, 1);
}

/// Issue 14 item 12: the table is bounded in bytes, not only in count.
/// Requests with long Via paths (every response copies them) fill the
/// byte budget long before the count cap; then new requests get 503, and
/// the bytes held return to zero as the transactions end.
#[test]
fn stored_sip_is_bounded_in_bytes() {
    let mut t = Transactions::new(TimerConfig::default(), 1000).with_max_bytes(64 * 1024);
    let t0 = Instant::now();
    let pad: String = (0..10)
        .map(|i| {
            format!(
                "Via: SIP/2.0/UDP proxy{i}.example.net;branch=z9hG4bK{}\r\n",
                "p".repeat(1000)
            )
        })
        .collect();
    let mut admitted = 0;
    for i in 0..40 {
        let r = request("INVITE", &format!("z9hG4bKbig{i}"));
        let r = String::from_utf8(r)
            .expect("utf8")
            .replace("Max-Forwards", &format!("{pad}Max-Forwards"))
            .into_bytes();
        let before = t.len();
        t.handle_request(&parse(&r), &r, UDP, t0);
        admitted += t.len() - before;
    }
    assert!(t.held_bytes() <= 64 * 1024, "{}", t.held_bytes());
    assert!((2..40).contains(&admitted), "{admitted}");
    assert_eq!(t.stats().overloaded, 40 - admitted as u64);
    // Each answered, then past every timer: nothing held.
    let _ = drain(&mut t);
    let (_, events) = run(&mut t, t0, t0 + Duration::from_secs(400));
    assert!(events.iter().any(|e| matches!(e, Event::Terminated { .. })));
    assert_eq!((t.len(), t.held_bytes()), (0, 0));
}

#[test]
fn stray_responses_are_counted_and_time_backwards_is_ignored() {
    let mut t = Transactions::new(TimerConfig::default(), 10);
    let t0 = Instant::now() + Duration::from_secs(100);
    let req = request("OPTIONS", "z9hG4bKh");
    let stray = response_to(&req, 200);
    t.handle_response(&parse(&stray), &stray, t0);
    assert_eq!(t.stats().stray_responses, 1);
    t.start_client(req, UDP, t0).expect("starts");
    drain(&mut t);
    t.handle_timeout(t0 - Duration::from_secs(50));
    assert_eq!(drain(&mut t), (0, vec![]));
    assert_eq!(t.len(), 1);
}
