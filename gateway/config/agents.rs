//! The agent side of the configuration: the `[agents]` listener, queues
//! of agents, agents' profiles (what they may dial, when, and what they
//! see) and the dial plan for their calls out.

use std::net::SocketAddr;

use serde::Deserialize;

use super::hours::{Hours, HoursFile};
use super::{invalid, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueFile {
    pub name: String,
    #[serde(default)]
    pub profiles: Vec<String>,
    #[serde(default = "default_ring_s")]
    pub ring_s: u64,
}

fn default_ring_s() -> u64 {
    20
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    pub name: String,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub hours: Option<String>,
    #[serde(default)]
    pub days: Vec<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub show_caller: Option<String>,
    #[serde(default)]
    pub caller_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialFile {
    pub prefix: String,
    pub trunk: String,
}

/// `[dialing]`: what an agent's dial does where neither a profile nor the
/// dial plan says.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DialingFile {
    /// `"allow"` (the default): a number no `[[dial]]` prefix covers leaves
    /// by the first trunk that places calls, and an agent enrolled without
    /// a profile may dial any number. `"deny"`: both are refused, so only
    /// numbers a `[[dial]]` entry covers, by agents whose profile allows
    /// them, are ever dialled.
    pub default: String,
}

impl Default for DialingFile {
    fn default() -> Self {
        Self {
            default: "allow".into(),
        }
    }
}

/// Whether `[dialing] default` is "deny".
pub(super) fn validate_dialing(d: &DialingFile) -> Result<bool, ConfigError> {
    match d.default.as_str() {
        "allow" => Ok(false),
        "deny" => Ok(true),
        o => Err(invalid(
            "dialing.default",
            format!("{o:?}: use \"allow\" or \"deny\""),
        )),
    }
}

/// A queue of agents: those enrolled with one of `profiles` (the default
/// queue: those without a profile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub name: String,
    pub profiles: Vec<String>,
    /// How long each agent is offered a call before the next.
    pub ring: std::time::Duration,
}

/// What agents of a profile may dial and see.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    /// Allowed E.164 prefixes (empty: all).
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    /// Calling hours; logins outside them are flagged as anomalies.
    pub open: Hours,
    pub show_caller: bool,
    pub caller_id: Option<String>,
}

/// Why a dial was refused by a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialRefused {
    NotAllowed,
    Denied,
    OutsideHours,
}

impl Profile {
    /// Checks an E.164 number at `now`.
    pub fn check(&self, number: &str, now: jiff::Timestamp) -> Result<(), DialRefused> {
        if self.deny.iter().any(|p| number.starts_with(p.as_str())) {
            return Err(DialRefused::Denied);
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|p| number.starts_with(p.as_str())) {
            return Err(DialRefused::NotAllowed);
        }
        if !self.open.contains(now) {
            return Err(DialRefused::OutsideHours);
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsFile {
    pub listen: String,
    pub address: Option<String>,
    pub max_failures: u32,
    pub lockout_s: u64,
    pub drop_after_ms: u64,
    pub srtp: String,
}

impl Default for AgentsFile {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:4433".into(),
            address: None,
            max_failures: 5,
            lockout_s: 300,
            drop_after_ms: 2000,
            srtp: "AEAD_AES_128_GCM".into(),
        }
    }
}

/// The validated `[agents]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agents {
    pub listen: SocketAddr,
    /// host:port written into bundles.
    pub address: String,
    pub max_failures: u32,
    pub lockout: std::time::Duration,
    pub drop_after: std::time::Duration,
    pub suite: crate::media::srtp::Suite,
}

pub(super) fn validate_profile(
    i: usize,
    p: &ProfileFile,
    seen: &[Profile],
) -> Result<Profile, ConfigError> {
    let at = format!("profile[{i}] {:?}", p.name);
    if p.name.is_empty()
        || p.name.len() > 64
        || !p
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            at,
            "name must be 1 to 64 letters, digits, '-' or '_'",
        ));
    }
    if seen.iter().any(|x| x.name == p.name) {
        return Err(invalid(at, "duplicate profile name"));
    }
    let prefixes = |list: &[String], key: &str| -> Result<Vec<String>, ConfigError> {
        for (j, x) in list.iter().enumerate() {
            if !x.starts_with('+') || !x[1..].bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(
                    format!("{at}: {key}[{j}]"),
                    format!("{x:?} is not an E.164 prefix such as \"+44\""),
                ));
            }
        }
        Ok(list.to_vec())
    };
    let open = Hours::parse(
        &at,
        &HoursFile {
            hours: p.hours.clone(),
            days: p.days.clone(),
            timezone: p.timezone.clone(),
        },
    )?;
    let show_caller = match p.show_caller.as_deref() {
        None | Some("masked") => false,
        Some("full") => true,
        Some(o) => {
            return Err(invalid(
                format!("{at}: show_caller"),
                format!("{o:?}: use masked or full"),
            ))
        }
    };
    if let Some(c) = &p.caller_id {
        if !c.starts_with('+') || c.len() < 4 || !c[1..].bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                format!("{at}: caller_id"),
                "an E.164 number such as \"+442071234567\"",
            ));
        }
    }
    Ok(Profile {
        name: p.name.clone(),
        allow: prefixes(&p.allow, "allow")?,
        deny: prefixes(&p.deny, "deny")?,
        open,
        show_caller,
        caller_id: p.caller_id.clone(),
    })
}

/// `agents.address` until "auto" is resolved.
pub(super) const AUTO: &str = "auto";

pub(super) fn validate_agents(a: &AgentsFile) -> Result<Agents, ConfigError> {
    use crate::media::srtp::Suite;
    let listen: SocketAddr = a.listen.parse().map_err(|_| {
        invalid(
            "agents.listen",
            format!("{:?} is not an address:port", a.listen),
        )
    })?;
    let address = match &a.address {
        // The machine's address, found when the gateway starts
        // (`Config::resolve`): checking a file judges the file alone.
        Some(s) if s == "auto" => AUTO.to_string(),
        Some(s) => {
            let ok = s
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(invalid("agents.address", format!("{s:?} is not host:port")));
            }
            s.clone()
        }
        None if listen.ip().is_unspecified() => {
            return Err(invalid(
                "agents.address",
                "required when listen is 0.0.0.0 or ::",
            ))
        }
        None => listen.to_string(),
    };
    if !(1..=100).contains(&a.max_failures) {
        return Err(invalid("agents.max_failures", "1 to 100"));
    }
    if !(1..=86_400).contains(&a.lockout_s) {
        return Err(invalid("agents.lockout_s", "1 to 86400 seconds"));
    }
    if !(500..=60_000).contains(&a.drop_after_ms) {
        return Err(invalid("agents.drop_after_ms", "500 to 60000 milliseconds"));
    }
    let suite = match a.srtp.as_str() {
        "AEAD_AES_128_GCM" => Suite::AeadAes128Gcm,
        "AEAD_AES_256_GCM" => Suite::AeadAes256Gcm,
        other => {
            return Err(invalid(
                "agents.srtp",
                format!("{other:?}: use AEAD_AES_128_GCM or AEAD_AES_256_GCM"),
            ))
        }
    };
    Ok(Agents {
        listen,
        address,
        max_failures: a.max_failures,
        lockout: std::time::Duration::from_secs(a.lockout_s),
        drop_after: std::time::Duration::from_millis(a.drop_after_ms),
        suite,
    })
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn err(toml: &str) -> String {
        Config::from_toml(toml).expect_err("must fail").to_string()
    }

    #[test]
    fn profiles_check_prefixes_days_and_hours_in_their_time_zone() {
        let c = Config::from_toml(
            r#"
[[profile]]
name = "uk"
allow = ["+44"]
deny = ["+449"]
hours = "09:00-17:30"
days = ["Mon", "Tue", "Wed", "Thu", "Fri"]
timezone = "Europe/London"
"#,
        )
        .expect("valid");
        let p = c.profile("uk").expect("profile");
        // Wednesday 1 July 2026: London is on BST (UTC+1).
        let at = |utc: &str| utc.parse::<jiff::Timestamp>().expect("timestamp");
        let wed_10_local = at("2026-07-01T09:00:00Z");
        assert_eq!(p.check("+442079460000", wed_10_local), Ok(()));
        assert_eq!(
            p.check("+449011234567", wed_10_local),
            Err(DialRefused::Denied)
        );
        assert_eq!(
            p.check("+33142685300", wed_10_local),
            Err(DialRefused::NotAllowed)
        );
        // 08:30 UTC is 09:30 in London in summer (allowed), 08:30 in winter
        // (not yet).
        assert_eq!(p.check("+442079460000", at("2026-07-01T08:30:00Z")), Ok(()));
        assert_eq!(
            p.check("+442079460000", at("2026-01-07T08:30:00Z")),
            Err(DialRefused::OutsideHours)
        );
        // 17:30 local is closed; Saturday is closed.
        assert_eq!(
            p.check("+442079460000", at("2026-07-01T16:30:00Z")),
            Err(DialRefused::OutsideHours)
        );
        assert_eq!(
            p.check("+442079460000", at("2026-07-04T10:00:00Z")),
            Err(DialRefused::OutsideHours)
        );
        for (toml, want) in [
            ("hours = \"17:00-09:00\"", "hours"),
            ("timezone = \"Mars/Olympus\"", "timezone"),
            ("days = [\"Funday\"]", "days"),
            ("allow = [\"44\"]", "allow[0]"),
        ] {
            let e = err(&format!("[[profile]]\nname = \"p\"\n{toml}\n"));
            assert!(e.starts_with(&format!("profile[0] \"p\": {want}")), "{e}");
        }
        let e = err("[[queue]]\nname = \"q\"\nprofiles = [\"nobody\"]\n");
        assert_eq!(e, "queue[0] \"q\": profiles: no profile named \"nobody\"");
        let e = err("[[route]]\nnumber = \"1\"\ntarget = \"queue:none\"\n");
        assert_eq!(e, "route[0] \"1\": target: no queue named \"none\"");
    }
}
