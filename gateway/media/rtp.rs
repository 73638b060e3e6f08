//! RTP packets (RFC 3550 section 5.1), parsed and validated with `rtp-rs`.
//!
//! [`parse`] validates a plain RTP packet: version 2, CSRC list, extension
//! header and padding all within the buffer, and refuses what `rtp-rs`
//! refuses with a typed [`RtpError`]. [`SrtpHeader::parse`] reads only the
//! fixed header, CSRC list and extension of a *protected* packet: there the
//! payload (and the padding count in its last byte) is ciphertext, so the
//! padding cannot be checked before the packet is opened.

use rtp_rs::{RtpReader, RtpReaderError};

/// Length of the fixed RTP header.
pub const FIXED_HEADER_LEN: usize = 12;

/// Why an RTP packet was refused. Each reason has a static name for counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtpError {
    #[error("packet shorter than the 12-byte RTP header")]
    TooShort,
    #[error("RTP version is not 2")]
    BadVersion,
    #[error("CSRC list or header extension runs past the end of the packet")]
    HeaderTruncated,
    #[error("padding count is zero or longer than the payload")]
    BadPadding,
}

impl RtpError {
    /// A short, stable name for metrics labels.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooShort => "too_short",
            Self::BadVersion => "bad_version",
            Self::HeaderTruncated => "header_truncated",
            Self::BadPadding => "bad_padding",
        }
    }
}

impl From<RtpReaderError> for RtpError {
    fn from(e: RtpReaderError) -> Self {
        match e {
            RtpReaderError::BufferTooShort(_) => Self::TooShort,
            RtpReaderError::UnsupportedVersion(_) => Self::BadVersion,
            RtpReaderError::HeadersTruncated { .. } => Self::HeaderTruncated,
            RtpReaderError::PaddingLengthInvalid(_) => Self::BadPadding,
        }
    }
}

/// A validated RTP packet borrowing its buffer.
pub struct RtpPacket<'a> {
    reader: RtpReader<'a>,
    buf: &'a [u8],
}

/// Parses and validates a plain RTP packet.
#[inline]
pub fn parse(buf: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    Ok(RtpPacket {
        reader: RtpReader::new(buf)?,
        buf,
    })
}

impl<'a> RtpPacket<'a> {
    pub fn payload_type(&self) -> u8 {
        self.reader.payload_type()
    }
    pub fn marker(&self) -> bool {
        self.reader.mark()
    }
    pub fn sequence(&self) -> u16 {
        self.reader.sequence_number().into()
    }
    pub fn timestamp(&self) -> u32 {
        self.reader.timestamp()
    }
    pub fn ssrc(&self) -> u32 {
        self.reader.ssrc()
    }
    /// The contributing sources, in order.
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + '_ {
        self.reader.csrc()
    }
    /// The header extension's profile-defined identifier and its data.
    pub fn extension(&self) -> Option<(u16, &'a [u8])> {
        self.reader.extension()
    }
    /// Number of padding bytes at the end (0 when the P bit is clear).
    pub fn padding(&self) -> u8 {
        self.reader.padding().unwrap_or(0)
    }
    /// Offset of the payload from the start of the packet.
    pub fn payload_offset(&self) -> usize {
        self.reader.payload_offset()
    }
    /// The payload, without header and padding.
    pub fn payload(&self) -> &'a [u8] {
        self.reader.payload()
    }
    /// The whole packet.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
}

/// What SRTP needs of a protected RTP packet's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SrtpHeader {
    /// Fixed header, CSRC list and extension: the part that stays clear.
    pub len: usize,
    pub sequence: u16,
    pub ssrc: u32,
}

impl SrtpHeader {
    /// Reads the clear header of an RTP or SRTP packet, without looking at
    /// the payload or padding.
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<Self, RtpError> {
        let fixed: &[u8; FIXED_HEADER_LEN] = buf
            .get(..FIXED_HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(RtpError::TooShort)?;
        if fixed[0] >> 6 != 2 {
            return Err(RtpError::BadVersion);
        }
        let mut len = FIXED_HEADER_LEN + 4 * usize::from(fixed[0] & 0x0f);
        if fixed[0] & 0x10 != 0 {
            let ext = buf.get(len..len + 4).ok_or(RtpError::HeaderTruncated)?;
            len += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        }
        if len > buf.len() {
            return Err(RtpError::HeaderTruncated);
        }
        Ok(Self {
            len,
            sequence: u16::from_be_bytes([fixed[2], fixed[3]]),
            ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
        })
    }
}

/// Tells RTCP from RTP on a multiplexed port (RFC 5761 section 4): RTCP
/// packet types 192-223 fall in the payload-type range 64-95 that RTP avoids.
#[inline]
pub fn is_rtcp(buf: &[u8]) -> bool {
    matches!(buf.get(1), Some(b) if (192..=223).contains(b))
}

/// Extends a 16-bit sequence number to a 48-bit index (SRTP's packet index,
/// RTP's extended sequence number) given the highest index seen, following
/// RFC 3711 section 3.3.1 and appendix A: the rollover counter is guessed as
/// ROC - 1, ROC or ROC + 1, whichever puts `seq` nearest the highest. At the
/// very start of a stream (ROC 0) a guess of ROC - 1 is taken as ROC 0, as
/// libsrtp does.
#[inline]
pub fn extend_seq(highest: Option<u64>, seq: u16) -> u64 {
    let Some(top) = highest else {
        return u64::from(seq);
    };
    let roc = top >> 16;
    let s_l = top as u16;
    let v = if s_l < 0x8000 {
        if seq > s_l && seq - s_l > 0x8000 {
            roc.saturating_sub(1)
        } else {
            roc
        }
    } else if s_l - 0x8000 > seq {
        roc + 1
    } else {
        roc
    };
    (v << 16) | u64::from(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extend_seq_follows_rfc3711_appendix_a() {
        assert_eq!(extend_seq(None, 65000), 65000);
        // Wrap forward.
        assert_eq!(extend_seq(Some(65000), 10), (1 << 16) | 10);
        // Late packet from before the wrap.
        assert_eq!(extend_seq(Some((1 << 16) | 10), 65530), 65530);
        // In order, no wrap.
        assert_eq!(extend_seq(Some((3 << 16) | 100), 101), (3 << 16) | 101);
        // Stream start: ROC stays 0 rather than going negative.
        assert_eq!(extend_seq(Some(5), 65535), 65535);
    }

    #[test]
    fn parse_reads_header_fields_csrcs_extension_and_padding() {
        // V=2 P=1 X=1 CC=2, M=1 PT=0, seq 0x1234, ts 0x01020304, SSRC,
        // two CSRCs, extension 0xbede with one word, payload "hi", padding 2.
        let mut p = vec![0xb2, 0x80, 0x12, 0x34, 1, 2, 3, 4, 0xca, 0xfe, 0xba, 0xbe];
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]);
        p.extend_from_slice(b"hi");
        p.extend_from_slice(&[0, 2]);
        let r = parse(&p).expect("valid");
        assert_eq!(r.sequence(), 0x1234);
        assert_eq!(r.timestamp(), 0x0102_0304);
        assert_eq!(r.ssrc(), 0xcafe_babe);
        assert!(r.marker());
        assert_eq!(r.payload_type(), 0);
        assert_eq!(r.csrcs().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(r.extension(), Some((0xbede, &[0x10, 0xaa, 0, 0][..])));
        assert_eq!(r.padding(), 2);
        assert_eq!(r.payload(), b"hi");
        assert_eq!(r.payload_offset(), 28);
        let h = SrtpHeader::parse(&p).expect("header");
        assert_eq!((h.len, h.sequence, h.ssrc), (28, 0x1234, 0xcafe_babe));
    }

    #[test]
    fn parse_refuses_with_typed_reasons() {
        let good = [0x80u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(parse(&good[..11]).err(), Some(RtpError::TooShort));
        let mut v1 = good;
        v1[0] = 0x40;
        assert_eq!(parse(&v1).err(), Some(RtpError::BadVersion));
        let mut cc = good;
        cc[0] = 0x81; // one CSRC, none present
        assert_eq!(parse(&cc).err(), Some(RtpError::HeaderTruncated));
        assert_eq!(
            SrtpHeader::parse(&cc).err(),
            Some(RtpError::HeaderTruncated)
        );
        let mut x = good.to_vec();
        x[0] = 0x90;
        x.extend_from_slice(&[0xbe, 0xde, 0, 5]); // 5 words claimed, none there
        assert_eq!(parse(&x).err(), Some(RtpError::HeaderTruncated));
        assert_eq!(SrtpHeader::parse(&x).err(), Some(RtpError::HeaderTruncated));
        let mut pad = good.to_vec();
        pad[0] = 0xa0;
        pad.extend_from_slice(&[1, 9]); // pads 9 bytes, only 2 after header
        assert_eq!(parse(&pad).err(), Some(RtpError::BadPadding));
        pad[13] = 0;
        assert_eq!(parse(&pad).err(), Some(RtpError::BadPadding));
    }

    #[test]
    fn rtcp_demultiplexing() {
        assert!(is_rtcp(&[0x80, 200]));
        assert!(is_rtcp(&[0x80, 223]));
        assert!(!is_rtcp(&[0x80, 0]));
        assert!(!is_rtcp(&[0x80, 0x80 | 96]));
        assert!(!is_rtcp(&[0x80]));
    }
}
