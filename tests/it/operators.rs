//! Operators and their roles against a running gateway: the command run
//! as users in each role's group (setpriv, numeric uids and gids, so the
//! host's user database is untouched; needs root, skipped otherwise).
//! A viewer sees masked numbers and cannot export, an auditor sees and
//! exports them, an admin manages bans but sees no numbers, and someone
//! with no role gets nothing. Every request, refusals included, is in
//! the audit trail, which verifies; an entry edited on disk is named.
use crate::common::gateway::{as_user, config, sipp, Gateway, PCAP};
use crate::common::pcap::is_root;

const VIEWER: u32 = 64_101;
const AUDITOR: u32 = 64_102;
const ADMIN: u32 = 64_103;
const APPROVER: u32 = 64_104;

/// An export filed by auditor `uid` (`args`: its format and span),
/// approved by approver 5005, run once: (success, stdout, stderr) of the
/// run.
fn approved_export(gw: &Gateway, uid: u32, args: &[&str]) -> (bool, String, String) {
    let mut file = vec!["cdr", "export", "--reason", "billing dispute"];
    file.extend(args);
    let (ok, id, err) = as_user(gw, uid, &[AUDITOR], &file);
    assert!(ok, "{err}");
    let id = id.trim().to_string();
    let (ok, out, err) = as_user(gw, 5005, &[APPROVER], &["approvals", "approve", &id]);
    assert!(ok, "{out}{err}");
    as_user(gw, uid, &[AUDITOR], &["cdr", "export", "--approval", &id])
}

fn toml(base: u16) -> String {
    config(base, 39500, 500, "").replacen(
        "[admin]\n",
        &format!("[admin]\nviewer_group = \"{VIEWER}\"\nauditor_group = \"{AUDITOR}\"\nadmin_group = \"{ADMIN}\"\napprover_group = \"{APPROVER}\"\n"),
        1,
    )
}

/// A gateway on `base` that has recorded one echo call from sipp (from
/// +447700900123).
fn with_one_call(name: &str, base: u16) -> Gateway {
    with_one_call_toml(name, base, &toml(base))
}

/// [`with_one_call`] with its own configuration.
fn with_one_call_toml(name: &str, base: u16, toml: &str) -> Gateway {
    let gw = Gateway::start_toml(name, base, base + 1, toml);
    let run = sipp(
        &gw,
        "uac_echo.xml",
        "echo",
        base + 10,
        &["-key", "pcap", PCAP, "-m", "1"],
    );
    assert_eq!(run.successful, 1, "{}", run.output);
    gw.expect_metric("tollgate_cdr_records_written_total", 10, 2.0);
    gw
}

#[test]
fn each_role_sees_and_does_what_it_may_and_the_audit_trail_shows_it() {
    if !is_root() {
        eprintln!("skipped: running the command as other users needs root (CI runs as root)");
        return;
    }
    let mut gw = with_one_call("operators", 17500);

    // A viewer: masked numbers; no export, no firewall.
    let (ok, out, err) = as_user(&gw, 5001, &[VIEWER], &["cdr", "list", "--json"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("+********0123") && !out.contains("7700900123"),
        "{out}"
    );
    let (ok, table, _) = as_user(&gw, 5001, &[VIEWER], &["cdr", "list"]);
    assert!(
        ok && table.contains("answered") && table.contains("+********0123"),
        "{table}"
    );
    let (ok, out, err) = as_user(
        &gw,
        5001,
        &[VIEWER],
        &["cdr", "export", "--format", "csv", "--reason", "curious"],
    );
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        err.contains("permission denied")
            && err.contains("auditor role")
            && err.contains(&AUDITOR.to_string()),
        "{err}"
    );
    let (ok, _, err) = as_user(&gw, 5001, &[VIEWER], &["firewall", "bans"]);
    assert!(!ok && err.contains("admin role"), "{err}");

    // An auditor: full numbers, and the export (approved by another).
    let (ok, out, err) = approved_export(&gw, 5002, &["--format", "csv"]);
    assert!(ok, "{err}");
    let mut lines = out.lines().skip(1);
    assert!(
        lines
            .next()
            .is_some_and(|h| h.starts_with("id,call_id,direction")),
        "{out}"
    );
    let row = lines.next().expect("a row");
    assert!(
        row.contains(",+447700900123,echo,") && row.contains(",answered,200,caller,"),
        "{row}"
    );
    let id = row.split(',').next().expect("id");
    let (ok, shown, _) = as_user(&gw, 5002, &[AUDITOR], &["cdr", "show", id]);
    assert!(
        ok && shown.contains("\"caller\": \"+447700900123\""),
        "{shown}"
    );
    let (ok, jsonl, _) = approved_export(&gw, 5002, &["--format", "jsonl", "--from", "2020-01-01"]);
    assert!(
        ok && jsonl.lines().count() == 2 && jsonl.contains("\"media\""),
        "{jsonl}"
    );

    // An admin: bans, but numbers stay masked and exports refused.
    let (ok, out, err) = as_user(&gw, 5003, &[ADMIN], &["firewall", "bans"]);
    assert!(ok && out.contains("no bans"), "{out}{err}");
    let (ok, out, _) = as_user(&gw, 5003, &[ADMIN], &["cdr", "show", id]);
    assert!(ok && out.contains("+********0123"), "{out}");
    let (ok, _, _) = as_user(
        &gw,
        5003,
        &[ADMIN],
        &["cdr", "export", "--format", "csv", "--reason", "x"],
    );
    assert!(!ok);

    // Rotating the master key is the admin's; the key file is the
    // operator's own (read here, made by root for the test).
    let new_key = gw.dir.join("rotated.key");
    std::fs::write(&new_key, "5a".repeat(32)).expect("key");
    let key_arg = [
        "keys",
        "rotate-master",
        "--new-key",
        new_key.to_str().expect("utf8"),
    ];
    let (ok, _, err) = as_user(&gw, 5002, &[AUDITOR], &key_arg);
    assert!(!ok && err.contains("admin role"), "{err}");
    let (ok, out, err) = as_user(&gw, 5003, &[ADMIN], &key_arg);
    assert!(ok && out.contains("master key rotated"), "{out}{err}");

    // Enrolling agents is the admin's, through the gateway (which owns
    // the data directory and holds the master key).
    let bundle = std::env::temp_dir().join(format!("tollgate-op-{}.toml", std::process::id()));
    let _ = std::fs::remove_file(&bundle);
    let enrol = [
        "agent",
        "enroll",
        "dora",
        "--out",
        bundle.to_str().expect("utf8"),
    ];
    let (ok, _, err) = as_user(&gw, 5001, &[VIEWER], &enrol);
    assert!(
        !ok && err.contains("admin role") && !bundle.exists(),
        "{err}"
    );
    let (ok, uri, err) = as_user(&gw, 5003, &[ADMIN], &enrol);
    assert!(ok && uri.starts_with("otpauth://totp/"), "{uri}{err}");
    let b = tollgate::agent::store::Bundle::load(&bundle).expect("bundle");
    assert_eq!(b.name, "dora");
    let _ = std::fs::remove_file(&bundle);
    let (ok, _, err) = as_user(&gw, 5003, &[ADMIN], &["agent", "revoke", "dora"]);
    assert!(ok, "{err}");

    // No role at all: nothing.
    let (ok, _, err) = as_user(&gw, 5004, &[], &["cdr", "list"]);
    assert!(!ok && err.contains("has no role"), "{err}");

    // The audit trail: every request, with the refusals, and it verifies.
    let (ok, out, err) = as_user(&gw, 5002, &[AUDITOR], &["audit", "list", "--json"]);
    assert!(ok, "{err}");
    let denied = |uid: u32, action: &str| {
        out.lines().any(|l| {
            l.contains(&format!("(uid {uid})"))
                && l.contains(&format!("\"action\":\"{action}\""))
                && l.contains("\"outcome\":\"denied\"")
        })
    };
    assert!(denied(5001, "cdr export request"), "{out}");
    assert!(denied(5001, "firewall bans"), "{out}");
    assert!(denied(5003, "cdr export request"), "{out}");
    assert!(denied(5004, "cdr list"), "{out}");
    assert!(denied(5002, "keys rotate-master"), "{out}");
    assert!(denied(5001, "agent enroll"), "{out}");
    assert!(
        out.contains("\"action\":\"agent enroll\",\"target\":\"dora\"")
            && out.contains("\"action\":\"agent revoke\""),
        "{out}"
    );
    assert!(
        !out.contains("otpauth"),
        "no TOTP secret in the audit trail"
    );
    assert!(
        out.lines().any(|l| l.contains("(uid 5003)")
            && l.contains("\"action\":\"keys rotate-master\"")
            && l.contains("\"outcome\":\"ok: key ")),
        "{out}"
    );
    assert!(!out.contains(&"5a".repeat(32)), "no key in the audit trail");
    assert!(
        out.contains("\"action\":\"cdr export\"")
            && out.contains("\"outcome\":\"ok: 1 records, sha256 "),
        "{out}"
    );
    assert!(!out.contains("7700900123"), "no number in the audit trail");
    let (ok, out, err) = as_user(&gw, 5002, &[AUDITOR], &["audit", "verify"]);
    assert!(ok && out.contains("intact"), "{out}{err}");
    let (ok, _, err) = as_user(&gw, 5001, &[VIEWER], &["audit", "verify"]);
    assert!(!ok && err.contains("auditor role"), "{err}");

    // An entry edited on disk is named, after a restart too.
    gw.stop();
    let log = gw.dir.join("data").join("audit.log");
    let text = std::fs::read_to_string(&log).expect("audit log");
    let edited = text.replacen("\"outcome\":\"denied\"", "\"outcome\":\"ok\"", 1);
    assert_ne!(edited, text);
    let line = text
        .lines()
        .position(|l| l.contains("\"outcome\":\"denied\""))
        .expect("a denied entry")
        + 1;
    std::fs::write(&log, edited).expect("edit");
    let again = Gateway::start_toml("operators", 17500, 17501, &toml(17500));
    let (ok, out, err) = as_user(&again, 5002, &[AUDITOR], &["audit", "verify"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!("broken at line {line}")) && err.contains("changed"),
        "{err}"
    );
    drop(again);
}

/// Issue 14 item 16: the admin socket serves a bounded number of
/// connections. A local user holding many open cannot take them all; the
/// one over the cap is told the socket is busy, and a place comes back
/// when a connection closes.
#[test]
fn the_admin_socket_caps_connections() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;
    let gw = Gateway::start_toml(
        "operators-cap",
        17520,
        17521,
        &config(17520, 39600, 500, ""),
    );
    let socket = gw.admin_socket();
    let held: Vec<UnixStream> = (0..tollgate::admin::control::MAX_CONNECTIONS)
        .map(|_| UnixStream::connect(&socket).expect("connect"))
        .collect();
    // The gateway admits in order; one more is over the total.
    let extra = UnixStream::connect(&socket).expect("connect");
    extra
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    let mut line = String::new();
    BufReader::new(&extra)
        .read_line(&mut line)
        .expect("an answer");
    assert!(line.contains("the admin socket is busy"), "{line}");
    drop(held);
    // Places come back as connections close (the gateway sees the close
    // a moment later).
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let served = loop {
        let (ok, out, err) = gw.firewall(&["bans"]);
        if ok || std::time::Instant::now() >= until {
            break (ok, out, err);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(served.0, "{}{}", served.1, served.2);
}

/// `[admin] socket_group`: the socket is 0660 and that group's; a user
/// outside it cannot connect at all, even with a role, and a member with a
/// role is served (its groups as the kernel recorded them at connect).
#[test]
fn a_socket_group_lets_only_its_members_connect() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !is_root() {
        eprintln!("skipped: running the command as other users needs root (CI runs as root)");
        return;
    }
    const OPERATORS: u32 = 64_104;
    let toml = toml(17530).replacen(
        "[admin]\n",
        &format!("[admin]\nsocket_group = \"{OPERATORS}\"\n"),
        1,
    );
    let gw = Gateway::start_toml("operators-group", 17530, 17531, &toml);
    let meta = std::fs::metadata(gw.admin_socket()).expect("socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), OPERATORS);
    let (ok, _, err) = as_user(&gw, VIEWER, &[VIEWER], &["cdr", "list"]);
    assert!(!ok, "a viewer outside the socket's group connected");
    assert!(err.to_lowercase().contains("permission denied"), "{err}");
    let (ok, out, err) = as_user(&gw, VIEWER, &[VIEWER, OPERATORS], &["cdr", "list"]);
    assert!(ok, "{out}{err}");
    // In the group but with no role: connected, and refused by role.
    let (ok, _, err) = as_user(&gw, ADMIN + 10, &[OPERATORS], &["cdr", "list"]);
    assert!(!ok);
    assert!(err.contains("viewer"), "{err}");
}

#[test]
fn an_export_needs_a_second_persons_approval_runs_once_and_is_traceable() {
    if !is_root() {
        eprintln!("skipped: running the command as other users needs root (CI runs as root)");
        return;
    }
    let gw = with_one_call("operators-approvals", 17520);
    // Alice (auditor, also an approver), Bob (approver only), Carol
    // (auditor only), Vic (viewer).
    let (alice, bob, carol, vic) = (5011, 5012, 5013, 5014);
    let alice_groups = [AUDITOR, APPROVER];
    let file = [
        "cdr",
        "export",
        "--format",
        "csv",
        "--reason",
        "chargeback 4711",
    ];
    let (ok, id, err) = as_user(&gw, alice, &alice_groups, &file);
    assert!(ok, "{err}");
    let id = id.trim().to_string();
    assert_eq!(id.len(), 16, "{id}");
    let run_it = ["cdr", "export", "--approval", id.as_str()];

    // Not before approval; not approved by herself, a viewer or an
    // auditor without the approver role.
    let (ok, out, err) = as_user(&gw, alice, &alice_groups, &run_it);
    assert!(
        !ok && out.is_empty() && err.contains("not approved"),
        "{err}"
    );
    let (ok, _, err) = as_user(&gw, alice, &alice_groups, &["approvals", "approve", &id]);
    assert!(!ok && err.contains("someone else"), "{err}");
    let (ok, _, err) = as_user(&gw, vic, &[VIEWER], &["approvals", "approve", &id]);
    assert!(!ok && err.contains("approver role"), "{err}");
    let (ok, _, err) = as_user(&gw, carol, &[AUDITOR], &["approvals", "approve", &id]);
    assert!(!ok && err.contains("approver role"), "{err}");
    // The approver role gives no sight of records.
    let (ok, _, err) = as_user(&gw, bob, &[APPROVER], &["cdr", "list"]);
    assert!(!ok && err.contains("permission denied"), "{err}");

    // Bob sees it pending, with its reason, and approves it.
    let (ok, list, err) = as_user(&gw, bob, &[APPROVER], &["approvals", "list"]);
    assert!(ok, "{err}");
    assert!(
        list.contains(&id) && list.contains("pending") && list.contains("chargeback 4711"),
        "{list}"
    );
    let (ok, out, err) = as_user(&gw, bob, &[APPROVER], &["approvals", "approve", &id]);
    assert!(ok && out.contains("approved"), "{out}{err}");

    // Only Alice may run it, and only once.
    let (ok, _, err) = as_user(&gw, carol, &[AUDITOR], &run_it);
    assert!(!ok && err.contains("to run"), "{err}");
    let (ok, export, err) = as_user(&gw, alice, &alice_groups, &run_it);
    assert!(ok, "{err}");
    let first = export.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("# tollgate export ")
            && first.contains(&format!("\"export\":\"{id}\""))
            && first.contains("(uid 5011)")
            && first.contains("(uid 5012)"),
        "{export}"
    );
    assert!(export.contains(",+447700900123,echo,"), "{export}");
    let (ok, again, err) = as_user(&gw, alice, &alice_groups, &run_it);
    assert!(
        !ok && again.is_empty() && err.contains("used already"),
        "{err}"
    );

    // The audit trail ties the file to the request: its SHA-256.
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(export.as_bytes()))
    };
    let (ok, audit, err) = as_user(&gw, carol, &[AUDITOR], &["audit", "list", "--json"]);
    assert!(ok, "{err}");
    let entry = |action: &str, uid: u32| {
        audit
            .lines()
            .find(|l| {
                l.contains(&format!("\"action\":\"{action}\""))
                    && l.contains(&format!("(uid {uid})"))
                    && l.contains(&id)
                    && !l.contains("\"outcome\":\"error")
            })
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        entry("cdr export request", alice).contains("chargeback 4711"),
        "{audit}"
    );
    assert!(!entry("approvals approve", bob).is_empty(), "{audit}");
    // On disk before the data left: whose request, whose approval, what.
    let start = entry("cdr export start", alice);
    assert!(
        start.contains("(uid 5012)") && start.contains("chargeback 4711"),
        "{audit}"
    );
    let ran = entry("cdr export", alice);
    assert!(
        ran.contains(&format!("sha256 {digest}")) && ran.contains(&format!("export {id}")),
        "{digest}: {audit}"
    );
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"action\":\"approvals approve\"")
                && l.contains("(uid 5011)")
                && l.contains("someone else")),
        "self-approval refused and audited: {audit}"
    );

    // A refused request never runs.
    let (ok, id2, err) = as_user(&gw, alice, &alice_groups, &file);
    assert!(ok, "{err}");
    let id2 = id2.trim().to_string();
    // Root is no approver unless in the group: an auditor with sudo does
    // not approve their own export.
    let (ok, _, err) = as_user(&gw, 0, &[], &["approvals", "approve", &id2]);
    assert!(!ok && err.contains("approver role"), "{err}");
    let (ok, _, err) = as_user(&gw, bob, &[APPROVER], &["approvals", "refuse", &id2]);
    assert!(ok, "{err}");
    let (ok, _, err) = as_user(
        &gw,
        alice,
        &alice_groups,
        &["cdr", "export", "--approval", &id2],
    );
    assert!(!ok && err.contains("refused"), "{err}");
}

#[test]
fn an_erasure_needs_approval_takes_the_approved_number_only_and_keeps_no_number() {
    if !is_root() {
        eprintln!("skipped: running the command as other users needs root (CI runs as root)");
        return;
    }
    let gw = with_one_call("operators-erase", 17540);
    let (alice, bob, carol) = (5021, 5022, 5023);
    let number = "+44 7700 900123";
    let digits = "7700900123";
    let file = [
        "cdr",
        "erase",
        "--number",
        number,
        "--reason",
        "data subject request 17",
    ];
    let (ok, id, err) = as_user(&gw, alice, &[AUDITOR], &file);
    assert!(ok, "{err}");
    let id = id.trim().to_string();
    let run_with = |n: &str| {
        as_user(
            &gw,
            alice,
            &[AUDITOR],
            &["cdr", "erase", "--number", n, "--approval", &id],
        )
    };
    // Not before approval; never by the requester's own hand.
    let (ok, _, err) = run_with(number);
    assert!(!ok && err.contains("not approved"), "{err}");
    let (ok, _, err) = as_user(
        &gw,
        alice,
        &[AUDITOR, APPROVER],
        &["approvals", "approve", &id],
    );
    assert!(!ok && err.contains("someone else"), "{err}");
    // The approver sees what is asked by the number's hash, not the number.
    let (ok, list, err) = as_user(&gw, bob, &[APPROVER], &["approvals", "list"]);
    assert!(ok, "{err}");
    let line = list.lines().find(|l| l.contains(&id)).unwrap_or_default();
    assert!(
        line.contains("cdr erase number hmac ") && line.contains("data subject request 17"),
        "{list}"
    );
    assert!(!list.contains(digits), "{list}");
    let (ok, _, err) = as_user(&gw, bob, &[APPROVER], &["approvals", "approve", &id]);
    assert!(ok, "{err}");
    // Another number does not run it and does not use it up.
    let (ok, _, err) = run_with("+447700900999");
    assert!(!ok && err.contains("not the number"), "{err}");
    let (ok, _, err) = as_user(
        &gw,
        carol,
        &[AUDITOR],
        &["cdr", "erase", "--number", number, "--approval", &id],
    );
    assert!(!ok && err.contains("to run"), "{err}");
    let (ok, out, err) = run_with("447700900123");
    assert!(ok && out.contains("erased 1 records"), "{out}{err}");
    let (ok, _, err) = run_with(number);
    assert!(!ok && err.contains("used already"), "{err}");
    // The record is gone.
    let (ok, listed, err) = as_user(&gw, carol, &[AUDITOR], &["cdr", "list", "--json"]);
    assert!(ok, "{err}");
    assert!(!listed.contains(digits), "{listed}");

    // The audit trail says an erasure happened, by whom, approved by
    // whom, with the number's keyed hash: the same in request, start and
    // result, and never the number.
    let (ok, audit, err) = as_user(&gw, carol, &[AUDITOR], &["audit", "list", "--json"]);
    assert!(ok, "{err}");
    let hash = line
        .split("hmac ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    assert_eq!(hash.len(), 32, "{line}");
    let entry = |action: &str| {
        audit
            .lines()
            .filter(|l| l.contains(&format!("\"action\":\"{action}\"")) && l.contains(&hash))
            .count()
    };
    assert_eq!(entry("cdr erase request"), 1, "{audit}");
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"action\":\"cdr erase start\"")
                && l.contains(&hash)
                && l.contains("(uid 5021)")
                && l.contains("approved by")
                && l.contains("(uid 5022)")),
        "{audit}"
    );
    assert!(
        audit.lines().any(|l| l.contains("\"action\":\"cdr erase\"")
            && l.contains("1 records erased")
            && l.contains(&hash)
            && l.contains(&id)),
        "{audit}"
    );
    assert!(!audit.contains(digits), "{audit}");
    let (ok, out, err) = as_user(&gw, carol, &[AUDITOR], &["audit", "verify"]);
    assert!(ok && out.contains("intact"), "{out}{err}");
    // Nor in the approvals file or the log.
    let approvals = std::fs::read_to_string(gw.dir.join("data/approvals.json")).expect("approvals");
    assert!(approvals.contains(&hash) && !approvals.contains(digits));
    assert!(!gw.log().contains(digits));
}

#[test]
fn off_hours_and_bulk_reads_are_anomalies_and_off_hours_whole_numbers_can_be_refused() {
    if !is_root() {
        eprintln!("skipped: running the command as other users needs root (CI runs as root)");
        return;
    }
    // Auditors work one day a week, in Tokyo; it is not today. Viewers
    // have no hours. Two whole-number records in an hour is a bulk read.
    let base = 17550;
    let oversight = |refuse: bool| {
        let t = toml(base).replacen(
            "[admin]\n",
            &format!("[admin]\nbulk_read_records = 2\nrefuse_off_hours = {refuse}\n"),
            1,
        );
        format!(
            "{t}\n[admin.hours.auditor]\nhours = \"08:00-18:00\"\ndays = [\"{}\"]\ntimezone = \"Asia/Tokyo\"\n",
            crate::common::not_today()
        )
    };
    let gw = with_one_call_toml("operators-oversight", base, &oversight(false));
    let off_hours = r#"tollgate_privacy_anomalies_total{kind="operator_off_hours"}"#;
    let bulk = r#"tollgate_privacy_anomalies_total{kind="bulk_read"}"#;
    assert_eq!(gw.metric(off_hours), 0.0);
    assert_eq!(gw.metric(bulk), 0.0);
    let (dora, vic) = (5031, 5032);

    // Flagged, not refused: the auditor still reads.
    for _ in 0..3 {
        let (ok, out, err) = as_user(&gw, dora, &[AUDITOR], &["cdr", "list"]);
        assert!(ok && out.contains("+447700900123"), "{out}{err}");
    }
    assert_eq!(gw.metric(off_hours), 3.0);
    // The third record read in the hour is one over the limit: once.
    assert_eq!(gw.metric(bulk), 1.0);
    // A viewer's masked list is in no role's hours and no bulk read.
    for _ in 0..3 {
        let (ok, _, err) = as_user(&gw, vic, &[VIEWER], &["cdr", "list"]);
        assert!(ok, "{err}");
    }
    assert_eq!(gw.metric(off_hours), 3.0);
    assert_eq!(gw.metric(bulk), 1.0);

    // Refused once the configuration says so (a reload applies it).
    std::fs::write(gw.dir.join("tollgate.toml"), oversight(true)).expect("config");
    let applied = gw.metric(r#"tollgate_config_reloads_total{outcome="applied"}"#);
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
    gw.wait_metric(
        r#"tollgate_config_reloads_total{outcome="applied"}"#,
        10,
        |v| v > applied,
    );
    let (ok, out, err) = as_user(&gw, dora, &[AUDITOR], &["cdr", "list"]);
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        err.contains("working hours") && err.contains("Asia/Tokyo"),
        "{err}"
    );
    assert_eq!(gw.metric(off_hours), 4.0);
    // Requests that show no number are flagged and still run.
    let (ok, _, err) = as_user(
        &gw,
        dora,
        &[AUDITOR],
        &["cdr", "export", "--format", "csv", "--reason", "night work"],
    );
    assert!(ok, "{err}");
    assert_eq!(gw.metric(off_hours), 5.0);

    // Each is in the audit trail: who, what, the hours; never a number.
    let (ok, audit, err) = as_user(&gw, 0, &[], &["audit", "list", "--json"]);
    assert!(ok, "{err}");
    let anomalies: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("\"action\":\"anomaly\""))
        .collect();
    assert_eq!(anomalies.len(), 6, "{audit}");
    assert!(
        anomalies.iter().all(|l| l.contains("(uid 5031)")),
        "{audit}"
    );
    assert_eq!(
        anomalies
            .iter()
            .filter(|l| l.contains("operator_off_hours: cdr list")
                && l.contains(&format!(
                    "{} 08:00-18:00 Asia/Tokyo",
                    crate::common::not_today()
                ))
                && l.contains("\"outcome\":\"flagged\""))
            .count(),
        3,
        "{audit}"
    );
    assert!(
        anomalies
            .iter()
            .any(|l| l.contains("bulk_read: 3 whole-number records")),
        "{audit}"
    );
    assert!(
        anomalies
            .iter()
            .any(|l| l.contains("operator_off_hours: cdr list")
                && l.contains("\"outcome\":\"refused\"")),
        "{audit}"
    );
    assert!(!audit.contains("7700900123"), "{audit}");
}
