//! The daemon under systemd's notify protocol (`Type=notify`,
//! `WatchdogSec=`): READY once serving, watchdog pings while the call
//! core answers, RELOADING then READY around a SIGHUP, STOPPING on
//! SIGTERM. The test plays the service manager with a datagram socket.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::gateway::{config, Gateway};

const BASE: u16 = 17800;

/// The next notification, within `secs`.
fn next(sock: &UnixDatagram, secs: u64) -> Option<String> {
    sock.set_read_timeout(Some(Duration::from_secs(secs)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Reads notifications until one satisfies `want` (bounded: 10 s, 100
/// messages); returns it and the ones before it.
fn until(sock: &UnixDatagram, want: impl Fn(&str) -> bool) -> (String, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    for _ in 0..100 {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_secs()
            .max(1);
        let Some(m) = next(sock, left) else { break };
        if want(&m) {
            return (m, seen);
        }
        seen.push(m);
    }
    panic!("no such notification; saw {seen:?}");
}

#[test]
fn ready_watchdog_reload_and_stop_are_told_to_systemd() {
    let dir = Gateway::dir_for("systemd-notify");
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).expect("notify socket");
    let notify = path.to_str().expect("utf8").to_string();
    let mut gw = Gateway::start_toml_env(
        "systemd-notify",
        BASE,
        BASE + 1,
        &config(BASE, 41300, 500, ""),
        &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "400000")],
    );

    // Ready, once the admin socket (the last thing bound) is there.
    let (ready, before) = until(&sock, |m| m.contains("READY=1"));
    assert!(ready.contains("STATUS=serving"), "{ready}");
    assert!(before.is_empty(), "nothing before READY: {before:?}");
    assert!(gw.admin_socket().exists());

    // Watchdog pings at half the 400 ms interval.
    let t0 = Instant::now();
    for _ in 0..3 {
        until(&sock, |m| m.trim() == "WATCHDOG=1");
    }
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(5), "three pings took {took:?}");

    // SIGHUP: reloading, then ready again with what happened.
    let hup = Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    let (reloading, _) = until(&sock, |m| m.contains("RELOADING=1"));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let (again, _) = until(&sock, |m| m.contains("READY=1"));
    assert!(
        again.contains("STATUS=serving; configuration reloaded: no change"),
        "{again}"
    );

    // SIGTERM: stopping.
    gw.stop();
    until(&sock, |m| m.contains("STOPPING=1"));
}
