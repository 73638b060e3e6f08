//! The pool of RTP ports: even ports of the configured range, bound in
//! pairs (RTP, and RTCP above it unless rtcp-mux), handed out and
//! returned.
//!
//! Each call's port is chosen at random in the range (then the next free
//! one), so a spoofer cannot predict the port of the next call from the
//! last one's SDP and race its media there.

use std::collections::HashSet;
use std::net::IpAddr;

/// Even RTP ports of the configured range, handed out and returned.
pub(super) struct PortPool {
    lo: u16,
    hi: u16,
    used: HashSet<u16>,
}

impl PortPool {
    pub(super) fn new((lo, hi): (u16, u16)) -> Self {
        Self {
            lo,
            hi,
            used: HashSet::new(),
        }
    }

    /// Even ports of the range that have room for RTCP above them.
    fn slots(&self) -> u32 {
        u32::from(self.hi.saturating_sub(1).saturating_sub(self.lo)) / 2 + 1
    }

    /// Binds an even port at a random place in the range, or the next
    /// free one after it (and the odd one above it unless `mux`); `None`
    /// if no port is free within 4096 tries.
    pub(super) fn bind(
        &mut self,
        ip: IpAddr,
        mux: bool,
    ) -> Option<(u16, std::net::UdpSocket, Option<std::net::UdpSocket>)> {
        let slots = self.slots();
        let start = super::media::rand_u32() % slots;
        for k in 0..slots.min(4096) {
            let port = self.lo + (((start + k) % slots) * 2) as u16;
            if self.used.contains(&port) {
                continue;
            }
            let Ok(rtp) = std::net::UdpSocket::bind((ip, port)) else {
                continue;
            };
            let rtcp = if mux {
                None
            } else {
                match std::net::UdpSocket::bind((ip, port + 1)) {
                    Ok(s) => Some(s),
                    Err(_) => continue,
                }
            };
            self.used.insert(port);
            return Some((port, rtp, rtcp));
        }
        None
    }

    pub(super) fn release(&mut self, port: u16) {
        self.used.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_random_even_and_free() {
        let mut pool = PortPool::new((47000, 47999));
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let mut got = Vec::new();
        let mut held = Vec::new();
        for _ in 0..20 {
            let (port, rtp, rtcp) = pool.bind(ip, false).expect("a port");
            assert!(port % 2 == 0 && (47000..47999).contains(&port), "{port}");
            assert!(!got.contains(&port), "{port} handed out twice");
            got.push(port);
            held.push((rtp, rtcp));
        }
        // Twenty ports in sequence would differ by 2 each time; chosen at
        // random, consecutive ones rarely do (the chance that all 19 steps
        // are +2 is 1 in 500^19).
        let sequential = got.windows(2).filter(|w| w[1] == w[0] + 2).count();
        assert!(sequential < 19, "sequential ports: {got:?}");
        pool.release(got[0]);
        assert!(!pool.used.contains(&got[0]));
    }
}
