//! One call the gateway answered, as the core keeps it: its dialog, its
//! kept INVITE and answer, its media task's control and its timers.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::agents::AgentLeg;
use super::media::{Control, Service};
use super::outbound::Bridge;
use crate::media::srtp::MasterKey;
use crate::sip::dialog::{self, Dialog};
use crate::sip::sdp::Local;
use crate::sip::transaction::{Key, Peer};
use crate::sip::WipedBytes;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    Ringing,
    /// 200 OK sent, waiting for the ACK.
    Answered,
    Confirmed,
}

pub(super) struct Call {
    /// For logs.
    pub(super) n: u64,
    pub(super) peer: Peer,
    /// Where the latest (re-)INVITE came from: its 2xx goes back there.
    pub(super) invite_from: Peer,
    pub(super) invite_key: Key,
    /// The INVITE (or latest re-INVITE), to build its final response.
    pub(super) invite: WipedBytes,
    /// The dialog the INVITE made: tags, target, route set, CSeqs.
    pub(super) dialog: Dialog,
    pub(super) contact: Vec<u8>,
    pub(super) state: State,
    pub(super) answer_at: Option<Instant>,
    /// How long after answering the gateway hangs up, and when.
    pub(super) hangup_after: Option<Duration>,
    pub(super) hangup_at: Option<Instant>,
    /// The 2xx being retransmitted until the ACK.
    pub(super) ok: Option<dialog::Resend2xx>,
    pub(super) local: Local,
    pub(super) answer_sdp: WipedBytes,
    /// SDES keys in use on the trunk leg: (the peer's, ours).
    pub(super) sdes: Option<(MasterKey, MasterKey)>,
    /// The address the peer's SDP asks media to go to.
    pub(super) media_ip: IpAddr,
    pub(super) media: mpsc::Sender<Control>,
    /// Who answers the caller.
    pub(super) kind: CallKind,
    /// Whether our 2xx in flight carries an offer (to a re-INVITE without
    /// SDP), which the ACK answers.
    pub(super) offered_in_2xx: bool,
    /// RFC 4028, when the carrier asked for it.
    pub(super) session_timer: Option<crate::sip::timer::SessionTimer>,
    /// Its call record (when records are kept).
    pub(super) record: Option<super::records::CallRecord>,
    /// The trunks whose call slots it holds (by name): the caller's, and
    /// the far end's for a bridge.
    pub(super) on_trunks: Vec<String>,
}

/// A call the gateway answered, as the core's tables refer to it: the
/// call's number, never reused, so a reference that outlives its call
/// finds nothing rather than another call. Call-IDs (the peer's bytes)
/// are looked up once, where a message comes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallRef(pub(super) u64);

/// One SIP dialog the core holds with a peer, by what finds it: the
/// caller's leg of a call the gateway answered, the far leg of a bridge,
/// or an agent's call out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum LegKey {
    /// The caller's leg of a call the gateway answered.
    Inbound(CallRef),
    /// The outbound leg of this bridged call.
    Bridge(CallRef),
    /// An agent's call.
    AgentOut(u64),
}

/// Who answers a call the gateway took: a service of its own, a far end
/// out another trunk, or an agent.
pub(super) enum CallKind {
    /// Echo or tone, answered by the gateway itself.
    Service(Service),
    /// Bridged out another trunk: the outbound leg.
    Bridge(Box<Bridge>),
    /// Offered to agents: the agent side.
    Agent(Box<AgentLeg>),
}

impl CallKind {
    /// For logs.
    pub(super) fn label(&self) -> &'static str {
        match self {
            Self::Service(Service::Echo) => "echo",
            Self::Service(Service::Tone) => "tone",
            Self::Bridge(_) => "bridge",
            Self::Agent(_) => "agent",
        }
    }

    pub(super) fn bridge(&self) -> Option<&Bridge> {
        match self {
            Self::Bridge(b) => Some(b),
            _ => None,
        }
    }

    pub(super) fn bridge_mut(&mut self) -> Option<&mut Bridge> {
        match self {
            Self::Bridge(b) => Some(b),
            _ => None,
        }
    }

    pub(super) fn agent(&self) -> Option<&AgentLeg> {
        match self {
            Self::Agent(a) => Some(a),
            _ => None,
        }
    }

    pub(super) fn agent_mut(&mut self) -> Option<&mut AgentLeg> {
        match self {
            Self::Agent(a) => Some(a),
            _ => None,
        }
    }
}

impl Call {
    /// The bytes of SIP it keeps, with its Call-ID's copy in the core's
    /// index.
    pub(super) fn held(&self) -> usize {
        self.invite.len() + self.answer_sdp.len() + self.dialog.held() + self.dialog.call_id.len()
    }
}

impl crate::deadlines::Timed for Call {
    /// The earliest of what the core does on its own for this call
    /// (`Core::call_due` handles each): an agent's offer running out, the
    /// delayed answer, the time limit, our 2xx's next resend to either
    /// end, and either leg's session timer (the trunk's once answered).
    fn next_deadline(&self) -> Option<Instant> {
        [
            self.kind.agent().and_then(|a| a.offer_until),
            self.answer_at,
            self.hangup_at,
            self.ok.as_ref().map(dialog::Resend2xx::deadline),
            self.kind
                .bridge()
                .and_then(|b| b.ok.as_ref())
                .map(dialog::Resend2xx::deadline),
            self.session_timer
                .filter(|_| self.state != State::Ringing)
                .map(|t| t.next_due()),
            self.kind
                .bridge()
                .and_then(|b| b.timer)
                .map(|t| t.next_due()),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
