//! The IDS rules (`rulesets/ids.toml`), read into plain structs that
//! reject unknown keys and validated so the IDS never re-checks them.
//! Errors name the key, as the main configuration's do.

use std::time::Duration;

use serde::Deserialize;

/// The rules shipped with Tollgate (`rulesets/ids.toml`).
pub const DEFAULT_IDS_TOML: &str = include_str!("../../rulesets/ids.toml");

/// A token bucket's settings: messages per second and burst.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub rate: f64,
    pub burst: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    invite: Rate,
    register: Rate,
    options: Rate,
    other: Rate,
    prefix_factor: f64,
    /// INVITEs from a source outside trusted trunks (else `invite`).
    #[serde(default)]
    untrusted_invite: Option<Rate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CarriersFile {
    limit_factor: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FloodFile {
    window_ms: u64,
    max_requests: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScannerFile {
    user_agent: Vec<String>,
    from: Vec<String>,
    to: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnumerationFile {
    distinct_users: u32,
    window_s: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreFile {
    malformed: u32,
    injection: u32,
    auth_failure: u32,
    /// An untrusted source's message over its own limit (default 10).
    #[serde(default)]
    over_limit: Option<u32>,
    threshold: u32,
    decay_per_s: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BanFile {
    first_s: u64,
    repeat_factor: u32,
    max_s: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemoryFile {
    max_sources: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    limits: LimitsFile,
    carriers: CarriersFile,
    flood: FloodFile,
    scanner: ScannerFile,
    enumeration: EnumerationFile,
    score: ScoreFile,
    ban: BanFile,
    memory: MemoryFile,
}

/// Most distinct users tracked per source for enumeration.
pub const MAX_DISTINCT_USERS: u32 = 16;

/// Validated rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// By [`super::ids::Class`] index: INVITE, REGISTER, OPTIONS, other.
    pub limits: [Rate; 4],
    /// INVITEs from sources outside trusted trunks.
    pub untrusted_invite: Rate,
    pub prefix_factor: f64,
    /// Trusted trunk peers' limits are `limits` times this.
    pub carrier_factor: f64,
    pub flood_window: Duration,
    pub flood_max: u32,
    /// Lower-cased substrings.
    pub scan_user_agent: Vec<Vec<u8>>,
    pub scan_from: Vec<Vec<u8>>,
    pub scan_to: Vec<Vec<u8>>,
    pub enum_users: u32,
    pub enum_window: Duration,
    pub score_malformed: f64,
    pub score_injection: f64,
    pub score_auth: f64,
    pub score_over_limit: f64,
    pub score_threshold: f64,
    pub score_decay: f64,
    pub ban_first: Duration,
    pub ban_factor: u32,
    pub ban_max: Duration,
    pub max_sources: usize,
}

fn bad(at: &str, what: &str) -> String {
    format!("{at}: {what}")
}

impl Rules {
    /// The shipped rules. They are checked by a unit test; an error here is
    /// a build defect, still reported rather than panicked on.
    pub fn shipped() -> Result<Self, String> {
        Self::from_toml(DEFAULT_IDS_TOML)
    }

    /// Reads and validates a rules document.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let f: RulesFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let rate = |r: Rate, at: &str| -> Result<Rate, String> {
            if !(r.rate > 0.0 && r.rate <= 1e6 && r.burst >= 1.0 && r.burst <= 1e7) {
                return Err(bad(at, "rate must be above 0 and burst at least 1"));
            }
            Ok(r)
        };
        let limits = [
            rate(f.limits.invite, "limits.invite")?,
            rate(f.limits.register, "limits.register")?,
            rate(f.limits.options, "limits.options")?,
            rate(f.limits.other, "limits.other")?,
        ];
        if !(1.0..=1000.0).contains(&f.limits.prefix_factor) {
            return Err(bad("limits.prefix_factor", "1 to 1000"));
        }
        if !(1.0..=100_000.0).contains(&f.carriers.limit_factor) {
            return Err(bad("carriers.limit_factor", "1 to 100000"));
        }
        if !(100..=600_000).contains(&f.flood.window_ms) || f.flood.max_requests == 0 {
            return Err(bad(
                "flood",
                "window_ms 100 to 600000, max_requests at least 1",
            ));
        }
        let lower = |v: &[String], at: &str| -> Result<Vec<Vec<u8>>, String> {
            v.iter()
                .map(|s| {
                    if s.is_empty() || s.len() > 128 {
                        Err(bad(at, "patterns are 1 to 128 characters"))
                    } else {
                        Ok(s.to_ascii_lowercase().into_bytes())
                    }
                })
                .collect()
        };
        if !(2..=MAX_DISTINCT_USERS).contains(&f.enumeration.distinct_users) {
            return Err(bad(
                "enumeration.distinct_users",
                &format!("2 to {MAX_DISTINCT_USERS}"),
            ));
        }
        if !(1..=86_400).contains(&f.enumeration.window_s) {
            return Err(bad("enumeration.window_s", "1 to 86400"));
        }
        if f.score.threshold == 0 || !(f.score.decay_per_s >= 0.0 && f.score.decay_per_s <= 1e6) {
            return Err(bad("score", "threshold at least 1, decay_per_s 0 or more"));
        }
        if f.ban.first_s == 0 || f.ban.repeat_factor == 0 || f.ban.max_s < f.ban.first_s {
            return Err(bad(
                "ban",
                "first_s and repeat_factor at least 1, max_s at least first_s",
            ));
        }
        if !(1_000..=10_000_000).contains(&f.memory.max_sources) {
            return Err(bad("memory.max_sources", "1000 to 10000000"));
        }
        let untrusted_invite = match f.limits.untrusted_invite {
            Some(r) => rate(r, "limits.untrusted_invite")?,
            None => Rate {
                rate: 2.0,
                burst: 8.0,
            },
        };
        Ok(Self {
            limits,
            untrusted_invite,
            prefix_factor: f.limits.prefix_factor,
            carrier_factor: f.carriers.limit_factor,
            flood_window: Duration::from_millis(f.flood.window_ms),
            flood_max: f.flood.max_requests,
            scan_user_agent: lower(&f.scanner.user_agent, "scanner.user_agent")?,
            scan_from: lower(&f.scanner.from, "scanner.from")?,
            scan_to: lower(&f.scanner.to, "scanner.to")?,
            enum_users: f.enumeration.distinct_users,
            enum_window: Duration::from_secs(f.enumeration.window_s),
            score_malformed: f64::from(f.score.malformed),
            score_injection: f64::from(f.score.injection),
            score_auth: f64::from(f.score.auth_failure),
            score_over_limit: f64::from(f.score.over_limit.unwrap_or(10)),
            score_threshold: f64::from(f.score.threshold),
            score_decay: f.score.decay_per_s,
            ban_first: Duration::from_secs(f.ban.first_s),
            ban_factor: f.ban.repeat_factor,
            ban_max: Duration::from_secs(f.ban.max_s),
            max_sources: f.memory.max_sources,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_rules_are_valid_and_errors_name_the_key() {
        let r = Rules::shipped().expect("the shipped rules are valid");
        assert_eq!(
            r.limits[0],
            Rate {
                rate: 20.0,
                burst: 40.0
            }
        );
        assert_eq!(
            r.untrusted_invite,
            Rate {
                rate: 2.0,
                burst: 8.0
            }
        );
        assert_eq!(r.score_over_limit, 10.0);
        assert!(r.scan_user_agent.contains(&b"friendly-scanner".to_vec()));
        let broken = DEFAULT_IDS_TOML.replace("prefix_factor = 4", "prefix_factor = 0");
        assert_eq!(
            Rules::from_toml(&broken).expect_err("invalid"),
            "limits.prefix_factor: 1 to 1000"
        );
        let broken = DEFAULT_IDS_TOML.replace("distinct_users = 10", "distinct_users = 100");
        assert!(Rules::from_toml(&broken)
            .expect_err("invalid")
            .starts_with("enumeration.distinct_users"));
        let e = Rules::from_toml("[limits]\nnope = 1\n").expect_err("unknown key");
        assert!(e.contains("nope"), "{e}");
    }
}
