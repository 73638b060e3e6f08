//! What a reload (SIGHUP) may change in a running gateway.
//!
//! The dial plan and everything decided per call or per packet source is
//! applied at once: trunks (peers, addresses, codecs, SRTP, registration,
//! keepalive, TLS), routes, queues, profiles, the agents' dial plan and `[dialing]`, the
//! admin networks, the IDS rules, the trunk RTP timeout, record retention
//! and the SIP TLS certificate files. What is bound or handed out at
//! start (listeners, the RTP port range, the `[agents]` section, operator
//! groups, the nftables mode, SIP limits and timers) keeps its running
//! value until the next restart; a reload names each such key, so an
//! admin knows a restart is still owed.

use super::Config;

/// A new file's effect on the running configuration.
#[derive(Debug)]
pub struct Reloaded {
    /// The running configuration with every live setting from the file.
    pub config: Config,
    /// What changed and is applied now, for the log and the audit trail
    /// (names only: never a number, address list or credential).
    pub applied: Vec<String>,
    /// Keys that changed but wait for a restart.
    pub pending: Vec<&'static str>,
}

impl Reloaded {
    /// One line for the log, the audit trail and systemd's status.
    pub fn summary(&self) -> String {
        let applied = if self.applied.is_empty() {
            "no change".to_string()
        } else {
            self.applied.join("; ")
        };
        if self.pending.is_empty() {
            applied
        } else {
            format!(
                "{applied}; at the next restart: {}",
                self.pending.join(", ")
            )
        }
    }
}

/// Names of the items of `old` and `new` (matched by name) that were
/// added, changed or removed: `what: added "a"; changed "b"`.
fn by_name<T: PartialEq>(
    what: &str,
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &str,
) -> Option<String> {
    let find = |list: &[T], n: &str| list.iter().position(|x| name(x) == n);
    let quoted = |v: Vec<&str>| v.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>();
    let added: Vec<&str> = new
        .iter()
        .map(&name)
        .filter(|n| find(old, n).is_none())
        .collect();
    let removed: Vec<&str> = old
        .iter()
        .map(&name)
        .filter(|n| find(new, n).is_none())
        .collect();
    let changed: Vec<&str> = new
        .iter()
        .filter(|x| find(old, name(x)).is_some_and(|i| old[i] != **x))
        .map(&name)
        .collect();
    let mut parts = Vec::new();
    for (verb, list) in [("added", added), ("changed", changed), ("removed", removed)] {
        if !list.is_empty() {
            parts.push(format!("{verb} {}", quoted(list).join(", ")));
        }
    }
    if parts.is_empty() {
        // Same items; only their order moved (first match wins, so it
        // matters).
        return (old != new).then(|| format!("{what}: reordered"));
    }
    Some(format!("{what}: {}", parts.join("; ")))
}

impl Config {
    /// The running configuration (`self`) with the live settings of `new`.
    pub fn reload_from(&self, new: Config) -> Reloaded {
        let mut applied = Vec::new();
        applied.extend(by_name("trunks", &self.trunks, &new.trunks, |t| &t.name));
        applied.extend(by_name("queues", &self.queues, &new.queues, |q| &q.name));
        applied.extend(by_name("profiles", &self.profiles, &new.profiles, |p| {
            &p.name
        }));
        // Routes and the dial plan name trunks and queues by index: compared
        // by what they point at.
        let route_key = |c: &Config| -> Vec<(String, String)> {
            c.routes
                .iter()
                .map(|r| (r.number.clone(), c.target_name(&r.target)))
                .collect()
        };
        if route_key(self) != route_key(&new)
            || self.routes.iter().zip(&new.routes).any(|(a, b)| {
                (a.ring, a.hangup, &a.test_peers) != (b.ring, b.hangup, &b.test_peers)
            })
        {
            applied.push(format!(
                "routes: {} → {}",
                self.routes.len(),
                new.routes.len()
            ));
        }
        let dial_key = |c: &Config| -> Vec<(String, String)> {
            c.dial
                .iter()
                .map(|(p, t)| (p.clone(), c.trunks.get(*t).map_or("", |t| &t.name).into()))
                .collect()
        };
        if dial_key(self) != dial_key(&new) {
            applied.push(format!(
                "dial plan: {} → {} prefixes",
                self.dial.len(),
                new.dial.len()
            ));
        }
        if self.dial_default_deny != new.dial_default_deny {
            applied.push(format!(
                "dialing.default: {}",
                if new.dial_default_deny {
                    "deny"
                } else {
                    "allow"
                }
            ));
        }
        if self.firewall.admin_networks != new.firewall.admin_networks {
            applied.push("firewall.admin_networks".into());
        }
        if self.firewall.ids_rules_path != new.firewall.ids_rules_path
            || self.firewall.ids_rules != new.firewall.ids_rules
        {
            applied.push("IDS rules".into());
        }
        if self.rtp_timeout != new.rtp_timeout {
            applied.push("media.rtp_timeout_s".into());
        }
        if self.max_call != new.max_call {
            applied.push("media.max_call_s".into());
        }
        if self.retention_days != new.retention_days {
            applied.push(format!(
                "records.retention_days: {} → {}",
                self.retention_days, new.retention_days
            ));
        }

        if self.mask != new.mask {
            applied.push(format!(
                "privacy.visible_digits: {} → {}",
                self.mask.visible(),
                new.mask.visible()
            ));
        }

        if self.oversight != new.oversight {
            applied.push("admin hours and bulk-read limit".into());
        }
        if self.break_glass != new.break_glass {
            applied.push("incident.break_glass".into());
        }

        let mut pending = Vec::new();
        let mut owed = |changed: bool, key: &'static str| {
            if changed {
                pending.push(key);
            }
        };
        owed(self.sip_udp != new.sip_udp, "sip.udp");
        owed(self.sip_tcp != new.sip_tcp, "sip.tcp");
        owed(self.sip_tls != new.sip_tls, "sip.tls");
        owed(
            self.public_address != new.public_address,
            "sip.public_address",
        );
        owed(
            (self.limits, self.partial_message_timeout, self.t1)
                != (new.limits, new.partial_message_timeout, new.t1),
            "sip limits and timers",
        );
        owed(
            (self.max_connections, self.max_connections_per_peer)
                != (new.max_connections, new.max_connections_per_peer),
            "sip.max_connections",
        );
        owed(self.rtp_ports != new.rtp_ports, "media.rtp_ports");
        owed(self.media_shards != new.media_shards, "media.shards");
        owed(
            self.records_min_free != new.records_min_free,
            "records.min_free_mb",
        );
        owed(self.admin_listen != new.admin_listen, "admin.listen");
        owed(self.role_groups != new.role_groups, "admin groups");
        owed(
            self.approval_window != new.approval_window,
            "admin.approval_window_s",
        );
        owed(self.agents != new.agents, "[agents]");
        owed(
            self.firewall.nftables != new.firewall.nftables,
            "firewall.nftables",
        );

        let mut config = self.clone();
        config.trunks = new.trunks;
        config.routes = new.routes;
        config.queues = new.queues;
        config.profiles = new.profiles;
        config.dial = new.dial;
        config.dial_default_deny = new.dial_default_deny;
        config.firewall.admin_networks = new.firewall.admin_networks;
        config.firewall.ids_rules_path = new.firewall.ids_rules_path;
        config.firewall.ids_rules = new.firewall.ids_rules;
        config.rtp_timeout = new.rtp_timeout;
        config.max_call = new.max_call;
        config.retention_days = new.retention_days;
        config.mask = new.mask;
        config.oversight = new.oversight;
        config.break_glass = new.break_glass;
        // The certificate itself is re-read by the reload (the listeners'
        // resolver swaps it); the paths follow.
        config.tls_certificate = new.tls_certificate;
        config.tls_private_key = new.tls_private_key;
        Reloaded {
            config,
            applied,
            pending,
        }
    }

    /// A route target by name (trunk and queue names, not indices).
    fn target_name(&self, t: &super::Target) -> String {
        use super::Target;
        match t {
            Target::Echo => "echo".into(),
            Target::Tone => "tone".into(),
            Target::Trunk(t) => format!("trunk:{}", t.name()),
            Target::Queue(q) => format!("queue:{}", q.name()),
            Target::Agent(a) => format!("agent:{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::from_toml(extra).expect("config")
    }

    const BASE: &str = r#"
[sip]
udp = ["127.0.0.1:5060"]
[[trunk]]
name = "a"
peers = ["192.0.2.1/32"]
[[trunk]]
name = "b"
peers = ["192.0.2.2/32"]
address = "192.0.2.2:5060"
[[route]]
number = "+441"
target = "trunk:b"
"#;

    #[test]
    fn the_same_file_changes_nothing() {
        let r = config(BASE).reload_from(config(BASE));
        assert!(r.applied.is_empty(), "{:?}", r.applied);
        assert!(r.pending.is_empty(), "{:?}", r.pending);
        assert_eq!(r.summary(), "no change");
    }

    #[test]
    fn trunks_and_routes_apply_and_name_what_moved() {
        let new = BASE.replace("192.0.2.2:5060", "192.0.2.9:5060").replace(
            "name = \"a\"\npeers = [\"192.0.2.1/32\"]",
            "name = \"c\"\npeers = [\"198.51.100.0/24\"]",
        ) + "[[route]]\nnumber = \"+442\"\ntarget = \"echo\"\n";
        let r = config(BASE).reload_from(config(&new));
        assert_eq!(
            r.applied,
            vec![
                "trunks: added \"c\"; changed \"b\"; removed \"a\"".to_string(),
                "routes: 1 → 2".to_string(),
            ]
        );
        assert!(r.pending.is_empty());
        let names: Vec<_> = r.config.trunks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["c", "b"]);
        assert_eq!(r.config.routes.len(), 2);
        // The route still names "b", now at index 1.
        let b = crate::config::TrunkId::new("b");
        assert_eq!(
            r.config.route("+441").map(|x| &x.target),
            Some(&crate::config::Target::Trunk(b.clone()))
        );
        assert_eq!(r.config.trunk_index(&b), Some(1));
    }

    #[test]
    fn a_route_to_a_moved_trunk_is_not_a_change() {
        // Swapping the trunks' order moves "b" to index 0; the route still
        // means "b", so only the trunks' order is reported.
        let swapped = r#"
[sip]
udp = ["127.0.0.1:5060"]
[[trunk]]
name = "b"
peers = ["192.0.2.2/32"]
address = "192.0.2.2:5060"
[[trunk]]
name = "a"
peers = ["192.0.2.1/32"]
[[route]]
number = "+441"
target = "trunk:b"
"#;
        let r = config(BASE).reload_from(config(swapped));
        assert_eq!(r.applied, vec!["trunks: reordered".to_string()]);
    }

    #[test]
    fn listeners_wait_for_a_restart_and_keep_their_running_value() {
        let new = BASE.replace("127.0.0.1:5060", "127.0.0.1:5070")
            + "[media]\nrtp_ports = \"30000-30999\"\n[records]\nretention_days = 30\n";
        let old = config(BASE);
        let r = old.reload_from(config(&new));
        assert_eq!(r.pending, ["sip.udp", "media.rtp_ports"]);
        assert_eq!(r.config.sip_udp, old.sip_udp);
        assert_eq!(r.config.rtp_ports, old.rtp_ports);
        // Retention is live.
        assert_eq!(r.config.retention_days, 30);
        assert_eq!(
            r.summary(),
            format!(
                "records.retention_days: {} → 30; at the next restart: sip.udp, media.rtp_ports",
                old.retention_days
            )
        );
    }

    #[test]
    fn a_changed_password_is_named_by_trunk_only() {
        let with = |pw: &str| {
            config(&format!(
                "{BASE}[trunk.register]\nusername = \"u\"\npassword = \"{pw}\"\n"
            ))
        };
        let r = with("first-secret").reload_from(with("second-secret"));
        assert_eq!(r.applied, vec!["trunks: changed \"b\"".to_string()]);
        assert!(!r.summary().contains("secret"), "{}", r.summary());
    }
}
