use std::sync::Mutex;

use super::*;
use crate::agent::pki::localhost_quic_configs;

fn quic_configs() -> (quinn::ServerConfig, quinn::ClientConfig) {
    localhost_quic_configs().expect("QUIC configs")
}

/// Lets every attempt in, and keeps what the engine told it.
struct Keep {
    admit: fn(bool) -> Admit,
    conns: mpsc::UnboundedSender<(Conn, mpsc::Receiver<Bytes>)>,
    failed: Mutex<Vec<(IpAddr, Option<String>)>>,
}

impl Listener for Keep {
    fn incoming(&self, _: SocketAddr, validated: bool, _: bool) -> Admit {
        (self.admit)(validated)
    }
    fn connected(&self, conn: Conn, control: mpsc::Receiver<Bytes>) {
        let _ = self.conns.send((conn, control));
    }
    fn failed(&self, source: IpAddr, why: Option<&ConnectionError>) {
        if let Ok(mut f) = self.failed.lock() {
            f.push((source, why.map(|e| e.to_string())));
        }
    }
}

struct Bench {
    to: SocketAddr,
    client: quinn::Endpoint,
    conns: mpsc::UnboundedReceiver<(Conn, mpsc::Receiver<Bytes>)>,
    listener: Arc<Keep>,
    metrics: Arc<Metrics>,
    handle: EngineHandle,
}

/// An engine on loopback (in the current runtime) and a quinn client.
fn bench(admit: fn(bool) -> Admit, handshake_timeout: Duration) -> Bench {
    let (server, client_config) = quic_configs();
    let (tx, conns) = mpsc::unbounded_channel();
    let listener = Arc::new(Keep {
        admit,
        conns: tx,
        failed: Mutex::new(Vec::new()),
    });
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let (engine, handle) = Engine::new(
        socket,
        // The gateway's own configuration (its connection IDs).
        Arc::new(crate::agent::cid::endpoint_config()),
        Arc::new(server),
        listener.clone(),
        handshake_timeout,
        &metrics,
        Stats::default(),
    )
    .expect("engine");
    let to = engine.local_addr().expect("addr");
    tokio::spawn(engine.run());
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client");
    client.set_default_client_config(client_config);
    Bench {
        to,
        client,
        conns,
        listener,
        metrics,
        handle,
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: timed out"))
}

impl Bench {
    /// A client connection and the engine's side of it.
    async fn connect(&mut self) -> (quinn::Connection, Conn, mpsc::Receiver<Bytes>) {
        let client = within(
            "handshake",
            self.client.connect(self.to, "localhost").expect("connect"),
        )
        .await
        .expect("connected");
        let (conn, control) = within("session", self.conns.recv())
            .await
            .expect("a session");
        (client, conn, control)
    }
}

/// A client's first packet to `to`, and nothing after it: a raw socket
/// plays a client that goes silent.
fn send_one_initial(to: SocketAddr) {
    let (_, client_config) = quic_configs();
    let mut silent = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        false,
        None,
    );
    let (_, mut conn) = silent
        .connect(Instant::now(), client_config, to, "localhost")
        .expect("connect");
    let mut buf = Vec::new();
    let t = conn
        .poll_transmit(Instant::now(), 1, &mut buf)
        .expect("an Initial");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.send_to(&buf[..t.size], to).expect("send");
}

fn accept(_: bool) -> Admit {
    Admit::Accept(Box::new(()))
}

/// Proves the address first, as the gateway does.
fn retry_first(validated: bool) -> Admit {
    if validated {
        accept(true)
    } else {
        Admit::Retry
    }
}

#[tokio::test]
async fn after_a_retry_datagrams_and_the_control_stream_flow_both_ways() {
    let mut b = bench(retry_first, Duration::from_secs(10));
    let (client, conn, mut control) = b.connect().await;
    assert_eq!(
        conn.remote_address().port(),
        b.client.local_addr().expect("addr").port()
    );
    // The agent's control stream reaches the session, and back.
    let (mut send, mut recv) = within("open", client.open_bi()).await.expect("stream");
    send.write_all(b"hello").await.expect("write");
    let got = within("control", control.recv()).await.expect("bytes");
    assert_eq!(&got[..], b"hello");
    assert!(conn.write(Bytes::from_static(b"welcome")));
    let mut buf = [0u8; 7];
    within("reply", recv.read_exact(&mut buf))
        .await
        .expect("read");
    assert_eq!(&buf, b"welcome");
    // Datagrams go to their flow, after the flow identifier.
    let (tx, mut flow) = mpsc::channel(8);
    assert!(conn.add_flow(7, tx));
    // The flow is registered by the engine's next turn; a datagram sent
    // before that would count as unknown, so wait for the command first.
    let unknown = b
        .metrics
        .agent_datagrams_dropped
        .with_label_values(&["unknown_flow"]);
    let mut delivered = None;
    for _ in 0..50 {
        client
            .send_datagram(Bytes::from_static(b"\x07audio"))
            .expect("datagram");
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(100), flow.recv()).await {
            delivered = Some(d);
            break;
        }
    }
    assert_eq!(delivered.as_deref(), Some(&b"audio"[..]));
    client
        .send_datagram(Bytes::from_static(b"\x09other"))
        .expect("datagram");
    let before = unknown.get();
    within("unknown counted", async {
        while unknown.get() == before {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    conn.send_datagram(Bytes::from_static(b"to the agent"))
        .expect("queued");
    let d = within("datagram", client.read_datagram())
        .await
        .expect("datagram");
    assert_eq!(&d[..], b"to the agent");
}

#[tokio::test]
async fn a_close_reaches_the_agent_and_a_reused_slot_ignores_the_old_handle() {
    let mut b = bench(accept, Duration::from_secs(10));
    let (client, old, _control) = b.connect().await;
    old.close(5, b"bye");
    within("closed here", old.closed()).await;
    assert!(old.is_closed());
    match within("closed there", client.closed()).await {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, quinn::VarInt::from_u32(5));
            assert_eq!(&c.reason[..], b"bye");
        }
        e => panic!("closed otherwise: {e}"),
    }
    // New connections are kept open until one takes the old one's slot
    // (quinn-proto reuses a slot once its connection has drained).
    let mut held = Vec::new();
    let reused = loop {
        assert!(held.len() < 60, "the old slot was never reused");
        let (c, conn, control) = b.connect().await;
        if conn.key.handle == old.key.handle {
            break (c, conn, control);
        }
        held.push((c, conn, control));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (client2, new, _control2) = reused;
    assert_ne!(new.key.serial, old.key.serial);
    // The old handle's commands reach nothing.
    let _ = old.send_datagram(Bytes::from_static(b"stale"));
    old.close(9, b"stale");
    new.send_datagram(Bytes::from_static(b"fresh"))
        .expect("queued");
    let d = within("datagram", client2.read_datagram())
        .await
        .expect("open");
    assert_eq!(&d[..], b"fresh");
    assert!(client2.close_reason().is_none());
    assert!(!new.is_closed());
}

#[tokio::test]
async fn refusals_are_the_listeners_and_shutdown_closes_everyone() {
    let mut b = bench(|_| Admit::Refuse, Duration::from_secs(10));
    let refused = within(
        "refusal",
        b.client.connect(b.to, "localhost").expect("connect"),
    )
    .await;
    assert!(
        matches!(refused, Err(quinn::ConnectionError::ConnectionClosed(_))),
        "{refused:?}"
    );
    assert!(b.conns.try_recv().is_err());

    let mut b = bench(accept, Duration::from_secs(10));
    let (client, conn, _control) = b.connect().await;
    within("shutdown", b.handle.shutdown(6, b"stopping")).await;
    assert!(conn.is_closed());
    match within("closed there", client.closed()).await {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, quinn::VarInt::from_u32(6));
        }
        e => panic!("closed otherwise: {e}"),
    }
    // And no one new gets in.
    let late = within(
        "late",
        b.client.connect(b.to, "localhost").expect("connect"),
    )
    .await;
    assert!(late.is_err());
}

#[tokio::test]
async fn a_handshake_that_outlives_its_time_is_dropped_and_reported() {
    let b = bench(accept, Duration::from_millis(200));
    send_one_initial(b.to);
    within("failure reported", async {
        loop {
            if b.listener.failed.lock().is_ok_and(|f| !f.is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let failed = b.listener.failed.lock().expect("lock").clone();
    assert_eq!(failed, vec![(IpAddr::from([127, 0, 0, 1]), None)]);
}

#[tokio::test]
async fn an_agent_ahead_of_its_session_is_held_back_not_cut_off() {
    let mut b = bench(accept, Duration::from_secs(10));
    let (client, conn, mut control) = b.connect().await;
    let (mut send, _recv) = within("open", client.open_bi()).await.expect("stream");
    // Twice what the session's queue holds, in a recognisable pattern.
    let total = 2 * CONTROL_CHUNKS * CHUNK;
    let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    let writer = tokio::spawn(async move {
        send.write_all(&data).await.expect("written");
        send.finish().expect("finished");
        send
    });
    // The session reads nothing until its queue is full.
    within("queue full", async {
        while control.len() < CONTROL_CHUNKS {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(!conn.is_closed(), "a full queue must not end the session");
    let mut got = Vec::with_capacity(total);
    while let Some(chunk) = within("the rest", control.recv()).await {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got.len(), total);
    assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    let _ = within("writer", writer).await;
    assert!(!conn.is_closed());
}

#[tokio::test]
async fn a_flood_does_not_starve_the_handshake_timer() {
    let b = bench(accept, Duration::from_millis(200));
    send_one_initial(b.to);
    // Short-header junk as fast as a thread can send it, for at most 5 s.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = std::thread::spawn({
        let (stop, to) = (stop.clone(), b.to);
        move || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            let junk = [0x41u8; 1200];
            let end = Instant::now() + Duration::from_secs(5);
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                if s.send_to(&junk, to).is_ok() {
                    sent += 1;
                }
            }
            sent
        }
    });
    within("failure reported under flood", async {
        while !b.listener.failed.lock().is_ok_and(|f| !f.is_empty()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let sent = flood.join().expect("flood");
    assert!(sent > 1000, "the flood ran ({sent} packets)");
    let failed = b.listener.failed.lock().expect("lock").clone();
    assert_eq!(failed, vec![(IpAddr::from([127, 0, 0, 1]), None)]);
}
