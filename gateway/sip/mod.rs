//! SIP signalling, sans-IO apart from the transport (later).
//!
//! - [`message`]: framing, parsing and serialization of SIP messages;
//! - [`framer`]: messages and keepalives cut from a TCP or TLS stream;
//! - [`header`]: typed header values; [`uri`]: SIP URIs;
//! - [`check`]: the checks a request or response must pass before the
//!   transaction layer sees it, each mapped to the response it earns.

pub mod build;
pub mod check;
pub mod digest;
pub mod framer;
pub mod header;
pub mod message;
mod scan;
pub mod sdp;
pub mod timer;
pub mod transaction;
pub mod transport;
pub mod uri;
