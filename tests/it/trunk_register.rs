//! Registration trunks: the gateway REGISTERs, answers the registrar's
//! Digest challenge (checked by sipp's own digest code) and refreshes
//! before the 2 s binding lapses; wrong credentials are refused.

use std::process::{Command, Stdio};

use crate::common::gateway::{sipp_counts, Gateway};

fn trunk(port: u16, password: &str) -> String {
    format!(
        r#"
[[trunk]]
name = "registered"
peers = ["192.0.2.0/24"]
address = "127.0.0.1:{port}"
keepalive_s = 0
[trunk.register]
username = "acct"
password = "{password}"
expires = 60
"#
    )
}

/// sipp as the registrar: three rounds (registration and two refreshes).
fn registrar(port: u16) -> std::process::Child {
    Command::new("sipp")
        .args([
            "-sf",
            &format!(
                "{}/tests/sipp/uas_registrar.xml",
                env!("CARGO_MANIFEST_DIR")
            ),
        ])
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-nostdin",
            "-timeout",
            "30s",
        ])
        .args(["-m", "1"])
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp runs")
}

const REGISTERED: &str = "tollgate_trunk_registered{trunk=\"registered\"}";

#[test]
fn registers_with_digest_and_refreshes() {
    // Three rounds: the registration and two refreshes, each challenged.
    let sbc = registrar(15730);
    let gw = Gateway::start_with("register", 15700, 54000, 500, &trunk(15730, "hunter2"));
    let out = sbc.wait_with_output().expect("registrar ends");
    let text = String::from_utf8_lossy(&out.stdout);
    let sent = gw.metric("tollgate_sip_requests_total{direction=\"out\",method=\"REGISTER\"}");
    let challenged = gw.metric("tollgate_sip_responses_total{class=\"4xx\",direction=\"in\"}");
    assert_eq!(
        sipp_counts(&text),
        (1, 0),
        "sent {sent}: {text}\n{}",
        gw.log()
    );
    assert_eq!(challenged, 3.0, "three challenges answered");
    assert_eq!(gw.metric(REGISTERED), 1.0);
    assert!(
        !gw.log().contains("hunter2"),
        "the password is never logged"
    );
}

#[test]
fn wrong_credentials_are_refused_and_reported() {
    let sbc = registrar(15830);
    let gw = Gateway::start_with("register-bad", 15800, 55000, 500, &trunk(15830, "wrong"));
    let out = sbc.wait_with_output().expect("registrar ends");
    let text = String::from_utf8_lossy(&out.stdout);
    // The registrar's scenario completes (with its 403).
    assert_eq!(sipp_counts(&text).1, 0, "{text}");
    assert_eq!(gw.wait_metric(REGISTERED, 5, |v| v == 0.0), 0.0);
    let log = gw.log();
    assert!(log.contains("registration refused"), "{log}");
    assert!(!log.contains("wrong\""));
}
