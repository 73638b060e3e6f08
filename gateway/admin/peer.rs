//! Who is on the other end of the admin socket: the kernel's record of
//! the connecting process's supplementary groups (`SO_PEERGROUPS`, Linux
//! 4.13), taken when it connected.
//!
//! Reading `/proc/PID/status` instead is racy: the process may have
//! exited and its PID been reused, or it may have changed its groups
//! since it connected; it also needs `/proc` visible to the service
//! (no `ProtectProc=invisible`).
//!
//! # Why this module has `unsafe`
//!
//! Neither std, tokio nor rustix offers `SO_PEERGROUPS` (rustix has
//! `SO_PEERCRED` only), so this calls `getsockopt(2)` through `libc`. The
//! call writes at most `len` bytes into a buffer of `len` bytes we own and
//! reports how many it wrote; nothing else is shared with the kernel.

#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

/// Groups a Linux process can have at most (`NGROUPS_MAX`).
const MAX_GROUPS: usize = 65_536;

/// The supplementary groups of the process that connected `sock`, as the
/// kernel recorded them at `connect(2)`.
pub fn groups(sock: &impl AsRawFd) -> std::io::Result<Vec<u32>> {
    let fd = sock.as_raw_fd();
    let mut want = 64usize;
    loop {
        let mut buf = vec![0 as libc::gid_t; want];
        let mut len = libc::socklen_t::try_from(want * std::mem::size_of::<libc::gid_t>())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: `buf` is `len` bytes we own and keep alive across the
        // call; the kernel writes at most `len` bytes and sets `len` to
        // what it wrote (or, with ERANGE, to what it needs).
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            buf.truncate(n.min(want));
            return Ok(buf);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && n > want && n <= MAX_GROUPS {
            want = n;
            continue;
        }
        return Err(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_has_the_groups_it_connected_with() {
        // Our own process on both ends: the kernel's record is ours.
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let mut mine: Vec<u32> = crate::admin::roles::own_status("Groups:")
            .expect("status")
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let mut got = groups(&a).expect("SO_PEERGROUPS");
        mine.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, mine);
    }
}
