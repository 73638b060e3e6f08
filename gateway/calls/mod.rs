//! The call side: one core task owns the SIP transaction layer and every
//! call.
//!
//! - `call`: one answered call's state; [`EndReason`]: why a call ends;
//! - [`core`]: dialogs (ACK, BYE, CANCEL), answering; it queues what it
//!   sends for its driver and takes time as an argument;
//! - [`driver`]: the loop that owns the transport and feeds the core;
//! - `hangup`: how an answered call ends, and every call at shutdown;
//! - `inbound`: new calls from a trunk, routed by number;
//! - `outbound`: calls placed out another trunk (B2BUA);
//! - `in_dialog`: re-INVITE and UPDATE from either end of any dialog;
//! - `keepalive`, `register`: OPTIONS keepalives and registration trunks;
//! - [`reload`]: a reloaded configuration applied to the running core;
//! - [`media`], `bridge`: the media tasks of test services and bridges;
//! - `tasks`: the media tasks the core asks its driver to start;
//! - [`tone`], [`number`], `ports`: the 1 kHz tone, E.164, RTP ports
//!   (leased: a port comes back when its media is dropped);
//! - `sim` (tests): whole calls on the real core on virtual time.

mod agent_dial;
pub mod agent_media;
pub mod agents;
mod bridge;
mod call;
pub mod core;
pub mod driver;
mod end;
mod hangup;
pub mod history;
mod in_dialog;
mod inbound;
mod keepalive;
pub mod media;
pub mod number;
mod outbound;
pub mod ports;
mod records;
mod refresh;
mod register;
pub mod relay;
pub mod reload;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod sim_tests;
mod tasks;
pub mod tone;
mod trunk_slots;

pub use end::EndReason;
