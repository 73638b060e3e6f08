//! The guard: what keeps floods, scanners and brute force from costing
//! the gateway anything, without ever banning a configured carrier.
//!
//! - `config::rules`: the IDS rules (`rulesets/ids.toml`), validated, a
//!   configuration document like the main file;
//! - [`ids`]: the IDS core, sans-IO: facts of a message in, a verdict out;
//! - [`Guard`]: the IDS as the call core uses it: every SIP message
//!   through it, verdicts counted, bans pushed to the firewall (whose table
//!   lets the agents' QUIC port through before the bans: a forged SIP flood
//!   must not cut off an office's agents) and kept across restarts;
//! - [`nft`]: the kernel side, Tollgate's nftables table.
//!
//! The firewall table itself is `rulesets/tollgate.nft`.

pub mod ids;
pub mod nft;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use tracing::{info, warn};

use crate::config::Config;
use crate::sip::header::Method;
use crate::sip::message::{HeaderName, Message, StartLine};
use crate::telemetry::metrics::Metrics;
use ids::{Class, Facts, Ids, Reason, Verdict};

/// One ban, as `tollgate firewall bans` shows it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct BanInfo {
    pub source: IpAddr,
    pub reason: String,
    /// Seconds left.
    pub remaining_s: u64,
    /// When it ends, Unix milliseconds.
    pub until_unix_ms: u64,
}

/// A ban as kept on disk (`bans.json` in the data directory), so a
/// restart does not free every banned source.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
struct SavedBan {
    source: IpAddr,
    reason: String,
    until_unix_ms: u64,
    offences: u8,
}

/// How often changed bans are written at most.
const BAN_SAVE_EVERY: Duration = Duration::from_secs(5);
/// Most bans kept across a restart (the kernel set holds the rest until
/// they expire or the table is reloaded).
const MAX_SAVED_BANS: usize = 65_536;

/// Where bans are kept: a thread writes the latest list handed to it
/// (the call core never waits for the disk; a list not yet written is
/// replaced by a newer one).
struct BanFile {
    /// When a list was last handed over.
    saved_at: Option<Instant>,
    tx: std::sync::mpsc::SyncSender<Vec<SavedBan>>,
    /// Bans changed since the list was last handed over.
    dirty: bool,
}

impl BanFile {
    fn start(path: std::path::PathBuf) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<SavedBan>>(1);
        let p = path.clone();
        std::thread::Builder::new()
            .name("bans".into())
            .spawn(move || {
                while let Ok(list) = rx.recv() {
                    let bytes = serde_json::to_vec(&list).unwrap_or_default();
                    if let Err(e) = crate::keys::write_private(&p, &bytes, true) {
                        warn!(path = %p.display(), "bans not saved: {e}");
                    }
                }
            })?;
        Ok(Self {
            saved_at: None,
            tx,
            dirty: false,
        })
    }
}

/// The class a SIP method is limited under.
fn class(m: &Message<'_>) -> Class {
    match m.method() {
        Some(Method::Invite) => Class::Invite,
        Some(Method::Register) => Class::Register,
        Some(Method::Options) => Class::Options,
        _ => Class::Other,
    }
}

/// Per trunk (by index), its over-limit counter if it is trusted. Each
/// trusted trunk's series exists from the start, at 0, so the first drop
/// is an increase an alert sees; resolved once, so a carrier's flood of
/// drops costs an atomic add each.
fn carrier_counters(config: &Config, metrics: &Metrics) -> Vec<Option<IntCounter>> {
    config
        .trunks
        .iter()
        .map(|t| {
            t.trusted
                .then(|| metrics.ids_carrier_over_limit.with_label_values(&[&t.name]))
        })
        .collect()
}

/// The IDS, its metrics and where its bans go.
pub struct Guard {
    ids: Ids,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    pass: IntCounter,
    drops: Vec<IntCounter>,
    bans: Vec<IntCounter>,
    /// Per trunk (by index), its over-limit counter if it is trusted.
    carrier_over: Vec<Option<IntCounter>>,
    firewall: Option<nft::Handle>,
    audit: Option<crate::telemetry::audit::Audit>,
    saved: Option<BanFile>,
    /// What a ban's end is in wall time (kept across restarts, shown to
    /// admins); bans themselves run on monotonic time, so a clock jump
    /// neither lifts nor stretches one.
    wall: crate::Wall,
}

impl Guard {
    pub fn new(
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        now: Instant,
        wall: crate::Wall,
    ) -> Self {
        let ids = Ids::new(
            config.firewall.ids_rules.clone(),
            config.peer_networks(),
            now,
        );
        let carrier_over = carrier_counters(&config, &metrics);
        let counters = |verdict: &str| {
            Reason::ALL
                .iter()
                .map(|r| {
                    metrics
                        .ids_verdicts
                        .with_label_values(&[verdict, r.label()])
                })
                .collect()
        };
        Self {
            pass: metrics.ids_verdicts.with_label_values(&["pass", "none"]),
            drops: counters("drop"),
            bans: counters("ban"),
            carrier_over,
            ids,
            config,
            metrics,
            firewall: None,
            audit: None,
            saved: None,
            wall,
        }
    }

    /// Keeps bans in `path` from now on, after putting back the ones it
    /// holds that have not run out (in the process and the firewall; so
    /// set the firewall first). Returns how many.
    pub fn keep_bans(&mut self, path: std::path::PathBuf, now: Instant) -> usize {
        let saved: Vec<SavedBan> = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                warn!(path = %path.display(), "bans file unreadable ({e}); starting without");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        let wall = self.wall.ms(now);
        let mut restored = 0;
        for b in saved {
            let left = Duration::from_millis(b.until_unix_ms.saturating_sub(wall));
            let Some(reason) = Reason::from_label(&b.reason) else {
                continue;
            };
            if self.ids.restore(b.source, left, reason, b.offences, now) {
                let until = self.ids.banned_until(b.source, now).unwrap_or(now);
                let left = until.saturating_duration_since(now);
                if let Some(f) = &self.firewall {
                    f.ban(b.source, left);
                }
                restored += 1;
            }
        }
        if restored > 0 {
            info!(
                bans = restored,
                "IDS: bans in force before the restart put back"
            );
        }
        self.metrics
            .ids_bans_active
            .set(self.ids.bans_active() as i64);
        match BanFile::start(path) {
            Ok(mut f) => {
                f.dirty = true;
                self.saved = Some(f);
            }
            Err(e) => warn!("bans will not be kept across restarts: {e}"),
        }
        restored
    }

    /// Bans changed: the list goes to disk at the next tick.
    fn bans_changed(&mut self) {
        if let Some(f) = &mut self.saved {
            f.dirty = true;
        }
    }

    /// Hands the current bans to the writer, if they changed, at most
    /// every [`BAN_SAVE_EVERY`] and at most [`MAX_SAVED_BANS`] of them: a
    /// flood of bans costs the call core one bounded list now and then.
    fn save_bans(&mut self, now: Instant) {
        let Some(f) = &self.saved else { return };
        if !f.dirty
            || f.saved_at
                .is_some_and(|t| now.saturating_duration_since(t) < BAN_SAVE_EVERY)
        {
            return;
        }
        let wall = self.wall.ms(now);
        let mut list = Vec::new();
        for (source, until, reason) in self.ids.bans(now).into_iter().take(MAX_SAVED_BANS) {
            let offences = self.ids.offences(source);
            list.push(SavedBan {
                source,
                reason: reason.label().to_string(),
                until_unix_ms: wall + until.saturating_duration_since(now).as_millis() as u64,
                offences,
            });
        }
        if let Some(f) = &mut self.saved {
            // Full: the writer is busy; the next tick hands a newer list.
            if f.tx.try_send(list).is_ok() {
                f.dirty = false;
                f.saved_at = Some(now);
            }
        }
    }

    /// Where bans go besides the process: the nftables table.
    pub fn set_firewall(&mut self, f: nft::Handle) {
        self.firewall = Some(f);
    }

    /// Where bans and failed logins are recorded.
    pub fn set_audit(&mut self, a: crate::telemetry::audit::Audit) {
        self.audit = Some(a);
    }

    /// Counts a verdict and carries out a ban; true when the message may
    /// go on.
    fn act(&mut self, ip: IpAddr, v: Verdict) -> bool {
        match v {
            Verdict::Pass => {
                self.pass.inc();
                true
            }
            Verdict::Drop(r) => {
                self.drops[r as usize].inc();
                if r == Reason::CarrierLimit {
                    // Only a trusted trunk's peers get this verdict.
                    if let Some(c) = self
                        .config
                        .trunk_for(ip)
                        .and_then(|i| self.carrier_over.get(i))
                        .and_then(Option::as_ref)
                    {
                        c.inc();
                    }
                }
                false
            }
            Verdict::Ban { reason, duration } => {
                self.bans[reason as usize].inc();
                warn!(source = %ip, reason = reason.label(), seconds = duration.as_secs(), "IDS: source banned");
                if let Some(a) = &self.audit {
                    a.record(
                        "ids",
                        "ban",
                        &ip.to_string(),
                        &format!("{} for {} s", reason.label(), duration.as_secs()),
                    );
                }
                if let Some(f) = &self.firewall {
                    f.ban(ip, duration);
                }
                self.metrics
                    .ids_bans_active
                    .set(self.ids.bans_active() as i64);
                self.bans_changed();
                false
            }
        }
    }

    /// A SIP message that parsed, before the transaction layer.
    pub fn message(&mut self, ip: IpAddr, m: &Message<'_>, now: Instant) -> bool {
        let header = |n| m.header(n).map(|h| h.value);
        let facts = Facts {
            class: class(m),
            uri: match m.start {
                StartLine::Request { uri, .. } => uri,
                StartLine::Response { .. } => b"",
            },
            user_agent: header(HeaderName::UserAgent),
            from: header(HeaderName::From),
            to: header(HeaderName::To),
        };
        let v = self.ids.message(ip, &facts, now);
        self.act(ip, v)
    }

    /// A SIP message from `ip` that did not parse.
    pub fn malformed(&mut self, ip: IpAddr, now: Instant) {
        let v = self.ids.malformed(ip, now);
        self.act(ip, v);
    }

    /// The gateway answered `ip` 404 or 403 for `user`.
    pub fn refused_user(&mut self, ip: IpAddr, user: &[u8], now: Instant) {
        let v = self.ids.refused_user(ip, user, now);
        self.act(ip, v);
    }

    /// Housekeeping, about once a second: bans that ran out, gauges.
    pub fn tick(&mut self, now: Instant) {
        for ip in self.ids.expire(now) {
            info!(source = %ip, "IDS: ban expired");
            self.bans_changed();
        }
        self.save_bans(now);
        self.metrics
            .ids_bans_active
            .set(self.ids.bans_active() as i64);
        self.metrics
            .ids_sources_tracked
            .set(self.ids.tracked() as i64);
    }

    /// Bans in force, longest remaining first.
    pub fn bans(&self, now: Instant) -> Vec<BanInfo> {
        let wall = self.wall.at(now);
        let mut v: Vec<BanInfo> = self
            .ids
            .bans(now)
            .into_iter()
            .map(|(source, until, reason)| {
                let left = until.saturating_duration_since(now);
                BanInfo {
                    source,
                    reason: reason.label().to_string(),
                    remaining_s: left.as_secs(),
                    until_unix_ms: crate::unix_ms(wall + left),
                }
            })
            .collect();
        v.sort_by_key(|b| std::cmp::Reverse(b.until_unix_ms));
        v
    }

    /// Lifts a ban, in the process and in the kernel.
    pub fn unban(&mut self, ip: IpAddr, now: Instant) -> bool {
        let was = self.lift(ip, now);
        if was {
            info!(source = %ip, "IDS: ban lifted by an administrator");
        }
        was
    }

    /// Lifts a ban in the process and the kernel; whether there was one.
    fn lift(&mut self, ip: IpAddr, now: Instant) -> bool {
        let was = self.ids.unban(ip, now);
        self.bans_changed();
        if let Some(f) = &self.firewall {
            f.unban(ip);
        }
        self.metrics
            .ids_bans_active
            .set(self.ids.bans_active() as i64);
        was
    }

    /// A reloaded configuration: the trunks' peer networks and the rules
    /// it carries. Tracked sources and bans are kept, except that a source
    /// now inside a trusted trunk's networks is no longer banned (a
    /// trusted carrier is never banned).
    pub fn reconfigure(&mut self, config: Arc<Config>, now: Instant) {
        for t in &self.config.trunks {
            if t.trusted && !config.trunks.iter().any(|n| n.trusted && n.name == t.name) {
                let _ = self
                    .metrics
                    .ids_carrier_over_limit
                    .remove_label_values(&[&t.name]);
            }
        }
        self.carrier_over = carrier_counters(&config, &self.metrics);
        self.ids.set_peers(config.peer_networks());
        if config.firewall.ids_rules != *self.ids.rules() {
            self.ids.set_rules(config.firewall.ids_rules.clone());
        }
        self.config = config;
        let trusted: Vec<IpAddr> = self
            .ids
            .bans(now)
            .into_iter()
            .map(|(ip, _, _)| ip)
            .filter(|&ip| self.ids.is_trusted(ip))
            .collect();
        for ip in trusted {
            self.lift(ip, now);
            info!(source = %ip, "IDS: ban lifted, the source is now a trusted carrier's");
            if let Some(a) = &self.audit {
                a.record("ids", "unban", &ip.to_string(), "trusted carrier (reload)");
            }
        }
    }

    /// Re-reads the rules file (SIGHUP); the old rules stay on an error.
    /// Tracked sources and bans are kept.
    pub fn reload(&mut self) -> Result<(), String> {
        let rules = crate::config::load_rules(self.config.firewall.ids_rules_path.as_deref())?;
        self.ids.set_rules(rules);
        Ok(())
    }

    /// Time until the next housekeeping tick.
    pub const TICK: Duration = Duration::from_secs(1);
}
