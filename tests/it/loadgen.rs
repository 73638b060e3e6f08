//! `tollgate loadgen` at CI size: a real gateway, fifty agents each on
//! its own QUIC connection, fifty carrier calls over SIP, three seconds
//! of checked audio both ways. Every payload must arrive once, whole, on
//! its own call. The big runs are benchmarks (`benches/vs_rtpengine.sh`).

use std::process::Command;

#[test]
fn fifty_calls_relay_every_payload_both_ways() {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["loadgen", "--calls", "50", "--seconds", "3", "--json"])
        .output()
        .expect("run tollgate loadgen");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadgen failed: {stderr}");
    let r: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("a JSON report on stdout");
    let n = |path: &[&str]| {
        path.iter()
            .fold(&r, |v, k| &v[*k])
            .as_u64()
            .unwrap_or_else(|| panic!("{path:?} in {r}"))
    };
    assert_eq!(n(&["answered"]), 50, "{r}");
    assert_eq!(
        n(&["failed"]) + n(&["ended_early"]) + n(&["agent_errors"]),
        0,
        "{r}"
    );
    for way in ["to_agents", "to_trunk"] {
        // 50 calls x 50 packets a second x 3 seconds.
        let sent = n(&[way, "sent"]);
        assert!((7_000..=8_000).contains(&sent), "{way}: {r}");
        assert_eq!(n(&[way, "received"]), sent, "{way} lost packets: {r}");
        for bad in ["duplicated", "late", "corrupt", "misrouted"] {
            assert_eq!(n(&[way, bad]), 0, "{way} {bad}: {r}");
        }
        assert!(n(&[way, "latency", "p50_us"]) > 0, "{way}: {r}");
    }
    assert_eq!(n(&["stray"]) + n(&["undecodable"]), 0, "{r}");
    assert_eq!(
        n(&["relayed"]),
        n(&["to_agents", "received"]) + n(&["to_trunk", "received"])
    );
    assert!(
        r["gateway_cpu_us_per_packet"]
            .as_f64()
            .is_some_and(|c| c > 0.0),
        "{r}"
    );
}
