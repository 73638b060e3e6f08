//! AES in counter mode (RFC 3711 section 4.1.1) and HMAC-SHA1 (section
//! 4.2.1), the primitives of the AES_CM suites and of the key derivation.
//!
//! AES-CTR comes from RustCrypto's `aes` (AES-NI chosen at run time, key
//! schedule zeroized on drop) and `ctr`; `ring` exposes no raw counter mode.
//! HMAC-SHA1 comes from `ring`, whose SHA-1 has run-time selected assembly.

use aes::{Aes128, Aes192, Aes256};
use ctr::cipher::{InnerIvInit, KeyInit, StreamCipher};
use ring::hmac;

use super::aead::Wiped;

/// The full HMAC-SHA1 output length.
pub const HMAC_SHA1_LEN: usize = 20;

/// An expanded AES key for counter mode. No `Debug`, no `Clone`; the `aes`
/// crate (feature `zeroize`) wipes the key schedule on drop.
pub enum AesCtr {
    A128(Aes128),
    A192(Aes192),
    A256(Aes256),
}

impl AesCtr {
    /// A key of 16, 24 or 32 bytes; `None` for other lengths.
    pub fn new(key: &[u8]) -> Option<Self> {
        Some(match key.len() {
            16 => Self::A128(Aes128::new_from_slice(key).ok()?),
            24 => Self::A192(Aes192::new_from_slice(key).ok()?),
            32 => Self::A256(Aes256::new_from_slice(key).ok()?),
            _ => return None,
        })
    }

    /// XORs `data` with the keystream that starts at counter block `iv`
    /// (128-bit big-endian counter, as RFC 3711 section 4.1.1 specifies).
    #[inline]
    pub fn apply(&self, iv: &[u8; 16], data: &mut [u8]) {
        // Cloning the expanded key is a copy of a few hundred bytes on the
        // stack; the copy is wiped when the counter-mode wrapper drops.
        match self {
            Self::A128(k) => keystream(k, iv, data),
            Self::A192(k) => keystream(k, iv, data),
            Self::A256(k) => keystream(k, iv, data),
        }
    }
}

#[inline]
fn keystream<C>(cipher: &C, iv: &[u8; 16], data: &mut [u8])
where
    C: Clone
        + ctr::cipher::BlockEncrypt
        + ctr::cipher::BlockCipher
        + ctr::cipher::BlockSizeUser<BlockSize = ctr::cipher::consts::U16>,
{
    let core = ctr::CtrCore::<C, ctr::flavors::Ctr128BE>::inner_iv_init(cipher.clone(), iv.into());
    ctr::cipher::StreamCipherCoreWrapper::from_core(core).apply_keystream(data);
}

/// An HMAC-SHA1 key (the SRTP authentication key). Wiped on drop.
pub struct HmacSha1(Wiped<hmac::Key>);

impl HmacSha1 {
    pub fn new(key: &[u8]) -> Self {
        Self(Wiped::new(hmac::Key::new(
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            key,
        )))
    }

    /// HMAC-SHA1 over `parts` concatenated.
    #[inline]
    pub fn sign(&self, parts: &[&[u8]]) -> [u8; HMAC_SHA1_LEN] {
        let mut ctx = hmac::Context::with_key(self.0.get());
        for p in parts {
            ctx.update(p);
        }
        let mut out = [0; HMAC_SHA1_LEN];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }
}

/// Compares two tags in time independent of where they differ.
#[inline]
pub fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha1_matches_rfc2202_case_2() {
        let mac = HmacSha1::new(b"Jefe");
        let tag = mac.sign(&[b"what do ya want ", b"for nothing?"]);
        assert_eq!(hex::encode(tag), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    }

    #[test]
    fn tag_comparison() {
        assert!(tags_equal(b"abc", b"abc"));
        assert!(!tags_equal(b"abc", b"abd"));
        assert!(!tags_equal(b"abc", b"ab"));
    }
}
