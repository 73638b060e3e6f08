use std::net::UdpSocket;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use quinn::udp::EcnCodepoint;

use super::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn bound(addr: &str) -> Option<UdpSocket> {
    UdpSocket::bind(addr).ok()
}

fn transmit(to: SocketAddr, contents: &[u8]) -> Transmit<'_> {
    Transmit {
        destination: to,
        ecn: None,
        contents,
        segment_size: None,
        src_ip: None,
    }
}

/// Lets the runtime run until `done` holds (at most 2 s).
async fn until(mut done: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + Duration::from_secs(2);
    while !done() && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn recv_all(rx: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
    rx.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while got.len() < n {
        match rx.recv(&mut buf) {
            Ok(k) => got.push(buf[..k].to_vec()),
            Err(_) => break,
        }
    }
    got
}

#[test]
fn a_turns_transmits_leave_together_whole_and_in_order() {
    rt().block_on(async {
        let rx = bound("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        let s = BatchSocket::new(bound("127.0.0.1:0").expect("bind"), Stats::default())
            .expect("socket");
        // One turn: a hundred transmits before the flusher can run.
        for i in 0..100u8 {
            s.try_send(&transmit(to, &[i; 40])).expect("queued");
        }
        assert_eq!(s.stats.datagrams.get(), 0);
        until(|| s.stats.datagrams.get() == 100).await;
        assert_eq!(s.stats.datagrams.get(), 100);
        // 64 to a call: two calls, not a hundred.
        assert_eq!(s.stats.calls.get(), 2);
        let got = recv_all(&rx, 100);
        let want: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 40]).collect();
        assert_eq!(got, want);
    });
}

#[test]
fn ecn_marks_and_the_source_address_reach_the_wire() {
    rt().block_on(async {
        // The sender is bound to any address: the source must come from
        // the control message (127.0.0.2 is ours too: all of 127/8 is).
        let cases = [
            ("0.0.0.0:0", "127.0.0.1:0", Some("127.0.0.2")),
            ("[::1]:0", "[::1]:0", None),
        ];
        for (local, peer, src) in cases {
            let (Some(rx), Some(tx)) = (bound(peer), bound(local)) else {
                continue; // no IPv6 loopback here
            };
            let to = rx.local_addr().expect("addr");
            let src: IpAddr = match src {
                Some(a) => a.parse().expect("ip"),
                None => tx.local_addr().expect("addr").ip(),
            };
            let state = UdpSocketState::new((&rx).into()).expect("state");
            let s = BatchSocket::new(tx, Stats::default()).expect("socket");
            let mut t = transmit(to, b"marked");
            t.ecn = Some(EcnCodepoint::Ect0);
            t.src_ip = Some(src);
            s.try_send(&t).expect("queued");
            until(|| s.stats.datagrams.get() == 1).await;
            rx.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let mut buf = [0u8; 64];
            let mut meta = [RecvMeta::default()];
            let n = state
                .recv(
                    (&rx).into(),
                    &mut [io::IoSliceMut::new(&mut buf)],
                    &mut meta,
                )
                .expect("received");
            assert_eq!(n, 1);
            assert_eq!(&buf[..meta[0].len], b"marked", "{local}");
            assert_eq!(meta[0].ecn, Some(EcnCodepoint::Ect0), "{local}");
            assert_eq!(meta[0].addr.ip(), src, "{local}");
        }
    });
}

#[test]
fn a_destination_the_kernel_refuses_does_not_switch_ecn_off() {
    rt().block_on(async {
        let rx = bound("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        let state = UdpSocketState::new((&rx).into()).expect("state");
        let s = BatchSocket::new(bound("127.0.0.1:0").expect("bind"), Stats::default())
            .expect("socket");
        // Port 0 (a spoofed source can ask for replies there): EINVAL.
        let port0: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        for dst in [port0, to] {
            let mut t = transmit(dst, b"after");
            t.ecn = Some(EcnCodepoint::Ect0);
            s.try_send(&t).expect("queued");
        }
        until(|| s.stats.datagrams.get() + s.stats.refused.get() == 2).await;
        assert_eq!(s.stats.refused.get(), 1);
        assert_eq!(s.stats.datagrams.get(), 1);
        rx.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        let mut meta = [RecvMeta::default()];
        state
            .recv(
                (&rx).into(),
                &mut [io::IoSliceMut::new(&mut buf)],
                &mut meta,
            )
            .expect("received");
        assert_eq!(&buf[..meta[0].len], b"after");
        assert_eq!(meta[0].ecn, Some(EcnCodepoint::Ect0), "still marked");
    });
}

#[test]
fn a_refused_datagram_is_counted_and_the_rest_still_go() {
    rt().block_on(async {
        let rx = bound("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        let s = BatchSocket::new(bound("127.0.0.1:0").expect("bind"), Stats::default())
            .expect("socket");
        // Broadcast without SO_BROADCAST: the kernel says EACCES.
        let bcast: SocketAddr = "255.255.255.255:9".parse().expect("addr");
        s.try_send(&transmit(to, b"one")).expect("queued");
        s.try_send(&transmit(bcast, b"refused")).expect("queued");
        s.try_send(&transmit(to, b"two")).expect("queued");
        until(|| s.stats.datagrams.get() + s.stats.refused.get() == 3).await;
        assert_eq!(s.stats.refused.get(), 1);
        assert_eq!(recv_all(&rx, 2), vec![b"one".to_vec(), b"two".to_vec()]);
    });
}

#[test]
fn segments_are_split_into_datagrams() {
    rt().block_on(async {
        let rx = bound("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        let s = BatchSocket::new(bound("127.0.0.1:0").expect("bind"), Stats::default())
            .expect("socket");
        let mut t = transmit(to, b"aaaabbbbcc");
        t.segment_size = Some(4);
        s.try_send(&t).expect("queued");
        until(|| s.stats.datagrams.get() == 3).await;
        assert_eq!(
            recv_all(&rx, 3),
            vec![b"aaaa".to_vec(), b"bbbb".to_vec(), b"cc".to_vec()]
        );
    });
}

struct Flag(AtomicBool);

impl std::task::Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_full_queue_says_would_block_and_wakes_its_writers_once_taken() {
    rt().block_on(async {
        let rx = bound("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        let s = BatchSocket::new(bound("127.0.0.1:0").expect("bind"), Stats::default())
            .expect("socket");
        let big = [7u8; 1200];
        let mut queued = 0usize;
        let refused = loop {
            match s.try_send(&transmit(to, &big)) {
                Ok(()) => queued += 1,
                Err(e) => break e,
            }
            assert!(queued <= QUEUE_ITEMS, "the queue is bounded");
        };
        assert_eq!(refused.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(queued, QUEUE_BYTES / big.len());
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut poller = s.clone().create_io_poller();
        assert!(poller.as_mut().poll_writable(&mut cx).is_pending());
        until(|| flag.0.load(Ordering::SeqCst)).await;
        assert!(flag.0.load(Ordering::SeqCst), "the writer was woken");
        assert!(poller.as_mut().poll_writable(&mut cx).is_ready());
        until(|| s.stats.datagrams.get() == queued as u64).await;
        assert_eq!(s.stats.datagrams.get(), queued as u64);
    });
}

#[test]
fn what_was_queued_goes_when_the_socket_is_dropped() {
    let rx = bound("127.0.0.1:0").expect("bind");
    let to = rx.local_addr().expect("addr");
    let runtime = rt();
    runtime.block_on(async {
        let s = BatchSocket::new(bound("127.0.0.1:0").expect("bind"), Stats::default())
            .expect("socket");
        s.try_send(&transmit(to, b"last words")).expect("queued");
        drop(s);
    });
    assert_eq!(recv_all(&rx, 1), vec![b"last words".to_vec()]);
}

#[test]
fn quinn_connections_on_batch_sockets_share_send_calls() {
    const CONNS: usize = 8;
    const TURNS: u32 = 25;
    rt().block_on(async {
        let (server_cfg, client_cfg) =
            crate::agent::pki::localhost_quic_configs().expect("QUIC configs");
        let server_sock =
            BatchSocket::new(bound("127.0.0.1:0").expect("bind"), Stats::default()).expect("s");
        let client_sock =
            BatchSocket::new(bound("127.0.0.1:0").expect("bind"), Stats::default()).expect("s");
        let server = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(server_cfg),
            server_sock.clone(),
            Arc::new(quinn::TokioRuntime),
        )
        .expect("server");
        let client = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            None,
            client_sock.clone(),
            Arc::new(quinn::TokioRuntime),
        )
        .expect("client");
        let at = server.local_addr().expect("addr");
        let accept = tokio::spawn(async move {
            let mut readers = Vec::new();
            for _ in 0..CONNS {
                let conn = server
                    .accept()
                    .await
                    .expect("incoming")
                    .await
                    .expect("conn");
                readers.push(tokio::spawn(async move {
                    let mut got = Vec::new();
                    while got.len() < TURNS as usize {
                        match conn.read_datagram().await {
                            Ok(d) => got.push(d),
                            Err(_) => break,
                        }
                    }
                    (got, conn)
                }));
            }
            let mut all = Vec::new();
            for r in readers {
                all.push(r.await.expect("reader"));
            }
            (all, server)
        });
        let mut conns = Vec::new();
        for _ in 0..CONNS {
            let c = client
                .connect_with(client_cfg.clone(), at, "localhost")
                .expect("connect")
                .await
                .expect("handshake");
            conns.push(c);
        }
        let (d0, c0) = (
            client_sock.stats.datagrams.get(),
            client_sock.stats.calls.get(),
        );
        // Each turn, every connection sends one datagram (as each agent
        // call's media does every 20 ms).
        for turn in 0..TURNS {
            for c in &conns {
                c.send_datagram(bytes::Bytes::copy_from_slice(&turn.to_be_bytes()))
                    .expect("send");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (all, _server) = tokio::time::timeout(Duration::from_secs(5), accept)
            .await
            .expect("in time")
            .expect("task");
        let want: Vec<bytes::Bytes> = (0..TURNS)
            .map(|t| bytes::Bytes::copy_from_slice(&t.to_be_bytes()))
            .collect();
        for (got, _) in &all {
            assert_eq!(got, &want);
        }
        let datagrams = client_sock.stats.datagrams.get() - d0;
        let calls = client_sock.stats.calls.get() - c0;
        assert!(
            datagrams >= u64::from(TURNS) * CONNS as u64 && datagrams > 2 * calls,
            "{datagrams} datagrams in {calls} sendmmsg calls"
        );
    });
}

#[test]
fn a_short_receive_waits_for_the_next_arrival_and_loses_none() {
    rt().block_on(async {
        let s = BatchSocket::new(bound("127.0.0.1:0").expect("bind"), Stats::default())
            .expect("socket");
        let at = s.local_addr().expect("addr");
        let tx = bound("127.0.0.1:0").expect("bind");
        let mut storage = vec![0u8; 2048 * quinn::udp::BATCH_SIZE];
        let mut got: Vec<Vec<u8>> = Vec::new();
        for round in 0..5u8 {
            // Fewer than a receive has room for: the socket is then marked
            // empty, and the next round's arrival must wake it again.
            for i in 0..3u8 {
                tx.send_to(&[round, i], at).expect("send");
            }
            let want = usize::from(round + 1) * 3;
            let until = tokio::time::Instant::now() + Duration::from_secs(2);
            while got.len() < want && tokio::time::Instant::now() < until {
                let mut bufs: Vec<io::IoSliceMut> =
                    storage.chunks_mut(2048).map(io::IoSliceMut::new).collect();
                let mut meta = [RecvMeta::default(); quinn::udp::BATCH_SIZE];
                let n = tokio::time::timeout(
                    Duration::from_secs(2),
                    std::future::poll_fn(|cx| s.poll_recv(cx, &mut bufs, &mut meta)),
                )
                .await
                .expect("woken by the arrival")
                .expect("received");
                for (m, b) in meta.iter().zip(bufs.iter()).take(n) {
                    got.push(b[..m.len].to_vec());
                }
            }
        }
        let want: Vec<Vec<u8>> = (0..5u8)
            .flat_map(|r| (0..3u8).map(move |i| vec![r, i]))
            .collect();
        assert_eq!(got, want);
    });
}
