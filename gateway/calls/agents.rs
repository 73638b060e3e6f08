//! Logged-in agents as the call core sees them: their sessions' links,
//! profiles and availability, in login order.

use std::collections::HashMap;
use std::time::Instant;

use tracing::debug;

use super::core::Core;
use crate::agent::protocol::{ClientMsg, ServerMsg};
use crate::agent::server::{AgentEvent, Link};

/// One logged-in agent.
pub(super) struct AgentSession {
    pub(super) name: String,
    pub(super) profile: Option<String>,
    pub(super) link: Link,
    pub(super) available: bool,
    /// Since when the agent has been idle (for longest-idle routing).
    pub(super) idle_since: Instant,
}

/// Sessions by id.
#[derive(Default)]
pub(super) struct Agents {
    pub(super) sessions: HashMap<u64, AgentSession>,
}

impl Core {
    pub(super) fn on_agent_event(&mut self, e: AgentEvent, now: Instant) {
        match e {
            AgentEvent::Up {
                session,
                agent,
                profile,
                link,
            } => {
                debug!(session, agent = %agent, profile = ?profile, "agent up");
                self.agents.sessions.insert(
                    session,
                    AgentSession {
                        name: agent,
                        profile,
                        link,
                        available: false,
                        idle_since: now,
                    },
                );
            }
            AgentEvent::Down { session } => {
                if let Some(a) = self.agents.sessions.remove(&session) {
                    debug!(session, agent = %a.name, profile = ?a.profile, "agent down");
                }
            }
            AgentEvent::Message { session, msg } => self.on_agent_message(session, msg, now),
        }
    }

    fn on_agent_message(&mut self, session: u64, msg: ClientMsg, now: Instant) {
        let Some(a) = self.agents.sessions.get_mut(&session) else {
            return;
        };
        match msg {
            ClientMsg::Available { available } => {
                if available && !a.available {
                    a.idle_since = now;
                }
                a.available = available;
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
            ClientMsg::Dial { .. } => {
                a.link.send(ServerMsg::Error {
                    code: "unavailable".into(),
                    message: "dialling out is not enabled yet".into(),
                    call: None,
                });
            }
            ClientMsg::Hello { .. } | ClientMsg::Ping { .. } => {}
        }
    }
}
