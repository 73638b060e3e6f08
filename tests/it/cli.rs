//! The `tollgate` command's own interface: version, help, config checks,
//! agent enrolment.

use std::process::Command;

fn tollgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_and_help() {
    let (code, out, _) = tollgate(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("tollgate {}", env!("CARGO_PKG_VERSION"))
    );
    let (code, out, _) = tollgate(&["--help"]);
    assert_eq!(code, 0);
    for word in ["run", "config", "agent"] {
        assert!(out.contains(word), "help lists {word}: {out}");
    }
}

#[test]
fn config_check_says_what_is_wrong_and_where() {
    let dir = std::env::temp_dir().join(format!("tollgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let good = dir.join("good.toml");
    let (code, default, _) = tollgate(&["config", "default"]);
    assert_eq!(code, 0);
    std::fs::write(&good, &default).expect("write");
    let (code, out, _) = tollgate(&["config", "check", good.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid (1 trunk(s), 4 route(s))"), "{out}");

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[trunk]]\nname = \"carrier\"\npeers = [\"203.0.113.0/33\"]\n",
    )
    .expect("write");
    let (code, _, err) = tollgate(&["config", "check", bad.to_str().expect("utf8")]);
    assert_eq!(code, 1);
    assert!(
        err.contains("trunk[0] \"carrier\": peers[0]: \"203.0.113.0/33\" is not a CIDR"),
        "{err}"
    );
    let (code, _, err) = tollgate(&["config", "check", "/nonexistent/tollgate.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("No such file"), "{err}");

    // Every problem at once, each on its own line with where it is.
    let several = dir.join("several.toml");
    std::fs::write(
        &several,
        "[sip]\nt1_ms = 10\n[media]\nrtp_ports = \"5-4\"\n[[route]]\nnumber = \"1\"\ntarget = \"queue:nope\"\n",
    )
    .expect("write");
    let (code, _, err) = tollgate(&["config", "check", several.to_str().expect("utf8")]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("several.toml: "))
        .collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(
        lines[0].ends_with("sip.t1_ms: must be 50 to 5000 milliseconds"),
        "{err}"
    );
    assert!(lines[1].contains("media.rtp_ports: \"5-4\""), "{err}");
    assert!(
        lines[2].ends_with("route[0] \"1\": target: no queue named \"nope\""),
        "{err}"
    );
    assert!(lines[3].ends_with("3 problems"), "{err}");

    // "auto" addresses are the running machine's: the file checks the same
    // whatever this machine has.
    let auto = dir.join("auto.toml");
    std::fs::write(
        &auto,
        "[sip]\nudp = [\"0.0.0.0:5060\"]\npublic_address = \"auto\"\n[agents]\nlisten = \"0.0.0.0:4433\"\naddress = \"auto\"\n",
    )
    .expect("write");
    let (code, out, err) = tollgate(&["config", "check", auto.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"auto\" addresses are found when the gateway starts"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// The appliance's shipped configuration passes `config check --strict`
/// as the image installs it (mode 0640), and fails it readable by all.
#[test]
fn the_shipped_appliance_config_passes_strict() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("tollgate-cli-strict-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/image/overlay/etc/tollgate/tollgate.toml"
    ))
    .expect("the image's config");
    // "auto" needs a default route, which a test machine may lack: the
    // addresses it would find are given instead.
    assert!(shipped.contains("public_address = \"auto\""));
    let toml = shipped
        .replace(
            "public_address = \"auto\"",
            "public_address = \"192.0.2.10\"",
        )
        .replace("address = \"auto\"", "address = \"192.0.2.10:4433\"");
    let file = dir.join("tollgate.toml");
    std::fs::write(&file, toml).expect("write");
    let path = file.to_str().expect("utf8");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let (code, out, err) = tollgate(&["config", "check", "--strict", path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("valid"), "{out}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, _, err) = tollgate(&["config", "check", "--strict", path]);
    assert_eq!(code, 1);
    assert!(
        err.contains("readable by every user (mode 0644)") && err.contains("1 finding(s)"),
        "{err}"
    );
    // Without --strict it is still valid.
    let (code, _, _) = tollgate(&["config", "check", path]);
    assert_eq!(code, 0);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn agent_enroll_list_revoke_without_a_gateway() {
    let dir = std::env::temp_dir().join(format!("tollgate-cli-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let data = dir.join("data");
    let key = dir.join("master.key");
    std::fs::write(&key, "42".repeat(32)).expect("key");
    let s = |p: &std::path::Path| p.to_str().expect("utf8").to_string();
    let state = [
        "--data-dir".to_string(),
        s(&data),
        "--master-key".into(),
        s(&key),
    ];
    let run = |extra: &[&str]| {
        let mut args: Vec<&str> = vec!["agent"];
        args.extend(extra);
        args.extend(state.iter().map(String::as_str));
        tollgate(&args)
    };
    let bundle = dir.join("alice.toml");
    // The embedded defaults have no profile "sales": refused, nothing made.
    let (code, _, err) = run(&[
        "enroll",
        "alice",
        "--profile",
        "sales",
        "--out",
        &s(&bundle),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("no profile named \"sales\""), "{err}");
    assert!(!bundle.exists());
    let config = dir.join("tollgate.toml");
    std::fs::write(&config, "[[profile]]\nname = \"sales\"\n").expect("config");
    let (code, out, err) = run(&[
        "enroll",
        "alice",
        "--profile",
        "sales",
        "--config",
        &s(&config),
        "--out",
        &s(&bundle),
    ]);
    assert_eq!(code, 0, "{err}");
    let uri = out.trim();
    assert!(
        uri.starts_with("otpauth://totp/Tollgate:alice?secret="),
        "{out}"
    );
    // The bundle is private and holds what the agent needs.
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&bundle).expect("bundle");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&bundle).expect("read");
    for want in [
        "gateway = \"127.0.0.1:4433\"",
        "BEGIN CERTIFICATE",
        "PRIVATE KEY",
    ] {
        assert!(text.contains(want), "bundle lacks {want}");
    }
    let secret = uri
        .split("secret=")
        .nth(1)
        .and_then(|r| r.split('&').next())
        .expect("secret");
    assert!(
        !text.contains(secret),
        "the TOTP secret is not in the bundle"
    );
    // Nothing in the data directory holds the CA key or the secret in clear.
    for entry in std::fs::read_dir(data.join("agents")).expect("agents dir") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
        let t = String::from_utf8_lossy(&bytes);
        assert!(!t.contains("PRIVATE KEY") && !t.contains(secret));
    }
    // Not twice, and never over an existing file.
    let (code, _, err) = run(&["enroll", "alice", "--out", &s(&dir.join("again.toml"))]);
    assert_eq!(code, 1);
    assert!(err.contains("enrolled already"), "{err}");
    let (code, _, err) = run(&["enroll", "bob", "--out", &s(&bundle)]);
    assert_eq!(code, 1);
    assert!(err.contains("exists"), "{err}");

    let (code, out, _) = run(&["list"]);
    assert_eq!(code, 0);
    let line = out
        .lines()
        .find(|l| l.starts_with("alice"))
        .expect("alice listed");
    assert!(line.contains("sales") && line.contains("active"), "{line}");

    let (code, _, err) = run(&["revoke", "alice"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run(&["list"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("alice") && l.contains("revoked")),
        "{out}"
    );
    let (code, _, err) = run(&["revoke", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("no enrolled agent named \"nobody\""), "{err}");

    // Another master key cannot use this CA.
    std::fs::write(&key, "43".repeat(32)).expect("key");
    let (code, _, err) = run(&["enroll", "carol", "--out", &s(&dir.join("carol.toml"))]);
    assert_eq!(code, 1);
    assert!(err.contains("another master key"), "{err}");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn demo_places_calls_both_ways_and_says_how_each_leg_was_protected() {
    let (code, out, err) = tollgate(&["demo", "--calls", "1", "--seconds", "1"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let inbound = out
        .lines()
        .filter(|l| l.starts_with("inbound call: +********0123 -> "))
        .count();
    let outbound = out
        .lines()
        .filter(|l| l.starts_with("outbound call: agent-2 -> +********0000"))
        .count();
    assert_eq!((inbound, outbound), (1, 1), "{out}");
    let legs = out
        .lines()
        .filter(|l| {
            l.contains("agent leg: SRTP AEAD_AES_128_GCM in QUIC datagrams") && l.contains("MOS")
        })
        .count();
    assert_eq!(legs, 2, "{out}");
    assert!(
        !out.contains("447700900123"),
        "a caller's number in full: {out}"
    );
    let (code, _, err) = tollgate(&["demo", "--calls", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("--calls 1 to 20"), "{err}");
}

#[test]
fn firewall_check_validates_ids_rules() {
    let (code, out, err) = tollgate(&["firewall", "check"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(
            "shipped IDS rules: valid (16 scanner patterns, flood 200 requests per 2000 ms"
        ),
        "{out}"
    );
    let dir = std::env::temp_dir().join(format!("tollgate-cli-ids-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/rulesets/ids.toml"))
            .expect("rules");
    let bad = dir.join("ids.toml");
    std::fs::write(&bad, shipped.replace("first_s = 300", "first_s = 0")).expect("write");
    let (code, _, err) = tollgate(&["firewall", "check", bad.to_str().expect("utf8")]);
    assert_eq!(code, 1);
    assert!(
        err.contains("ban: first_s and repeat_factor at least 1"),
        "{err}"
    );
    std::fs::write(&bad, "[limits]\ninvite = 5\n").expect("write");
    let (code, _, err) = tollgate(&["firewall", "check", bad.to_str().expect("utf8")]);
    assert_eq!(code, 1);
    assert!(err.contains("line 2"), "{err}");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn tls_self_signed_writes_a_private_key_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let d = std::env::temp_dir().join(format!("tollgate-cli-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    let (cert, key) = (d.join("sip.crt"), d.join("sip.key"));
    let path = |p: &std::path::Path| p.to_str().expect("utf8").to_string();
    let args = |k: &std::path::Path| {
        vec![
            "tls".to_string(),
            "self-signed".into(),
            "--cert".into(),
            path(&cert),
            "--key".into(),
            path(k),
            "--name".into(),
            "gw.example.net".into(),
        ]
    };
    let run = |a: Vec<String>| tollgate(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (code, out, err) = run(args(&key));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("gw.example.net"), "{out}");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600);
    let pem = std::fs::read_to_string(&cert).expect("cert");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    // A second run refuses, and leaves no stray key behind.
    let other = d.join("other.key");
    let (code, _, err) = run(args(&other));
    assert_ne!(code, 0);
    assert!(err.contains("sip.crt") && err.contains("exists"), "{err}");
    assert!(!other.exists());
    assert_eq!(std::fs::read_to_string(&cert).expect("cert"), pem);
    let _ = std::fs::remove_dir_all(&d);
}
