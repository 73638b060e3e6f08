//! How a call the gateway answered ends: BYE to the caller and to a
//! bridge's far end, then [`Core::end_call`] frees everything the call
//! held (record, trunk slots, media and its ports, bridge leg, agent) for
//! one [`EndReason`]; and every call at once when the gateway stops.

use std::time::Instant;

use tracing::{debug, info};

use super::core::{CallKind, CallRef, Core, Reply, State};
use super::end::EndReason;
use crate::sip::dialog;
use crate::sip::message::{Framing, Message};

impl Core {
    /// A test service's or bridged call's media stopped: BYE to both
    /// ends, and the slot, ports and task are freed.
    pub(super) fn call_media_timed_out(&mut self, call_id: CallRef, now: Instant) {
        let Some(n) = self.calls.get(&call_id).map(|c| c.n) else {
            return;
        };
        info!(call = n, "no RTP for media.rtp_timeout_s: ending the call");
        self.hang_up(call_id, EndReason::MediaTimeout, now);
    }

    /// Hangs up a call the gateway answered, for `why`: BYE to the
    /// caller and to a bridge's far end, then the call ends.
    pub(super) fn hang_up(&mut self, call_id: CallRef, why: EndReason, now: Instant) {
        self.send_bye(call_id, now);
        self.hang_up_far_end(call_id, now);
        self.end_call(call_id, why, now);
    }

    pub(super) fn send_bye(&mut self, call_id: CallRef, now: Instant) {
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        let cseq = c.dialog.next_cseq();
        let branch = self.tokens.branch();
        let bye = c.dialog.request(&dialog::Request {
            method: "BYE",
            cseq,
            via: self.sip_addr,
            transport: c.peer.transport_name(),
            branch: branch.as_bytes(),
            extra: &[],
            body: None,
        });
        let peer = c.peer;
        self.txn.start_client(bye, peer, now);
    }

    /// Ends the call the gateway answered: its record, trunk slots,
    /// ports, media task, bridge leg and agent, all for one `why`.
    pub(super) fn end_call(&mut self, call_id: CallRef, why: EndReason, now: Instant) {
        if let Some(mut c) = self.calls.remove(&call_id) {
            self.call_ids.remove(&c.dialog.call_id);
            self.call_bytes = self.call_bytes.saturating_sub(c.held());
            if let Some(r) = c.record.take() {
                // The agent, if any, is the callee of calls it takes.
                let by = why.hung_up_by(crate::cdr::record::Party::Callee);
                let status = why.status(r.record.sip_status);
                self.records.finish(r, why.outcome(), status, by, now);
            }
            for t in &c.on_trunks {
                self.free_trunk_slot(t);
            }
            // Dropping the control sender ends the media task, which gives
            // its ports back.
            drop(c.media);
            self.metrics.calls_active.dec();
            self.metrics
                .calls_total
                .with_label_values(&[why.label()])
                .inc();
            debug!(call = c.n, kind = c.kind.label(), ?why, "call ended");
            match c.kind {
                CallKind::Bridge(b) => {
                    self.outbound.remove(&b.dialog.call_id);
                    self.unplace(b);
                }
                CallKind::Agent(a) => {
                    self.by_agent_call.remove(&a.call);
                    self.agent_leg_ended(&a, why, now);
                }
                CallKind::Service(_) => {}
            }
        }
    }

    /// Ends every call (the gateway is stopping): 503 to those ringing,
    /// BYE to the rest, and to every agent's call.
    pub(super) fn hang_up_all(&mut self, now: Instant) {
        self.hang_up_agent_out(now);
        let ids: Vec<CallRef> = self.calls.keys().copied().collect();
        for id in ids {
            let state = self.calls.get(&id).map(|c| c.state);
            match state {
                Some(State::Ringing) => {
                    let c = &self.calls[&id];
                    let (key, invite, tag) = (
                        c.invite_key.clone(),
                        c.invite.clone(),
                        c.dialog.local_tag.clone(),
                    );
                    if let Ok((inv, _)) =
                        Message::parse(&invite, Framing::Stream, &self.config.limits)
                    {
                        self.respond(
                            &key,
                            &inv,
                            Reply::new(503, "Service Unavailable").tag(&tag),
                            now,
                        );
                    }
                    self.hang_up_far_end(id, now);
                    self.end_call(id, EndReason::Failed, now);
                }
                Some(_) => {
                    self.hang_up(id, EndReason::Shutdown, now);
                }
                None => {}
            }
        }
    }
}
