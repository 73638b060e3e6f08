//! Requests that change a session mid-call, re-INVITE and UPDATE (RFC
//! 3311), from either end of any dialog: the carrier on a call the gateway
//! answered, and the far end of a dialog the gateway started (a bridge's
//! outbound leg, an agent's call). Carriers refresh sessions (RFC 4028,
//! often by UPDATE) and put calls on hold this way; a dialog that refused
//! them would end calls that were working.
//!
//! An offer is answered by [`reoffer`], one rule for every leg: our codec
//! and SDES key stay as they are (the media seals with them), the new
//! media address must be one the trunk may send to, an SRTP call cannot
//! fall back to plain RTP, and the media task moves, holds or re-keys the
//! leg. A re-INVITE without SDP (a refresh by some carriers) gets our
//! current SDP as the offer; the answer in its ACK is not read, so media
//! stays as it was.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::info;

use super::core::{Core, Reply, State, ALLOW, MAX_CALL_BYTES};
use super::media::Control;
use crate::config::Config;
use crate::media::srtp::{MasterKey, SrtpConfig, SrtpReceiver};
use crate::sip::build;
use crate::sip::check::RequestHead;
use crate::sip::dialog::Resend2xx;
use crate::sip::header::Method;
use crate::sip::message::Message;
use crate::sip::sdp::{self, Local, Sdp, SrtpMode};
use crate::sip::timer::{Asked, SessionTimer, MIN_SE};
use crate::sip::transaction::{Key, Peer, Transmit};

/// Whose dialog a request is in.
enum Owner {
    /// A call the gateway answered (by its Call-ID).
    Inbound(Vec<u8>),
    /// The outbound leg of a bridged call (by the inbound call's Call-ID).
    Bridge(Vec<u8>),
    /// An agent's call.
    AgentOut(u64),
}

/// One leg's negotiated media, as a mid-dialog offer may change it.
pub(super) struct Session<'a> {
    pub(super) n: u64,
    pub(super) peer: Peer,
    pub(super) local: &'a mut Local,
    /// SDES keys in use: (the peer's, ours).
    pub(super) sdes: &'a mut Option<(MasterKey, MasterKey)>,
    pub(super) media_ip: &'a mut IpAddr,
    /// The media task's control, once media runs.
    pub(super) media: Option<&'a mpsc::Sender<Control>>,
}

/// A refused offer: the status and reason to answer with.
type Refused = (u16, &'static str);

const NOT_ACCEPTABLE: Refused = (488, "Not Acceptable Here");
/// The dialog ended while its request was being handled.
const GONE: Refused = (481, "Call/Transaction Does Not Exist");

/// Answers the offer in `body` on leg `s`: returns our SDP answer, the
/// media task told of the change.
pub(super) fn reoffer(
    config: &Config,
    metrics: &crate::admin::metrics::Metrics,
    s: Session<'_>,
    body: &[u8],
) -> Result<Vec<u8>, Refused> {
    // Our SDES key goes back in the answer: only over TLS (or where the
    // trunk accepts keys in clear), whatever the call started on.
    let clear_ok = config
        .trunk_for(s.peer.addr.ip())
        .and_then(|t| config.trunks.get(t))
        .is_some_and(|t| t.sdes_in_clear);
    if s.sdes.is_some() && !s.peer.tls && !clear_ok {
        return Err(NOT_ACCEPTABLE);
    }
    // Our SDES key stays the one the media seals with; a call without
    // SRTP stays without (its media task has no keys to change).
    let offer = Sdp::parse(body).map_err(|_| NOT_ACCEPTABLE)?;
    s.local.session_version += 1;
    let mut local = s.local.clone();
    if s.sdes.is_none() {
        local.srtp = SrtpMode::Off;
    }
    let mut neg = sdp::answer_keeping(&offer, &local, s.sdes.as_ref().map(|(_, ours)| ours))
        .map_err(|_| NOT_ACCEPTABLE)?;
    // A new media address must be of a scope the trunk allows; an
    // unspecified one is the old form of hold (nothing is sent there).
    let ip = neg.remote.ip();
    if !ip.is_unspecified() {
        if let Some(why) = config.media_refused(s.peer.addr.ip(), ip) {
            info!(
                call = s.n,
                refused = why,
                "new offer's media address refused: 488"
            );
            metrics.sdp_address_refused.with_label_values(&[why]).inc();
            return Err(NOT_ACCEPTABLE);
        }
    }
    match (&*s.sdes, neg.srtp.take()) {
        // An SRTP call cannot fall back to plain RTP mid-call.
        (Some(_), None) => return Err(NOT_ACCEPTABLE),
        (Some((old, _)), Some((theirs, ours))) => {
            if !theirs.same_as(old) {
                let rx = SrtpReceiver::new(&theirs, SrtpConfig::default())
                    .map_err(|_| NOT_ACCEPTABLE)?;
                // The media must take the key, or the call would go
                // one-way: else the peer tries again.
                let taken = s
                    .media
                    .is_some_and(|m| m.try_send(Control::Rekey(Box::new(rx))).is_ok());
                if !taken {
                    return Err((500, "Server Internal Error"));
                }
                info!(call = s.n, "new offer: the peer's SRTP key changed");
            }
            *s.sdes = Some((theirs, ours));
        }
        _ => {}
    }
    let remote_rtcp = if neg.rtcp_mux {
        neg.remote
    } else {
        SocketAddr::new(neg.remote.ip(), neg.remote.port().wrapping_add(1))
    };
    if !ip.is_unspecified() {
        *s.media_ip = ip;
    }
    if let Some(m) = s.media {
        let _ = m.try_send(Control::Update {
            remote: neg.remote,
            rtcp: remote_rtcp,
            send: neg.direction.sends(),
        });
        // The request carried the dialog's unguessable tags, which proves
        // as much as an ACK does; and the address passed the trunk's rule
        // (an untrusted peer's must be its own), so media may go there
        // before any came from it.
        if !ip.is_unspecified() {
            let _ = m.try_send(Control::Confirmed);
        }
    }
    info!(
        call = s.n,
        direction = neg.direction.as_str(),
        "new offer answered"
    );
    Ok(neg.answer)
}

impl super::core::Call {
    /// Its trunk leg's media, for [`reoffer`].
    fn session(&mut self) -> Session<'_> {
        Session {
            n: self.n,
            peer: self.peer,
            local: &mut self.local,
            sdes: &mut self.sdes,
            media_ip: &mut self.media_ip,
            media: Some(&self.media),
        }
    }
}

/// The Session-Expires (and Require) a 2xx to a refresh carries, from
/// the request's own (RFC 4028 9): the peer that sent it refreshes.
fn timer_headers(m: &Message<'_>, now: Instant) -> Result<Option<Vec<u8>>, ()> {
    match SessionTimer::from_request(m, now) {
        Asked::TooSmall => Err(()),
        Asked::Timer(t) => Ok(Some(t.session_expires())),
        Asked::None => Ok(None),
    }
}

impl Core {
    /// Whose dialog `m` (a request with a To tag) is in.
    fn owner(&self, m: &Message<'_>, call_id: &[u8]) -> Option<Owner> {
        if self.calls.get(call_id).is_some_and(|c| c.dialog.owns(m)) {
            return Some(Owner::Inbound(call_id.to_vec()));
        }
        if let Some(a_id) = self.outbound.get(call_id) {
            let ours = self
                .calls
                .get(a_id)
                .and_then(|c| c.bridge.as_ref())
                .is_some_and(|b| b.answered && b.dialog.owns(m));
            return ours.then(|| Owner::Bridge(a_id.clone()));
        }
        let call = *self.agent_out_ids.get(call_id)?;
        self.agent_out
            .get(&call)
            .is_some_and(|o| o.leg.answered && o.leg.dialog.owns(m))
            .then_some(Owner::AgentOut(call))
    }

    /// A re-INVITE or UPDATE: to the dialog it is in, else 481.
    pub(super) fn session_request(
        &mut self,
        key: Key,
        m: &Message<'_>,
        head: &RequestHead<'_>,
        bytes: &[u8],
        now: Instant,
    ) {
        let update = head.method == Method::Update;
        match self.owner(m, head.call_id) {
            None => self.respond(
                &key,
                m,
                Reply::new(481, "Call/Transaction Does Not Exist"),
                now,
            ),
            Some(Owner::Inbound(id)) if update => self.update_inbound(key, m, &id, now),
            Some(Owner::Inbound(id)) => self.reinvite(key, m, &id, bytes, now),
            Some(owner) => self.far_end_session(key, m, owner, update, now),
        }
    }

    /// RFC 3261 12.2.2: a request older than one already seen in call
    /// `call_id`'s dialog gets 500. `true` if `m` is in order.
    fn in_order(&mut self, key: &Key, m: &Message<'_>, call_id: &[u8], now: Instant) -> bool {
        let fresh = self
            .calls
            .get_mut(call_id)
            .is_some_and(|c| c.dialog.received(m).is_ok());
        if !fresh {
            self.respond(key, m, Reply::new(500, "Server Internal Error"), now);
        }
        fresh
    }

    /// A re-INVITE in one of the calls the gateway answered: the media
    /// moves, holds or re-keys, and the answer goes back in a 2xx resent
    /// until its ACK.
    fn reinvite(&mut self, key: Key, m: &Message<'_>, call_id: &[u8], bytes: &[u8], now: Instant) {
        if self
            .calls
            .get(call_id)
            .is_some_and(|c| c.state != State::Confirmed)
        {
            self.respond(&key, m, Reply::new(491, "Request Pending"), now);
            return;
        }
        if !self.in_order(&key, m, call_id, now) {
            return;
        }
        let Some(c) = self.calls.get_mut(call_id) else {
            return;
        };
        // The new INVITE replaces the kept one: within the calls' budget.
        let grows = bytes.len().saturating_sub(c.invite.len());
        if self.call_bytes + grows > MAX_CALL_BYTES {
            self.respond(&key, m, Reply::new(503, "Service Unavailable"), now);
            return;
        }
        let answer = if m.body.is_empty() {
            // Our current SDP is the offer.
            Ok(c.answer_sdp.to_vec())
        } else {
            reoffer(&self.config, &self.metrics, c.session(), m.body)
        };
        let answer = match answer {
            Ok(a) => a,
            Err((code, reason)) => {
                self.respond(&key, m, Reply::new(code, reason), now);
                return;
            }
        };
        // A re-INVITE refreshes the session timer.
        if let Some(t) = c.session_timer.as_mut() {
            t.refreshed(now);
        }
        let before = c.held();
        c.answer_sdp = answer.into();
        c.invite = bytes.to_vec().into();
        c.dialog.refresh_target(m);
        let after = c.held();
        self.call_bytes = self.call_bytes.saturating_sub(before) + after;
        c.invite_key = key;
        c.state = State::Ringing; // answered just below
        self.answer(call_id, now);
    }

    /// An UPDATE in a call the gateway answered: a session refresh (RFC
    /// 4028) without SDP, or a new offer once the call is confirmed.
    fn update_inbound(&mut self, key: Key, m: &Message<'_>, call_id: &[u8], now: Instant) {
        if !self.in_order(&key, m, call_id, now) {
            return;
        }
        let Some(c) = self.calls.get_mut(call_id) else {
            return;
        };
        let answer = if m.body.is_empty() {
            None
        } else if c.state != State::Confirmed {
            self.respond(&key, m, Reply::new(491, "Request Pending"), now);
            return;
        } else {
            match reoffer(&self.config, &self.metrics, c.session(), m.body) {
                Ok(sdp) => Some(sdp),
                Err((code, reason)) => {
                    self.respond(&key, m, Reply::new(code, reason), now);
                    return;
                }
            }
        };
        if let Some(t) = c.session_timer.as_mut() {
            t.refreshed(now);
        }
        let se = c.session_timer.map(|t| t.session_expires());
        if let Some(a) = &answer {
            let before = c.held();
            c.answer_sdp = a.clone().into();
            let after = c.held();
            self.call_bytes = self.call_bytes.saturating_sub(before) + after;
        }
        c.dialog.refresh_target(m);
        let contact = c.contact.clone();
        self.ok_to_update(&key, m, &contact, se.as_deref(), answer.as_deref(), now);
    }

    /// 200 to an UPDATE, with the session timer and SDP answer if any.
    fn ok_to_update(
        &mut self,
        key: &Key,
        m: &Message<'_>,
        contact: &[u8],
        se: Option<&[u8]>,
        answer: Option<&[u8]>,
        now: Instant,
    ) {
        let mut extra: Vec<(&str, &[u8])> = vec![("Contact", contact), ("Allow", ALLOW)];
        if let Some(se) = se {
            extra.push(("Session-Expires", se));
            extra.push(("Require", b"timer"));
        }
        let body = answer.map(|a| ("application/sdp", a));
        if let Some(r) = build::response(m, 200, "OK", None, &extra, body) {
            self.txn.respond(key, r, now);
        }
    }

    /// A re-INVITE or UPDATE from the far end of a dialog the gateway
    /// started. The gateway does not run the session timer on these legs
    /// (the far end asked for it and refreshes); a refresh is accepted
    /// and its interval echoed.
    fn far_end_session(
        &mut self,
        key: Key,
        m: &Message<'_>,
        owner: Owner,
        update: bool,
        now: Instant,
    ) {
        let Ok(se) = timer_headers(m, now) else {
            let min_se = MIN_SE.to_string();
            self.respond(
                &key,
                m,
                Reply::new(422, "Session Interval Too Small")
                    .extra(&[("Min-SE", min_se.as_bytes())]),
                now,
            );
            return;
        };
        let outcome = self.far_end_offer(&owner, m, update);
        let (answer, peer) = match outcome {
            Ok(done) => done,
            Err((code, reason)) => {
                self.respond(&key, m, Reply::new(code, reason), now);
                return;
            }
        };
        let contact = self.contact_for(peer);
        if update {
            self.ok_to_update(&key, m, &contact, se.as_deref(), answer.as_deref(), now);
            return;
        }
        let mut extra: Vec<(&str, &[u8])> = vec![("Contact", &contact), ("Allow", ALLOW)];
        if let Some(se) = &se {
            extra.push(("Session-Expires", se));
            extra.push(("Require", b"timer"));
        }
        let body = answer.as_deref().map(|a| ("application/sdp", a));
        let Some(ok) = build::response(m, 200, "OK", None, &extra, body) else {
            return;
        };
        let t1 = self.timers.t1;
        let leg = match &owner {
            Owner::Bridge(a_id) => self
                .calls
                .get_mut(a_id)
                .and_then(|c| c.bridge.as_deref_mut()),
            Owner::AgentOut(call) => self.agent_out.get_mut(call).map(|o| &mut *o.leg),
            Owner::Inbound(_) => None,
        };
        if let Some(leg) = leg {
            leg.ok = Some(Resend2xx::new(ok.clone().into(), now, t1));
        }
        self.txn.respond(&key, ok, now);
    }

    /// The far end's request `m` on the leg of `owner`, judged and applied:
    /// our SDP answer (or offer, for a re-INVITE without SDP; none for an
    /// UPDATE without) and the leg's peer, or the refusal to send.
    fn far_end_offer(
        &mut self,
        owner: &Owner,
        m: &Message<'_>,
        update: bool,
    ) -> Result<(Option<Vec<u8>>, Peer), Refused> {
        let (config, metrics) = (&self.config, &self.metrics);
        let (n, leg, media) = match owner {
            Owner::Bridge(a_id) => {
                let c = self.calls.get_mut(a_id).ok_or(GONE)?;
                let n = c.n;
                let b = c.bridge.as_deref_mut().ok_or(GONE)?;
                let media = b.far_media.clone();
                (n, b, media)
            }
            Owner::AgentOut(call) => {
                let o = self.agent_out.get_mut(call).ok_or(GONE)?;
                (o.n, &mut *o.leg, o.media.clone())
            }
            Owner::Inbound(_) => return Err(GONE),
        };
        if !update && leg.ok.is_some() {
            // Our 2xx to its last re-INVITE is not ACKed yet.
            return Err((491, "Request Pending"));
        }
        if leg.dialog.received(m).is_err() {
            return Err((500, "Server Internal Error"));
        }
        let answer = if m.body.is_empty() {
            // A refresh: UPDATE without SDP answers without, a re-INVITE
            // without gets our current SDP as the offer.
            (!update).then(|| leg.sdp.to_vec())
        } else {
            let session = Session {
                n,
                peer: leg.peer,
                local: &mut leg.local,
                sdes: &mut leg.sdes,
                media_ip: &mut leg.media_ip,
                media: media.as_ref(),
            };
            Some(reoffer(config, metrics, session, m.body)?)
        };
        if let Some(a) = &answer {
            leg.sdp = a.clone().into();
        }
        leg.dialog.refresh_target(m);
        Ok((answer, leg.peer))
    }

    /// An ACK with a To tag that is not for a call the gateway answered:
    /// for our 2xx to a far end's re-INVITE. `true` if it was one.
    pub(super) fn far_end_acked(&mut self, m: &Message<'_>, call_id: &[u8]) -> bool {
        let leg = match self.owner(m, call_id) {
            Some(Owner::Bridge(a_id)) => self
                .calls
                .get_mut(&a_id)
                .and_then(|c| c.bridge.as_deref_mut()),
            Some(Owner::AgentOut(call)) => self.agent_out.get_mut(&call).map(|o| &mut *o.leg),
            _ => None,
        };
        leg.map(|l| l.ok = None).is_some()
    }

    /// Resends the 2xx to far ends' re-INVITEs until their ACK; a leg
    /// whose ACK never came ends its call, as a call the gateway answered
    /// does (RFC 3261 13.3.1.4).
    pub(super) fn far_end_oks_due(&mut self, now: Instant) {
        let t2 = self.timers.t2;
        let mut resend: Vec<Transmit> = Vec::new();
        let mut lost_bridges = Vec::new();
        let mut lost_outs = Vec::new();
        let legs = self
            .calls
            .iter_mut()
            .filter_map(|(id, c)| Some((Owner::Bridge(id.clone()), c.bridge.as_deref_mut()?)))
            .chain(
                self.agent_out
                    .iter_mut()
                    .map(|(call, o)| (Owner::AgentOut(*call), &mut *o.leg)),
            );
        for (owner, leg) in legs {
            let Some(ok) = leg.ok.as_mut() else { continue };
            match ok.due(now, t2) {
                Ok(true) if !leg.peer.reliable => resend.push(Transmit {
                    peer: leg.peer,
                    bytes: ok.bytes.clone(),
                }),
                Ok(_) => {}
                Err(_) => {
                    leg.ok = None;
                    match owner {
                        Owner::Bridge(id) => lost_bridges.push(id),
                        Owner::AgentOut(call) => lost_outs.push(call),
                        Owner::Inbound(_) => {}
                    }
                }
            }
        }
        for t in &resend {
            self.transport.send(t);
            self.ok_retransmissions += 1;
        }
        for id in lost_bridges {
            tracing::warn!("no ACK from the far end for a 200 OK within 64*T1: hanging up");
            self.send_bye(&id, now);
            self.hang_up_far_end(&id, now);
            self.end_call(&id, "failed");
        }
        for call in lost_outs {
            tracing::warn!("no ACK from the far end for a 200 OK within 64*T1: hanging up");
            self.hang_up_out(call, "failed", Some("failed"), now);
        }
    }

    /// When a far end's 2xx next needs resending.
    pub(super) fn far_end_ok_deadline(&self) -> Option<Instant> {
        let bridges = self
            .calls
            .values()
            .filter_map(|c| c.bridge.as_ref()?.ok.as_ref());
        let outs = self.agent_out.values().filter_map(|o| o.leg.ok.as_ref());
        bridges.chain(outs).map(Resend2xx::deadline).min()
    }
}
