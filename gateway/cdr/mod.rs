//! Call detail records: one per call, sealed at rest, kept for
//! `retention_days`.
//!
//! - [`record`]: what a record holds, masking and CSV;
//! - [`store`]: sled for sealed records, the day keys beside it,
//!   retention by crypto-shredding, master-key rotation;
//! - [`writer`]: the thread that writes them in durable groups.

pub mod record;
pub mod store;
pub mod writer;
