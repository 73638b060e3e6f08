//! Incident lockdown on a real gateway: an agent's live call from a sipp
//! carrier ends when an admin locks the appliance down; a new login is
//! refused, a break-glass agent's is not; exports and shreds are refused;
//! the audit trail's head is anchored in the journal; release needs a
//! second person with the approver role, and logins work again after it.
//! Operators act as other uids with setpriv (needs root; skipped
//! otherwise, CI is root).

use std::time::{Duration, Instant};

use crate::common::agent::{enroll, softphone, softphone_output, wait_exit};
use crate::common::gateway::{
    as_user, config, operator_cli, sipp_command, Gateway, ONE_PLAIN_CALL,
};
use crate::common::pcap::is_root;

const BASE: u16 = 19400;
const APPROVER: u32 = 64_134;
const VIEWER: u32 = 64_135;

fn toml() -> String {
    let extra = r#"
[[route]]
number = "*"
target = "queue:desk"

[[queue]]
name = "desk"
profiles = ["desk"]

[[profile]]
name = "desk"

[incident]
break_glass = ["brenda"]
"#;
    config(BASE, 28600, 500, extra).replacen(
        "[admin]\n",
        &format!("[admin]\napprover_group = \"{APPROVER}\"\nviewer_group = \"{VIEWER}\"\n"),
        1,
    )
}

/// Waits (bounded) for `f` to hold.
fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn lockdown_ends_live_calls_refuses_logins_and_data_and_needs_a_second_person_to_release() {
    if !is_root() {
        eprintln!("skipped: releasing as a second person runs the command as another uid, which needs root (CI runs as root)");
        return;
    }
    let gw = Gateway::start_toml("incident", BASE, BASE + 1, &toml());
    let data = gw.dir.join("data");
    let pat = enroll(&gw, "pat", Some("desk"));
    let quinn = enroll(&gw, "quinn", Some("desk"));
    let brenda = enroll(&gw, "brenda", Some("desk"));
    assert_eq!(gw.metric("tollgate_incident_active"), 0.0);

    // Pat answers a carrier's call that would last a minute.
    let mut phone = softphone(&gw, &pat, "pat", &["--auto-answer", "--duration", "60"]);
    gw.expect_metric("tollgate_agents_available", 10, 1.0);
    let mut carrier = sipp_command(
        &gw,
        "uac_caller_id.xml",
        "02079460000",
        BASE + 10,
        &ONE_PLAIN_CALL,
    )
    .spawn()
    .expect("sipp starts");
    until("the call is answered", 15, || {
        operator_cli(&data, "cdr", &["list", "--json"])
            .1
            .contains("\"outcome\":\"open\"")
    });

    // Lockdown.
    let (ok, out, err) = operator_cli(
        &data,
        "incident",
        &["lockdown", "--reason", "agent laptop stolen"],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("LOCKDOWN"), "{out}");
    gw.expect_metric("tollgate_incident_active", 5, 1.0);
    // The live call ends (the gateway hangs up towards the carrier) and
    // so does pat's session.
    let status = {
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = carrier.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > end {
                let _ = carrier.kill();
                panic!("the carrier's call did not end within 15 s of the lockdown");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert!(status.success(), "sipp got the gateway's BYE");
    let _ = wait_exit(&mut phone, 15);
    let (pat_out, pat_err) = softphone_output(&gw, "pat");
    assert!(
        (pat_out.clone() + &pat_err).contains("incident lockdown"),
        "{pat_out}\n{pat_err}"
    );
    // A viewer's masked list still works; whole numbers do not.
    until("the call's record is finished", 10, || {
        let list = as_user(&gw, 5042, &[VIEWER], &["cdr", "list", "--json"]).1;
        list.contains("\"outcome\":\"answered\"") && !list.contains("\"outcome\":\"open\"")
    });
    let (ok, out, err) = operator_cli(&data, "cdr", &["list", "--json"]);
    assert!(
        !ok && out.is_empty() && err.contains("incident lockdown"),
        "{out}{err}"
    );
    // No new agent while it holds (a break-glass name enrolled afresh
    // would be let in).
    let (ok, _, err) = crate::common::agent::agent_cli(
        &gw,
        &[
            "enroll",
            "brenda2",
            "--out",
            gw.dir.join("b2.toml").to_str().expect("utf8"),
        ],
    );
    assert!(!ok && err.contains("incident lockdown"), "{err}");

    // A new login is refused; a break-glass agent's is not.
    let mut q = softphone(&gw, &quinn, "quinn", &["--history"]);
    let s = wait_exit(&mut q, 15);
    let (q_out, q_err) = softphone_output(&gw, "quinn");
    assert!(!s.success(), "{q_out}{q_err}");
    assert!(q_err.contains("incident lockdown"), "{q_err}");
    gw.expect_metric(
        r#"tollgate_agent_auth_failures_total{reason="lockdown"}"#,
        5,
        1.0,
    );
    let mut b = softphone(&gw, &brenda, "brenda", &["--history"]);
    let s = wait_exit(&mut b, 15);
    let (b_out, b_err) = softphone_output(&gw, "brenda");
    assert!(s.success(), "{b_out}{b_err}");

    // No data leaves, nothing is erased or shredded.
    let (ok, _, err) = operator_cli(
        &data,
        "cdr",
        &["export", "--format", "csv", "--reason", "now"],
    );
    assert!(!ok && err.contains("incident lockdown"), "{err}");
    let (ok, _, err) = operator_cli(&data, "records", &["shred", "--confirm"]);
    assert!(!ok && err.contains("incident lockdown"), "{err}");
    let (ok, _, err) = operator_cli(
        &data,
        "cdr",
        &["erase", "--number", "+447700900123", "--reason", "now"],
    );
    assert!(!ok && err.contains("incident lockdown"), "{err}");

    // The audit trail's head at lockdown is in the journal (the log).
    let (ok, audit, err) = operator_cli(&data, "audit", &["list", "--json"]);
    assert!(ok, "{err}");
    let entry = audit
        .lines()
        .find(|l| l.contains("\"action\":\"incident lockdown\""))
        .unwrap_or_default();
    assert!(
        entry.contains("agent laptop stolen") && entry.contains("ok: lockdown; audit head seq"),
        "{audit}"
    );
    let head = entry
        .split("audit head seq ")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default()
        .to_string();
    let (seq, hash) = head.split_once(" hash ").expect("seq and hash");
    let log = gw.log();
    assert!(
        log.lines().any(|l| l.contains("audit anchor")
            && l.contains(&format!("seq={seq}"))
            && l.contains(hash)),
        "{head}: {log}"
    );

    // The lockdown outlives nothing but its release: by the approver,
    // not by root (no approver) nor by whoever began it.
    let (ok, _, err) = operator_cli(&data, "incident", &["release"]);
    assert!(!ok && err.contains("approver"), "{err}");
    let (ok, out, err) = as_user(&gw, 5041, &[APPROVER], &["incident", "status"]);
    assert!(ok && out.contains("agent laptop stolen"), "{out}{err}");
    let (ok, out, err) = as_user(&gw, 5041, &[APPROVER], &["incident", "release"]);
    assert!(ok && out.contains("released"), "{out}{err}");
    gw.expect_metric("tollgate_incident_active", 5, 0.0);
    let mut q = softphone(&gw, &quinn, "quinn-after", &["--history"]);
    let s = wait_exit(&mut q, 15);
    let (q_out, q_err) = softphone_output(&gw, "quinn-after");
    assert!(s.success(), "{q_out}{q_err}");
    let (ok, audit, err) = operator_cli(&data, "audit", &["list", "--json"]);
    assert!(ok, "{err}");
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"action\":\"incident release\"")
                && l.contains("(uid 5041)")
                && l.contains("\"outcome\":\"ok\"")),
        "{audit}"
    );
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"action\":\"cdr export request\"")
                && l.contains("denied: incident lockdown")),
        "{audit}"
    );
}

/// One echo call from sipp on `port`, answered and ended.
fn echo_call(gw: &Gateway, port: u16) {
    let run = crate::common::gateway::sipp(
        gw,
        "uac_echo.xml",
        "echo",
        port,
        &["-key", "pcap", crate::common::gateway::PCAP, "-m", "1"],
    );
    assert_eq!(run.successful, 1, "{}", run.output);
}

#[test]
fn the_drill_rehearses_each_attack_finds_it_detected_and_leaves_nothing_behind() {
    let base = BASE + 20;
    let toml =
        config(base, 28800, 500, "").replacen("[admin]\n", "[admin]\nbulk_read_records = 1\n", 1);
    let gw = Gateway::start_toml("incident-drill", base, base + 1, &toml);
    let data = gw.dir.join("data");
    // One call on record, so that a bulk read can be rehearsed.
    echo_call(&gw, base + 10);
    gw.expect_metric("tollgate_cdr_records_written_total", 10, 2.0);

    let (ok, out, err) = operator_cli(&data, "incident", &["drill"]);
    assert!(ok, "{out}{err}");
    for step in [
        "stolen bundle used from a new network: detected in",
        "burst of failed logins: detected in",
        "bulk read of whole numbers: detected in",
        "throw-away agent removed: detected in",
    ] {
        assert!(out.contains(step), "{step:?} in {out}");
    }
    assert!(out.contains("every step was detected and audited"), "{out}");
    assert!(
        out.contains("locked out: the next login was refused"),
        "{out}"
    );
    assert!(out.contains("revoked; its bundle is refused"), "{out}");
    // What fired, counted where the alerts look.
    assert_eq!(
        gw.metric(r#"tollgate_privacy_anomalies_total{kind="agent_new_address"}"#),
        1.0
    );
    assert_eq!(
        gw.metric(r#"tollgate_privacy_anomalies_total{kind="bulk_read"}"#),
        1.0
    );
    assert_eq!(gw.metric("tollgate_agent_lockouts_total"), 1.0);
    // The throw-away agent is gone: revoked, its name in the report.
    let agent = out
        .split("throw-away agent ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    assert!(agent.starts_with("drill-"), "{out}");
    let (ok, list, err) = operator_cli(&data, "agent", &["list"]);
    assert!(ok, "{err}");
    let line = list
        .lines()
        .find(|l| l.contains(&agent))
        .unwrap_or_default();
    assert!(line.contains("revoked"), "{list}");
    // And the gateway still serves calls.
    echo_call(&gw, base + 11);
}
