//! A caller who withheld the number stays withheld (RFC 3323, RFC 3325):
//! sipp, as the carrier, calls an agent once in each form a carrier
//! delivers a withheld number (and once plainly, to show the test can
//! tell). The agent's profile shows whole numbers, yet it sees
//! `withheld`; so do viewers, exports and the gateway's log, while the
//! sealed record keeps the asserted number, marked, for auditors. And an
//! agent's own dial can withhold the call centre's number: `Privacy: id`
//! and an anonymous From towards the trunk, the number in
//! P-Asserted-Identity for the carrier.
//!
//! The same calls show in the agent's own history (agent protocol
//! `history`), as its profile sees them, and in no other agent's.

use std::time::{Duration, Instant};

use crate::common;
use crate::common::agent::{enroll, softphone, softphone_output, wait_exit};
use crate::common::gateway::{as_user, far_end_with, operator_cli, sipp, Gateway};

const BASE: u16 = 19200;
/// The approver group's gid.
const APPROVER: u32 = 64_124;
const NUMBER: &str = "+447700900123";

fn toml(base: u16) -> String {
    format!(
        r#"
[[route]]
number = "*"
target = "queue:desk"

[[queue]]
name = "desk"
profiles = ["full"]

[[profile]]
name = "full"
show_caller = "full"
caller_id = "+442071234567"
allow = ["+44"]

[[trunk]]
name = "far"
peers = ["192.0.2.0/24"]
address = "127.0.0.1:{far}"
codecs = ["PCMA"]
srtp = "off"
keepalive_s = 0

[[dial]]
prefix = "+44"
trunk = "far"
"#,
        far = base + 50
    )
}

/// Each form a carrier sends, as (From, a header, another header), and
/// what the sealed record keeps for auditors.
const FORMS: [(&str, &str, &str, &str); 6] = [
    // Plain: the number is shown (the profile shows whole numbers).
    (
        "<sip:+447700900123@carrier.example>",
        "Privacy: none",
        "X-Form: plain",
        NUMBER,
    ),
    (
        "<sip:+447700900123@carrier.example>",
        "Privacy: id",
        "P-Asserted-Identity: <sip:+447700900123@carrier.example;user=phone>",
        "withheld:+447700900123",
    ),
    (
        "\"Carol\" <sip:+447700900123@carrier.example>",
        "Privacy: user;critical",
        "P-Asserted-Identity: <tel:+447700900123>",
        "withheld:+447700900123",
    ),
    (
        "\"Anonymous\" <sip:anonymous@anonymous.invalid>",
        "X-Form: anonymous-from",
        "P-Asserted-Identity: <sip:+447700900123@carrier.example>",
        "withheld:+447700900123",
    ),
    // A carrier's own word for it, and nothing asserted.
    (
        "<sip:restricted@carrier.example>",
        "X-Form: restricted",
        "X-None: none",
        "withheld",
    ),
    (
        "<sip:+447700900123@carrier.example>",
        "X-Form: rpid",
        "Remote-Party-ID: <sip:+447700900123@carrier.example>;party=calling;privacy=full",
        "withheld:+447700900123",
    ),
];

#[test]
fn a_withheld_caller_is_withheld_everywhere_but_the_auditors_record() {
    let config = common::gateway::config(BASE, 28000, 500, &toml(BASE)).replacen(
        "[admin]\n",
        &format!("[admin]\napprover_group = \"{APPROVER}\"\n"),
        1,
    );
    let gw = Gateway::start_toml("caller-privacy", BASE, BASE + 1, &config);
    let agent = enroll(&gw, "pat", Some("full"));
    let mut phone = softphone(
        &gw,
        &agent,
        "pat",
        &[
            "--auto-answer",
            "--duration",
            "0.5",
            "--calls",
            &FORMS.len().to_string(),
            "--history",
        ],
    );
    gw.expect_metric("tollgate_agents_available", 10, 1.0);
    for (i, (from, privacy, identity, _)) in FORMS.iter().enumerate() {
        let run = sipp(
            &gw,
            "uac_caller_id.xml",
            "02079460000",
            BASE + 10,
            &[
                "-key", "from", from, "-key", "privacy", privacy, "-key", "identity", identity,
                "-m", "1",
            ],
        );
        assert_eq!(
            (run.successful, run.failed),
            (1, 0),
            "form {i}: {}",
            run.output
        );
        // The agent is available again before the next call (after the
        // last, it leaves).
        let until = Instant::now() + Duration::from_secs(10);
        while i + 1 < FORMS.len() && gw.metric("tollgate_agents_available") != 1.0 {
            assert!(
                Instant::now() < until,
                "form {i}: the agent is not available again: {:?}",
                softphone_output(&gw, "pat")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let status = wait_exit(&mut phone, 30);
    let (out, err) = softphone_output(&gw, "pat");
    assert!(status.success(), "{out}\n{err}");
    // What the agent saw, call by call.
    for (i, (_, _, _, sealed)) in FORMS.iter().enumerate() {
        let shown = if sealed.starts_with("withheld") {
            "withheld"
        } else {
            NUMBER
        };
        let line = format!("call {} from {shown}: answered", i + 1);
        assert!(out.contains(&line), "form {i}: no {line:?} in\n{out}");
    }

    // The auditor reads the sealed record: each form as the carrier
    // asserted it, marked; newest first or last, all six are there.
    let data = gw.dir.join("data");
    let (ok, list, err) = operator_cli(&data, "cdr", &["list"]);
    assert!(ok, "{err}");
    let callers: Vec<&str> = list
        .lines()
        .filter(|l| l.contains("inbound"))
        .filter_map(|l| l.split_whitespace().nth(4))
        .collect();
    let mut expected: Vec<&str> = FORMS.iter().map(|f| f.3).collect();
    let mut seen = callers.clone();
    expected.sort_unstable();
    seen.sort_unstable();
    assert_eq!(seen, expected, "{list}");
    // An export (CSV and JSON lines) carries no withheld number: only the
    // plain call's. Filed by root, approved by a second person (needs
    // root to act as them; CI is root).
    if common::pcap::is_root() {
        for format in ["csv", "jsonl"] {
            let (ok, id, err) = operator_cli(
                &data,
                "cdr",
                &["export", "--format", format, "--reason", "privacy test"],
            );
            assert!(ok, "{err}");
            let (ok, out, err) =
                as_user(&gw, 5021, &[APPROVER], &["approvals", "approve", id.trim()]);
            assert!(ok, "{out}{err}");
            let (ok, export, err) =
                operator_cli(&data, "cdr", &["export", "--approval", id.trim()]);
            assert!(ok, "{err}");
            assert_eq!(export.matches("900123").count(), 1, "{format}: {export}");
            assert_eq!(export.matches("withheld").count(), 5, "{format}: {export}");
        }
    } else {
        eprintln!("skipped the export: approving as a second person needs root (CI runs as root)");
    }
    // Nor does the gateway's log.
    let log = gw.log();
    assert!(!log.contains("900123"), "{log}");

    // The agent's own history (asked at the end of its session), newest
    // first, as its profile sees them: withheld stays withheld. The last
    // call's record may still be on its way to the store.
    let history: Vec<&str> = out.lines().filter(|l| l.starts_with("history: ")).collect();
    assert!(history.len() >= FORMS.len() - 1, "{out}");
    let parties: Vec<&str> = history
        .iter()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(
        parties.last(),
        Some(&NUMBER),
        "oldest is the plain call: {out}"
    );
    assert!(
        parties[..parties.len() - 1]
            .iter()
            .all(|p| *p == "withheld"),
        "{out}"
    );
    assert!(history.iter().all(|l| l.contains(" inbound ")), "{out}");
    // Another agent sees none of them.
    let other = enroll(&gw, "sam", Some("full"));
    let mut phone = softphone(&gw, &other, "sam", &["--history"]);
    let status = wait_exit(&mut phone, 30);
    let (out, err) = softphone_output(&gw, "sam");
    assert!(status.success(), "{out}\n{err}");
    assert_eq!(out.trim(), "history: no calls", "{err}");
}

#[test]
fn an_agent_can_withhold_the_call_centres_number_on_its_dial() {
    let base = BASE + 60;
    let gw = Gateway::start_with("caller-withhold", base, 28000, 500, &toml(base));
    let agent = enroll(&gw, "quinn", Some("full"));
    let seen = gw.dir.join("far.log");
    let far = far_end_with("uas_answer.xml", base + 50, &seen, &["-m", "1"]);
    let mut phone = softphone(
        &gw,
        &agent,
        "quinn",
        &["--dial", "02079460000", "--withhold", "--duration", "0.5"],
    );
    let status = wait_exit(&mut phone, 30);
    let far_out = far.wait_with_output().expect("far end ends");
    let (out, err) = softphone_output(&gw, "quinn");
    assert!(status.success(), "{out}\n{err}");
    assert!(
        far_out.status.success(),
        "{}",
        String::from_utf8_lossy(&far_out.stdout)
    );
    let messages = std::fs::read_to_string(&seen).expect("far end's messages");
    let invite = messages
        .split("INVITE sip:")
        .nth(1)
        .expect("an INVITE reached the far end");
    let invite = invite.split("\n\n").next().unwrap_or(invite);
    assert!(invite.contains("Privacy: id"), "{invite}");
    assert!(
        invite.contains("From: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag="),
        "{invite}"
    );
    assert!(
        invite.contains("P-Asserted-Identity: <sip:+442071234567@"),
        "{invite}"
    );
    assert!(!invite.contains("From: <sip:+442071234567"), "{invite}");
}
