//! Seal and open of a 172-byte RTP packet (160-byte G.711 payload) for each
//! suite, Tollgate beside libsrtp2 (OpenSSL backend) in the same run.
//!
//! `cargo bench --bench srtp` runs criterion's groups (`seal/<suite>` and
//! `open/<suite>`, each with `tollgate` and `libsrtp2`), then prints a
//! side-by-side table of medians and ratios from its own timing rounds.
//! `cargo bench --bench srtp -- --summary` prints only the table.
//!
//! Both sides do the same work per packet: sealing starts from the plain
//! packet in a reused buffer with a fresh sequence number; opening takes a
//! packet sealed by the same library with a fresh index (replays would be
//! refused, so each round opens a new sealed stream with a new receiver).

#[path = "../tests/it/common/libsrtp.rs"]
mod libsrtp;

use std::hint::black_box;
use std::time::Instant;

use criterion::{BatchSize, Criterion};
use tollgate::media::srtp::{MasterKey, SrtpConfig, SrtpReceiver, SrtpSender, Suite};

const SSRC: u32 = 0xcafe_babe;
const PAYLOAD: usize = 160;
const PACKET: usize = 12 + PAYLOAD;

fn plain(seq: u16) -> [u8; PACKET] {
    let mut p = [0xd5u8; PACKET];
    p[..12].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&SSRC.to_be_bytes());
    p
}

/// Tollgate: seal `n` packets in a reused buffer.
fn tollgate_sealed(key: &MasterKey, n: usize) -> Vec<Vec<u8>> {
    let mut tx = SrtpSender::new(key, SrtpConfig::default()).expect("sender");
    (0..n)
        .map(|i| {
            let mut buf = vec![0u8; PACKET + 16];
            buf[..PACKET].copy_from_slice(&plain(i as u16));
            let len = tx.seal_rtp(&mut buf, PACKET).expect("seal");
            buf.truncate(len);
            buf
        })
        .collect()
}

fn libsrtp_sealed(key: &MasterKey, n: usize) -> Vec<Vec<u8>> {
    let mut tx = libsrtp::session(key, true);
    (0..n)
        .map(|i| {
            let mut buf = Vec::with_capacity(PACKET + 16);
            buf.extend_from_slice(&plain(i as u16));
            tx.protect(&mut buf).expect("protect");
            buf
        })
        .collect()
}

fn criterion_groups(c: &mut Criterion) {
    for suite in libsrtp::SUITES {
        let key = MasterKey::random(suite).expect("key");
        let name = suite.sdes_name();

        let mut g = c.benchmark_group(format!("seal/{name}"));
        let mut tx = SrtpSender::new(&key, SrtpConfig::default()).expect("sender");
        let mut buf = [0u8; PACKET + 16];
        let mut seq = 0u16;
        g.bench_function("tollgate", |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                buf[..PACKET].copy_from_slice(&plain(seq));
                black_box(tx.seal_rtp(&mut buf, PACKET).expect("seal"))
            })
        });
        let mut ltx = libsrtp::session(&key, true);
        let mut lbuf: Vec<u8> = Vec::with_capacity(PACKET + 16);
        let mut seq = 0u16;
        g.bench_function("libsrtp2", |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                lbuf.clear();
                lbuf.extend_from_slice(&plain(seq));
                ltx.protect(&mut lbuf).expect("protect");
                black_box(lbuf.len())
            })
        });
        g.finish();

        let mut g = c.benchmark_group(format!("open/{name}"));
        let mut tx = SrtpSender::new(&key, SrtpConfig::default()).expect("sender");
        let mut rx = SrtpReceiver::new(&key, SrtpConfig::default()).expect("receiver");
        let mut seq = 0u16;
        g.bench_function("tollgate", |b| {
            b.iter_batched_ref(
                || {
                    seq = seq.wrapping_add(1);
                    let mut p = vec![0u8; PACKET + 16];
                    p[..PACKET].copy_from_slice(&plain(seq));
                    let n = tx.seal_rtp(&mut p, PACKET).expect("seal");
                    p.truncate(n);
                    p
                },
                |p| black_box(rx.open_rtp(p).expect("open")),
                BatchSize::SmallInput,
            )
        });
        let mut ltx = libsrtp::session(&key, true);
        let mut lrx = libsrtp::session(&key, false);
        let mut seq = 0u16;
        g.bench_function("libsrtp2", |b| {
            b.iter_batched_ref(
                || {
                    seq = seq.wrapping_add(1);
                    let mut p = Vec::with_capacity(PACKET + 16);
                    p.extend_from_slice(&plain(seq));
                    ltx.protect(&mut p).expect("protect");
                    p
                },
                |p| {
                    lrx.unprotect(p).expect("unprotect");
                    black_box(p.len())
                },
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

/// Median of per-packet times (ns) over `rounds` rounds of `n` packets.
fn median_ns(rounds: usize, n: usize, mut round: impl FnMut() -> f64) -> f64 {
    let _ = round(); // warm up
    let mut t: Vec<f64> = (0..rounds).map(|_| round() / n as f64).collect();
    t.sort_by(f64::total_cmp);
    t[rounds / 2]
}

fn summary() {
    const N: usize = 20_000;
    const ROUNDS: usize = 25;
    println!();
    println!("side by side, 172-byte RTP packet, median of {ROUNDS} rounds of {N} packets, ns per packet");
    println!(
        "{:<26} {:>9} {:>9} {:>7}   {:>9} {:>9} {:>7}",
        "suite", "seal", "libsrtp2", "ratio", "open", "libsrtp2", "ratio"
    );
    for suite in libsrtp::SUITES {
        let key = MasterKey::random(suite).expect("key");

        let mut tx = SrtpSender::new(&key, SrtpConfig::default()).expect("sender");
        let mut buf = [0u8; PACKET + 16];
        let mut seq = 0u16;
        let t_seal = median_ns(ROUNDS, N, || {
            let t0 = Instant::now();
            for _ in 0..N {
                seq = seq.wrapping_add(1);
                buf[..PACKET].copy_from_slice(&plain(seq));
                black_box(tx.seal_rtp(&mut buf, PACKET).expect("seal"));
            }
            t0.elapsed().as_nanos() as f64
        });

        let mut ltx = libsrtp::session(&key, true);
        let mut lbuf: Vec<u8> = Vec::with_capacity(PACKET + 16);
        let mut seq = 0u16;
        let l_seal = median_ns(ROUNDS, N, || {
            let t0 = Instant::now();
            for _ in 0..N {
                seq = seq.wrapping_add(1);
                lbuf.clear();
                lbuf.extend_from_slice(&plain(seq));
                ltx.protect(&mut lbuf).expect("protect");
                black_box(lbuf.len());
            }
            t0.elapsed().as_nanos() as f64
        });

        let sealed = tollgate_sealed(&key, N);
        let t_open = median_ns(ROUNDS, N, || {
            let mut rx = SrtpReceiver::new(&key, SrtpConfig::default()).expect("rx");
            let mut copies = sealed.clone();
            let t0 = Instant::now();
            for p in &mut copies {
                black_box(rx.open_rtp(p).expect("open"));
            }
            t0.elapsed().as_nanos() as f64
        });

        let lsealed = libsrtp_sealed(&key, N);
        let l_open = median_ns(ROUNDS, N, || {
            let mut lrx = libsrtp::session(&key, false);
            let mut copies = lsealed.clone();
            let t0 = Instant::now();
            for p in &mut copies {
                lrx.unprotect(p).expect("unprotect");
                black_box(p.len());
            }
            t0.elapsed().as_nanos() as f64
        });

        println!(
            "{:<26} {:>9.1} {:>9.1} {:>6.2}x   {:>9.1} {:>9.1} {:>6.2}x",
            suite.sdes_name(),
            t_seal,
            l_seal,
            l_seal / t_seal,
            t_open,
            l_open,
            l_open / t_open
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs benches with `--bench` absent: keep it quick.
    let quick = !args.iter().any(|a| a == "--bench");
    if !args.iter().any(|a| a == "--summary") {
        let mut c = Criterion::default().configure_from_args();
        criterion_groups(&mut c);
        c.final_summary();
    }
    if !quick {
        summary();
    }
}

// Keep the suite list in one place.
const _: [Suite; 4] = libsrtp::SUITES;
