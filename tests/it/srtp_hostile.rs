//! Hostile input to SRTP/SRTCP: tampering, replay, truncation, junk and
//! floods of forged SSRCs all give typed errors, never a panic, and never
//! disturb the state that later genuine packets need.

use tollgate::media::srtp::{MasterKey, SrtpConfig, SrtpError, SrtpReceiver, SrtpSender, Suite};

const SUITES: [Suite; 7] = Suite::ALL;

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160).map(|i| i as u8));
    p
}

fn seal(tx: &mut SrtpSender, plain: &[u8]) -> Vec<u8> {
    let mut p = plain.to_vec();
    p.resize(plain.len() + 16, 0);
    let n = tx.seal_rtp(&mut p, plain.len()).expect("seal");
    p.truncate(n);
    p
}

fn pair(suite: Suite, config: SrtpConfig) -> (SrtpSender, SrtpReceiver) {
    let key = MasterKey::random(suite).expect("key");
    (
        SrtpSender::new(&key, config).expect("sender"),
        SrtpReceiver::new(&key, config).expect("receiver"),
    )
}

#[test]
fn every_flipped_bit_fails_and_leaves_the_receiver_usable() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite, SrtpConfig::default());
        let sealed = seal(&mut tx, &rtp(1000, 42));
        let mut auth_failed = 0;
        for bit in 0..sealed.len() * 8 {
            let mut p = sealed.clone();
            p[bit / 8] ^= 1 << (bit % 8);
            let err = rx
                .open_rtp(&mut p)
                .expect_err("a flipped bit must not open");
            // Header bits may make the header itself invalid; everything
            // else must fail authentication.
            if bit >= 12 * 8 {
                assert_eq!(err, SrtpError::AuthFailed, "{suite:?} bit {bit}");
            }
            auth_failed += usize::from(err == SrtpError::AuthFailed);
        }
        assert!(auth_failed >= sealed.len() * 8 - 16, "{suite:?}");
        // None of that touched the stream: the genuine packet still opens.
        let mut p = sealed.clone();
        assert_eq!(rx.open_rtp(&mut p), Ok(172), "{suite:?}");
    }
}

#[test]
fn every_flipped_bit_of_srtcp_fails() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite, SrtpConfig::default());
        let plain = [0x80, 201, 0, 1, 0, 0, 0, 9];
        let mut sealed = plain.to_vec();
        sealed.resize(8 + suite.rtcp_overhead(), 0);
        tx.seal_rtcp(&mut sealed, 8).expect("seal");
        for bit in 0..sealed.len() * 8 {
            let mut p = sealed.clone();
            p[bit / 8] ^= 1 << (bit % 8);
            assert!(rx.open_rtcp(&mut p).is_err(), "{suite:?} bit {bit}");
        }
        let mut p = sealed.clone();
        assert_eq!(rx.open_rtcp(&mut p), Ok(8), "{suite:?}");
    }
}

#[test]
fn replays_and_packets_older_than_the_window_are_refused() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite, SrtpConfig::default());
        let old = seal(&mut tx, &rtp(10, 7));
        let mid = seal(&mut tx, &rtp(100, 7));
        let new = seal(&mut tx, &rtp(200, 7));
        assert!(rx.open_rtp(&mut mid.clone()).is_ok());
        assert!(rx.open_rtp(&mut new.clone()).is_ok());
        assert_eq!(rx.open_rtp(&mut new.clone()), Err(SrtpError::Replayed));
        assert_eq!(rx.open_rtp(&mut mid.clone()), Err(SrtpError::Replayed));
        // 190 behind the highest, window 128.
        assert_eq!(rx.open_rtp(&mut old.clone()), Err(SrtpError::TooOld));
    }
}

#[test]
fn replay_is_checked_before_the_crypto() {
    // A replayed packet with a broken tag is refused as a replay: the
    // window is consulted before the AEAD or HMAC runs.
    let (mut tx, mut rx) = pair(Suite::AeadAes128Gcm, SrtpConfig::default());
    let p = seal(&mut tx, &rtp(5, 1));
    assert!(rx.open_rtp(&mut p.clone()).is_ok());
    let mut bad = p.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert_eq!(rx.open_rtp(&mut bad), Err(SrtpError::Replayed));
}

#[test]
fn window_size_is_configurable_up_to_1024() {
    let wide = SrtpConfig {
        replay_window: 1024,
        ..SrtpConfig::default()
    };
    let (mut tx, mut rx) = pair(Suite::AeadAes128Gcm, wide);
    let old = seal(&mut tx, &rtp(1, 1));
    let newer = seal(&mut tx, &rtp(1001, 1));
    assert!(rx.open_rtp(&mut newer.clone()).is_ok());
    assert!(
        rx.open_rtp(&mut old.clone()).is_ok(),
        "1000 behind fits 1024"
    );

    let key = MasterKey::random(Suite::AeadAes128Gcm).expect("key");
    for bad in [0, 63, 1025, u16::MAX] {
        let cfg = SrtpConfig {
            replay_window: bad,
            ..SrtpConfig::default()
        };
        assert_eq!(
            SrtpReceiver::new(&key, cfg).err(),
            Some(SrtpError::BadConfig)
        );
    }
}

#[test]
fn truncated_empty_and_oversized_inputs_give_typed_errors() {
    for suite in SUITES {
        let (mut tx, mut rx) = pair(suite, SrtpConfig::default());
        let sealed = seal(&mut tx, &rtp(3, 3));
        assert_eq!(rx.open_rtp(&mut []), Err(SrtpError::TooShort));
        assert_eq!(rx.open_rtcp(&mut []), Err(SrtpError::TooShort));
        for cut in 0..sealed.len() {
            let mut p = sealed[..cut].to_vec();
            let err = rx.open_rtp(&mut p).expect_err("truncated");
            assert!(
                matches!(err, SrtpError::TooShort | SrtpError::AuthFailed),
                "{suite:?} cut {cut}: {err:?}"
            );
        }
        let mut huge = vec![0x80u8; 65_536];
        assert_eq!(rx.open_rtp(&mut huge), Err(SrtpError::AuthFailed));
        let mut huge = vec![0x80u8; 65_536];
        assert!(rx.open_rtcp(&mut huge).is_err());
        // Sealing into a buffer without room for the tag.
        let mut tight = rtp(4, 3);
        let len = tight.len();
        assert_eq!(tx.seal_rtp(&mut tight, len), Err(SrtpError::BufferTooSmall));
        assert_eq!(
            tx.seal_rtp(&mut tight, len + 1),
            Err(SrtpError::BufferTooSmall)
        );
        // The failed seal consumed nothing: the same packet still seals.
        tight.resize(len + suite.rtp_overhead(), 0);
        assert_eq!(tx.seal_rtp(&mut tight, len), Ok(len + suite.rtp_overhead()));
        // Not RTP at all.
        let mut v1 = sealed.clone();
        v1[0] = 0x40;
        assert_eq!(rx.open_rtp(&mut v1), Err(SrtpError::BadHeader));
    }
}

#[test]
fn forged_ssrcs_cannot_fill_the_stream_table() {
    let cfg = SrtpConfig {
        max_streams: 2,
        ..SrtpConfig::default()
    };
    let (mut tx, mut rx) = pair(Suite::AesCm128HmacSha1_80, cfg);
    for ssrc in 0..1000u32 {
        let mut junk = rtp(1, ssrc);
        junk.extend_from_slice(&[0; 10]);
        assert_eq!(rx.open_rtp(&mut junk), Err(SrtpError::AuthFailed));
    }
    let a = seal(&mut tx, &rtp(1, 5001));
    let b = seal(&mut tx, &rtp(1, 5002));
    assert!(rx.open_rtp(&mut a.clone()).is_ok());
    assert!(rx.open_rtp(&mut b.clone()).is_ok());
    // The sender's table is full too: a third SSRC is refused.
    let third = rtp(1, 5003);
    let mut buf = third.clone();
    buf.resize(third.len() + 10, 0);
    assert_eq!(
        tx.seal_rtp(&mut buf, third.len()),
        Err(SrtpError::TooManyStreams)
    );
    // A third genuine SSRC is refused by the full receiver table, until a
    // stream ends.
    assert!(tx.remove_stream(5001));
    let c = seal(&mut tx, &third);
    assert_eq!(rx.open_rtp(&mut c.clone()), Err(SrtpError::TooManyStreams));
    assert!(rx.remove_stream(5001));
    assert!(!rx.remove_stream(5001));
    assert!(rx.open_rtp(&mut c.clone()).is_ok());
}

#[test]
fn a_sender_never_seals_the_same_index_twice() {
    for suite in SUITES {
        let (mut tx, _) = pair(suite, SrtpConfig::default());
        let plain = rtp(9, 9);
        let _ = seal(&mut tx, &plain);
        let mut again = plain.clone();
        again.resize(plain.len() + 16, 0);
        assert_eq!(
            tx.seal_rtp(&mut again, plain.len()),
            Err(SrtpError::IndexReused),
            "{suite:?}"
        );
    }
}

#[test]
fn unencrypted_srtcp_is_refused_when_encryption_is_required() {
    let key = MasterKey::random(Suite::AeadAes128Gcm).expect("key");
    let clear = SrtpConfig {
        encrypt_rtcp: false,
        ..SrtpConfig::default()
    };
    let mut tx = SrtpSender::new(&key, clear).expect("sender");
    let mut strict = SrtpReceiver::new(&key, SrtpConfig::default()).expect("receiver");
    let mut lenient = SrtpReceiver::new(&key, clear).expect("receiver");
    let mut p = vec![0x80, 201, 0, 1, 0, 0, 0, 9];
    p.resize(8 + 20, 0);
    let n = tx.seal_rtcp(&mut p, 8).expect("seal");
    assert_eq!(
        strict.open_rtcp(&mut p[..n].to_vec()),
        Err(SrtpError::Unencrypted)
    );
    assert_eq!(lenient.open_rtcp(&mut p[..n]), Ok(8));
}

#[test]
fn key_and_salt_lengths_are_checked() {
    assert_eq!(
        MasterKey::new(Suite::AeadAes128Gcm, &[0; 16], &[0; 14]).err(),
        Some(SrtpError::KeyLength)
    );
    assert!(MasterKey::new(Suite::AeadAes128Gcm, &[0; 16], &[0; 12]).is_ok());
    assert!(MasterKey::new(Suite::AesCm128HmacSha1_80, &[0; 16], &[0; 14]).is_ok());
    assert_eq!(
        MasterKey::from_concatenated(Suite::AeadAes256Gcm, &[0; 43]).err(),
        Some(SrtpError::KeyLength)
    );
}

// Keys and contexts must not be printable or copyable. Autoref
// specialisation tells, in a concrete context, whether a type implements a
// trait.
struct Probe<T>(std::marker::PhantomData<T>);
trait HasDebug {
    fn debug(&self) -> bool {
        true
    }
}
impl<T: std::fmt::Debug> HasDebug for Probe<T> {}
trait NoDebug {
    fn debug(&self) -> bool {
        false
    }
}
impl<T> NoDebug for &Probe<T> {}
trait HasClone {
    fn clone_(&self) -> bool {
        true
    }
}
impl<T: Clone> HasClone for Probe<T> {}
trait NoClone {
    fn clone_(&self) -> bool {
        false
    }
}
impl<T> NoClone for &Probe<T> {}

macro_rules! traits_of {
    ($t:ty) => {
        (
            (&Probe::<$t>(std::marker::PhantomData)).debug(),
            (&Probe::<$t>(std::marker::PhantomData)).clone_(),
        )
    };
}

#[test]
fn keys_have_neither_debug_nor_clone() {
    use tollgate::media::srtp::SessionKeys;
    // The probe itself works: a String is both.
    assert_eq!(traits_of!(String), (true, true));
    assert_eq!(traits_of!(MasterKey), (false, false));
    assert_eq!(traits_of!(SessionKeys), (false, false));
    assert_eq!(traits_of!(SrtpSender), (false, false));
    assert_eq!(traits_of!(SrtpReceiver), (false, false));
}
