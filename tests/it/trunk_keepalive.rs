//! OPTIONS keepalives to a trunk peer: answered, the trunk is up; the peer
//! goes away, it is marked down; it comes back, up again. T1 is 50 ms here
//! so a lost keepalive times out in 64*T1 = 3.2 s.

use std::process::{Child, Command, Stdio};

use crate::common::gateway::Gateway;

const UP: &str = "tollgate_trunk_up{trunk=\"peer\"}";

fn peer(port: u16) -> Child {
    Command::new("sipp")
        .args([
            "-sf",
            &format!("{}/tests/sipp/uas_options.xml", env!("CARGO_MANIFEST_DIR")),
        ])
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-nostdin",
            "-timeout",
            "60s",
        ])
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp runs")
}

#[test]
fn a_peer_that_stops_answering_is_marked_down_and_back_up() {
    let gw = Gateway::start_with(
        "keepalive",
        15240,
        49000,
        50,
        r#"
[[trunk]]
name = "peer"
peers = ["198.51.100.0/24"]
address = "127.0.0.1:15250"
keepalive_s = 1
"#,
    );
    let mut sbc = peer(15250);
    let options = "tollgate_sip_requests_total{direction=\"out\",method=\"OPTIONS\"}";
    assert!(
        gw.wait_metric(options, 10, |v| v >= 2.0) >= 2.0,
        "keepalives sent"
    );
    assert_eq!(gw.metric(UP), 1.0);

    let _ = sbc.kill();
    let _ = sbc.wait();
    // Two keepalives unanswered (each 3.2 s) mark it down.
    assert_eq!(
        gw.wait_metric(UP, 20, |v| v == 0.0),
        0.0,
        "marked down: {}",
        gw.log()
    );
    assert!(gw
        .log()
        .contains("trunk peer stopped answering OPTIONS: down"));

    let mut sbc = peer(15250);
    assert_eq!(gw.wait_metric(UP, 10, |v| v == 1.0), 1.0, "back up");
    let _ = sbc.kill();
    let _ = sbc.wait();
}
