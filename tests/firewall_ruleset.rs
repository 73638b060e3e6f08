//! The firewall ruleset (`rulesets/tollgate.nft`) against the real nft: it
//! passes `nft -c`, a broken copy does not, and it loads in a network
//! namespace the test creates (and removes), where its sets take elements
//! with timeouts. Needs root (CI is root); skipped otherwise.

use std::process::Command;

const RULESET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rulesets/tollgate.nft");

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} runs (scripts/deps installs nftables and iproute2): {e}",
                args[0]
            )
        });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A network namespace, removed when dropped.
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Self {
        let (ok, out) = run(&["ip", "netns", "add", name]);
        assert!(ok, "ip netns add: {out}");
        Self(name.to_string())
    }

    fn nft(&self, args: &[&str]) -> (bool, String) {
        let mut all = vec!["ip", "netns", "exec", &self.0, "nft"];
        all.extend(args);
        run(&all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.0]);
    }
}

#[test]
fn the_ruleset_checks_loads_and_takes_timed_bans() {
    if !is_root() {
        eprintln!("skipped: nft needs root (CI runs as root)");
        return;
    }
    let (ok, out) = run(&["nft", "-c", "-f", RULESET]);
    assert!(ok, "nft -c rejects the ruleset: {out}");

    // The check can fail: a rule naming a set that does not exist.
    let broken = std::env::temp_dir().join(format!("tollgate-broken-{}.nft", std::process::id()));
    let text = std::fs::read_to_string(RULESET).expect("ruleset");
    std::fs::write(&broken, text.replace("@trunk_v4", "@no_such_set")).expect("write");
    let (ok, _) = run(&["nft", "-c", "-f", broken.to_str().expect("utf8")]);
    let _ = std::fs::remove_file(&broken);
    assert!(!ok, "nft -c accepted a rule on a missing set");

    let ns = Netns::new(&format!("tollgate-fw-{}", std::process::id()));
    let (ok, out) = ns.nft(&["-f", RULESET]);
    assert!(ok, "loading the ruleset: {out}");
    let (ok, listing) = ns.nft(&["list", "table", "inet", "tollgate"]);
    assert!(ok, "{listing}");
    for want in [
        "set banned_v4",
        "set trunk_v6",
        "chain input",
        "hook input",
        "udp dport 4433",
        "comment \"sip from elsewhere\"",
    ] {
        assert!(listing.contains(want), "missing {want:?} in:\n{listing}");
    }
    // Every rule counts what it matches.
    let rules = listing.lines().filter(|l| l.contains("comment")).count();
    let counted = listing
        .lines()
        .filter(|l| l.contains("comment") && l.contains("counter packets"))
        .count();
    assert!(
        rules >= 15 && counted == rules,
        "{counted} of {rules} rules count:\n{listing}"
    );

    let (ok, out) = ns.nft(&[
        "add",
        "element",
        "inet",
        "tollgate",
        "banned_v4",
        "{ 192.0.2.66 timeout 30s }",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = ns.nft(&[
        "add",
        "element",
        "inet",
        "tollgate",
        "trunk_v4",
        "{ 203.0.113.0/24 }",
    ]);
    assert!(ok, "{out}");
    let (_, listing) = ns.nft(&["list", "set", "inet", "tollgate", "banned_v4"]);
    assert!(
        listing.contains("192.0.2.66 timeout 30s expires"),
        "{listing}"
    );
    // Deleting the table removes all of it, and only it.
    let (ok, out) = ns.nft(&["delete", "table", "inet", "tollgate"]);
    assert!(ok, "{out}");
    let (_, rest) = ns.nft(&["list", "ruleset"]);
    assert!(!rest.contains("tollgate"), "{rest}");
}
