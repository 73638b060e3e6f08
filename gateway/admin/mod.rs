//! The admin side: metrics and the HTTP listener that serves them, and
//! the local control socket `tollgate firewall bans|unban` talk to.

pub mod audit;
pub mod control;
pub mod http;
pub mod metrics;
pub mod roles;
pub mod systemd;
