//! libsrtp2 (through the `srtp` crate, a dev-dependency) configured like
//! Tollgate's suites; shared by the interop tests and the benchmarks.

use srtp::{CryptoPolicy, Session, StreamPolicy};
use tollgate::media::srtp::{MasterKey, Suite};

/// The suites libsrtp2 is compared with.
pub const SUITES: [Suite; 4] = [
    Suite::AeadAes128Gcm,
    Suite::AeadAes256Gcm,
    Suite::AesCm128HmacSha1_80,
    Suite::AesCm128HmacSha1_32,
];

/// libsrtp's policies for a suite: (RTP, RTCP). The `_32` suite keeps an
/// 80-bit tag on SRTCP, as RFC 4568 says and libsrtp's docs advise.
pub fn policies(suite: Suite) -> (CryptoPolicy, CryptoPolicy) {
    match suite {
        Suite::AeadAes128Gcm => (
            CryptoPolicy::aes_gcm_128_16_auth(),
            CryptoPolicy::aes_gcm_128_16_auth(),
        ),
        Suite::AeadAes256Gcm => (
            CryptoPolicy::aes_gcm_256_16_auth(),
            CryptoPolicy::aes_gcm_256_16_auth(),
        ),
        Suite::AesCm128HmacSha1_80 => (
            CryptoPolicy::aes_cm_128_hmac_sha1_80(),
            CryptoPolicy::aes_cm_128_hmac_sha1_80(),
        ),
        Suite::AesCm128HmacSha1_32 => (
            CryptoPolicy::aes_cm_128_hmac_sha1_32(),
            CryptoPolicy::aes_cm_128_hmac_sha1_80(),
        ),
        other => panic!("no libsrtp policy wired for {other:?}"),
    }
}

/// A libsrtp2 session keyed with `key` (an outbound or inbound template).
pub fn session(key: &MasterKey, outbound: bool) -> Session {
    let (rtp, rtcp) = policies(key.suite());
    let key_salt = key.to_concatenated();
    let policy = StreamPolicy {
        rtp,
        rtcp,
        key: &key_salt,
        window_size: 128,
        ..Default::default()
    };
    if outbound {
        Session::with_outbound_template(policy).expect("libsrtp outbound session")
    } else {
        Session::with_inbound_template(policy).expect("libsrtp inbound session")
    }
}
