//! The per-packet path allocates nothing: sealing, opening, RTP parsing,
//! RTCP parsing and the statistics update are counted by a global allocator
//! that tallies every allocation on this test's thread.

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
