//! AES in counter mode (RFC 3711 section 4.1.1) and HMAC-SHA1 (section
//! 4.2.1), the primitives of the AES_CM suites and of the key derivation.
//!
//! AES-CTR comes from RustCrypto's `aes` (AES-NI chosen at run time, key
//! schedule zeroized on drop) and `ctr`; `ring` exposes no raw counter mode.
//! HMAC-SHA1 comes from RustCrypto's `hmac` and `sha1`, which use the CPU's
//! SHA extensions when present (chosen at run time). `ring`'s SHA-1 is
//! portable code: with it a whole AES_CM_128_HMAC_SHA1_80 seal of a
//! 172-byte packet took about 550 ns, with `sha1` about 190 ns
//! (`cargo bench --bench srtp -- --summary`; libsrtp2 about 280 ns).
//!
//! The keyed HMAC state lives in a [`Wiped`] and is zeroed on drop. Each
//! packet works on a stack copy of it, which (like libsrtp's) is not wiped:
//! it is overwritten by the next packet's, and wiping it would cost more
//! than the rest of the MAC.

use aes::{Aes128, Aes192, Aes256};
use ctr::cipher::{InnerIvInit, KeyInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::crypto::aead::Wiped;

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

/// An HMAC-SHA1 key (the SRTP authentication key), with the inner and
/// outer pads already hashed. Wiped on drop.
pub struct HmacSha1(Wiped<Hmac<Sha1>>);

impl HmacSha1 {
    /// From the 160-bit SRTP authentication key. HMAC pads a key shorter
    /// than SHA-1's 64-byte block with zeros (RFC 2104), so the padded
    /// block gives the same MAC with no fallible length check.
    pub fn new(key: &[u8; HMAC_SHA1_LEN]) -> Self {
        let mut block = zeroize::Zeroizing::new([0u8; 64]);
        block[..HMAC_SHA1_LEN].copy_from_slice(key);
        let mac = <Hmac<Sha1> as KeyInit>::new((&*block).into());
        Self(Wiped::new(mac))
    }

    /// HMAC-SHA1 over `parts` concatenated.
    #[inline]
    pub fn sign(&self, parts: &[&[u8]]) -> [u8; HMAC_SHA1_LEN] {
        let mut ctx = self.0.get().clone();
        for p in parts {
            ctx.update(p);
        }
        ctx.finalize().into_bytes().into()
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
        let mut key = [0u8; 20];
        key[..4].copy_from_slice(b"Jefe");
        let mac = HmacSha1::new(&key);
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
