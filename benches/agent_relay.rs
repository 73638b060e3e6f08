//! The per-packet relay path between a trunk and an agent, in one
//! process: trunk RTP in, checked and measured, re-originated and sealed
//! as AEAD_AES_128_GCM SRTP after the flow identifier (a QUIC datagram
//! payload); and the agent's SRTP back to plain RTP for the trunk. No
//! sockets: this is the CPU the gateway spends per packet before the
//! QUIC packet seal and the send. `cargo bench --bench agent_relay`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::calls::relay::Relay;
use tollgate::media::leg::Leg;
use tollgate::media::srtp::{MasterKey, SrtpConfig, SrtpSender, Suite, Way};

fn relay(c: &mut Criterion) {
    let carrier: SocketAddr = "192.0.2.7:30000".parse().expect("addr");
    let key = MasterKey::random(Suite::AeadAes128Gcm).expect("key");
    let agent_key =
        MasterKey::from_concatenated(Suite::AeadAes128Gcm, &key.to_concatenated()).expect("key");
    let mut r =
        Relay::new(Leg::new(carrier, 8000, 1, 1, None), &key, 5, 2, 2, (0, 0)).expect("relay");
    let mut packet = [0xd5u8; 172];
    packet[..12].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0xca, 0xfe, 0xba, 0xbe]);
    let mut buf = [0u8; 172];
    let mut out = [0u8; 1500];
    let t0 = Instant::now();
    let mut i = 0u32;
    c.bench_function("relay/trunk_to_agent", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            packet[2..4].copy_from_slice(&(i as u16).to_be_bytes());
            packet[4..8].copy_from_slice(&(i.wrapping_mul(160)).to_be_bytes());
            buf.copy_from_slice(&packet);
            let now = t0 + Duration::from_millis(u64::from(i) * 20);
            black_box(r.trunk_to_agent(carrier, &mut buf, now, &mut out)).expect("relayed")
        })
    });

    // The agent's packets are sealed in chunks outside the timed part
    // (each sequence number once, as the replay window requires), then
    // opened and relayed in the timed part.
    let mut agent_tx = SrtpSender::new(
        &agent_key.for_way(Way::FromAgent).expect("key"),
        SrtpConfig::default(),
    )
    .expect("tx");
    const CHUNK: u64 = 4096;
    let mut chunk = vec![[0u8; 188]; CHUNK as usize];
    let mut seq = 0u32;
    c.bench_function("relay/agent_to_trunk", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK) as usize;
                let first = seq;
                for p in &mut chunk[..n] {
                    p[..12].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]);
                    p[12..172].fill(0xd5);
                    p[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
                    p[4..8].copy_from_slice(&(seq.wrapping_mul(160)).to_be_bytes());
                    seq = seq.wrapping_add(1);
                    agent_tx.seal_rtp(p, 172).expect("seal");
                }
                let start = Instant::now();
                // Each packet at its own 20 ms (the relay limits a
                // burst at one instant).
                for (i, p) in chunk[..n].iter_mut().enumerate() {
                    let at = u64::from(first.wrapping_add(i as u32));
                    let now = t0 + Duration::from_millis(at * 20);
                    black_box(r.agent_to_trunk(&mut p[..], now, &mut out)).expect("relayed");
                }
                spent += start.elapsed();
                left -= n as u64;
            }
            spent
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_millis(1500));
    targets = relay
}
criterion_main!(benches);
