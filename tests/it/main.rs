//! Tollgate's integration tests, linked once: each module was a test
//! binary of its own, and linking 30 binaries (thin LTO, one codegen unit)
//! took most of the suite's build on two cores.
//!
//! The modules share one process, so what a test holds must be its own
//! across modules, not only within its file: fixed loopback ports (each
//! module keeps to its own band; the list is in `common::gateway`), a
//! gateway's name (its temporary directory is `tollgate-{name}-{pid}`),
//! and network namespaces' tags. Gateways' RTP ranges may overlap: the
//! port pool skips ports in use.
//!
//! `no_alloc` stays a binary of its own: it installs a counting global
//! allocator that would count every other test's allocations.

mod common;

mod agent_auth;
mod agent_call_sim;
mod agent_calls;
mod caller_privacy;
mod cdr_crash;
mod cdr_records;
mod cli;
mod compliance;
mod config_reload;
mod daemon;
mod firewall_ruleset;
mod guard_ids;
mod guard_netns;
mod incident;
mod keys_rotate;
mod layers;
mod libsrtp_interop;
mod loadgen;
mod media_path;
mod operators;
mod prometheus_rules;
mod sdes_srtp_call;
mod sip_limits;
mod sip_tls;
mod sip_torture;
mod sip_torture_live;
mod sip_transactions;
mod sipp_calls;
mod srtp_hostile;
mod srtp_vectors;
mod systemd_notify;
mod systemd_units;
mod trunk_calls;
mod trunk_keepalive;
mod trunk_register;
mod trunk_tls;
