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
