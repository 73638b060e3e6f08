//! The IDS core, sans-IO: every SIP message's source and a few facts in,
//! a verdict out (pass, drop, or ban for a while with a reason). The
//! caller passes `now`, so every rule is tested on a virtual clock.
//!
//! Per source address it keeps token buckets by message class, a request
//! density over a sliding window (the idea of Kamailio's pike: the current
//! window's count plus the previous window's in proportion to how much of
//! it still overlaps), a decaying suspicion score (malformed messages,
//! injection patterns, failed logins), the distinct users it was refused
//! for (extension enumeration), and its ban history. /24 and /64 prefixes
//! get buckets of their own at `prefix_factor` times the rate.
//!
//! Memory is bounded: sources and prefixes live in LRU maps capped at
//! `memory.max_sources`, the least recently seen evicted first. A source
//! costs about 275 bytes with its prefix and the maps' overhead (measured
//! by `benches/ids.rs`), so the default million is about 275 MB at worst.
//!
//! Trusted trunk peers are never banned: what would ban another source
//! only drops their message. They have no flood or prefix limit, and
//! their per-address buckets are `carriers.limit_factor` times larger;
//! over them the verdict is [`Reason::CarrierLimit`], which the caller
//! counts as the carrier alert.
//!
//! Bans live in a map of their own (at most `memory.max_sources` entries),
//! so evicting a quiet source from the LRU never lifts its ban.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use aho_corasick::AhoCorasick;
use ipnet::IpNet;
use lru::LruCache;

use crate::config::rules::{Rate, Rules, MAX_DISTINCT_USERS};

/// Message classes with limits of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Invite = 0,
    Register = 1,
    Options = 2,
    Other = 3,
}

/// What the IDS looks at in a message.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub class: Class,
    pub uri: &'a [u8],
    pub user_agent: Option<&'a [u8]>,
    pub from: Option<&'a [u8]>,
    pub to: Option<&'a [u8]>,
}

/// Why a message was not passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The source is banned.
    Banned,
    Rate,
    PrefixRate,
    Flood,
    Scanner,
    Enumeration,
    BruteForce,
    Malformed,
    Injection,
    /// A trusted trunk peer over its (larger) limits: dropped, not banned.
    CarrierLimit,
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Reason::Banned,
        Reason::Rate,
        Reason::PrefixRate,
        Reason::Flood,
        Reason::Scanner,
        Reason::Enumeration,
        Reason::BruteForce,
        Reason::Malformed,
        Reason::Injection,
        Reason::CarrierLimit,
    ];

    /// A stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Banned => "banned",
            Reason::Rate => "rate",
            Reason::PrefixRate => "prefix_rate",
            Reason::Flood => "flood",
            Reason::Scanner => "scanner",
            Reason::Enumeration => "enumeration",
            Reason::BruteForce => "brute_force",
            Reason::Malformed => "malformed",
            Reason::Injection => "injection",
            Reason::CarrierLimit => "carrier_limit",
        }
    }

    /// The reason a [`Reason::label`] names.
    pub fn from_label(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.label() == s)
    }
}

/// The IDS's decision on one message or event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop(Reason),
    /// Drop this and everything from the source for `duration`.
    Ban {
        reason: Reason,
        duration: Duration,
    },
}

/// Milliseconds since the IDS's epoch (compact, for memory).
type Ms = u64;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f32,
    last: Ms,
}

impl Bucket {
    fn full(r: Rate, factor: f64, now: Ms) -> Self {
        Self {
            tokens: (r.burst * factor) as f32,
            last: now,
        }
    }

    fn take(&mut self, r: Rate, factor: f64, now: Ms) -> bool {
        let elapsed = now.saturating_sub(self.last) as f64 / 1000.0;
        let burst = (r.burst * factor) as f32;
        self.tokens = (self.tokens + (elapsed * r.rate * factor) as f32).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Clone, Debug)]
struct Source {
    buckets: [Bucket; 4],
    window_start: Ms,
    current: u32,
    previous: u32,
    score: f32,
    score_at: Ms,
    users: [u32; MAX_DISTINCT_USERS as usize],
    n_users: u8,
    users_since: Ms,
    offences: u8,
    banned_until: Ms,
    ban_reason: Option<Reason>,
}

impl Source {
    fn new(rules: &Rules, factor: f64, now: Ms) -> Self {
        Self {
            buckets: rules.limits.map(|r| Bucket::full(r, factor, now)),
            window_start: now,
            current: 0,
            previous: 0,
            score: 0.0,
            score_at: now,
            users: [0; MAX_DISTINCT_USERS as usize],
            n_users: 0,
            users_since: now,
            offences: 0,
            banned_until: 0,
            ban_reason: None,
        }
    }
}

/// FNV-1a, for the distinct-users set (collisions only under-count).
fn hash(b: &[u8]) -> u32 {
    b.iter().fold(0x811c_9dc5u32, |h, &x| {
        (h ^ u32::from(x.to_ascii_lowercase())).wrapping_mul(0x0100_0193)
    })
}

/// Patterns scored as injection attempts (matched case-insensitively in
/// the Request-URI, From, To and User-Agent). SIP uses `;`, `,` and `'`
/// legitimately, so only combinations that a number or a name never
/// contains are here.
const INJECTION: &[&str] = &[
    "' or '",
    "\" or \"",
    "' or 1",
    "union select",
    "select *",
    "; drop ",
    "'--",
    "$(",
    "`",
    "&&",
    "||",
    "<script",
    "../",
    "%00",
];

/// The IDS state.
pub struct Ids {
    rules: Rules,
    /// Trunk peer networks in configuration order, and whether each is
    /// trusted: the first that holds an address decides.
    peers: Vec<(IpNet, bool)>,
    epoch: Instant,
    sources: LruCache<IpAddr, Source>,
    prefixes: LruCache<IpNet, [Bucket; 4]>,
    /// Bans in force (and recently expired, until [`Ids::expire`]).
    banned: HashMap<IpAddr, (Ms, Reason)>,
    /// Every pattern in one automaton, so each field is scanned once; the
    /// kinds say which fields a pattern applies to.
    patterns: Option<AhoCorasick>,
    kinds: Vec<Kind>,
}

/// Where a pattern counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    ScanUserAgent,
    ScanFrom,
    ScanTo,
    Injection,
}

/// The fields of a message the IDS scans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Uri,
    UserAgent,
    From,
    To,
}

fn matcher(rules: &Rules) -> (Option<AhoCorasick>, Vec<Kind>) {
    let mut pats: Vec<&[u8]> = Vec::new();
    let mut kinds = Vec::new();
    for (list, kind) in [
        (&rules.scan_user_agent, Kind::ScanUserAgent),
        (&rules.scan_from, Kind::ScanFrom),
        (&rules.scan_to, Kind::ScanTo),
    ] {
        for p in list.iter() {
            pats.push(p);
            kinds.push(kind);
        }
    }
    for p in INJECTION {
        pats.push(p.as_bytes());
        kinds.push(Kind::Injection);
    }
    let ac = aho_corasick::AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .build(&pats)
        .ok();
    (ac, kinds)
}

/// The tracked state of `ip`, made on first sight (with the ban it had if
/// it was evicted while banned). A function of the fields it needs, so
/// the caller keeps the others.
fn entry<'a>(
    sources: &'a mut LruCache<IpAddr, Source>,
    banned: &HashMap<IpAddr, (Ms, Reason)>,
    rules: &Rules,
    ip: IpAddr,
    factor: f64,
    now: Ms,
) -> &'a mut Source {
    sources.get_or_insert_mut(ip, || {
        let mut s = Source::new(rules, factor, now);
        if let Some(&(until, reason)) = banned.get(&ip) {
            s.banned_until = until;
            s.ban_reason = Some(reason);
            s.offences = 1;
        }
        s
    })
}

/// The /24 or /64 holding `ip`.
fn prefix(ip: IpAddr) -> IpNet {
    let len = if ip.is_ipv4() { 24 } else { 64 };
    IpNet::new(ip, len)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| IpNet::from(ip))
}

impl Ids {
    /// An IDS with `rules`; `peers` are the trunks' peer networks in
    /// configuration order, each with whether its trunk is trusted.
    pub fn new(rules: Rules, peers: Vec<(IpNet, bool)>, now: Instant) -> Self {
        let cap = NonZeroUsize::new(rules.max_sources).unwrap_or(NonZeroUsize::MIN);
        let (patterns, kinds) = matcher(&rules);
        Self {
            patterns,
            kinds,
            sources: LruCache::new(cap),
            prefixes: LruCache::new(cap),
            banned: HashMap::new(),
            rules,
            peers,
            epoch: now,
        }
    }

    /// New rules (SIGHUP): tracked sources and bans are kept; their rate
    /// limits are the new ones from now (buckets refill at the rate in
    /// force when taken).
    pub fn set_rules(&mut self, rules: Rules) {
        let cap = NonZeroUsize::new(rules.max_sources).unwrap_or(NonZeroUsize::MIN);
        self.sources.resize(cap);
        self.prefixes.resize(cap);
        (self.patterns, self.kinds) = matcher(&rules);
        self.rules = rules;
    }

    /// New trunk peer networks (a reload), in configuration order (buckets
    /// refill at the rate and trust in force when taken).
    pub fn set_peers(&mut self, peers: Vec<(IpNet, bool)>) {
        self.peers = peers;
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    fn ms(&self, now: Instant) -> Ms {
        now.saturating_duration_since(self.epoch).as_millis() as Ms
    }

    /// Whether `ip` is in a trunk peer's network.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = crate::unmapped(ip);
        self.peers
            .iter()
            .find(|(n, _)| n.contains(&ip))
            .is_some_and(|&(_, trusted)| trusted)
    }

    /// Sources tracked now.
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    fn source(&mut self, ip: IpAddr, now: Ms) -> &mut Source {
        let factor = if self.is_trusted(ip) {
            self.rules.carrier_factor
        } else {
            1.0
        };
        entry(
            &mut self.sources,
            &self.banned,
            &self.rules,
            ip,
            factor,
            now,
        )
    }

    /// Whether `ip` is banned at `now` (and until when).
    pub fn banned_until(&self, ip: IpAddr, now: Instant) -> Option<Instant> {
        let t = self.ms(now);
        let until = self.banned.get(&ip).map(|b| b.0)?;
        (until > t).then(|| self.epoch + Duration::from_millis(until))
    }

    /// Forgets bans that ran out; returns their sources.
    pub fn expire(&mut self, now: Instant) -> Vec<IpAddr> {
        let t = self.ms(now);
        let mut gone = Vec::new();
        self.banned.retain(|ip, (until, _)| {
            let keep = *until > t;
            if !keep {
                gone.push(*ip);
            }
            keep
        });
        gone
    }

    /// Bans in force now.
    pub fn bans_active(&self) -> usize {
        self.banned.len()
    }

    /// Bans `ip` for `reason`, longer for each repeat; a trusted source is
    /// only dropped.
    fn ban(&mut self, ip: IpAddr, reason: Reason, now: Ms) -> Verdict {
        if self.is_trusted(ip) {
            return Verdict::Drop(reason);
        }
        let (first, factor, max) = (
            self.rules.ban_first,
            self.rules.ban_factor,
            self.rules.ban_max,
        );
        let s = self.source(ip, now);
        let mut d = first;
        for _ in 0..s.offences {
            d = d.saturating_mul(factor);
            if d >= max {
                break;
            }
        }
        let d = d.min(max);
        s.offences = s.offences.saturating_add(1);
        let until = now + d.as_millis() as Ms;
        s.banned_until = until;
        s.ban_reason = Some(reason);
        // Bounded: past the cap the ban is still returned (the kernel set
        // holds it), only not enforced in the process.
        if self.banned.len() < self.rules.max_sources || self.banned.contains_key(&ip) {
            self.banned.insert(ip, (until, reason));
        }
        Verdict::Ban {
            reason,
            duration: d,
        }
    }

    /// Adds suspicion points; bans at the threshold. The score decays by
    /// whole seconds, so events close together add up exactly (five
    /// failures of 20 points a millisecond apart reach 100, not 99.99).
    fn score(&mut self, ip: IpAddr, points: f64, reason: Reason, now: Ms) -> Verdict {
        let (decay, threshold) = (self.rules.score_decay, self.rules.score_threshold);
        let s = self.source(ip, now);
        let seconds = now.saturating_sub(s.score_at) / 1000;
        let current = (f64::from(s.score) - seconds as f64 * decay).max(0.0) + points;
        s.score = current as f32;
        s.score_at += seconds * 1000;
        if current >= threshold {
            s.score = 0.0;
            self.ban(ip, reason, now)
        } else {
            Verdict::Pass
        }
    }

    /// A message that parsed: the verdict on it.
    pub fn message(&mut self, ip: IpAddr, f: &Facts<'_>, now: Instant) -> Verdict {
        let t = self.ms(now);
        let trusted = self.is_trusted(ip);
        let (scanner, injected) = self.scan(f);
        if scanner || injected {
            // Rare: the slow path.
            if !trusted && self.is_banned(ip, t) {
                return Verdict::Drop(Reason::Banned);
            }
            if scanner {
                return self.ban(ip, Reason::Scanner, t);
            }
            let points = self.rules.score_injection;
            let v = self.score(ip, points, Reason::Injection, t);
            if v != Verdict::Pass {
                return v;
            }
        }
        let class = f.class as usize;
        let rate = if !trusted && matches!(f.class, Class::Invite) {
            self.rules.untrusted_invite
        } else {
            self.rules.limits[class]
        };
        let (window, max) = (
            self.rules.flood_window.as_millis() as Ms,
            self.rules.flood_max,
        );
        let factor = if trusted {
            self.rules.carrier_factor
        } else {
            1.0
        };
        // One lookup of the source for everything below.
        let s = entry(&mut self.sources, &self.banned, &self.rules, ip, factor, t);
        if trusted {
            // A carrier: its own larger bucket, nothing else.
            return if s.buckets[class].take(rate, factor, t) {
                Verdict::Pass
            } else {
                Verdict::Drop(Reason::CarrierLimit)
            };
        }
        if s.banned_until > t {
            return Verdict::Drop(Reason::Banned);
        }
        // Request density (pike).
        let since = t.saturating_sub(s.window_start);
        if since >= window {
            let windows = since / window;
            s.previous = if windows == 1 { s.current } else { 0 };
            s.current = 0;
            s.window_start += windows * window;
        }
        s.current = s.current.saturating_add(1);
        let overlap = 1.0 - (t - s.window_start) as f64 / window as f64;
        let density = f64::from(s.current) + f64::from(s.previous) * overlap;
        if density > f64::from(max) {
            s.current = 0;
            s.previous = 0;
            return self.ban(ip, Reason::Flood, t);
        }
        if !s.buckets[class].take(rate, 1.0, t) {
            // Over its own limit: a strike, so a flooding source is banned
            // after a few drops rather than leaking a trickle for ever.
            // (Not over its prefix's limit, which its neighbours share.)
            let points = self.rules.score_over_limit;
            return match self.score(ip, points, Reason::Rate, t) {
                Verdict::Pass => Verdict::Drop(Reason::Rate),
                v => v,
            };
        }
        let factor = self.rules.prefix_factor;
        let limits = self.rules.limits;
        let p = self.prefixes.get_or_insert_mut(prefix(ip), || {
            limits.map(|r| Bucket {
                tokens: (r.burst * factor) as f32,
                last: t,
            })
        });
        if !p[class].take(rate, factor, t) {
            return Verdict::Drop(Reason::PrefixRate);
        }
        Verdict::Pass
    }

    /// Whether the message's fields match a scanner signature, and whether
    /// they carry an injection pattern: one automaton pass per field.
    fn scan(&self, f: &Facts<'_>) -> (bool, bool) {
        let (mut scanner, mut injected) = (false, false);
        let Some(ac) = &self.patterns else {
            return (false, false);
        };
        for (field, v) in [
            (Field::Uri, Some(f.uri)),
            (Field::UserAgent, f.user_agent),
            (Field::From, f.from),
            (Field::To, f.to),
        ] {
            let Some(v) = v else { continue };
            for m in ac.find_overlapping_iter(v) {
                match (self.kinds.get(m.pattern().as_usize()), field) {
                    (Some(Kind::ScanUserAgent), Field::UserAgent)
                    | (Some(Kind::ScanFrom), Field::From)
                    | (Some(Kind::ScanTo), Field::To) => scanner = true,
                    (Some(Kind::Injection), _) => injected = true,
                    _ => {}
                }
            }
        }
        (scanner, injected)
    }

    /// Whether `ip` is banned now (for events other than messages).
    fn is_banned(&self, ip: IpAddr, t: Ms) -> bool {
        self.banned.get(&ip).is_some_and(|b| b.0 > t)
    }

    /// A message from `ip` that did not parse (or hit a limit).
    pub fn malformed(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        let t = self.ms(now);
        if self.is_banned(ip, t) {
            return Verdict::Drop(Reason::Banned);
        }
        let points = self.rules.score_malformed;
        self.score(ip, points, Reason::Malformed, t)
    }

    /// A failed digest or agent login from `ip`.
    pub fn auth_failure(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        let t = self.ms(now);
        if self.is_banned(ip, t) {
            return Verdict::Drop(Reason::Banned);
        }
        let points = self.rules.score_auth;
        self.score(ip, points, Reason::BruteForce, t)
    }

    /// The gateway answered 404 or 403 to `ip` for `user`: many distinct
    /// users in the window is an extension scan.
    pub fn refused_user(&mut self, ip: IpAddr, user: &[u8], now: Instant) -> Verdict {
        let t = self.ms(now);
        if self.is_banned(ip, t) {
            return Verdict::Drop(Reason::Banned);
        }
        let (window, limit) = (
            self.rules.enum_window.as_millis() as Ms,
            self.rules.enum_users,
        );
        let h = hash(user);
        let s = self.source(ip, t);
        if t.saturating_sub(s.users_since) >= window {
            s.n_users = 0;
            s.users_since = t;
        }
        let n = usize::from(s.n_users);
        if !s.users[..n].contains(&h) && n < s.users.len() {
            s.users[n] = h;
            s.n_users += 1;
        }
        if u32::from(s.n_users) >= limit {
            s.n_users = 0;
            return self.ban(ip, Reason::Enumeration, t);
        }
        Verdict::Pass
    }

    /// Puts back a ban kept across a restart: `ip` banned for `left` more
    /// (at most the longest ban, in case the clock jumped), as its
    /// `offences`-th offence so a repeat grows from there. A source now
    /// in a trusted trunk is not banned; returns whether it was.
    pub fn restore(
        &mut self,
        ip: IpAddr,
        left: Duration,
        reason: Reason,
        offences: u8,
        now: Instant,
    ) -> bool {
        if self.is_trusted(ip) || left.is_zero() || self.banned.len() >= self.rules.max_sources {
            return false;
        }
        let t = self.ms(now);
        let until = t + left.min(self.rules.ban_max).as_millis() as Ms;
        let s = self.source(ip, t);
        s.banned_until = until;
        s.ban_reason = Some(reason);
        s.offences = offences.max(1);
        self.banned.insert(ip, (until, reason));
        true
    }

    /// How many times `ip` has been banned (while it is remembered).
    pub fn offences(&self, ip: IpAddr) -> u8 {
        self.sources.peek(&ip).map_or(1, |s| s.offences.max(1))
    }

    /// Lifts a ban; false if `ip` was not banned.
    pub fn unban(&mut self, ip: IpAddr, now: Instant) -> bool {
        let t = self.ms(now);
        if let Some(s) = self.sources.peek_mut(&ip) {
            s.banned_until = 0;
        }
        self.banned.remove(&ip).is_some_and(|(until, _)| until > t)
    }

    /// Bans in force: source, until, reason.
    pub fn bans(&self, now: Instant) -> Vec<(IpAddr, Instant, Reason)> {
        let t = self.ms(now);
        self.banned
            .iter()
            .filter(|(_, b)| b.0 > t)
            .map(|(ip, &(until, reason))| (*ip, self.epoch + Duration::from_millis(until), reason))
            .collect()
    }
}

#[cfg(test)]
#[path = "ids_tests.rs"]
mod tests;
