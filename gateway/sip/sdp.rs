//! SDP (RFC 4566) and the offer/answer model (RFC 3264) for audio: PCMU,
//! PCMA, G.722 and telephone-event (RFC 4733), ptime, rtcp-mux (RFC 5761),
//! direction attributes, and SDES `a=crypto` (RFC 4568) keyed for the media
//! core's SRTP suites.
//!
//! Parsing borrows the body; lines end in CRLF or, leniently, LF. Unknown
//! line types and attributes are kept and ignored. Counts are bounded
//! ([`MAX_MEDIA`], [`MAX_ATTRS`]) so a body cannot make the parser hold
//! more than a few kilobytes of slices.

use std::net::IpAddr;

use base64::Engine as _;

use crate::media::srtp::{MasterKey, Suite};

/// Most m= sections read.
pub const MAX_MEDIA: usize = 8;
/// Most attributes read per section (session or media).
pub const MAX_ATTRS: usize = 64;

/// Why an SDP body was refused or could not be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    #[error("SDP does not start with v=0")]
    NoVersion,
    #[error("malformed SDP line")]
    BadLine,
    #[error("malformed c= line")]
    BadConnection,
    #[error("malformed m= line")]
    BadMedia,
    #[error("too many media sections or attributes")]
    TooMany,
    #[error("no audio stream with a codec in common")]
    NoCommonCodec,
    #[error("no connection address for the audio stream")]
    NoAddress,
    #[error("SRTP required but not offered with a supported suite")]
    SrtpRequired,
    #[error("only SRTP offered and SRTP is off for this trunk")]
    SrtpRefused,
    #[error("malformed a=crypto")]
    BadCrypto,
}

/// An attribute `a=name[:value]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr<'a> {
    pub name: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// One m= section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaDesc<'a> {
    pub kind: &'a [u8],
    pub port: u16,
    pub proto: &'a [u8],
    /// Payload types, in the offerer's order of preference.
    pub formats: Vec<u8>,
    pub connection: Option<IpAddr>,
    pub attrs: Vec<Attr<'a>>,
}

/// A parsed SDP body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sdp<'a> {
    /// o= session id and version.
    pub session_id: &'a [u8],
    pub session_version: u64,
    pub connection: Option<IpAddr>,
    pub attrs: Vec<Attr<'a>>,
    pub media: Vec<MediaDesc<'a>>,
}

fn parse_connection(v: &[u8]) -> Result<IpAddr, SdpError> {
    // c=IN IP4 192.0.2.1 (a multicast TTL suffix "/127" is cut off)
    let mut f = v.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let (Some(b"IN"), Some(at), Some(addr)) = (f.next(), f.next(), f.next()) else {
        return Err(SdpError::BadConnection);
    };
    let addr = addr.split(|&b| b == b'/').next().unwrap_or_default();
    let ip: IpAddr = std::str::from_utf8(addr)
        .ok()
        .and_then(|a| a.parse().ok())
        .ok_or(SdpError::BadConnection)?;
    match (at, ip) {
        (b"IP4", IpAddr::V4(_)) | (b"IP6", IpAddr::V6(_)) => Ok(ip),
        _ => Err(SdpError::BadConnection),
    }
}

fn parse_attr(v: &[u8]) -> Attr<'_> {
    match v.iter().position(|&b| b == b':') {
        Some(c) => Attr {
            name: &v[..c],
            value: Some(&v[c + 1..]),
        },
        None => Attr {
            name: v,
            value: None,
        },
    }
}

fn parse_u16(s: &[u8]) -> Option<u16> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

impl<'a> Sdp<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, SdpError> {
        let mut lines = body
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(|l| !l.is_empty());
        if lines.next() != Some(b"v=0") {
            return Err(SdpError::NoVersion);
        }
        let mut sdp = Sdp {
            session_id: b"",
            session_version: 0,
            connection: None,
            attrs: Vec::new(),
            media: Vec::new(),
        };
        for line in lines {
            let [kind, b'=', value @ ..] = line else {
                return Err(SdpError::BadLine);
            };
            match (kind, sdp.media.last_mut()) {
                (b'o', None) => {
                    let f: Vec<&[u8]> = value.split(|&b| b == b' ').collect();
                    if f.len() != 6 {
                        return Err(SdpError::BadLine);
                    }
                    sdp.session_id = f[1];
                    sdp.session_version = std::str::from_utf8(f[2])
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .ok_or(SdpError::BadLine)?;
                }
                (b'c', None) => sdp.connection = Some(parse_connection(value)?),
                (b'c', Some(m)) => m.connection = Some(parse_connection(value)?),
                (b'a', None) => {
                    if sdp.attrs.len() >= MAX_ATTRS {
                        return Err(SdpError::TooMany);
                    }
                    sdp.attrs.push(parse_attr(value));
                }
                (b'a', Some(m)) => {
                    if m.attrs.len() >= MAX_ATTRS {
                        return Err(SdpError::TooMany);
                    }
                    m.attrs.push(parse_attr(value));
                }
                (b'm', _) => {
                    if sdp.media.len() >= MAX_MEDIA {
                        return Err(SdpError::TooMany);
                    }
                    let mut f = value.split(|&b| b == b' ').filter(|p| !p.is_empty());
                    let (Some(kind), Some(port), Some(proto)) = (f.next(), f.next(), f.next())
                    else {
                        return Err(SdpError::BadMedia);
                    };
                    let port = port.split(|&b| b == b'/').next().unwrap_or_default();
                    let port = parse_u16(port).ok_or(SdpError::BadMedia)?;
                    let mut formats = Vec::new();
                    for fmt in f {
                        if formats.len() >= MAX_ATTRS {
                            return Err(SdpError::TooMany);
                        }
                        // Non-RTP formats (e.g. "t38") are not payload types.
                        if let Some(pt) = parse_u16(fmt).filter(|&p| p < 128) {
                            formats.push(pt as u8);
                        }
                    }
                    sdp.media.push(MediaDesc {
                        kind,
                        port,
                        proto,
                        formats,
                        connection: None,
                        attrs: Vec::new(),
                    });
                }
                _ => {} // s=, t=, b=, i=, ... not needed
            }
        }
        Ok(sdp)
    }

    /// The first audio section with a non-zero port.
    pub fn audio(&self) -> Option<&MediaDesc<'a>> {
        self.media
            .iter()
            .find(|m| m.kind == b"audio" && m.port != 0)
    }

    /// The direction of `m` (media-level attribute, else session-level,
    /// else sendrecv). A connection address of 0.0.0.0 (RFC 2543 hold)
    /// reads as sendonly from the offerer.
    pub fn direction(&self, m: &MediaDesc<'_>) -> Direction {
        let find = |attrs: &[Attr<'_>]| attrs.iter().find_map(|a| Direction::from_attr(a.name));
        let d = find(&m.attrs)
            .or_else(|| find(&self.attrs))
            .unwrap_or(Direction::SendRecv);
        let zero = m
            .connection
            .or(self.connection)
            .is_some_and(|ip| ip.is_unspecified());
        if zero && d == Direction::SendRecv {
            Direction::SendOnly
        } else {
            d
        }
    }
}

impl<'a> MediaDesc<'a> {
    pub fn attr(&self, name: &[u8]) -> Option<&Attr<'a>> {
        self.attrs
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// The rtpmap of payload type `pt`: (encoding name, clock rate).
    pub fn rtpmap(&self, pt: u8) -> Option<(&'a [u8], u32)> {
        self.attrs
            .iter()
            .filter(|a| a.name == b"rtpmap")
            .filter_map(|a| a.value)
            .find_map(|v| {
                let sp = v.iter().position(|&b| b == b' ')?;
                if parse_u16(&v[..sp])? != u16::from(pt) {
                    return None;
                }
                let mut enc = v[sp + 1..].split(|&b| b == b'/');
                let name = enc.next()?;
                let rate = std::str::from_utf8(enc.next()?).ok()?.parse().ok()?;
                Some((name, rate))
            })
    }

    /// The codec payload type `pt` stands for here, if Tollgate has it.
    pub fn codec(&self, pt: u8) -> Option<Codec> {
        match self.rtpmap(pt) {
            Some((name, rate)) => Codec::ALL.into_iter().find(|c| {
                c.name().as_bytes().eq_ignore_ascii_case(name) && c.rtpmap_rate() == rate
            }),
            None => Codec::ALL.into_iter().find(|c| c.static_pt() == Some(pt)),
        }
    }

    pub fn ptime(&self) -> Option<u16> {
        self.attr(b"ptime")
            .and_then(|a| a.value)
            .and_then(parse_u16)
    }

    pub fn rtcp_mux(&self) -> bool {
        self.attr(b"rtcp-mux").is_some()
    }

    /// Whether the profile is secure RTP (RTP/SAVP or RTP/SAVPF).
    pub fn is_savp(&self) -> bool {
        self.proto.eq_ignore_ascii_case(b"RTP/SAVP")
            || self.proto.eq_ignore_ascii_case(b"RTP/SAVPF")
    }

    /// The `a=crypto` lines: (tag, suite name, inline key, the rest).
    pub fn cryptos(&self) -> impl Iterator<Item = Crypto<'a>> + '_ {
        self.attrs
            .iter()
            .filter(|a| a.name == b"crypto")
            .filter_map(|a| Crypto::parse(a.value?))
    }
}

/// An `a=crypto` line (RFC 4568 section 9.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crypto<'a> {
    pub tag: u32,
    pub suite: &'a [u8],
    /// The base64 key||salt after `inline:`, before any `|lifetime|MKI`.
    pub key_b64: &'a [u8],
    /// Whether key parameters carry an MKI or lifetime, or session
    /// parameters follow (Tollgate supports neither).
    pub extras: bool,
}

impl<'a> Crypto<'a> {
    fn parse(v: &'a [u8]) -> Option<Self> {
        let mut f = v.split(|&b| b == b' ').filter(|p| !p.is_empty());
        let tag = std::str::from_utf8(f.next()?).ok()?.parse().ok()?;
        let suite = f.next()?;
        let key_params = f.next()?;
        let session_params = f.next().is_some();
        let inline = key_params.strip_prefix(b"inline:")?;
        let mut parts = inline.split(|&b| b == b'|');
        let key_b64 = parts.next()?;
        Some(Self {
            tag,
            suite,
            key_b64,
            extras: parts.next().is_some() || session_params,
        })
    }

    /// The master key this line carries, if its suite is one Tollgate
    /// offers over SDES and the key decodes to the right length.
    pub fn master_key(&self, allowed: &[Suite]) -> Result<MasterKey, SdpError> {
        let suite = std::str::from_utf8(self.suite)
            .ok()
            .and_then(Suite::from_sdes_name)
            .filter(|s| allowed.contains(s))
            .ok_or(SdpError::BadCrypto)?;
        let raw = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(self.key_b64)
                .map_err(|_| SdpError::BadCrypto)?,
        );
        MasterKey::from_concatenated(suite, &raw).map_err(|_| SdpError::BadCrypto)
    }
}

/// Media direction (RFC 3264 section 6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn from_attr(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"sendrecv" => Self::SendRecv,
            b"sendonly" => Self::SendOnly,
            b"recvonly" => Self::RecvOnly,
            b"inactive" => Self::Inactive,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    /// The direction an answer gives to an offer of `self`.
    pub fn answer(self) -> Self {
        match self {
            Self::SendRecv => Self::SendRecv,
            Self::SendOnly => Self::RecvOnly,
            Self::RecvOnly => Self::SendOnly,
            Self::Inactive => Self::Inactive,
        }
    }

    /// Whether the side holding this direction sends media.
    pub fn sends(self) -> bool {
        matches!(self, Self::SendRecv | Self::SendOnly)
    }

    /// Whether the side holding this direction receives media.
    pub fn receives(self) -> bool {
        matches!(self, Self::SendRecv | Self::RecvOnly)
    }
}

/// Audio codecs Tollgate terminates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    Pcmu,
    Pcma,
    G722,
    TelephoneEvent,
}

impl Codec {
    pub const ALL: [Codec; 4] = [Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::TelephoneEvent];

    pub fn name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
            Self::G722 => "G722",
            Self::TelephoneEvent => "telephone-event",
        }
    }

    /// The static payload type (RFC 3551), if any.
    pub fn static_pt(self) -> Option<u8> {
        match self {
            Self::Pcmu => Some(0),
            Self::Pcma => Some(8),
            Self::G722 => Some(9),
            Self::TelephoneEvent => None,
        }
    }

    /// The clock rate written in rtpmap (8000 for G.722 too, RFC 3551).
    pub fn rtpmap_rate(self) -> u32 {
        8000
    }

    /// Parses a configured codec name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }
}

/// Whether a trunk uses SRTP (SDES).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrtpMode {
    /// Plain RTP only; an SRTP-only offer gets 488.
    Off,
    /// SRTP when the peer offers it (RTP/SAVP, or RTP/AVP with `a=crypto`
    /// as "best-effort SRTP" peers such as Asterisk and FreeSWITCH send),
    /// plain RTP otherwise.
    Offered,
    /// SRTP only; a plain offer gets 488.
    Required,
}

/// What kind of address an SDP connection line names: a trunk's media
/// policy allows some (see `config::Trunk::media_scopes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AddrScope {
    Public,
    /// RFC 1918, shared address space (RFC 6598, carrier-grade NAT) and
    /// IPv6 unique local addresses.
    Private,
    Loopback,
    LinkLocal,
    /// Multicast, broadcast and the reserved 240.0.0.0/4.
    Multicast,
    /// 0.0.0.0 or `::`: no destination (the old way to signal hold).
    Unspecified,
}

impl AddrScope {
    /// The scope of `ip` (an IPv4-mapped IPv6 address as its IPv4).
    pub fn of(ip: IpAddr) -> Self {
        match crate::unmapped(ip) {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                if v4.is_unspecified() {
                    Self::Unspecified
                } else if v4.is_loopback() {
                    Self::Loopback
                } else if v4.is_link_local() {
                    Self::LinkLocal
                } else if v4.is_multicast() || v4.is_broadcast() || o[0] >= 240 {
                    Self::Multicast
                } else if v4.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
                    Self::Private
                } else {
                    Self::Public
                }
            }
            IpAddr::V6(v6) => {
                let first = v6.segments()[0];
                if v6.is_unspecified() {
                    Self::Unspecified
                } else if v6.is_loopback() {
                    Self::Loopback
                } else if (first & 0xffc0) == 0xfe80 {
                    Self::LinkLocal
                } else if v6.is_multicast() {
                    Self::Multicast
                } else if (first & 0xfe00) == 0xfc00 {
                    Self::Private
                } else {
                    Self::Public
                }
            }
        }
    }

    /// The name in configuration files, logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
            Self::Loopback => "loopback",
            Self::LinkLocal => "link_local",
            Self::Multicast => "multicast",
            Self::Unspecified => "unspecified",
        }
    }

    /// Every scope, in [`AddrScope::name`] order of declaration.
    pub const ALL: [Self; 6] = [
        Self::Public,
        Self::Private,
        Self::Loopback,
        Self::LinkLocal,
        Self::Multicast,
        Self::Unspecified,
    ];
}

/// What the local side brings to an answer.
#[derive(Clone, Debug)]
pub struct Local {
    pub address: IpAddr,
    pub port: u16,
    /// Audio codecs in preference order (telephone-event is added when the
    /// offer has it).
    pub codecs: Vec<Codec>,
    pub srtp: SrtpMode,
    /// SDES suites accepted, in preference order.
    pub suites: Vec<Suite>,
    /// o= session id (stable for the session) and version (bumped on each
    /// new offer or answer that changes).
    pub session_id: u64,
    pub session_version: u64,
}

/// The outcome of answering an offer: what media will flow and the SDP to
/// send back.
pub struct Negotiated {
    pub remote: std::net::SocketAddr,
    pub codec: Codec,
    pub pt: u8,
    /// telephone-event payload type, if both sides have it.
    pub dtmf_pt: Option<u8>,
    pub ptime: u16,
    /// Our direction in the answer.
    pub direction: Direction,
    pub rtcp_mux: bool,
    /// SDES keys: (suite, the peer's key for opening, ours for sealing).
    pub srtp: Option<(MasterKey, MasterKey)>,
    pub answer: Vec<u8>,
}

/// Answers `offer` (RFC 3264 section 6) as `local`.
pub fn answer(offer: &Sdp<'_>, local: &Local) -> Result<Negotiated, SdpError> {
    answer_keeping(offer, local, None)
}

/// As [`answer`], keeping `ours` as our SDES key (a re-INVITE on a call
/// whose media already seals with it: a fresh key in the answer would be
/// one the media never uses). A different suite from the one in use is
/// refused.
pub fn answer_keeping(
    offer: &Sdp<'_>,
    local: &Local,
    ours: Option<&MasterKey>,
) -> Result<Negotiated, SdpError> {
    let keep = ours;
    let m = offer.audio().ok_or(SdpError::NoCommonCodec)?;
    let ip = m
        .connection
        .or(offer.connection)
        .ok_or(SdpError::NoAddress)?;
    // Our preference picks the codec among those offered.
    let (codec, pt) = local
        .codecs
        .iter()
        .filter(|c| **c != Codec::TelephoneEvent)
        .find_map(|want| {
            m.formats
                .iter()
                .find(|&&pt| m.codec(pt) == Some(*want))
                .map(|&pt| (*want, pt))
        })
        .ok_or(SdpError::NoCommonCodec)?;
    let dtmf_pt = m
        .formats
        .iter()
        .copied()
        .find(|&pt| m.codec(pt) == Some(Codec::TelephoneEvent));

    // The first crypto line, in our suite preference, that we can use.
    let usable = || {
        local.suites.iter().find_map(|s| {
            m.cryptos()
                .filter(|c| !c.extras && c.suite == s.sdes_name().as_bytes())
                .find_map(|c| Some((c.tag, c.master_key(&local.suites).ok()?)))
        })
    };
    let srtp = match (m.is_savp(), local.srtp) {
        (true, SrtpMode::Off) => return Err(SdpError::SrtpRefused),
        (_, SrtpMode::Off) => None,
        (savp, mode) => match usable() {
            Some(chosen) => Some(chosen),
            None if savp || mode == SrtpMode::Required => return Err(SdpError::SrtpRequired),
            None => None,
        },
    };

    let ptime = m.ptime().unwrap_or(20);
    let direction = offer.direction(m).answer();
    let rtcp_mux = m.rtcp_mux();

    let mut out = Vec::with_capacity(512);
    let ours = match (&srtp, keep) {
        (Some((tag, theirs)), Some(k)) if k.suite() == theirs.suite() => {
            Some((*tag, k.duplicate()))
        }
        (Some(_), Some(_)) => return Err(SdpError::BadCrypto),
        (Some((tag, theirs)), None) => {
            let mine = MasterKey::random(theirs.suite()).map_err(|_| SdpError::BadCrypto)?;
            Some((*tag, mine))
        }
        (None, _) => None,
    };
    write_sdp(
        &mut out,
        local,
        m.is_savp(), // the answer keeps the offer's profile
        &[(codec, pt)],
        dtmf_pt,
        ptime,
        direction,
        rtcp_mux,
        ours.as_ref().map(|(t, k)| (*t, k)),
    );
    Ok(Negotiated {
        remote: std::net::SocketAddr::new(ip, m.port),
        codec,
        pt,
        dtmf_pt,
        ptime,
        direction,
        rtcp_mux,
        srtp: match (srtp, ours) {
            (Some((_, theirs)), Some((_, mine))) => Some((theirs, mine)),
            _ => None,
        },
        answer: out,
    })
}

/// Writes an SDP body with one audio section.
#[allow(clippy::too_many_arguments)]
pub fn write_sdp(
    out: &mut Vec<u8>,
    local: &Local,
    savp: bool,
    codecs: &[(Codec, u8)],
    dtmf_pt: Option<u8>,
    ptime: u16,
    direction: Direction,
    rtcp_mux: bool,
    crypto: Option<(u32, &MasterKey)>,
) {
    use std::fmt::Write as _;
    let ip_kind = if local.address.is_ipv4() {
        "IP4"
    } else {
        "IP6"
    };
    let mut s = String::with_capacity(512);
    let _ = write!(
        s,
        "v=0\r\no=tollgate {} {} IN {ip_kind} {}\r\ns=tollgate\r\nc=IN {ip_kind} {}\r\nt=0 0\r\nm=audio {} {}",
        local.session_id,
        local.session_version,
        local.address,
        local.address,
        local.port,
        if savp { "RTP/SAVP" } else { "RTP/AVP" },
    );
    for (_, pt) in codecs {
        let _ = write!(s, " {pt}");
    }
    if let Some(pt) = dtmf_pt {
        let _ = write!(s, " {pt}");
    }
    s.push_str("\r\n");
    for (c, pt) in codecs {
        let _ = write!(s, "a=rtpmap:{pt} {}/{}\r\n", c.name(), c.rtpmap_rate());
    }
    if let Some(pt) = dtmf_pt {
        let _ = write!(
            s,
            "a=rtpmap:{pt} telephone-event/8000\r\na=fmtp:{pt} 0-16\r\n"
        );
    }
    let _ = write!(s, "a=ptime:{ptime}\r\na={}\r\n", direction.as_str());
    if rtcp_mux {
        s.push_str("a=rtcp-mux\r\n");
    }
    out.extend_from_slice(s.as_bytes());
    if let Some((tag, key)) = crypto {
        let mut line = zeroize::Zeroizing::new(format!(
            "a=crypto:{tag} {} inline:",
            key.suite().sdes_name()
        ));
        base64::engine::general_purpose::STANDARD.encode_string(&*key.to_concatenated(), &mut line);
        line.push_str("\r\n");
        out.extend_from_slice(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARRIER: &[u8] = b"v=0\r\n\
o=- 1795548160 1795548160 IN IP4 203.0.113.5\r\n\
s=Carrier\r\n\
c=IN IP4 203.0.113.5\r\n\
t=0 0\r\n\
m=audio 18074 RTP/AVP 8 0 9 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

    fn local(srtp: SrtpMode) -> Local {
        Local {
            address: "127.0.0.1".parse().expect("ip"),
            port: 20_000,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            srtp,
            suites: vec![Suite::AeadAes128Gcm, Suite::AesCm128HmacSha1_80],
            session_id: 42,
            session_version: 1,
        }
    }

    #[test]
    fn answers_a_carrier_offer_with_our_codec_preference() {
        let offer = Sdp::parse(CARRIER).expect("parses");
        let n = answer(&offer, &local(SrtpMode::Offered)).expect("answers");
        assert_eq!(n.remote, "203.0.113.5:18074".parse().expect("addr"));
        assert_eq!((n.codec, n.pt), (Codec::Pcmu, 0));
        assert_eq!(n.dtmf_pt, Some(101));
        assert_eq!(n.direction, Direction::SendRecv);
        assert!(n.srtp.is_none());
        let a = Sdp::parse(&n.answer).expect("our answer parses");
        let m = a.audio().expect("audio");
        assert_eq!(m.formats, vec![0, 101]);
        assert_eq!(m.port, 20_000);
        assert_eq!(a.connection, Some("127.0.0.1".parse().expect("ip")));
        assert_eq!(m.codec(101), Some(Codec::TelephoneEvent));
        assert_eq!(m.ptime(), Some(20));
    }

    #[test]
    fn hold_directions_are_answered_per_rfc3264() {
        for (offered, answered) in [
            ("sendonly", Direction::RecvOnly),
            ("recvonly", Direction::SendOnly),
            ("inactive", Direction::Inactive),
        ] {
            let body = String::from_utf8(CARRIER.to_vec())
                .expect("utf8")
                .replace("a=sendrecv", &format!("a={offered}"));
            let offer = Sdp::parse(body.as_bytes()).expect("parses");
            let n = answer(&offer, &local(SrtpMode::Off)).expect("answers");
            assert_eq!(n.direction, answered, "{offered}");
        }
        // RFC 2543 hold: c=0.0.0.0.
        let body = String::from_utf8(CARRIER.to_vec())
            .expect("utf8")
            .replace("c=IN IP4 203.0.113.5", "c=IN IP4 0.0.0.0");
        let offer = Sdp::parse(body.as_bytes()).expect("parses");
        assert_eq!(
            answer(&offer, &local(SrtpMode::Off)).expect("ok").direction,
            Direction::RecvOnly
        );
    }

    #[test]
    fn sdes_crypto_is_negotiated_with_the_media_core() {
        let theirs = MasterKey::random(Suite::AesCm128HmacSha1_80).expect("key");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&*theirs.to_concatenated());
        let body = format!(
            "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
m=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{b64}\r\n\
a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{b64}|2^20|1:4\r\n\
a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{b64}\r\na=rtcp-mux\r\n"
        );
        let offer = Sdp::parse(body.as_bytes()).expect("parses");
        let n = answer(&offer, &local(SrtpMode::Required)).expect("answers");
        let (peer, mine) = n.srtp.as_ref().expect("srtp");
        assert_eq!(peer.suite(), Suite::AesCm128HmacSha1_80);
        assert_eq!(*peer.to_concatenated(), *theirs.to_concatenated());
        assert_ne!(*mine.to_concatenated(), *theirs.to_concatenated());
        assert!(n.rtcp_mux);
        let a = Sdp::parse(&n.answer).expect("parses");
        let m = a.audio().expect("audio");
        assert!(m.is_savp());
        let c: Vec<_> = m.cryptos().collect();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].tag, 3, "the tag of the line we accepted (no MKI)");
        let back = c[0]
            .master_key(&[Suite::AesCm128HmacSha1_80])
            .expect("decodes");
        assert_eq!(*back.to_concatenated(), *mine.to_concatenated());
    }

    #[test]
    fn srtp_policy_refusals() {
        let offer = Sdp::parse(CARRIER).expect("parses");
        assert_eq!(
            answer(&offer, &local(SrtpMode::Required)).err(),
            Some(SdpError::SrtpRequired)
        );
        let savp = String::from_utf8(CARRIER.to_vec())
            .expect("utf8")
            .replace("RTP/AVP", "RTP/SAVP");
        let offer = Sdp::parse(savp.as_bytes()).expect("parses");
        assert_eq!(
            answer(&offer, &local(SrtpMode::Off)).err(),
            Some(SdpError::SrtpRefused)
        );
        // SAVP with no usable crypto line.
        assert_eq!(
            answer(&offer, &local(SrtpMode::Offered)).err(),
            Some(SdpError::SrtpRequired)
        );
        // Best-effort SRTP: RTP/AVP carrying a=crypto is taken as SRTP
        // unless SRTP is off.
        let theirs = MasterKey::random(Suite::AeadAes128Gcm).expect("key");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&*theirs.to_concatenated());
        let best = format!(
            "{}a=crypto:7 AEAD_AES_128_GCM inline:{b64}\r\n",
            String::from_utf8(CARRIER.to_vec()).expect("utf8")
        );
        let offer = Sdp::parse(best.as_bytes()).expect("parses");
        let n = answer(&offer, &local(SrtpMode::Offered)).expect("answers");
        assert_eq!(
            n.srtp.as_ref().map(|(p, _)| p.suite()),
            Some(Suite::AeadAes128Gcm)
        );
        assert!(!Sdp::parse(&n.answer)
            .expect("ok")
            .audio()
            .expect("audio")
            .is_savp());
        let n = answer(&offer, &local(SrtpMode::Off)).expect("answers plain");
        assert!(n.srtp.is_none());
        assert_eq!(
            Sdp::parse(&n.answer)
                .expect("ok")
                .audio()
                .expect("a")
                .cryptos()
                .count(),
            0
        );
    }

    #[test]
    fn torture_sdp_and_malformed_bodies() {
        let mixed = b"v=0\r\no=bob 280744730 28977631 IN IP4 host.example.com\r\ns=\r\nt=0 0\r\n\
m=audio 22334 RTP/AVP 0\r\nc=IN IP4 192.0.2.1\r\nm=video 6024 RTP/AVP 107\r\n\
c=IN IP6 2001:db8::1\r\na=rtpmap:107 H263-1998/90000\r\n";
        let s = Sdp::parse(mixed).expect("parses");
        assert_eq!(s.media.len(), 2);
        assert_eq!(
            s.media[1].connection,
            Some("2001:db8::1".parse().expect("v6"))
        );
        let n = answer(&s, &local(SrtpMode::Off)).expect("answers audio");
        assert_eq!(n.remote, "192.0.2.1:22334".parse().expect("addr"));
        assert_eq!(Sdp::parse(b"").err(), Some(SdpError::NoVersion));
        assert_eq!(
            Sdp::parse(b"v=0\r\ngarbage\r\n").err(),
            Some(SdpError::BadLine)
        );
        assert_eq!(
            Sdp::parse(b"v=0\r\nc=IN IP4 300.1.1.1\r\n").err(),
            Some(SdpError::BadConnection)
        );
        assert_eq!(
            Sdp::parse(b"v=0\r\nc=IN IP6 192.0.2.1\r\n").err(),
            Some(SdpError::BadConnection)
        );
        assert_eq!(
            Sdp::parse(b"v=0\r\nm=audio x RTP/AVP 0\r\n").err(),
            Some(SdpError::BadMedia)
        );
        let mut many = b"v=0\r\n".to_vec();
        for _ in 0..=MAX_MEDIA {
            many.extend_from_slice(b"m=audio 1 RTP/AVP 0\r\n");
        }
        assert_eq!(Sdp::parse(&many).err(), Some(SdpError::TooMany));
        let g729 = b"v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 5 RTP/AVP 18\r\n";
        let s = Sdp::parse(g729).expect("parses");
        assert_eq!(
            answer(&s, &local(SrtpMode::Off)).err(),
            Some(SdpError::NoCommonCodec)
        );
    }
}
