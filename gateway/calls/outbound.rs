//! Calls routed out another trunk (`trunk:NAME`): the gateway is a
//! back-to-back user agent. The outbound leg is a new dialog of its own
//! (new Call-ID, tags, Via, Contact and SDP, all the gateway's), so the far
//! end never sees the caller's addresses, Call-ID or Via, and media is
//! terminated on each leg ([`super::bridge`]).
//!
//! The outbound leg offers exactly the codec chosen on the inbound leg (no
//! transcoding); 180 and 183 are relayed, early media included; the far
//! end's 200 is ACKed and answers the caller; a failure is relayed with its
//! status; BYE and CANCEL cross from either side.

use std::net::IpAddr;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::info;

use super::bridge::Side;
use super::core::{CallRef, Core, Output, Placed, Reply, State};
use super::end::EndReason;
use super::media::Control;
use super::ports::Bound;
use super::tasks::MediaTask;
use crate::media::leg::Leg;
use crate::media::srtp::{MasterKey, SrtpConfig, SrtpReceiver, SrtpSender, Suite};
use crate::sip::build::{self, RequestSpec};
use crate::sip::dialog::{self, Dialog, Resend2xx};
use crate::sip::message::{Framing, Message};
use crate::sip::sdp::{self, Direction, Local, Negotiated, Sdp, SrtpMode};
use crate::sip::transaction::{Key, Peer, Transmit};
use crate::sip::WipedBytes;

/// The outbound leg of a bridged call.
pub(super) struct Bridge {
    /// The dialog: its target, tags and route set once the far end answers.
    pub(super) dialog: Dialog,
    /// Our INVITE's Request-URI and To (for a CANCEL).
    pub(super) uri: Vec<u8>,
    pub(super) to: Vec<u8>,
    pub(super) key: Key,
    pub(super) peer: Peer,
    /// The Via transport name for this leg's requests.
    pub(super) transport: &'static str,
    /// The ACK sent for the far end's 2xx (resent if the 2xx is).
    pub(super) ack: Option<Vec<u8>>,
    /// SRTP key we offered on this leg (SRTP-required trunks).
    pub(super) our_key: Option<MasterKey>,
    /// The media waiting for the far end's SDP.
    pub(super) pending: Option<(Side, Bound, mpsc::Receiver<Control>)>,
    /// Whether a 180/183 was relayed to the caller.
    pub(super) ringing: bool,
    /// Our SDP on this leg (the offer, then our latest answer), the
    /// session it describes, and the far end's SDES key with ours.
    pub(super) sdp: WipedBytes,
    pub(super) local: Local,
    pub(super) sdes: Option<(MasterKey, MasterKey)>,
    /// Where the far end's SDP asks media to go.
    pub(super) media_ip: IpAddr,
    /// Steers this leg's side of the bridge's media, once it runs.
    pub(super) far_media: Option<mpsc::Sender<Control>>,
    /// Our 2xx to the far end's re-INVITE, resent until its ACK.
    pub(super) ok: Option<Resend2xx>,
    /// Whether our 2xx in flight carries an offer (to a re-INVITE without
    /// SDP), which the far end's ACK answers.
    pub(super) offered_in_2xx: bool,
    /// The session timer (RFC 4028) its 2xx or its refreshes set.
    pub(super) timer: Option<crate::sip::timer::SessionTimer>,
}

/// Sockets for a tokio task.
pub(super) fn to_tokio(
    rtp: std::net::UdpSocket,
    rtcp: Option<std::net::UdpSocket>,
) -> Option<(tokio::net::UdpSocket, Option<tokio::net::UdpSocket>)> {
    let conv = |s: std::net::UdpSocket| {
        s.set_nonblocking(true)
            .and_then(|()| tokio::net::UdpSocket::from_std(s))
            .ok()
    };
    let rtp = conv(rtp)?;
    Some((rtp, rtcp.and_then(conv)))
}

impl Bridge {
    /// Whether the far end answered (its 2xx made the dialog).
    pub(super) fn answered(&self) -> bool {
        self.dialog.established
    }

    /// Whether this leg requires SRTP (we offered a key: the trunk says
    /// `srtp = "required"`) and the far end has not answered with a key
    /// we can use. Such a leg never carries media in clear: its answer
    /// keys nothing ([`Self::answer_leg`]) and a 2xx without a usable key
    /// ends the call.
    pub(super) fn srtp_unmet(&self) -> bool {
        self.our_key.is_some() && self.sdes.is_none()
    }

    /// The record's text for this leg's media, once it runs
    /// ([`crate::cdr::record::trunk_srtp`]).
    pub(super) fn srtp_text(&self) -> String {
        match &self.sdes {
            Some((k, _)) => crate::cdr::record::trunk_srtp(k.suite().sdes_name(), self.peer.tls),
            None => "none".into(),
        }
    }

    /// This leg's media from the far end's SDP answer (in a 183 or 200):
    /// the leg (SDES SRTP keyed when we offered it), where its RTCP goes,
    /// and whether we may send. The answer to our own INVITE (matched by
    /// our branch) proves the trunk's address, so the leg may send at once
    /// if `config`'s trunk for this peer allows the answer's address scope;
    /// if not, it sends only once valid media came from that address.
    pub(super) fn answer_leg(
        &mut self,
        m: &Message<'_>,
        config: &crate::config::Config,
        (ssrc, seq): (u32, u16),
    ) -> Option<(Leg, std::net::SocketAddr, bool)> {
        let answer = Sdp::parse(m.body).ok()?;
        let audio = answer.audio()?;
        let ip = audio.connection.or(answer.connection)?;
        let remote = std::net::SocketAddr::new(ip, audio.port);
        // Only an answer to the key we offered (tag 1), with nothing we do
        // not support (lifetime, MKI, session parameters such as
        // UNENCRYPTED_SRTP), keys the leg.
        let srtp = match (
            &self.our_key,
            audio.cryptos().find(|c| c.tag == 1 && !c.extras),
        ) {
            (Some(ours), Some(theirs)) => {
                let cfg = SrtpConfig::default();
                match theirs.master_key(&[ours.suite()]) {
                    Ok(k) => match (SrtpReceiver::new(&k, cfg), SrtpSender::new(ours, cfg)) {
                        (Ok(rx), Ok(tx)) => {
                            self.sdes = Some((k, ours.duplicate()));
                            Some((rx, tx))
                        }
                        _ => None,
                    },
                    Err(_) => None,
                }
            }
            _ => None,
        };
        // A trunk that requires SRTP: no key, no media (never plain RTP).
        if self.our_key.is_some() && srtp.is_none() {
            tracing::info!(
                "the far end's answer has no usable SRTP key for a trunk that requires SRTP"
            );
            return None;
        }
        self.media_ip = ip;
        let dir = answer.direction(audio);
        let mut leg = Leg::new(remote, 8000, ssrc, seq, srtp);
        // The same rule as for offers (`Config::media_refused`); an
        // answer is not refused, it waits for media from that address.
        match config.media_refused(self.peer.addr.ip(), ip) {
            None => leg.confirm(),
            Some(why) => tracing::info!(
                refused = why,
                "the far end's answer names a media address its trunk may not send to: sending only after media comes from it"
            ),
        }
        Some((
            leg,
            std::net::SocketAddr::new(ip, audio.port.wrapping_add(1)),
            dir.receives() || dir == Direction::SendRecv,
        ))
    }

    /// The far end's 2xx: its tag, Contact and Record-Route (reversed)
    /// complete the dialog (the first time); returns the ACK to send
    /// (again, for a resent 2xx), routed as the dialog's requests are.
    pub(super) fn answered_by(
        &mut self,
        m: &Message<'_>,
        via: std::net::SocketAddr,
        branch: &str,
        now: Instant,
    ) -> Vec<u8> {
        if !self.answered() {
            self.dialog.answered_by(m);
            self.timer = crate::sip::timer::SessionTimer::from_answer(m, now);
            // The ACK takes the INVITE's CSeq number (RFC 3261 13.2.2.4).
            self.ack = Some(self.dialog.request(&dialog::Request {
                method: "ACK",
                cseq: 1,
                via,
                transport: self.transport,
                branch: branch.as_bytes(),
                extra: &[],
                body: None,
            }));
        }
        self.ack.clone().unwrap_or_default()
    }

    /// BYE if answered (in the dialog, with its route set), else CANCEL
    /// (RFC 3261 9.1: the INVITE's Request-URI, branch, From, To, Call-ID
    /// and CSeq number).
    pub(super) fn hangup_request(&mut self, via: std::net::SocketAddr, branch: &str) -> Vec<u8> {
        if self.answered() {
            let cseq = self.dialog.next_cseq();
            self.dialog.request(&dialog::Request {
                method: "BYE",
                cseq,
                via,
                transport: self.transport,
                branch: branch.as_bytes(),
                extra: &[],
                body: None,
            })
        } else {
            build::request(&RequestSpec {
                method: "CANCEL",
                uri: &self.uri,
                via,
                transport: self.transport,
                branch: &self.key.branch,
                from: &self.dialog.local,
                to: &self.to,
                call_id: &self.dialog.call_id,
                cseq: 1,
                extra: &[],
                body: None,
            })
        }
    }
}

/// A call to place out a trunk.
pub(super) struct Dial<'a> {
    pub(super) trunk: usize,
    pub(super) number: &'a str,
    pub(super) caller: &'a str,
    /// Withhold `caller` from the called party (RFC 3323 `Privacy: id`,
    /// an anonymous From); a trusted trunk (the carrier) still gets it in
    /// P-Asserted-Identity (RFC 3325) for emergency and legal use, an
    /// untrusted one does not.
    pub(super) withhold: bool,
    /// The one codec offered, with its payload type.
    pub(super) codec: (crate::sip::sdp::Codec, u8),
    pub(super) dtmf_pt: Option<u8>,
    pub(super) ptime: u16,
    pub(super) max_forwards: u8,
}

/// What the inbound side hands over to start the outbound leg.
pub(super) struct Outgoing<'a> {
    pub(super) trunk: usize,
    pub(super) number: &'a str,
    /// The caller, withheld onwards if they withheld it from us.
    pub(super) caller: &'a crate::number::PhoneNumber,
    pub(super) neg: &'a Negotiated,
    pub(super) side_a: Side,
    pub(super) control: mpsc::Receiver<Control>,
    pub(super) max_forwards: u8,
}

impl Core {
    /// Binds the outbound leg's port, offers the inbound leg's codec to the
    /// trunk and sends the INVITE. `None` if no port is free (or, on a
    /// trunk that requires SRTP, no key could be made).
    pub(super) fn start_outbound(&mut self, o: Outgoing<'_>, now: Instant) -> Option<Box<Bridge>> {
        let (mut b, bound) = self.invite_out(
            &Dial {
                trunk: o.trunk,
                number: o.number,
                caller: o.caller.reveal(),
                withhold: o.caller.is_withheld(),
                codec: (o.neg.codec, o.neg.pt),
                dtmf_pt: o.neg.dtmf_pt,
                ptime: o.neg.ptime,
                max_forwards: o.max_forwards,
            },
            now,
        )?;
        b.pending = Some((o.side_a, bound, o.control));
        Some(b)
    }

    /// Binds a port, offers `d.codec` to the trunk and sends the INVITE: a
    /// new dialog of the gateway's own. Returns it with the RTP (and RTCP)
    /// sockets, or `None` if the trunk is down, no port is free, or the
    /// trunk requires SRTP and no key could be made.
    pub(super) fn invite_out(
        &mut self,
        d: &Dial<'_>,
        now: Instant,
    ) -> Option<(Box<Bridge>, Bound)> {
        let (peer, transport) = self.trunk_peer(d.trunk)?;
        let addr = peer.addr;
        let trunk = &self.config.trunks[d.trunk];
        let bound = self.ports.bind(self.media_ip, false, self.tokens.u32())?;
        let port = bound.lease.port();
        let savp = trunk.srtp == SrtpMode::Required;
        let our_key = if savp {
            // No key, no call: an offer of RTP/SAVP without one would let
            // a plain answer through.
            Some(MasterKey::random(Suite::AesCm128HmacSha1_80).ok()?)
        } else {
            None
        };
        let local = Local {
            address: self.config.public_address,
            port,
            codecs: vec![d.codec.0],
            srtp: trunk.srtp,
            suites: vec![Suite::AesCm128HmacSha1_80, Suite::AeadAes128Gcm],
            session_id: u64::from(self.tokens.u32()),
            session_version: 1,
        };
        let mut offer = Vec::with_capacity(512);
        sdp::write_sdp(
            &mut offer,
            &local,
            savp,
            &[d.codec],
            d.dtmf_pt,
            d.ptime,
            Direction::SendRecv,
            false,
            our_key.as_ref().map(|k| (1, k)),
        );
        let call_id = format!("{}@tollgate", self.tokens.token()).into_bytes();
        let uri = format!("sip:{}@{addr}", d.number).into_bytes();
        let local_tag = self.tokens.token();
        let (from, asserted) = if d.withhold {
            let number = d.caller.strip_prefix('+').unwrap_or(d.caller);
            // RFC 3325 section 5: with privacy asked, the identity stays
            // inside the trust domain: a trusted (carrier) trunk only.
            let is_number =
                trunk.trusted && !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
            (
                format!("\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag={local_tag}"),
                is_number.then(|| format!("<sip:{}@{}>", d.caller, self.sip_addr)),
            )
        } else {
            let from = format!("<sip:{}@{}>;tag={local_tag}", d.caller, self.sip_addr);
            (from, None)
        };
        let from = from.into_bytes();
        let to = format!("<sip:{}@{addr}>", d.number).into_bytes();
        let contact = self.contact_for(peer);
        let max_forwards = d.max_forwards.to_string();
        let branch = self.tokens.branch();
        let mut extra: Vec<(&str, &[u8])> = vec![
            ("Contact", &contact),
            ("Allow", super::core::ALLOW),
            ("Max-Forwards", max_forwards.as_bytes()),
        ];
        if d.withhold {
            extra.push(("Privacy", b"id"));
        }
        if let Some(a) = &asserted {
            extra.push(("P-Asserted-Identity", a.as_bytes()));
        }
        let invite = build::request(&RequestSpec {
            method: "INVITE",
            uri: &uri,
            via: self.sip_addr,
            transport,
            branch: branch.as_bytes(),
            from: &from,
            to: &to,
            call_id: &call_id,
            cseq: 1,
            extra: &extra,
            body: Some(("application/sdp", &offer)),
        });
        let key = self.txn.start_client(invite, peer, now)?;
        Some((
            Box::new(Bridge {
                dialog: Dialog::calling(
                    call_id,
                    from,
                    local_tag.into_bytes(),
                    to.clone(),
                    uri.clone(),
                ),
                uri,
                to,
                key,
                peer,
                transport,
                ack: None,
                our_key,
                pending: None,
                ringing: false,
                sdp: offer.into(),
                local,
                sdes: None,
                media_ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                far_media: None,
                ok: None,
                timer: None,
                offered_in_2xx: false,
            }),
            bound,
        ))
    }

    /// The inbound call whose outbound INVITE transaction is `key`.
    fn bridged_by_key(&self, key: &Key) -> Option<CallRef> {
        match self.placed.get(key)? {
            Placed::Bridge(a_id) => Some(*a_id),
            Placed::AgentOut(_) | Placed::Ended(_) => None,
        }
    }

    /// A response on an outbound INVITE; `false` if `key` is not one.
    pub(super) fn on_bridge_response(
        &mut self,
        key: &Key,
        code: u16,
        bytes: &[u8],
        now: Instant,
    ) -> bool {
        let Some(a_id) = self.bridged_by_key(key) else {
            return false;
        };
        let Ok((m, _)) = Message::parse(bytes, Framing::Stream, &self.config.limits) else {
            return true;
        };
        match code {
            100 => {}
            101..=199 => {
                let early = !m.body.is_empty() && self.start_bridge_media(a_id, &m);
                self.relay_progress(a_id, early, now);
            }
            200..=299 => self.far_end_answered(a_id, &m, now),
            _ => {
                // 3xx: the gateway does not follow redirects.
                let (code, reason) = if code < 400 {
                    (480, "Temporarily Unavailable")
                } else {
                    (code, reason_of(&m))
                };
                info!(call = self.calls[&a_id].n, status = code, "far end refused");
                self.fail_inbound(a_id, code, reason, EndReason::Refused(code), now);
            }
        }
        true
    }

    /// The outbound INVITE got no final answer; `false` if `key` is not one.
    pub(super) fn on_bridge_timeout(&mut self, key: &Key, now: Instant) -> bool {
        let Some(a_id) = self.bridged_by_key(key) else {
            return false;
        };
        if self
            .calls
            .get(&a_id)
            .is_some_and(|c| c.state == State::Ringing)
        {
            self.fail_inbound(a_id, 408, "Request Timeout", EndReason::Failed, now);
        }
        true
    }

    fn relay_progress(&mut self, a_id: CallRef, early: bool, now: Instant) {
        let limits = self.config.limits;
        let Some(c) = self.calls.get_mut(&a_id) else {
            return;
        };
        let Some(b) = c.kind.bridge_mut() else { return };
        if b.ringing && !early {
            return;
        }
        b.ringing = true;
        let Ok((inv, _)) = Message::parse(&c.invite, Framing::Stream, &limits) else {
            return;
        };
        let (code, reason) = if early {
            (183, "Session Progress")
        } else {
            (180, "Ringing")
        };
        let body = early.then_some(("application/sdp", c.answer_sdp.as_slice()));
        if let Some(r) = build::response(
            &inv,
            code,
            reason,
            Some(&c.dialog.local_tag),
            &[("Contact", &c.contact)],
            body,
        ) {
            let key = c.invite_key.clone();
            self.txn.respond(&key, r, now);
        }
        self.record_call_response(a_id, code, now);
    }

    /// Starts the bridge's media from the far end's SDP (in a 183 or the
    /// 200). Returns whether media is now flowing.
    fn start_bridge_media(&mut self, a_id: CallRef, m: &Message<'_>) -> bool {
        let report = self.records.reporter(
            self.calls
                .get(&a_id)
                .and_then(|c| c.record.as_ref())
                .map(|r| r.id),
        );
        let Some(c) = self.calls.get_mut(&a_id) else {
            return false;
        };
        let Some(b) = c.kind.bridge_mut() else {
            return false;
        };
        if b.pending.is_none() {
            return true; // already flowing
        }
        let Some((leg, remote_rtcp, send)) = b.answer_leg(
            m,
            &self.config,
            (self.tokens.u32(), self.tokens.u32() as u16),
        ) else {
            return false;
        };
        let Some((side_a, bound, control)) = b.pending.take() else {
            return true;
        };
        let Some((rtp, rtcp)) = to_tokio(bound.rtp, bound.rtcp) else {
            return false;
        };
        let side_b = Side {
            rtp,
            rtcp,
            leg,
            remote_rtcp,
            send,
            lease: bound.lease,
        };
        if let Some(r) = c.record.as_mut() {
            r.record.srtp.push(("far_end".into(), b.srtp_text()));
        }
        let (steer_b, control_b) = mpsc::channel(4);
        b.far_media = Some(steer_b);
        let timeout = self.media_timeout(super::agent_media::MediaEnded::Call(a_id));
        self.out.push_back(Output::StartMedia(MediaTask::Bridge {
            sides: Box::new((side_a, side_b)),
            control: (control, control_b),
            report,
            timeout,
        }));
        true
    }

    fn far_end_answered(&mut self, a_id: CallRef, m: &Message<'_>, now: Instant) {
        let first = self
            .calls
            .get(&a_id)
            .and_then(|c| c.kind.bridge())
            .is_some_and(|b| !b.answered());
        if first {
            self.start_bridge_media(a_id, m);
        }
        let sip_addr = self.sip_addr;
        let branch = self.tokens.branch();
        let Some(c) = self.calls.get_mut(&a_id) else {
            return;
        };
        let Some(b) = c.kind.bridge_mut() else { return };
        let ack = b.answered_by(m, sip_addr, &branch, now);
        let peer = b.peer;
        let unmet = first && b.srtp_unmet();
        let ringing = c.state == State::Ringing;
        self.send(Transmit {
            peer,
            bytes: ack.into(),
        });
        if unmet {
            // ACKed (the 2xx is final) and hung up at once: the far end
            // would have the call in clear on a trunk that requires SRTP.
            info!(
                call = self.calls[&a_id].n,
                "far end answered without SRTP on a trunk that requires it: ending the call"
            );
            self.hang_up_far_end(a_id, now);
            if ringing {
                self.fail_inbound(a_id, 488, "Not Acceptable Here", EndReason::Failed, now);
            } else {
                self.send_bye(a_id, now);
                self.end_call(a_id, EndReason::Failed, now);
            }
            return;
        }
        if first && ringing {
            self.answer(a_id, now);
        }
    }

    /// Answers the caller with a failure and ends the call.
    fn fail_inbound(
        &mut self,
        a_id: CallRef,
        code: u16,
        reason: &str,
        why: EndReason,
        now: Instant,
    ) {
        let limits = self.config.limits;
        if let Some(c) = self.calls.get(&a_id) {
            if let Ok((inv, _)) = Message::parse(&c.invite, Framing::Stream, &limits) {
                if let Some(r) =
                    build::response(&inv, code, reason, Some(&c.dialog.local_tag), &[], None)
                {
                    let key = c.invite_key.clone();
                    self.txn.respond(&key, r, now);
                }
            }
        }
        self.record_call_response(a_id, code, now);
        self.end_call(a_id, why, now);
    }

    /// Hangs up the outbound leg of call `a_id`: BYE if answered, CANCEL if
    /// still ringing.
    pub(super) fn hang_up_far_end(&mut self, a_id: CallRef, now: Instant) {
        let sip_addr = self.sip_addr;
        let branch = self.tokens.branch();
        let Some(b) = self.calls.get_mut(&a_id).and_then(|c| c.kind.bridge_mut()) else {
            return;
        };
        let req = b.hangup_request(sip_addr, &branch);
        let peer = b.peer;
        self.txn.start_client(req, peer, now);
    }

    /// A leg whose call ended: out of the index, or, if the far end has
    /// not answered, kept there until its INVITE transaction ends, without
    /// its media (its port is back in the pool).
    pub(super) fn unplace(&mut self, mut leg: Box<Bridge>) {
        if leg.answered() {
            self.placed.remove(&leg.key);
            return;
        }
        leg.pending = None;
        leg.far_media = None;
        let key = leg.key.clone();
        self.placed.insert(key, Placed::Ended(leg));
    }

    /// A response to the INVITE of a leg whose call already ended: a 2xx
    /// (it crossed our CANCEL) is ACKed and hung up at once. `false` if
    /// `key` is no such leg.
    pub(super) fn ended_leg_answered(
        &mut self,
        key: &Key,
        code: u16,
        bytes: &[u8],
        now: Instant,
    ) -> bool {
        let sip_addr = self.sip_addr;
        let limits = self.config.limits;
        let (ack_branch, bye_branch) = (self.tokens.branch(), self.tokens.branch());
        let Some(Placed::Ended(leg)) = self.placed.get_mut(key) else {
            return false;
        };
        if !(200..300).contains(&code) {
            return true;
        }
        let Ok((m, _)) = Message::parse(bytes, Framing::Stream, &limits) else {
            return true;
        };
        let first = !leg.answered();
        let ack = leg.answered_by(&m, sip_addr, &ack_branch, now);
        let peer = leg.peer;
        let bye = first.then(|| leg.hangup_request(sip_addr, &bye_branch));
        self.send(Transmit {
            peer,
            bytes: ack.into(),
        });
        if let Some(bye) = bye {
            info!("the far end answered a call that had ended: ACK and BYE");
            self.txn.start_client(bye, peer, now);
        }
        true
    }

    /// A BYE from the far end of a bridged call (its Call-ID is the
    /// outbound leg's). `false` if `call_id` is not an outbound leg.
    pub(super) fn bye_from_far_end(
        &mut self,
        key: &Key,
        m: &Message<'_>,
        call_id: &[u8],
        now: Instant,
    ) -> bool {
        // Its tags must be the dialog's (RFC 3261 12.2.2), as for any
        // request in it.
        let Some(a_id) = self.outbound.get(call_id).cloned().filter(|a| {
            self.calls
                .get(a)
                .and_then(|c| c.kind.bridge())
                .is_some_and(|b| b.dialog.owns(m))
        }) else {
            return false;
        };
        self.respond(key, m, Reply::new(200, "OK"), now);
        if self
            .calls
            .get(&a_id)
            .is_some_and(|c| c.state != State::Ringing)
        {
            self.send_bye(a_id, now);
        }
        self.end_call(
            a_id,
            EndReason::HungUp(crate::cdr::record::Party::Callee),
            now,
        );
        true
    }
}

fn reason_of<'a>(m: &Message<'a>) -> &'static str {
    match m.status() {
        Some(404) => "Not Found",
        Some(486) => "Busy Here",
        Some(487) => "Request Terminated",
        Some(488) => "Not Acceptable Here",
        Some(480) => "Temporarily Unavailable",
        Some(603) => "Decline",
        Some(503) => "Service Unavailable",
        Some(c) if c >= 600 => "Global Failure",
        Some(c) if c >= 500 => "Server Error",
        _ => "Request Failure",
    }
}
