//! Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP): SHA-1,
//! six digits, 30-second steps, the form every authenticator app reads from
//! an `otpauth://` URI.
//!
//! Written here rather than taken from `totp-rs` because the gateway needs
//! the step a code matched, to refuse a code used once already (RFC 6238
//! section 5.2), which that crate's `check` does not return; the algorithm
//! itself is the dozen lines of [`code`] over the `hmac` and `sha1` crates
//! the SRTP suites already use.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use zeroize::Zeroizing;

/// Seconds per step.
pub const STEP: u64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Steps either side of now that are accepted (clock skew).
pub const SKEW: u64 = 1;
/// Secret length in bytes (RFC 4226 recommends 160 bits).
pub const SECRET_LEN: usize = 20;

/// A TOTP secret. No `Debug`, no `Clone`; wiped on drop.
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: &[u8]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }

    /// A fresh random secret.
    pub fn random() -> Result<Self, crate::keys::KeyError> {
        let mut b = Zeroizing::new(vec![0u8; SECRET_LEN]);
        crate::crypto::random(&mut b)?;
        Ok(Self(b))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The secret in base32 without padding, as authenticator apps take it.
    pub fn base32(&self) -> Zeroizing<String> {
        Zeroizing::new(data_encoding::BASE32_NOPAD.encode(&self.0))
    }

    /// Reads a base32 secret, or the `secret=` parameter of an
    /// `otpauth://` URI. Spaces and case are ignored.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let b32 = match text.strip_prefix("otpauth://") {
            Some(uri) => uri
                .split(['?', '&'])
                .find_map(|p| p.strip_prefix("secret="))?,
            None => text,
        };
        let clean: Zeroizing<String> = Zeroizing::new(
            b32.chars()
                .filter(|c| !c.is_whitespace() && *c != '=')
                .map(|c| c.to_ascii_uppercase())
                .collect(),
        );
        let bytes = data_encoding::BASE32_NOPAD.decode(clean.as_bytes()).ok()?;
        (!bytes.is_empty()).then(|| Self(Zeroizing::new(bytes)))
    }

    /// The provisioning URI for an authenticator app.
    pub fn uri(&self, issuer: &str, account: &str) -> Zeroizing<String> {
        let enc = |s: &str| -> String {
            s.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect()
        };
        Zeroizing::new(format!(
            "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP}",
            enc(issuer),
            enc(account),
            self.base32().as_str(),
            enc(issuer)
        ))
    }
}

/// The HOTP value for `counter` with `digits` digits (RFC 4226 5.3).
pub fn code(secret: &[u8], counter: u64, digits: u32) -> u32 {
    // HMAC takes keys of any length.
    #[allow(clippy::expect_used)]
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("any key length");
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let off = usize::from(h[19] & 0x0f);
    let bin = u32::from_be_bytes([h[off] & 0x7f, h[off + 1], h[off + 2], h[off + 3]]);
    bin % 10u32.pow(digits)
}

/// The code shown at `unix_seconds`, as six digits.
pub fn code_at(secret: &Secret, unix_seconds: u64) -> String {
    format!(
        "{:0width$}",
        code(secret.bytes(), unix_seconds / STEP, DIGITS),
        width = DIGITS as usize
    )
}

/// Checks `given` at `unix_seconds`. Returns the step it matched, or `None`.
/// Steps at or before `last_used` are refused: a code works once. The
/// comparison does not stop at the first differing digit.
pub fn verify(
    secret: &Secret,
    given: &str,
    unix_seconds: u64,
    last_used: Option<u64>,
) -> Option<u64> {
    let given = given.trim();
    if given.len() != DIGITS as usize || !given.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = unix_seconds / STEP;
    let mut matched = None;
    for step in now.saturating_sub(SKEW)..=now + SKEW {
        let want = format!("{:06}", code(secret.bytes(), step, DIGITS));
        let diff = want
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 && last_used.is_none_or(|l| step > l) {
            matched = Some(step);
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 column (8 digits).
    #[test]
    fn rfc6238_vectors() {
        let s = b"12345678901234567890";
        for (t, want) in [
            (59u64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(code(s, t / STEP, 8), want, "T={t}");
            assert_eq!(code(s, t / STEP, 6), want % 1_000_000, "T={t}");
        }
    }

    #[test]
    fn verify_accepts_skew_and_refuses_reuse_and_junk() {
        let s = Secret::new(b"12345678901234567890");
        let t = 1234567890;
        assert_eq!(code_at(&s, t), "005924");
        let step = t / STEP;
        assert_eq!(verify(&s, "005924", t, None), Some(step));
        // One step of skew either way, not two.
        assert_eq!(verify(&s, "005924", t + STEP, None), Some(step));
        assert_eq!(verify(&s, "005924", t - STEP, None), Some(step));
        assert_eq!(verify(&s, "005924", t + 2 * STEP, None), None);
        // Used once: refused after.
        assert_eq!(verify(&s, "005924", t, Some(step)), None);
        for bad in ["", "5924", "0059245", "00592a", "005925", "-05924"] {
            assert_eq!(verify(&s, bad, t, None), None, "{bad:?}");
        }
    }

    #[test]
    fn secret_base32_and_uri_round_trip() {
        let s = Secret::new(b"12345678901234567890");
        assert_eq!(s.base32().as_str(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        let uri = s.uri("Tollgate", "alice@gw");
        assert!(uri.starts_with("otpauth://totp/Tollgate:alice%40gw?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Tollgate"));
        let back = Secret::parse(&uri).expect("uri");
        assert_eq!(back.bytes(), s.bytes());
        let back = Secret::parse(" gezd gnbv gy3t qojq gezd gnbv gy3t qojq\n").expect("b32");
        assert_eq!(back.bytes(), s.bytes());
        assert!(Secret::parse("not base32!").is_none());
        assert!(Secret::parse("otpauth://totp/x?issuer=y").is_none());
    }
}
