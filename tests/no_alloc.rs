//! The per-packet path allocates nothing: sealing, opening, RTP parsing,
//! RTCP parsing and the statistics update are counted by a global allocator
//! that tallies every allocation per thread (the shard engine's test reads
//! its own thread's count).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use tollgate::media::rtcp::{Compound, RtcpWriter};
use tollgate::media::rtp;
use tollgate::media::srtp::{MasterKey, SrtpConfig, SrtpReceiver, SrtpSender, Suite};
use tollgate::media::stats::StreamStats;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers to the system allocator; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(Cell::get)
}

#[test]
fn the_counter_sees_allocations() {
    let before = allocations();
    let v: Vec<u8> = std::hint::black_box(Vec::with_capacity(100));
    assert!(allocations() > before, "{}", v.capacity());
}

#[test]
fn per_packet_work_allocates_nothing() {
    for suite in Suite::ALL {
        let key = MasterKey::random(suite).expect("key");
        let mut tx = SrtpSender::new(&key, SrtpConfig::default()).expect("sender");
        let mut rx = SrtpReceiver::new(&key, SrtpConfig::default()).expect("receiver");
        let mut stats = StreamStats::new(7, 8000);
        let mut buf = [0u8; 256];
        let mut rtcp = [0u8; 256];
        let t0 = Instant::now();

        let mut one_packet = |seq: u16| {
            buf[..12].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
            buf[2..4].copy_from_slice(&seq.to_be_bytes());
            buf[12..172].fill(0xd5);
            let n = tx.seal_rtp(&mut buf, 172).expect("seal");
            let m = rx.open_rtp(&mut buf[..n]).expect("open");
            let p = rtp::parse(&buf[..m]).expect("parse");
            let at = t0 + Duration::from_millis(20 * u64::from(seq));
            stats.on_packet(p.sequence(), p.timestamp(), m, at);

            let mut w = RtcpWriter::new(&mut rtcp);
            w.receiver_report(7, &[stats.report_block(0, 0)])
                .expect("rr");
            w.sdes_cname(7, b"gw").expect("sdes");
            let len = w.len();
            let n = tx.seal_rtcp(&mut rtcp, len).expect("seal rtcp");
            let m = rx.open_rtcp(&mut rtcp[..n]).expect("open rtcp");
            let packets = Compound::parse(&rtcp[..m]).expect("compound").count();
            assert_eq!(packets, 2);
        };
        // The first packet of an SSRC makes its stream entry (capacity was
        // reserved up front, so even that should not allocate).
        one_packet(0);
        let before = allocations();
        for seq in 1..2000 {
            one_packet(seq);
        }
        assert_eq!(allocations() - before, 0, "{suite:?}");
    }
}

/// The agents' QUIC sends: a transmit is copied into the shard's queue and
/// the flusher sends the turn's queue with `sendmmsg`; neither allocates
/// once the socket is made.
#[test]
fn batched_quic_sends_allocate_nothing_per_datagram() {
    use quinn::udp::Transmit;
    use quinn::AsyncUdpSocket;
    use tollgate::agent::socket::{BatchSocket, Stats};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let src = tx.local_addr().expect("addr").ip();
        let s = BatchSocket::new(tx, Stats::default()).expect("socket");
        let payload = [0x5a_u8; 200];
        let t = Transmit {
            destination: to,
            ecn: Some(quinn::udp::EcnCodepoint::Ect0),
            contents: &payload,
            segment_size: None,
            src_ip: Some(src),
        };
        // Turns of 50 datagrams; each turn waits (yielding, which does not
        // allocate) for the flusher to have sent them.
        async fn turns(s: &BatchSocket, t: &Transmit<'_>, n: u64) {
            for _ in 0..n {
                let want = s.stats.datagrams.get() + 50;
                for _ in 0..50 {
                    s.try_send(t).expect("queued");
                }
                for _ in 0..10_000 {
                    if s.stats.datagrams.get() >= want {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                assert_eq!(s.stats.datagrams.get(), want);
            }
        }
        turns(&s, &t, 2).await;
        let before = allocations();
        turns(&s, &t, 40).await;
        assert_eq!(allocations() - before, 0);
        assert_eq!(s.stats.datagrams.get(), 42 * 50);
        assert!(s.stats.calls.get() <= 42, "one call a turn");
    });
}

/// The shard engine's loop, on a thread of its own, relaying datagrams
/// both ways with a real quinn client: what it allocates per datagram
/// in steady state (quinn-proto's own bookkeeping included). Measured
/// 0.007 (28 allocations for 4,000 datagrams).
#[test]
fn the_engine_loop_allocates_little_per_datagram() {
    use std::sync::Arc;
    use tokio::sync::mpsc;
    use tollgate::agent::engine::{Admit, Conn, Engine, Listener};

    struct Keep(mpsc::UnboundedSender<Conn>);
    impl Listener for Keep {
        fn incoming(&self, _: std::net::SocketAddr, _: bool, _: bool) -> Admit {
            Admit::Accept(Box::new(()))
        }
        fn connected(&self, conn: Conn, _: mpsc::Receiver<bytes::Bytes>) {
            let _ = self.0.send(conn);
        }
        fn failed(&self, _: std::net::IpAddr, _: Option<&quinn::ConnectionError>) {}
    }

    let (server, client_config) =
        tollgate::agent::pki::localhost_quic_configs().expect("QUIC configs");
    let shard = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (tx, mut conns) = mpsc::unbounded_channel();
    let metrics = tollgate::telemetry::metrics::Metrics::new().expect("metrics");
    let (engine, _handle) = {
        let _in = shard.enter();
        Engine::new(
            std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"),
            Arc::new(quinn::EndpointConfig::default()),
            Arc::new(server),
            Arc::new(Keep(tx)),
            Duration::from_secs(10),
            &metrics,
            tollgate::agent::socket::Stats::default(),
        )
        .expect("engine")
    };
    let to = engine.local_addr().expect("addr");
    let handle = shard.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        shard.block_on(async move {
            tokio::spawn(engine.run());
            let _ = stopped.await;
        });
    });
    // What the engine's thread has allocated so far.
    let engine_allocs = |h: &tokio::runtime::Handle| {
        let (tx, rx) = std::sync::mpsc::channel();
        h.spawn(async move {
            let _ = tx.send(allocations());
        });
        rx.recv().expect("the shard answers")
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (per_datagram, relayed) = rt.block_on(async {
        let mut client =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client");
        client.set_default_client_config(client_config);
        let agent = client
            .connect(to, "localhost")
            .expect("connect")
            .await
            .expect("connected");
        let conn = conns.recv().await.expect("a session");
        let (flow_tx, mut flow) = mpsc::channel(1024);
        assert!(conn.add_flow(7, flow_tx));
        // Rounds of 50 datagrams each way, each round waiting for them to
        // arrive (QUIC datagrams may be lost: a round ends after 200 ms
        // without one, and only what arrived counts).
        let payload = bytes::Bytes::from_static(&[0x5a; 180]);
        let mut tagged = vec![7u8];
        tagged.extend_from_slice(&payload);
        let tagged = bytes::Bytes::from(tagged);
        async fn rounds(
            n: usize,
            agent: &quinn::Connection,
            conn: &Conn,
            flow: &mut mpsc::Receiver<bytes::Bytes>,
            tagged: &bytes::Bytes,
            payload: &bytes::Bytes,
        ) -> usize {
            let quiet = Duration::from_millis(200);
            let mut relayed = 0;
            for _ in 0..n {
                for _ in 0..50 {
                    agent.send_datagram(tagged.clone()).expect("to the gateway");
                    conn.send_datagram(payload.clone()).expect("to the agent");
                }
                let (mut up, mut down) = (0, 0);
                while up < 50 || down < 50 {
                    tokio::select! {
                        d = flow.recv(), if up < 50 => {
                            assert!(d.is_some(), "the flow stays open");
                            up += 1;
                        }
                        d = agent.read_datagram(), if down < 50 => {
                            assert!(d.is_ok(), "the connection stays open");
                            down += 1;
                        }
                        () = tokio::time::sleep(quiet) => break,
                    }
                }
                relayed += up + down;
            }
            relayed
        }
        // Warm-up: the arena, queues and quinn-proto's tables grow to size.
        rounds(20, &agent, &conn, &mut flow, &tagged, &payload).await;
        let before = engine_allocs(&handle);
        let relayed = rounds(40, &agent, &conn, &mut flow, &tagged, &payload).await;
        let after = engine_allocs(&handle);
        ((after - before) as f64 / relayed as f64, relayed)
    });
    let _ = stop.send(());
    thread.join().expect("shard thread");
    eprintln!("engine loop: {per_datagram:.3} allocations per datagram over {relayed}");
    assert!(
        relayed > 3000,
        "most of 4,000 datagrams arrived ({relayed})"
    );
    // Amortised only: the receive arena is renewed every 64 KiB and
    // quinn-proto's tables grow now and then; nothing per datagram.
    assert!(
        per_datagram < 0.05,
        "{per_datagram:.3} allocations per datagram"
    );
}
