//! Agents for integration tests: enrolment through the real CLI against a
//! test gateway's state, and the headless softphone as a child process.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::gateway::Gateway;
use tollgate::agent::store::Bundle;
use tollgate::agent::totp::Secret;

/// Runs `tollgate agent ...` against the gateway's state.
pub fn agent_cli(gw: &Gateway, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("agent")
        .args(args)
        .arg("--data-dir")
        .arg(gw.dir.join("data"))
        .arg("--config")
        .arg(gw.dir.join("tollgate.toml"))
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An enrolled agent: its bundle file, the bundle, its TOTP secret and a
/// file holding the secret (for `--otp-secret-file`).
pub struct Enrolled {
    pub bundle_path: PathBuf,
    pub bundle: Bundle,
    pub secret: Secret,
    pub secret_path: PathBuf,
}

/// Enrols `name`, with `profile` if given.
pub fn enroll(gw: &Gateway, name: &str, profile: Option<&str>) -> Enrolled {
    let out = gw.dir.join(format!("{name}.toml"));
    let mut args = vec!["enroll", name, "--out", out.to_str().expect("utf8")];
    if let Some(p) = profile {
        args.extend(["--profile", p]);
    }
    let (ok, uri, err) = agent_cli(gw, &args);
    assert!(ok, "enroll {name}: {err}");
    let secret_path = gw.dir.join(format!("{name}.otp"));
    std::fs::write(&secret_path, uri.trim()).expect("write secret");
    Enrolled {
        bundle: Bundle::load(&out).expect("bundle"),
        bundle_path: out,
        secret: Secret::parse(uri.trim()).expect("otpauth URI"),
        secret_path,
    }
}

/// Starts `tollgate agent connect` for `who` with `extra` options; its
/// output goes to files in the gateway's directory named after `tag`.
pub fn softphone(gw: &Gateway, who: &Enrolled, tag: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["agent", "connect", "--identity"])
        .arg(&who.bundle_path)
        .arg("--otp-secret-file")
        .arg(&who.secret_path)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(gw.dir.join(format!("{tag}.out"))).expect("out"))
        .stderr(std::fs::File::create(gw.dir.join(format!("{tag}.err"))).expect("err"))
        .spawn()
        .expect("softphone starts")
}

/// Waits (bounded) for a child to exit.
pub fn wait_exit(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("the softphone did not finish within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// What a softphone printed (stdout, stderr).
pub fn softphone_output(gw: &Gateway, tag: &str) -> (String, String) {
    let read = |ext: &str| {
        std::fs::read_to_string(gw.dir.join(format!("{tag}.{ext}"))).unwrap_or_default()
    };
    (read("out"), read("err"))
}

/// Config for agents' dials out a UDP trunk that requires SDES SRTP (keys
/// in clear signalling allowed, as on loopback), whose far end is a sipp at
/// `far`: the profile `out` may dial +44, shown as +442071234567.
pub fn sdes_dial_config(far: u16) -> String {
    format!(
        r#"
[[profile]]
name = "out"
caller_id = "+442071234567"
allow = ["+44"]

[[trunk]]
name = "far"
peers = ["192.0.2.0/24"]
address = "127.0.0.1:{far}"
codecs = ["PCMA"]
srtp = "required"
insecure_sdes_over_cleartext = true
keepalive_s = 0

[[dial]]
prefix = "+44"
trunk = "far"
"#
    )
}
