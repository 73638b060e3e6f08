//! The IDS verdict per SIP message (the goal: under 300 ns), for a
//! known source and for a stream of new ones, and the memory one million
//! tracked sources take. `cargo bench --bench ids`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::config::rules::Rules;
use tollgate::guard::ids::{Class, Facts, Ids};

fn facts() -> Facts<'static> {
    Facts {
        class: Class::Invite,
        uri: b"sip:+442079460000@198.51.100.1:5060;user=phone",
        user_agent: Some(b"Carrier SBC 7.2"),
        from: Some(b"<sip:+447700900123@192.0.2.10>;tag=a73kszlfl"),
        to: Some(b"<sip:+442079460000@198.51.100.1>"),
    }
}

/// Resident memory in bytes (Linux).
fn rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn verdicts(c: &mut Criterion) {
    let t0 = Instant::now();
    let f = facts();
    let mut ids = Ids::new(Rules::shipped().expect("rules"), vec![], t0);
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    let mut i = 0u64;
    c.bench_function("ids/verdict known source", |b| {
        b.iter(|| {
            // 60 ms apart: under every limit, so the whole path runs.
            i += 1;
            black_box(ids.message(ip, black_box(&f), t0 + Duration::from_millis(i * 60)))
        })
    });
    // A trusted carrier (most of a real gateway's traffic): the same
    // scan, then only its own bucket.
    let carrier = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5));
    let mut with_carrier = Ids::new(
        Rules::shipped().expect("rules"),
        vec![("203.0.113.0/24".parse().expect("net"), true)],
        t0,
    );
    let mut k = 0u64;
    c.bench_function("ids/verdict carrier", |b| {
        b.iter(|| {
            k += 1;
            black_box(with_carrier.message(
                carrier,
                black_box(&f),
                t0 + Duration::from_millis(k * 2),
            ))
        })
    });
    let mut n = 0u32;
    c.bench_function("ids/verdict new sources", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
            black_box(ids.message(ip, black_box(&f), t0))
        })
    });

    // Memory with a million tracked sources.
    let before = rss();
    let mut big = Ids::new(Rules::shipped().expect("rules"), vec![], t0);
    for k in 0..1_000_000u32 {
        big.message(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + k)), &f, t0);
    }
    if let (Some(b), Some(a)) = (before, rss()) {
        println!(
            "ids: {} sources tracked, {:.0} MB resident for them ({:.0} bytes per source, prefixes included)",
            big.tracked(),
            (a - b) as f64 / 1e6,
            (a - b) as f64 / big.tracked() as f64
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(2));
    targets = verdicts
}
criterion_main!(benches);
