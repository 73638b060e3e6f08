//! Working hours: the days and times, in a time zone, when something is
//! expected to happen. Agents' profiles use them for calling hours and
//! logins; `[admin.hours.<role>]` for operators' reads of customer data.
//!
//! ```toml
//! hours = "08:00-18:00"          # [start, end) local time; absent: all day
//! days = ["Mon", "Tue", "Wed", "Thu", "Fri"]   # absent: every day
//! timezone = "Europe/London"     # absent: UTC
//! ```

use serde::Deserialize;

use super::{invalid, ConfigError};

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Working hours as the configuration writes them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoursFile {
    #[serde(default)]
    pub hours: Option<String>,
    #[serde(default)]
    pub days: Vec<String>,
    #[serde(default)]
    pub timezone: Option<String>,
}

/// Working hours, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Hours {
    /// Minutes after local midnight, [start, end); `None`: all day.
    pub hours: Option<(u16, u16)>,
    /// Weekdays, Monday = 0; empty: every day.
    pub days: Vec<u8>,
    pub timezone: jiff::tz::TimeZone,
}

impl Default for Hours {
    /// Always.
    fn default() -> Self {
        Self {
            hours: None,
            days: Vec::new(),
            timezone: jiff::tz::TimeZone::UTC,
        }
    }
}

impl Hours {
    /// Checks `f`; problems are named under `at` (`at: hours`, ...).
    pub fn parse(at: &str, f: &HoursFile) -> Result<Self, ConfigError> {
        let hours = match &f.hours {
            None => None,
            Some(h) => {
                let hm = |s: &str| -> Option<u16> {
                    let (a, b) = s.trim().split_once(':')?;
                    let (a, b): (u16, u16) = (a.parse().ok()?, b.parse().ok()?);
                    (a <= 24 && b < 60 && a * 60 + b <= 1440).then_some(a * 60 + b)
                };
                let parsed = h
                    .split_once('-')
                    .and_then(|(a, b)| Some((hm(a)?, hm(b)?)))
                    .filter(|(a, b)| a < b);
                Some(parsed.ok_or_else(|| {
                    invalid(
                        format!("{at}: hours"),
                        format!("{h:?}: use \"HH:MM-HH:MM\", start before end"),
                    )
                })?)
            }
        };
        let days = f
            .days
            .iter()
            .map(|d| {
                DAYS.iter()
                    .position(|x| x.eq_ignore_ascii_case(d))
                    .map(|n| n as u8)
                    .ok_or_else(|| {
                        invalid(format!("{at}: days"), format!("{d:?}: use Mon ... Sun"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tz_name = f.timezone.as_deref().unwrap_or("UTC");
        let timezone = jiff::tz::TimeZone::get(tz_name).map_err(|_| {
            invalid(
                format!("{at}: timezone"),
                format!("{tz_name:?} is not a known time zone"),
            )
        })?;
        Ok(Self {
            hours,
            days,
            timezone,
        })
    }

    /// Whether `now` is within them.
    pub fn contains(&self, now: jiff::Timestamp) -> bool {
        let local = now.to_zoned(self.timezone.clone());
        let day = local.weekday().to_monday_zero_offset() as u8;
        if !self.days.is_empty() && !self.days.contains(&day) {
            return false;
        }
        match self.hours {
            Some((start, end)) => {
                let minute = local.hour() as u16 * 60 + local.minute() as u16;
                (start..end).contains(&minute)
            }
            None => true,
        }
    }

    /// Whether they are every day, all day.
    pub fn always(&self) -> bool {
        self.hours.is_none() && self.days.is_empty()
    }
}

impl std::fmt::Display for Hours {
    /// `Mon,Tue 08:00-18:00 Europe/London`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.days.is_empty() {
            f.write_str("every day")?;
        } else {
            let days: Vec<&str> = self
                .days
                .iter()
                .map(|d| DAYS[usize::from(*d) % 7])
                .collect();
            f.write_str(&days.join(","))?;
        }
        match self.hours {
            Some((a, b)) => write!(
                f,
                " {:02}:{:02}-{:02}:{:02}",
                a / 60,
                a % 60,
                b / 60,
                b % 60
            )?,
            None => f.write_str(" all day")?,
        }
        write!(f, " {}", self.timezone.iana_name().unwrap_or("UTC"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_hold_in_their_time_zone_and_print_as_configured() {
        let f = HoursFile {
            hours: Some("08:00-18:00".into()),
            days: vec!["mon".into(), "Fri".into()],
            timezone: Some("Asia/Shanghai".into()),
        };
        let h = Hours::parse("x", &f).expect("valid");
        let at = |utc: &str| utc.parse::<jiff::Timestamp>().expect("timestamp");
        // Monday 7 December 2026, 09:00 in Shanghai is 01:00 UTC.
        assert!(h.contains(at("2026-12-07T01:00:00Z")));
        // 18:00 there is closed; so is Tuesday.
        assert!(!h.contains(at("2026-12-07T10:00:00Z")));
        assert!(!h.contains(at("2026-12-08T01:00:00Z")));
        // Sunday 23:30 UTC is Monday 07:30 there: not yet.
        assert!(!h.contains(at("2026-12-06T23:30:00Z")));
        assert_eq!(h.to_string(), "Mon,Fri 08:00-18:00 Asia/Shanghai");
        assert!(!h.always() && Hours::default().always());
        assert!(Hours::default().contains(at("2026-12-06T23:30:00Z")));
    }
}
