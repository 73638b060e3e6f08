//! `tollgate keys rotate-master` against a running gateway: calls and
//! agents' logins go on across the rotation, the old key opens nothing
//! afterwards (the gateway says which key it wants), the new key opens
//! everything after a restart, the audit trail records it and verifies,
//! and the key itself is written nowhere but where the operator asked.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::gateway::{config, operator_cli, sipp, Gateway, PCAP};
use tollgate::agent::client::{Client, Options};
use tollgate::agent::store::Bundle;
use tollgate::agent::totp::{code_at, Secret};

const BASE: u16 = 17700;
const NAME: &str = "keys-rotate";

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn tollgate(args: &[&str], data: &Path, key: Option<&Path>) -> (bool, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    c.args(args).arg("--data-dir").arg(data);
    if let Some(k) = key {
        c.arg("--master-key-file").arg(k);
    }
    let out = c
        .env("TOLLGATE_ADMIN_SOCKET", data.join("admin.sock"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("tollgate runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tollgate keys rotate-master --new-key KEY` against the gateway on
/// `data`.
fn rotate(data: &Path, key: &Path) -> (bool, String, String) {
    let key = key.to_str().expect("utf8");
    tollgate(&["keys", "rotate-master", "--new-key", key], data, None)
}

fn key_id(file: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["keys", "id"])
        .arg(file)
        .output()
        .expect("tollgate runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Enrols `name` with the master key in `key`: its bundle and secret, or
/// the error the command printed.
fn enroll(gw: &Gateway, name: &str, key: &Path) -> Result<(Bundle, Secret), String> {
    let out = gw.dir.join(format!("{name}.toml"));
    let (ok, uri, err) = tollgate(
        &[
            "agent",
            "enroll",
            name,
            "--out",
            out.to_str().expect("utf8"),
            "--config",
            gw.dir.join("tollgate.toml").to_str().expect("utf8"),
        ],
        &gw.dir.join("data"),
        Some(key),
    );
    if !ok {
        return Err(err);
    }
    Ok((
        Bundle::load(&out).expect("bundle"),
        Secret::parse(uri.trim()).expect("otpauth URI"),
    ))
}

async fn logs_in(b: &Bundle, secret: &Secret, at: u64) -> bool {
    let code = code_at(secret, at);
    let attempt = Client::connect_with(b, &code, Options::default());
    match tokio::time::timeout(Duration::from_secs(15), attempt).await {
        Ok(Ok(c)) => c.agent == b.name,
        Ok(Err(e)) => {
            eprintln!("login refused: {e}");
            false
        }
        Err(_) => false,
    }
}

fn start(key: &Path) -> Gateway {
    let key = key.to_str().expect("utf8").to_string();
    Gateway::start_toml_env(
        NAME,
        BASE,
        BASE + 1,
        &config(BASE, 41100, 500, ""),
        &[("TOLLGATE_MASTER_KEY", &key)],
    )
}

fn calls(gw: &Gateway, n: u32, port: u16) {
    let run = sipp(
        gw,
        "uac_echo.xml",
        "echo",
        port,
        &[
            "-key",
            "pcap",
            PCAP,
            "-m",
            &n.to_string(),
            "-l",
            &n.to_string(),
        ],
    );
    assert_eq!(run.successful, u64::from(n), "{}", run.output);
}

/// Files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            hits.extend(files_containing(&p, needle));
        } else if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)) {
            hits.push(p);
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_key_rotates_while_calls_and_logins_go_on() {
    let dir = Gateway::dir_for(NAME);
    let old_key = dir.join("old.key");
    let new_key = dir.join("new.key");
    std::fs::write(&old_key, "11".repeat(32)).expect("old key");
    let _ = std::fs::remove_file(&new_key);
    let mut gw = start(&old_key);
    let data = gw.dir.join("data");
    let (alice, alice_otp) = enroll(&gw, "alice", &old_key).expect("enrol alice");
    let now = unix_now();
    assert!(logs_in(&alice, &alice_otp, now).await);
    calls(&gw, 2, BASE + 10);
    gw.expect_metric("tollgate_cdr_records_finished_total", 10, 2.0);

    // The rotation, with a key the command makes.
    let (ok, out, err) = rotate(&data, &new_key);
    assert!(ok, "{out}{err}");
    let (old_id, new_id) = (key_id(&old_key), key_id(&new_key));
    assert!(
        out.contains(&format!("key {new_id} replaced key {old_id}")),
        "{out}"
    );
    assert!(out.contains("1 agent enrolment"), "{out}");
    assert!(out.contains("install that key"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&new_key)
        .expect("new key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the new key file is private");

    // The same key again is refused, and nothing changes.
    let (ok, _, err) = rotate(&data, &new_key);
    assert!(!ok && err.contains("is the one in use"), "{err}");

    // The running gateway goes on: a login (its TOTP secret now opens
    // under the new key) and calls whose records seal.
    // (A code works once: the next step's, which is within the skew.)
    let alice_at = (now + 30).max(unix_now());
    assert!(logs_in(&alice, &alice_otp, alice_at).await);
    calls(&gw, 1, BASE + 12);
    gw.expect_metric("tollgate_cdr_records_finished_total", 10, 3.0);
    // An enrolment now (through the gateway, which holds the key) is
    // sealed under the new key.
    let (bob, bob_otp) = enroll(&gw, "bob", &new_key).expect("enrol bob");
    let bob_at = unix_now();
    assert!(logs_in(&bob, &bob_otp, bob_at).await);

    // The audit trail names the keys (never the key) and verifies.
    let (ok, trail, err) = operator_cli(&data, "audit", &["list", "--json"]);
    assert!(ok, "{err}");
    assert!(
        trail
            .lines()
            .any(|l| l.contains("\"action\":\"keys rotate-master\"")
                && l.contains(&format!("to key {new_id}"))
                && l.contains(&format!("ok: key {new_id} replaced key {old_id}"))),
        "{trail}"
    );
    let (ok, out, err) = operator_cli(&data, "audit", &["verify"]);
    assert!(ok && out.contains("intact"), "{out}{err}");
    gw.stop();

    // The keys are in their files and nowhere else in the directory: not
    // in the data, the log or the audit trail.
    let new_hex = std::fs::read_to_string(&new_key).expect("new key");
    for (hex, file) in [
        (new_hex.trim(), &new_key),
        ("11".repeat(32).as_str(), &old_key),
    ] {
        let hits = files_containing(&gw.dir, hex.as_bytes());
        assert_eq!(hits, vec![file.clone()], "the key in clear elsewhere");
    }

    // The old key opens nothing now, and the gateway says which key it
    // wants.
    let out = common::gateway::run_with_key(&gw.dir, &old_key);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("(id {old_id})"))
            && err.contains(&format!("sealed under key {new_id}"))
            && err.contains("rotate-master"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // Enrolling offline (no gateway running) with the old key is refused;
    // with the new one it works.
    let e = enroll(&gw, "carol", &old_key)
        .err()
        .expect("old key refused");
    assert!(e.contains("another master key"), "{e}");
    let (carol, carol_otp) = enroll(&gw, "carol", &new_key).expect("enrol carol");

    // The new key opens everything after a restart.
    let gw = start(&new_key);
    let (ok, out, err) = operator_cli(&data, "cdr", &["list", "--json"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    let (ok, out, err) = operator_cli(&data, "audit", &["verify"]);
    assert!(ok && out.contains("intact"), "{out}{err}");
    // A code used before the rotation and the restart is still refused;
    // the next one works.
    assert!(!logs_in(&alice, &alice_otp, alice_at).await);
    assert!(!logs_in(&bob, &bob_otp, bob_at).await);
    assert!(logs_in(&bob, &bob_otp, bob_at + 30).await);
    assert!(logs_in(&carol, &carol_otp, unix_now()).await);
    drop(gw);
}

#[test]
fn the_development_key_file_is_replaced_in_place() {
    let name = "keys-rotate-dev";
    let mut gw = Gateway::start(name, BASE + 20, 41200);
    let data = gw.dir.join("data");
    calls(&gw, 1, BASE + 30);
    gw.expect_metric("tollgate_cdr_records_finished_total", 10, 1.0);
    let dev = gw.dir.join("data.master-key");
    let before = key_id(&dev);
    let new_key = gw.dir.join("new.key");
    let (ok, out, err) = rotate(&data, &new_key);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("development key file now holds the new key"),
        "{out}"
    );
    assert_eq!(key_id(&dev), key_id(&new_key));
    assert_ne!(key_id(&dev), before);
    gw.stop();
    // Restarted on its defaults, it finds the new key and its records.
    let gw = Gateway::start(name, BASE + 20, 41200);
    let (ok, out, err) = operator_cli(&data, "cdr", &["list", "--json"]);
    assert!(ok && out.lines().count() == 1, "{out}{err}");
    drop(gw);
}
