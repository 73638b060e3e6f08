//! The agents' login guard: per agent, the last TOTP step used and the
//! lockout, changed under one lock and kept on disk.
//!
//! Policy, as a careful SBC would choose it:
//!
//! - Only an agent's own failures count against it, and only once its
//!   certificate has proved which agent it is. Call centres put hundreds
//!   of agents behind one NAT address, so nothing here is keyed by source
//!   address: failures of others (or forged handshakes) from the same
//!   address never lock an enrolled agent out. Handshakes that fail before
//!   a certificate names an agent are counted and audited in aggregate by
//!   the listener; they are never a lockout, and never an IDS ban.
//! - `max_failures` wrong codes in a row lock the agent out for
//!   `lockout_s`; each lockout in a row doubles the next (capped at a
//!   day), and a successful login clears both. Every lockout is counted in
//!   `tollgate_agent_lockouts_total` (alert TollgateAgentLockedOut).
//! - A code works once (RFC 6238 section 5.2): the last step is read,
//!   checked and advanced under the same lock as the failure count, and
//!   written to disk (fsynced, replaced atomically) before the login is
//!   accepted, so neither two parallel logins nor a restart can replay it.
//!   Lockouts in force are kept there too: a restart does not lift them.
//! - The networks each agent logged in from are kept (at most
//!   [`MAX_ADDRESSES`]), so a login from one it never used (a stolen
//!   bundle and code used elsewhere) is reported as an anomaly. Never a
//!   refusal: agents move.
//!
//! Times are Unix seconds passed in by the caller (a lockout must survive a
//! restart, which `Instant` cannot).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::totp;

/// The longest lockout, however often it repeats.
pub const MAX_LOCKOUT_S: u64 = 24 * 3600;

/// Seconds from `now` to `until`, at most [`MAX_LOCKOUT_S`] (a clock set
/// back cannot make a lockout longer).
fn left(until: u64, now: u64) -> u64 {
    until.saturating_sub(now).min(MAX_LOCKOUT_S)
}

/// One agent's login state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct AgentLogin {
    /// The last TOTP step a login used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_step: Option<u64>,
    /// Lockouts in a row (each doubles the next).
    #[serde(default)]
    lockouts: u32,
    /// Locked out until this Unix second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    locked_until: Option<u64>,
    /// Wrong codes since the last lockout or success (memory only).
    #[serde(skip)]
    failures: u32,
    /// Networks it logged in from (an IPv4 address, an IPv6 /64), least
    /// recently used first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    addresses: Vec<String>,
}

/// The most networks kept per agent (the least recently used goes).
pub const MAX_ADDRESSES: usize = 32;

/// Where a login came from, as the guard remembers it: an IPv4 address,
/// or an IPv6 /64 (a host picks new addresses in its /64 all the time).
fn network(source: std::net::IpAddr) -> String {
    match source {
        std::net::IpAddr::V4(a) => a.to_string(),
        std::net::IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = a.segments();
                let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{net}/64")
            }
        },
    }
}

/// Whether a login's address was one its agent had used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// Used before.
    Known,
    /// The agent's first login: nothing to compare with.
    First,
    /// Never used before, by an agent that has logged in from elsewhere.
    New(String),
}

/// What the login state file says of one agent, for reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// When it last logged in (Unix seconds, to the TOTP step).
    pub last_login_s: Option<u64>,
    /// Locked out at the time asked about.
    pub locked: bool,
}

/// The login state's file name, in the agents' directory.
pub const FILE: &str = "logins.json";

/// Every agent's [`Seen`] from the state file at `path` at `now` (Unix
/// seconds); empty when there is none yet.
pub fn seen(path: &std::path::Path, now: u64) -> Result<HashMap<String, Seen>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let agents: HashMap<String, AgentLogin> = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: unreadable ({e})", path.display()))?;
    Ok(agents
        .into_iter()
        .map(|(name, a)| {
            let seen = Seen {
                last_login_s: a.last_step.map(|s| s.saturating_mul(totp::STEP)),
                locked: a.locked_until.is_some_and(|u| u > now),
            };
            (name, seen)
        })
        .collect())
}

/// Why a login was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Locked out for this many more seconds; the code was not checked.
    Locked { secs_left: u64 },
    /// The code was wrong (or used already); `locked_for` is the lockout
    /// this failure started, if it started one.
    BadCode { locked_for: Option<u64> },
}

/// Every agent's login state, and where it is kept.
pub struct Logins {
    path: Option<PathBuf>,
    max_failures: u32,
    lockout_s: u64,
    agents: Mutex<HashMap<String, AgentLogin>>,
}

impl Logins {
    /// The state kept in `path` (read now; a missing file is a fresh
    /// start, an unreadable one is logged and replaced at the next change).
    pub fn open(path: PathBuf, max_failures: u32, lockout_s: u64) -> Self {
        let agents = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                warn!(path = %path.display(), "agent login state unreadable ({e}); starting afresh");
                HashMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => {
                warn!(path = %path.display(), "agent login state unreadable ({e}); starting afresh");
                HashMap::new()
            }
        };
        Self {
            path: Some(path),
            max_failures: max_failures.max(1),
            lockout_s,
            agents: Mutex::new(agents),
        }
    }

    /// State in memory only (tests).
    pub fn in_memory(max_failures: u32, lockout_s: u64) -> Self {
        Self {
            path: None,
            max_failures: max_failures.max(1),
            lockout_s,
            agents: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, AgentLogin>> {
        // Every change is whole before the guard drops, so a poisoned lock
        // still holds consistent state.
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds `agent` stays locked out at `now`, if it is.
    pub fn locked(&self, agent: &str, now: u64) -> Option<u64> {
        self.lock()
            .get(agent)
            .and_then(|a| a.locked_until)
            .filter(|&until| until > now)
            .map(|until| left(until, now))
    }

    /// Checks a login of `agent` at `now`: `verify` gets the last step
    /// used and returns the step the code matched (after it), or `None`.
    /// All under one lock; a success is on disk before it is returned.
    pub fn check(
        &self,
        agent: &str,
        now: u64,
        verify: impl FnOnce(Option<u64>) -> Option<u64>,
    ) -> Result<u64, Refused> {
        let mut agents = self.lock();
        let a = agents.entry(agent.to_string()).or_default();
        if let Some(until) = a.locked_until {
            if until > now {
                return Err(Refused::Locked {
                    secs_left: left(until, now),
                });
            }
        }
        // A step from the future means the clock was set back after
        // running ahead: every code now would look used. It is forgotten
        // (the codes of those future steps only work at their own time).
        let current = now / totp::STEP;
        if a.last_step.is_some_and(|l| l > current + totp::SKEW) {
            warn!(
                agent,
                "the last code used is from a later time: the clock was set back; forgetting it"
            );
            a.last_step = None;
        }
        match verify(a.last_step) {
            Some(step) if a.last_step.is_none_or(|l| step > l) => {
                a.last_step = Some(step);
                a.failures = 0;
                a.lockouts = 0;
                a.locked_until = None;
                self.save(&agents);
                Ok(step)
            }
            _ => {
                a.failures += 1;
                if a.failures < self.max_failures {
                    return Err(Refused::BadCode { locked_for: None });
                }
                a.failures = 0;
                a.lockouts = a.lockouts.saturating_add(1);
                let secs = self
                    .lockout_s
                    .saturating_mul(1u64 << (a.lockouts - 1).min(32))
                    .min(MAX_LOCKOUT_S);
                a.locked_until = Some(now.saturating_add(secs));
                self.save(&agents);
                Err(Refused::BadCode {
                    locked_for: Some(secs),
                })
            }
        }
    }

    /// Notes that `agent` logged in from `source`; kept on disk when it
    /// is new.
    pub fn address(&self, agent: &str, source: std::net::IpAddr) -> Address {
        let net = network(source);
        let mut agents = self.lock();
        let a = agents.entry(agent.to_string()).or_default();
        if let Some(i) = a.addresses.iter().position(|x| *x == net) {
            let known = a.addresses.remove(i);
            a.addresses.push(known);
            return Address::Known;
        }
        let first = a.addresses.is_empty();
        if a.addresses.len() >= MAX_ADDRESSES {
            a.addresses.remove(0);
        }
        a.addresses.push(net.clone());
        self.save(&agents);
        if first {
            Address::First
        } else {
            Address::New(net)
        }
    }

    /// Writes the state (only what must survive: steps and lockouts).
    fn save(&self, agents: &HashMap<String, AgentLogin>) {
        let Some(path) = &self.path else { return };
        let bytes = serde_json::to_vec(agents).unwrap_or_default();
        if let Err(e) = crate::keys::write_private(path, &bytes, true) {
            // A login is not refused for it: the state in memory still
            // refuses a reused code and keeps the lockout until a restart.
            warn!(path = %path.display(), "agent login state not saved: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn lockouts_are_per_agent_and_double_with_each_repeat() {
        let l = Logins::in_memory(3, 60);
        let bad = |_| None;
        let t = 1_000_000;
        assert_eq!(
            l.check("bob", t, bad),
            Err(Refused::BadCode { locked_for: None })
        );
        assert_eq!(
            l.check("bob", t, bad),
            Err(Refused::BadCode { locked_for: None })
        );
        assert_eq!(
            l.check("bob", t, bad),
            Err(Refused::BadCode {
                locked_for: Some(60)
            })
        );
        // Locked: even the right code is not looked at.
        assert_eq!(
            l.check("bob", t + 10, |_| Some(99)),
            Err(Refused::Locked { secs_left: 50 })
        );
        assert_eq!(l.locked("bob", t + 10), Some(50));
        // Another agent is untouched.
        assert_eq!(l.locked("alice", t), None);
        assert_eq!(l.check("alice", t, |_| Some(5)), Ok(5));
        // The second lockout in a row is twice as long, the third four times.
        for (n, want) in [(1u64, 120u64), (2, 240)] {
            let at = t + 60 * 1000 * n;
            assert!(l.check("bob", at, bad).is_err());
            assert!(l.check("bob", at, bad).is_err());
            assert_eq!(
                l.check("bob", at, bad),
                Err(Refused::BadCode {
                    locked_for: Some(want)
                })
            );
        }
        // Capped at a day.
        let l = Logins::in_memory(1, 3600);
        let mut last = 0;
        for i in 0..10 {
            if let Err(Refused::BadCode {
                locked_for: Some(s),
            }) = l.check("c", i * 100_000, bad)
            {
                last = s;
            }
        }
        assert_eq!(last, MAX_LOCKOUT_S);
        // A success clears the run.
        assert_eq!(l.check("c", 2_000_000, |_| Some(7)), Ok(7));
        assert_eq!(
            l.check("c", 2_000_000, bad),
            Err(Refused::BadCode {
                locked_for: Some(3600)
            })
        );
    }

    /// A clock that ran ahead and was set back neither refuses every code
    /// (a used step from the future is forgotten) nor stretches a lockout
    /// past a day.
    #[test]
    fn a_clock_set_back_locks_nobody_out_for_longer() {
        let l = Logins::in_memory(1, 60);
        let ahead = 10_000 * totp::STEP;
        assert_eq!(l.check("a", ahead, |_| Some(10_000)), Ok(10_000));
        let now = 100 * totp::STEP;
        assert_eq!(
            l.check("a", now, |last| last.is_none_or(|s| 100 > s).then_some(100)),
            Ok(100)
        );
        assert!(l.check("b", ahead, |_| None).is_err());
        assert_eq!(l.locked("b", now), Some(MAX_LOCKOUT_S));
    }

    #[test]
    fn a_code_works_once_even_in_parallel_and_after_a_restart() {
        let dir = std::env::temp_dir().join(format!("tollgate-logins-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(FILE);
        let _ = std::fs::remove_file(&path);
        let l = Arc::new(Logins::open(path.clone(), 10, 60));
        // Eight logins at once with the code of step 42 (at 1260 s): exactly
        // one in.
        let wins: usize = (0..8)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    l.check("alice", 1260, |last| {
                        // A verifier as totp::verify: refuses steps at or
                        // before the last used.
                        std::thread::yield_now();
                        last.is_none_or(|s| 42 > s).then_some(42)
                    })
                    .is_ok()
                })
            })
            .map(|h| usize::from(h.join().expect("thread")))
            .sum();
        assert_eq!(wins, 1);
        // The step and a lockout survive a restart.
        let bad = |_| None;
        for _ in 0..10 {
            let _ = l.check("bob", 1260, bad);
        }
        drop(l);
        let again = Logins::open(path.clone(), 10, 60);
        assert_eq!(again.locked("bob", 1270), Some(50));
        assert_eq!(
            again.check("alice", 1261, |last| last
                .is_none_or(|s| 42 > s)
                .then_some(42)),
            Err(Refused::BadCode { locked_for: None })
        );
        assert_eq!(again.check("alice", 1290, |_| Some(43)), Ok(43));
        let text = std::fs::read_to_string(&path).expect("state file");
        assert!(!text.contains("failures"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_login_from_a_network_never_used_is_new_and_remembered_across_restarts() {
        let dir = std::env::temp_dir().join(format!("tollgate-addresses-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(FILE);
        let _ = std::fs::remove_file(&path);
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("address");
        let l = Logins::open(path.clone(), 10, 60);
        assert_eq!(l.address("alice", ip("192.0.2.10")), Address::First);
        assert_eq!(l.address("alice", ip("192.0.2.10")), Address::Known);
        // Another agent's address is not alice's.
        assert_eq!(l.address("bob", ip("198.51.100.7")), Address::First);
        assert_eq!(
            l.address("alice", ip("198.51.100.7")),
            Address::New("198.51.100.7".into())
        );
        // An IPv6 host is known by its /64.
        assert_eq!(
            l.address("alice", ip("2001:db8:1:2::10")),
            Address::New("2001:db8:1:2::/64".into())
        );
        assert_eq!(
            l.address("alice", ip("2001:db8:1:2:aaaa::1")),
            Address::Known
        );
        drop(l);
        let l = Logins::open(path.clone(), 10, 60);
        assert_eq!(l.address("alice", ip("198.51.100.7")), Address::Known);
        // Bounded: the least recently used goes first.
        for i in 0..MAX_ADDRESSES {
            l.address("carol", ip(&format!("10.0.0.{i}")));
        }
        l.address("carol", ip("10.0.0.0"));
        l.address("carol", ip("10.1.0.0"));
        assert_eq!(l.address("carol", ip("10.0.0.0")), Address::Known);
        assert_eq!(
            l.address("carol", ip("10.0.0.1")),
            Address::New("10.0.0.1".into())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
