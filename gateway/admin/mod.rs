//! The admin side: metrics and the HTTP listener that serves them, the
//! local control socket the operator commands talk to, the audit trail,
//! systemd's protocol and configuration reloads.

pub mod audit;
pub mod control;
pub mod http;
pub mod metrics;
mod peer;
pub mod reload;
pub mod roles;
pub mod systemd;
