//! The admin side: metrics and the HTTP listener that serves them.

pub mod http;
pub mod metrics;
