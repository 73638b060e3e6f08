//! Reading UDP payloads out of a pcap file (libpcap format, as tcpdump
//! writes and sipp's audio files are), for checking what crossed the wire.

/// The UDP payloads in `file`, in order, with their destination ports.
pub fn udp_payloads(file: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let u32_at = |b: &[u8], at: usize, swap: bool| {
        let v = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if swap {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        }
    };
    assert!(file.len() >= 24, "pcap too short");
    let magic = u32::from_le_bytes([file[0], file[1], file[2], file[3]]);
    let swap = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => false,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => true,
        other => panic!("not a pcap file (magic {other:#x})"),
    };
    let link = u32_at(file, 20, swap);
    let link_len = match link {
        0 => 4,    // BSD loopback
        1 => 14,   // Ethernet
        101 => 0,  // raw IP
        113 => 16, // Linux cooked
        276 => 20, // Linux cooked v2
        other => panic!("link type {other} not handled"),
    };
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= file.len() {
        let len = u32_at(file, at + 8, swap) as usize;
        let frame = &file[at + 16..(at + 16 + len).min(file.len())];
        at += 16 + len;
        let Some(ip) = frame.get(link_len..) else {
            continue;
        };
        if ip.first().map(|b| b >> 4) != Some(4) || ip.get(9) != Some(&17) {
            continue; // IPv4 UDP only
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let Some(udp) = ip.get(ihl..) else { continue };
        if udp.len() < 8 {
            continue;
        }
        let dport = u16::from_be_bytes([udp[2], udp[3]]);
        let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        let payload = &udp[8..ulen.clamp(8, udp.len())];
        out.push((dport, payload.to_vec()));
    }
    out
}

/// Whether the tests run as root (captures need it; CI is root).
pub fn is_root() -> bool {
    // `id -u` rather than a libc call: no unsafe in tests.
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A tcpdump capture on loopback, running until [`Capture::stop`].
pub struct Capture {
    child: std::process::Child,
    path: std::path::PathBuf,
}

impl Capture {
    /// Starts capturing what matches `filter` into `path`, and returns once
    /// tcpdump says it is listening.
    pub fn start(path: &std::path::Path, filter: &str) -> Self {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new("tcpdump")
            .args(["-i", "lo", "-U", "-n", "-w"])
            .arg(path)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump runs (Debian package tcpdump; scripts/deps installs it)");
        // Bounded by tcpdump's own output.
        let stderr = child.stderr.take().expect("stderr");
        let listening = BufReader::new(stderr)
            .lines()
            .take(20)
            .map_while(Result::ok)
            .any(|l| l.contains("listening on"));
        assert!(listening, "tcpdump did not start");
        Self {
            child,
            path: path.to_path_buf(),
        }
    }

    /// Stops the capture; its UDP payloads with their destination ports.
    pub fn stop(mut self) -> Vec<(u16, Vec<u8>)> {
        let _ = std::process::Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        udp_payloads(&std::fs::read(&self.path).expect("capture file"))
    }
}
