//! Receive statistics (RFC 3550 A.1, A.3, A.8) fed any sequence of
//! sequence numbers, timestamps and arrival gaps a peer can choose: no
//! arithmetic overflows (the run script builds with debug assertions),
//! and the counts stay consistent.
#![no_main]
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tollgate::media::stats::StreamStats;

fuzz_target!(|data: &[u8]| {
    let Some((&rate, data)) = data.split_first() else {
        return;
    };
    // 8 kHz, 16 kHz, 48 kHz, or any clock a peer claims.
    let clock = match rate % 4 {
        0 => 8000,
        1 => 16000,
        2 => 48000,
        _ => u32::from(rate) * 1000 + 1,
    };
    let mut s = StreamStats::new(7, clock);
    let start = Instant::now();
    let mut at = Duration::ZERO;
    let mut fed = 0u64;
    for (i, p) in data.chunks_exact(8).enumerate() {
        let seq = u16::from_be_bytes([p[0], p[1]]);
        let ts = u32::from_be_bytes([p[2], p[3], p[4], p[5]]);
        // Arrival gaps up to about an hour, in microseconds.
        at += Duration::from_micros(u64::from(u16::from_be_bytes([p[6], p[7]])) << 6);
        let _ = s.on_packet(seq, ts, 172, start + at);
        fed += 1;
        if i % 64 == 63 {
            let b = s.report_block(0, 0);
            assert!(b.cumulative_lost >= 0);
        }
    }
    let snap = s.snapshot();
    assert_eq!(snap.packets, fed);
    assert!(snap.lost <= snap.expected);
    assert!((0.0..=1.0).contains(&snap.loss), "{}", snap.loss);
    assert!(snap.jitter_ms.is_finite() && snap.jitter_ms >= 0.0);
    let mos = s.mos(Some(40.0));
    assert!((1.0..=4.5).contains(&mos), "{mos}");
});
