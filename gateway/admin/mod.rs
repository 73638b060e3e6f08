//! The admin side, the top of the daemon: the HTTP listener that serves
//! the metrics, the local control socket the operator commands talk to,
//! master-key rotation (which re-seals every store), systemd's protocol
//! and configuration reloads. What it reports through (metrics, the
//! audit trail) is `telemetry`, a layer below everything.

pub mod approvals;
pub mod compliance;
pub mod control;
pub mod drill;
pub mod erase;
pub mod http;
pub mod oversight;
mod peer;
pub mod reload;
pub mod roles;
pub mod rotate;
pub mod systemd;
