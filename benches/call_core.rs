//! What one SIP message costs the call core with 10 and with 5,000 calls
//! in progress (issue 15: the cost must not grow with the calls). The core
//! is the real one (`Core::handle_inbound`, then `settle` and
//! `poll_timeout` as its driver does, whose transmits are drained), with
//! real calls: each answered by the `echo` test service, its RTP ports
//! bound and its media task running.
//!
//! - `flood`: an OPTIONS from a source the IDS banned (a scanner), dropped
//!   before the transaction layer;
//! - `carrier`: a stray 200 OK from the trusted carrier, which passes the
//!   IDS and reaches the transaction layer, so the turn settles and the
//!   next deadline is read (a scan of every call, before the timer heap).
//!
//! `cargo bench --bench call_core`; compare each pair's medians.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tollgate::calls::core::{Core, Env, Local, Output};
use tollgate::config::Config;
use tollgate::sip::transaction::Peer;
use tollgate::sip::transport::Inbound;
use tollgate::telemetry::metrics::Metrics;

const CONFIG: &str = r#"
[sip]
udp = ["127.0.0.1:0"]
tcp = []
[media]
rtp_ports = "20000-39999"
rtp_timeout_s = 0
[firewall]
nftables = "off"
[[trunk]]
name = "carrier"
peers = ["127.0.0.0/8"]
max_calls = 5000
keepalive_s = 0
[[trunk]]
name = "open"
peers = ["10.0.0.0/8"]
trusted = false
keepalive_s = 0
[[route]]
number = "echo"
target = "echo"
"#;

fn inbound(text: String, from: SocketAddr) -> Inbound {
    Inbound {
        bytes: text.into_bytes().into(),
        peer: Peer {
            addr: from,
            reliable: false,
            tls: false,
        },
    }
}

/// An INVITE to `echo` from caller `n`, each from an address of its own
/// (one office's worth of calls per address keeps under any per-source
/// limit), with RTCP muxed: one socket per call, so 5,000 calls fit in a
/// default limit of open files.
fn invite(n: u32, to: SocketAddr) -> Inbound {
    let from: SocketAddr = ([127, 1, (n / 200) as u8, (n % 200 + 1) as u8], 5060).into();
    let ip = from.ip();
    let sdp = format!(
        "v=0\r\no=- {n} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=rtcp-mux\r\n"
    );
    inbound(
        format!(
            "INVITE sip:echo@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-bench-{n}\r\n\
Max-Forwards: 70\r\nFrom: <sip:+447700900123@{ip}>;tag=f{n}\r\nTo: <sip:echo@{to}>\r\n\
Call-ID: bench-{n}@{ip}\r\nCSeq: 1 INVITE\r\nContact: <sip:c@{from}>\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        ),
        from,
    )
}

fn scanner(to: SocketAddr) -> Inbound {
    let from: SocketAddr = ([10, 9, 9, 9], 5060).into();
    inbound(
        format!(
            "OPTIONS sip:100@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-scan\r\n\
Max-Forwards: 70\r\nFrom: <sip:100@{from}>;tag=s\r\nTo: <sip:100@{to}>\r\n\
Call-ID: scan@10.9.9.9\r\nCSeq: 1 OPTIONS\r\nUser-Agent: friendly-scanner\r\n\
Content-Length: 0\r\n\r\n"
        ),
        from,
    )
}

fn stray_ok(to: SocketAddr) -> Inbound {
    let from: SocketAddr = ([127, 0, 0, 1], 5060).into();
    inbound(
        format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {to};branch=z9hG4bK-nobody\r\n\
From: <sip:a@{to}>;tag=a\r\nTo: <sip:b@{from}>;tag=b\r\nCall-ID: stray@bench\r\n\
CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ),
        from,
    )
}

/// A core with `calls` answered calls in progress.
fn core_with(rt: &tokio::runtime::Runtime, calls: u32) -> (Core, Arc<Metrics>, SocketAddr) {
    let config = Arc::new(Config::from_toml(CONFIG).expect("config"));
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    // No transport: the bench hands the core its messages and drains what
    // it sends.
    let sip: SocketAddr = ([127, 0, 0, 1], 5060).into();
    let local = Local {
        udp: vec![sip],
        ..Local::default()
    };
    let mut core = Core::new(config, metrics.clone(), local, Env::system());
    let _in_runtime = rt.enter();
    let mut sent = 0;
    // All at one instant, so however long set-up takes no 200 OK is due
    // again before the count below.
    let now = Instant::now();
    for n in 0..calls {
        if core.handle_inbound(invite(n, sip), now) {
            core.settle(now);
        }
        sent += drain(&mut core);
    }
    core.handle_timeout(now);
    core.settle(now);
    sent += drain(&mut core);
    // 100 Trying and 200 OK for each.
    assert_eq!(sent, 2 * calls as usize, "each call's responses were sent");
    assert_eq!(
        metrics.calls_active.get(),
        i64::from(calls),
        "every call answered and in progress"
    );
    (core, metrics, sip)
}

/// Takes what the core queued for its driver; returns how many transmits.
/// The calls' media tasks are dropped unstarted (their ports come back):
/// the bench measures the signalling core alone.
fn drain(core: &mut Core) -> usize {
    std::iter::from_fn(|| core.poll_output())
        .filter(|o| matches!(o, Output::Transmit(_)))
        .count()
}

fn per_message(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("call_core");
    for calls in [10u32, 5_000] {
        let (mut core, metrics, sip) = core_with(&rt, calls);
        let _in_runtime = rt.enter();
        // The scanner is banned at its first message; from then on it is a
        // flood the IDS drops.
        let now = Instant::now();
        if core.handle_inbound(scanner(sip), now) {
            core.settle(now);
        }
        assert!(!core.handle_inbound(scanner(sip), Instant::now()));
        g.bench_with_input(BenchmarkId::new("flood", calls), &calls, |b, _| {
            b.iter(|| black_box(core.handle_inbound(scanner(sip), Instant::now())))
        });
        let seen = || {
            metrics
                .sip_responses
                .with_label_values(&["2xx", "in"])
                .get()
        };
        let before = seen();
        assert!(core.handle_inbound(stray_ok(sip), Instant::now()));
        assert_eq!(seen(), before + 1, "the stray 200 passed the IDS");
        g.bench_with_input(BenchmarkId::new("carrier", calls), &calls, |b, _| {
            b.iter(|| {
                let now = Instant::now();
                let changed = core.handle_inbound(stray_ok(sip), now);
                core.settle(now);
                black_box((changed, core.poll_timeout(), core.poll_output().is_some()))
            })
        });
        assert_eq!(metrics.calls_active.get(), i64::from(calls));
    }
    g.finish();
}

criterion_group!(benches, per_message);
criterion_main!(benches);
