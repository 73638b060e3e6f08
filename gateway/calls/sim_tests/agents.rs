//! The agents' side of the simulated calls: a queue offering calls to
//! agents in turn, and agents' own dials out the far trunk.

use super::*;

/// The agents' side: a queue of agents without a profile, ringing each
/// for 10 s, and agents' dials out the far trunk.
const AGENTS: &str = r#"
[[queue]]
name = "sales"
ring_s = 10
[[profile]]
name = "daytime"
hours = "09:00-17:00"
timezone = "UTC"
[[route]]
number = "+442070000001"
target = "queue:sales"
"#;

pub(super) fn agents_sim() -> Sim {
    Sim::new(&format!("{CONFIG}{AGENTS}"))
}

/// The call number of the one offer among `heard`.
pub(super) fn offered(heard: &[ServerMsg]) -> Option<u64> {
    heard.iter().find_map(|m| match m {
        ServerMsg::Offer { call, .. } => Some(*call),
        _ => None,
    })
}

pub(super) fn ended(heard: &[ServerMsg]) -> Option<&str> {
    heard.iter().find_map(|m| match m {
        ServerMsg::Ended { reason, .. } => Some(reason.as_str()),
        _ => None,
    })
}

#[tokio::test]
async fn history_without_a_record_store_is_refused_plainly() {
    let mut s = agents_sim();
    let mut alice = s.agent(1, "alice", None).await;
    s.agent_says(&alice, ClientMsg::History { limit: Some(5) });
    let codes: Vec<String> = alice
        .heard()
        .into_iter()
        .filter_map(|m| match m {
            ServerMsg::Error {
                code, call: None, ..
            } => Some(code),
            _ => None,
        })
        .collect();
    assert_eq!(codes, ["unavailable"]);
}

#[tokio::test]
async fn a_queue_call_moves_on_after_a_rejection_and_a_ring_timeout() {
    let mut s = agents_sim();
    // Logged in a second apart: alice has been idle longest.
    let mut alice = s.agent(1, "alice", None).await;
    s.advance(Duration::from_secs(1));
    let mut bob = s.agent(2, "bob", None).await;
    s.advance(Duration::from_secs(1));
    let mut carol = s.agent(3, "carol", None).await;
    assert_eq!(s.metrics.agents_available.get(), 3);

    let mut ua = Ua::new(CARRIER, "queue");
    let inv = ua.invite("+442070000001", &offer(CARRIER, 30000, "sendrecv"), "");
    s.deliver(CARRIER, &inv);
    let ringing = s.response(CARRIER, 180);
    let heard = alice.heard();
    let call = offered(&heard).expect("alice, idle longest, is offered the call");
    // The caller's number reaches agents masked.
    let caller = heard.iter().find_map(|m| match m {
        ServerMsg::Offer { caller, .. } => Some(caller.clone()),
        _ => None,
    });
    assert!(
        caller.as_deref().is_some_and(|c| !c.contains("2071838750")),
        "{caller:?}"
    );
    assert!(bob.heard().is_empty() && carol.heard().is_empty());

    // Alice rejects: bob is next.
    s.agent_says(&alice, ClientMsg::Reject { call });
    assert_eq!(ended(&alice.heard()), Some("rejected"));
    assert_eq!(offered(&bob.heard()), Some(call));
    // Bob lets it ring out: after ring_s, carol.
    s.advance(Duration::from_secs(9));
    assert!(carol.heard().is_empty(), "still bob's to answer");
    s.advance(Duration::from_secs(2));
    assert_eq!(ended(&bob.heard()), Some("no_answer"));
    assert_eq!(offered(&carol.heard()), Some(call));
    assert!(s.take(CARRIER).iter().all(|m| m.status() != Some(200)));

    s.agent_says(&carol, ClientMsg::Answer { call });
    assert!(carol
        .heard()
        .iter()
        .any(|m| matches!(m, ServerMsg::Answered { call: c } if *c == call)));
    let ok = s.response(CARRIER, 200);
    assert_eq!(ok.to_tag(), ringing.to_tag());
    assert_eq!(direction(ok.body()), Some("sendrecv"));
    ua.answered(&ok);
    let ack = ua.ack();
    s.deliver(CARRIER, &ack);
    assert_eq!(s.metrics.agents_available.get(), 2, "carol is busy");

    let bye = ua.in_dialog("BYE", "", "");
    s.deliver(CARRIER, &bye);
    s.response(CARRIER, 200);
    assert_eq!(ended(&carol.heard()), Some("remote_hangup"));
    assert_eq!((s.active(), s.ended("answered")), (0, 1));
    assert_eq!(s.metrics.agents_available.get(), 3);
    let after = alice.heard();
    assert!(
        after.is_empty(),
        "alice heard nothing after her own end of the offer: {after:?}"
    );
}

#[tokio::test]
async fn with_every_agent_tried_the_carrier_hears_480() {
    let mut s = agents_sim();
    let mut alice = s.agent(1, "alice", None).await;
    let mut ua = Ua::new(CARRIER, "nobody");
    let inv = ua.invite("+442070000001", &offer(CARRIER, 30000, "sendrecv"), "");
    s.deliver(CARRIER, &inv);
    let call = offered(&alice.heard()).expect("offered");
    s.agent_says(&alice, ClientMsg::Reject { call });
    assert_eq!(s.response(CARRIER, 480).cseq_method(), Some("INVITE"));
    assert_eq!((s.active(), s.ended("rejected")), (0, 1));
    // Nobody logged in at all: 480 at once.
    s.agent_gone(&alice);
    let mut ua = Ua::new(CARRIER, "empty");
    let inv = ua.invite("+442070000001", &offer(CARRIER, 30000, "sendrecv"), "");
    s.deliver(CARRIER, &inv);
    s.response(CARRIER, 480);
}

#[tokio::test]
async fn a_cancel_while_offered_ends_the_offer_and_an_agent_gone_mid_call_hangs_up() {
    let mut s = agents_sim();
    let mut alice = s.agent(1, "alice", None).await;
    let mut ua = Ua::new(CARRIER, "cancelled");
    let inv = ua.invite("+442070000001", &offer(CARRIER, 30000, "sendrecv"), "");
    s.deliver(CARRIER, &inv);
    let call = offered(&alice.heard()).expect("offered");
    let cancel = ua.cancel();
    s.deliver(CARRIER, &cancel);
    s.response(CARRIER, 487);
    assert_eq!(ended(&alice.heard()), Some("cancelled"));
    // A late answer to the cancelled call is not a call.
    s.agent_says(&alice, ClientMsg::Answer { call });
    assert!(s.take(CARRIER).is_empty());
    assert_eq!(s.active(), 0);

    let mut ua = Ua::new(CARRIER, "gone");
    let inv = ua.invite("+442070000001", &offer(CARRIER, 30000, "sendrecv"), "");
    s.deliver(CARRIER, &inv);
    let call = offered(&alice.heard()).expect("offered again");
    s.agent_says(&alice, ClientMsg::Answer { call });
    let ok = s.response(CARRIER, 200);
    ua.answered(&ok);
    let ack = ua.ack();
    s.deliver(CARRIER, &ack);
    s.agent_gone(&alice);
    let bye = s.request(CARRIER, "BYE");
    assert_eq!(bye.header("Call-ID"), Some(ua.call_id.as_str()));
    assert_eq!(s.active(), 0);
}

/// The agent dials a number out the far trunk: the gateway's INVITE.
pub(super) fn dial_far(s: &mut Sim, agent: &crate::calls::sim::Agent) -> crate::calls::sim::Sent {
    let number = "+442079460001".to_string();
    s.agent_says(
        agent,
        ClientMsg::Dial {
            number,
            withhold: false,
        },
    );
    s.request(FAR, "INVITE")
}

#[tokio::test]
async fn an_agents_call_takes_hold_and_refresh_from_the_far_end_and_its_bye() {
    let mut s = agents_sim();
    let mut alice = s.agent(1, "alice", None).await;
    let out = dial_far(&mut s, &alice);
    assert!(out.first_line().starts_with("INVITE sip:+442079460001@"));
    let call = alice
        .heard()
        .iter()
        .find_map(|m| match m {
            ServerMsg::Dialing { call, .. } => Some(*call),
            _ => None,
        })
        .expect("the agent hears its call's number");
    let mut far = Ua::new(FAR, "dialled");
    far.accept(&out);
    let ringing = far.reply(&out, 180, "Ringing", "");
    s.deliver(FAR, &ringing);
    assert!(alice.heard().contains(&ServerMsg::Ringing { call }));
    let ok = far.reply(&out, 200, "OK", &offer(FAR, 32000, "sendrecv"));
    s.deliver(FAR, &ok);
    s.request(FAR, "ACK");
    assert!(alice.heard().contains(&ServerMsg::Answered { call }));
    assert_eq!(s.active(), 1);

    far_end_holds_and_refreshes(&mut s, &mut far);

    let bye = far.in_dialog("BYE", "", "");
    s.deliver(FAR, &bye);
    assert_eq!(s.response(FAR, 200).cseq_method(), Some("BYE"));
    assert_eq!(ended(&alice.heard()), Some("remote_hangup"));
    assert_eq!((s.active(), s.ended("answered")), (0, 1));
    assert_eq!(s.media_started(), 1);
    s.media_stopped().await;
    assert_eq!(s.core.ports.in_use(), 0);
}
