//! A reloaded configuration reaching the call core (see
//! [`crate::config::Reloaded`] for what a reload may change).
//!
//! Calls in progress keep what they were set up with: a call keeps its
//! legs and peers even if its trunk or route is gone. What is per trunk
//! (keepalive and registration state) follows the trunk by name, so a
//! trunk that only moved in the file, or changed codecs, keeps its state
//! and its transactions in flight; one whose address, transport,
//! keepalive or TLS changed starts afresh (up, probed at once), as does a
//! registration whose credentials changed. A removed trunk's series
//! leave `/metrics`, so no alert fires for a carrier no longer there.
//! Calls waiting in a queue follow the queue by name (queues are kept by
//! index); a call whose queue was removed is offered to no more agents.

use std::sync::Arc;
use std::time::Instant;

use super::core::Core;
use super::keepalive::TrunkState;
use super::register::Registration;
use crate::config::{Config, Trunk};
use crate::sip::transport::TlsPeers;
use crate::telemetry::metrics::Metrics;

/// The client TLS configuration of every TLS trunk with an address.
pub fn tls_peers(config: &Config) -> Result<TlsPeers, String> {
    let mut peers = TlsPeers::new();
    for t in &config.trunks {
        if let (Some((ca, name)), Some(addr)) = (&t.tls, t.address) {
            let client = crate::sip::transport::tls_client_config(ca)
                .map_err(|e| format!("trunk {:?}: {e}", t.name))?;
            let name = rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|e| format!("trunk {:?}: {e}", t.name))?;
            peers.insert(addr, (Arc::new(client), name));
        }
    }
    Ok(peers)
}

/// A trunk's keepalive state when first seen: up, probed at once.
pub(super) fn fresh_trunk(t: &Trunk, metrics: &Metrics, now: Instant) -> TrunkState {
    metrics.trunk_up.with_label_values(&[&t.name]).set(1);
    TrunkState {
        up: true,
        failures: 0,
        next_probe: t.keepalive.map(|_| now),
        pending: None,
    }
}

/// A registration trunk's registration when first seen: due now.
pub(super) fn fresh_registration(
    t: &Trunk,
    metrics: &Metrics,
    now: Instant,
    tokens: &mut crate::sip::build::Tokens,
) -> Option<Registration> {
    t.register.as_ref().map(|_| {
        metrics
            .trunk_registered
            .with_label_values(&[&t.name])
            .set(0);
        Registration::new(now, tokens)
    })
}

/// Whether a trunk's keepalive state still describes `new`.
fn same_peer(old: &Trunk, new: &Trunk) -> bool {
    (old.address, old.transport, old.keepalive, &old.tls)
        == (new.address, new.transport, new.keepalive, &new.tls)
}

impl Core {
    /// Applies a reloaded configuration: per-trunk state follows trunks by
    /// name, the guard takes the new peers and rules, the transport the
    /// new TLS peers.
    pub(super) fn reconfigure(&mut self, config: Arc<Config>, tls: TlsPeers, now: Instant) {
        let mut states: Vec<Option<TrunkState>> = std::mem::take(&mut self.trunks)
            .into_iter()
            .map(Some)
            .collect();
        let mut regs = std::mem::take(&mut self.registrations);
        let old = self.config.clone();
        for t in &config.trunks {
            let prev = old.trunks.iter().position(|o| o.name == t.name);
            let kept = prev.filter(|&i| same_peer(&old.trunks[i], t));
            let state = kept.and_then(|i| states[i].take());
            self.trunks
                .push(state.unwrap_or_else(|| fresh_trunk(t, &self.metrics, now)));
            let reg = kept
                .filter(|&i| old.trunks[i].register == t.register)
                .and_then(|i| regs[i].take());
            self.registrations
                .push(reg.or_else(|| fresh_registration(t, &self.metrics, now, &mut self.tokens)));
        }
        for o in &old.trunks {
            let now_is = config.trunks.iter().find(|t| t.name == o.name);
            if now_is.is_none() {
                let _ = self.metrics.trunk_up.remove_label_values(&[&o.name]);
            }
            if o.register.is_some() && now_is.is_none_or(|t| t.register.is_none()) {
                let _ = self
                    .metrics
                    .trunk_registered
                    .remove_label_values(&[&o.name]);
            }
        }
        self.out.push_back(super::core::Output::Peers {
            tls,
            networks: config.peer_networks().into_iter().map(|(n, _)| n).collect(),
        });
        self.guard.reconfigure(config.clone(), now);
        self.config = config;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(queues: &[&str]) -> Config {
        let mut toml = String::new();
        for q in queues {
            toml += &format!(
                "[[profile]]\nname = \"{q}\"\n[[queue]]\nname = \"{q}\"\nprofiles = [\"{q}\"]\n"
            );
        }
        Config::from_toml(&toml).expect("config")
    }

    #[test]
    fn a_waiting_call_follows_its_queue_by_name() {
        let old = config(&["sales", "support"]);
        let new = config(&["support", "billing", "sales"]);
        // A call's target names its queue: after a reload that moved it,
        // the name still finds it; a removed queue is no queue.
        let sales = crate::config::QueueId::new("sales");
        assert_eq!(old.queue(&sales).map(|q| q.name.as_str()), Some("sales"));
        assert_eq!(new.queue(&sales).map(|q| q.name.as_str()), Some("sales"));
        assert!(config(&["support"]).queue(&sales).is_none());
    }
}
