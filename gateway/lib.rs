//! Tollgate: a media gateway between carriers' SIP trunks and a call centre's agents.
pub mod admin;
pub mod agent;
pub mod calls;
pub mod cdr;
pub mod config;
pub mod demo;
pub mod guard;
pub mod keys;
pub mod media;
pub mod sip;

/// Unix milliseconds of `t` (0 before 1970): the wall-clock times call
/// records, bans and the audit trail carry.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    unix_ms(std::time::SystemTime::now())
}
