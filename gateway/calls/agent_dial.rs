//! Calls agents place. The dial is checked against the agent's profile
//! (allowed and denied prefixes, calling hours in its time zone) before
//! anything is sent. Checks fail closed: an agent whose profile is not in
//! the configuration cannot dial, and `[dialing] default = "deny"` also
//! refuses agents without a profile and numbers the dial plan does not
//! cover; the dial plan then picks a live trunk, and the
//! gateway places the call as a dialog of its own ([`Bridge`]), offering
//! the trunk's first G.711 codec. 180 and 183 reach the agent as
//! `ringing` and `early_media` (with the early audio), 200 as `answered`;
//! a failure ends the call with its reason.

use std::time::Instant;

use crate::sip::dialog::Resend2xx;

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::agent_media::{self, AgentMedia};
use super::agents::media_for;
use super::core::{Core, Output, Placed, Reply};
use super::end::EndReason;
use super::media::Control;
use super::number::normalize;
use super::outbound::{to_tokio, Bridge, Dial};
use super::relay::Relay;
use super::tasks::MediaTask;
use crate::agent::protocol::ServerMsg;
use crate::cdr::record::{Direction, Party};
use crate::config::DialRefused;
use crate::media::srtp::MasterKey;
use crate::sip::message::{Framing, Message};
use crate::sip::sdp::Codec;
use crate::sip::transaction::{Key, Transmit};

/// A call an agent placed.
pub(super) struct AgentOut {
    pub(super) n: u64,
    pub(super) session: u64,
    pub(super) leg: Box<Bridge>,
    pub(super) sockets: Option<super::ports::Bound>,
    pub(super) key: Option<MasterKey>,
    /// The media task's control, once media flows.
    pub(super) media: Option<mpsc::Sender<Control>>,
    /// Its call record (when records are kept).
    pub(super) record: Option<super::records::CallRecord>,
    /// The trunk whose call slot it holds.
    pub(super) trunk: Option<String>,
    /// When it must end (`media.max_call_s` after the far end's answer).
    pub(super) deadline: Option<Instant>,
}

impl crate::deadlines::Timed for AgentOut {
    /// `media.max_call_s`, our 2xx's next resend to the far end and the
    /// session timer (`Core::agent_out_due` handles each).
    fn next_deadline(&self) -> Option<Instant> {
        [
            self.deadline,
            self.leg.ok.as_ref().map(Resend2xx::deadline),
            self.leg.timer.map(|t| t.next_due()),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

impl Core {
    fn dial_error(&self, session: u64, code: &str, message: &str) {
        if let Some(a) = self.agents.sessions.get(&session) {
            a.link.send(ServerMsg::Error {
                code: code.into(),
                message: message.into(),
                call: None,
            });
        }
    }

    fn count_out(&self, outcome: &str) {
        self.metrics
            .agent_calls
            .with_label_values(&["outbound", outcome])
            .inc();
    }

    pub(super) fn agent_dial(&mut self, session: u64, number: &str, withhold: bool, now: Instant) {
        let Some(a) = self.agents.sessions.get(&session) else {
            return;
        };
        if a.call.is_some() {
            self.dial_error(session, "busy", "finish the current call first");
            return;
        }
        let profile = a.profile.clone();
        // National numbers take the country code of the first trunk that
        // places calls.
        let first = self.config.trunks.iter().position(|t| t.address.is_some());
        let cc = first.and_then(|t| self.config.trunks[t].country_code.as_deref());
        let e164 = normalize(number, cc);
        let digits = e164.strip_prefix('+').unwrap_or("");
        if !(4..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            self.dial_error(session, "bad_number", "not a dialable number");
            return;
        }
        // Fail closed: a profile the configuration does not hold (a typo
        // at enrolment, or removed since) refuses every dial, and so does
        // no profile at all under `[dialing] default = "deny"`.
        let checked = match profile.as_deref() {
            Some(name) => match self.config.profile(name) {
                Some(p) => Some(p),
                None => {
                    warn!(
                        session,
                        "dial refused: the agent's profile is not in the configuration"
                    );
                    self.count_out("refused");
                    self.dial_error(
                        session,
                        "not_allowed",
                        "your profile is not configured; ask an administrator",
                    );
                    return;
                }
            },
            None if self.config.dial_default_deny => {
                info!(
                    session,
                    "dial refused: no profile, and dialling is default-deny"
                );
                self.count_out("refused");
                self.dial_error(session, "not_allowed", "you have no dialling profile");
                return;
            }
            None => None,
        };
        if let Some(p) = checked {
            let wall = jiff::Timestamp::try_from(self.records.wall.at(now))
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            if let Err(why) = p.check(&e164, wall) {
                let (code, message) = match why {
                    DialRefused::NotAllowed => {
                        ("not_allowed", "your profile does not allow that number")
                    }
                    DialRefused::Denied => (
                        "not_allowed",
                        "that number range is barred for your profile",
                    ),
                    DialRefused::OutsideHours => {
                        ("outside_hours", "outside your profile's calling hours")
                    }
                };
                info!(session, "dial refused by profile");
                self.count_out("refused");
                self.dial_error(session, code, message);
                return;
            }
        }
        let trunk = match self.config.dial_trunk(&e164) {
            Some(t) => Some(t).filter(|&t| self.trunk_is_up(t)),
            None if self.config.dial_default_deny => {
                info!(
                    session,
                    "dial refused: no dial-plan prefix covers the number"
                );
                self.count_out("refused");
                self.dial_error(
                    session,
                    "not_allowed",
                    "that number is not in the dial plan",
                );
                return;
            }
            None => (0..self.config.trunks.len())
                .find(|&t| self.config.trunks[t].address.is_some() && self.trunk_is_up(t)),
        };
        let Some(trunk) = trunk else {
            self.count_out("failed");
            self.dial_error(session, "no_route", "no trunk is available for that number");
            return;
        };
        if self.trunk_full(trunk) {
            self.count_out("failed");
            self.dial_error(session, "unavailable", "the trunk has no free call slot");
            return;
        }
        let t = &self.config.trunks[trunk];
        let Some(codec) = t
            .codecs
            .iter()
            .copied()
            .find(|c| matches!(c, Codec::Pcmu | Codec::Pcma))
        else {
            self.dial_error(session, "no_route", "the trunk takes no G.711 codec");
            return;
        };
        let caller = checked
            .and_then(|p| p.caller_id.clone())
            .unwrap_or_else(|| "anonymous".into());
        let pt = codec.static_pt().unwrap_or(0);
        let Ok(key) = MasterKey::random(self.config.agents.suite) else {
            return;
        };
        let dialled = Dial {
            trunk,
            number: &e164,
            caller: &caller,
            withhold,
            codec: (codec, pt),
            dtmf_pt: Some(101),
            ptime: 20,
            max_forwards: 70,
        };
        let Some((leg, bound)) = self.invite_out(&dialled, now) else {
            self.count_out("failed");
            self.dial_error(session, "unavailable", "no capacity to place the call");
            return;
        };
        self.agent_calls_started += 1;
        self.calls_started += 1;
        let call = self.agent_calls_started + (1 << 32);
        let media = media_for(call, &key, codec, pt, 20, Some(101));
        let record = self
            .records
            .begin(
                &leg.dialog.call_id,
                Direction::Outbound,
                &caller,
                &e164,
                now,
            )
            .map(|mut c| {
                if withhold {
                    // The call centre's number, which the called party
                    // was not shown: marked so auditors can tell.
                    c.record.caller = crate::number::PhoneNumber::withheld(Some(caller.clone()));
                }
                c.record.trunk = self.config.trunks.get(trunk).map(|t| t.name.clone());
                c.record.codec = Some(codec.name().to_string());
                c.record.srtp = vec![
                    ("trunk".into(), "none".into()),
                    (
                        "agent".into(),
                        self.config.agents.suite.sdes_name().to_string(),
                    ),
                ];
                c
            });
        let Some(a) = self.agents.sessions.get_mut(&session) else {
            return;
        };
        let record = record.map(|mut c| {
            c.record.agent = Some(a.name.clone());
            c
        });
        a.call = Some(call);
        a.link.send(ServerMsg::Dialing { call, media });
        info!(call = self.calls_started, agent = %a.name, "agent dialling out");
        self.metrics.calls_active.inc();
        let slot = self.take_trunk_slot(trunk);
        self.agent_out_ids.insert(leg.dialog.call_id.clone(), call);
        self.placed.insert(leg.key.clone(), Placed::AgentOut(call));
        self.agent_out.insert(
            call,
            AgentOut {
                n: self.calls_started,
                session,
                leg,
                sockets: Some(bound),
                key: Some(key),
                media: None,
                record,
                trunk: slot,
                deadline: None,
            },
        );
    }

    pub(super) fn agent_out_media(&self, call: u64) -> Option<mpsc::Sender<Control>> {
        self.agent_out.get(&call).and_then(|o| o.media.clone())
    }

    fn out_by_key(&self, key: &Key) -> Option<u64> {
        match self.placed.get(key)? {
            Placed::AgentOut(call) => Some(*call),
            Placed::Bridge(_) | Placed::Ended(_) => None,
        }
    }

    fn send_agent(&self, call: u64, msg: ServerMsg) {
        if let Some(o) = self.agent_out.get(&call) {
            if let Some(a) = self.agents.sessions.get(&o.session) {
                a.link.send(msg);
            }
        }
    }

    /// Starts the media of an agent's call from the far end's SDP.
    fn start_out_media(&mut self, call: u64, m: &Message<'_>) -> bool {
        let timeout = self.media_timeout(agent_media::MediaEnded::Agent(call));
        let record = self
            .agent_out
            .get(&call)
            .and_then(|o| o.record.as_ref())
            .map(|r| r.id);
        let report = self.records.reporter(record);
        let Some(o) = self.agent_out.get_mut(&call) else {
            return false;
        };
        if o.media.is_some() {
            return true;
        }
        let Some(link) = self.agents.sessions.get(&o.session).map(|a| a.link.clone()) else {
            return false;
        };
        let Some((leg, remote_rtcp, send)) = o.leg.answer_leg(
            m,
            &self.config,
            (self.tokens.u32(), self.tokens.u32() as u16),
        ) else {
            return false;
        };
        let (Some(bound), Some(key)) = (o.sockets.take(), o.key.take()) else {
            return false;
        };
        let Some((rtp, rtcp)) = to_tokio(bound.rtp, bound.rtcp) else {
            return false;
        };
        let Ok(mut relay) = Relay::new(
            leg,
            &key,
            call,
            self.tokens.u32(),
            self.tokens.u32() as u16,
            (self.tokens.u32(), self.tokens.u32()),
        ) else {
            return false;
        };
        // What the trunk leg really had (the record said none until the
        // answer), once its media runs.
        let text = o.leg.srtp_text();
        if let Some(c) = o.record.as_mut() {
            if let Some(t) = c.record.srtp.iter_mut().find(|(leg, _)| leg == "trunk") {
                t.1 = text;
            }
        }
        // We offered telephone-event; it is in use if the answer has it.
        relay.dtmf_pt = crate::sip::sdp::Sdp::parse(m.body).ok().and_then(|s| {
            let a = s.audio()?;
            a.formats
                .iter()
                .copied()
                .find(|&pt| a.codec(pt) == Some(Codec::TelephoneEvent))
        });
        let (ctl_tx, ctl_rx) = mpsc::channel(4);
        o.media = Some(ctl_tx);
        self.out.push_back(Output::StartMedia(MediaTask::Agent {
            media: Box::new(AgentMedia {
                rtp,
                rtcp,
                remote_rtcp,
                relay,
                link: link.clone(),
                call,
                send,
                timeout,
                lease: bound.lease,
            }),
            control: ctl_rx,
            report,
        }));
        true
    }

    /// A response to an agent's INVITE; `false` if `key` is not one.
    pub(super) fn on_agent_dial_response(
        &mut self,
        key: &Key,
        code: u16,
        bytes: &[u8],
        now: Instant,
    ) -> bool {
        let Some(call) = self.out_by_key(key) else {
            return false;
        };
        let Ok((m, _)) = Message::parse(bytes, Framing::Stream, &self.config.limits) else {
            return true;
        };
        match code {
            100 => {}
            101..=199 => {
                if let Some(r) = self
                    .agent_out
                    .get_mut(&call)
                    .and_then(|o| o.record.as_mut())
                {
                    r.record.ringing_ms.get_or_insert(self.records.wall.ms(now));
                }
                let early = !m.body.is_empty() && self.start_out_media(call, &m);
                let first = self
                    .agent_out
                    .get_mut(&call)
                    .is_some_and(|o| !std::mem::replace(&mut o.leg.ringing, true));
                if early {
                    self.send_agent(call, ServerMsg::EarlyMedia { call });
                } else if first {
                    self.send_agent(call, ServerMsg::Ringing { call });
                }
            }
            200..=299 => {
                let first = self.agent_out.get(&call).is_some_and(|o| !o.leg.answered());
                if first {
                    self.start_out_media(call, &m);
                }
                let sip_addr = self.sip_addr;
                let branch = self.tokens.branch();
                let max_call = self.config.max_call;
                if let Some(o) = self.agent_out.get_mut(&call) {
                    if o.deadline.is_none() {
                        o.deadline = max_call.map(|d| now + d);
                    }
                    let ack = o.leg.answered_by(&m, sip_addr, &branch, now);
                    let peer = o.leg.peer;
                    self.send(Transmit {
                        peer,
                        bytes: ack.into(),
                    });
                }
                // ACKed (the 2xx is final), then hung up at once: the
                // trunk requires SRTP and the answer keyed none.
                if first
                    && self
                        .agent_out
                        .get(&call)
                        .is_some_and(|o| o.leg.srtp_unmet())
                {
                    info!("far end answered an agent's call without SRTP on a trunk that requires it: ending the call");
                    if let Some(r) = self
                        .agent_out
                        .get_mut(&call)
                        .and_then(|o| o.record.as_mut())
                    {
                        r.record.sip_status = code;
                    }
                    self.hang_up_out(call, Some(EndReason::Failed), now);
                    return true;
                }
                if first {
                    info!("agent's call answered");
                    if let Some(r) = self
                        .agent_out
                        .get_mut(&call)
                        .and_then(|o| o.record.as_mut())
                    {
                        r.record.answer_ms = Some(self.records.wall.ms(now));
                        r.record.sip_status = code;
                        self.records.write_open(r);
                    }
                    self.send_agent(call, ServerMsg::Answered { call });
                }
            }
            _ => {
                info!(status = code, "agent's call refused by the far end");
                self.end_agent_out(call, EndReason::Refused(code), now);
            }
        }
        let _ = now;
        true
    }

    pub(super) fn on_agent_dial_timeout(&mut self, key: &Key, now: Instant) -> bool {
        let Some(call) = self.out_by_key(key) else {
            return false;
        };
        if self.agent_out.get(&call).is_some_and(|o| !o.leg.answered()) {
            self.end_agent_out(call, EndReason::NoAnswer, now);
        }
        true
    }

    /// A BYE from the far end of an agent's call; `false` if `call_id` is
    /// not one.
    pub(super) fn bye_to_agent_out(
        &mut self,
        key: &Key,
        m: &Message<'_>,
        call_id: &[u8],
        now: Instant,
    ) -> bool {
        let Some(&call) = self
            .agent_out_ids
            .get(call_id)
            .filter(|c| self.agent_out.get(c).is_some_and(|o| o.leg.dialog.owns(m)))
        else {
            return false;
        };
        self.respond(key, m, Reply::new(200, "OK"), now);
        self.end_agent_out(call, EndReason::HungUp(Party::Callee), now);
        true
    }

    /// The agent hung up its call (or went away): BYE or CANCEL.
    pub(super) fn agent_out_hangup(&mut self, call: u64, now: Instant) {
        self.hang_up_out(call, None, now);
    }

    /// The far end's RTP stopped: BYE, and the agent is told.
    pub(super) fn agent_out_timeout(&mut self, call: u64, now: Instant) {
        self.hang_up_out(call, Some(EndReason::MediaTimeout), now);
    }

    /// BYE (answered) or CANCEL towards the far end, then the call ends
    /// for `why`, by default the agent's own hang-up (or its cancel
    /// while the far end rings).
    pub(super) fn hang_up_out(&mut self, call: u64, why: Option<EndReason>, now: Instant) {
        let sip_addr = self.sip_addr;
        let branch = self.tokens.branch();
        let Some(o) = self.agent_out.get_mut(&call) else {
            return;
        };
        let req = o.leg.hangup_request(sip_addr, &branch);
        let peer = o.leg.peer;
        self.txn.start_client(req, peer, now);
        let why = why.unwrap_or(if o.leg.answered() {
            EndReason::HungUp(Party::Caller)
        } else {
            EndReason::Cancelled
        });
        self.end_agent_out(call, why, now);
    }

    /// What is due on an agent's call ([`AgentOut::next_deadline`]):
    /// `media.max_call_s`, and resends of our 2xx to a far end's re-INVITE
    /// (a leg whose ACK never came ends, RFC 3261 13.3.1.4).
    pub(super) fn agent_out_due(&mut self, call: u64, now: Instant) {
        if self.session_due(super::call::LegKey::AgentOut(call), now) {
            return;
        }
        let t2 = self.timers.t2;
        let mut resend = Vec::new();
        let Some(o) = self.agent_out.get_mut(&call) else {
            return;
        };
        if o.deadline.is_some_and(|d| d <= now) {
            info!(call, "the agent's call reached media.max_call_s: BYE");
            self.hang_up_out(call, Some(EndReason::MaxDuration), now);
            return;
        }
        let lost = Resend2xx::step(&mut o.leg.ok, now, t2, &mut resend);
        for t in resend {
            self.send(t);
            self.ok_retransmissions += 1;
        }
        if lost {
            tracing::warn!("no ACK from the far end for a 200 OK within 64*T1: hanging up");
            self.hang_up_out(call, Some(EndReason::Failed), now);
        }
    }

    /// Every agent call hangs up (the gateway is stopping).
    pub(super) fn hang_up_agent_out(&mut self, now: Instant) {
        let calls: Vec<(u64, bool)> = self
            .agent_out
            .iter()
            .map(|(c, o)| (*c, o.leg.answered()))
            .collect();
        for (c, answered) in calls {
            let why = if answered {
                EndReason::Shutdown
            } else {
                EndReason::Failed
            };
            self.hang_up_out(c, Some(why), now);
        }
    }

    /// Ends an agent's dial for `why`: the agent is told, and its record,
    /// trunk slot, ports and transaction index entry go.
    fn end_agent_out(&mut self, call: u64, why: EndReason, now: Instant) {
        // The agent is the caller on its own calls.
        self.send_agent(
            call,
            ServerMsg::Ended {
                call,
                reason: why.agent_reason(Party::Caller).into(),
            },
        );
        let Some(mut o) = self.agent_out.remove(&call) else {
            return;
        };
        self.agent_out_ids.remove(&o.leg.dialog.call_id);
        if let Some(t) = o.trunk.take() {
            self.free_trunk_slot(&t);
        }
        if let Some(r) = o.record.take() {
            let status = why.status(r.record.sip_status);
            let by = why.hung_up_by(Party::Caller);
            self.records.finish(r, why.outcome(), status, by, now);
        }
        self.unplace(o.leg);
        if let Some(a) = self.agents.sessions.get_mut(&o.session) {
            if a.call == Some(call) {
                a.call = None;
                a.idle_since = now;
            }
        }
        self.metrics.calls_active.dec();
        self.metrics
            .calls_total
            .with_label_values(&[why.label()])
            .inc();
        self.count_out(why.label());
        tracing::debug!(call = o.n, ?why, "agent's call ended");
    }
}
