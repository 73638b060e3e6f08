//! Call records: sealed, durable writes per second through the writer
//! (the goal: at least 20,000 a second), and listing one day of
//! a million records (each opened). `cargo bench --bench cdr`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tollgate::cdr::record::{Direction, MediaStats, Outcome, Party, Record};
use tollgate::cdr::store::{RecordId, Store};
use tollgate::cdr::writer::{Target, Writer};
use tollgate::keys::Sealer;
use tollgate::telemetry::metrics::Metrics;

const DAY_MS: u64 = 86_400_000;

fn record(start: u64, n: u64) -> Record {
    let mut r = Record::new(
        &format!("{n:016x}@198.51.100.1"),
        Direction::Inbound,
        &format!("+4477009{:05}", n % 100_000),
        "+442079460000",
        start,
    );
    r.trunk = Some("carrier-a".into());
    r.agent = Some("alice".into());
    r.ringing_ms = Some(start + 80);
    r.answer_ms = Some(start + 4000);
    r.codec = Some("PCMA".into());
    r.srtp = vec![
        ("trunk".into(), "none".into()),
        ("agent".into(), "AEAD_AES_128_GCM".into()),
    ];
    for leg in ["trunk", "agent"] {
        for dir in ["in", "out"] {
            r.media.push(MediaStats {
                leg: leg.into(),
                direction: dir.into(),
                packets: 9000,
                lost: 3,
                jitter_ms: 1.2,
                mos: 4.4,
            });
        }
    }
    r.finish(start + 184_000, Outcome::Answered, 200, Some(Party::Caller));
    r
}

fn temp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tollgate-bench-cdr-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn writes(c: &mut Criterion) {
    let dir = temp("writes");
    let store = Arc::new(Store::open(&dir, Arc::new(Sealer::from_key(&[9; 32]))).expect("store"));
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let writer = Writer::start(
        Target {
            store: Some(store.clone()),
            dir: dir.clone(),
            min_free: 0,
        },
        metrics,
    )
    .expect("writer");
    let day = 20_500 * DAY_MS;
    let mut n = 0u64;
    let mut g = c.benchmark_group("cdr");
    g.throughput(Throughput::Elements(1));
    g.bench_function("durable write", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut last = None;
            for _ in 0..iters {
                n += 1;
                let (tx, rx) = tokio::sync::oneshot::channel();
                let id = writer.next_id(day + n);
                writer.put_waiting(id, record(day + n, n), Some(tx));
                last = Some(rx);
            }
            // Groups are acknowledged in order: the last ack means all.
            if let Some(rx) = last {
                black_box(rx.blocking_recv().expect("ack").expect("written"));
            }
            start.elapsed()
        })
    });
    g.finish();
    writer.stop();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn listing(c: &mut Criterion) {
    let dir = temp("listing");
    let store = Store::open(&dir, Arc::new(Sealer::from_key(&[9; 32]))).expect("store");
    let day = 20_501 * DAY_MS;
    let per_ms = 1_000_000.0 / DAY_MS as f64;
    for chunk in 0..100u64 {
        let batch: Vec<_> = (chunk * 10_000..(chunk + 1) * 10_000)
            .map(|n| {
                let start = day + (n as f64 / per_ms) as u64;
                (
                    RecordId {
                        start_ms: start,
                        seq: n as u32,
                    },
                    record(start, n),
                )
            })
            .collect();
        store.put_all(&batch).expect("put");
    }
    store.flush().expect("flush");
    let mut g = c.benchmark_group("cdr");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    g.throughput(Throughput::Elements(1_000_000));
    g.bench_function("list a day of 1M records", |b| {
        b.iter(|| {
            let n = store
                .range(day, day + DAY_MS)
                .filter(|r| {
                    r.as_ref()
                        .is_ok_and(|(_, r)| r.agent.as_deref() == Some("alice"))
                })
                .count();
            assert_eq!(n, 1_000_000);
            n
        })
    });
    g.finish();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = writes, listing
}
criterion_main!(benches);
