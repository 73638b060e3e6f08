//! RTCP (RFC 3550 section 6): parse and build sender reports, receiver
//! reports, SDES (CNAME), BYE and compound packets.
//!
//! Parsing is zero-copy: [`Compound::parse`] checks the framing of every
//! packet in a compound (version, length words, padding only on the last
//! packet) and iterating yields each packet typed, borrowing the buffer.
//! Packet types this module does not know (APP, feedback, XR, ...) come out
//! as [`RtcpPacket::Other`] rather than failing the compound.
//!
//! Building writes into a caller-owned buffer through [`RtcpWriter`].
//! Hand-written rather than a crate: the maintained RTCP crates (`rtcp` from
//! webrtc-rs) allocate a boxed trait object per packet, which the per-packet
//! path must not.

/// RTCP packet types (RFC 3550 section 12.1).
pub const SR: u8 = 200;
pub const RR: u8 = 201;
pub const SDES: u8 = 202;
pub const BYE: u8 = 203;
pub const APP: u8 = 204;

/// SDES item type CNAME.
pub const SDES_CNAME: u8 = 1;

const REPORT_BLOCK_LEN: usize = 24;
const SENDER_INFO_LEN: usize = 20;

/// Why an RTCP packet was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtcpError {
    #[error("shorter than an RTCP header")]
    TooShort,
    #[error("RTCP version is not 2")]
    BadVersion,
    #[error("length field runs past the end of the packet")]
    BadLength,
    #[error("padding is invalid or not on the last packet")]
    BadPadding,
    #[error("count needs more bytes than the packet has")]
    BadCount,
    #[error("malformed SDES chunk")]
    BadSdes,
    #[error("output buffer too small")]
    BufferTooSmall,
    #[error("more than 31 items in one packet")]
    TooMany,
    #[error("SDES item or BYE reason longer than 255 bytes")]
    TooLong,
}

impl RtcpError {
    /// A short, stable name for metrics labels.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooShort => "too_short",
            Self::BadVersion => "bad_version",
            Self::BadLength => "bad_length",
            Self::BadPadding => "bad_padding",
            Self::BadCount => "bad_count",
            Self::BadSdes => "bad_sdes",
            Self::BufferTooSmall => "buffer_too_small",
            Self::TooMany => "too_many",
            Self::TooLong => "too_long",
        }
    }
}

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// One reception report block (RFC 3550 section 6.4.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportBlock {
    pub ssrc: u32,
    /// Fraction lost since the last report, in 1/256ths.
    pub fraction_lost: u8,
    /// Cumulative packets lost; 24-bit signed on the wire.
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received.
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 seconds.
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    fn read(b: &[u8]) -> Self {
        let lost = be32(b, 4) & 0x00ff_ffff;
        // Sign-extend the 24-bit count.
        let cumulative_lost = ((lost << 8) as i32) >> 8;
        Self {
            ssrc: be32(b, 0),
            fraction_lost: b[4],
            cumulative_lost,
            highest_seq: be32(b, 8),
            jitter: be32(b, 12),
            last_sr: be32(b, 16),
            delay_since_last_sr: be32(b, 20),
        }
    }

    fn write(&self, b: &mut [u8]) {
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32 & 0x00ff_ffff;
        b[0..4].copy_from_slice(&self.ssrc.to_be_bytes());
        b[4..8].copy_from_slice(&(lost | u32::from(self.fraction_lost) << 24).to_be_bytes());
        b[8..12].copy_from_slice(&self.highest_seq.to_be_bytes());
        b[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        b[16..20].copy_from_slice(&self.last_sr.to_be_bytes());
        b[20..24].copy_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }
}

/// The sender information of an SR (RFC 3550 section 6.4.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderInfo {
    /// NTP timestamp, 32.32 fixed point.
    pub ntp_timestamp: u64,
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    pub octet_count: u32,
}

/// The report blocks of an SR or RR, read lazily.
#[derive(Clone, Copy, Debug)]
pub struct ReportBlocks<'a>(&'a [u8]);

impl<'a> Iterator for ReportBlocks<'a> {
    type Item = ReportBlock;
    fn next(&mut self) -> Option<ReportBlock> {
        if self.0.len() < REPORT_BLOCK_LEN {
            return None;
        }
        let (b, rest) = self.0.split_at(REPORT_BLOCK_LEN);
        self.0 = rest;
        Some(ReportBlock::read(b))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.0.len() / REPORT_BLOCK_LEN;
        (n, Some(n))
    }
}

impl ExactSizeIterator for ReportBlocks<'_> {}

/// One SDES chunk: an SSRC and its items.
#[derive(Clone, Copy, Debug)]
pub struct SdesChunk<'a> {
    pub ssrc: u32,
    items: &'a [u8],
}

impl<'a> SdesChunk<'a> {
    /// The items as (type, value), in order.
    pub fn items(&self) -> SdesItems<'a> {
        SdesItems(self.items)
    }
    /// The CNAME item's value, if present.
    pub fn cname(&self) -> Option<&'a [u8]> {
        self.items().find(|(t, _)| *t == SDES_CNAME).map(|(_, v)| v)
    }
}

/// Items of one SDES chunk (validated when the chunk was read).
#[derive(Clone, Copy, Debug)]
pub struct SdesItems<'a>(&'a [u8]);

impl<'a> Iterator for SdesItems<'a> {
    type Item = (u8, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let (&kind, rest) = self.0.split_first()?;
        if kind == 0 {
            return None;
        }
        let (&len, rest) = rest.split_first()?;
        let value = rest.get(..usize::from(len))?;
        self.0 = &rest[usize::from(len)..];
        Some((kind, value))
    }
}

/// The chunks of an SDES packet.
#[derive(Clone, Copy, Debug)]
pub struct SdesChunks<'a> {
    body: &'a [u8],
    left: u8,
}

impl<'a> SdesChunks<'a> {
    /// Splits one chunk off `body`: SSRC, items up to a null item, padding
    /// to the next 32-bit boundary.
    fn split(body: &'a [u8]) -> Result<(SdesChunk<'a>, &'a [u8]), RtcpError> {
        if body.len() < 4 {
            return Err(RtcpError::BadSdes);
        }
        let ssrc = be32(body, 0);
        let items = &body[4..];
        let mut at = 0;
        loop {
            match items.get(at) {
                None => return Err(RtcpError::BadSdes),
                Some(0) => break,
                Some(_) => {
                    let len = *items.get(at + 1).ok_or(RtcpError::BadSdes)?;
                    at += 2 + usize::from(len);
                }
            }
        }
        // `at` is the null item; the chunk ends at the next 32-bit boundary
        // of the whole chunk (4 + at + 1 rounded up).
        let end = (4 + at + 1).div_ceil(4) * 4;
        if end > body.len() {
            return Err(RtcpError::BadSdes);
        }
        Ok((
            SdesChunk {
                ssrc,
                items: &items[..at],
            },
            &body[end..],
        ))
    }

    fn validate(mut body: &'a [u8], count: u8) -> Result<(), RtcpError> {
        for _ in 0..count {
            body = Self::split(body)?.1;
        }
        Ok(())
    }
}

impl<'a> Iterator for SdesChunks<'a> {
    type Item = SdesChunk<'a>;
    fn next(&mut self) -> Option<SdesChunk<'a>> {
        if self.left == 0 {
            return None;
        }
        let (chunk, rest) = Self::split(self.body).ok()?;
        self.body = rest;
        self.left -= 1;
        Some(chunk)
    }
}

/// One packet of a compound, typed.
#[derive(Clone, Copy, Debug)]
pub enum RtcpPacket<'a> {
    SenderReport {
        ssrc: u32,
        info: SenderInfo,
        reports: ReportBlocks<'a>,
    },
    ReceiverReport {
        ssrc: u32,
        reports: ReportBlocks<'a>,
    },
    SourceDescription(SdesChunks<'a>),
    Bye {
        ssrcs: Ssrcs<'a>,
        reason: Option<&'a [u8]>,
    },
    /// Any other type (APP, RTPFB, PSFB, XR, ...), left to the caller.
    Other {
        packet_type: u8,
        count: u8,
        body: &'a [u8],
    },
}

/// A list of SSRCs (in a BYE).
#[derive(Clone, Copy, Debug)]
pub struct Ssrcs<'a>(&'a [u8]);

impl Iterator for Ssrcs<'_> {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        if self.0.len() < 4 {
            return None;
        }
        let v = be32(self.0, 0);
        self.0 = &self.0[4..];
        Some(v)
    }
}

impl<'a> RtcpPacket<'a> {
    /// Types one packet from its header fields and body (without padding).
    fn read(packet_type: u8, count: u8, body: &'a [u8]) -> Result<Self, RtcpError> {
        let blocks = |at: usize| {
            let end = at + usize::from(count) * REPORT_BLOCK_LEN;
            body.get(at..end)
                .map(ReportBlocks)
                .ok_or(RtcpError::BadCount)
        };
        Ok(match packet_type {
            SR => {
                if body.len() < 4 + SENDER_INFO_LEN {
                    return Err(RtcpError::BadCount);
                }
                RtcpPacket::SenderReport {
                    ssrc: be32(body, 0),
                    info: SenderInfo {
                        ntp_timestamp: u64::from(be32(body, 4)) << 32 | u64::from(be32(body, 8)),
                        rtp_timestamp: be32(body, 12),
                        packet_count: be32(body, 16),
                        octet_count: be32(body, 20),
                    },
                    reports: blocks(4 + SENDER_INFO_LEN)?,
                }
            }
            RR => {
                if body.len() < 4 {
                    return Err(RtcpError::BadCount);
                }
                RtcpPacket::ReceiverReport {
                    ssrc: be32(body, 0),
                    reports: blocks(4)?,
                }
            }
            SDES => {
                SdesChunks::validate(body, count)?;
                RtcpPacket::SourceDescription(SdesChunks { body, left: count })
            }
            BYE => {
                let n = usize::from(count) * 4;
                let ssrcs = body.get(..n).ok_or(RtcpError::BadCount)?;
                let reason = match body.get(n) {
                    None => None,
                    Some(&len) => Some(
                        body.get(n + 1..n + 1 + usize::from(len))
                            .ok_or(RtcpError::BadCount)?,
                    ),
                };
                RtcpPacket::Bye {
                    ssrcs: Ssrcs(ssrcs),
                    reason,
                }
            }
            _ => RtcpPacket::Other {
                packet_type,
                count,
                body,
            },
        })
    }
}

/// A compound RTCP packet whose framing has been checked.
#[derive(Clone, Copy, Debug)]
pub struct Compound<'a> {
    rest: &'a [u8],
}

impl<'a> Compound<'a> {
    /// Checks the framing of every packet in `buf`: version 2, length words
    /// within the buffer and covering it exactly, padding only on the last
    /// packet. Bodies are checked as they are iterated.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtcpError> {
        if buf.len() < 4 {
            return Err(RtcpError::TooShort);
        }
        let mut rest = buf;
        while !rest.is_empty() {
            let (_, _, _, len, padded) = header(rest)?;
            if padded && len != rest.len() {
                return Err(RtcpError::BadPadding);
            }
            rest = &rest[len..];
        }
        Ok(Self { rest: buf })
    }
}

/// Reads one header: (type, count, body without padding, packet length,
/// padded).
fn header(b: &[u8]) -> Result<(u8, u8, &[u8], usize, bool), RtcpError> {
    if b.len() < 4 {
        return Err(RtcpError::TooShort);
    }
    if b[0] >> 6 != 2 {
        return Err(RtcpError::BadVersion);
    }
    let len = (usize::from(u16::from_be_bytes([b[2], b[3]])) + 1) * 4;
    if len > b.len() {
        return Err(RtcpError::BadLength);
    }
    let padded = b[0] & 0x20 != 0;
    let mut body_end = len;
    if padded {
        let pad = usize::from(b[len - 1]);
        if pad == 0 || pad > len - 4 {
            return Err(RtcpError::BadPadding);
        }
        body_end -= pad;
    }
    Ok((b[1], b[0] & 0x1f, &b[4..body_end], len, padded))
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match header(self.rest) {
            Ok((pt, count, body, len, _)) => {
                self.rest = &self.rest[len..];
                Some(RtcpPacket::read(pt, count, body))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// Writes a compound RTCP packet into a caller-owned buffer.
pub struct RtcpWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> RtcpWriter<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reserves a packet of `body` bytes (a multiple of 4) and writes its
    /// header; returns the body to fill.
    fn packet(&mut self, pt: u8, count: usize, body: usize) -> Result<&mut [u8], RtcpError> {
        if count > 31 {
            return Err(RtcpError::TooMany);
        }
        debug_assert!(body.is_multiple_of(4));
        let total = 4 + body;
        let end = self.len + total;
        let out = self
            .buf
            .get_mut(self.len..end)
            .ok_or(RtcpError::BufferTooSmall)?;
        out[0] = 0x80 | count as u8;
        out[1] = pt;
        out[2..4].copy_from_slice(&((total / 4 - 1) as u16).to_be_bytes());
        self.len = end;
        Ok(&mut out[4..])
    }

    /// A sender report with up to 31 report blocks.
    pub fn sender_report(
        &mut self,
        ssrc: u32,
        info: &SenderInfo,
        reports: &[ReportBlock],
    ) -> Result<(), RtcpError> {
        let body = self.packet(
            SR,
            reports.len(),
            4 + SENDER_INFO_LEN + reports.len() * REPORT_BLOCK_LEN,
        )?;
        body[0..4].copy_from_slice(&ssrc.to_be_bytes());
        body[4..12].copy_from_slice(&info.ntp_timestamp.to_be_bytes());
        body[12..16].copy_from_slice(&info.rtp_timestamp.to_be_bytes());
        body[16..20].copy_from_slice(&info.packet_count.to_be_bytes());
        body[20..24].copy_from_slice(&info.octet_count.to_be_bytes());
        for (r, out) in reports
            .iter()
            .zip(body[24..].chunks_exact_mut(REPORT_BLOCK_LEN))
        {
            r.write(out);
        }
        Ok(())
    }

    /// A receiver report with up to 31 report blocks.
    pub fn receiver_report(&mut self, ssrc: u32, reports: &[ReportBlock]) -> Result<(), RtcpError> {
        let body = self.packet(RR, reports.len(), 4 + reports.len() * REPORT_BLOCK_LEN)?;
        body[0..4].copy_from_slice(&ssrc.to_be_bytes());
        for (r, out) in reports
            .iter()
            .zip(body[4..].chunks_exact_mut(REPORT_BLOCK_LEN))
        {
            r.write(out);
        }
        Ok(())
    }

    /// An SDES packet with one chunk holding a CNAME.
    pub fn sdes_cname(&mut self, ssrc: u32, cname: &[u8]) -> Result<(), RtcpError> {
        let n = u8::try_from(cname.len()).map_err(|_| RtcpError::TooLong)?;
        // SSRC, type, length, value, at least one null byte, padded to 4.
        let chunk = (4 + 2 + cname.len() + 1).div_ceil(4) * 4;
        let body = self.packet(SDES, 1, chunk)?;
        body[0..4].copy_from_slice(&ssrc.to_be_bytes());
        body[4] = SDES_CNAME;
        body[5] = n;
        body[6..6 + cname.len()].copy_from_slice(cname);
        body[6 + cname.len()..].fill(0);
        Ok(())
    }

    /// A BYE for up to 31 SSRCs, with an optional reason.
    pub fn bye(&mut self, ssrcs: &[u32], reason: Option<&[u8]>) -> Result<(), RtcpError> {
        let mut size = ssrcs.len() * 4;
        if let Some(r) = reason {
            if r.len() > 255 {
                return Err(RtcpError::TooLong);
            }
            size += (1 + r.len()).div_ceil(4) * 4;
        }
        let body = self.packet(BYE, ssrcs.len(), size)?;
        for (s, out) in ssrcs.iter().zip(body.chunks_exact_mut(4)) {
            out.copy_from_slice(&s.to_be_bytes());
        }
        if let Some(r) = reason {
            let at = ssrcs.len() * 4;
            body[at] = r.len() as u8;
            body[at + 1..at + 1 + r.len()].copy_from_slice(r);
            body[at + 1 + r.len()..].fill(0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_block() -> ReportBlock {
        ReportBlock {
            ssrc: 0x0102_0304,
            fraction_lost: 25,
            cumulative_lost: -3,
            highest_seq: 0x0001_0005,
            jitter: 42,
            last_sr: 0xaabb_ccdd,
            delay_since_last_sr: 65536,
        }
    }

    #[test]
    fn compound_round_trip_sr_sdes_bye() {
        let mut buf = [0u8; 256];
        let mut w = RtcpWriter::new(&mut buf);
        let info = SenderInfo {
            ntp_timestamp: 0xe000_0000_8000_0000,
            rtp_timestamp: 160,
            packet_count: 50,
            octet_count: 8000,
        };
        w.sender_report(0xdead_beef, &info, &[sample_block()])
            .expect("sr");
        w.sdes_cname(0xdead_beef, b"tollgate@gw").expect("sdes");
        w.bye(&[0xdead_beef], Some(b"call ended")).expect("bye");
        let n = w.len();
        assert_eq!(n % 4, 0);

        let mut it = Compound::parse(&buf[..n]).expect("framing");
        match it.next() {
            Some(Ok(RtcpPacket::SenderReport {
                ssrc,
                info: i,
                reports,
            })) => {
                assert_eq!(ssrc, 0xdead_beef);
                assert_eq!(i, info);
                let blocks: Vec<_> = reports.collect();
                assert_eq!(blocks, vec![sample_block()]);
            }
            other => panic!("expected SR, got {other:?}"),
        }
        match it.next() {
            Some(Ok(RtcpPacket::SourceDescription(mut chunks))) => {
                let c = chunks.next().expect("chunk");
                assert_eq!(c.ssrc, 0xdead_beef);
                assert_eq!(c.cname(), Some(&b"tollgate@gw"[..]));
                assert!(chunks.next().is_none());
            }
            other => panic!("expected SDES, got {other:?}"),
        }
        match it.next() {
            Some(Ok(RtcpPacket::Bye { ssrcs, reason })) => {
                assert_eq!(ssrcs.collect::<Vec<_>>(), vec![0xdead_beef]);
                assert_eq!(reason, Some(&b"call ended"[..]));
            }
            other => panic!("expected BYE, got {other:?}"),
        }
        assert!(it.next().is_none());
    }

    #[test]
    fn receiver_report_and_unknown_type_in_one_compound() {
        let mut buf = [0u8; 128];
        let mut w = RtcpWriter::new(&mut buf);
        w.receiver_report(7, &[sample_block(), ReportBlock::default()])
            .expect("rr");
        let n = w.len();
        // Append a transport-wide feedback packet (PT 205, FMT 15) by hand.
        let fb = [0x8f, 205, 0, 2, 0, 0, 0, 7, 0, 0, 0, 9];
        buf[n..n + fb.len()].copy_from_slice(&fb);
        let total = n + fb.len();
        let packets: Vec<_> = Compound::parse(&buf[..total])
            .expect("framing")
            .collect::<Result<_, _>>()
            .expect("bodies");
        assert_eq!(packets.len(), 2);
        match packets[0] {
            RtcpPacket::ReceiverReport { ssrc, reports } => {
                assert_eq!(ssrc, 7);
                assert_eq!(reports.len(), 2);
            }
            ref p => panic!("expected RR, got {p:?}"),
        }
        match packets[1] {
            RtcpPacket::Other {
                packet_type,
                count,
                body,
            } => {
                assert_eq!((packet_type, count), (205, 15));
                assert_eq!(body, &fb[4..]);
            }
            ref p => panic!("expected other, got {p:?}"),
        }
    }

    #[test]
    fn cumulative_loss_is_24_bit_signed() {
        let mut b = [0u8; 24];
        for lost in [-0x80_0000, -1, 0, 1, 0x7f_ffff] {
            ReportBlock {
                cumulative_lost: lost,
                ..sample_block()
            }
            .write(&mut b);
            assert_eq!(ReportBlock::read(&b).cumulative_lost, lost);
        }
        ReportBlock {
            cumulative_lost: i32::MAX,
            ..sample_block()
        }
        .write(&mut b);
        assert_eq!(ReportBlock::read(&b).cumulative_lost, 0x7f_ffff);
    }

    #[test]
    fn malformed_compounds_give_typed_errors() {
        assert_eq!(Compound::parse(&[]).err(), Some(RtcpError::TooShort));
        assert_eq!(
            Compound::parse(&[0x40, 201, 0, 1, 0, 0, 0, 1]).err(),
            Some(RtcpError::BadVersion)
        );
        // Length says 3 words, only 2 present.
        assert_eq!(
            Compound::parse(&[0x80, 201, 0, 2, 0, 0, 0, 1]).err(),
            Some(RtcpError::BadLength)
        );
        // Trailing bytes that are not a whole header.
        assert_eq!(
            Compound::parse(&[0x80, 201, 0, 1, 0, 0, 0, 1, 0x80]).err(),
            Some(RtcpError::TooShort)
        );
        // Padding on a packet that is not last.
        let p = [0xa0, 201, 0, 1, 0, 0, 0, 4, 0x80, 201, 0, 1, 0, 0, 0, 1];
        assert_eq!(Compound::parse(&p).err(), Some(RtcpError::BadPadding));
        // RR claiming one report block with none present.
        let rr = [0x81, 201, 0, 1, 0, 0, 0, 1];
        let mut c = Compound::parse(&rr).expect("framing is fine");
        assert_eq!(c.next().map(|r| r.err()), Some(Some(RtcpError::BadCount)));
        // SDES chunk without a terminating null item.
        let sdes = [0x81, 202, 0, 2, 0, 0, 0, 1, 1, 2, b'a', b'b'];
        let mut c = Compound::parse(&sdes).expect("framing is fine");
        assert_eq!(c.next().map(|r| r.err()), Some(Some(RtcpError::BadSdes)));
    }

    #[test]
    fn writer_refuses_what_does_not_fit() {
        let mut small = [0u8; 8];
        let mut w = RtcpWriter::new(&mut small);
        assert_eq!(
            w.receiver_report(1, &[sample_block()]),
            Err(RtcpError::BufferTooSmall)
        );
        let mut buf = [0u8; 2048];
        let mut w = RtcpWriter::new(&mut buf);
        assert_eq!(
            w.receiver_report(1, &[sample_block(); 32]),
            Err(RtcpError::TooMany)
        );
        assert_eq!(w.sdes_cname(1, &[b'x'; 256]), Err(RtcpError::TooLong));
        assert!(w.is_empty());
    }
}
