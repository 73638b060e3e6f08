//! The `tollgate` command's own interface: version, help, config checks.

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
    for word in ["run", "config"] {
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
    assert!(out.contains("valid (1 trunk(s), 3 route(s))"), "{out}");

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
    std::fs::remove_dir_all(&dir).expect("clean up");
}
