//! Network namespaces for tests that need real networking as root: made
//! by the test, joined by veth pairs, and deleted (with their veths) when
//! dropped. Names carry the test's process id so parallel runs never meet.

use std::process::Command;

/// Runs `args` (program first): (success, stdout + stderr). Panics only
/// when the program cannot be started (scripts/deps installs iproute2
/// and nftables).
pub fn run(args: &[&str]) -> (bool, String) {
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

/// A network namespace with its loopback up, deleted when dropped.
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!("tg-{tag}-{}", std::process::id());
        let _ = run(&["ip", "netns", "del", &name]);
        let (ok, out) = run(&["ip", "netns", "add", &name]);
        assert!(ok, "ip netns add {name}: {out}");
        let ns = Self(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }

    /// `ip -n NS ARGS`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["ip", "-n", &self.0];
        all.extend(args);
        let (ok, out) = run(&all);
        assert!(ok, "{all:?}: {out}");
    }

    /// `nft ARGS` inside the namespace.
    pub fn nft(&self, args: &[&str]) -> (bool, String) {
        let mut all = vec!["ip", "netns", "exec", &self.0, "nft"];
        all.extend(args);
        run(&all)
    }

    /// Joins this namespace (address `mine`, CIDR) to `other` (`theirs`)
    /// with a veth pair named after `tag` (at most 11 characters).
    pub fn link(&self, mine: &str, other: &Netns, theirs: &str, tag: &str) {
        let (a, b) = (format!("{tag}a"), format!("{tag}b"));
        let (ok, out) = run(&[
            "ip", "link", "add", &a, "netns", &self.0, "type", "veth", "peer", "name", &b, "netns",
            &other.0,
        ]);
        assert!(ok, "veth {a}/{b}: {out}");
        self.ip(&["addr", "add", mine, "dev", &a]);
        self.ip(&["link", "set", &a, "up"]);
        other.ip(&["addr", "add", theirs, "dev", &b]);
        other.ip(&["link", "set", &b, "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.0]);
    }
}
