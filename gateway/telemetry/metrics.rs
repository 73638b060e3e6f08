//! The metrics Tollgate exports, in one table of names. Labels are small
//! enums (method, status class, direction, reason): never a call, an
//! address or a number, so the series count stays bounded whatever the
//! traffic.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric, registered once.
pub struct Metrics {
    registry: Registry,
    /// SIP requests by method (`INVITE`, ..., `other`) and direction
    /// (`in`, `out`).
    pub sip_requests: IntCounterVec,
    /// SIP responses by status class (`1xx` ... `6xx`) and direction.
    pub sip_responses: IntCounterVec,
    pub sip_transactions_active: IntGauge,
    /// Bytes of SIP held for resending and answering, by holder
    /// (`transactions`, `calls`), each against its budget.
    pub sip_held_bytes: IntGaugeVec,
    pub sip_retransmissions: IntCounter,
    /// Messages that failed to parse, by reason.
    pub sip_parse_failures: IntCounterVec,
    /// Requests refused by the checks, by status code.
    pub sip_rejected: IntCounterVec,
    /// Transport events by kind: `inbound_dropped`, `outbound_dropped`,
    /// `connection_refused` (caps), `connection_timed_out`,
    /// `stream_framing_lost`, `tls_handshake_failed`.
    pub sip_transport_events: IntCounterVec,
    /// SIP from addresses outside every trunk's peer networks.
    pub sip_unknown_peer: IntCounter,
    /// 1 while a trunk answers its OPTIONS keepalives, 0 once it stopped
    /// (label: the configured trunk name, a bounded set).
    pub trunk_up: IntGaugeVec,
    /// 1 while a registration trunk's binding is current.
    pub trunk_registered: IntGaugeVec,
    pub calls_active: IntGauge,
    /// Calls ended, by outcome (`answered`, `cancelled`, `rejected`,
    /// `failed`).
    pub calls_total: IntCounterVec,
    /// RTP packets and bytes by direction (`in`, `out`).
    pub rtp_packets: IntCounterVec,
    pub rtp_bytes: IntCounterVec,
    /// RTP packets dropped, by reason (`wrong_source`, `malformed`, ...).
    pub rtp_dropped: IntCounterVec,
    /// RTP packets not sent because the peer's address was not proven yet
    /// (no valid media from it, no ACK): reflection refused.
    pub rtp_unproven: IntCounter,
    /// SDP offers refused (488) for a media address the trunk does not
    /// allow, by the address's scope (`loopback`, `private`, ...).
    pub sdp_address_refused: IntCounterVec,
    /// Calls refused (503) because a trunk had all its `max_calls` slots
    /// taken.
    pub calls_over_trunk_limit: IntCounter,
    /// `/metrics` requests refused: not from `firewall.admin_networks`.
    pub admin_refused: IntCounter,
    /// 1 while record retention holds a shred it judged unsafe (a clock
    /// jump, or many days at once) for an operator's confirmation.
    pub cdr_retention_held: IntGauge,
    /// 1 during an incident lockdown.
    pub incident_active: IntGauge,
    /// Interarrival jitter per call leg at its end, in seconds (Prometheus
    /// base units).
    pub rtp_jitter_seconds: Histogram,
    /// Fraction of packets lost per call leg at its end.
    pub rtp_loss_ratio: Histogram,
    pub rtp_mos: Histogram,
    pub data_free_bytes: IntGauge,
    pub data_total_bytes: IntGauge,
    pub cdr_store_bytes: IntGauge,
    /// Agents logged in now.
    pub agents_connected: IntGauge,
    /// Agents logged in, available and not on a call.
    pub agents_available: IntGauge,
    /// Failed agent logins by reason (`no_certificate`, `unknown_ca`,
    /// `revoked`, `bad_otp`, `locked_out`, `protocol`, `handshake`, ...).
    pub agent_auth_failures: IntCounterVec,
    /// Agent connections asked to prove their address (QUIC Retry).
    pub agent_quic_retries: IntCounter,
    /// Agents locked out after repeated wrong codes.
    pub agent_lockouts: IntCounter,
    /// Unusual access to customer data, by kind (see
    /// [`crate::telemetry::anomaly::Kind`]).
    pub privacy_anomalies: IntCounterVec,
    /// The agents' QUIC sends ([`crate::agent::socket`]): `sendmmsg`
    /// calls, the datagrams they carried (their ratio is the batch size)
    /// and datagrams the kernel refused.
    pub agent_udp_send_calls: IntCounter,
    pub agent_udp_datagrams_sent: IntCounter,
    pub agent_udp_send_refused: IntCounter,
    /// Agent sessions ended by the gateway for a protocol error, by reason.
    pub agent_protocol_errors: IntCounterVec,
    /// Calls to and from agents that ended, by direction (`inbound`,
    /// `outbound`) and outcome (`answered`, `rejected`, `no_answer`,
    /// `refused`, `failed`, `cancelled`).
    pub agent_calls: IntCounterVec,
    /// Media datagrams to or from agents dropped, by reason (`too_large`,
    /// `congestion`, `unknown_flow`).
    pub agent_datagrams_dropped: IntCounterVec,
    /// IDS verdicts other than pass, by verdict (`drop`, `ban`) and reason
    /// ([`crate::guard::ids::Reason::label`]); passes under `pass`/`none`.
    pub ids_verdicts: IntCounterVec,
    pub ids_bans_active: IntGauge,
    pub ids_sources_tracked: IntGauge,
    /// Messages from a trusted trunk dropped over its limits, by trunk
    /// name (a bounded set): the alert to watch, carriers are never banned.
    pub ids_carrier_over_limit: IntCounterVec,
    /// 1 while the gateway's nftables table is loaded.
    pub firewall_active: IntGauge,
    /// Packets the kernel dropped, by rule (the rule's comment in
    /// rulesets/tollgate.nft), read from the table's counters.
    pub firewall_dropped_packets: IntCounterVec,
    /// Call records made durable (an answered call's is written twice:
    /// open at answer, then finished).
    pub cdr_records_written: IntCounter,
    /// Finished call records made durable: one per call.
    pub cdr_records_finished: IntCounter,
    /// From a record handed to the writer to its group's fsync.
    pub cdr_write_seconds: Histogram,
    /// Record groups that failed to write (tried again, then shed).
    pub cdr_write_errors: IntCounter,
    /// Records not kept, by reason (`queue_full`, `disk_floor`,
    /// `write_failed`, `store_unavailable`): calls went on without them.
    pub cdr_records_shed: IntCounterVec,
    /// 1 while call records are being kept; 0 while they are shed.
    pub cdr_storage_ok: IntGauge,
    /// Refused calls over one source's record budget: counted here
    /// instead of one record each.
    pub cdr_refusals_aggregated: IntCounter,
    /// Entries appended to the audit trail.
    pub audit_entries: IntCounter,
    /// Audit entries lost (a full queue, a failed write); the trail
    /// records each loss as a gap entry.
    pub audit_lost: IntCounter,
    /// Configuration reloads (SIGHUP), by outcome (`applied`, `refused`).
    pub config_reloads: IntCounterVec,
    /// 1 unless the last reload was refused (the file on disk is then not
    /// what runs).
    pub config_last_reload_successful: IntGauge,
    /// Settings changed on disk that wait for a restart (0: what runs is
    /// what the file says).
    pub config_restart_pending: IntGauge,
}

/// Every reason [`Metrics::agent_auth_failures`] counts.
pub const AUTH_FAILURES: [&str; 11] = [
    "banned",
    "busy",
    "no_certificate",
    "unknown_ca",
    "revoked",
    "unknown_agent",
    "bad_otp",
    "locked_out",
    "protocol",
    "timeout",
    "handshake",
];

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("tollgate".into()), None)?;
        let counter_vec =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let histogram =
            |name: &str, help: &str, buckets: Vec<f64>| -> Result<Histogram, prometheus::Error> {
                let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        Ok(Self {
            cdr_records_written: counter(
                "cdr_records_written_total",
                "Call records written and flushed to disk.",
            )?,
            cdr_records_finished: counter(
                "cdr_records_finished_total",
                "Finished call records written and flushed to disk (one per call).",
            )?,
            cdr_write_seconds: histogram(
                "cdr_write_seconds",
                "Time from a call record's hand-over to its durable write.",
                vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0],
            )?,
            cdr_write_errors: counter(
                "cdr_write_errors_total",
                "Call record group writes that failed (tried again, then shed).",
            )?,
            cdr_records_shed: counter_vec(
                "cdr_records_shed_total",
                "Call records not kept, by reason; the calls themselves went on.",
                &["reason"],
            )?,
            cdr_storage_ok: gauge(
                "cdr_storage_ok",
                "1 while call records are being kept; 0 while they are being shed (full disk, failing store).",
            )?,
            cdr_refusals_aggregated: counter(
                "cdr_refusals_aggregated_total",
                "Refused calls over one source's per-minute record budget, counted instead of recorded.",
            )?,
            audit_lost: counter(
                "audit_entries_lost_total",
                "Audit entries lost to a full queue or a failed write; the trail says so in a gap entry.",
            )?,
            audit_entries: counter(
                "audit_entries_total",
                "Entries appended to the audit trail.",
            )?,
            ids_verdicts: counter_vec(
                "ids_verdicts_total",
                "IDS verdicts on SIP messages and agent logins, by verdict and reason.",
                &["verdict", "reason"],
            )?,
            ids_bans_active: gauge("ids_bans_active", "Sources banned now.")?,
            ids_sources_tracked: gauge(
                "ids_sources_tracked",
                "Sources the IDS keeps state for (bounded by memory.max_sources).",
            )?,
            ids_carrier_over_limit: counter_vec(
                "ids_carrier_over_limit_total",
                "Messages from a trusted trunk peer dropped over its limits (carriers are never banned).",
                &["trunk"],
            )?,
            firewall_active: gauge(
                "firewall_active",
                "1 while Tollgate's nftables table is loaded; 0 when bans are enforced in the process only.",
            )?,
            firewall_dropped_packets: counter_vec(
                "firewall_dropped_packets_total",
                "Packets dropped by the kernel, by rule, from the nftables counters.",
                &["rule"],
            )?,
            sip_requests: counter_vec(
                "sip_requests_total",
                "SIP requests by method and direction.",
                &["method", "direction"],
            )?,
            sip_responses: counter_vec(
                "sip_responses_total",
                "SIP responses by status class and direction.",
                &["class", "direction"],
            )?,
            sip_transactions_active: gauge(
                "sip_transactions_active",
                "SIP transactions in progress.",
            )?,
            sip_held_bytes: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "sip_held_bytes",
                        "Bytes of SIP messages held (transactions for resending, calls for answering), each against a 64 MiB budget.",
                    ),
                    &["holder"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            sip_retransmissions: counter(
                "sip_retransmissions_total",
                "SIP messages retransmitted by the gateway.",
            )?,
            sip_parse_failures: counter_vec(
                "sip_parse_failures_total",
                "SIP messages that could not be parsed, by reason.",
                &["reason"],
            )?,
            sip_rejected: counter_vec(
                "sip_rejected_total",
                "SIP requests refused by the gateway's checks, by status code.",
                &["status"],
            )?,
            sip_transport_events: counter_vec(
                "sip_transport_events_total",
                "SIP transport events: drops, refused and timed-out connections, TLS failures.",
                &["event"],
            )?,
            sip_unknown_peer: counter(
                "sip_unknown_peer_total",
                "SIP messages from addresses outside every trunk's peer networks.",
            )?,
            trunk_up: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "trunk_up",
                        "1 while the trunk peer answers OPTIONS keepalives.",
                    ),
                    &["trunk"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            trunk_registered: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "trunk_registered",
                        "1 while the registration trunk's binding is current.",
                    ),
                    &["trunk"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            calls_active: gauge("calls_active", "Calls in progress.")?,
            calls_total: counter_vec("calls_total", "Calls ended, by outcome.", &["outcome"])?,
            rtp_packets: counter_vec(
                "rtp_packets_total",
                "RTP packets by direction.",
                &["direction"],
            )?,
            rtp_bytes: counter_vec("rtp_bytes_total", "RTP bytes by direction.", &["direction"])?,
            rtp_dropped: counter_vec(
                "rtp_dropped_total",
                "RTP packets dropped, by reason.",
                &["reason"],
            )?,
            rtp_unproven: counter(
                "rtp_unproven_peer_total",
                "RTP packets not sent: the peer's address was not yet proven by its media or an ACK.",
            )?,
            incident_active: gauge(
                "incident_active",
                "1 during an incident lockdown (tollgate incident lockdown): agents out but break-glass, no exports, erasures or shredding.",
            )?,
            cdr_retention_held: gauge(
                "cdr_retention_held",
                "1 while call record retention holds a shred (clock jump or many days at once) for tollgate records shred --confirm.",
            )?,
            admin_refused: counter(
                "admin_http_refused_total",
                "Requests for /metrics refused because they came from outside firewall.admin_networks.",
            )?,
            calls_over_trunk_limit: counter(
                "calls_over_trunk_limit_total",
                "Calls refused because their trunk had every one of its max_calls slots taken.",
            )?,
            sdp_address_refused: counter_vec(
                "sdp_address_refused_total",
                "SDP media addresses refused for their scope (loopback, private, multicast, ...), or from an untrusted peer for naming another host than itself (not_signalling_source).",
                &["scope"],
            )?,
            rtp_jitter_seconds: histogram(
                "rtp_jitter_seconds",
                "Interarrival jitter of each received stream at its end.",
                vec![0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1],
            )?,
            rtp_loss_ratio: histogram(
                "rtp_loss_ratio",
                "Fraction of packets lost on each received stream at its end.",
                vec![0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2],
            )?,
            rtp_mos: histogram(
                "rtp_mos",
                "E-model MOS estimate (G.711) of each received stream at its end.",
                vec![1.0, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4],
            )?,
            data_free_bytes: gauge(
                "data_free_bytes",
                "Bytes free to the gateway on the data directory's filesystem.",
            )?,
            data_total_bytes: gauge(
                "data_total_bytes",
                "Size of the data directory's filesystem, in bytes.",
            )?,
            cdr_store_bytes: gauge(
                "cdr_store_bytes",
                "Bytes the call record database takes on disk.",
            )?,
            agents_connected: gauge("agents_connected", "Agents logged in over QUIC.")?,
            agents_available: gauge(
                "agents_available",
                "Agents logged in, available and not on a call.",
            )?,
            agent_auth_failures: counter_vec(
                "agent_auth_failures_total",
                "Failed agent logins, by reason.",
                &["reason"],
            )?,
            agent_quic_retries: counter(
                "agent_quic_retries_total",
                "Agent connections sent a QUIC Retry to prove their address before any handshake work.",
            )?,
            agent_udp_send_calls: counter(
                "agent_udp_send_calls_total",
                "System calls (sendmmsg) that sent the agents' QUIC packets.",
            )?,
            agent_udp_datagrams_sent: counter(
                "agent_udp_datagrams_sent_total",
                "UDP datagrams sent to agents; divided by agent_udp_send_calls_total, the batch size.",
            )?,
            agent_udp_send_refused: counter(
                "agent_udp_send_refused_total",
                "UDP datagrams to agents the kernel refused (no route, a firewall rule); QUIC takes them as lost.",
            )?,
            agent_lockouts: counter(
                "agent_lockouts_total",
                "Agents locked out after repeated wrong codes (each lockout in a row twice as long).",
            )?,
            privacy_anomalies: counter_vec(
                "privacy_anomalies_total",
                "Unusual access to customer data, by kind (each also an audit entry).",
                &["kind"],
            )?,
            agent_protocol_errors: counter_vec(
                "agent_protocol_errors_total",
                "Agent sessions ended for a protocol error, by reason.",
                &["reason"],
            )?,
            agent_calls: counter_vec(
                "agent_calls_total",
                "Calls to and from agents that ended, by direction and outcome.",
                &["direction", "outcome"],
            )?,
            agent_datagrams_dropped: counter_vec(
                "agent_datagrams_dropped_total",
                "Media datagrams to or from agents dropped, by reason.",
                &["reason"],
            )?,
            config_reloads: counter_vec(
                "config_reloads_total",
                "Configuration reloads (SIGHUP), by outcome.",
                &["outcome"],
            )?,
            config_last_reload_successful: gauge(
                "config_last_reload_successful",
                "1 unless the last configuration reload was refused.",
            )?,
            config_restart_pending: gauge(
                "config_restart_pending",
                "Changed settings that take effect only at the next restart.",
            )?,
            registry,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8192);
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    /// Pre-creates the label sets an admin expects to see at zero that
    /// this layer knows of; the daemon adds those the components below
    /// it name (drop reasons, IDS reasons, firewall rules).
    pub fn prime(&self) {
        for d in ["in", "out"] {
            for m in ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"] {
                self.sip_requests.with_label_values(&[m, d]);
            }
            for c in ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"] {
                self.sip_responses.with_label_values(&[c, d]);
            }
            self.rtp_packets.with_label_values(&[d]);
            self.rtp_bytes.with_label_values(&[d]);
        }
        for o in ["answered", "cancelled", "rejected", "failed"] {
            self.calls_total.with_label_values(&[o]);
        }
        for r in AUTH_FAILURES {
            self.agent_auth_failures.with_label_values(&[r]);
        }
        for r in ["too_large", "congestion", "unknown_flow"] {
            self.agent_datagrams_dropped.with_label_values(&[r]);
        }
        for o in ["applied", "refused"] {
            self.config_reloads.with_label_values(&[o]);
        }
        for k in crate::telemetry::anomaly::Kind::ALL {
            self.privacy_anomalies.with_label_values(&[k.label()]);
        }
        self.config_last_reload_successful.set(1);
    }
}

/// "1xx" ... "6xx" for a status code.
pub fn status_class(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "6xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_bounded_labels() {
        let m = Metrics::new().expect("registers");
        m.prime();
        m.sip_requests.with_label_values(&["INVITE", "in"]).inc();
        m.rtp_jitter_seconds.observe(0.003);
        let text = String::from_utf8(m.render()).expect("utf8");
        assert!(
            text.contains("tollgate_sip_requests_total{direction=\"in\",method=\"INVITE\"} 1"),
            "{text}"
        );
        assert!(text.contains("tollgate_calls_total{outcome=\"answered\"} 0"));
        assert!(text.contains("tollgate_rtp_jitter_seconds_bucket{le=\"0.005\"} 1"));
        assert_eq!(status_class(183), "1xx");
        assert_eq!(status_class(486), "4xx");
    }
}
