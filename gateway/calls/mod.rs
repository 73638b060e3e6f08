//! The call side: the call core (routing, dialogs, bridging), the test
//! services' media, trunk keepalives, numbers and RTP ports.

mod bridge;
pub mod core;
mod keepalive;
pub mod media;
pub mod number;
mod outbound;
mod ports;
mod register;
pub mod tone;
