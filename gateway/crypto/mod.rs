//! Cryptographic primitives below every other layer: the AEAD with its
//! key wiping ([`aead`]), used by SRTP (`media::srtp`) and by sealing at
//! rest (`keys`), and the system's random generator. Nothing here knows
//! about packets, files or keys' storage.

pub mod aead;

use ring::rand::{SecureRandom, SystemRandom};

/// The system's random generator failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the system random generator failed")]
pub struct RandomFailed;

/// Fills `buf` from the system's random generator.
pub fn random(buf: &mut [u8]) -> Result<(), RandomFailed> {
    SystemRandom::new().fill(buf).map_err(|_| RandomFailed)
}

/// A random 32-bit value for what must be unguessable but has no error
/// path of its own (SIP tags and branches, SSRCs, sequence numbers, RTP
/// ports). If the system's generator fails, the process stops (systemd
/// restarts it): a zero or a clock reading would be guessable, and
/// getrandom failing on a running Linux system means something is badly
/// wrong.
pub fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    random_or_stop(&mut b);
    u32::from_be_bytes(b)
}

/// Fills `buf` from the system's random generator, or stops the process
/// (see [`random_u32`]).
pub fn random_or_stop(buf: &mut [u8]) {
    if random(buf).is_err() {
        tracing::error!(
            "the system random generator failed: stopping rather than use guessable tags, ports and SSRCs"
        );
        std::process::abort();
    }
}
