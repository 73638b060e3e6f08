//! Calls between trunks and agents.
//!
//! Inbound: a number routed to a queue (or one agent) is offered to the
//! available agent idle longest; the trunk hears 180 meanwhile. The agent's
//! answer sends the 200 OK and starts the media task; a rejection, a ring
//! timeout or the agent vanishing offers it to the next agent, and with
//! none left the trunk gets 480. Either side's hang-up ends the other.
//!
//! Outbound: see [`super::agent_dial`].
//!
//! Numbers reach agents masked (last four digits) unless their profile
//! shows them; logs name calls by counter only.

use crate::number::PhoneNumber;
use std::collections::HashMap;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{debug, info};

use super::agent_media::AgentMedia;
use super::core::{CallRef, Core, Output, State};
use super::end::EndReason;
use super::media::Control;
use super::relay::Relay;
use super::tasks::MediaTask;
use crate::agent::protocol::{ClientMsg, Media, Secret, ServerMsg};
use crate::agent::server::{AgentEvent, Link};
use crate::cdr::record::Party;
use crate::config::{Config, Target};
use crate::media::leg::Leg;
use crate::media::srtp::MasterKey;
use crate::sip::sdp::Codec;

/// One logged-in agent.
pub(super) struct AgentSession {
    pub(super) name: String,
    pub(super) profile: Option<String>,
    pub(super) link: Link,
    pub(super) available: bool,
    /// Since when the agent has been idle (for longest-idle routing).
    pub(super) idle_since: Instant,
    /// The call the agent is on or being offered (its agent call number).
    pub(super) call: Option<u64>,
    /// When it last asked for its history.
    pub(super) history_at: Option<Instant>,
    /// When it was enrolled (Unix ms): where its history starts.
    pub(super) enrolled_ms: u64,
}

/// Sessions by id.
pub(super) struct Agents {
    pub(super) sessions: HashMap<u64, AgentSession>,
    /// Gateway-wide permits for history reads.
    history: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Default for Agents {
    fn default() -> Self {
        Self {
            sessions: HashMap::new(),
            history: super::history::permits(),
        }
    }
}

/// The trunk side's media, held until an agent answers.
pub(super) struct PendingMedia {
    pub(super) rtp: tokio::net::UdpSocket,
    pub(super) rtcp: Option<tokio::net::UdpSocket>,
    pub(super) leg: Leg,
    pub(super) remote_rtcp: std::net::SocketAddr,
    pub(super) send: bool,
    pub(super) control: mpsc::Receiver<Control>,
    pub(super) lease: super::ports::Lease,
}

/// The agent side of an inbound call.
pub(super) struct AgentLeg {
    /// The number agents know the call by (also its media flow).
    pub(super) call: u64,
    pub(super) target: Target,
    /// The agent offered or on the call.
    pub(super) session: Option<u64>,
    pub(super) tried: Vec<u64>,
    pub(super) offer_until: Option<Instant>,
    pub(super) answered: bool,
    pub(super) caller: PhoneNumber,
    /// The number the caller dialled: the call centre's own.
    pub(super) callee: PhoneNumber,
    pub(super) codec: Codec,
    pub(super) pt: u8,
    pub(super) ptime: u16,
    pub(super) dtmf_pt: Option<u8>,
    pub(super) key: Option<MasterKey>,
    pub(super) pending: Option<PendingMedia>,
}

/// The agents a target may go to, in order: available, free, not yet
/// tried, the one idle longest first.
pub(super) fn pick(
    agents: &Agents,
    config: &Config,
    target: &Target,
    tried: &[u64],
) -> Option<u64> {
    agents
        .sessions
        .iter()
        .filter(|(id, a)| a.available && a.call.is_none() && !tried.contains(id))
        .filter(|(_, a)| match target {
            Target::Agent(name) => &a.name == name,
            Target::Queue(q) => config.queue(q).is_some_and(|q| {
                if q.profiles.is_empty() {
                    a.profile.is_none()
                } else {
                    a.profile.as_ref().is_some_and(|p| q.profiles.contains(p))
                }
            }),
            _ => false,
        })
        .min_by_key(|(id, a)| (a.idle_since, **id))
        .map(|(id, _)| *id)
}

/// Whether `a`'s profile shows whole numbers.
fn shows_numbers(config: &Config, a: &AgentSession) -> bool {
    a.profile
        .as_deref()
        .and_then(|p| config.profile(p))
        .is_some_and(|p| p.show_caller)
}

/// A call's media parameters for the agent, with a fresh key.
pub(super) fn media_for(
    flow: u64,
    key: &MasterKey,
    codec: Codec,
    pt: u8,
    ptime: u16,
    dtmf_pt: Option<u8>,
) -> Media {
    use base64::Engine;
    Media {
        flow,
        suite: key.suite().sdes_name().to_string(),
        key: Secret(
            base64::engine::general_purpose::STANDARD.encode(key.to_concatenated().as_slice()),
        ),
        codec: codec.name().to_string(),
        pt,
        ptime,
        dtmf_pt,
    }
}

impl Core {
    /// Updates the available-agents gauge.
    pub(super) fn count_available(&self) {
        let n = self
            .agents
            .sessions
            .values()
            .filter(|a| a.available && a.call.is_none())
            .count();
        self.metrics.agents_available.set(n as i64);
    }

    pub(super) fn on_agent_event(&mut self, e: AgentEvent, now: Instant) {
        match e {
            AgentEvent::Up {
                session,
                agent,
                profile,
                enrolled_s,
                link,
            } => {
                debug!(session, agent = %agent, "agent up");
                self.agents.sessions.insert(
                    session,
                    AgentSession {
                        name: agent,
                        profile,
                        link,
                        available: false,
                        idle_since: now,
                        call: None,
                        history_at: None,
                        enrolled_ms: enrolled_s.saturating_mul(1000),
                    },
                );
            }
            AgentEvent::Down { session } => {
                let Some(a) = self.agents.sessions.remove(&session) else {
                    return;
                };
                debug!(session, agent = %a.name, "agent down");
                if let Some(call) = a.call {
                    self.agent_gone(call, now);
                }
            }
            AgentEvent::Message { session, msg } => self.on_agent_message(session, msg, now),
        }
    }

    /// The inbound call agents know as `call`.
    fn inbound_by_agent_call(&self, call: u64) -> Option<CallRef> {
        self.by_agent_call.get(&call).copied()
    }

    fn on_agent_message(&mut self, session: u64, msg: ClientMsg, now: Instant) {
        let Some(a) = self.agents.sessions.get_mut(&session) else {
            return;
        };
        let mine = |call: u64| a.call == Some(call);
        match msg {
            ClientMsg::Available { available } => {
                if available && !a.available {
                    a.idle_since = now;
                }
                a.available = available;
            }
            ClientMsg::Dial { number, withhold } => {
                self.agent_dial(session, &number, withhold, now)
            }
            ClientMsg::Answer { call } if mine(call) => self.agent_answer(session, call, now),
            ClientMsg::Reject { call } if mine(call) => self.agent_refused(call, "rejected", now),
            ClientMsg::Hangup { call } if mine(call) => self.agent_hangup(call, now),
            ClientMsg::Hold { call, hold } if mine(call) => {
                if let Some(m) = self.call_media(call) {
                    let _ = m.try_send(Control::Hold(hold));
                }
                if let Some(a) = self.agents.sessions.get(&session) {
                    a.link.send(ServerMsg::Held { call, hold });
                }
            }
            ClientMsg::Dtmf {
                call,
                digit,
                duration_ms,
            } if mine(call) => {
                let media = self.call_media(call);
                debug!(call, media = media.is_some(), "agent DTMF");
                let ok = super::relay::dtmf_event(digit).is_some()
                    && (40..=5000).contains(&duration_ms)
                    && media
                        .is_some_and(|m| m.try_send(Control::Dtmf { digit, duration_ms }).is_ok());
                if !ok {
                    if let Some(a) = self.agents.sessions.get(&session) {
                        a.link.send(ServerMsg::Error {
                            code: "bad_dtmf".into(),
                            message: "DTMF needs a digit 0-9 * # A-D, 40 to 5000 ms, on a call with media".into(),
                            call: Some(call),
                        });
                    }
                }
            }
            ClientMsg::Answer { call }
            | ClientMsg::Reject { call }
            | ClientMsg::Hold { call, .. }
            | ClientMsg::Dtmf { call, .. }
            | ClientMsg::Hangup { call } => {
                a.link.send(ServerMsg::Error {
                    code: "no_such_call".into(),
                    message: "no such call".into(),
                    call: Some(call),
                });
            }
            ClientMsg::History { limit } => self.agent_history(session, limit, now),
            ClientMsg::Hello { .. } | ClientMsg::Ping { .. } => {}
        }
    }

    /// The agent's own recent calls, read off the core's thread.
    fn agent_history(&mut self, session: u64, limit: Option<u16>, now: Instant) {
        use super::history;
        use crate::agent::protocol::MAX_HISTORY;
        let Some(a) = self.agents.sessions.get(&session) else {
            return;
        };
        let view = history::View {
            whole: shows_numbers(&self.config, a),
            mask: self.config.mask,
        };
        let refuse = |code: &str, message: &str| {
            a.link.send(ServerMsg::Error {
                code: code.into(),
                message: message.into(),
                call: None,
            });
        };
        if a.history_at
            .is_some_and(|t| now.saturating_duration_since(t) < history::INTERVAL)
        {
            refuse("too_soon", "at most one history request a second");
            return;
        }
        let Some(store) = self.records.store() else {
            refuse("unavailable", "this gateway keeps no call records");
            return;
        };
        let Ok(permit) = self.agents.history.clone().try_acquire_owned() else {
            refuse("busy", "other histories are being read; try again");
            return;
        };
        let (name, link, since_ms) = (a.name.clone(), a.link.clone(), a.enrolled_ms);
        let now_ms = self.records.wall.ms(now);
        let limit = usize::from(limit.unwrap_or(MAX_HISTORY).clamp(1, MAX_HISTORY));
        if let Some(a) = self.agents.sessions.get_mut(&session) {
            a.history_at = Some(now);
        }
        tokio::task::spawn_blocking(move || {
            let calls = history::own_calls(&store, &name, since_ms, now_ms, limit, view);
            drop(permit);
            link.send(ServerMsg::History { calls });
        });
    }

    /// The media task's control of the call agents know as `call`.
    fn call_media(&self, call: u64) -> Option<mpsc::Sender<Control>> {
        match self.inbound_by_agent_call(call) {
            Some(id) => self.calls.get(&id).map(|c| c.media.clone()),
            None => self.agent_out_media(call),
        }
    }

    /// Offers the inbound call `call_id` to the next agent, or refuses it
    /// with 480 when there is none.
    pub(super) fn offer_call(&mut self, call_id: CallRef, now: Instant) {
        let suite = self.config.agents.suite;
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Some(leg) = c.kind.agent_mut() else {
            return;
        };
        let Some(session) = pick(&self.agents, &self.config, &leg.target, &leg.tried) else {
            info!(call = c.n, "no agent available: 480");
            self.metrics
                .agent_calls
                .with_label_values(&["inbound", "no_answer"])
                .inc();
            let (key, invite, tag) = (
                c.invite_key.clone(),
                c.invite.clone(),
                c.dialog.local_tag.clone(),
            );
            if let Ok((inv, _)) = crate::sip::message::Message::parse(
                &invite,
                crate::sip::message::Framing::Stream,
                &self.config.limits,
            ) {
                self.respond(
                    &key,
                    &inv,
                    super::core::Reply::new(480, "Temporarily Unavailable").tag(&tag),
                    now,
                );
            }
            self.end_call(call_id, EndReason::Refused(480), now);
            return;
        };
        let Ok(key) = MasterKey::random(suite) else {
            return;
        };
        let ring = match &leg.target {
            Target::Queue(q) => self.config.queue(q).map(|q| q.ring),
            _ => None,
        }
        .unwrap_or(std::time::Duration::from_secs(20));
        let media = media_for(leg.call, &key, leg.codec, leg.pt, leg.ptime, leg.dtmf_pt);
        leg.key = Some(key);
        leg.session = Some(session);
        leg.tried.push(session);
        leg.offer_until = Some(now + ring);
        let Some(a) = self.agents.sessions.get_mut(&session) else {
            return;
        };
        let show = shows_numbers(&self.config, a);
        a.call = Some(leg.call);
        info!(call = c.n, agent = %a.name, "offered to agent");
        a.link.send(ServerMsg::Offer {
            call: leg.call,
            caller: if show {
                leg.caller.shown().to_string()
            } else {
                leg.caller.masked(self.config.mask)
            },
            // The call centre's own number: which line rang.
            callee: leg.callee.reveal().to_string(),
            media,
        });
    }

    fn agent_answer(&mut self, session: u64, call: u64, now: Instant) {
        let Some(call_id) = self.inbound_by_agent_call(call) else {
            // Calls the agent placed are answered by the far end.
            return;
        };
        let report = self.records.reporter(
            self.calls
                .get(&call_id)
                .and_then(|c| c.record.as_ref())
                .map(|r| r.id),
        );
        let suite = self.config.agents.suite;
        let Some(a) = self.agents.sessions.get(&session) else {
            return;
        };
        let link = a.link.clone();
        let agent_name = a.name.clone();
        let timeout = self.media_timeout(super::agent_media::MediaEnded::Agent(call));
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Some(leg) = c.kind.agent_mut() else {
            return;
        };
        if leg.answered || leg.session != Some(session) || c.state != State::Ringing {
            return;
        }
        let (Some(p), Some(key)) = (leg.pending.take(), leg.key.take()) else {
            return;
        };
        let Ok(mut relay) = Relay::new(
            p.leg,
            &key,
            call,
            self.tokens.u32(),
            self.tokens.u32() as u16,
            (self.tokens.u32(), self.tokens.u32()),
        ) else {
            return;
        };
        relay.dtmf_pt = leg.dtmf_pt;
        self.out.push_back(Output::StartMedia(MediaTask::Agent {
            media: Box::new(AgentMedia {
                rtp: p.rtp,
                rtcp: p.rtcp,
                remote_rtcp: p.remote_rtcp,
                relay,
                link: link.clone(),
                call,
                send: p.send,
                timeout,
                lease: p.lease,
            }),
            control: p.control,
            report,
        }));
        leg.answered = true;
        if let Some(r) = c.record.as_mut() {
            r.record.agent = Some(agent_name);
            r.record
                .srtp
                .push(("agent".into(), suite.sdes_name().to_string()));
        }
        leg.offer_until = None;
        info!(call = c.n, "agent answered");
        self.answer(call_id, now);
        link.send(ServerMsg::Answered { call });
    }

    /// The offered agent declined (or did not answer in time): the next.
    pub(super) fn agent_refused(&mut self, call: u64, why: &'static str, now: Instant) {
        let Some(call_id) = self.inbound_by_agent_call(call) else {
            self.agent_out_hangup(call, now);
            return;
        };
        let Some(leg) = self
            .calls
            .get_mut(&call_id)
            .and_then(|c| c.kind.agent_mut())
        else {
            return;
        };
        if leg.answered {
            return;
        }
        if let Some(s) = leg.session.take() {
            if let Some(a) = self.agents.sessions.get_mut(&s) {
                a.call = None;
                a.idle_since = now;
                a.link.send(ServerMsg::Ended {
                    call,
                    reason: why.into(),
                });
            }
        }
        self.offer_call(call_id, now);
    }

    fn agent_hangup(&mut self, call: u64, now: Instant) {
        let Some(call_id) = self.inbound_by_agent_call(call) else {
            self.agent_out_hangup(call, now);
            return;
        };
        let answered = self
            .calls
            .get(&call_id)
            .and_then(|c| c.kind.agent())
            .is_some_and(|a| a.answered);
        if !answered {
            self.agent_refused(call, "rejected", now);
            return;
        }
        self.hang_up(call_id, EndReason::HungUp(Party::Callee), now);
    }

    /// The trunk's RTP stopped on an answered agent call: the carrier is
    /// gone, so the call ends (BYE) and the agent is told.
    pub(super) fn media_timed_out(&mut self, call: u64, now: Instant) {
        info!("no RTP from the trunk: ending the call");
        match self.inbound_by_agent_call(call) {
            Some(call_id) => {
                self.hang_up(call_id, EndReason::MediaTimeout, now);
            }
            None => self.agent_out_timeout(call, now),
        }
    }

    /// The agent on or offered `call` went away.
    fn agent_gone(&mut self, call: u64, now: Instant) {
        let Some(call_id) = self.inbound_by_agent_call(call) else {
            self.agent_out_hangup(call, now);
            return;
        };
        let answered = self
            .calls
            .get(&call_id)
            .and_then(|c| c.kind.agent())
            .is_some_and(|a| a.answered);
        if answered {
            info!("agent gone mid-call: BYE to the trunk");
            self.hang_up(call_id, EndReason::AgentGone, now);
        } else {
            if let Some(leg) = self
                .calls
                .get_mut(&call_id)
                .and_then(|c| c.kind.agent_mut())
            {
                leg.session = None;
            }
            self.offer_call(call_id, now);
        }
    }

    /// A call with an agent leg ended (from `end_call`): tell the agent and
    /// free it.
    pub(super) fn agent_leg_ended(&mut self, leg: &AgentLeg, why: EndReason, now: Instant) {
        if let Some(label) = why.agent_label(leg.answered) {
            self.metrics
                .agent_calls
                .with_label_values(&["inbound", label])
                .inc();
        }
        let Some(s) = leg.session else { return };
        if let Some(a) = self.agents.sessions.get_mut(&s) {
            if a.call == Some(leg.call) {
                a.call = None;
                a.idle_since = now;
            }
            if why != EndReason::AgentGone {
                a.link.send(ServerMsg::Ended {
                    call: leg.call,
                    // The agent is the callee of the calls it takes.
                    reason: why.agent_reason(Party::Callee).into(),
                });
            }
        }
    }
}
