//! The media core: RTP, RTCP, SRTP/SRTCP and per-stream statistics.
//!
//! Sans-IO throughout: every function here takes bytes (and, where time
//! matters, an injected `now`) and returns what happened. Nothing in this
//! module opens a socket, reads a clock or allocates per packet; the caller
//! owns the buffers. `media` is a leaf: it knows no signalling, agents or
//! records.

pub mod g711;
pub mod leg;
pub mod replay;
pub mod rtcp;
pub mod rtp;
pub mod selftest;
pub mod srtp;
pub mod stats;
