//! SIP signalling, sans-IO apart from the transport (later).
//!
//! - [`message`]: framing, parsing and serialization of SIP messages;
//! - [`header`]: typed header values; [`uri`]: SIP URIs;
//! - [`check`]: the checks a request or response must pass before the
//!   transaction layer sees it, each mapped to the response it earns.

pub mod build;
pub mod check;
pub mod digest;
pub mod header;
pub mod message;
mod scan;
pub mod sdp;
pub mod timer;
pub mod transaction;
pub mod transport;
pub mod uri;
