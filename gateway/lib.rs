//! Tollgate: a media gateway between carriers' SIP trunks and a call centre's agents.
pub mod admin;
pub mod agent;
pub mod calls;
pub mod cdr;
pub mod config;
pub mod crypto;
pub mod daemon;
pub(crate) mod deadlines;
pub mod demo;
pub mod guard;
pub mod incident;
pub mod keys;
pub mod loadgen;
pub mod media;
pub mod number;
pub mod shards;
pub mod sip;
pub mod slots;
pub mod telemetry;

/// Unix milliseconds of `t` (0 before 1970): the wall-clock times call
/// records, bans and the audit trail carry.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The wall clock, read at a monotonic instant: what call records are
/// stamped with and calling hours are judged by. The system's reads the
/// operating system's clock (whatever the instant); a simulation's
/// follows its virtual instants from a fixed start, so a test can place
/// a call at 08:59 on a Monday.
#[derive(Clone)]
pub struct Wall(std::sync::Arc<dyn Fn(std::time::Instant) -> std::time::SystemTime + Send + Sync>);

impl Wall {
    pub fn system() -> Self {
        Self(std::sync::Arc::new(|_| std::time::SystemTime::now()))
    }

    /// `wall` at `start`, moving as the instants passed to [`Wall::at`] do.
    pub fn following(start: std::time::Instant, wall: std::time::SystemTime) -> Self {
        Self(std::sync::Arc::new(move |now| {
            wall + now.saturating_duration_since(start)
        }))
    }

    pub fn at(&self, now: std::time::Instant) -> std::time::SystemTime {
        (self.0)(now)
    }

    /// Unix milliseconds at `now`.
    pub fn ms(&self, now: std::time::Instant) -> u64 {
        unix_ms(self.at(now))
    }
}

/// `ip` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a
/// dual-stack socket reports IPv4 peers) taken as the IPv4 address, so
/// networks written as IPv4 match it.
pub fn unmapped(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` (IPv4-mapped taken as IPv4) is in any of `nets`.
pub fn in_networks(nets: &[ipnet::IpNet], ip: std::net::IpAddr) -> bool {
    let ip = unmapped(ip);
    nets.iter().any(|n| n.contains(&ip))
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    unix_ms(std::time::SystemTime::now())
}
