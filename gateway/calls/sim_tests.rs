//! Whole calls on virtual time ([`super::sim`]): a carrier calls in, the
//! gateway answers or bridges, and every timer (ringing, 2xx resends,
//! session timers) runs at simulated speed.

use std::net::SocketAddr;
use std::time::Duration;

use super::sim::{direction, offer, Sim, Ua};
use crate::agent::protocol::{ClientMsg, ServerMsg};

mod agents;
use agents::{agents_sim, dial_far, ended};

const CARRIER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)),
    5070,
);
const FAR: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2)),
    5060,
);
/// A number routed out the far trunk.
const BRIDGED: &str = "+442079460000";

const CONFIG: &str = r#"
[sip]
udp = ["127.0.0.1:5060"]
tcp = []
t1_ms = 500
[media]
rtp_ports = "41000-41999"
rtp_timeout_s = 0
[firewall]
nftables = "off"
[[trunk]]
name = "carrier"
peers = ["127.0.0.1/32"]
keepalive_s = 0
[[trunk]]
name = "far"
peers = ["127.0.0.2/32"]
address = "127.0.0.2:5060"
srtp = "off"
codecs = ["PCMU", "PCMA"]
keepalive_s = 0
[[route]]
number = "echo"
target = "echo"
[[route]]
number = "tone"
target = "tone"
[[route]]
number = "ring"
target = "echo"
ring_ms = 5000
[[route]]
number = "longring"
target = "echo"
ring_ms = 70000
[[route]]
number = "+442079460000"
target = "trunk:far"
"#;

fn sim() -> Sim {
    Sim::new(CONFIG)
}

/// A carrier's call to `number`, answered: returns the UA after its ACK.
fn answered_call(s: &mut Sim, call: &str, number: &str, extra: &str) -> (Ua, super::sim::Sent) {
    let mut ua = Ua::new(CARRIER, call);
    let inv = ua.invite(number, &offer(CARRIER, 30000, "sendrecv"), extra);
    s.deliver(CARRIER, &inv);
    let ok = s.response(CARRIER, 200);
    ua.answered(&ok);
    let ack = ua.ack();
    s.deliver(CARRIER, &ack);
    (ua, ok)
}

#[tokio::test]
async fn an_echo_call_is_answered_and_ends_with_the_callers_bye() {
    let mut s = sim();
    let (mut ua, ok) = answered_call(&mut s, "echo-1", "echo", "");
    assert_eq!(ok.cseq_method(), Some("INVITE"));
    assert_eq!(direction(ok.body()), Some("sendrecv"), "{}", ok.text);
    assert!(ok.to_tag().is_some(), "the 2xx carries our tag");
    assert_eq!(s.active(), 1);
    assert_eq!((s.media_started(), s.core.ports.in_use()), (1, 1));
    // ACKed: no 200 OK resent however long the call lasts.
    s.advance(Duration::from_secs(60));
    assert!(s.take(CARRIER).is_empty(), "the ACK stopped the resends");
    let bye = ua.in_dialog("BYE", "", "");
    s.deliver(CARRIER, &bye);
    assert_eq!(s.response(CARRIER, 200).cseq_method(), Some("BYE"));
    assert_eq!((s.active(), s.ended("answered")), (0, 1));
    // The media task stops with the call and its port comes back.
    s.media_stopped().await;
    assert_eq!(s.core.ports.in_use(), 0);
}

/// Each way an offer can be refused after its port was bound gives the
/// port back: no path has to remember to.
#[tokio::test]
async fn a_refused_offer_holds_no_port() {
    let mut s = sim();
    let multicast: SocketAddr = "224.0.0.1:5070".parse().expect("addr");
    let no_codec = offer(CARRIER, 30000, "sendrecv")
        .replace("RTP/AVP 0 8 101", "RTP/AVP 18")
        .replace("a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n", "");
    for (call, body) in [
        ("to-multicast", offer(multicast, 30000, "sendrecv")),
        ("no-codec", no_codec),
    ] {
        let mut ua = Ua::new(CARRIER, call);
        let inv = ua.invite("echo", &body, "");
        s.deliver(CARRIER, &inv);
        assert_eq!(s.response(CARRIER, 488).cseq_method(), Some("INVITE"));
    }
    assert_eq!((s.active(), s.media_started()), (0, 0));
    assert_eq!(s.core.ports.in_use(), 0);
}

#[tokio::test]
async fn an_unrouted_number_gets_404_and_no_call() {
    let mut s = sim();
    let mut ua = Ua::new(CARRIER, "nowhere");
    let inv = ua.invite("+441632960000", &offer(CARRIER, 30000, "sendrecv"), "");
    s.deliver(CARRIER, &inv);
    let r = s.response(CARRIER, 404);
    assert!(r.to_tag().is_some());
    assert_eq!(s.active(), 0);
    // The 404 is resent until the ACK (Timer G), then stops.
    s.advance(Duration::from_millis(600));
    assert_eq!(s.response(CARRIER, 404).cseq_method(), Some("INVITE"));
    ua.answered(&r);
    let ack = ua.ack_failure();
    s.deliver(CARRIER, &ack);
    s.advance(Duration::from_secs(40));
    assert!(s.take(CARRIER).is_empty());
}

#[tokio::test]
async fn the_same_seed_gives_the_same_messages() {
    let refused = |seed| {
        let mut s = Sim::seeded(CONFIG, seed);
        let mut ua = Ua::new(CARRIER, "replay");
        let inv = ua.invite("+441632960000", &offer(CARRIER, 30000, "sendrecv"), "");
        s.deliver(CARRIER, &inv);
        s.advance(Duration::from_secs(2));
        s.take(CARRIER)
            .into_iter()
            .map(|m| m.text)
            .collect::<Vec<_>>()
    };
    let once = refused(42);
    assert_eq!(once.len(), 4, "100, the 404 and two resends: {once:?}");
    assert_eq!(once, refused(42));
    assert_ne!(once, refused(43), "another seed, another To tag");
}

#[tokio::test]
async fn a_200_never_acked_is_resent_until_64_t1_then_the_call_ends() {
    let mut s = sim();
    let mut ua = Ua::new(CARRIER, "lost-ack");
    let inv = ua.invite("echo", &offer(CARRIER, 30000, "sendrecv"), "");
    s.deliver(CARRIER, &inv);
    s.response(CARRIER, 200);
    let start = s.now;
    // Resent after T1, 2T1, 4T1, then every T2 (4 s) until 64*T1 = 32 s:
    // at 0.5, 1.5, 3.5, 7.5, 11.5 ... 31.5 s.
    let mut resent = Vec::new();
    while s.now < start + Duration::from_secs(33) {
        s.advance(Duration::from_millis(250));
        for m in s.take(CARRIER) {
            resent.push((s.now - start, m));
        }
    }
    let oks: Vec<_> = resent
        .iter()
        .filter(|(_, m)| m.status() == Some(200))
        .map(|(at, _)| at.as_millis())
        .collect();
    assert_eq!(oks.len(), 10, "resent at {oks:?}");
    assert!(
        (500..750).contains(&oks[0]) && (1500..1750).contains(&oks[1]),
        "{oks:?}"
    );
    let bye = resent.iter().find(|(_, m)| m.method() == Some("BYE"));
    assert!(
        bye.is_some_and(|(at, _)| at.as_secs() == 32),
        "BYE at 64*T1: {:?}",
        bye.map(|(at, _)| at)
    );
    assert_eq!((s.active(), s.ended("failed")), (0, 1));
}

#[tokio::test]
async fn cancel_while_ringing_gets_487_and_a_late_cancel_gets_481() {
    let mut s = sim();
    let mut ua = Ua::new(CARRIER, "cancel");
    let inv = ua.invite("ring", &offer(CARRIER, 30000, "sendrecv"), "");
    s.deliver(CARRIER, &inv);
    let ringing = s.response(CARRIER, 180);
    s.advance(Duration::from_secs(2));
    let cancel = ua.cancel();
    s.deliver(CARRIER, &cancel);
    let got = s.take(CARRIER);
    let codes: Vec<_> = got.iter().filter_map(|m| m.status()).collect();
    assert_eq!(codes, vec![200, 487], "{got:?}");
    assert_eq!(got[0].cseq_method(), Some("CANCEL"));
    assert_eq!(
        got[1].to_tag(),
        ringing.to_tag(),
        "the 487 keeps the 180's tag"
    );
    assert_eq!((s.active(), s.ended("cancelled")), (0, 1));
    // The ring time passes: nothing is answered.
    s.advance(Duration::from_secs(10));
    assert!(s.take(CARRIER).iter().all(|m| m.status() == Some(487)));

    // A CANCEL that crosses the 200 OK finds nothing to cancel.
    let mut ua = Ua::new(CARRIER, "cancel-late");
    let inv = ua.invite("ring", &offer(CARRIER, 30000, "sendrecv"), "");
    s.deliver(CARRIER, &inv);
    s.advance(Duration::from_secs(5));
    let ok = s.response(CARRIER, 200);
    let cancel = ua.cancel();
    s.deliver(CARRIER, &cancel);
    assert_eq!(s.response(CARRIER, 481).cseq_method(), Some("CANCEL"));
    ua.answered(&ok);
    let ack = ua.ack();
    s.deliver(CARRIER, &ack);
    assert_eq!(s.active(), 1, "the answered call goes on");
}

#[tokio::test]
async fn a_hold_reinvite_is_answered_with_the_mirror_direction() {
    let mut s = sim();
    let (mut ua, _) = answered_call(&mut s, "hold", "echo", "");
    let hold = ua.in_dialog("INVITE", "", &offer(CARRIER, 30000, "sendonly"));
    s.deliver(CARRIER, &hold);
    let ok = s.response(CARRIER, 200);
    assert_eq!(direction(ok.body()), Some("recvonly"), "{}", ok.text);
    let ack = ua.ack();
    s.deliver(CARRIER, &ack);
    let resume = ua.in_dialog("INVITE", "", &offer(CARRIER, 30000, "sendrecv"));
    s.deliver(CARRIER, &resume);
    let ok = s.response(CARRIER, 200);
    assert_eq!(direction(ok.body()), Some("sendrecv"));
    let ack = ua.ack();
    s.deliver(CARRIER, &ack);
    s.advance(Duration::from_secs(40));
    assert!(s.take(CARRIER).is_empty(), "both 2xx were ACKed");
    assert_eq!(s.active(), 1);
}

#[tokio::test]
async fn a_session_timer_ends_a_call_nobody_refreshes_and_refreshes_keep_one() {
    let mut s = sim();
    let timer = "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n";
    let (mut ua, ok) = answered_call(&mut s, "timer", "echo", timer);
    assert_eq!(ok.header("Session-Expires"), Some("90;refresher=uac"));
    // The caller refreshes by UPDATE every 45 s for five minutes.
    for _ in 0..6 {
        s.advance(Duration::from_secs(45));
        let update = ua.in_dialog("UPDATE", timer, "");
        s.deliver(CARRIER, &update);
        let ok = s.response(CARRIER, 200);
        assert_eq!(ok.header("Session-Expires"), Some("90;refresher=uac"));
    }
    assert_eq!(s.active(), 1, "refreshed calls go on");
    // Then it stops: the gateway ends the call 60 s after the last
    // refresh (RFC 4028 10: the interval less a third, at most 32 s).
    let last = s.now;
    s.advance(Duration::from_secs(59));
    assert!(s.take(CARRIER).is_empty());
    s.advance(Duration::from_secs(2));
    let bye = s.request(CARRIER, "BYE");
    assert_eq!(bye.header("Call-ID"), Some(ua.call_id.as_str()));
    assert!(s.now - last >= Duration::from_secs(60));
    // Ended by the gateway for want of a refresh: a failure, not an answer.
    assert_eq!(
        (s.active(), s.ended("failed"), s.ended("answered")),
        (0, 1, 0)
    );
}

/// A bridged call up to the far end's 2xx: returns both UAs and the
/// gateway's INVITE to the far end.
fn bridged_call(s: &mut Sim, call: &str) -> (Ua, Ua, super::sim::Sent) {
    let mut caller = Ua::new(CARRIER, call);
    let inv = caller.invite(BRIDGED, &offer(CARRIER, 30000, "sendrecv"), "");
    s.deliver(CARRIER, &inv);
    let out = s.request(FAR, "INVITE");
    let mut far = Ua::new(FAR, &format!("{call}-far"));
    far.accept(&out);
    let ringing = far.reply(&out, 180, "Ringing", "");
    s.deliver(FAR, &ringing);
    s.response(CARRIER, 180);
    (caller, far, out)
}

/// The far end answers the bridged call `out` with plain RTP, and the
/// gateway ACKs its 2xx and hangs that leg up at once.
fn far_answers_and_is_hung_up(s: &mut Sim, far: &mut Ua, out: &super::sim::Sent) {
    let ok = far.reply(out, 200, "OK", &offer(FAR, 32000, "sendrecv"));
    s.deliver(FAR, &ok);
    let sent = s.take(FAR);
    let methods: Vec<_> = sent.iter().filter_map(|m| m.method()).collect();
    assert_eq!(
        methods,
        vec!["ACK", "BYE"],
        "the 2xx is ACKed, then hung up"
    );
}

/// The far end answers the bridged call `out` (with `extra` headers): the
/// gateway ACKs it and answers the caller, who ACKs.
fn far_answers(s: &mut Sim, caller: &mut Ua, far: &mut Ua, out: &super::sim::Sent, extra: &str) {
    let ok = far.reply_with(out, 200, "OK", extra, &offer(FAR, 32000, "sendrecv"));
    s.deliver(FAR, &ok);
    let ack = s.request(FAR, "ACK");
    assert_eq!(ack.header("Call-ID"), out.header("Call-ID"));
    let ok = s.response(CARRIER, 200);
    caller.answered(&ok);
    let ack = caller.ack();
    s.deliver(CARRIER, &ack);
    assert_eq!(s.active(), 1);
}

/// The far end of a dialog the gateway started puts the call on hold,
/// then refreshes the session by UPDATE: both are answered 200 in that
/// dialog, the hold with the mirror direction, and the call goes on.
fn far_end_holds_and_refreshes(s: &mut Sim, far: &mut Ua) {
    let hold = far.in_dialog("INVITE", "", &offer(FAR, 32000, "sendonly"));
    s.deliver(FAR, &hold);
    let ok = s.response(FAR, 200);
    assert_eq!(direction(ok.body()), Some("recvonly"), "{}", ok.text);
    let ack = far.ack();
    s.deliver(FAR, &ack);
    let update = far.in_dialog("UPDATE", "", "");
    s.deliver(FAR, &update);
    assert_eq!(s.response(FAR, 200).cseq_method(), Some("UPDATE"));
    s.advance(Duration::from_secs(40));
    assert!(s.take(FAR).is_empty(), "the re-INVITE's 2xx was ACKed");
    assert_eq!(s.active(), 1, "the call goes on");
}

/// The caller never ACKs the 200 OK the far end's answer gave it: after
/// 64*T1 the gateway hangs up both legs, not just the caller's (the far
/// end was left holding a call nobody was on).
#[tokio::test]
async fn a_bridged_caller_that_never_acks_is_hung_up_on_both_legs() {
    let mut s = sim();
    let (_caller, mut far, out) = bridged_call(&mut s, "no-ack");
    let ok = far.reply(&out, 200, "OK", &offer(FAR, 32000, "sendrecv"));
    s.deliver(FAR, &ok);
    s.request(FAR, "ACK");
    s.response(CARRIER, 200);
    // 64*T1 = 32 s.
    s.advance(Duration::from_secs(33));
    let bye = s.request(CARRIER, "BYE");
    assert!(bye.first_line().starts_with("BYE "), "{}", bye.text);
    let far_bye = s.request(FAR, "BYE");
    assert_eq!(far_bye.header("Call-ID"), out.header("Call-ID"));
    assert_eq!((s.active(), s.ended("failed")), (0, 1));
}

#[tokio::test]
async fn a_withheld_caller_stays_withheld_when_bridged_onwards() {
    let mut s = sim();
    // Plain: the caller's number goes on in From, no privacy asked.
    let mut plain = Ua::new(CARRIER, "plain");
    s.deliver(
        CARRIER,
        &plain.invite(BRIDGED, &offer(CARRIER, 30000, "sendrecv"), ""),
    );
    let out = s.request(FAR, "INVITE");
    assert!(out
        .header("From")
        .is_some_and(|f| f.contains("+442071838750")));
    assert_eq!(out.header("Privacy"), None);
    // Withheld (RFC 3323), the number asserted by the trusted carrier:
    // onwards it is withheld too, the number only in P-Asserted-Identity.
    let mut withheld = Ua::new(CARRIER, "withheld");
    s.deliver(
        CARRIER,
        &withheld.invite(
            BRIDGED,
            &offer(CARRIER, 30002, "sendrecv"),
            "Privacy: id\r\nP-Asserted-Identity: <tel:+442071838750>\r\n",
        ),
    );
    let out = s.request(FAR, "INVITE");
    let from = out.header("From").expect("From");
    assert!(
        from.starts_with("\"Anonymous\" <sip:anonymous@anonymous.invalid>"),
        "{from}"
    );
    assert_eq!(out.header("Privacy"), Some("id"));
    assert!(out
        .header("P-Asserted-Identity")
        .is_some_and(|a| a.starts_with("<sip:+442071838750@")));
    // Withheld with nothing asserted: nothing to assert onwards.
    let mut bare = Ua::new(CARRIER, "bare");
    bare.from_user = "anonymous".into();
    s.deliver(
        CARRIER,
        &bare.invite(BRIDGED, &offer(CARRIER, 30004, "sendrecv"), ""),
    );
    let out = s.request(FAR, "INVITE");
    assert_eq!(out.header("Privacy"), Some("id"));
    assert_eq!(out.header("P-Asserted-Identity"), None);
    assert!(!out.text.contains("2071838750"), "{}", out.text);
}

#[tokio::test]
async fn a_withheld_number_never_leaves_for_an_untrusted_trunk() {
    // RFC 3325 section 5: the asserted identity stays in the trust domain.
    let mut s = Sim::new(&CONFIG.replace("name = \"far\"\n", "name = \"far\"\ntrusted = false\n"));
    let mut withheld = Ua::new(CARRIER, "untrusted");
    s.deliver(
        CARRIER,
        &withheld.invite(
            BRIDGED,
            &offer(CARRIER, 30000, "sendrecv"),
            "Privacy: id\r\nP-Asserted-Identity: <tel:+442071838750>\r\n",
        ),
    );
    let out = s.request(FAR, "INVITE");
    assert_eq!(out.header("Privacy"), Some("id"));
    assert_eq!(out.header("P-Asserted-Identity"), None);
    assert!(!out.text.contains("2071838750"), "{}", out.text);
}

#[tokio::test]
async fn a_bridge_takes_hold_and_refresh_from_the_far_end_and_its_bye() {
    let mut s = sim();
    let (mut caller, mut far, out) = bridged_call(&mut s, "bridge");
    far_answers(&mut s, &mut caller, &mut far, &out, "");

    far_end_holds_and_refreshes(&mut s, &mut far);

    // The far end hangs up: 200 to it, BYE to the caller.
    let bye = far.in_dialog("BYE", "", "");
    s.deliver(FAR, &bye);
    assert_eq!(s.response(FAR, 200).cseq_method(), Some("BYE"));
    let bye = s.request(CARRIER, "BYE");
    assert_eq!(bye.header("Call-ID"), Some(caller.call_id.as_str()));
    assert_eq!((s.active(), s.ended("answered")), (0, 1));
    // One task relays both legs; both legs' ports come back.
    assert_eq!(s.media_started(), 1);
    s.media_stopped().await;
    assert_eq!(s.core.ports.in_use(), 0);
}

#[tokio::test]
async fn a_cancel_crossing_the_far_ends_200_acks_and_hangs_up_that_leg() {
    let mut s = sim();
    let (mut caller, mut far, out) = bridged_call(&mut s, "cross");
    let cancel = caller.cancel();
    s.deliver(CARRIER, &cancel);
    let codes: Vec<_> = s.take(CARRIER).iter().filter_map(|m| m.status()).collect();
    assert_eq!(codes, vec![200, 487]);
    let to_far = s.request(FAR, "CANCEL");
    assert_eq!(to_far.header("Call-ID"), out.header("Call-ID"));
    // No media started; both legs' ports are back already, though the
    // far leg waits in the index for its INVITE's end.
    assert_eq!((s.media_started(), s.core.ports.in_use()), (0, 0));
    // The far end had already answered: its 200 crosses our CANCEL.
    far_answers_and_is_hung_up(&mut s, &mut far, &out);
    assert_eq!(s.active(), 0);
    assert_eq!(s.ended("cancelled"), 1);
}

/// A far trunk that requires SRTP (SDES allowed in clear here) whose far
/// end answers with plain RTP: the gateway ACKs its 2xx and hangs it up at
/// once, and the caller gets 488, so no media runs in clear on that trunk.
#[tokio::test]
async fn a_far_end_answering_without_a_key_on_a_required_srtp_trunk_is_hung_up() {
    let config = CONFIG.replace(
        "srtp = \"off\"",
        "srtp = \"required\"\ninsecure_sdes_over_cleartext = true",
    );
    let mut s = Sim::new(&config);
    let (_caller, mut far, out) = bridged_call(&mut s, "unkeyed");
    assert!(
        out.body().contains("RTP/SAVP") && out.body().contains("a=crypto:1 "),
        "{}",
        out.body()
    );
    far_answers_and_is_hung_up(&mut s, &mut far, &out);
    s.response(CARRIER, 488);
    assert_eq!((s.active(), s.ended("failed")), (0, 1));
    assert_eq!(s.media_started(), 0, "no media ran in clear");
    assert_eq!(s.core.ports.in_use(), 0);
}

/// `peer` answers our refresh `update` (of a session of `interval` s) with
/// 200, so the next comes half the interval later; that one it answers
/// 481, having lost the call (the BYE is the caller's to check).
fn answer_refreshes_then_lose_the_call(
    s: &mut Sim,
    peer: &mut Ua,
    update: &super::sim::Sent,
    interval: u64,
) {
    let se = format!("Session-Expires: {interval};refresher=uac\r\n");
    let ok = peer.reply_with(update, 200, "OK", &se, "");
    s.deliver(peer.addr, &ok);
    s.advance(Duration::from_secs(interval / 2 - 1));
    assert!(
        s.take(peer.addr).is_empty(),
        "renewed: nothing before half the interval"
    );
    s.advance(Duration::from_secs(2));
    let update = s.request(peer.addr, "UPDATE");
    assert_eq!(s.active(), 1);
    let gone = peer.reply(&update, 481, "Call/Transaction Does Not Exist", "");
    s.deliver(peer.addr, &gone);
}

#[tokio::test]
async fn a_carrier_that_asks_us_to_refresh_gets_updates_until_one_finds_no_session() {
    let mut s = sim();
    let asks = "Supported: timer\r\nSession-Expires: 120;refresher=uas\r\n";
    let (mut ua, ok) = answered_call(&mut s, "we-refresh", "echo", asks);
    // RFC 4028 9: the request's refresher stands.
    assert_eq!(ok.header("Session-Expires"), Some("120;refresher=uas"));
    let answered = s.now;
    s.advance(Duration::from_secs(59));
    assert!(
        s.take(CARRIER).is_empty(),
        "nothing before half the interval"
    );
    s.advance(Duration::from_secs(2));
    let update = s.request(CARRIER, "UPDATE");
    assert_eq!(update.at - answered, Duration::from_secs(60));
    assert_eq!(update.header("Session-Expires"), Some("120;refresher=uac"));
    assert_eq!(update.header("Call-ID"), Some(ua.call_id.as_str()));
    assert!(update.body().is_empty(), "a refresh, not an offer");
    // In our dialog: their tag is our To tag.
    assert_eq!(update.to_tag().as_deref(), Some("we-refresh-tag"));
    answer_refreshes_then_lose_the_call(&mut s, &mut ua, &update, 120);
    let bye = s.request(CARRIER, "BYE");
    assert_eq!(bye.header("Call-ID"), Some(ua.call_id.as_str()));
    assert_eq!((s.active(), s.ended("failed")), (0, 1));
}

#[tokio::test]
async fn an_unanswered_refresh_ends_the_call() {
    let mut s = sim();
    let asks = "Supported: timer\r\nSession-Expires: 90;refresher=uas\r\n";
    let (_ua, _) = answered_call(&mut s, "silent", "echo", asks);
    s.advance(Duration::from_secs(46));
    s.request(CARRIER, "UPDATE");
    // Resent by the transaction layer, then given up at 64*T1.
    s.advance(Duration::from_secs(33));
    let sent = s.take(CARRIER);
    assert!(sent.iter().any(|m| m.method() == Some("BYE")), "{sent:?}");
    assert_eq!(s.active(), 0);
}

#[tokio::test]
async fn a_far_end_that_stops_refreshing_is_hung_up_on_both_legs() {
    let mut s = sim();
    let (mut caller, mut far, out) = bridged_call(&mut s, "far-timer");
    // The far end's 2xx sets a timer it refreshes itself.
    let timer = "Supported: timer\r\nSession-Expires: 90;refresher=uas\r\n";
    far_answers(&mut s, &mut caller, &mut far, &out, timer);
    // One refresh at 45 s, answered with the interval it asked.
    s.advance(Duration::from_secs(45));
    let timer = "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n";
    let update = far.in_dialog("UPDATE", timer, "");
    s.deliver(FAR, &update);
    let ok = s.response(FAR, 200);
    assert_eq!(ok.header("Session-Expires"), Some("90;refresher=uac"));
    let last = s.now;
    // Then silence: 60 s after the last refresh, BYE both ways.
    s.advance(Duration::from_secs(59));
    assert!(s.take(FAR).is_empty() && s.take(CARRIER).is_empty());
    s.advance(Duration::from_secs(2));
    let bye = s.request(FAR, "BYE");
    assert_eq!(bye.header("Call-ID"), out.header("Call-ID"));
    assert_eq!(bye.at - last, Duration::from_secs(60));
    assert_eq!(
        s.request(CARRIER, "BYE").header("Call-ID"),
        Some(caller.call_id.as_str())
    );
    assert_eq!((s.active(), s.ended("failed")), (0, 1));
}

#[tokio::test]
async fn an_agents_call_refreshes_when_the_far_end_makes_us_the_refresher() {
    let mut s = agents_sim();
    let mut alice = s.agent(1, "alice", None).await;
    let out = dial_far(&mut s, &alice);
    let mut far = Ua::new(FAR, "refresh-me");
    far.accept(&out);
    // `refresher=uac` in the 2xx to our INVITE: we refresh.
    let ok = far.reply_with(
        &out,
        200,
        "OK",
        "Require: timer\r\nSession-Expires: 100;refresher=uac\r\n",
        &offer(FAR, 32000, "sendrecv"),
    );
    s.deliver(FAR, &ok);
    s.request(FAR, "ACK");
    s.advance(Duration::from_secs(51));
    let update = s.request(FAR, "UPDATE");
    assert_eq!(update.header("Session-Expires"), Some("100;refresher=uac"));
    assert_eq!(update.header("Call-ID"), out.header("Call-ID"));
    answer_refreshes_then_lose_the_call(&mut s, &mut far, &update, 100);
    s.request(FAR, "BYE");
    let heard = alice.heard();
    assert!(ended(&heard).is_some(), "{heard:?}");
    assert_eq!(s.active(), 0);
}

/// Waits (up to 3 s, real time: media tasks run on the runtime's clock)
/// for an RTP packet on `sock`.
async fn rtp_arrives(sock: &tokio::net::UdpSocket) -> bool {
    let mut buf = [0u8; 1500];
    let wait = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf));
    matches!(wait.await, Ok(Ok((n, _))) if n > 12 && buf[0] >> 6 == 2)
}

#[tokio::test]
async fn an_offerless_reinvite_takes_the_answer_in_the_ack() {
    let mut s = sim();
    let first = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let moved = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = |u: &tokio::net::UdpSocket| u.local_addr().expect("bound").port();
    let mut ua = Ua::new(CARRIER, "offerless");
    let inv = ua.invite("tone", &offer(CARRIER, port(&first), "sendrecv"), "");
    s.deliver(CARRIER, &inv);
    let ok = s.response(CARRIER, 200);
    ua.answered(&ok);
    let ack = ua.ack();
    s.deliver(CARRIER, &ack);
    assert!(
        rtp_arrives(&first).await,
        "the tone plays to the first port"
    );

    // A re-INVITE without SDP: our 2xx offers, the ACK answers with a
    // new port.
    let reinvite = ua.in_dialog("INVITE", "", "");
    s.deliver(CARRIER, &reinvite);
    let ok = s.response(CARRIER, 200);
    assert_eq!(
        direction(ok.body()),
        Some("sendrecv"),
        "our offer: {}",
        ok.text
    );
    let ack = ua.ack_with(&offer(CARRIER, port(&moved), "sendrecv"));
    s.deliver(CARRIER, &ack);
    // What was already on its way to the first port may still land.
    let mut buf = [0u8; 1500];
    while first.try_recv_from(&mut buf).is_ok() {}
    assert!(
        rtp_arrives(&moved).await,
        "the tone follows the answer in the ACK"
    );
    assert_eq!(s.active(), 1);
}

#[tokio::test]
async fn an_unusable_answer_in_the_far_ends_ack_ends_the_call() {
    let mut s = sim();
    let (mut caller, mut far, out) = bridged_call(&mut s, "bad-ack");
    far_answers(&mut s, &mut caller, &mut far, &out, "");
    let reinvite = far.in_dialog("INVITE", "", "");
    s.deliver(FAR, &reinvite);
    let ok = s.response(FAR, 200);
    assert!(!ok.body().is_empty(), "our 2xx carries the offer");
    // An "answer" with none of the codecs offered.
    let g729 = "v=0\r\no=- 1 2 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
m=audio 32000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
    let ack = far.ack_with(g729);
    s.deliver(FAR, &ack);
    assert_eq!(
        s.request(FAR, "BYE").header("Call-ID"),
        out.header("Call-ID")
    );
    assert_eq!(
        s.request(CARRIER, "BYE").header("Call-ID"),
        Some(caller.call_id.as_str())
    );
    assert_eq!((s.active(), s.ended("failed")), (0, 1));
}

#[tokio::test]
async fn requests_routed_to_us_by_a_proxy_are_taken() {
    let mut s = sim();
    // An edge proxy that record-routes puts its own Route first; a loose
    // router leaves ours naming the gateway (RFC 3261 16.4).
    let routed = "Route: <sip:127.0.0.1:5060;lr>\r\nRecord-Route: <sip:127.0.0.1:5070;lr>\r\n";
    let (mut ua, ok) = answered_call(&mut s, "routed", "echo", routed);
    assert_eq!(
        ok.header("Record-Route"),
        Some("<sip:127.0.0.1:5070;lr>"),
        "the 2xx copies the Record-Route"
    );
    let bye = ua.in_dialog("BYE", "Route: <sip:127.0.0.1:5060;lr>\r\n", "");
    s.deliver(CARRIER, &bye);
    assert_eq!(s.response(CARRIER, 200).cseq_method(), Some("BYE"));
    assert_eq!(s.active(), 0);
}

#[tokio::test]
async fn calling_hours_follow_the_injected_wall_clock() {
    let mut s = agents_sim();
    let mut dave = s.agent(1, "dave", Some("daytime")).await;
    let number = "+442079460001".to_string();
    // 08:58 on a Monday: before the profile's hours.
    s.agent_says(
        &dave,
        ClientMsg::Dial {
            number: number.clone(),
            withhold: false,
        },
    );
    let refused = dave.heard().into_iter().find_map(|m| match m {
        ServerMsg::Error { code, .. } => Some(code),
        _ => None,
    });
    assert_eq!(refused.as_deref(), Some("outside_hours"));
    assert!(s.take(FAR).is_empty());
    // Three minutes later it is 09:01.
    s.advance(Duration::from_secs(180));
    s.agent_says(
        &dave,
        ClientMsg::Dial {
            number,
            withhold: false,
        },
    );
    s.request(FAR, "INVITE");
}

#[tokio::test]
async fn a_session_timer_runs_from_the_answer_not_the_invite() {
    let mut s = sim();
    // Rings 70 s, longer than half the 90 s interval the caller asks us
    // to refresh: nothing is due at the answer, and an ACK held back
    // does not leave a refresh due in the past (the core would spin:
    // Sim::advance panics on a deadline that does not move on).
    let asks = "Supported: timer\r\nSession-Expires: 90;refresher=uas\r\n";
    let mut ua = Ua::new(CARRIER, "long-ring");
    let inv = ua.invite("longring", &offer(CARRIER, 30000, "sendrecv"), asks);
    s.deliver(CARRIER, &inv);
    s.advance(Duration::from_secs(71));
    let ok = s.response(CARRIER, 200);
    s.advance(Duration::from_secs(20));
    assert!(
        s.take(CARRIER).iter().all(|m| m.method() != Some("UPDATE")),
        "no refresh before the ACK"
    );
    ua.answered(&ok);
    let ack = ua.ack();
    s.deliver(CARRIER, &ack);
    s.advance(Duration::from_secs(26));
    let update = s.request(CARRIER, "UPDATE");
    assert_eq!(
        update.at - ok.at,
        Duration::from_secs(45),
        "half the interval after the 2xx"
    );
}

/// A scanner is banned on monotonic time; what admins are shown (and what
/// is kept across a restart) is that ban's end on the core's wall clock,
/// not the machine's.
#[tokio::test]
async fn a_bans_end_is_told_on_the_cores_wall_clock() {
    // An untrusted trunk's peer (strangers are dropped before the IDS).
    let mut s = Sim::new(&format!(
        "{CONFIG}[[trunk]]\nname = \"office\"\npeers = [\"127.0.0.9/32\"]\n\
         trusted = false\nkeepalive_s = 0\n"
    ));
    let scanner: SocketAddr = "127.0.0.9:5060".parse().expect("addr");
    let mut ua = Ua::new(scanner, "scan");
    let inv = ua.invite(
        "100",
        &offer(scanner, 30000, "sendrecv"),
        "User-Agent: friendly-scanner\r\n",
    );
    s.deliver(scanner, &inv);
    assert!(s.take(scanner).is_empty(), "a scanner gets no answer");
    let bans = s.core.guard.bans(s.now);
    assert_eq!(bans.len(), 1, "{bans:?}");
    let ban = &bans[0];
    assert_eq!((ban.source, ban.reason.as_str()), (scanner.ip(), "scanner"));
    let start_ms = super::sim::START_UNIX_S * 1000;
    assert_eq!(ban.until_unix_ms, start_ms + ban.remaining_s * 1000);
    // Half-way through, the same ban ends at the same wall time.
    assert!(ban.remaining_s >= 2, "{ban:?}");
    s.advance(Duration::from_secs(ban.remaining_s / 2));
    let later = s.core.guard.bans(s.now);
    assert_eq!(later.len(), 1, "still banned");
    assert_eq!(later[0].until_unix_ms, ban.until_unix_ms);
}
