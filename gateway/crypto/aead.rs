//! The AEAD behind the GCM suites, kept behind one small trait so the
//! backend can change without touching the SRTP transform.
//!
//! # Why `ring`
//!
//! Measured on the build machine for the bare AEAD on a 172-byte RTP packet
//! (see the issue and `benches/srtp.rs`): `aes-gcm` 0.10 about 180 ns in a
//! portable build, `ring` 0.17 about 76-80 ns. `ring` selects its AES-NI /
//! PCLMULQDQ / AVX assembly at run time, so a shipped binary built for plain
//! x86-64 still gets it, and rustls (later, for SIP over TLS and QUIC)
//! brings `ring` anyway.
//!
//! # Why this module has `unsafe`
//!
//! `ring` does not wipe its key schedule when a key is dropped. Our keys must
//! zeroize on drop, so [`Wiped`] keeps the `ring` key in a `MaybeUninit` and
//! overwrites its bytes with volatile zero writes in `Drop`. That is sound
//! only for types without drop glue (nothing owned on the heap, nothing that
//! a `Drop` impl would need to see); a compile-time assertion enforces it for
//! every type wrapped, so a `ring` upgrade that changed this would not build.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use ring::aead::{self, Aad, LessSafeKey, Nonce, Tag, UnboundKey};

/// GCM tag length in bytes (RFC 7714 uses the full 16-byte tag).
pub const TAG_LEN: usize = 16;
/// GCM nonce length in bytes.
pub const NONCE_LEN: usize = 12;

/// Authentication of a sealed message failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthFailed;

/// An authenticated cipher sealing and opening in place with a detached tag.
pub trait Aead {
    /// Encrypts `in_out` in place and returns the tag over `aad` and it.
    fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], in_out: &mut [u8]) -> [u8; TAG_LEN];
    /// Checks `tag` over `aad` and `in_out`, then decrypts `in_out` in place.
    /// On failure `in_out` is left unusable (it may be partly decrypted).
    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthFailed>;
}

/// AES-GCM with a 128- or 256-bit key, by `ring`. No `Debug`, no `Clone`;
/// the key schedule is zeroed on drop.
pub struct AesGcm(Wiped<LessSafeKey>);

impl AesGcm {
    /// A key of 16 (AES-128) or 32 (AES-256) bytes; `None` for other lengths.
    pub fn new(key: &[u8]) -> Option<Self> {
        let alg = match key.len() {
            16 => &aead::AES_128_GCM,
            32 => &aead::AES_256_GCM,
            _ => return None,
        };
        let key = UnboundKey::new(alg, key).ok()?;
        Some(Self(Wiped::new(LessSafeKey::new(key))))
    }
}

impl Aead for AesGcm {
    #[inline]
    fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], in_out: &mut [u8]) -> [u8; TAG_LEN] {
        let nonce = Nonce::assume_unique_for_key(*nonce);
        // `ring` fails only when the input exceeds GCM's 64 GiB limit, which a
        // packet slice cannot reach; a zero tag would then fail to open.
        match self
            .0
            .get()
            .seal_in_place_separate_tag(nonce, Aad::from(aad), in_out)
        {
            Ok(tag) => {
                let mut out = [0; TAG_LEN];
                out.copy_from_slice(tag.as_ref());
                out
            }
            Err(_) => [0; TAG_LEN],
        }
    }

    #[inline]
    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthFailed> {
        let nonce = Nonce::assume_unique_for_key(*nonce);
        let tag = Tag::from(*tag);
        self.0
            .get()
            .open_in_place_separate_tag(nonce, Aad::from(aad), tag, in_out, 0..)
            .map(|_| ())
            .map_err(|_| AuthFailed)
    }
}

/// Holds a value whose bytes are overwritten with zeros when it is dropped.
///
/// Only for types without drop glue (checked at compile time in `new`).
pub struct Wiped<T> {
    /// Initialised from `new` until `drop`; never moved out.
    inner: MaybeUninit<T>,
}

impl<T> Wiped<T> {
    pub fn new(value: T) -> Self {
        const {
            assert!(
                !std::mem::needs_drop::<T>(),
                "Wiped<T> needs a T without drop glue"
            )
        };
        Self {
            inner: MaybeUninit::new(value),
        }
    }

    #[inline]
    pub fn get(&self) -> &T {
        // SAFETY: `inner` is initialised in `new` and stays so until `drop`,
        // which is the only place that overwrites it.
        unsafe { self.inner.assume_init_ref() }
    }
}

impl<T> Drop for Wiped<T> {
    fn drop(&mut self) {
        let ptr = self.inner.as_mut_ptr().cast::<u8>();
        for i in 0..std::mem::size_of::<T>() {
            // SAFETY: `ptr..ptr+size_of::<T>()` is the storage of `inner`,
            // which we own exclusively here. `T` has no drop glue (asserted in
            // `new`), so skipping its destructor leaks nothing, and the zeroed
            // bytes are never read as a `T` again: `MaybeUninit` makes no
            // validity claim about them.
            unsafe { std::ptr::write_volatile(ptr.add(i), 0) };
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips_and_detects_tampering() {
        let key = AesGcm::new(&[7; 16]).expect("16-byte key");
        let nonce = [1; NONCE_LEN];
        let mut data = *b"hello, carrier";
        let tag = key.seal(&nonce, b"hdr", &mut data);
        assert_ne!(&data, b"hello, carrier");
        let mut copy = data;
        key.open(&nonce, b"hdr", &mut copy, &tag).expect("opens");
        assert_eq!(&copy, b"hello, carrier");
        let mut copy = data;
        assert_eq!(key.open(&nonce, b"hdX", &mut copy, &tag), Err(AuthFailed));
        assert!(AesGcm::new(&[0; 24]).is_none());
    }

    #[test]
    fn wiped_zeroes_its_storage_on_drop() {
        let mut slot = std::mem::ManuallyDrop::new(Wiped::new([0xa5u8; 64]));
        assert_eq!(slot.get(), &[0xa5; 64]);
        // SAFETY (test): drop in place, then read the storage that `slot`
        // still occupies; `[u8; 64]` is valid for any bytes.
        unsafe { std::mem::ManuallyDrop::drop(&mut slot) };
        let bytes = unsafe { slot.inner.assume_init_ref() };
        assert_eq!(bytes, &[0; 64]);
    }
}
