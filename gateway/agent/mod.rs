//! Agents: the QUIC side of the gateway.
//!
//! - [`pki`]: the appliance's CA, agents' and the server's certificates;
//! - [`totp`]: the second factor; [`guard`]: lockouts after failures;
//! - [`store`]: enrolled agents (enrol, revoke, list), shared by the CLI
//!   and a running gateway;
//! - [`protocol`]: the control protocol and media datagram framing
//!   (specified in `PROTOCOL.md`);
//! - [`server`]: the QUIC listener and sessions ([`cid`]: its connection
//!   IDs), [`link`]: the core's
//!   handle on one; [`client`]: the agent
//!   side; [`phone`] and [`wav`]: the headless softphone for tests, load
//!   and smoke tests.

pub mod cid;
pub mod client;
pub mod engine;
pub mod guard;
pub mod link;
pub mod phone;
pub mod pki;
pub mod protocol;
pub mod server;
pub mod socket;
pub mod store;
pub mod totp;
pub mod wav;
