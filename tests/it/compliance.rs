//! The compliance report on a real gateway: after a carrier's call over
//! a plain UDP trunk to an agent, an export request refused by an
//! approver and an off-hours read, an auditor's report marks the trunk
//! warn (cleartext), the agent leg pass (AEAD-GCM) and the audit trail
//! pass, counts the call per leg, lists the agent with both factors, the
//! refusal and the anomaly, and names no number. Headless Chromium renders
//! it (screenshot kept in target/tmp/artefacts); its signature verifies
//! with the key the audit trail names, and fails once a mark is edited.
//! A viewer may not make one. Operators act as other uids with setpriv
//! (needs root; skipped otherwise, CI is root).

use sha2::{Digest, Sha256};

use crate::common::agent::{enroll, sdes_dial_config, softphone, softphone_output, wait_exit};
use crate::common::browser;
use crate::common::gateway::{
    as_user, config, far_end_with, operator_cli, sipp, Gateway, ONE_PLAIN_CALL,
};
use crate::common::pcap::is_root;

const BASE: u16 = 19500;
const APPROVER: u32 = 64_144;
const VIEWER: u32 = 64_145;
/// The caller and the number called: neither may appear in the report.
const CALLER: &str = "7700900123";
const CALLED: &str = "2079460000";
/// An agent's name that is a number.
const NAMED: &str = "447700900999";

fn toml() -> String {
    let extra = format!(
        r#"
[[route]]
number = "*"
target = "queue:desk"

[[queue]]
name = "desk"
profiles = ["desk"]

[[profile]]
name = "desk"

[admin.hours.auditor]
days = ["{}"]
hours = "09:00-17:00"
timezone = "Asia/Tokyo"
"#,
        crate::common::not_today()
    );
    config(BASE, 28800, 500, &extra).replacen(
        "[admin]\n",
        &format!("[admin]\napprover_group = \"{APPROVER}\"\nviewer_group = \"{VIEWER}\"\n"),
        1,
    )
}

#[test]
fn an_auditors_report_shows_the_real_state_renders_in_chromium_and_verifies() {
    if !is_root() {
        eprintln!("skipped: the approver and viewer run the command as other uids, which needs root (CI runs as root)");
        return;
    }
    let gw = Gateway::start_toml("compliance", BASE, BASE + 1, &toml());
    let data = gw.dir.join("data");

    // A carrier's call over the UDP trunk (RTP in clear) to an agent.
    let pat = enroll(&gw, "pat", Some("desk"));
    // An agent someone named with a number.
    let _ = enroll(&gw, NAMED, Some("desk"));
    let mut phone = softphone(&gw, &pat, "pat", &["--auto-answer", "--duration", "0.5"]);
    gw.expect_metric("tollgate_agents_available", 10, 1.0);
    let run = sipp(
        &gw,
        "uac_caller_id.xml",
        "02079460000",
        BASE + 10,
        &ONE_PLAIN_CALL,
    );
    assert_eq!((run.successful, run.failed), (1, 0), "{}", run.output);
    let status = wait_exit(&mut phone, 30);
    let (out, err) = softphone_output(&gw, "pat");
    assert!(status.success(), "{out}\n{err}");

    // An export request, refused by the approver; a whole-number list
    // outside the auditor's hours (an anomaly).
    let (ok, out, err) = operator_cli(
        &data,
        "cdr",
        &["export", "--format", "csv", "--reason", "audit sample"],
    );
    assert!(ok, "{out}{err}");
    let id = out.trim().to_string();
    let (ok, out, err) = as_user(&gw, 5044, &[APPROVER], &["approvals", "refuse", &id]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = operator_cli(&data, "cdr", &["list", "--json"]);
    assert!(ok && out.contains(CALLER), "{out}{err}");

    // A viewer may not make a report.
    let page = browser::artefacts().join("compliance-report.html");
    let (ok, _, err) = as_user(
        &gw,
        5045,
        &[VIEWER],
        &["compliance", "report", "--out", "/tmp/never.html"],
    );
    assert!(!ok && err.contains("needs the auditor role"), "{err}");

    // The auditor's (root's) report.
    let (ok, out, err) = operator_cli(
        &data,
        "compliance",
        &["report", "--out", page.to_str().expect("utf8")],
    );
    assert!(ok, "{out}{err}");
    let html = std::fs::read_to_string(&page).expect("the report");
    let digest = hex::encode(Sha256::digest(html.as_bytes()));
    assert!(out.contains(&format!("sha256 {digest}")), "{out}");
    let key = signing_key(&out);

    // The audit trail names the report by its digest and key.
    let (ok, audit, err) = operator_cli(&data, "audit", &["list", "--json"]);
    assert!(ok, "{err}");
    let entry = audit
        .lines()
        .find(|l| l.contains("\"action\":\"compliance report\"") && l.contains("\"outcome\":\"ok"))
        .unwrap_or_else(|| panic!("no compliance report entry in {audit}"));
    assert!(entry.contains(&digest) && entry.contains(&key), "{entry}");

    // The signature verifies with that key, and not once a mark moved.
    let (ok, out, err) = verify(&[page.to_str().expect("utf8"), "--key", &key]);
    assert!(ok && out.contains("signature good"), "{out}{err}");
    let forged = gw.dir.join("forged.html");
    let edited = html.replacen(
        "id=\"control-trunk-encryption\" data-mark=\"warn\"",
        "id=\"control-trunk-encryption\" data-mark=\"pass\"",
        1,
    );
    assert_ne!(edited, html, "the trunk control is marked warn");
    std::fs::write(&forged, edited).expect("write");
    let (ok, _, err) = verify(&[forged.to_str().expect("utf8"), "--key", &key]);
    assert!(!ok && err.contains("NOT VERIFIED"), "{err}");

    // What Chromium shows.
    let dom = browser::dom(&page);
    for section in tollgate::admin::compliance::SECTIONS {
        assert!(
            dom.contains(&format!("<section id=\"{section}\">")),
            "no {section} section"
        );
    }
    let control = |id: &str| {
        let at = dom
            .find(&format!("id=\"control-{id}\""))
            .unwrap_or_else(|| panic!("no control {id}"));
        dom[at..]
            .split("data-mark=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(control("trunk-encryption"), "warn", "a cleartext trunk");
    assert_eq!(control("agent-encryption"), "pass");
    assert_eq!(control("audit-trail"), "pass");
    assert_eq!(control("agent-mfa"), "pass");
    // Root and the daemon are no approvers: the approver group is.
    assert_eq!(
        control("two-person-export"),
        "warn",
        "the group has no members in /etc/group"
    );
    // The call, per leg.
    assert!(
        dom.contains("trunk: UDP, RTP in clear"),
        "no cleartext trunk leg"
    );
    assert!(dom.contains("agent: AEAD_AES_128_GCM"), "no agent leg");
    assert!(
        dom.contains("Calls started in the last day: 1."),
        "one call"
    );
    // The agent with both factors, the refusal, the anomaly.
    let agents = section(&dom, "agents");
    assert!(
        agents.contains(">pat<") && agents.contains("certificate + TOTP"),
        "{agents}"
    );
    // Pat's row: enrolled and logged in today (a seconds-for-milliseconds
    // slip would say 1970).
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    let row = agents
        .split("<tr>")
        .find(|r| r.contains(">pat<"))
        .unwrap_or_default();
    assert_eq!(row.matches(&today).count(), 2, "{row}");
    let approvals = section(&dom, "approvals");
    assert!(
        approvals.contains("1 refused") && approvals.contains(&id),
        "{approvals}"
    );
    let anomalies = section(&dom, "anomalies");
    assert!(
        anomalies.contains("operator_off_hours"),
        "{anomalies}\n{}",
        audit
            .lines()
            .filter(|l| l.contains("anomaly"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(anomalies.contains("<svg"), "the anomalies chart");
    // No number, in the file or what the browser built.
    for text in [&html, &dom] {
        assert!(
            !text.contains(CALLER) && !text.contains(CALLED),
            "a number in the report"
        );
    }
    // And none in the log either.
    let log = gw.log();
    assert!(!log.contains(CALLER), "the caller's number in the log");

    browser::screenshot(
        &page,
        &browser::artefacts().join("compliance-report.png"),
        1200,
        4200,
    );
}

/// The key fingerprint `compliance report` printed.
fn signing_key(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("signed by the appliance key "))
        .unwrap_or_else(|| panic!("a key in {out}"))
        .trim()
        .to_string()
}

/// `tollgate compliance verify ARGS`, offline as an assessor runs it.
fn verify(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["compliance", "verify"])
        .args(args)
        .output()
        .expect("tollgate runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The HTML of the section with `id`.
fn section<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("<section id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no section {id}"));
    let end = dom[start..]
        .find("</section>")
        .map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

/// An agent's dial out over a UDP trunk that requires SDES: the record
/// says what the trunk leg had once it was answered (the suite, and that
/// its key crossed in clear signalling), and the report counts it so and
/// marks the trunk warn; the JSON report verifies like the page.
#[test]
fn an_agents_dial_over_sdes_is_recorded_and_reported_as_such() {
    let base = BASE + 20;
    let far = BASE + 30;
    let extra = sdes_dial_config(far);
    let gw = Gateway::start_toml(
        "compliance-sdes",
        base,
        base + 1,
        &config(base, 29000, 500, &extra),
    );
    let data = gw.dir.join("data");
    let agent = enroll(&gw, "quinn", Some("out"));
    let seen = gw.dir.join("far.log");
    let mut carrier = far_end_with("uas_answer_sdes.xml", far, &seen, &["-m", "1"]);
    let mut phone = softphone(
        &gw,
        &agent,
        "quinn",
        &["--dial", "02079460000", "--duration", "0.5"],
    );
    let status = wait_exit(&mut phone, 30);
    let (out, err) = softphone_output(&gw, "quinn");
    assert!(status.success(), "{out}\n{err}");
    let ended = carrier.wait().expect("the far end ends");
    assert!(ended.success(), "{:?}", std::fs::read_to_string(&seen));

    let (ok, list, err) = operator_cli(&data, "cdr", &["list", "--json"]);
    assert!(ok, "{err}");
    assert!(
        list.contains(r#"["trunk","AES_CM_128_HMAC_SHA1_80 (key in clear signalling)"]"#),
        "{list}"
    );

    let report = gw.dir.join("report.json");
    let (ok, out, err) = operator_cli(
        &data,
        "compliance",
        &["report", "--json", "--out", report.to_str().expect("utf8")],
    );
    assert!(ok, "{out}{err}");
    let key = signing_key(&out);
    let (ok, said, err) = verify(&[report.to_str().expect("utf8"), "--key", &key]);
    assert!(ok && said.contains("signature good"), "{said}{err}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("JSON");
    let facts = &doc["report"]["facts"];
    assert_eq!(
        facts["protection"]["trunk"]
            ["UDP + SRTP (AES_CM_128_HMAC_SHA1_80), key in clear signalling"],
        1,
        "{}",
        facts["protection"]
    );
    let trunk = doc["report"]["controls"]
        .as_array()
        .expect("controls")
        .iter()
        .find(|c| c["id"] == "trunk-encryption")
        .expect("the trunk control");
    assert_eq!(trunk["mark"], "warn", "{trunk}");
}
