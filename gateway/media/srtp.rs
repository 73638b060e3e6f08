//! SRTP and SRTCP (RFC 3711, RFC 7714, RFC 6188), both directions.
//!
//! Suites: AEAD_AES_128_GCM and AEAD_AES_256_GCM (RFC 7714), the AES_CM
//! suites with HMAC-SHA1 (RFC 3711, RFC 6188) that carriers offer over SDES,
//! and NULL_HMAC_SHA1_80 (authentication only; for interop tests, never
//! offered by the gateway).
//!
//! An [`SrtpSender`] seals the packets of one direction and an
//! [`SrtpReceiver`] opens them; each keeps per-SSRC state (rollover counter,
//! replay window, SRTCP index) in a table bounded by
//! [`SrtpConfig::max_streams`], allocated once at construction.
//!
//! Sealing and opening work in place on the caller's buffer: `seal_*` takes
//! a buffer holding the packet in its first `len` bytes with room behind it
//! for the trailer ([`Suite::rtp_overhead`], [`Suite::rtcp_overhead`]) and
//! returns the protected length; `open_*` takes the protected packet and
//! returns the plain length. Nothing is allocated per packet.
//!
//! Cheap checks come before crypto: header sanity, then the replay window,
//! and only then the AEAD or HMAC. A sender also refuses to seal an index
//! twice, since that would reuse a GCM nonce or a counter-mode keystream.

mod cm;
pub mod kdf;

use std::marker::PhantomData;

use zeroize::Zeroizing;

use self::cm::{tags_equal, AesCtr, HmacSha1};
use self::kdf::Label;
use super::replay::{ReplayCheck, ReplayWindow, DEFAULT_WINDOW};
use super::rtp::{extend_seq as estimate_index, RtpError, SrtpHeader};
use crate::crypto::aead::{Aead, AesGcm, NONCE_LEN, TAG_LEN as GCM_TAG_LEN};

/// The protection profiles Tollgate speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Suite {
    AeadAes128Gcm,
    AeadAes256Gcm,
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
    AesCm192HmacSha1_80,
    AesCm256HmacSha1_80,
    /// No encryption, HMAC-SHA1 80-bit tags. Interop testing only.
    NullHmacSha1_80,
}

impl Suite {
    /// Every suite, for tests and benchmarks.
    pub const ALL: [Suite; 7] = [
        Suite::AeadAes128Gcm,
        Suite::AeadAes256Gcm,
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32,
        Suite::AesCm192HmacSha1_80,
        Suite::AesCm256HmacSha1_80,
        Suite::NullHmacSha1_80,
    ];

    /// The name used in SDP `a=crypto` (RFC 4568, RFC 7714 section 14.2).
    pub fn sdes_name(self) -> &'static str {
        match self {
            Self::AeadAes128Gcm => "AEAD_AES_128_GCM",
            Self::AeadAes256Gcm => "AEAD_AES_256_GCM",
            Self::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Self::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Self::AesCm192HmacSha1_80 => "AES_192_CM_HMAC_SHA1_80",
            Self::AesCm256HmacSha1_80 => "AES_256_CM_HMAC_SHA1_80",
            Self::NullHmacSha1_80 => "NULL_HMAC_SHA1_80",
        }
    }

    /// The suite an SDP `a=crypto` name stands for.
    pub fn from_sdes_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.sdes_name() == name)
    }

    /// Master key length in bytes (also the session encryption key length).
    pub fn key_len(self) -> usize {
        match self {
            Self::AeadAes128Gcm
            | Self::AesCm128HmacSha1_80
            | Self::AesCm128HmacSha1_32
            | Self::NullHmacSha1_80 => 16,
            Self::AesCm192HmacSha1_80 => 24,
            Self::AeadAes256Gcm | Self::AesCm256HmacSha1_80 => 32,
        }
    }

    /// Master salt length in bytes (also the session salt length).
    pub fn salt_len(self) -> usize {
        if self.is_aead() {
            12
        } else {
            14
        }
    }

    /// Whether this is an RFC 7714 AEAD suite.
    pub fn is_aead(self) -> bool {
        matches!(self, Self::AeadAes128Gcm | Self::AeadAes256Gcm)
    }

    /// Whether the suite can encrypt at all.
    pub fn encrypts(self) -> bool {
        self != Self::NullHmacSha1_80
    }

    /// Authentication tag length on SRTP packets.
    pub fn rtp_tag_len(self) -> usize {
        match self {
            Self::AeadAes128Gcm | Self::AeadAes256Gcm => GCM_TAG_LEN,
            Self::AesCm128HmacSha1_32 => 4,
            _ => 10,
        }
    }

    /// Authentication tag length on SRTCP packets. The `_32` suite still
    /// uses 80-bit tags for SRTCP (RFC 3711 section 5.2, RFC 4568 6.2.1).
    pub fn rtcp_tag_len(self) -> usize {
        if self.is_aead() {
            GCM_TAG_LEN
        } else {
            10
        }
    }

    /// Bytes an SRTP packet grows by when sealed.
    pub fn rtp_overhead(self) -> usize {
        self.rtp_tag_len()
    }

    /// Bytes an SRTCP packet grows by when sealed (tag and E|index word).
    pub fn rtcp_overhead(self) -> usize {
        self.rtcp_tag_len() + 4
    }
}

/// Why a packet could not be sealed or opened, or a context not made.
/// Peer faults and our own misuse are distinct variants; each has a static
/// name for counters ([`SrtpError::reason`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SrtpError {
    // Peer faults (opening).
    #[error("packet too short for its header and tag")]
    TooShort,
    #[error("malformed RTP or RTCP header")]
    BadHeader,
    #[error("authentication failed")]
    AuthFailed,
    #[error("packet index already received")]
    Replayed,
    #[error("packet index older than the replay window")]
    TooOld,
    #[error("unencrypted packet where the policy requires encryption")]
    Unencrypted,
    #[error("too many SSRCs on one context")]
    TooManyStreams,
    // Sender limits and caller faults (sealing, setup).
    #[error("packet index already sealed; sealing again would reuse a nonce")]
    IndexReused,
    #[error("key exhausted: the packet index space is used up")]
    KeyExhausted,
    #[error("buffer has no room for the SRTP trailer")]
    BufferTooSmall,
    #[error("key or salt has the wrong length for the suite")]
    KeyLength,
    #[error("replay window must be 64 to 1024 packets, and max_streams at least 1")]
    BadConfig,
    #[error("the operating system's random source failed")]
    NoRandom,
}

impl SrtpError {
    /// A short, stable name for metrics labels.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooShort => "too_short",
            Self::BadHeader => "bad_header",
            Self::AuthFailed => "auth_failed",
            Self::Replayed => "replayed",
            Self::TooOld => "too_old",
            Self::Unencrypted => "unencrypted",
            Self::TooManyStreams => "too_many_streams",
            Self::IndexReused => "index_reused",
            Self::KeyExhausted => "key_exhausted",
            Self::BufferTooSmall => "buffer_too_small",
            Self::KeyLength => "key_length",
            Self::BadConfig => "bad_config",
            Self::NoRandom => "no_random",
        }
    }
}

/// Which way an agent leg's packets go (see [`MasterKey::for_way`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    ToAgent,
    FromAgent,
}

/// A master key and salt for one suite. No `Debug`, no `Clone`; zeroized on
/// drop.
pub struct MasterKey {
    suite: Suite,
    key: Zeroizing<[u8; 32]>,
    salt: Zeroizing<[u8; 14]>,
}

impl MasterKey {
    /// From a master key and master salt of the suite's lengths.
    pub fn new(suite: Suite, key: &[u8], salt: &[u8]) -> Result<Self, SrtpError> {
        if key.len() != suite.key_len() || salt.len() != suite.salt_len() {
            return Err(SrtpError::KeyLength);
        }
        let mut k = Zeroizing::new([0; 32]);
        k[..key.len()].copy_from_slice(key);
        let mut s = Zeroizing::new([0; 14]);
        s[..salt.len()].copy_from_slice(salt);
        Ok(Self {
            suite,
            key: k,
            salt: s,
        })
    }

    /// From key and salt concatenated, as SDES `inline:` carries them.
    pub fn from_concatenated(suite: Suite, key_salt: &[u8]) -> Result<Self, SrtpError> {
        if key_salt.len() != suite.key_len() + suite.salt_len() {
            return Err(SrtpError::KeyLength);
        }
        let (k, s) = key_salt.split_at(suite.key_len());
        Self::new(suite, k, s)
    }

    /// A fresh random master key and salt from the operating system.
    pub fn random(suite: Suite) -> Result<Self, SrtpError> {
        use ring::rand::SecureRandom;
        let mut buf = Zeroizing::new([0u8; 46]);
        let n = suite.key_len() + suite.salt_len();
        ring::rand::SystemRandom::new()
            .fill(&mut buf[..n])
            .map_err(|_| SrtpError::NoRandom)?;
        Self::from_concatenated(suite, &buf[..n])
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The key one direction of an agent leg uses, derived from the key
    /// the offer carries (HKDF-SHA256, RFC 5869, with the direction as
    /// its info). Each way has its own key, so no choice of SSRCs can make
    /// the two directions reuse an AEAD nonce, and a packet reflected back
    /// to its sender does not open.
    pub fn for_way(&self, way: Way) -> Result<Self, SrtpError> {
        struct Len(usize);
        impl ring::hkdf::KeyType for Len {
            fn len(&self) -> usize {
                self.0
            }
        }
        let n = self.suite.key_len() + self.suite.salt_len();
        let info: &[u8] = match way {
            Way::ToAgent => b"tollgate agent media: gateway to agent",
            Way::FromAgent => b"tollgate agent media: agent to gateway",
        };
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"tollgate-agent-srtp-v2")
            .extract(&self.to_concatenated());
        let infos = [info];
        let okm = prk
            .expand(&infos, Len(n))
            .map_err(|_| SrtpError::KeyLength)?;
        let mut out = Zeroizing::new([0u8; 46]);
        okm.fill(&mut out[..n]).map_err(|_| SrtpError::KeyLength)?;
        Self::from_concatenated(self.suite, &out[..n])
    }

    /// A second copy of the same key (for an answer that keeps its key).
    pub fn duplicate(&self) -> Self {
        Self {
            suite: self.suite,
            key: self.key.clone(),
            salt: self.salt.clone(),
        }
    }

    /// Whether `other` is the same suite, key and salt (compared without
    /// stopping at the first difference).
    pub fn same_as(&self, other: &MasterKey) -> bool {
        let diff = self
            .key
            .iter()
            .chain(self.salt.iter())
            .zip(other.key.iter().chain(other.salt.iter()))
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        self.suite == other.suite && diff == 0
    }

    /// Key and salt concatenated, for SDES `inline:`. Handle with care.
    pub fn to_concatenated(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(46));
        v.extend_from_slice(&self.key[..self.suite.key_len()]);
        v.extend_from_slice(&self.salt[..self.suite.salt_len()]);
        v
    }

    fn key(&self) -> &[u8] {
        &self.key[..self.suite.key_len()]
    }

    fn salt(&self) -> &[u8] {
        &self.salt[..self.suite.salt_len()]
    }
}

/// Session keys for one of SRTP or SRTCP: encryption key, salt and (for the
/// HMAC suites) authentication key. Normally derived from a [`MasterKey`];
/// [`SessionKeys::new`] takes them directly for test vectors.
pub struct SessionKeys {
    suite: Suite,
    key: Zeroizing<[u8; 32]>,
    salt: Zeroizing<[u8; 14]>,
    auth: Zeroizing<[u8; 20]>,
}

impl SessionKeys {
    /// Session keys given directly. `auth` is ignored by the AEAD suites and
    /// must be 20 bytes for the HMAC suites.
    pub fn new(suite: Suite, key: &[u8], salt: &[u8], auth: &[u8]) -> Result<Self, SrtpError> {
        let auth_len = if suite.is_aead() { 0 } else { 20 };
        if key.len() != suite.key_len() || salt.len() != suite.salt_len() || auth.len() != auth_len
        {
            return Err(SrtpError::KeyLength);
        }
        let mut s = Self::zero(suite);
        s.key[..key.len()].copy_from_slice(key);
        s.salt[..salt.len()].copy_from_slice(salt);
        s.auth[..auth.len()].copy_from_slice(auth);
        Ok(s)
    }

    fn zero(suite: Suite) -> Self {
        Self {
            suite,
            key: Zeroizing::new([0; 32]),
            salt: Zeroizing::new([0; 14]),
            auth: Zeroizing::new([0; 20]),
        }
    }

    /// The SRTP and SRTCP session keys derived from `master` (kdr 0).
    pub fn derive(master: &MasterKey) -> Result<(Self, Self), SrtpError> {
        let suite = master.suite;
        let prf = AesCtr::new(master.key()).ok_or(SrtpError::KeyLength)?;
        let mut out = (Self::zero(suite), Self::zero(suite));
        let (kl, sl) = (suite.key_len(), suite.salt_len());
        let salt = master.salt();
        for (keys, labels) in [
            (
                &mut out.0,
                [
                    Label::RtpEncryption,
                    Label::RtpSalt,
                    Label::RtpAuthentication,
                ],
            ),
            (
                &mut out.1,
                [
                    Label::RtcpEncryption,
                    Label::RtcpSalt,
                    Label::RtcpAuthentication,
                ],
            ),
        ] {
            let d = |label, out: &mut [u8]| {
                kdf::derive_with(&prf, salt, label, out).map_err(|_| SrtpError::KeyLength)
            };
            d(labels[0], &mut keys.key[..kl])?;
            d(labels[1], &mut keys.salt[..sl])?;
            if !suite.is_aead() {
                d(labels[2], &mut keys.auth[..])?;
            }
        }
        Ok(out)
    }
}

/// Settings of a sender or receiver. Validated when the context is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SrtpConfig {
    /// Replay window in packets, per SSRC, for SRTP and SRTCP. Defaults to
    /// 128; 64 to 1024 accepted.
    pub replay_window: u16,
    /// Most SSRCs one context tracks. Defaults to 16. Memory is about 300
    /// bytes a stream, reserved up front.
    pub max_streams: usize,
    /// Encrypt RTP payloads (false is RFC 4568's UNENCRYPTED_SRTP).
    /// Defaults to true.
    pub encrypt_rtp: bool,
    /// Encrypt RTCP (false is UNENCRYPTED_SRTCP). Defaults to true.
    pub encrypt_rtcp: bool,
}

impl Default for SrtpConfig {
    fn default() -> Self {
        Self {
            replay_window: DEFAULT_WINDOW,
            max_streams: 16,
            encrypt_rtp: true,
            encrypt_rtcp: true,
        }
    }
}

/// The keyed packet transform of one of SRTP or SRTCP. Held inline (made
/// once per context, never moved on the packet path), so the size gap
/// between variants costs nothing per packet.
#[allow(clippy::large_enum_variant)]
enum Transform {
    Gcm {
        aead: AesGcm,
        salt: [u8; 12],
    },
    Cm {
        /// `None` for the NULL cipher.
        ctr: Option<AesCtr>,
        salt: [u8; 14],
        mac: HmacSha1,
        tag_len: usize,
    },
}

impl Drop for Transform {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        match self {
            Self::Gcm { salt, .. } => salt.zeroize(),
            Self::Cm { salt, .. } => salt.zeroize(),
        }
    }
}

impl Transform {
    fn new(keys: &SessionKeys, tag_len: usize) -> Result<Self, SrtpError> {
        let suite = keys.suite;
        let key = &keys.key[..suite.key_len()];
        if suite.is_aead() {
            let mut salt = [0; 12];
            salt.copy_from_slice(&keys.salt[..12]);
            Ok(Self::Gcm {
                aead: AesGcm::new(key).ok_or(SrtpError::KeyLength)?,
                salt,
            })
        } else {
            let ctr = if suite.encrypts() {
                Some(AesCtr::new(key).ok_or(SrtpError::KeyLength)?)
            } else {
                None
            };
            Ok(Self::Cm {
                ctr,
                salt: *keys.salt,
                mac: HmacSha1::new(&keys.auth),
                tag_len,
            })
        }
    }
}

/// GCM nonce: salt XOR (0x0000 || SSRC || 48-bit index), RFC 7714 8.1 and
/// 9.1 (for SRTCP the index is 31 bits, so its top two bytes are zero).
#[inline]
fn gcm_nonce(salt: &[u8; 12], ssrc: u32, index: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[2..6].copy_from_slice(&ssrc.to_be_bytes());
    n[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
    for (b, s) in n.iter_mut().zip(salt) {
        *b ^= s;
    }
    n
}

/// Counter-mode IV: (salt << 16) XOR (SSRC << 64) XOR (index << 16),
/// RFC 3711 section 4.1.1.
#[inline]
fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (b, x) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *b ^= x;
    }
    for (b, x) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *b ^= x;
    }
    iv
}

/// The largest SRTP packet index (48 bits) and SRTCP index (31 bits).
const MAX_RTP_INDEX: u64 = (1 << 48) - 1;
const MAX_RTCP_INDEX: u32 = (1 << 31) - 1;

/// Per-SSRC state.
struct Stream {
    ssrc: u32,
    /// SRTP indices: received (receiver) or sealed (sender). Its top is the
    /// highest index, from which the rollover counter comes.
    rtp: ReplayWindow,
    /// SRTCP indices received (receiver only).
    rtcp: ReplayWindow,
    /// Last SRTCP index sealed (sender only).
    rtcp_sent: u32,
}

/// The per-SSRC table shared by sender and receiver.
struct Streams {
    streams: Vec<Stream>,
    max: usize,
    window: u16,
}

impl Streams {
    fn new(config: &SrtpConfig) -> Result<Self, SrtpError> {
        if !ReplayWindow::valid_size(config.replay_window) || config.max_streams == 0 {
            return Err(SrtpError::BadConfig);
        }
        Ok(Self {
            streams: Vec::with_capacity(config.max_streams),
            max: config.max_streams,
            window: config.replay_window,
        })
    }

    #[inline]
    fn find(&self, ssrc: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.ssrc == ssrc)
    }

    fn fresh(&self, ssrc: u32) -> Stream {
        Stream {
            ssrc,
            rtp: ReplayWindow::new(self.window),
            rtcp: ReplayWindow::new(self.window),
            rtcp_sent: 0,
        }
    }

    /// The stream for `ssrc`, made if there is room.
    #[inline]
    fn get_or_insert(&mut self, ssrc: u32) -> Result<&mut Stream, SrtpError> {
        let i = match self.find(ssrc) {
            Some(i) => i,
            None => self.insert(self.fresh(ssrc))?,
        };
        Ok(&mut self.streams[i])
    }

    fn insert(&mut self, stream: Stream) -> Result<usize, SrtpError> {
        if self.streams.len() >= self.max {
            return Err(SrtpError::TooManyStreams);
        }
        self.streams.push(stream);
        Ok(self.streams.len() - 1)
    }

    fn remove(&mut self, ssrc: u32) -> bool {
        match self.find(ssrc) {
            Some(i) => {
                self.streams.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Runs `f` on the existing stream for `ssrc`, or on a fresh one that is
    /// kept only if `f` succeeds (a receiver learns an SSRC only from a
    /// packet that authenticated, so forged SSRCs cannot fill the table).
    #[inline]
    fn with_stream<T>(
        &mut self,
        ssrc: u32,
        f: impl FnOnce(&mut Stream) -> Result<T, SrtpError>,
    ) -> Result<T, SrtpError> {
        match self.find(ssrc) {
            Some(i) => f(&mut self.streams[i]),
            None => {
                if self.streams.len() >= self.max {
                    return Err(SrtpError::TooManyStreams);
                }
                let mut stream = self.fresh(ssrc);
                let out = f(&mut stream)?;
                self.insert(stream)?;
                Ok(out)
            }
        }
    }
}

/// The two transforms of a context and its stream table.
struct Context {
    suite: Suite,
    rtp: Transform,
    rtcp: Transform,
    streams: Streams,
    encrypt_rtp: bool,
    encrypt_rtcp: bool,
}

impl Context {
    fn new(rtp: &SessionKeys, rtcp: &SessionKeys, config: &SrtpConfig) -> Result<Self, SrtpError> {
        let suite = rtp.suite;
        if rtcp.suite != suite {
            return Err(SrtpError::KeyLength);
        }
        Ok(Self {
            suite,
            rtp: Transform::new(rtp, suite.rtp_tag_len())?,
            rtcp: Transform::new(rtcp, suite.rtcp_tag_len())?,
            streams: Streams::new(config)?,
            encrypt_rtp: config.encrypt_rtp && suite.encrypts(),
            encrypt_rtcp: config.encrypt_rtcp && suite.encrypts(),
        })
    }

    fn from_master(master: &MasterKey, config: &SrtpConfig) -> Result<Self, SrtpError> {
        let (rtp, rtcp) = SessionKeys::derive(master)?;
        Self::new(&rtp, &rtcp, config)
    }
}

fn replay_to_error(check: ReplayCheck, dup: SrtpError) -> Result<(), SrtpError> {
    match check {
        ReplayCheck::Fresh => Ok(()),
        ReplayCheck::Duplicate => Err(dup),
        ReplayCheck::TooOld => Err(SrtpError::TooOld),
    }
}

/// An SRTP context for one direction: [`SrtpSender`] seals, [`SrtpReceiver`]
/// opens. See the module doc.
pub struct Srtp<D> {
    ctx: Context,
    direction: PhantomData<D>,
}

/// Marks a context that seals (see [`SrtpSender`]).
pub enum Outbound {}
/// Marks a context that opens (see [`SrtpReceiver`]).
pub enum Inbound {}

/// Seals outgoing RTP and RTCP of one direction.
pub type SrtpSender = Srtp<Outbound>;
/// Opens incoming SRTP and SRTCP of one direction.
pub type SrtpReceiver = Srtp<Inbound>;

impl<D> Srtp<D> {
    /// A context keyed with session keys derived from `master`.
    pub fn new(master: &MasterKey, config: SrtpConfig) -> Result<Self, SrtpError> {
        Context::from_master(master, &config).map(Self::wrap)
    }

    /// A context keyed with session keys given directly (test vectors).
    pub fn with_session_keys(
        rtp: &SessionKeys,
        rtcp: &SessionKeys,
        config: SrtpConfig,
    ) -> Result<Self, SrtpError> {
        Context::new(rtp, rtcp, &config).map(Self::wrap)
    }

    fn wrap(ctx: Context) -> Self {
        Self {
            ctx,
            direction: PhantomData,
        }
    }

    pub fn suite(&self) -> Suite {
        self.ctx.suite
    }

    /// Forgets an SSRC (its stream ended).
    pub fn remove_stream(&mut self, ssrc: u32) -> bool {
        self.ctx.streams.remove(ssrc)
    }

    /// The rollover counter of `ssrc`'s highest index sealed or opened.
    pub fn roc(&self, ssrc: u32) -> Option<u32> {
        let s = &self.ctx.streams.streams[self.ctx.streams.find(ssrc)?];
        s.rtp.top().map(|t| (t >> 16) as u32)
    }
}

impl Srtp<Outbound> {
    /// Seals the RTP packet in `buf[..len]` in place; returns the SRTP
    /// length. `buf` needs [`Suite::rtp_overhead`] bytes of room after `len`.
    #[inline]
    pub fn seal_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let ctx = &mut self.ctx;
        let tag_len = ctx.suite.rtp_tag_len();
        let out_len = len + tag_len;
        if len > buf.len() || out_len > buf.len() {
            return Err(SrtpError::BufferTooSmall);
        }
        let hdr = SrtpHeader::parse(&buf[..len]).map_err(header_error)?;
        let stream = ctx.streams.get_or_insert(hdr.ssrc)?;
        let index = estimate_index(stream.rtp.top(), hdr.sequence);
        replay_to_error(stream.rtp.check(index), SrtpError::IndexReused)?;
        if index > MAX_RTP_INDEX {
            return Err(SrtpError::KeyExhausted);
        }
        let (packet, trailer) = buf[..out_len].split_at_mut(len);
        match &ctx.rtp {
            Transform::Gcm { aead, salt } => {
                let nonce = gcm_nonce(salt, hdr.ssrc, index);
                let tag = if ctx.encrypt_rtp {
                    let (header, payload) = packet.split_at_mut(hdr.len);
                    aead.seal(&nonce, header, payload)
                } else {
                    aead.seal(&nonce, packet, &mut [])
                };
                trailer.copy_from_slice(&tag);
            }
            Transform::Cm {
                ctr,
                salt,
                mac,
                tag_len,
            } => {
                if let (Some(ctr), true) = (ctr, ctx.encrypt_rtp) {
                    ctr.apply(&cm_iv(salt, hdr.ssrc, index), &mut packet[hdr.len..]);
                }
                let roc = ((index >> 16) as u32).to_be_bytes();
                let tag = mac.sign(&[packet, &roc]);
                trailer.copy_from_slice(&tag[..*tag_len]);
            }
        }
        stream.rtp.accept(index);
        Ok(out_len)
    }

    /// Seals the RTCP compound packet in `buf[..len]` in place; returns the
    /// SRTCP length. `buf` needs [`Suite::rtcp_overhead`] bytes of room.
    pub fn seal_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let ctx = &mut self.ctx;
        let tag_len = ctx.suite.rtcp_tag_len();
        let out_len = len + 4 + tag_len;
        if len > buf.len() || out_len > buf.len() {
            return Err(SrtpError::BufferTooSmall);
        }
        let ssrc = rtcp_ssrc(&buf[..len])?;
        let stream = ctx.streams.get_or_insert(ssrc)?;
        if stream.rtcp_sent >= MAX_RTCP_INDEX {
            return Err(SrtpError::KeyExhausted);
        }
        let index = stream.rtcp_sent + 1;
        let e_index = (index | (u32::from(ctx.encrypt_rtcp) << 31)).to_be_bytes();
        match &ctx.rtcp {
            Transform::Gcm { aead, salt } => {
                // header(8) || ciphertext || tag(16) || E|index(4). Without
                // encryption the AAD is the whole packet || E|index (RFC
                // 7714 section 9.2): the index word is first written next
                // to the packet so the AAD is one slice, then the tag
                // takes its place.
                let nonce = gcm_nonce(salt, ssrc, u64::from(index));
                let tag = if ctx.encrypt_rtcp {
                    let (header, body) = buf[..len].split_at_mut(8);
                    let mut aad = [0u8; 12];
                    aad[..8].copy_from_slice(header);
                    aad[8..].copy_from_slice(&e_index);
                    aead.seal(&nonce, &aad, body)
                } else {
                    buf[len..len + 4].copy_from_slice(&e_index);
                    aead.seal(&nonce, &buf[..len + 4], &mut [])
                };
                buf[len..len + GCM_TAG_LEN].copy_from_slice(&tag);
                buf[len + GCM_TAG_LEN..out_len].copy_from_slice(&e_index);
            }
            Transform::Cm {
                ctr,
                salt,
                mac,
                tag_len,
            } => {
                // header(8) || ciphertext || E|index(4) || tag
                if let (Some(ctr), true) = (ctr, ctx.encrypt_rtcp) {
                    ctr.apply(&cm_iv(salt, ssrc, u64::from(index)), &mut buf[8..len]);
                }
                buf[len..len + 4].copy_from_slice(&e_index);
                let tag = mac.sign(&[&buf[..len + 4]]);
                buf[len + 4..out_len].copy_from_slice(&tag[..*tag_len]);
            }
        }
        stream.rtcp_sent = index;
        Ok(out_len)
    }
}

fn header_error(e: RtpError) -> SrtpError {
    match e {
        RtpError::TooShort => SrtpError::TooShort,
        _ => SrtpError::BadHeader,
    }
}

/// The sender SSRC of an RTCP packet (bytes 4..8), after a version check.
#[inline]
fn rtcp_ssrc(buf: &[u8]) -> Result<u32, SrtpError> {
    let h: &[u8; 8] = buf
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or(SrtpError::TooShort)?;
    if h[0] >> 6 != 2 {
        return Err(SrtpError::BadHeader);
    }
    Ok(u32::from_be_bytes([h[4], h[5], h[6], h[7]]))
}

impl Srtp<Inbound> {
    /// Opens the SRTP packet `buf` in place; returns the RTP length (the
    /// packet is `buf[..n]` afterwards). On error `buf` is garbage.
    #[inline]
    pub fn open_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let ctx = &mut self.ctx;
        let tag_len = ctx.suite.rtp_tag_len();
        let hdr = SrtpHeader::parse(buf).map_err(header_error)?;
        let len = buf
            .len()
            .checked_sub(tag_len)
            .filter(|&l| l >= hdr.len)
            .ok_or(SrtpError::TooShort)?;
        let (rtp, encrypt) = (&ctx.rtp, ctx.encrypt_rtp);
        ctx.streams.with_stream(hdr.ssrc, |stream| {
            let index = estimate_index(stream.rtp.top(), hdr.sequence);
            replay_to_error(stream.rtp.check(index), SrtpError::Replayed)?;
            if index > MAX_RTP_INDEX {
                return Err(SrtpError::KeyExhausted);
            }
            let (packet, tag) = buf.split_at_mut(len);
            match rtp {
                Transform::Gcm { aead, salt } => {
                    let nonce = gcm_nonce(salt, hdr.ssrc, index);
                    let tag: &[u8; GCM_TAG_LEN] =
                        (&*tag).try_into().map_err(|_| SrtpError::TooShort)?;
                    let ok = if encrypt {
                        let (header, payload) = packet.split_at_mut(hdr.len);
                        aead.open(&nonce, header, payload, tag)
                    } else {
                        aead.open(&nonce, packet, &mut [], tag)
                    };
                    ok.map_err(|_| SrtpError::AuthFailed)?;
                }
                Transform::Cm { ctr, salt, mac, .. } => {
                    let roc = ((index >> 16) as u32).to_be_bytes();
                    let expect = mac.sign(&[packet, &roc]);
                    if !tags_equal(&expect[..tag_len], tag) {
                        return Err(SrtpError::AuthFailed);
                    }
                    if let (Some(ctr), true) = (ctr, encrypt) {
                        ctr.apply(&cm_iv(salt, hdr.ssrc, index), &mut packet[hdr.len..]);
                    }
                }
            }
            stream.rtp.accept(index);
            Ok(len)
        })
    }

    /// Opens the SRTCP packet `buf` in place; returns the RTCP length.
    pub fn open_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let ctx = &mut self.ctx;
        let tag_len = ctx.suite.rtcp_tag_len();
        let ssrc = rtcp_ssrc(buf)?;
        let len = buf
            .len()
            .checked_sub(tag_len + 4)
            .filter(|&l| l >= 8)
            .ok_or(SrtpError::TooShort)?;
        // GCM: packet || tag || E|index. CM: packet || E|index || tag.
        let idx_at = if ctx.suite.is_aead() {
            len + tag_len
        } else {
            len
        };
        let e_index = u32::from_be_bytes([
            buf[idx_at],
            buf[idx_at + 1],
            buf[idx_at + 2],
            buf[idx_at + 3],
        ]);
        let encrypted = e_index >> 31 == 1;
        let index = e_index & MAX_RTCP_INDEX;
        if ctx.encrypt_rtcp && !encrypted {
            return Err(SrtpError::Unencrypted);
        }
        let rtcp = &ctx.rtcp;
        ctx.streams.with_stream(ssrc, |stream| {
            replay_to_error(stream.rtcp.check(u64::from(index)), SrtpError::Replayed)?;
            match rtcp {
                Transform::Gcm { aead, salt } => {
                    let nonce = gcm_nonce(salt, ssrc, u64::from(index));
                    let mut tag = [0u8; GCM_TAG_LEN];
                    tag.copy_from_slice(&buf[len..len + GCM_TAG_LEN]);
                    let ok = if encrypted {
                        let mut aad = [0u8; 12];
                        aad[..8].copy_from_slice(&buf[..8]);
                        aad[8..].copy_from_slice(&e_index.to_be_bytes());
                        aead.open(&nonce, &aad, &mut buf[8..len], &tag)
                    } else {
                        // AAD = packet || E|index: move the index word next
                        // to the packet (over the tag, already copied out).
                        buf.copy_within(idx_at..idx_at + 4, len);
                        aead.open(&nonce, &buf[..len + 4], &mut [], &tag)
                    };
                    ok.map_err(|_| SrtpError::AuthFailed)?;
                }
                Transform::Cm {
                    ctr,
                    salt,
                    mac,
                    tag_len,
                } => {
                    let expect = mac.sign(&[&buf[..len + 4]]);
                    if !tags_equal(&expect[..*tag_len], &buf[len + 4..]) {
                        return Err(SrtpError::AuthFailed);
                    }
                    if let (Some(ctr), true) = (ctr, encrypted) {
                        ctr.apply(&cm_iv(salt, ssrc, u64::from(index)), &mut buf[8..len]);
                    }
                }
            }
            stream.rtcp.accept(u64::from(index));
            Ok(len)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcm_nonce_matches_rfc7714_section_16_1() {
        let salt: [u8; 12] = hex::decode("517569642070726f2071756f")
            .expect("hex")
            .try_into()
            .expect("12");
        let n = gcm_nonce(&salt, 0x5501_a0b2, 61819);
        assert_eq!(hex::encode(n), "51753c6580c2726f20718414");
    }
}
