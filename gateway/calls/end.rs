//! Why a call ends: one value from which its metric label, its record's
//! outcome, status and hanger-up, and what its agent is told all follow
//! (before, a string outcome, an agent reason and a hanger-up were kept
//! apart and parsed back into enums where they were used).

use crate::cdr::record::{Outcome, Party};

/// Why a call, or an agent's dial, ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// A BYE after the answer, from this side. An agent is the callee of
    /// the calls it takes and the caller of those it dials.
    HungUp(Party),
    /// The caller gave up before the answer (a CANCEL, or an agent hanging
    /// up its own dial while it rings).
    Cancelled,
    /// Refused before the answer with this final status (a far end's
    /// busy, or 480 when no agent is free).
    Refused(u16),
    /// Nobody answered an agent's dial before its INVITE timed out.
    NoAnswer,
    /// No RTP for `media.rtp_timeout_s`.
    MediaTimeout,
    /// The session timer ran out without a refresh.
    SessionExpired,
    /// The route's `hangup_ms` or `media.max_call_s`.
    MaxDuration,
    /// The agent's connection went away mid-call.
    AgentGone,
    /// The gateway stopped with the call answered.
    Shutdown,
    /// Anything else: no ACK for a 2xx within 64*T1, a far end that never
    /// answered a bridge, a mid-call offer that could not be carried, the
    /// gateway stopping while the call rang.
    Failed,
}

impl EndReason {
    /// The record's outcome, whose label is also `tollgate_calls_total`'s
    /// `outcome`.
    pub fn outcome(self) -> Outcome {
        match self {
            Self::HungUp(_) | Self::MaxDuration | Self::AgentGone | Self::Shutdown => {
                Outcome::Answered
            }
            Self::Cancelled => Outcome::Cancelled,
            Self::Refused(_) => Outcome::Rejected,
            Self::NoAnswer | Self::MediaTimeout | Self::SessionExpired | Self::Failed => {
                Outcome::Failed
            }
        }
    }

    /// The metric label (`tollgate_calls_total{outcome}`).
    pub fn label(self) -> &'static str {
        self.outcome().label()
    }

    /// The SIP status the record keeps, given the one it holds.
    pub fn status(self, recorded: u16) -> u16 {
        match self {
            Self::Cancelled => 487,
            Self::Refused(code) => code,
            _ => recorded,
        }
    }

    /// Who the record says hung up, with the agent on the `agent` side.
    pub fn hung_up_by(self, agent: Party) -> Option<Party> {
        match self {
            Self::HungUp(p) => Some(p),
            Self::Cancelled => Some(Party::Caller),
            Self::AgentGone => Some(agent),
            Self::Refused(_) => None,
            Self::NoAnswer
            | Self::MediaTimeout
            | Self::SessionExpired
            | Self::MaxDuration
            | Self::Shutdown
            | Self::Failed => Some(Party::Gateway),
        }
    }

    /// The reason an agent on the `agent` side is told (the agent
    /// protocol's `ended`).
    pub fn agent_reason(self, agent: Party) -> &'static str {
        match self {
            Self::HungUp(p) if p == agent => "hangup",
            Self::HungUp(_) => "remote_hangup",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Refused(code) => match code {
                486 | 600 => "busy",
                408 | 480 => "no_answer",
                404 | 484 | 604 => "no_such_number",
                487 => "cancelled",
                603 => "rejected",
                _ => "failed",
            },
            Self::NoAnswer => "no_answer",
            Self::MediaTimeout => "media_timeout",
            Self::SessionExpired => "session_expired",
            Self::MaxDuration => "max_duration",
            Self::AgentGone => "agent_gone",
            Self::Shutdown => "shutdown",
        }
    }

    /// The `outcome` of `tollgate_agent_calls_total{direction="inbound"}`
    /// for an agent offered the call, `None` where the call was not the
    /// agent's to take (no agent answered it: it went on to the next).
    pub fn agent_label(self, answered: bool) -> Option<&'static str> {
        match (answered, self) {
            (true, _) => Some("answered"),
            (false, Self::Cancelled) => Some("cancelled"),
            (false, Self::Refused(_)) => None,
            (false, _) => Some("failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reason, for the tables below.
    const ALL: [EndReason; 12] = [
        EndReason::HungUp(Party::Caller),
        EndReason::HungUp(Party::Callee),
        EndReason::Cancelled,
        EndReason::Refused(486),
        EndReason::NoAnswer,
        EndReason::MediaTimeout,
        EndReason::SessionExpired,
        EndReason::MaxDuration,
        EndReason::AgentGone,
        EndReason::Shutdown,
        EndReason::Failed,
        EndReason::Refused(480),
    ];

    #[test]
    fn labels_are_the_metric_and_record_vocabulary() {
        let labels: Vec<&str> = ALL.iter().map(|r| r.label()).collect();
        assert_eq!(
            labels,
            [
                "answered",
                "answered",
                "cancelled",
                "rejected",
                "failed",
                "failed",
                "failed",
                "answered",
                "answered",
                "answered",
                "failed",
                "rejected"
            ]
        );
        // Never a record left open, nor marked interrupted, by a live end.
        assert!(ALL
            .iter()
            .all(|r| !matches!(r.outcome(), Outcome::Open | Outcome::Interrupted)));
    }

    #[test]
    fn an_agent_hears_its_own_hang_up_as_hangup_and_the_other_sides_as_remote() {
        let bye_from_caller = EndReason::HungUp(Party::Caller);
        // On a call it takes, the agent is the callee.
        assert_eq!(bye_from_caller.agent_reason(Party::Callee), "remote_hangup");
        assert_eq!(
            EndReason::HungUp(Party::Callee).agent_reason(Party::Callee),
            "hangup"
        );
        // On its own dial, the agent is the caller.
        assert_eq!(bye_from_caller.agent_reason(Party::Caller), "hangup");
        assert_eq!(
            EndReason::AgentGone.hung_up_by(Party::Caller),
            Some(Party::Caller)
        );
        assert_eq!(
            EndReason::AgentGone.hung_up_by(Party::Callee),
            Some(Party::Callee)
        );
    }

    #[test]
    fn refusals_keep_their_status_and_name_it_to_the_agent() {
        for (code, reason) in [
            (486, "busy"),
            (600, "busy"),
            (480, "no_answer"),
            (404, "no_such_number"),
            (603, "rejected"),
            (500, "failed"),
        ] {
            let r = EndReason::Refused(code);
            assert_eq!(r.agent_reason(Party::Caller), reason, "{code}");
            assert_eq!(r.status(200), code);
            assert_eq!(r.hung_up_by(Party::Caller), None);
        }
        assert_eq!(EndReason::Cancelled.status(180), 487);
        assert_eq!(EndReason::MediaTimeout.status(200), 200);
    }

    #[test]
    fn an_agent_offered_a_call_counts_only_what_was_its_own() {
        assert_eq!(EndReason::Cancelled.agent_label(false), Some("cancelled"));
        assert_eq!(EndReason::Refused(480).agent_label(false), None);
        assert_eq!(EndReason::Failed.agent_label(false), Some("failed"));
        assert!(ALL.iter().all(|r| r.agent_label(true) == Some("answered")));
    }
}
