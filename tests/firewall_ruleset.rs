//! The firewall ruleset (`rulesets/tollgate.nft`) against the real nft: it
//! passes `nft -c`, a broken copy does not, and it loads in a network
//! namespace the test creates (and removes), where its sets take elements
//! with timeouts. Needs root (CI is root); skipped otherwise.

mod common;

use common::netns::{run, Netns};
use common::pcap::is_root;

const RULESET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rulesets/tollgate.nft");

#[test]
fn the_ruleset_checks_loads_and_takes_timed_bans() {
    if !is_root() {
        eprintln!("skipped: nft needs root (CI runs as root)");
        return;
    }
    let (ok, out) = run(&["nft", "-c", "-f", RULESET]);
    assert!(ok, "nft -c rejects the ruleset: {out}");
    // As the gateway renders it with other ports, too.
    let rendered =
        std::env::temp_dir().join(format!("tollgate-rendered-{}.nft", std::process::id()));
    std::fs::write(
        &rendered,
        tollgate::guard::nft::render(&tollgate::guard::nft::Ports {
            sip: vec![5070, 5071],
            rtp: (30000, 30999),
            quic: 4500,
            admin: 9200,
        }),
    )
    .expect("write");
    let (ok, out) = run(&["nft", "-c", "-f", rendered.to_str().expect("utf8")]);
    let _ = std::fs::remove_file(&rendered);
    assert!(ok, "nft -c rejects the rendered ruleset: {out}");

    // The check can fail: a rule naming a set that does not exist.
    let broken = std::env::temp_dir().join(format!("tollgate-broken-{}.nft", std::process::id()));
    let text = std::fs::read_to_string(RULESET).expect("ruleset");
    std::fs::write(&broken, text.replace("@trunk_v4", "@no_such_set")).expect("write");
    let (ok, _) = run(&["nft", "-c", "-f", broken.to_str().expect("utf8")]);
    let _ = std::fs::remove_file(&broken);
    assert!(!ok, "nft -c accepted a rule on a missing set");

    let ns = Netns::new("fw");
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
