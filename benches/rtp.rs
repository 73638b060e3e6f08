//! RTP parse plus statistics update, per packet: the work every received
//! packet costs before any crypto. `cargo bench --bench rtp`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::media::rtp;
use tollgate::media::stats::StreamStats;

fn parse_and_count(c: &mut Criterion) {
    let mut packet = [0xd5u8; 172];
    packet[..12].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0xca, 0xfe, 0xba, 0xbe]);
    let mut stats = StreamStats::new(0xcafe_babe, 8000);
    let t0 = Instant::now();
    let mut i = 0u32;
    c.bench_function("rtp/parse+stats", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            packet[2..4].copy_from_slice(&(i as u16).to_be_bytes());
            packet[4..8].copy_from_slice(&(i.wrapping_mul(160)).to_be_bytes());
            let now = t0 + Duration::from_millis(u64::from(i) * 20);
            let p = rtp::parse(black_box(&packet)).expect("valid");
            black_box(stats.on_packet(p.sequence(), p.timestamp(), p.as_bytes().len(), now))
        })
    });
    c.bench_function("rtp/parse", |b| {
        b.iter(|| black_box(rtp::parse(black_box(&packet)).map(|p| p.payload().len())))
    });
}

criterion_group!(benches, parse_and_count);
criterion_main!(benches);
