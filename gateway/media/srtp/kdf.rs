//! The SRTP key derivation function (RFC 3711 section 4.3) with a key
//! derivation rate of 0, the only rate SDES and DTLS-SRTP use.
//!
//! The PRF is AES in counter mode keyed with the master key (AES-128, -192
//! or -256 by the master key's length, RFC 6188). The input block is the
//! master salt XOR `label << 48`, shifted left 16 bits. RFC 7714's 96-bit
//! salt enters left-aligned, padded on the right with two zero bytes
//! (libsrtp's behaviour, RFC 7714 errata 4938), so it is treated as a
//! 112-bit salt whose last two bytes are zero.

use super::cm::AesCtr;

/// Which session key a derivation produces (RFC 3711 section 4.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Label {
    RtpEncryption = 0x00,
    RtpAuthentication = 0x01,
    RtpSalt = 0x02,
    RtcpEncryption = 0x03,
    RtcpAuthentication = 0x04,
    RtcpSalt = 0x05,
}

/// Errors from the key derivation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KdfError {
    #[error("master key must be 16, 24 or 32 bytes")]
    MasterKeyLength,
    #[error("master salt must be at most 14 bytes")]
    MasterSaltLength,
}

/// Fills `out` with the session key for `label`.
pub fn derive(
    master_key: &[u8],
    master_salt: &[u8],
    label: Label,
    out: &mut [u8],
) -> Result<(), KdfError> {
    let prf = AesCtr::new(master_key).ok_or(KdfError::MasterKeyLength)?;
    derive_with(&prf, master_salt, label, out)
}

/// As [`derive`], with the PRF key already expanded (one expansion serves
/// all six labels).
pub(super) fn derive_with(
    prf: &AesCtr,
    master_salt: &[u8],
    label: Label,
    out: &mut [u8],
) -> Result<(), KdfError> {
    if master_salt.len() > 14 {
        return Err(KdfError::MasterSaltLength);
    }
    let mut iv = [0u8; 16];
    iv[..master_salt.len()].copy_from_slice(master_salt);
    iv[7] ^= label as u8;
    out.fill(0);
    prf.apply(&iv, out);
    Ok(())
}
