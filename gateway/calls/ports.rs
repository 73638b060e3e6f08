//! The pool of RTP ports: even ports of the configured range, bound in
//! pairs (RTP, and RTCP above it unless rtcp-mux). Each pair comes with a
//! [`Lease`] that travels with its sockets into the media task and gives
//! the port back when dropped, on every path (a refused offer, an ended
//! call, a task that stops on its own), so no path has to remember to.
//!
//! Each call's port is chosen at random in the range (then the next free
//! one), so a spoofer cannot predict the port of the next call from the
//! last one's SDP and race its media there. The core passes the random
//! start in (from its seeded token stream), so a simulation replays it.
//!
//! The pool is shared between the core, which takes ports (and gives
//! back those of refused offers and media it drops unstarted), and the
//! media tasks, which give theirs back when they end: a lock per call
//! set-up and end, never per packet.

use std::collections::HashSet;
use std::net::{IpAddr, UdpSocket};
use std::sync::{Arc, Mutex, PoisonError};

/// Even RTP ports of the configured range.
pub struct Ports {
    lo: u16,
    hi: u16,
    used: Arc<Mutex<HashSet<u16>>>,
}

/// A port pair in use: its sockets' port comes back to the pool when the
/// lease is dropped.
pub struct Lease {
    port: u16,
    used: Arc<Mutex<HashSet<u16>>>,
}

/// A bound pair: the RTP socket, the RTCP one (`None` with rtcp-mux) and
/// their lease.
pub struct Bound {
    pub rtp: UdpSocket,
    pub rtcp: Option<UdpSocket>,
    pub lease: Lease,
}

impl Lease {
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.port);
    }
}

impl Ports {
    pub fn new((lo, hi): (u16, u16)) -> Self {
        Self {
            lo,
            hi,
            used: Arc::default(),
        }
    }

    /// Even ports of the range that have room for RTCP above them.
    fn slots(&self) -> u32 {
        u32::from(self.hi.saturating_sub(1).saturating_sub(self.lo)) / 2 + 1
    }

    /// Ports in use now.
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Binds an even port at the place `pick` chooses in the range, or
    /// the next free one after it (and the odd one above it unless
    /// `mux`); `None` if no port is free within 4096 tries.
    pub fn bind(&self, ip: IpAddr, mux: bool, pick: u32) -> Option<Bound> {
        let slots = self.slots();
        let start = pick % slots;
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        for k in 0..slots.min(4096) {
            let port = self.lo + (((start + k) % slots) * 2) as u16;
            if used.contains(&port) {
                continue;
            }
            let Ok(rtp) = UdpSocket::bind((ip, port)) else {
                continue;
            };
            let rtcp = if mux {
                None
            } else {
                match UdpSocket::bind((ip, port + 1)) {
                    Ok(s) => Some(s),
                    Err(_) => continue,
                }
            };
            used.insert(port);
            return Some(Bound {
                rtp,
                rtcp,
                lease: Lease {
                    port,
                    used: self.used.clone(),
                },
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_random_even_free_and_come_back_when_dropped() {
        let pool = Ports::new((47000, 47999));
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let mut tokens = crate::sip::build::Tokens::seeded(3);
        let mut held = Vec::new();
        for _ in 0..20 {
            let b = pool.bind(ip, false, tokens.u32()).expect("a port");
            let port = b.lease.port();
            assert!(
                port.is_multiple_of(2) && (47000..47999).contains(&port),
                "{port}"
            );
            assert!(
                held.iter().all(|h: &Bound| h.lease.port() != port),
                "{port} handed out twice"
            );
            held.push(b);
        }
        let got: Vec<u16> = held.iter().map(|b| b.lease.port()).collect();
        // Twenty ports in sequence would differ by 2 each time; chosen at
        // random, consecutive ones rarely do (the chance that all 19 steps
        // are +2 is 1 in 500^19).
        let sequential = got.windows(2).filter(|w| w[1] == w[0] + 2).count();
        assert!(sequential < 19, "sequential ports: {got:?}");
        assert_eq!(pool.in_use(), 20);
        // The same pick lands on the next free port, not a taken one.
        let again = pool
            .bind(ip, true, u32::from((got[0] - 47000) / 2))
            .expect("a port");
        assert_ne!(again.lease.port(), got[0]);
        drop(again);
        let first = held.remove(0);
        drop(first);
        assert_eq!(pool.in_use(), 19);
        // Its port (sockets closed with the lease) can be taken again.
        let back = pool
            .bind(ip, false, u32::from((got[0] - 47000) / 2))
            .expect("a port");
        assert_eq!(back.lease.port(), got[0]);
    }
}
