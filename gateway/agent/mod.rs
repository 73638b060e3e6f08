//! Agents: the QUIC side of the gateway.
//!
//! - [`pki`]: the appliance's CA, agents' and the server's certificates;
//! - [`totp`]: the second factor;
//! - [`store`]: enrolled agents (enrol, revoke, list), shared by the CLI
//!   and a running gateway.

pub mod pki;
pub mod store;
pub mod totp;
