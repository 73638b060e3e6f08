//! OPTIONS keepalives to trunk peers (RFC 3261 11): a peer that stops
//! answering is marked down (and skipped by the dial plan); an answer marks
//! it up again. The state lives in the call core; this is its part of it.

use std::time::Instant;

use tracing::{info, warn};

use super::core::Core;
use crate::sip::build::{self, RequestSpec};
use crate::sip::transaction::{Key, Peer};

/// What the core knows of a trunk peer from its OPTIONS keepalives.
pub(super) struct TrunkState {
    pub(super) up: bool,
    /// Keepalives in a row that got no answer.
    pub(super) failures: u32,
    pub(super) next_probe: Option<Instant>,
    pub(super) pending: Option<Key>,
}

/// Unanswered keepalives in a row before a trunk is marked down.
const DOWN_AFTER: u32 = 2;

impl Core {
    /// Sends OPTIONS to every trunk whose keepalive is due.
    pub(super) fn probe_trunks(&mut self, now: Instant) {
        for i in 0..self.trunks.len() {
            let (Some(next), None) = (self.trunks[i].next_probe, &self.trunks[i].pending) else {
                continue;
            };
            if next > now {
                continue;
            }
            let t = &self.config.trunks[i];
            let Some(every) = t.keepalive else {
                continue;
            };
            let Some((peer, transport)) = self.trunk_peer(i) else {
                continue;
            };
            let addr = peer.addr;
            let uri = format!("sip:{addr}");
            let from = format!(
                "<sip:tollgate@{}>;tag={}",
                self.sip_addr,
                self.tokens.token()
            );
            let to = format!("<{uri}>");
            let call_id = format!("{}@tollgate", self.tokens.token());
            let branch = self.tokens.branch();
            let req = build::request(&RequestSpec {
                method: "OPTIONS",
                uri: uri.as_bytes(),
                via: self.sip_addr,
                transport,
                branch: branch.as_bytes(),
                from: from.as_bytes(),
                to: to.as_bytes(),
                call_id: call_id.as_bytes(),
                cseq: 1,
                extra: &[],
                body: None,
            });
            let key = self.txn.start_client(req, peer, now);
            let st = &mut self.trunks[i];
            st.pending = key;
            st.next_probe = Some(now + every);
        }
    }

    /// The trunk whose keepalive is the transaction `key`.
    fn keepalive_of(&self, key: &Key) -> Option<usize> {
        self.trunks
            .iter()
            .position(|t| t.pending.as_ref() == Some(key))
    }

    pub(super) fn keepalive_answered(&mut self, key: &Key) {
        if let Some(i) = self.keepalive_of(key) {
            let st = &mut self.trunks[i];
            st.pending = None;
            st.failures = 0;
            if !st.up {
                st.up = true;
                info!(trunk = %self.config.trunks[i].name, "trunk peer answers again: up");
            }
            self.metrics
                .trunk_up
                .with_label_values(&[&self.config.trunks[i].name])
                .set(1);
        }
    }

    pub(super) fn keepalive_lost(&mut self, key: &Key) {
        if let Some(i) = self.keepalive_of(key) {
            let st = &mut self.trunks[i];
            st.pending = None;
            st.failures += 1;
            if st.up && st.failures >= DOWN_AFTER {
                st.up = false;
                warn!(trunk = %self.config.trunks[i].name, "trunk peer stopped answering OPTIONS: down");
                self.metrics
                    .trunk_up
                    .with_label_values(&[&self.config.trunks[i].name])
                    .set(0);
            }
        }
    }

    /// Where to reach trunk `i`, and the Via transport name to use.
    pub(super) fn trunk_peer(&self, i: usize) -> Option<(Peer, &'static str)> {
        let t = self.config.trunks.get(i)?;
        let (reliable, name) = match t.transport {
            crate::config::Transport::Udp => (false, "UDP"),
            crate::config::Transport::Tcp => (true, "TCP"),
            crate::config::Transport::Tls => (true, "TLS"),
        };
        Some((
            Peer {
                addr: t.address?,
                reliable,
                tls: t.transport == crate::config::Transport::Tls,
            },
            name,
        ))
    }

    /// Whether trunk `i` is taking calls (the dial plan skips it if not).
    pub fn trunk_is_up(&self, i: usize) -> bool {
        self.trunks.get(i).is_some_and(|t| t.up)
    }
}
