//! Session timers on every dialog (RFC 4028), whichever side started it
//! and whichever side refreshes:
//!
//! - a peer that refreshes and stops is hung up at the deadline: the
//!   carrier on a call the gateway answered, and now also the far end of
//!   a bridge's outbound leg or of an agent's call, whose interval was
//!   only echoed before;
//! - where a peer asks the gateway to refresh (`refresher=uas` in its
//!   request, `refresher=uac` in the 2xx to ours), the gateway sends an
//!   UPDATE without SDP at half the interval. Its 2xx renews the timer
//!   (on the terms the 2xx states); a 408 or 481, or no answer at all,
//!   means the session is gone (RFC 4028 10) and the call ends.

use std::time::Instant;

use tracing::info;

use super::call::LegKey;
use super::core::{Core, State};
use super::end::EndReason;
use crate::sip::dialog;
use crate::sip::message::{Framing, Message};
use crate::sip::timer::{Refresher, SessionTimer};
use crate::sip::transaction::{Key, Peer};

impl Core {
    /// `who`'s dialog with the peer and its session timer.
    fn leg_of(&mut self, who: &LegKey) -> Option<(&mut dialog::Dialog, &mut Option<SessionTimer>)> {
        match who {
            LegKey::Inbound(id) => {
                let c = self.calls.get_mut(id)?;
                Some((&mut c.dialog, &mut c.session_timer))
            }
            LegKey::Bridge(id) => {
                let b = self.calls.get_mut(id)?.kind.bridge_mut()?;
                Some((&mut b.dialog, &mut b.timer))
            }
            LegKey::AgentOut(call) => {
                let leg = &mut *self.agent_out.get_mut(call)?.leg;
                Some((&mut leg.dialog, &mut leg.timer))
            }
        }
    }

    /// The session timer of `who`'s dialog with the peer.
    fn timer_of(&mut self, who: &LegKey) -> Option<&mut Option<SessionTimer>> {
        self.leg_of(who).map(|(_, t)| t)
    }

    /// What is due on `who`'s session timer at `now`, if anything: the
    /// gateway's refresh, or the end of a session the peer let lapse.
    /// `true` if the call ended.
    pub(super) fn session_due(&mut self, who: LegKey, now: Instant) -> bool {
        // A call still ringing has no session to time yet.
        if let LegKey::Inbound(id) = &who {
            if self.calls.get(id).is_none_or(|c| c.state == State::Ringing) {
                return false;
            }
        }
        let due = match self.timer_of(&who) {
            Some(Some(t)) if t.next_due() <= now => *t,
            _ => return false,
        };
        match due.refresher {
            Refresher::Peer => {
                info!("session timer expired without a refresh: BYE");
                self.session_gone(&who, now);
                true
            }
            Refresher::Us => {
                self.send_refresh(&who, due, now);
                false
            }
        }
    }

    /// Ends `who`'s call: its session timer ran out, or our refresh met
    /// a 408, a 481 or silence.
    fn session_gone(&mut self, who: &LegKey, now: Instant) {
        self.end_leg(who, EndReason::SessionExpired, now);
    }

    /// Hangs up the call `who` is a leg of, for `why`: both legs of a
    /// bridge, the caller's of another call, an agent's call out.
    pub(super) fn end_leg(&mut self, who: &LegKey, why: EndReason, now: Instant) {
        match who {
            LegKey::Inbound(id) | LegKey::Bridge(id) => self.hang_up(*id, why, now),
            LegKey::AgentOut(call) => self.hang_up_out(*call, Some(why), now),
        }
    }

    /// Sends our UPDATE (no SDP) refreshing `who`'s session, and counts
    /// the interval again from now (the answer may restate it).
    fn send_refresh(&mut self, who: &LegKey, mut timer: SessionTimer, now: Instant) {
        let Some((peer, transport, contact)) = self.refresh_target(who) else {
            // Nothing to refresh yet (our 2xx is not ACKed): try again
            // soon, never leave a due time in the past (the loop would
            // spin on it).
            timer.retry_soon(now);
            if let Some(t) = self.timer_of(who) {
                *t = Some(timer);
            }
            return;
        };
        let branch = self.tokens.branch();
        let via = self.sip_addr;
        let se = timer.refresh_request();
        let Some((dialog, _)) = self.leg_of(who) else {
            return;
        };
        let cseq = dialog.next_cseq();
        let req = dialog.request(&dialog::Request {
            method: "UPDATE",
            cseq,
            via,
            transport,
            branch: branch.as_bytes(),
            extra: &[
                ("Contact", &contact),
                ("Session-Expires", &se),
                ("Supported", b"timer"),
            ],
            body: None,
        });
        timer.refreshed(now);
        if let Some(t) = self.timer_of(who) {
            *t = Some(timer);
        }
        if let Some(key) = self.txn.start_client(req, peer, now) {
            info!("refreshing the session (we are its refresher): UPDATE");
            self.refreshes.insert(key, who.clone());
        }
    }

    /// Where `who`'s refresh goes, by which transport, with our Contact:
    /// `None` for a call whose 2xx is not ACKed yet (nothing to refresh).
    fn refresh_target(&self, who: &LegKey) -> Option<(Peer, &'static str, Vec<u8>)> {
        let (peer, transport) = match who {
            LegKey::Inbound(id) => {
                let c = self.calls.get(id).filter(|c| c.state == State::Confirmed)?;
                return Some((c.peer, c.peer.transport_name(), c.contact.clone()));
            }
            LegKey::Bridge(id) => {
                let b = self.calls.get(id)?.kind.bridge()?;
                (b.peer, b.transport)
            }
            LegKey::AgentOut(call) => {
                let l = &self.agent_out.get(call)?.leg;
                (l.peer, l.transport)
            }
        };
        Some((peer, transport, self.contact_for(peer)))
    }

    /// A response to one of our refreshes; `false` if `key` is not one.
    pub(super) fn refresh_answered(
        &mut self,
        key: &Key,
        code: u16,
        bytes: &[u8],
        now: Instant,
    ) -> bool {
        if code < 200 {
            return self.refreshes.contains_key(key);
        }
        let Some(who) = self.refreshes.remove(key) else {
            return false;
        };
        match code {
            200..=299 => {
                let limits = self.config.limits;
                let renewed = Message::parse(bytes, Framing::Stream, &limits)
                    .ok()
                    .and_then(|(m, _)| SessionTimer::from_answer(&m, now));
                if let Some(t) = self.timer_of(&who) {
                    // A 2xx without Session-Expires turns the timer off.
                    *t = renewed;
                }
            }
            408 | 481 => {
                info!(code, "our session refresh found no session: BYE");
                self.session_gone(&who, now);
            }
            // Refused for another reason: the session stands, and the
            // next refresh is due at half the interval again.
            // Glare or a passing failure: again in a few seconds.
            491 | 500..=599 => {
                info!(code, "our session refresh was refused for now; retrying");
                if let Some(Some(t)) = self.timer_of(&who) {
                    t.retry_soon(now);
                }
            }
            // Refused outright: the session stands, the next refresh is
            // due at half the interval again.
            _ => info!(code, "our session refresh was refused; trying again later"),
        }
        true
    }

    /// Our refresh got no answer at all; `false` if `key` is not one.
    pub(super) fn refresh_lost(&mut self, key: &Key, now: Instant) -> bool {
        let Some(who) = self.refreshes.remove(key) else {
            return false;
        };
        info!("our session refresh got no answer: BYE");
        self.session_gone(&who, now);
        true
    }
}
