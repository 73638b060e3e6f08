//! New calls from a trunk: the number is normalized and routed, the offer
//! answered on a port of ours, and the call handed to a test service's
//! media or to an outbound leg ([`super::outbound`]).

use crate::number::PhoneNumber;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::call::CallKind;
use super::core::{set_nonblocking, Call, CallRef, Core, Reply, State, MAX_CALLS, MAX_CALL_BYTES};
use super::media::{MediaSetup, Service};
use super::number::normalize;
use super::tasks::MediaTask;
use crate::config::Target;
use crate::media::leg::Leg;
use crate::media::srtp::{SrtpConfig, SrtpReceiver, SrtpSender, Suite};
use crate::sip::check::RequestHead;
use crate::sip::dialog::Dialog;
use crate::sip::message::Message;
use crate::sip::sdp::{self, Codec, Local, Sdp};
use crate::sip::transaction::{Key, Peer};
use crate::sip::uri::Uri;

impl Core {
    pub(super) fn new_call(
        &mut self,
        key: Key,
        peer: Peer,
        m: &Message<'_>,
        head: &RequestHead<'_>,
        bytes: &[u8],
        now: Instant,
    ) {
        let trunk_ix = self.config.trunk_for(peer.addr.ip()).unwrap_or(0);
        let trunk = self.config.trunks.get(trunk_ix).cloned();
        let user = match &head.uri {
            Uri::Sip(u) => u.user.map(|u| String::from_utf8_lossy(u).into_owned()),
            Uri::Other { rest, .. } => Some(String::from_utf8_lossy(rest).into_owned()),
        }
        .unwrap_or_default();
        let cc = trunk.as_ref().and_then(|t| t.country_code.as_deref());
        let normalized = normalize(&user, cc);
        let id =
            crate::sip::privacy::caller_id(m, &head.from, self.config.trusted_peer(peer.addr.ip()));
        let number = |u: &[u8]| {
            Some(normalize(&String::from_utf8_lossy(u), cc))
                .filter(|u| u.bytes().all(|b| b.is_ascii_digit() || b == b'+'))
        };
        let caller = if id.withheld {
            PhoneNumber::withheld(id.asserted.and_then(number))
        } else {
            PhoneNumber::new(
                id.from
                    .and_then(number)
                    .unwrap_or_else(|| "anonymous".into()),
            )
        };
        self.records.new = self
            .records
            .begin(
                head.call_id,
                crate::cdr::record::Direction::Inbound,
                "",
                &normalized,
                now,
            )
            .map(|mut c| {
                c.record.trunk = trunk.as_ref().map(|t| t.name.clone());
                c.record.caller = caller.clone();
                c
            });
        // A test service answers only its test peers: to anyone else the
        // number does not exist.
        let route = self
            .config
            .exact_route(&user)
            .or_else(|| self.config.route(&normalized))
            .filter(|r| r.admits(peer.addr.ip()))
            .cloned();
        self.calls_started += 1;
        let n = self.calls_started;
        let session_timer = match crate::sip::timer::SessionTimer::from_request(m, now) {
            crate::sip::timer::Asked::TooSmall => {
                let tag = self.tokens.token();
                let min_se = crate::sip::timer::MIN_SE.to_string();
                self.respond(
                    &key,
                    m,
                    Reply::new(422, "Session Interval Too Small")
                        .tag(tag.as_bytes())
                        .extra(&[("Min-SE", min_se.as_bytes())]),
                    now,
                );
                self.metrics
                    .calls_total
                    .with_label_values(&["rejected"])
                    .inc();
                return;
            }
            crate::sip::timer::Asked::Timer(t) => Some(t),
            crate::sip::timer::Asked::None => None,
        };
        let Some(route) = route else {
            info!(call = n, number = %self.config.mask.apply(&normalized), "no route: 404");
            self.guard
                .refused_user(peer.addr.ip(), normalized.as_bytes(), now);
            self.reject_call(&key, m, 404, "Not Found", now);
            return;
        };
        let (service, out_trunk, to_agent) = match &route.target {
            Target::Echo => (Some(Service::Echo), None, None),
            Target::Tone => (Some(Service::Tone), None, None),
            Target::Trunk(id) => {
                let t = self.config.trunk_index(id).filter(|&t| self.trunk_is_up(t));
                let Some(t) = t else {
                    info!(call = n, "outbound trunk down: 503");
                    self.reject_call(&key, m, 503, "Service Unavailable", now);
                    return;
                };
                (None, Some(t), None)
            }
            target @ (Target::Queue(_) | Target::Agent(_)) => {
                if super::agents::pick(&self.agents, &self.config, target, &[]).is_none() {
                    info!(call = n, "no agent available: 480");
                    self.metrics
                        .agent_calls
                        .with_label_values(&["inbound", "no_answer"])
                        .inc();
                    self.reject_call(&key, m, 480, "Temporarily Unavailable", now);
                    return;
                }
                (None, None, Some(target.clone()))
            }
        };
        if self.calls.len() >= MAX_CALLS
            || self.call_bytes + bytes.len() > MAX_CALL_BYTES
            || self.trunk_full(trunk_ix)
            || out_trunk.is_some_and(|t| self.trunk_full(t))
        {
            info!(
                call = n,
                "no call slot (the gateway's or a trunk's max_calls): 503"
            );
            self.reject_call(&key, m, 503, "Service Unavailable", now);
            return;
        }
        let Ok(offer) = Sdp::parse(m.body) else {
            self.reject_call(
                &key,
                m,
                if m.body.is_empty() { 488 } else { 400 },
                if m.body.is_empty() {
                    "Not Acceptable Here"
                } else {
                    "Bad Request"
                },
                now,
            );
            return;
        };
        let mux = offer.audio().is_some_and(|a| a.rtcp_mux());
        let Some(bound) = self.ports.bind(self.media_ip, mux, self.tokens.u32()) else {
            warn!(call = n, "no free RTP port: 503");
            self.reject_call(&key, m, 503, "Service Unavailable", now);
            return;
        };
        let port = bound.lease.port();
        let codecs = match (service, trunk.as_ref()) {
            // Agents take G.711 (the softphone encodes it itself).
            (None, t) if to_agent.is_some() => t
                .map_or(&[Codec::Pcmu, Codec::Pcma][..], |t| &t.codecs[..])
                .iter()
                .copied()
                .filter(|c| matches!(c, Codec::Pcmu | Codec::Pcma))
                .collect(),
            // Bridged: codecs the outbound trunk takes, in its order, among
            // those of the inbound trunk (no transcoding).
            (None, inbound) => {
                let out = &self.config.trunks[out_trunk.unwrap_or(0)].codecs;
                out.iter()
                    .copied()
                    .filter(|c| inbound.is_none_or(|t| t.codecs.contains(c)))
                    .collect()
            }
            // The tone is generated in G.711 only.
            (Some(Service::Tone), Some(t)) => t
                .codecs
                .iter()
                .copied()
                .filter(|c| *c != Codec::G722)
                .collect(),
            (Some(Service::Tone), None) => vec![Codec::Pcmu, Codec::Pcma],
            (Some(Service::Echo), Some(t)) => t.codecs.clone(),
            (Some(Service::Echo), None) => vec![Codec::Pcmu, Codec::Pcma, Codec::G722],
        };
        // SDES only over TLS (or where the operator accepted keys in
        // clear): an offer over UDP or TCP is answered without it, and a
        // trunk that requires SRTP refuses it.
        let Some(srtp_mode) = trunk
            .as_ref()
            .map_or(Some(sdp::SrtpMode::Off), |t| t.srtp_over(peer.tls))
        else {
            info!(
                call = n,
                "SRTP required but the key would cross in clear: 488"
            );
            self.reject_call(&key, m, 488, "Not Acceptable Here", now);
            return;
        };
        let local = Local {
            address: self.config.public_address,
            port,
            codecs: if codecs.is_empty() {
                vec![Codec::Pcmu, Codec::Pcma]
            } else {
                codecs
            },
            srtp: srtp_mode,
            suites: vec![Suite::AesCm128HmacSha1_80, Suite::AeadAes128Gcm],
            session_id: u64::from(self.tokens.u32()),
            session_version: 1,
        };
        let neg = match sdp::answer(&offer, &local) {
            Ok(n) => n,
            Err(e) => {
                debug!(call = n, "offer refused: {e}");
                self.reject_call(&key, m, 488, "Not Acceptable Here", now);
                return;
            }
        };
        // The offer's media address must be of a scope the trunk allows:
        // never our own loopback, a multicast group or (unless the trunk
        // is on a private network) a private host.
        if let Some(why) = self.config.media_refused(peer.addr.ip(), neg.remote.ip()) {
            info!(
                call = n,
                refused = why,
                "offer's media address refused: 488"
            );
            self.metrics
                .sdp_address_refused
                .with_label_values(&[why])
                .inc();
            self.reject_call_with(
                &key,
                m,
                (488, "Not Acceptable Here"),
                &[("Warning", b"305 tollgate \"media address not allowed\"")],
                now,
            );
            return;
        }
        let srtp = match &neg.srtp {
            Some((theirs, ours)) => {
                let cfg = SrtpConfig::default();
                match (SrtpReceiver::new(theirs, cfg), SrtpSender::new(ours, cfg)) {
                    (Ok(rx), Ok(tx)) => Some((rx, tx)),
                    _ => {
                        self.reject_call(&key, m, 488, "Not Acceptable Here", now);
                        return;
                    }
                }
            }
            None => None,
        };
        let (Ok(rtp), rtcp) = (
            set_nonblocking(bound.rtp).and_then(tokio::net::UdpSocket::from_std),
            bound
                .rtcp
                .map(|s| set_nonblocking(s).and_then(tokio::net::UdpSocket::from_std)),
        ) else {
            self.reject_call(&key, m, 503, "Service Unavailable", now);
            return;
        };
        let rtcp = match rtcp {
            Some(Ok(s)) => Some(s),
            Some(Err(_)) => {
                self.reject_call(&key, m, 503, "Service Unavailable", now);
                return;
            }
            None => None,
        };
        let remote_rtcp = if neg.rtcp_mux {
            neg.remote
        } else {
            SocketAddr::new(neg.remote.ip(), neg.remote.port().wrapping_add(1))
        };
        let leg = Leg::new(
            neg.remote,
            8000,
            self.tokens.u32(),
            self.tokens.u32() as u16,
            srtp,
        );
        let lease = bound.lease;
        let (ctl_tx, ctl_rx) = mpsc::channel(4);
        let kind = if let Some(target) = to_agent {
            self.agent_calls_started += 1;
            CallKind::Agent(Box::new(super::agents::AgentLeg {
                call: self.agent_calls_started,
                target,
                session: None,
                tried: Vec::new(),
                offer_until: None,
                answered: false,
                caller: caller.clone(),
                callee: PhoneNumber::new(normalized.clone()),
                codec: neg.codec,
                pt: neg.pt,
                ptime: neg.ptime,
                dtmf_pt: neg.dtmf_pt,
                key: None,
                pending: Some(super::agents::PendingMedia {
                    rtp,
                    rtcp,
                    leg,
                    remote_rtcp,
                    send: neg.direction.sends(),
                    control: ctl_rx,
                    lease,
                }),
            }))
        } else {
            match (service, out_trunk) {
                (Some(service), _) => {
                    let setup = MediaSetup {
                        rtp,
                        rtcp,
                        leg,
                        remote_rtcp,
                        service,
                        codec: neg.codec,
                        pt: neg.pt,
                        ptime: neg.ptime,
                        send: neg.direction.sends(),
                        timeout: self
                            .media_timeout(super::agent_media::MediaEnded::Call(CallRef(n))),
                        lease,
                    };
                    let report = self
                        .records
                        .reporter(self.records.new.as_ref().map(|c| c.id));
                    self.out
                        .push_back(super::core::Output::StartMedia(MediaTask::Service {
                            setup: Box::new(setup),
                            control: ctl_rx,
                            report,
                        }));
                    CallKind::Service(service)
                }
                (None, t) => {
                    let out = super::outbound::Outgoing {
                        trunk: t.unwrap_or(0),
                        number: &normalized,
                        caller: &caller,
                        neg: &neg,
                        side_a: super::bridge::Side {
                            rtp,
                            rtcp,
                            leg,
                            remote_rtcp,
                            send: neg.direction.sends(),
                            lease,
                        },
                        control: ctl_rx,
                        max_forwards: head.max_forwards.unwrap_or(70).saturating_sub(1),
                    };
                    match self.start_outbound(out, now) {
                        Some(b) => CallKind::Bridge(b),
                        None => {
                            self.reject_call(&key, m, 503, "Service Unavailable", now);
                            return;
                        }
                    }
                }
            }
        };

        let local_tag = self.tokens.token();
        let dialog = Dialog::answering(m, local_tag.as_bytes());
        let contact = self.contact_for(peer);
        info!(call = n, number = %self.config.mask.apply(&normalized), service = ?service, codec = neg.codec.name(), srtp = neg.srtp.is_some(), "call");
        self.metrics.calls_active.inc();
        let call = Call {
            n,
            peer,
            invite_from: peer,
            invite_key: key.clone(),
            invite: bytes.to_vec().into(),
            dialog,
            contact,
            state: State::Ringing,
            answer_at: None,
            hangup_after: route.hangup,
            hangup_at: None,
            ok: None,
            local,
            answer_sdp: neg.answer.into(),
            sdes: None,
            media_ip: neg.remote.ip(),
            media: ctl_tx,
            kind,
            session_timer,
            offered_in_2xx: false,
            record: self.records.new.take().map(|mut c| {
                c.record.codec = Some(neg.codec.name().to_string());
                // What the leg really had: a key sent in clear signalling
                // is said so.
                c.record.srtp.push((
                    "trunk".into(),
                    neg.srtp.as_ref().map_or("none".into(), |s| {
                        crate::cdr::record::trunk_srtp(s.0.suite().sdes_name(), peer.tls)
                    }),
                ));
                c
            }),
            on_trunks: Vec::new(),
        };
        let mut call = call;
        call.sdes = neg.srtp;
        call.on_trunks = [Some(trunk_ix), out_trunk]
            .into_iter()
            .flatten()
            .filter_map(|t| self.take_trunk_slot(t))
            .collect();
        let call_id = CallRef(n);
        let (bridged, to_agent) = match &call.kind {
            CallKind::Bridge(b) => {
                self.outbound.insert(b.dialog.call_id.clone(), call_id);
                self.placed
                    .insert(b.key.clone(), super::core::Placed::Bridge(call_id));
                (true, false)
            }
            CallKind::Agent(a) => {
                self.by_agent_call.insert(a.call, call_id);
                (false, true)
            }
            CallKind::Service(_) => (false, false),
        };
        self.call_bytes += call.held();
        self.call_ids.insert(head.call_id.to_vec(), call_id);
        self.calls.insert(call_id, call);
        if bridged {
            // The far end's answer answers the caller.
        } else if to_agent {
            let contact = self.calls[&call_id].contact.clone();
            self.respond(
                &key,
                m,
                Reply::new(180, "Ringing")
                    .tag(local_tag.as_bytes())
                    .extra(&[("Contact", &contact)]),
                now,
            );
            self.offer_call(call_id, now);
        } else if route.ring.is_zero() {
            self.answer(call_id, now);
        } else {
            let contact = self.calls[&call_id].contact.clone();
            self.respond(
                &key,
                m,
                Reply::new(180, "Ringing")
                    .tag(local_tag.as_bytes())
                    .extra(&[("Contact", &contact)]),
                now,
            );
            if let Some(c) = self.calls.get_mut(&call_id) {
                c.answer_at = Some(now + route.ring);
            }
        }
    }

    pub(super) fn reject_call(
        &mut self,
        key: &Key,
        m: &Message<'_>,
        code: u16,
        reason: &str,
        now: Instant,
    ) {
        self.reject_call_with(key, m, (code, reason), &[], now);
    }

    /// [`Core::reject_call`] with `extra` headers.
    pub(super) fn reject_call_with(
        &mut self,
        key: &Key,
        m: &Message<'_>,
        (code, reason): (u16, &str),
        extra: &[(&str, &[u8])],
        now: Instant,
    ) {
        let tag = self.tokens.token();
        self.respond(
            key,
            m,
            Reply::new(code, reason).tag(tag.as_bytes()).extra(extra),
            now,
        );
        self.metrics
            .calls_total
            .with_label_values(&["rejected"])
            .inc();
    }
}
