//! The firewall ruleset (`rulesets/tollgate.nft`) against the real nft: it
//! passes `nft -c`, a broken copy does not, and it loads in a network
//! namespace the test creates (and removes), where its sets take elements
//! with timeouts. Needs root (CI is root); skipped otherwise.

use crate::common::netns::{run, Netns};
use crate::common::pcap::is_root;

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

/// Fills the loaded table's sets from `toml` as the gateway does (the
/// JSON batch through `nft -j -f`).
fn fill(ns: &Netns, toml: &str) -> (bool, String) {
    let config = tollgate::config::Config::from_toml(toml).expect("config");
    let json = serde_json::to_string(&tollgate::guard::nft::fill_sets(&config)).expect("nft json");
    let path = std::env::temp_dir().join(format!("tollgate-fill-{}.json", std::process::id()));
    std::fs::write(&path, json).expect("write");
    let out = ns.nft(&["-j", "-f", path.to_str().expect("utf8")]);
    let _ = std::fs::remove_file(&path);
    out
}

/// Whether `addr` is in the named set.
fn holds(ns: &Netns, set: &str, addr: &str) -> bool {
    ns.nft(&[
        "get",
        "element",
        "inet",
        "tollgate",
        set,
        &format!("{{ {addr} }}"),
    ])
    .0
}

#[test]
fn overlapping_nested_identical_and_adjacent_trunk_networks_all_load() {
    if !is_root() {
        eprintln!("skipped: nft needs root (CI runs as root)");
        return;
    }
    let ns = Netns::new("fwmerge");
    let (ok, out) = ns.nft(&["-f", RULESET]);
    assert!(ok, "loading the ruleset: {out}");

    // The documented case: a trunk open to the internet beside a
    // carrier's /32 (and its /24), for both families.
    let open = r#"
[[trunk]]
name = "carrier"
peers = ["203.0.113.7/32", "203.0.113.0/24", "2001:db8:5::7"]
[[trunk]]
name = "internet"
peers = ["0.0.0.0/0", "::/0"]
trusted = false
"#;
    let (ok, out) = fill(&ns, open);
    assert!(ok, "an internet-open trunk beside a carrier: {out}");
    for (set, addr) in [
        ("trunk_v4", "203.0.113.7"),
        ("trunk_v4", "198.51.100.1"),
        ("trunk_v6", "2001:db8:5::7"),
        ("trunk_v6", "2001:db8:ffff::1"),
    ] {
        assert!(holds(&ns, set, addr), "{set} lacks {addr}");
    }

    // Nested, identical and adjacent networks, no catch-all; the same
    // network as an IPv4-mapped IPv6 address, and admin networks that
    // nest too.
    let nested = r#"
[[trunk]]
name = "a"
peers = ["198.51.100.0/24", "198.51.100.128/25", "198.51.100.9", "2001:db8::/32", "2001:db8:1::/48"]
[[trunk]]
name = "b"
peers = ["198.51.100.0/24", "192.0.2.0/25", "2001:db8::/32", "2001:db9::5", "::ffff:192.0.2.200"]
[[trunk]]
name = "c"
peers = ["192.0.2.128/25", "2001:db9::5"]
[firewall]
admin_networks = ["10.0.0.0/8", "10.1.2.0/24", "10.1.2.3", "fd00::/8", "fd00::1"]
"#;
    let (ok, out) = fill(&ns, nested);
    assert!(ok, "nested, identical and adjacent networks: {out}");
    for (set, addr, want) in [
        ("trunk_v4", "198.51.100.200", true),
        ("trunk_v4", "192.0.2.1", true),
        ("trunk_v4", "192.0.2.200", true),
        ("trunk_v4", "203.0.113.7", false),
        ("trunk_v6", "2001:db8:1::1", true),
        ("trunk_v6", "2001:db9::5", true),
        ("trunk_v6", "2001:db9::6", false),
        ("admin_v4", "10.1.2.3", true),
        ("admin_v4", "11.0.0.1", false),
        ("admin_v6", "fd00::1", true),
    ] {
        assert_eq!(holds(&ns, set, addr), want, "{set} and {addr}");
    }
    // The refill replaced the first fill: the catch-all is gone.
    let (_, listing) = ns.nft(&["list", "set", "inet", "tollgate", "trunk_v4"]);
    assert!(!listing.contains("0.0.0.0/0"), "{listing}");
    assert!(
        listing.contains("192.0.2.0/24"),
        "adjacent /25s merge: {listing}"
    );
}
