//! What the load generator puts in each 20 ms of G.711 and how a
//! receiver checks it. The gateway relays payloads unchanged (it
//! re-originates the RTP header, re-seals the SRTP), so every payload
//! carries its stream, its number in the stream and its send time, and the
//! rest is a pattern of those: a receiver tells loss, reordering,
//! duplicates, corruption and cross-talk (another call's audio) from the
//! payload alone, and one-way latency from the send time.

/// A G.711 packet's audio: 20 ms at 8 kHz.
pub const LEN: usize = 160;
const MAGIC: &[u8; 4] = b"TGLG";
const HEADER: usize = 4 + 4 + 4 + 8;

/// A trunk call's stream is its call index; an agent's has this bit set.
pub const AGENT: u32 = 0x8000_0000;

/// Writes the payload of packet `n` of `stream`, sent at `sent_ns` (the
/// run's clock).
pub fn write(out: &mut [u8; LEN], stream: u32, n: u32, sent_ns: u64) {
    out[..4].copy_from_slice(MAGIC);
    out[4..8].copy_from_slice(&stream.to_be_bytes());
    out[8..12].copy_from_slice(&n.to_be_bytes());
    out[12..20].copy_from_slice(&sent_ns.to_be_bytes());
    let seed = seed(stream, n, sent_ns);
    for (j, b) in out[HEADER..].iter_mut().enumerate() {
        *b = fill(seed, j);
    }
}

/// The pattern's seed: every header field counts, so a changed header
/// byte no longer matches the pattern.
fn seed(stream: u32, n: u32, sent_ns: u64) -> u64 {
    (u64::from(stream) << 32 | u64::from(n)) ^ sent_ns.rotate_left(17)
}

fn fill(seed: u64, j: usize) -> u8 {
    let s = seed.to_le_bytes();
    s[j % 8].wrapping_mul(31) ^ (j as u8).wrapping_mul(7) ^ s[(j / 8) % 8]
}

/// An RTP packet of ours: a 12-byte header and a payload.
pub const RTP_LEN: usize = 12 + LEN;

/// One stream's sending side: its RTP header fields and packet count.
#[derive(Debug)]
pub struct Sender {
    pub stream: u32,
    pub pt: u8,
    ssrc: u32,
    seq: u16,
    ts: u32,
    n: u32,
}

impl Sender {
    /// A stream starting at random header values.
    pub fn new(stream: u32, pt: u8) -> Self {
        let r = crate::crypto::random_u32();
        Self {
            stream,
            pt,
            ssrc: r ^ 0x5a5a_5a5a,
            seq: r as u16,
            ts: r,
            n: 0,
        }
    }

    /// Writes the next packet (sent at `sent_ns`) to `out`.
    pub fn next(&mut self, out: &mut [u8; RTP_LEN], sent_ns: u64) {
        out[0] = 0x80;
        out[1] = self.pt & 0x7f;
        out[2..4].copy_from_slice(&self.seq.to_be_bytes());
        out[4..8].copy_from_slice(&self.ts.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let mut body = [0u8; LEN];
        write(&mut body, self.stream, self.n, sent_ns);
        out[12..].copy_from_slice(&body);
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(LEN as u32);
        self.n = self.n.wrapping_add(1);
    }
}

/// A payload that checked out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub stream: u32,
    pub n: u32,
    pub sent_ns: u64,
}

/// Reads and checks a payload; `None` if it is not one this generator
/// wrote, whole and unchanged.
pub fn read(p: &[u8]) -> Option<Packet> {
    if p.len() != LEN || &p[..4] != MAGIC {
        return None;
    }
    let stream = u32::from_be_bytes(p.get(4..8)?.try_into().ok()?);
    let n = u32::from_be_bytes(p.get(8..12)?.try_into().ok()?);
    let sent_ns = u64::from_be_bytes(p.get(12..20)?.try_into().ok()?);
    let seed = seed(stream, n, sent_ns);
    let intact = p[HEADER..]
        .iter()
        .enumerate()
        .all(|(j, &b)| b == fill(seed, j));
    intact.then_some(Packet { stream, n, sent_ns })
}

/// The measured window, in nanoseconds of the run's clock: packets sent
/// inside it are counted at both ends.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub from: u64,
    pub to: u64,
}

impl Window {
    pub fn holds(&self, ns: u64) -> bool {
        (self.from..self.to).contains(&ns)
    }
}

/// What one direction's receivers saw, summed over calls.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// Sent inside the window.
    pub sent: u64,
    /// Received, sent inside the window (first copies only).
    pub received: u64,
    /// Arrived after a later packet of its stream.
    pub reordered: u64,
    /// A second copy of a packet.
    pub duplicated: u64,
    /// Arrived more than 64 packets behind its stream: lost to a listener.
    pub late: u64,
    /// Not a payload this generator wrote (or changed on the way).
    pub corrupt: u64,
    /// Another stream's payload on a call that had one already:
    /// cross-talk.
    pub misrouted: u64,
}

impl Tally {
    pub fn add(&mut self, o: &Tally) {
        self.sent += o.sent;
        self.received += o.received;
        self.reordered += o.reordered;
        self.duplicated += o.duplicated;
        self.late += o.late;
        self.corrupt += o.corrupt;
        self.misrouted += o.misrouted;
    }

    /// Packets sent in the window that never arrived.
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }
}

/// One call's receiving end: which stream it carries and which of its
/// packets came.
#[derive(Debug, Default)]
pub struct Receiver {
    stream: Option<u32>,
    /// One past the highest packet number seen.
    next: u32,
    /// Bit i: packet `next - 1 - i` seen.
    seen: u64,
    pub tally: Tally,
}

impl Receiver {
    /// Takes one payload received at `now_ns`; pushes its one-way latency
    /// (microseconds) to `latency` when it was sent inside `window`.
    pub fn take(&mut self, p: &[u8], now_ns: u64, window: Window, latency: &mut Vec<u32>) {
        let Some(pk) = read(p) else {
            self.tally.corrupt += 1;
            return;
        };
        match self.stream {
            None => self.stream = Some(pk.stream),
            Some(s) if s != pk.stream => {
                self.tally.misrouted += 1;
                return;
            }
            Some(_) => {}
        }
        if self.next == 0 || pk.n >= self.next {
            let ahead = pk.n.wrapping_sub(self.next).wrapping_add(1);
            self.seen = if self.next == 0 || ahead >= 64 {
                1
            } else {
                (self.seen << ahead) | 1
            };
            self.next = pk.n.wrapping_add(1);
        } else {
            let behind = self.next - 1 - pk.n;
            // More than 64 packets (1.3 s of audio) late is as good as
            // lost, and might be a copy this window no longer remembers:
            // it is counted late, never received.
            if behind >= 64 {
                self.tally.late += 1;
                return;
            }
            if self.seen & (1 << behind) != 0 {
                self.tally.duplicated += 1;
                return;
            }
            self.seen |= 1 << behind;
            self.tally.reordered += 1;
        }
        if window.holds(pk.sent_ns) {
            self.tally.received += 1;
            let us = now_ns.saturating_sub(pk.sent_ns) / 1000;
            latency.push(u32::try_from(us).unwrap_or(u32::MAX));
        }
    }
}

/// The median, 99th percentile and maximum of `v` (sorted here).
pub fn percentiles(v: &mut [u32]) -> (u32, u32, u32) {
    if v.is_empty() {
        return (0, 0, 0);
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), v[v.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Window = Window {
        from: 0,
        to: u64::MAX,
    };

    fn payload(stream: u32, n: u32) -> [u8; LEN] {
        let mut p = [0u8; LEN];
        write(&mut p, stream, n, 1_000 + u64::from(n));
        p
    }

    #[test]
    fn a_payload_reads_back_and_a_changed_byte_does_not() {
        let p = payload(7, 42);
        assert_eq!(
            read(&p),
            Some(Packet {
                stream: 7,
                n: 42,
                sent_ns: 1042
            })
        );
        for at in 0..LEN {
            let mut bad = p;
            bad[at] ^= 0x10;
            assert_eq!(read(&bad), None, "a change at byte {at}");
        }
        assert_eq!(read(&p[..LEN - 1]), None);
    }

    #[test]
    fn a_receiver_counts_order_duplicates_crosstalk_and_the_window() {
        let mut r = Receiver::default();
        let mut lat = Vec::new();
        let window = Window {
            from: 1_002,
            to: 1_006,
        };
        for n in [0, 1, 3, 2, 3, 5, 4, 9] {
            r.take(&payload(1, n), 2_000 + u64::from(n), window, &mut lat);
        }
        r.take(&payload(2, 6), 5_000, ALL, &mut lat);
        r.take(b"not ours", 5_000, ALL, &mut lat);
        assert_eq!(r.tally.reordered, 2, "2 after 3, 4 after 5");
        assert_eq!(r.tally.duplicated, 1, "3 twice");
        assert_eq!(r.tally.misrouted, 1);
        assert_eq!(r.tally.corrupt, 1);
        // Sent at 1002..1006: packets 2, 3, 4 and 5, each once.
        assert_eq!(r.tally.received, 4);
        assert_eq!(lat, vec![1, 1, 1, 1], "1000 ns late, in us rounded down");
    }

    #[test]
    fn a_packet_far_behind_counts_late_not_received() {
        let mut r = Receiver::default();
        let mut lat = Vec::new();
        r.take(&payload(1, 0), 0, ALL, &mut lat);
        r.take(&payload(1, 500), 0, ALL, &mut lat);
        r.take(&payload(1, 0), 0, ALL, &mut lat);
        r.take(&payload(1, 400), 0, ALL, &mut lat);
        assert_eq!(
            (r.tally.reordered, r.tally.duplicated, r.tally.late),
            (0, 0, 2)
        );
        assert_eq!(r.tally.received, 2, "late packets are not received");
    }

    #[test]
    fn a_sender_numbers_its_packets_and_steps_its_header() {
        let mut s = Sender::new(9, 8);
        let (mut a, mut b) = ([0u8; RTP_LEN], [0u8; RTP_LEN]);
        s.next(&mut a, 5);
        s.next(&mut b, 25);
        assert_eq!((a[0], a[1]), (0x80, 8));
        let seq = |p: &[u8]| u16::from_be_bytes([p[2], p[3]]);
        let ts = |p: &[u8]| u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
        assert_eq!(seq(&b), seq(&a).wrapping_add(1));
        assert_eq!(ts(&b), ts(&a).wrapping_add(160));
        assert_eq!(a[8..12], b[8..12], "one SSRC");
        assert_eq!(
            read(&a[12..]).map(|p| (p.stream, p.n, p.sent_ns)),
            Some((9, 0, 5))
        );
        assert_eq!(
            read(&b[12..]).map(|p| (p.stream, p.n, p.sent_ns)),
            Some((9, 1, 25))
        );
    }

    #[test]
    fn percentiles_of_a_known_set() {
        let mut v: Vec<u32> = (1..=100).rev().collect();
        assert_eq!(percentiles(&mut v), (51, 99, 100));
        assert_eq!(percentiles(&mut []), (0, 0, 0));
    }
}
