//! The agent control protocol (version 1), sans-IO: message types, their
//! framing on the control stream, and the framing of media datagrams. The
//! wire format is specified for implementers in `PROTOCOL.md` beside this
//! file; the two must change together.
//!
//! Control messages are JSON objects tagged by `type`, each preceded by its
//! length as two bytes, big-endian, and at most [`MAX_MESSAGE`] bytes.
//! Media datagrams carry a QUIC variable-length integer (RFC 9000 section
//! 16) naming the call's flow, then exactly one SRTP or SRTCP packet, as in
//! draft-ietf-avtcore-rtp-over-quic. The varint codec is written here
//! because quinn keeps its own private; it is ten lines and fuzzed.

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const VERSION: u32 = 2;
/// The TLS ALPN identifier.
pub const ALPN: &[u8] = b"tollgate-agent/1";
/// Largest control message body, in bytes.
pub const MAX_MESSAGE: usize = 4096;
/// Most calls one `history` answer lists (so it fits in one message).
pub const MAX_HISTORY: u16 = 20;

/// Application close codes on the QUIC connection.
pub mod close {
    /// Normal end (hang-up of the session by either side).
    pub const DONE: u32 = 0;
    /// Authentication failed (bad or missing TOTP, unknown agent).
    pub const AUTH: u32 = 1;
    /// A malformed, unknown, oversized or out-of-order message.
    pub const PROTOCOL: u32 = 2;
    /// The agent's certificate was revoked.
    pub const REVOKED: u32 = 3;
    /// Too many failed attempts: locked out for a while.
    pub const LOCKED_OUT: u32 = 4;
    /// The same agent logged in again elsewhere.
    pub const REPLACED: u32 = 5;
    /// The gateway is stopping.
    pub const SHUTDOWN: u32 = 6;
    /// Incident lockdown: sessions end and logins are refused, but those
    /// of break-glass agents.
    pub const LOCKDOWN: u32 = 7;
}

/// A string that is never printed by `Debug` (TOTP codes, keys).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// A call's media parameters, sent with an offer or a dial's progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// The flow identifier that prefixes this call's datagrams.
    pub flow: u64,
    /// `AEAD_AES_128_GCM` or `AEAD_AES_256_GCM`.
    pub suite: String,
    /// The call's SRTP key then salt, base64. Each direction derives its
    /// own master key and salt from it (PROTOCOL.md, "Keys"; see
    /// [`crate::media::srtp::MasterKey::for_way`]).
    pub key: Secret,
    /// `PCMU`, `PCMA` or `G722`, and its RTP payload type.
    pub codec: String,
    pub pt: u8,
    /// Packet time in milliseconds.
    pub ptime: u16,
    /// RTP payload type of telephone-event (RFC 4733), if negotiated.
    #[serde(default)]
    pub dtmf_pt: Option<u8>,
}

/// What an agent sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    /// First message, once: the protocol version and the TOTP code.
    Hello {
        version: u32,
        otp: Secret,
        #[serde(default)]
        client: Option<String>,
    },
    /// Whether the agent takes calls from its queues.
    Available {
        available: bool,
    },
    Answer {
        call: u64,
    },
    Reject {
        call: u64,
    },
    /// Place a call to `number` (E.164 or national digits); `withhold`
    /// hides the call centre's number from the called party.
    Dial {
        number: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        withhold: bool,
    },
    Hold {
        call: u64,
        hold: bool,
    },
    /// A DTMF digit (0-9, *, #, A-D) for RFC 4733 events on the trunk.
    Dtmf {
        call: u64,
        digit: char,
        duration_ms: u16,
    },
    Hangup {
        call: u64,
    },
    Ping {
        id: u64,
    },
    /// This agent's own recent calls, newest first: at most `limit` (and
    /// at most [`MAX_HISTORY`]). Nothing about other agents' calls.
    History {
        #[serde(default)]
        limit: Option<u16>,
    },
}

/// One of the agent's own past calls, as its profile lets it see them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PastCall {
    /// When it started (Unix milliseconds).
    pub start_ms: u64,
    /// `inbound` (offered to the agent) or `outbound` (the agent dialled).
    pub direction: String,
    /// Seconds answered (0 if never answered).
    pub duration_s: u64,
    /// `answered`, `open` (still going), `rejected`, `cancelled`,
    /// `no_answer`, `failed` or `interrupted`.
    pub outcome: String,
    /// The other party, masked as the agent's profile says; `withheld`
    /// for a caller who withheld the number.
    pub party: String,
}

/// What the gateway sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerMsg {
    /// Authentication succeeded.
    Welcome {
        version: u32,
        agent: String,
        #[serde(default)]
        profile: Option<String>,
    },
    /// An inbound call for this agent. `caller` is masked unless the
    /// agent's profile shows numbers in full.
    Offer {
        call: u64,
        caller: String,
        callee: String,
        media: Media,
    },
    /// A dial was accepted and is under way.
    Dialing {
        call: u64,
        media: Media,
    },
    Ringing {
        call: u64,
    },
    EarlyMedia {
        call: u64,
    },
    Answered {
        call: u64,
    },
    Held {
        call: u64,
        hold: bool,
    },
    Dtmf {
        call: u64,
        digit: char,
        duration_ms: u16,
    },
    Ended {
        call: u64,
        reason: String,
    },
    /// A request failed; `call` names the call when there is one.
    Error {
        code: String,
        message: String,
        #[serde(default)]
        call: Option<u64>,
    },
    Pong {
        id: u64,
    },
    /// The answer to `history`.
    History {
        calls: Vec<PastCall>,
    },
}

/// Why the control stream could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    #[error("empty message")]
    Empty,
    #[error("unknown message type")]
    UnknownType,
    #[error("malformed message ({0})")]
    Malformed(&'static str),
}

impl FrameError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too_large",
            Self::Empty => "empty",
            Self::UnknownType => "unknown_type",
            Self::Malformed(_) => "malformed",
        }
    }
}

/// Appends `msg`, framed, to `out`.
pub fn encode<T: Serialize>(msg: &T, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0, 0]);
    // Serializing these types into a Vec cannot fail (no maps with
    // non-string keys, no custom serializers that error).
    let _ = serde_json::to_writer(&mut *out, msg);
    let len = out.len() - start - 2;
    let len = u16::try_from(len).unwrap_or(u16::MAX);
    out[start..start + 2].copy_from_slice(&len.to_be_bytes());
}

/// Reassembles framed messages from a byte stream. Holds at most one
/// message's worth of bytes.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held, waiting for the rest of a message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message, if one has arrived. An error ends the
    /// session: the stream can no longer be trusted to be in step.
    pub fn decode<T: for<'de> Deserialize<'de>>(&mut self) -> Result<Option<T>, FrameError> {
        let Some(head) = self.buf.get(..2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([head[0], head[1]]));
        if len > MAX_MESSAGE {
            return Err(FrameError::TooLarge(len));
        }
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if self.buf.len() < 2 + len {
            return Ok(None);
        }
        let r = parse(&self.buf[2..2 + len]);
        self.buf.drain(..2 + len);
        r.map(Some)
    }
}

/// One message body. Errors never echo the input (it may hold numbers).
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data if e.to_string().starts_with("unknown variant") => {
                FrameError::UnknownType
            }
            Category::Data => {
                FrameError::Malformed("a field is missing, unknown or of the wrong type")
            }
            Category::Syntax => FrameError::Malformed("not JSON"),
            Category::Eof => FrameError::Malformed("truncated JSON"),
            Category::Io => FrameError::Malformed("unreadable"),
        }
    })
}

/// Largest value a QUIC varint holds.
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// Writes `v` as a QUIC varint at the start of `out`; returns its length,
/// or `None` if `v` is too big or `out` too short.
pub fn put_varint(v: u64, out: &mut [u8]) -> Option<usize> {
    let (len, tag) = match v {
        0..=63 => (1, 0x00),
        64..=16_383 => (2, 0x40),
        16_384..=1_073_741_823 => (4, 0x80),
        _ if v <= VARINT_MAX => (8, 0xc0),
        _ => return None,
    };
    let bytes = v.to_be_bytes();
    let dst = out.get_mut(..len)?;
    dst.copy_from_slice(&bytes[8 - len..]);
    dst[0] |= tag;
    Some(len)
}

/// Reads a QUIC varint from the start of `b`: the value and its length.
pub fn get_varint(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let len = 1usize << (first >> 6);
    let src = b.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for &x in &src[1..] {
        v = (v << 8) | u64::from(x);
    }
    Some((v, len))
}

/// The flow and the packet of a media datagram.
pub fn split_datagram(d: &[u8]) -> Option<(u64, &[u8])> {
    let (flow, n) = get_varint(d)?;
    let packet = &d[n..];
    (!packet.is_empty()).then_some((flow, packet))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_rfc9000_examples() {
        // RFC 9000 appendix A.1.
        for (hex, v) in [
            ("c2197c5eff14e88c", 151_288_809_941_952_652u64),
            ("9d7f3e7d", 494_878_333),
            ("7bbd", 15_293),
            ("25", 37),
        ] {
            let bytes = hex::decode(hex).expect("hex");
            assert_eq!(get_varint(&bytes), Some((v, bytes.len())));
            let mut out = [0u8; 8];
            let n = put_varint(v, &mut out).expect("fits");
            assert_eq!(&out[..n], &bytes[..]);
        }
        assert_eq!(
            get_varint(&hex::decode("4025").expect("hex")),
            Some((37, 2))
        );
        assert_eq!(put_varint(VARINT_MAX + 1, &mut [0; 8]), None);
        assert_eq!(put_varint(64, &mut [0; 1]), None);
        assert_eq!(get_varint(&[0x80, 1]), None);
        assert_eq!(split_datagram(&[0x05]), None);
        assert_eq!(split_datagram(&[0x40, 0x07, 0x80]), Some((7, &[0x80][..])));
    }

    #[test]
    fn messages_round_trip_through_frames_split_anywhere() {
        let msgs = vec![
            ClientMsg::Hello {
                version: VERSION,
                otp: Secret("123456".into()),
                client: Some("test".into()),
            },
            ClientMsg::Dial {
                number: "+447700900123".into(),
                withhold: true,
            },
            ClientMsg::Dtmf {
                call: 3,
                digit: '#',
                duration_ms: 160,
            },
            ClientMsg::History { limit: Some(5) },
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            encode(m, &mut wire);
        }
        for cut in 0..wire.len() {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                d.push(part);
                while let Some(m) = d.decode::<ClientMsg>().expect("valid") {
                    got.push(m);
                }
            }
            assert_eq!(got, msgs, "cut at {cut}");
            assert_eq!(d.pending(), 0);
        }
        let json = String::from_utf8_lossy(&wire[2..]).into_owned();
        assert!(
            json.starts_with(r#"{"type":"hello","version":2,"otp":"123456""#),
            "{json}"
        );
        assert!(!format!("{:?}", msgs[0]).contains("123456"));
    }

    #[test]
    fn a_full_history_of_the_longest_calls_fits_one_message() {
        let longest = PastCall {
            start_ms: u64::MAX,
            direction: "outbound".into(),
            duration_s: u64::MAX,
            outcome: "interrupted".into(),
            // The longest party a record holds (cdr::record::MAX_PARTY).
            party: "+".repeat(64),
        };
        let msg = ServerMsg::History {
            calls: vec![longest; usize::from(MAX_HISTORY)],
        };
        let mut wire = Vec::new();
        encode(&msg, &mut wire);
        assert!(wire.len() - 2 <= MAX_MESSAGE, "{} bytes", wire.len() - 2);
        let mut d = Decoder::default();
        d.push(&wire);
        assert_eq!(d.decode::<ServerMsg>().expect("valid"), Some(msg));
    }

    #[test]
    fn bad_frames_are_typed_and_never_echo_input() {
        let frame = |body: &[u8]| {
            let mut v = (body.len() as u16).to_be_bytes().to_vec();
            v.extend_from_slice(body);
            let mut d = Decoder::default();
            d.push(&v);
            d.decode::<ClientMsg>()
        };
        assert_eq!(frame(b""), Err(FrameError::Empty));
        assert_eq!(
            frame(br#"{"type":"transfer","to":"+447700900123"}"#),
            Err(FrameError::UnknownType)
        );
        let e = frame(br#"{"type":"dial","number":447700900123}"#).expect_err("type");
        assert!(!e.to_string().contains("447700900123"), "{e}");
        assert!(matches!(
            frame(br#"{"type":"dial","number":"1","extra":1}"#),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            frame(b"{\"type\":"),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(frame(b"\xff\xfe"), Err(FrameError::Malformed(_))));
        let mut d = Decoder::default();
        d.push(&[0x10, 0x01]);
        assert_eq!(d.decode::<ClientMsg>(), Err(FrameError::TooLarge(4097)));
    }
}
