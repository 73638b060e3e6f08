//! Registration trunks: the gateway REGISTERs with a carrier that wants it
//! (RFC 3261 10), answers a Digest challenge with the configured
//! credentials, and refreshes before the binding expires. A failed or
//! unanswered registration is retried after a minute. The state shows as
//! `tollgate_trunk_registered`.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::core::Core;
use crate::sip::build::{self, RequestSpec};
use crate::sip::digest::Challenge;
use crate::sip::message::{Framing, HeaderName, Message};
use crate::sip::transaction::Key;

/// How long to wait before trying again after a failure.
const RETRY: Duration = Duration::from_secs(60);

/// One trunk's registration.
pub(super) struct Registration {
    call_id: String,
    from_tag: String,
    cseq: u32,
    pub(super) next_at: Option<Instant>,
    pending: Option<Key>,
    /// Whether the pending REGISTER already answered a challenge (a second
    /// 401 then means the credentials are wrong).
    authenticated: bool,
    registered: bool,
    nc: u32,
}

impl Registration {
    pub(super) fn new(now: Instant, tokens: &mut build::Tokens) -> Self {
        Self {
            call_id: format!("{}@tollgate", tokens.token()),
            from_tag: tokens.token(),
            cseq: 0,
            next_at: Some(now),
            pending: None,
            authenticated: false,
            registered: false,
            nc: 0,
        }
    }
}

impl Core {
    /// Sends REGISTER for every registration trunk that is due.
    pub(super) fn register_due(&mut self, now: Instant) {
        for i in 0..self.registrations.len() {
            let due = self.registrations[i]
                .as_ref()
                .is_some_and(|r| r.pending.is_none() && r.next_at.is_some_and(|t| t <= now));
            if due {
                self.send_register(i, None, now);
            }
        }
    }

    fn send_register(&mut self, i: usize, auth: Option<(&str, String)>, now: Instant) {
        let t = &self.config.trunks[i];
        let (Some((peer, transport)), Some(cred)) = (self.trunk_peer(i), t.register.as_ref())
        else {
            return;
        };
        let addr = peer.addr;
        let Some(reg) = self.registrations[i].as_mut() else {
            return;
        };
        reg.cseq += 1;
        reg.authenticated = auth.is_some();
        let uri = format!("sip:{addr}");
        let aor = format!("<sip:{}@{addr}>", cred.username);
        let from = format!("{aor};tag={}", reg.from_tag);
        let contact = format!("<sip:{}@{}>", cred.username, self.sip_addr);
        let expires = cred.expires.to_string();
        let mut extra: Vec<(&str, &[u8])> = vec![
            ("Contact", contact.as_bytes()),
            ("Expires", expires.as_bytes()),
        ];
        if let Some((name, value)) = &auth {
            extra.push((name, value.as_bytes()));
        }
        let branch = self.tokens.branch();
        let req = build::request(&RequestSpec {
            method: "REGISTER",
            uri: uri.as_bytes(),
            via: self.sip_addr,
            transport,
            branch: branch.as_bytes(),
            from: from.as_bytes(),
            to: aor.as_bytes(),
            call_id: reg.call_id.as_bytes(),
            cseq: reg.cseq,
            extra: &extra,
            body: None,
        });
        reg.pending = self.txn.start_client(req, peer, now);
        reg.next_at = None;
    }

    /// A final response to a REGISTER; `false` if `key` is not one.
    pub(super) fn on_register_response(
        &mut self,
        key: &Key,
        code: u16,
        bytes: &[u8],
        now: Instant,
    ) -> bool {
        let Some(i) = self.registration_of(key) else {
            return false;
        };
        if code < 200 {
            return true;
        }
        let name = self.config.trunks[i].name.clone();
        let Ok((m, _)) = Message::parse(bytes, Framing::Stream, &self.config.limits) else {
            return true;
        };
        let Some(reg) = self.registrations[i].as_mut() else {
            return true;
        };
        reg.pending = None;
        match code {
            200..=299 => {
                // The binding's lifetime: our Contact's expires, else
                // Expires, else what we asked for; refresh at 80%.
                let asked = self.config.trunks[i]
                    .register
                    .as_ref()
                    .map_or(3600, |r| r.expires);
                let granted = m
                    .values(HeaderName::Contact)
                    .filter_map(|c| crate::sip::header::NameAddr::parse(c).ok())
                    .find_map(|c| c.params.get(b"expires").flatten())
                    .or_else(|| m.header(HeaderName::Expires).map(|h| h.value))
                    .and_then(|v| crate::sip::header::number(v, u64::from(u32::MAX)).ok())
                    .map_or(u64::from(asked), |v| v.min(u64::from(asked)));
                let refresh = Duration::from_millis(granted.max(1) * 800);
                reg.next_at = Some(now + refresh);
                if !reg.registered {
                    info!(trunk = %name, expires = granted, "registered");
                }
                reg.registered = true;
                self.metrics
                    .trunk_registered
                    .with_label_values(&[&name])
                    .set(1);
            }
            401 | 407 if !reg.authenticated => {
                let header = if code == 401 {
                    HeaderName::WwwAuthenticate
                } else {
                    HeaderName::ProxyAuthenticate
                };
                let challenge = m
                    .headers_named(header)
                    .find_map(|h| Challenge::parse(h.value));
                let cred = self.config.trunks[i].register.clone();
                match (challenge, cred, self.config.trunks[i].address) {
                    (Some(ch), Some(cred), Some(addr)) => {
                        reg.nc += 1;
                        let uri = format!("sip:{addr}");
                        let answer = ch.answer(
                            "REGISTER",
                            &uri,
                            &cred.username,
                            &cred.password,
                            reg.nc,
                            &self.tokens.token(),
                        );
                        let name = if code == 401 {
                            "Authorization"
                        } else {
                            "Proxy-Authorization"
                        };
                        self.send_register(i, Some((name, answer)), now);
                    }
                    _ => {
                        warn!(trunk = %name, "registration challenge not understood; retrying in 60 s");
                        self.registration_failed(i, now);
                    }
                }
            }
            _ => {
                warn!(trunk = %name, status = code, "registration refused; retrying in 60 s");
                self.registration_failed(i, now);
            }
        }
        true
    }

    /// The REGISTER got no answer; `false` if `key` is not one.
    pub(super) fn on_register_timeout(&mut self, key: &Key, now: Instant) -> bool {
        let Some(i) = self.registration_of(key) else {
            return false;
        };
        warn!(trunk = %self.config.trunks[i].name, "registrar did not answer; retrying in 60 s");
        self.registration_failed(i, now);
        true
    }

    /// The trunk whose REGISTER is the transaction `key`.
    fn registration_of(&self, key: &Key) -> Option<usize> {
        self.registrations
            .iter()
            .position(|r| r.as_ref().is_some_and(|r| r.pending.as_ref() == Some(key)))
    }

    fn registration_failed(&mut self, i: usize, now: Instant) {
        if let Some(reg) = self.registrations[i].as_mut() {
            reg.pending = None;
            reg.registered = false;
            reg.next_at = Some(now + RETRY);
        }
        self.metrics
            .trunk_registered
            .with_label_values(&[&self.config.trunks[i].name])
            .set(0);
    }
}
