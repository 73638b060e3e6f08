//! The gateway as a library (`tollgate::daemon::Gateway`), in this test's
//! own process on ephemeral ports: it answers SIP and HTTP, reloads its
//! file, and shuts down leaving its ports and admin socket free; a start
//! that cannot go on says which stage stopped it.

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::uac::{request, transact};
use tollgate::config::Config;
use tollgate::daemon::{Gateway, StartError};

/// A configuration on port 0 everywhere (the listeners' real ports come
/// back from `start`), with `udp` for SIP over UDP and `media_timeout`.
fn toml(udp: &str, rtp_timeout_s: u32) -> String {
    format!(
        r#"
[sip]
udp = ["{udp}"]
tcp = ["127.0.0.1:0"]
[media]
rtp_ports = "45000-45999"
rtp_timeout_s = {rtp_timeout_s}
[admin]
listen = "127.0.0.1:0"
[agents]
listen = "127.0.0.1:0"
address = "127.0.0.1:4433"
[firewall]
nftables = "off"
[[trunk]]
name = "loopback"
peers = ["127.0.0.0/8"]
[[route]]
number = "echo"
target = "echo"
"#
    )
}

/// A fresh directory for one test, with a master key made in it.
fn state(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("tollgate-lib-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let key = dir.join("master.key");
    tollgate::keys::Sealer::load(&key, true).expect("a master key");
    (dir.join("data"), key)
}

fn builder(toml: &str, file: &Path, data: &Path, key: &Path) -> tollgate::daemon::Builder {
    std::fs::write(file, toml).expect("config file");
    Gateway::builder(Config::from_toml(toml).expect("config"))
        .config_file(Some(file.to_path_buf()))
        .data_dir(data.to_path_buf())
        .master_key(Some(key.to_path_buf()))
}

/// An OPTIONS from a loopback socket of its own, answered (blocking, so
/// run on a blocking thread).
fn options(gw: SocketAddr) -> String {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let me = sock.local_addr().expect("addr");
    let reply = transact(
        &sock,
        gw,
        &request("OPTIONS", "lib-1", 1, None, me, gw, None),
    );
    String::from_utf8_lossy(&reply)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_runs_in_process_answers_reloads_and_stops() {
    let (data, key) = state("run");
    let file = data.with_file_name("tollgate.toml");
    let mut gw = builder(&toml("127.0.0.1:0", 0), &file, &data, &key)
        .start()
        .await
        .expect("the gateway starts");
    let sip = gw.sip_udp[0];
    assert_ne!(sip.port(), 0, "the bound port comes back");
    assert_ne!(gw.admin.port(), 0);
    assert_ne!(gw.agents.port(), 0);
    assert!(gw.control.exists(), "the admin socket is served");

    let status = tokio::task::spawn_blocking(move || options(sip))
        .await
        .expect("join");
    assert_eq!(status, "SIP/2.0 200 OK");
    let admin = gw.admin;
    let health = tokio::task::spawn_blocking(move || http_get(admin, "/healthz"))
        .await
        .expect("join");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    // A reload reads the file again and says what it changed.
    std::fs::write(&file, toml("127.0.0.1:0", 45)).expect("edit");
    let summary = gw.reload().await.expect("reloaded");
    assert!(summary.contains("media.rtp_timeout_s"), "{summary}");
    // A file that does not parse changes nothing, and says why.
    std::fs::write(&file, "[sip\n").expect("break");
    let refused = gw.reload().await.expect_err("a broken file is refused");
    assert!(refused.contains("tollgate.toml"), "{refused}");

    let control = gw.control.clone();
    gw.shutdown().await;
    assert!(!control.exists(), "the admin socket is removed");
    // Every listener is closed: the same ports bind again.
    UdpSocket::bind(sip).expect("SIP's UDP port is free after shutdown");
    std::net::TcpListener::bind(admin).expect("the admin port is free after shutdown");
    let _ = std::fs::remove_dir_all(data.parent().expect("parent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_cannot_go_on_names_its_stage() {
    let (data, key) = state("stages");
    let file = data.with_file_name("tollgate.toml");

    // A SIP port someone else holds: the listeners' stage.
    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let at = taken.local_addr().expect("addr").to_string();
    let Err(e) = builder(&toml(&at, 0), &file, &data, &key).start().await else {
        panic!("started on a taken port");
    };
    assert!(matches!(e, StartError::Listen(_)), "{e}");
    assert!(e.to_string().starts_with("listen: SIP listeners"), "{e}");
    drop(taken);

    // A master key file that is not there: the keys' stage.
    let missing = key.with_file_name("no-such.key");
    let Err(e) = builder(&toml("127.0.0.1:0", 0), &file, &data, &key)
        .master_key(Some(missing))
        .start()
        .await
    else {
        panic!("started without its master key");
    };
    assert!(matches!(e, StartError::Keys(_)), "{e}");

    // Records sealed under one key, then another key: the records' stage,
    // before anything in the data directory is touched.
    let gw = builder(&toml("127.0.0.1:0", 0), &file, &data, &key)
        .start()
        .await
        .expect("the first start");
    gw.shutdown().await;
    let other = key.with_file_name("other.key");
    tollgate::keys::Sealer::load(&other, true).expect("another key");
    let Err(e) = builder(&toml("127.0.0.1:0", 0), &file, &data, &key)
        .master_key(Some(other))
        .start()
        .await
    else {
        panic!("started with another master key");
    };
    assert!(matches!(e, StartError::Records(_)), "{e}");
    let _ = std::fs::remove_dir_all(data.parent().expect("parent"));
}
