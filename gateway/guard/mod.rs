//! The guard: what keeps floods, scanners and brute force from costing
//! the gateway anything, without ever banning a configured carrier.
//!
//! - [`rules`]: the IDS rules (`rulesets/ids.toml`), validated;
//! - [`ids`]: the IDS core, sans-IO: facts of a message in, a verdict out.
//!
//! The firewall table itself is `rulesets/tollgate.nft`.

pub mod ids;
pub mod rules;
