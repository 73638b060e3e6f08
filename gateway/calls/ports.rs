//! The pool of RTP ports: even ports of the configured range, bound in
//! pairs (RTP, and RTCP above it unless rtcp-mux), handed out and
//! returned.

use std::collections::HashSet;
use std::net::IpAddr;

/// Even RTP ports of the configured range, handed out and returned.
pub(super) struct PortPool {
    lo: u16,
    hi: u16,
    next: u16,
    used: HashSet<u16>,
}

impl PortPool {
    pub(super) fn new((lo, hi): (u16, u16)) -> Self {
        Self {
            lo,
            hi,
            next: lo,
            used: HashSet::new(),
        }
    }

    /// Binds an even port (and the odd one above it unless `mux`).
    pub(super) fn bind(
        &mut self,
        ip: IpAddr,
        mux: bool,
    ) -> Option<(u16, std::net::UdpSocket, Option<std::net::UdpSocket>)> {
        let count = usize::from((self.hi - self.lo) / 2 + 1);
        for _ in 0..count.min(4096) {
            let port = self.next;
            self.next = if self.next.saturating_add(2) > self.hi.saturating_sub(1) {
                self.lo
            } else {
                self.next + 2
            };
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
