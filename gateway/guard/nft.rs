//! The kernel side of the guard: Tollgate's nftables table.
//!
//! At start the gateway loads `rulesets/tollgate.nft` (embedded in the
//! binary) with its configured ports in place of the file's defaults,
//! replacing a table left by an earlier run in one transaction, then
//! fills the trunk and admin sets from its configuration with the
//! `nftables` crate. A task then takes the IDS's bans (elements with a
//! timeout, so the kernel lifts them on its own even if the gateway is
//! gone), unbans, and reads the table's counters into metrics every
//! [`COUNTER_EVERY`]. On stop it deletes the table, the only thing it
//! created. One gateway owns the table in a network namespace.
//!
//! Without CAP_NET_ADMIN or without `nft` (a developer's laptop), `auto`
//! says so once and the IDS's bans are enforced in the process only;
//! `required` refuses to start.
//!
//! The crate writes JSON for `nft -j`. Counters are read from the same
//! JSON with serde_json rather than the crate's typed schema, which does
//! not cover every statement the table uses (dynamic set updates with a
//! limit), so one unknown statement cannot stop the metrics.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use nftables::batch::Batch;
use nftables::expr::{Elem, Expression, NamedExpression, Prefix};
use nftables::schema::{Element, FlushObject, NfCmd, NfListObject, Nftables, Set};
use nftables::types::NfFamily;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::config::{Config, Nftables as Mode};
use crate::telemetry::metrics::Metrics;

/// The table's name (family `inet`).
pub const TABLE: &str = "tollgate";
/// The ruleset as shipped.
pub const RULESET: &str = include_str!("../../rulesets/tollgate.nft");
/// How often the counters are read.
pub const COUNTER_EVERY: Duration = Duration::from_secs(2);
/// Bans and unbans queued for the kernel before new ones are only
/// enforced in the process.
const QUEUE: usize = 8192;

/// The ports the table opens and guards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports {
    pub sip: Vec<u16>,
    pub rtp: (u16, u16),
    pub quic: u16,
    pub admin: u16,
}

impl Ports {
    pub fn of(config: &Config) -> Self {
        let mut sip: Vec<u16> = config
            .sip_udp
            .iter()
            .chain(&config.sip_tcp)
            .chain(&config.sip_tls)
            .map(|a| a.port())
            .collect();
        sip.sort_unstable();
        sip.dedup();
        Self {
            sip,
            rtp: config.rtp_ports,
            quic: config.agents.listen.port(),
            admin: config.admin_listen.port(),
        }
    }
}

/// The ruleset with `ports` in place of the file's defines.
pub fn render(ports: &Ports) -> String {
    let list = |v: &[u16]| v.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
    RULESET
        .lines()
        .map(|line| {
            if line.starts_with("define SIP_PORTS ") {
                format!("define SIP_PORTS = {{ {} }}", list(&ports.sip))
            } else if line.starts_with("define RTP_PORTS ") {
                format!("define RTP_PORTS = {}-{}", ports.rtp.0, ports.rtp.1)
            } else if line.starts_with("define QUIC_PORT ") {
                format!("define QUIC_PORT = {}", ports.quic)
            } else if line.starts_with("define ADMIN_PORTS ") {
                format!("define ADMIN_PORTS = {{ {} }}", ports.admin)
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn set(name: &'static str) -> Set<'static> {
    Set {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: name.into(),
        ..Set::default()
    }
}

fn element(name: &'static str, elem: Vec<Expression<'static>>) -> NfListObject<'static> {
    NfListObject::Element(Element {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: name.into(),
        elem: Cow::Owned(elem),
    })
}

fn net(n: &IpNet) -> Expression<'static> {
    let addr = Expression::String(n.network().to_string().into());
    if n.prefix_len() == n.max_prefix_len() {
        addr
    } else {
        Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(addr),
            len: u32::from(n.prefix_len()),
        }))
    }
}

/// The union of `nets`: overlapping, nested, identical and adjacent
/// networks merged, IPv4-mapped IPv6 networks taken as IPv4.
///
/// The kernel's interval sets refuse overlapping elements ("conflicting
/// intervals specified"), and a trunk open to the internet
/// (`0.0.0.0/0`) beside a carrier's /32 is a documented configuration,
/// so the gateway hands nft the union: the load never depends on how a
/// given nft release merges. (The sets are also `auto-merge`, so an
/// element an operator adds by hand merges rather than fails.)
pub fn union(nets: &[IpNet]) -> Vec<IpNet> {
    let plain: Vec<IpNet> = nets
        .iter()
        .map(|n| match n {
            IpNet::V6(v6) if n.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
                Some(v4) => ipnet::Ipv4Net::new(v4, n.prefix_len() - 96)
                    .map(IpNet::V4)
                    .unwrap_or(*n),
                None => *n,
            },
            _ => *n,
        })
        .collect();
    IpNet::aggregate(&plain)
}

/// The batch that fills the trunk and admin sets from `config`,
/// replacing what they held. Each set gets the union of its networks,
/// so any set of networks the configuration accepts loads.
pub fn fill_sets(config: &Config) -> Nftables<'static> {
    let mut b = Batch::new();
    let trunks: Vec<IpNet> = config
        .trunks
        .iter()
        .flat_map(|t| t.peers.iter().copied())
        .collect();
    for (sets, nets) in [
        (("trunk_v4", "trunk_v6"), union(&trunks)),
        (
            ("admin_v4", "admin_v6"),
            union(&config.firewall.admin_networks),
        ),
    ] {
        for (name, v4) in [(sets.0, true), (sets.1, false)] {
            b.add_cmd(NfCmd::Flush(FlushObject::Set(Box::new(set(name)))));
            let elems: Vec<_> = nets
                .iter()
                .filter(|n| matches!(n, IpNet::V4(_)) == v4)
                .map(net)
                .collect();
            if !elems.is_empty() {
                b.add(element(name, elems));
            }
        }
    }
    b.to_nftables()
}

fn banned_set(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "banned_v4",
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => "banned_v4",
        IpAddr::V6(_) => "banned_v6",
    }
}

/// The batch that adds `bans` (source, seconds) to the banned sets.
pub fn ban_batch(bans: &[(IpAddr, u32)]) -> Nftables<'static> {
    let mut b = Batch::new();
    for &(ip, secs) in bans {
        let ip = crate::unmapped(ip);
        b.add(element(
            banned_set(ip),
            vec![Expression::Named(NamedExpression::Elem(Elem {
                val: Box::new(Expression::String(ip.to_string().into())),
                timeout: Some(secs.max(1)),
                expires: None,
                comment: None,
                counter: None,
            }))],
        ));
    }
    b.to_nftables()
}

fn unban_batch(ip: IpAddr) -> Nftables<'static> {
    let ip = crate::unmapped(ip);
    let mut b = Batch::new();
    b.delete(element(
        banned_set(ip),
        vec![Expression::String(ip.to_string().into())],
    ));
    b.to_nftables()
}

/// Packets dropped per rule comment, from `nft -j list table` output:
/// the rules whose verdict is drop, summed by comment.
pub fn drop_counters(json: &str) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return out;
    };
    let objects = v
        .get("nftables")
        .and_then(|n| n.as_array())
        .cloned()
        .unwrap_or_default();
    for o in objects {
        let Some(rule) = o.get("rule") else { continue };
        let Some(expr) = rule.get("expr").and_then(|e| e.as_array()) else {
            continue;
        };
        if !expr.iter().any(|s| s.get("drop").is_some()) {
            continue;
        }
        let packets = expr
            .iter()
            .filter_map(|s| s.get("counter")?.get("packets")?.as_u64())
            .sum::<u64>();
        let comment = rule
            .get("comment")
            .and_then(|c| c.as_str())
            .unwrap_or("unnamed")
            .to_string();
        *out.entry(comment).or_insert(0) += packets;
    }
    out
}

/// The comments of the ruleset's drop rules (the metric's labels).
pub fn drop_rules() -> Vec<&'static str> {
    let mut v: Vec<&str> = RULESET
        .lines()
        .filter_map(|l| l.split_once(" drop comment \"")?.1.strip_suffix('"'))
        .collect();
    v.dedup();
    v
}

enum Cmd {
    Ban(IpAddr, u32),
    Unban(IpAddr),
    /// A batch that refills the trunk and admin sets (a reload).
    Refill(Box<Nftables<'static>>, oneshot::Sender<Result<(), String>>),
    Stop(oneshot::Sender<()>),
}

/// The guard's handle on the table.
#[derive(Clone, Debug)]
pub struct Handle {
    tx: mpsc::Sender<Cmd>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("nft command")
    }
}

impl Handle {
    /// Adds `ip` to the banned set for `duration`.
    pub fn ban(&self, ip: IpAddr, duration: Duration) {
        let secs = u32::try_from(duration.as_secs()).unwrap_or(u32::MAX);
        if self.tx.try_send(Cmd::Ban(ip, secs)).is_err() {
            debug!("firewall queue full: ban enforced in the process only");
        }
    }

    /// Removes `ip` from the banned set.
    pub fn unban(&self, ip: IpAddr) {
        let _ = self.tx.try_send(Cmd::Unban(ip));
    }

    /// Refills the trunk and admin sets from `config` (a reload), in one
    /// nft transaction: on an error the sets keep what they held.
    pub async fn refill(&self, config: &Config) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Refill(Box::new(fill_sets(config)), tx))
            .await
            .map_err(|_| "the firewall task has ended".to_string())?;
        rx.await
            .map_err(|_| "the firewall task has ended".to_string())?
    }

    /// Deletes the table and ends the task.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Runs `nft -f -` on `text`; the error carries nft's message.
async fn nft_text(text: &str) -> Result<(), String> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

async fn apply(batch: &Nftables<'_>) -> Result<(), String> {
    nftables::helper::apply_ruleset_async(batch)
        .await
        .map_err(|e| e.to_string())
}

/// Loads the table for `config` and starts its task; `None` when the
/// mode is off, or `auto` and the process may not (said once in the log).
pub async fn start(config: &Config, metrics: Arc<Metrics>) -> Result<Option<Handle>, String> {
    metrics.firewall_active.set(0);
    let mode = config.firewall.nftables;
    if mode == Mode::Off {
        info!("firewall: nftables off in the configuration; IDS bans are enforced in the process only");
        return Ok(None);
    }
    let text = format!(
        "table inet {TABLE}\ndelete table inet {TABLE}\n{}",
        render(&Ports::of(config))
    );
    let loaded = match nft_text(&text).await {
        Ok(()) => apply(&fill_sets(config)).await,
        Err(e) => Err(e),
    };
    if let Err(e) = loaded {
        let _ = nft_text(&format!("delete table inet {TABLE}\n")).await;
        let why = format!(
            "cannot load the nftables table inet {TABLE} ({e}); it needs CAP_NET_ADMIN and the nft tool"
        );
        if mode == Mode::Required {
            return Err(format!("firewall: {why}"));
        }
        warn!("firewall: {why}. IDS bans are enforced in the gateway process only");
        return Ok(None);
    }
    // Every drop rule's series exists from the start, at 0.
    for rule in drop_rules() {
        metrics.firewall_dropped_packets.with_label_values(&[rule]);
    }
    metrics.firewall_active.set(1);
    info!(
        table = %format!("inet {TABLE}"),
        "firewall: nftables table loaded; IDS bans go to the kernel"
    );
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(run(rx, metrics));
    Ok(Some(Handle { tx }))
}

async fn run(mut rx: mpsc::Receiver<Cmd>, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(COUNTER_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: HashMap<String, u64> = HashMap::new();
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                // Everything queued goes in one nft run.
                let mut bans = Vec::new();
                let mut next = Some(cmd);
                while let Some(c) = next.take() {
                    match c {
                        Cmd::Ban(ip, secs) => bans.push((ip, secs)),
                        Cmd::Unban(ip) => {
                            // Deleting a missing element fails: on its own.
                            if let Err(e) = apply(&unban_batch(ip)).await {
                                debug!("firewall unban: {e}");
                            }
                        }
                        Cmd::Refill(batch, ack) => {
                            let _ = ack.send(apply(&batch).await);
                        }
                        Cmd::Stop(ack) => {
                            flush_bans(&bans).await;
                            stop().await;
                            metrics.firewall_active.set(0);
                            let _ = ack.send(());
                            return;
                        }
                    }
                    if bans.len() < 1000 {
                        next = rx.try_recv().ok();
                    }
                }
                flush_bans(&bans).await;
            }
            _ = tick.tick() => read_counters(&metrics, &mut last).await,
        }
    }
    stop().await;
}

async fn flush_bans(bans: &[(IpAddr, u32)]) {
    if bans.is_empty() {
        return;
    }
    if let Err(e) = apply(&ban_batch(bans)).await {
        warn!(
            "firewall: {} ban(s) not written to nftables: {e}",
            bans.len()
        );
    }
}

async fn stop() {
    match nft_text(&format!("delete table inet {TABLE}\n")).await {
        Ok(()) => info!("firewall: nftables table removed"),
        Err(e) => warn!("firewall: removing the nftables table: {e}"),
    }
}

async fn read_counters(metrics: &Metrics, last: &mut HashMap<String, u64>) {
    let json = match nftables::helper::get_current_ruleset_raw_async(
        nftables::helper::DEFAULT_NFT,
        ["list", "table", "inet", TABLE],
    )
    .await
    {
        Ok(j) => j,
        Err(e) => {
            debug!("firewall counters: {e}");
            return;
        }
    };
    for (rule, packets) in drop_counters(&json) {
        let before = last.insert(rule.clone(), packets).unwrap_or(0);
        // A counter that went down was reset (the table was reloaded).
        let delta = if packets >= before {
            packets - before
        } else {
            packets
        };
        if delta > 0 {
            metrics
                .firewall_dropped_packets
                .with_label_values(&[&rule])
                .inc_by(delta);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_puts_the_configured_ports_in_place() {
        let text = render(&Ports {
            sip: vec![5070, 5071],
            rtp: (30000, 30999),
            quic: 4500,
            admin: 9200,
        });
        assert!(text.contains("define SIP_PORTS = { 5070, 5071 }\n"));
        assert!(text.contains("define RTP_PORTS = 30000-30999\n"));
        assert!(text.contains("define QUIC_PORT = 4500\n"));
        assert!(text.contains("define ADMIN_PORTS = { 9200 }\n"));
        assert!(!text.contains("5060"), "{text}");
        assert_eq!(text.lines().count(), RULESET.lines().count());
    }

    #[test]
    fn sets_and_bans_serialize_as_nft_json() {
        let config = Config::from_toml(
            "[[trunk]]\nname = \"c\"\npeers = [\"203.0.113.0/24\", \"2001:db8::1\"]\n[firewall]\nadmin_networks = [\"10.0.0.0/8\"]\n",
        )
        .expect("config");
        let json = serde_json::to_string(&fill_sets(&config)).expect("json");
        assert!(
            json.contains(r#"{"prefix":{"addr":"203.0.113.0","len":24}}"#),
            "{json}"
        );
        assert!(
            json.contains(r#""name":"trunk_v6","elem":["2001:db8::1"]"#),
            "{json}"
        );
        assert!(
            json.contains(
                r#"{"flush":{"set":{"family":"inet","table":"tollgate","name":"admin_v6""#
            ),
            "{json}"
        );
        let json = serde_json::to_string(&ban_batch(&[
            ("198.51.100.7".parse().expect("ip"), 300),
            ("::ffff:198.51.100.8".parse().expect("ip"), 60),
        ]))
        .expect("json");
        assert!(
            json.contains(
                r#""name":"banned_v4","elem":[{"elem":{"val":"198.51.100.7","timeout":300"#
            ),
            "{json}"
        );
        assert!(
            json.contains(r#""val":"198.51.100.8","timeout":60"#),
            "{json}"
        );
    }

    #[test]
    fn union_merges_overlapping_nested_identical_and_adjacent_networks() {
        let nets: Vec<IpNet> = [
            "203.0.113.7/32",
            "203.0.113.0/24",
            "203.0.113.0/24",
            "192.0.2.0/25",
            "192.0.2.128/25",
            "::ffff:198.51.100.9/128",
            "2001:db8:1::/48",
            "2001:db8::/32",
        ]
        .iter()
        .map(|n| n.parse().expect("net"))
        .collect();
        let got: Vec<String> = union(&nets).iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "192.0.2.0/24",
                "198.51.100.9/32",
                "203.0.113.0/24",
                "2001:db8::/32"
            ]
        );
        let all: Vec<IpNet> = ["0.0.0.0/0", "10.0.0.1/32", "::/0", "::1/128"]
            .iter()
            .map(|n| n.parse().expect("net"))
            .collect();
        let got: Vec<String> = union(&all).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["0.0.0.0/0", "::/0"]);
    }

    #[test]
    fn drop_counters_sum_drop_rules_by_comment() {
        let json = r#"{"nftables":[{"metainfo":{}},
            {"rule":{"comment":"banned","expr":[{"match":{}},{"counter":{"packets":7,"bytes":700}},{"drop":null}]}},
            {"rule":{"comment":"banned","expr":[{"counter":{"packets":3,"bytes":300}},{"drop":null}]}},
            {"rule":{"comment":"rtp","expr":[{"counter":{"packets":99,"bytes":1}},{"accept":null}]}}]}"#;
        let c = drop_counters(json);
        assert_eq!(c.get("banned"), Some(&10));
        assert_eq!(c.get("rtp"), None);
        assert!(drop_counters("not json").is_empty());
        assert_eq!(
            drop_rules(),
            [
                "quic new-flow flood",
                "banned",
                "invalid",
                "icmp over rate",
                "sip from elsewhere",
                "admin from elsewhere"
            ]
        );
    }
}
