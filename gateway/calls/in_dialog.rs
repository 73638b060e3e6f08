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
//! leg. Our SDES key goes back only over TLS (or to a trunk that accepts
//! keys in clear), judged by the transport the request came on. A
//! re-INVITE without SDP (a refresh by some carriers, or a resume) gets
//! our current SDP as the offer, and the answer in its ACK moves, holds or
//! resumes the media by the same rule; an answer that cannot be taken
//! ends the call with BYE (RFC 3261 13.3.1.4).
//!
//! Session timers (RFC 4028) are negotiated again by every refresh, on
//! any dialog: what the request asks is granted (422 below 90 s), with the
//! refresher it names, and a refresh without `Session-Expires` turns the
//! timer off. [`super::refresh`] runs the timers.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::info;

use super::core::{ok_headers, CallRef, Core, LegKey, Reply, State, MAX_CALL_BYTES};
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
use crate::sip::transaction::{Key, Peer};

/// Whose dialog a request is in.
enum Owner {
    /// A dialog of ours: the caller's (even while it rings), or a placed
    /// leg the far end answered.
    Leg(LegKey),
    /// A leg the gateway placed that is not answered yet (an early
    /// dialog): its offers wait (491) until it is.
    Early,
}

/// One leg's negotiated media, as a mid-dialog offer may change it.
pub(super) struct Session<'a> {
    pub(super) n: u64,
    /// The dialog's peer (whose trunk's rules apply).
    pub(super) peer: Peer,
    /// Whether the gateway placed this leg (a far end's answer to an
    /// address its trunk may not send to waits for media from there, as
    /// in [`super::outbound::Bridge::answer_leg`], instead of a 488).
    pub(super) placed: bool,
    pub(super) local: &'a mut Local,
    /// SDES keys in use: (the peer's, ours).
    pub(super) sdes: &'a mut Option<(MasterKey, MasterKey)>,
    pub(super) media_ip: &'a mut IpAddr,
    /// The media task's control, once media runs.
    pub(super) media: Option<&'a mpsc::Sender<Control>>,
    /// Whether the SDP is the peer's answer to our offer (in an ACK), not
    /// an offer: our session version stays, since our SDP did not change.
    pub(super) answer: bool,
}

/// A refused offer: the status and reason to answer with.
type Refused = (u16, &'static str);

const NOT_ACCEPTABLE: Refused = (488, "Not Acceptable Here");
/// The dialog ended while its request was being handled.
const GONE: Refused = (481, "Call/Transaction Does Not Exist");

/// Whether our SDES key may go back to a request that came from `from`:
/// over TLS, or to a trunk that accepts keys in clear.
fn key_may_go(config: &Config, from: Peer) -> bool {
    from.tls
        || config
            .trunk_for(from.addr.ip())
            .and_then(|t| config.trunks.get(t))
            .is_some_and(|t| t.sdes_in_clear)
}

/// Answers the offer in `body`, which came from `from`, on leg `s`:
/// returns our SDP answer, the media task told of the change.
pub(super) fn reoffer(
    config: &Config,
    metrics: &crate::telemetry::metrics::Metrics,
    s: Session<'_>,
    from: Peer,
    body: &[u8],
) -> Result<Vec<u8>, Refused> {
    if s.sdes.is_some() && !key_may_go(config, from) {
        return Err(NOT_ACCEPTABLE);
    }
    // Our SDES key stays the one the media seals with; a call without
    // SRTP stays without (its media task has no keys to change).
    let offer = Sdp::parse(body).map_err(|_| NOT_ACCEPTABLE)?;
    let mut local = s.local.clone();
    if !s.answer {
        local.session_version += 1;
    }
    if s.sdes.is_none() {
        local.srtp = SrtpMode::Off;
    }
    let mut neg = sdp::answer_keeping(&offer, &local, s.sdes.as_ref().map(|(_, ours)| ours))
        .map_err(|_| NOT_ACCEPTABLE)?;
    // A new media address must be of a scope the trunk allows; an
    // unspecified one is the old form of hold (nothing is sent there).
    let ip = neg.remote.ip();
    let mut confirm = !ip.is_unspecified();
    if confirm {
        if let Some(why) = config.media_refused(s.peer.addr.ip(), ip) {
            if !s.placed {
                info!(
                    call = s.n,
                    refused = why,
                    "new offer's media address refused: 488"
                );
                metrics.sdp_address_refused.with_label_values(&[why]).inc();
                return Err(NOT_ACCEPTABLE);
            }
            info!(
                call = s.n,
                refused = why,
                "the far end's new address may not be sent to before media comes from it"
            );
            confirm = false;
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
    s.local.session_version = local.session_version;
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
        if confirm {
            let _ = m.try_send(Control::Confirmed);
        }
    }
    if s.answer {
        info!(
            call = s.n,
            direction = neg.direction.as_str(),
            "the ACK's answer to our offer taken"
        );
    } else {
        info!(
            call = s.n,
            direction = neg.direction.as_str(),
            "new offer answered"
        );
    }
    Ok(neg.answer)
}

impl super::core::Call {
    /// Its trunk leg's media, for [`reoffer`].
    fn session(&mut self) -> Session<'_> {
        Session {
            n: self.n,
            peer: self.peer,
            placed: false,
            local: &mut self.local,
            sdes: &mut self.sdes,
            media_ip: &mut self.media_ip,
            media: Some(&self.media),
            answer: false,
        }
    }
}

impl super::outbound::Bridge {
    /// This placed leg's media, for [`reoffer`] (call `n`, steered by
    /// `media` once it runs).
    fn session<'a>(&'a mut self, n: u64, media: Option<&'a mpsc::Sender<Control>>) -> Session<'a> {
        Session {
            n,
            peer: self.peer,
            placed: true,
            local: &mut self.local,
            sdes: &mut self.sdes,
            media_ip: &mut self.media_ip,
            media,
            answer: false,
        }
    }
}

/// Applies the answer in `body` (from an ACK, to the offer in our 2xx) to
/// leg `s`; `false` if it cannot be taken. An ACK without SDP changes
/// nothing.
fn take_answer(
    config: &Config,
    metrics: &crate::telemetry::metrics::Metrics,
    s: Session<'_>,
    from: Peer,
    body: &[u8],
) -> bool {
    if body.is_empty() {
        return true;
    }
    let n = s.n;
    let taken = reoffer(config, metrics, Session { answer: true, ..s }, from, body).is_ok();
    if !taken {
        info!(call = n, "the answer in the ACK cannot be taken: BYE");
    }
    taken
}

/// What a refresh request asks of the session timer (RFC 4028 9): `Err`
/// for an interval too small (422), else the timer to run, if any.
fn asked_timer(m: &Message<'_>, now: Instant) -> Result<Option<SessionTimer>, ()> {
    match SessionTimer::from_request(m, now) {
        Asked::TooSmall => Err(()),
        Asked::Timer(t) => Ok(Some(t)),
        Asked::None => Ok(None),
    }
}

impl Core {
    /// Whose dialog `m` (a request with a To tag) is in.
    fn owner(&self, m: &Message<'_>, call_id: &[u8]) -> Option<Owner> {
        let answered = self
            .call_ref(call_id)
            .filter(|h| self.calls.get(h).is_some_and(|c| c.dialog.owns(m)));
        if let Some(h) = answered {
            return Some(Owner::Leg(LegKey::Inbound(h)));
        }
        let placed = |b: &super::outbound::Bridge, owner: Owner| {
            b.dialog
                .owns(m)
                .then_some(if b.answered() { owner } else { Owner::Early })
        };
        if let Some(&a_id) = self.outbound.get(call_id) {
            let b = self.calls.get(&a_id)?.kind.bridge()?;
            return placed(b, Owner::Leg(LegKey::Bridge(a_id)));
        }
        let call = *self.agent_out_ids.get(call_id)?;
        placed(
            &self.agent_out.get(&call)?.leg,
            Owner::Leg(LegKey::AgentOut(call)),
        )
    }

    /// The leg the gateway placed for `owner`, with the call's number
    /// (for logs) and its media's control.
    fn placed(
        &mut self,
        owner: &Owner,
    ) -> Option<(
        u64,
        &mut super::outbound::Bridge,
        Option<mpsc::Sender<Control>>,
    )> {
        match owner {
            Owner::Leg(LegKey::Bridge(a_id)) => {
                let c = self.calls.get_mut(a_id)?;
                let n = c.n;
                let b = c.kind.bridge_mut()?;
                let media = b.far_media.clone();
                Some((n, b, media))
            }
            Owner::Leg(LegKey::AgentOut(call)) => {
                let o = self.agent_out.get_mut(call)?;
                let media = o.media.clone();
                Some((o.n, &mut *o.leg, media))
            }
            Owner::Leg(LegKey::Inbound(_)) | Owner::Early => None,
        }
    }

    /// The leg the gateway placed for `owner`.
    fn placed_leg(&mut self, owner: &Owner) -> Option<&mut super::outbound::Bridge> {
        self.placed(owner).map(|(_, b, _)| b)
    }

    /// A re-INVITE or UPDATE from `from`: to the dialog it is in, else 481.
    pub(super) fn session_request(
        &mut self,
        key: Key,
        from: Peer,
        m: &Message<'_>,
        head: &RequestHead<'_>,
        bytes: &[u8],
        now: Instant,
    ) {
        let update = head.method == Method::Update;
        let owner = self.owner(m, head.call_id);
        if owner.is_none() {
            let r = Reply::new(481, "Call/Transaction Does Not Exist");
            self.respond(&key, m, r, now);
            return;
        }
        // RFC 4028 9: an interval below our minimum earns 422 with Min-SE.
        let Ok(timer) = asked_timer(m, now) else {
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
        let request = Request {
            key,
            from,
            m,
            timer,
            now,
        };
        match owner {
            None => {}
            // A refresh in an early dialog is granted; an offer waits.
            Some(Owner::Early) if update && m.body.is_empty() => {
                let se = request.timer.map(|t| t.session_expires());
                let contact = self.contact_for(from);
                let headers = ok_headers(&contact, se.as_deref());
                if let Some(ok) = build::response(m, 200, "OK", None, &headers, None) {
                    self.txn.respond(&request.key, ok, now);
                }
            }
            Some(Owner::Early) => {
                self.respond(&request.key, m, Reply::new(491, "Request Pending"), now);
            }
            Some(Owner::Leg(LegKey::Inbound(id))) if update => self.update_inbound(request, id),
            Some(Owner::Leg(LegKey::Inbound(id))) => self.reinvite(request, id, bytes),
            Some(owner) => self.far_end_session(request, owner, update),
        }
    }

    /// RFC 3261 12.2.2: a request older than one already seen in call
    /// `call_id`'s dialog gets 500. `true` if `m` is in order.
    fn in_order(&mut self, key: &Key, m: &Message<'_>, call_id: CallRef, now: Instant) -> bool {
        let fresh = self
            .calls
            .get_mut(&call_id)
            .is_some_and(|c| c.dialog.received(m).is_ok());
        if !fresh {
            self.respond(key, m, Reply::new(500, "Server Internal Error"), now);
        }
        fresh
    }

    /// A re-INVITE in one of the calls the gateway answered: the media
    /// moves, holds or re-keys, and the answer goes back in a 2xx resent
    /// until its ACK.
    fn reinvite(&mut self, r: Request<'_, '_>, call_id: CallRef, bytes: &[u8]) {
        let (m, now) = (r.m, r.now);
        match self.calls.get(&call_id).map(|c| c.state) {
            // RFC 3261 14.2: before our final response to the INVITE.
            Some(State::Ringing) => {
                let r500 = Reply::new(500, "Server Internal Error").extra(&[("Retry-After", b"1")]);
                self.respond(&r.key, m, r500, now);
                return;
            }
            // Our 2xx (with our answer) is not ACKed yet.
            Some(State::Answered) => {
                self.respond(&r.key, m, Reply::new(491, "Request Pending"), now);
                return;
            }
            _ => {}
        }
        if !self.in_order(&r.key, m, call_id, now) {
            return;
        }
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        // The new INVITE replaces the kept one: within the calls' budget.
        let grows = bytes.len().saturating_sub(c.invite.len());
        if self.call_bytes + grows > MAX_CALL_BYTES {
            self.respond(&r.key, m, Reply::new(503, "Service Unavailable"), now);
            return;
        }
        let answer = if m.body.is_empty() {
            // Our current SDP is the offer (with our key in it, if any).
            if c.sdes.is_some() && !key_may_go(&self.config, r.from) {
                Err(NOT_ACCEPTABLE)
            } else {
                Ok(c.answer_sdp.to_vec())
            }
        } else {
            reoffer(&self.config, &self.metrics, c.session(), r.from, m.body)
        };
        let answer = match answer {
            Ok(a) => a,
            Err((code, reason)) => {
                self.respond(&r.key, m, Reply::new(code, reason), now);
                return;
            }
        };
        c.offered_in_2xx = m.body.is_empty();
        c.session_timer = r.timer;
        let before = c.held();
        c.answer_sdp = answer.into();
        c.invite = bytes.to_vec().into();
        c.dialog.refresh_target(m);
        let after = c.held();
        self.call_bytes = self.call_bytes.saturating_sub(before) + after;
        c.invite_key = r.key;
        c.invite_from = r.from;
        // Answered again (not a first answer: the media's silence clock
        // keeps running).
        c.state = State::Answered;
        self.answer(call_id, now);
    }

    /// An UPDATE in a call the gateway answered: a session refresh (RFC
    /// 4028) without SDP, or a new offer once the call is answered.
    fn update_inbound(&mut self, r: Request<'_, '_>, call_id: CallRef) {
        let (m, now) = (r.m, r.now);
        if !self.in_order(&r.key, m, call_id, now) {
            return;
        }
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        let answer = if m.body.is_empty() {
            None
        } else if c.state == State::Ringing {
            // RFC 3311 5.2: an offer while we have not answered the
            // INVITE's yet.
            let r500 = Reply::new(500, "Server Internal Error").extra(&[("Retry-After", b"1")]);
            self.respond(&r.key, m, r500, now);
            return;
        } else {
            match reoffer(&self.config, &self.metrics, c.session(), r.from, m.body) {
                Ok(sdp) => Some(sdp),
                Err((code, reason)) => {
                    self.respond(&r.key, m, Reply::new(code, reason), now);
                    return;
                }
            }
        };
        c.session_timer = r.timer;
        let se = c.session_timer.map(|t| t.session_expires());
        let before = c.held();
        if let Some(a) = &answer {
            c.answer_sdp = a.clone().into();
        }
        c.dialog.refresh_target(m);
        let after = c.held();
        self.call_bytes = self.call_bytes.saturating_sub(before) + after;
        let contact = c.contact.clone();
        let headers = ok_headers(&contact, se.as_deref());
        let body = answer.as_deref().map(|a| ("application/sdp", a));
        if let Some(ok) = build::response(m, 200, "OK", None, &headers, body) {
            self.txn.respond(&r.key, ok, now);
        }
    }

    /// A re-INVITE or UPDATE from the far end of a dialog the gateway
    /// started: answered as on a call the gateway answered, its session
    /// timer kept on the leg.
    fn far_end_session(&mut self, r: Request<'_, '_>, owner: Owner, update: bool) {
        let (m, now) = (r.m, r.now);
        let (answer, peer) = match self.far_end_offer(&owner, &r, update) {
            Ok(done) => done,
            Err((code, reason)) => {
                self.respond(&r.key, m, Reply::new(code, reason), now);
                return;
            }
        };
        let contact = self.contact_for(peer);
        let se = r.timer.map(|t| t.session_expires());
        let headers = ok_headers(&contact, se.as_deref());
        let body = answer.as_deref().map(|a| ("application/sdp", a));
        let Some(ok) = build::response(m, 200, "OK", None, &headers, body) else {
            return;
        };
        if !update {
            // The 2xx to an INVITE is ours to resend until its ACK.
            let t1 = self.timers.t1;
            let cseq = m.cseq().and_then(Result::ok).map_or(0, |c| c.seq);
            if let Some(leg) = self.placed_leg(&owner) {
                leg.ok = Some(Resend2xx::new(ok.clone().into(), r.from, cseq, now, t1));
            }
        }
        self.txn.respond(&r.key, ok, now);
    }

    /// The far end's request on the leg of `owner`, judged and applied:
    /// our SDP answer (or offer, for a re-INVITE without SDP; none for an
    /// UPDATE without) and the leg's peer, or the refusal to send.
    fn far_end_offer(
        &mut self,
        owner: &Owner,
        r: &Request<'_, '_>,
        update: bool,
    ) -> Result<(Option<Vec<u8>>, Peer), Refused> {
        let m = r.m;
        let (config, metrics) = (self.config.clone(), self.metrics.clone());
        let (n, leg, media) = self.placed(owner).ok_or(GONE)?;
        if leg.ok.is_some() && !(update && m.body.is_empty()) {
            // Our 2xx to its last re-INVITE (with our offer or answer) is
            // not ACKed yet: an offer waits, a refresh does not.
            return Err((491, "Request Pending"));
        }
        if leg.dialog.received(m).is_err() {
            return Err((500, "Server Internal Error"));
        }
        let answer = if m.body.is_empty() {
            // A refresh: UPDATE without SDP answers without, a re-INVITE
            // without gets our current SDP as the offer.
            if update {
                None
            } else if leg.sdes.is_some() && !key_may_go(&config, r.from) {
                return Err(NOT_ACCEPTABLE);
            } else {
                leg.offered_in_2xx = true;
                Some(leg.sdp.to_vec())
            }
        } else {
            let session = leg.session(n, media.as_ref());
            Some(reoffer(&config, &metrics, session, r.from, m.body)?)
        };
        if let Some(a) = &answer {
            leg.sdp = a.clone().into();
        }
        leg.dialog.refresh_target(m);
        // Like a call we answered: the refresh sets the timer, or turns
        // it off without Session-Expires.
        leg.timer = r.timer;
        Ok((answer, leg.peer))
    }

    /// An ACK with a To tag that is not for a call the gateway answered:
    /// for our 2xx to a far end's re-INVITE (matched by CSeq). `true` if
    /// it was one.
    pub(super) fn far_end_acked(
        &mut self,
        m: &Message<'_>,
        call_id: &[u8],
        from: Peer,
        now: Instant,
    ) -> bool {
        let Some(owner) = self.owner(m, call_id) else {
            return false;
        };
        let Some(leg) = self.placed_leg(&owner) else {
            return false;
        };
        let ours = leg.ok.as_ref().is_some_and(|ok| ok.acked_by(m));
        if ours {
            leg.ok = None;
            if std::mem::take(&mut leg.offered_in_2xx) {
                self.far_end_answer_in_ack(owner, from, m, now);
            }
        }
        ours
    }

    /// The ACK `m` from `from` answers the offer in our 2xx to an
    /// offerless re-INVITE on call `call_id`: the media follows it. `false`
    /// if the answer could not be taken and the call ended.
    pub(super) fn answer_in_ack(
        &mut self,
        call_id: CallRef,
        from: Peer,
        m: &Message<'_>,
        now: Instant,
    ) -> bool {
        let Some(c) = self.calls.get_mut(&call_id) else {
            return false;
        };
        let taken = take_answer(&self.config, &self.metrics, c.session(), from, m.body);
        if !taken {
            self.hang_up(call_id, super::end::EndReason::Failed, now);
        }
        taken
    }

    /// [`Core::answer_in_ack`] for the far end of a leg we placed.
    fn far_end_answer_in_ack(&mut self, owner: Owner, from: Peer, m: &Message<'_>, now: Instant) {
        let (config, metrics) = (self.config.clone(), self.metrics.clone());
        let taken = self.placed(&owner).map(|(n, leg, media)| {
            take_answer(
                &config,
                &metrics,
                leg.session(n, media.as_ref()),
                from,
                m.body,
            )
        });
        if let (Some(false), Owner::Leg(leg)) = (taken, &owner) {
            self.end_leg(leg, super::end::EndReason::Failed, now);
        }
    }
}

/// A re-INVITE or UPDATE being answered.
struct Request<'k, 'm> {
    key: Key,
    /// Where it came from (its transport decides whether our key may go
    /// back, and the 2xx goes there).
    from: Peer,
    m: &'k Message<'m>,
    /// What it asked of the session timer.
    timer: Option<SessionTimer>,
    now: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::srtp::Suite;
    use crate::sip::sdp::{Codec, Direction};
    use crate::telemetry::metrics::Metrics;

    /// A leg's [`Session`] over the test's locals.
    macro_rules! session {
        ($peer:expr, $placed:expr, $l:ident, $sdes:ident, $ip:ident, $tx:ident) => {
            Session {
                n: 1,
                peer: $peer,
                placed: $placed,
                local: &mut $l,
                sdes: &mut $sdes,
                media_ip: &mut $ip,
                media: Some(&$tx),
                answer: false,
            }
        };
    }

    const CONFIG: &str = r#"
[[trunk]]
name = "carrier"
peers = ["192.0.2.0/24"]
srtp = "offered"
[[trunk]]
name = "internet"
peers = ["0.0.0.0/0"]
trusted = false
"#;

    fn local() -> Local {
        Local {
            address: "198.51.100.1".parse().expect("ip"),
            port: 30000,
            codecs: vec![Codec::Pcma],
            srtp: SrtpMode::Offered,
            suites: vec![Suite::AesCm128HmacSha1_80],
            session_id: 7,
            session_version: 3,
        }
    }

    /// An offer from `ip` with `theirs` as its SDES key (if any).
    fn offer(ip: &str, theirs: Option<&MasterKey>, dir: Direction) -> Vec<u8> {
        let mut l = local();
        l.address = ip.parse().expect("ip");
        l.port = 40000;
        let mut out = Vec::new();
        sdp::write_sdp(
            &mut out,
            &l,
            theirs.is_some(),
            &[(Codec::Pcma, 8)],
            None,
            20,
            dir,
            false,
            theirs.map(|k| (1, k)),
        );
        out
    }

    fn peer(ip: &str, tls: bool) -> Peer {
        Peer {
            addr: SocketAddr::new(ip.parse().expect("ip"), 5060),
            reliable: tls,
            tls,
        }
    }

    fn key() -> MasterKey {
        MasterKey::random(Suite::AesCm128HmacSha1_80).expect("key")
    }

    #[test]
    fn our_key_goes_back_only_over_tls_whatever_the_call_started_on() {
        let config = Config::from_toml(CONFIG).expect("config");
        let metrics = Metrics::new().expect("metrics");
        let theirs = key();
        let (tx, mut rx) = mpsc::channel(8);
        let mut l = local();
        let mut sdes = Some((theirs.duplicate(), key()));
        let mut media_ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let body = offer("192.0.2.7", Some(&theirs), Direction::SendOnly);
        // The call started over TLS; this re-INVITE came over UDP.
        let dialog_peer = peer("192.0.2.7", true);
        let over_udp = reoffer(
            &config,
            &metrics,
            session!(dialog_peer, false, l, sdes, media_ip, tx),
            peer("192.0.2.7", false),
            &body,
        );
        assert_eq!(over_udp, Err(NOT_ACCEPTABLE));
        let over_tls = reoffer(
            &config,
            &metrics,
            session!(dialog_peer, false, l, sdes, media_ip, tx),
            peer("192.0.2.7", true),
            &body,
        )
        .expect("answered over TLS");
        let text = String::from_utf8(over_tls).expect("text");
        assert!(
            text.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80"),
            "{text}"
        );
        assert!(text.contains("a=recvonly"), "{text}");
        // Only the accepted offer bumped our SDP's version.
        assert_eq!(l.session_version, 4);
        assert!(matches!(
            rx.try_recv(),
            Ok(Control::Update { send: false, .. })
        ));
        assert!(matches!(rx.try_recv(), Ok(Control::Confirmed)));
    }

    #[test]
    fn a_placed_leg_waits_for_media_from_an_address_its_trunk_may_not_send_to() {
        let config = Config::from_toml(CONFIG).expect("config");
        let metrics = Metrics::new().expect("metrics");
        let (tx, mut rx) = mpsc::channel(8);
        let mut l = local();
        l.srtp = SrtpMode::Off;
        let mut sdes = None;
        let mut media_ip: IpAddr = "203.0.113.9".parse().expect("ip");
        // An untrusted peer's SDP naming another host than itself.
        let body = offer("203.0.113.50", None, Direction::SendRecv);
        let dialog_peer = peer("203.0.113.9", false);
        let from = peer("203.0.113.9", false);
        // On a call it answered, the gateway refuses such an offer...
        assert_eq!(
            reoffer(
                &config,
                &metrics,
                session!(dialog_peer, false, l, sdes, media_ip, tx),
                from,
                &body
            ),
            Err(NOT_ACCEPTABLE)
        );
        assert!(rx.try_recv().is_err(), "nothing changed");
        // ... on a leg it placed, as for the far end's first answer, media
        // goes there only once some came from there.
        reoffer(
            &config,
            &metrics,
            session!(dialog_peer, true, l, sdes, media_ip, tx),
            from,
            &body,
        )
        .expect("answered");
        assert!(matches!(
            rx.try_recv(),
            Ok(Control::Update { send: true, .. })
        ));
        assert!(rx.try_recv().is_err(), "not confirmed");
        assert_eq!(media_ip, "203.0.113.50".parse::<IpAddr>().expect("ip"));
    }
}
