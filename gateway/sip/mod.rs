//! SIP signalling, sans-IO apart from the transport (later).
//!
//! - [`message`]: framing, parsing and serialization of SIP messages;
//! - [`framer`]: messages and keepalives cut from a TCP or TLS stream;
//! - [`header`]: typed header values; [`uri`]: SIP URIs;
//! - [`dialog`]: one dialog's identities, target, route set and CSeqs;
//! - [`check`]: the checks a request or response must pass before the
//!   transaction layer sees it, each mapped to the response it earns;
//! - [`privacy`]: the calling party, and whether it withheld its number.

pub mod build;
pub mod check;
pub mod dialog;
pub mod digest;
pub mod framer;
pub mod header;
pub mod message;
pub mod privacy;
mod scan;
pub mod sdp;
pub mod timer;
pub mod transaction;
pub mod transport;
pub mod uri;

/// SIP bytes the gateway keeps or queues that may carry an SDES key (an
/// RFC 4568 `a=crypto` line in an offer or answer): wiped, whole
/// capacity, when dropped or replaced, so a key does not outlive its
/// message in freed memory. Received datagrams land in reused buffers
/// that the next message overwrites.
pub type WipedBytes = zeroize::Zeroizing<Vec<u8>>;
