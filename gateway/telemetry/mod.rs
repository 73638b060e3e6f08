//! What the daemon tells the people who watch it, as a layer every
//! component below the daemon may use and which uses none of them: the
//! Prometheus metrics ([`metrics`]) and the tamper-evident audit trail
//! ([`audit`], sealed with `keys`).

pub mod anomaly;
pub mod audit;
pub mod metrics;
