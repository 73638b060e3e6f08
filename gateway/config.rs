//! Tollgate's configuration: a TOML file, or the embedded defaults when
//! none is given (everything on loopback, the test numbers routed).
//!
//! The file is read into plain serde structs ([`File`]) that reject
//! unknown keys, then validated into [`Config`], whose fields are already
//! parsed (socket addresses, CIDRs, port ranges, codecs), so the rest of
//! the gateway never re-checks them. Every error names where it is: the
//! TOML parser's line and column for syntax and types, and a path such as
//! `trunk "carrier": peers[1]` for values.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use crate::sip::sdp::AddrScope;

mod admin;
mod agents;
mod firewall;
pub mod hours;
mod reload;
pub mod rules;
mod scope;
pub mod strict;
mod trunk;
pub use admin::{AdminFile, Oversight};
use agents::{validate_agents, validate_dialing, validate_profile, DialingFile};
pub use agents::{
    Agents, AgentsFile, DialFile, DialRefused, Profile, ProfileFile, Queue, QueueFile,
};
use firewall::validate_firewall;
pub use firewall::{load_rules, Firewall, FirewallFile, Nftables};
pub use reload::Reloaded;
use trunk::validate_trunk;
pub use trunk::{Register, RegisterFile, Transport, Trunk, TrunkFile};

/// The embedded defaults, as a TOML document (also what
/// `tollgate config default` prints, commented).
pub const DEFAULT_TOML: &str = include_str!("config/default.toml");

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// A TOML syntax or type error; the message carries line and column.
    #[error("{0}")]
    Toml(String),
    #[error("{at}: {what}")]
    Invalid { at: String, what: String },
    /// Several problems, each with where it is, one per line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ConfigError>),
}

/// Problems found while validating, all kept.
#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn push(&mut self, e: ConfigError) {
        match e {
            ConfigError::Several(v) => self.0.extend(v),
            e => self.0.push(e),
        }
    }

    /// The value, or `None` with its problem kept.
    fn take<T>(&mut self, r: Result<T, ConfigError>) -> Option<T> {
        r.map_err(|e| self.push(e)).ok()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One problem as itself, several as [`ConfigError::Several`].
    fn into_error(mut self) -> ConfigError {
        if self.0.len() == 1 {
            if let Some(e) = self.0.pop() {
                return e;
            }
        }
        ConfigError::Several(self.0)
    }
}

fn invalid(at: impl Into<String>, what: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        at: at.into(),
        what: what.into(),
    }
}

/// The file as written. Unknown keys are errors.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub sip: SipFile,
    #[serde(default)]
    pub media: MediaFile,
    #[serde(default)]
    pub admin: AdminFile,
    #[serde(default)]
    pub agents: AgentsFile,
    #[serde(default)]
    pub trunk: Vec<TrunkFile>,
    #[serde(default)]
    pub route: Vec<RouteFile>,
    #[serde(default)]
    pub queue: Vec<QueueFile>,
    #[serde(default)]
    pub profile: Vec<ProfileFile>,
    #[serde(default)]
    pub dial: Vec<DialFile>,
    #[serde(default)]
    pub dialing: DialingFile,
    #[serde(default)]
    pub firewall: FirewallFile,
    #[serde(default)]
    pub records: RecordsFile,
    #[serde(default)]
    pub privacy: PrivacyFile,
    #[serde(default)]
    pub incident: IncidentFile,
}

/// `[incident]`: what still works during an incident lockdown.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentFile {
    /// Agents who may still log in during a lockdown (the incident
    /// team's own phones); everyone else's sessions end.
    pub break_glass: Vec<String>,
}

/// `[privacy]`: what staff may see of customers' numbers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyFile {
    /// Trailing digits of a number viewers, agents (unless their profile
    /// shows callers) and logs see: 0 to 4.
    pub visible_digits: u8,
}

impl Default for PrivacyFile {
    fn default() -> Self {
        Self { visible_digits: 4 }
    }
}

/// `[records]`: call detail records.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordsFile {
    pub retention_days: u32,
    /// Free space (MiB) the record store leaves on its filesystem; below
    /// it records are shed (counted), never calls.
    pub min_free_mb: u64,
}

impl Default for RecordsFile {
    fn default() -> Self {
        Self {
            retention_days: 365,
            min_free_mb: 256,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipFile {
    pub udp: Vec<String>,
    pub tcp: Vec<String>,
    pub tls: Vec<String>,
    pub tls_certificate: Option<PathBuf>,
    pub tls_private_key: Option<PathBuf>,
    pub public_address: Option<String>,
    pub max_message_size: usize,
    pub max_headers: usize,
    pub max_line_length: usize,
    pub partial_message_timeout_ms: u64,
    pub t1_ms: u64,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
}

impl Default for SipFile {
    fn default() -> Self {
        Self {
            udp: vec!["127.0.0.1:5060".into()],
            tcp: vec!["127.0.0.1:5060".into()],
            tls: Vec::new(),
            tls_certificate: None,
            tls_private_key: None,
            public_address: None,
            max_message_size: 65536,
            max_headers: 100,
            max_line_length: 8192,
            partial_message_timeout_ms: 5000,
            t1_ms: 500,
            max_connections: 1024,
            max_connections_per_peer: 32,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaFile {
    pub rtp_ports: String,
    /// Seconds without valid RTP after which a call ends (every media
    /// path: agents, test services, bridges). 0: never.
    pub rtp_timeout_s: u64,
    /// Longest a call may last from its answer, in seconds; then the
    /// gateway hangs up both ends. Defaults to 14400 (4 hours); 0: no
    /// limit.
    pub max_call_s: u64,
    /// Media shards: threads that each run the media of their calls and
    /// the QUIC connections of their agents. 0 (the default): one per
    /// core the gateway may use.
    pub shards: u32,
}

impl Default for MediaFile {
    fn default() -> Self {
        Self {
            rtp_ports: "20000-39999".into(),
            rtp_timeout_s: 30,
            max_call_s: 14_400,
            shards: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub number: String,
    pub target: String,
    /// Ring this long (180 Ringing) before answering. Defaults to 0.
    #[serde(default)]
    pub ring_ms: u64,
    /// Hang up (BYE from the gateway) this long after answering; 0, the
    /// default, never.
    #[serde(default)]
    pub hangup_ms: u64,
    /// For the `echo` and `tone` test services only: the networks whose
    /// SIP sources the service answers (others get 404, as if the number
    /// did not exist). Defaults to loopback: a test number that answers
    /// the internet turns the gateway into a media reflector.
    #[serde(default)]
    pub test_peers: Option<Vec<String>>,
}

/// A validated route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub number: String,
    pub target: Target,
    pub ring: std::time::Duration,
    pub hangup: Option<std::time::Duration>,
    /// Who a test service answers (empty for other targets: everyone the
    /// trunks admit).
    pub test_peers: Vec<IpNet>,
}

impl Route {
    /// Whether a call from `ip` may take this route.
    pub fn admits(&self, ip: IpAddr) -> bool {
        !matches!(self.target, Target::Echo | Target::Tone)
            || crate::in_networks(&self.test_peers, ip)
    }
}

/// A trunk by its name. What a call holds across a reload: the trunks'
/// order may change, their names say which is which.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TrunkId(std::sync::Arc<str>);

/// A queue by its name (as [`TrunkId`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QueueId(std::sync::Arc<str>);

impl TrunkId {
    pub fn new(name: &str) -> Self {
        Self(name.into())
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

impl QueueId {
    pub fn new(name: &str) -> Self {
        Self(name.into())
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

/// Where a dialled number goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Answer and return the caller's audio.
    Echo,
    /// Answer and play a 1 kHz tone.
    Tone,
    /// Out another trunk.
    Trunk(TrunkId),
    /// To a queue of agents.
    Queue(QueueId),
    /// To one agent, by name.
    Agent(String),
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub sip_udp: Vec<SocketAddr>,
    pub sip_tcp: Vec<SocketAddr>,
    pub sip_tls: Vec<SocketAddr>,
    pub tls_certificate: Option<PathBuf>,
    pub tls_private_key: Option<PathBuf>,
    pub public_address: IpAddr,
    /// `sip.public_address = "auto"`, not yet resolved ([`Config::resolve`]).
    pub public_auto: bool,
    pub limits: crate::sip::message::Limits,
    pub partial_message_timeout: std::time::Duration,
    /// SIP timer T1.
    pub t1: std::time::Duration,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    /// Inclusive, first even.
    pub rtp_ports: (u16, u16),
    /// RTP silence that ends a call (`None`: never).
    pub rtp_timeout: Option<std::time::Duration>,
    /// Longest a call lasts from its answer (`None`: no limit).
    pub max_call: Option<std::time::Duration>,
    /// Media shards (`None`: one per core, resolved at start).
    pub media_shards: Option<usize>,
    pub admin_listen: SocketAddr,
    /// Unix groups (names, or numeric gids) of the operator roles:
    /// viewer, auditor, admin, approver.
    pub role_groups: [String; 4],
    /// How long an approved export may wait to be run.
    pub approval_window: std::time::Duration,
    /// `[admin] socket_group`: who may connect to the admin socket.
    pub socket_group: Option<String>,
    /// `[admin.hours.*]` and the bulk-read limit.
    pub oversight: admin::Oversight,
    /// `[incident] break_glass`: agents who may log in during a lockdown.
    pub break_glass: Vec<String>,
    pub agents: Agents,
    pub firewall: Firewall,
    /// Days call records are kept (then crypto-shredded).
    pub retention_days: u32,
    /// Free bytes the record store leaves on its filesystem.
    pub records_min_free: u64,
    /// The one masking policy for numbers staff see.
    pub mask: crate::number::Mask,
    pub trunks: Vec<Trunk>,
    /// Routes in file order; an exact number first, then `*`.
    pub routes: Vec<Route>,
    /// Queues; `default` is always there.
    pub queues: Vec<Queue>,
    pub profiles: Vec<Profile>,
    /// Agents' dial plan: (E.164 prefix, trunk index), first match wins.
    pub dial: Vec<(String, usize)>,
    /// `[dialing] default = "deny"`: numbers no dial-plan prefix covers,
    /// and dials by agents without a profile, are refused.
    pub dial_default_deny: bool,
}

/// The `sdp_address_refused_total` label for an untrusted peer's SDP that
/// names another host than the peer (see [`Config::media_refused`]).
pub const NOT_SIGNALLING_SOURCE: &str = "not_signalling_source";

impl Config {
    /// The embedded defaults. They are checked by a unit test, so an error
    /// here is a build defect; it is still reported, not panicked on.
    pub fn embedded() -> Result<Self, ConfigError> {
        Self::from_toml(DEFAULT_TOML)?.resolve()
    }

    /// Reads and validates a file, then resolves what depends on this
    /// machine ([`Config::resolve`]): what the gateway runs on.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::check_file(path)?.resolve()
    }

    /// Reads and validates a file without looking at this machine
    /// (`tollgate config check`: a file written for the appliance checks
    /// the same on a laptop).
    pub fn check_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Validates a TOML document: parsing and rules only, every problem
    /// collected, nothing read from the machine. `"auto"` addresses stay
    /// unresolved until [`Config::resolve`].
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        Self::validate(file)
    }

    /// Whether `sip.public_address` or `agents.address` is `"auto"` and
    /// not yet resolved.
    pub fn unresolved(&self) -> bool {
        self.public_auto || self.agents.address == agents::AUTO
    }

    /// Resolves `"auto"` addresses to the address this machine's default
    /// route leaves from (both: the first IPv4 address of an interface
    /// when there is no route).
    pub fn resolve(mut self) -> Result<Self, ConfigError> {
        if !self.unresolved() {
            return Ok(self);
        }
        let mut p = Problems::default();
        let ip = default_route_address();
        if self.public_auto {
            match ip {
                Some(ip) => {
                    self.public_address = ip;
                    self.public_auto = false;
                }
                None => p.push(invalid(
                    "sip.public_address",
                    "\"auto\": this machine has no address now; give the address",
                )),
            }
        }
        if self.agents.address == agents::AUTO {
            match ip {
                Some(ip) => {
                    self.agents.address = SocketAddr::new(ip, self.agents.listen.port()).to_string()
                }
                None => p.push(invalid(
                    "agents.address",
                    "\"auto\": this machine has no address now; give host:port",
                )),
            }
        }
        if p.is_empty() {
            Ok(self)
        } else {
            Err(p.into_error())
        }
    }

    fn validate(f: File) -> Result<Self, ConfigError> {
        // Every problem is collected, with where it is: an admin fixing a
        // file sees them all at once, not one per attempt.
        let mut p = Problems::default();
        let addrs = |list: &[String], key: &str| -> Result<Vec<SocketAddr>, ConfigError> {
            list.iter()
                .enumerate()
                .map(|(i, a)| {
                    a.parse().map_err(|_| {
                        invalid(
                            format!("sip.{key}[{i}]"),
                            format!("{a:?} is not an address:port"),
                        )
                    })
                })
                .collect()
        };
        let sip_udp = p.take(addrs(&f.sip.udp, "udp")).unwrap_or_default();
        let sip_tcp = p.take(addrs(&f.sip.tcp, "tcp")).unwrap_or_default();
        let sip_tls = p.take(addrs(&f.sip.tls, "tls")).unwrap_or_default();
        if f.sip.udp.is_empty() && f.sip.tcp.is_empty() && f.sip.tls.is_empty() {
            p.push(invalid("sip", "no listening address (udp, tcp or tls)"));
        }
        if !f.sip.tls.is_empty()
            && (f.sip.tls_certificate.is_none() || f.sip.tls_private_key.is_none())
        {
            p.push(invalid(
                "sip.tls",
                "needs tls_certificate and tls_private_key",
            ));
        }
        let public_address = match &f.sip.public_address {
            // Found when the gateway starts (`Config::resolve`).
            Some(a) if a == "auto" => Some(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            Some(a) => p.take(a.parse().map_err(|_| {
                invalid(
                    "sip.public_address",
                    format!("{a:?} is not an IP address (or \"auto\")"),
                )
            })),
            None => p.take(
                sip_udp
                    .iter()
                    .chain(&sip_tcp)
                    .chain(&sip_tls)
                    .map(SocketAddr::ip)
                    .next()
                    .filter(|ip| !ip.is_unspecified())
                    .ok_or_else(|| {
                        invalid(
                            "sip.public_address",
                            "required when listening on 0.0.0.0 or ::",
                        )
                    }),
            ),
        };
        if !(1024..=1024 * 1024).contains(&f.sip.max_message_size) {
            p.push(invalid(
                "sip.max_message_size",
                "must be 1024 to 1048576 bytes",
            ));
        }
        if f.sip.max_headers == 0 || f.sip.max_line_length < 128 {
            p.push(invalid(
                "sip",
                "max_headers must be at least 1 and max_line_length at least 128",
            ));
        }
        if !(50..=5000).contains(&f.sip.t1_ms) {
            p.push(invalid("sip.t1_ms", "must be 50 to 5000 milliseconds"));
        }
        if f.sip.max_connections == 0 || f.sip.max_connections_per_peer == 0 {
            p.push(invalid("sip", "connection caps must be at least 1"));
        }
        let rtp_ports = p.take(parse_range(&f.media.rtp_ports)
            .ok_or_else(|| invalid("media.rtp_ports", format!("{:?} is not an even-start range such as \"20000-39999\" with at least 2 ports above 1023", f.media.rtp_ports))));
        if f.media.rtp_timeout_s > 3600 {
            p.push(invalid("media.rtp_timeout_s", "0 (off) to 3600 seconds"));
        }
        if f.media.shards > 256 {
            p.push(invalid("media.shards", "0 (one per core) to 256"));
        }
        if f.media.max_call_s > 172_800 {
            p.push(invalid(
                "media.max_call_s",
                "0 (no limit) to 172800 seconds (two days)",
            ));
        }
        let admin_listen = p.take(f.admin.listen.parse().map_err(|_| {
            invalid(
                "admin.listen",
                format!("{:?} is not an address:port", f.admin.listen),
            )
        }));
        let agents = p.take(validate_agents(&f.agents));
        let firewall = p.take(validate_firewall(&f.firewall));
        if !(1..=36_500).contains(&f.records.retention_days) {
            p.push(invalid("records.retention_days", "1 to 36500 days"));
        }
        for e in f.admin.problems() {
            p.push(e);
        }
        let oversight = f.admin.oversight().unwrap_or_default();
        let mask = p.take(
            crate::number::Mask::new(f.privacy.visible_digits).ok_or_else(|| {
                invalid(
                    "privacy.visible_digits",
                    "0 to 4 (more would let staff see enough of a number to find the customer)",
                )
            }),
        );

        let mut trunks = Vec::new();
        for (i, t) in f.trunk.into_iter().enumerate() {
            if let Some(trunk) = p.take(validate_trunk(i, t, &trunks)) {
                trunks.push(trunk);
            }
        }

        let mut profiles: Vec<Profile> = Vec::new();
        for (i, pf) in f.profile.iter().enumerate() {
            if let Some(profile) = p.take(validate_profile(i, pf, &profiles)) {
                profiles.push(profile);
            }
        }
        let mut queues = vec![Queue {
            name: "default".into(),
            profiles: Vec::new(),
            ring: std::time::Duration::from_secs(20),
        }];
        for (i, q) in f.queue.iter().enumerate() {
            let at = format!("queue[{i}] {:?}", q.name);
            if q.name.is_empty()
                || !q
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                p.push(invalid(at, "name must be letters, digits, '-' or '_'"));
                continue;
            }
            if !(1..=600).contains(&q.ring_s) {
                p.push(invalid(format!("{at}: ring_s"), "1 to 600 seconds"));
                continue;
            }
            let missing: Vec<&String> = q
                .profiles
                .iter()
                .filter(|name| !profiles.iter().any(|x| &x.name == *name))
                .collect();
            if let Some(name) = missing.first() {
                p.push(invalid(
                    format!("{at}: profiles"),
                    format!("no profile named {name:?}"),
                ));
                continue;
            }
            let queue = Queue {
                name: q.name.clone(),
                profiles: q.profiles.clone(),
                ring: std::time::Duration::from_secs(q.ring_s),
            };
            match queues.iter_mut().find(|x| x.name == q.name) {
                // The default queue may be given its own settings.
                Some(existing) if existing.name == "default" => *existing = queue,
                Some(_) => p.push(invalid(at, "duplicate queue name")),
                None => queues.push(queue),
            }
        }
        let mut dial = Vec::new();
        for (i, d) in f.dial.iter().enumerate() {
            let at = format!("dial[{i}] {:?}", d.prefix);
            if !d.prefix.starts_with('+') || !d.prefix[1..].bytes().all(|b| b.is_ascii_digit()) {
                p.push(invalid(at, "prefix must be '+' and digits"));
                continue;
            }
            let Some(t) = p.take(
                trunks
                    .iter()
                    .position(|x| x.name == d.trunk)
                    .ok_or_else(|| {
                        invalid(
                            format!("{at}: trunk"),
                            format!("no trunk named {:?}", d.trunk),
                        )
                    }),
            ) else {
                continue;
            };
            if trunks[t].address.is_none() {
                p.push(invalid(
                    format!("{at}: trunk"),
                    "that trunk has no address to call",
                ));
                continue;
            }
            dial.push((d.prefix.clone(), t));
        }
        let dial_default_deny = p.take(validate_dialing(&f.dialing));

        let mut routes = Vec::new();
        for (i, r) in f.route.iter().enumerate() {
            let at = format!("route[{i}] {:?}", r.number);
            if r.number.is_empty() || r.number.len() > 32 {
                p.push(invalid(at, "number must be 1 to 32 characters"));
                continue;
            }
            let target = match r.target.as_str() {
                "echo" => Ok(Target::Echo),
                "tone" => Ok(Target::Tone),
                t => match t.split_once(':') {
                    Some(("trunk", name)) => trunks
                        .iter()
                        .find(|x| x.name == name)
                        .map(|x| Target::Trunk(TrunkId::new(&x.name)))
                        .ok_or_else(|| {
                            invalid(format!("{at}: target"), format!("no trunk named {name:?}"))
                        }),
                    Some(("queue", name)) => queues
                        .iter()
                        .find(|x| x.name == name)
                        .map(|x| Target::Queue(QueueId::new(&x.name)))
                        .ok_or_else(|| {
                            invalid(format!("{at}: target"), format!("no queue named {name:?}"))
                        }),
                    Some(("agent", name)) if !name.is_empty() => {
                        Ok(Target::Agent(name.to_string()))
                    }
                    _ => Err(invalid(
                        format!("{at}: target"),
                        format!("{t:?}: use echo, tone, trunk:NAME, queue:NAME or agent:NAME"),
                    )),
                },
            };
            let Some(target) = p.take(target) else {
                continue;
            };
            if let Target::Trunk(id) = &target {
                if trunks
                    .iter()
                    .any(|t| t.name == id.name() && t.address.is_none())
                {
                    p.push(invalid(
                        format!("{at}: target"),
                        "that trunk has no address to call",
                    ));
                    continue;
                }
            }
            if r.ring_ms > 120_000 {
                p.push(invalid(
                    format!("{at}: ring_ms"),
                    "at most 120000 (two minutes)",
                ));
            }
            if r.hangup_ms > 86_400_000 {
                p.push(invalid(
                    format!("{at}: hangup_ms"),
                    "at most 86400000 (a day)",
                ));
            }
            let test_peers = match (&target, &r.test_peers) {
                (Target::Echo | Target::Tone, None) => Ok(vec![
                    IpNet::V4(ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::LOCALHOST, 8)),
                    IpNet::V6(ipnet::Ipv6Net::new_assert(
                        std::net::Ipv6Addr::LOCALHOST,
                        128,
                    )),
                ]),
                (Target::Echo | Target::Tone, Some(list)) => list
                    .iter()
                    .map(|n| {
                        parse_net(n).ok_or_else(|| {
                            invalid(
                                format!("{at}: test_peers"),
                                format!("{n:?} is not a CIDR or address"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>(),
                (_, None) => Ok(Vec::new()),
                (_, Some(_)) => Err(invalid(
                    format!("{at}: test_peers"),
                    "only the echo and tone test services take test_peers",
                )),
            };
            let Some(test_peers) = p.take(test_peers) else {
                continue;
            };
            routes.push(Route {
                number: r.number.clone(),
                target,
                ring: std::time::Duration::from_millis(r.ring_ms),
                hangup: (r.hangup_ms > 0).then(|| std::time::Duration::from_millis(r.hangup_ms)),
                test_peers,
            });
        }

        let (
            Some(public_address),
            Some(rtp_ports),
            Some(admin_listen),
            Some(agents),
            Some(firewall),
            Some(mask),
            Some(dial_default_deny),
        ) = (
            public_address,
            rtp_ports,
            admin_listen,
            agents,
            firewall,
            mask,
            dial_default_deny,
        )
        else {
            return Err(p.into_error());
        };
        if !p.is_empty() {
            return Err(p.into_error());
        }
        Ok(Self {
            sip_udp,
            sip_tcp,
            sip_tls,
            tls_certificate: f.sip.tls_certificate,
            tls_private_key: f.sip.tls_private_key,
            public_auto: f.sip.public_address.as_deref() == Some("auto"),
            public_address,
            limits: crate::sip::message::Limits {
                max_size: f.sip.max_message_size,
                max_headers: f.sip.max_headers,
                max_line: f.sip.max_line_length,
            },
            partial_message_timeout: std::time::Duration::from_millis(
                f.sip.partial_message_timeout_ms.max(100),
            ),
            t1: std::time::Duration::from_millis(f.sip.t1_ms),
            max_connections: f.sip.max_connections,
            max_connections_per_peer: f.sip.max_connections_per_peer,
            rtp_ports,
            rtp_timeout: (f.media.rtp_timeout_s > 0)
                .then(|| std::time::Duration::from_secs(f.media.rtp_timeout_s)),
            max_call: (f.media.max_call_s > 0)
                .then(|| std::time::Duration::from_secs(f.media.max_call_s)),
            media_shards: (f.media.shards > 0).then_some(f.media.shards as usize),
            admin_listen,
            role_groups: [
                f.admin.viewer_group,
                f.admin.auditor_group,
                f.admin.admin_group,
                f.admin.approver_group,
            ],
            approval_window: std::time::Duration::from_secs(f.admin.approval_window_s),
            oversight,
            break_glass: f.incident.break_glass,
            socket_group: f.admin.socket_group,
            agents,
            firewall,
            retention_days: f.records.retention_days,
            records_min_free: f.records.min_free_mb.saturating_mul(1 << 20),
            mask,
            trunks,
            routes,
            queues,
            profiles,
            dial,
            dial_default_deny,
        })
    }

    /// Why `media`, an SDP address from the SIP peer `peer`, may not have
    /// media sent to it (the `sdp_address_refused_total` label), if so:
    /// its scope is not one the peer's trunk allows (see
    /// [`Trunk::media_allowed`]; a peer of no trunk gets public only), or,
    /// from a peer that is not a trusted trunk's, it is not the peer's own
    /// address.
    ///
    /// Restricted latching: a carrier on a trusted trunk may keep its
    /// media on other hosts than its signalling, but an untrusted peer
    /// could name a victim and then forge one packet from it to start a
    /// stream there. So, as SBCs restrict latching to the signalling
    /// peer's IP on access trunks, an untrusted peer's media must come
    /// from the address that signals.
    pub fn media_refused(&self, peer: IpAddr, media: IpAddr) -> Option<&'static str> {
        let trunk = self.trunk_for(peer).and_then(|t| self.trunks.get(t));
        let allowed = match trunk {
            Some(t) => t.media_allowed(media),
            None => match AddrScope::of(media) {
                AddrScope::Public => Ok(()),
                other => Err(other),
            },
        };
        if let Err(scope) = allowed {
            return Some(scope.name());
        }
        let trusted = trunk.is_some_and(|t| t.trusted);
        (!trusted && crate::unmapped(media) != crate::unmapped(peer))
            .then_some(NOT_SIGNALLING_SOURCE)
    }

    /// The trunk whose peer networks hold `ip` (the first, in file order).
    pub fn trunk_for(&self, ip: IpAddr) -> Option<usize> {
        self.trunks
            .iter()
            .position(|t| crate::in_networks(&t.peers, ip))
    }

    /// Whether `ip` belongs to a trusted trunk: the first trunk whose
    /// peers hold it decides, as for the IDS.
    pub fn trusted_peer(&self, ip: IpAddr) -> bool {
        self.trunk_for(ip)
            .and_then(|t| self.trunks.get(t))
            .is_some_and(|t| t.trusted)
    }

    /// Every trunk's peer networks in file order, each with whether its
    /// trunk is trusted (what the IDS needs).
    pub fn peer_networks(&self) -> Vec<(IpNet, bool)> {
        self.trunks
            .iter()
            .flat_map(|t| t.peers.iter().map(move |n| (*n, t.trusted)))
            .collect()
    }

    /// Where `number` is routed: its own route, else the `*` route.
    /// The index of the trunk `id` names now (per-trunk state is kept in
    /// the configuration's order), if it is still configured.
    pub fn trunk_index(&self, id: &TrunkId) -> Option<usize> {
        self.trunks.iter().position(|t| t.name == id.name())
    }

    /// The queue `id` names, if it is still configured.
    pub fn queue(&self, id: &QueueId) -> Option<&Queue> {
        self.queues.iter().find(|q| q.name == id.name())
    }

    pub fn route(&self, number: &str) -> Option<&Route> {
        self.exact_route(number)
            .or_else(|| self.routes.iter().find(|r| r.number == "*"))
    }

    /// The route for exactly `number`, not the catch-all.
    pub fn exact_route(&self, number: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.number == number)
    }

    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.name == name)
    }

    /// The trunk an agent's call to the E.164 `number` leaves by, from the
    /// dial plan; `None` means "the first usable trunk".
    pub fn dial_trunk(&self, number: &str) -> Option<usize> {
        self.dial
            .iter()
            .find(|(p, _)| number.starts_with(p.as_str()))
            .map(|(_, t)| *t)
    }
}

/// A CIDR, or a bare address as its host network.
fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .ok()
}

/// "20000-39999" with an even start, above 1023, at least two ports.
fn parse_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-')?;
    let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a >= 1024 && a % 2 == 0 && b > a).then_some((a, b))
}

/// The directory for state: `--data-dir`, else `$STATE_DIRECTORY` (set by
/// systemd's StateDirectory=), else `./tollgate-data`.
pub fn data_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("STATE_DIRECTORY").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("tollgate-data"))
}

/// The address `"auto"` stands for: the one the kernel would send from
/// towards the internet (the interface holding the default route), else,
/// on a network with no default route (an isolated trunk network), the
/// first global IPv4 address of any interface (`if-addrs`, which reads
/// getifaddrs). A UDP connect picks the route and sends nothing; its
/// target is a documentation address (RFC 5737), reached through the
/// default route like any other.
pub(crate) fn default_route_address() -> Option<IpAddr> {
    let routed = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:5060")?;
            s.local_addr()
        })
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified());
    routed.or_else(|| {
        let mut v4: Vec<std::net::Ipv4Addr> = if_addrs::get_if_addrs()
            .ok()?
            .into_iter()
            .filter_map(|i| match i.ip() {
                IpAddr::V4(a) if !a.is_loopback() && !a.is_link_local() => Some(a),
                _ => None,
            })
            .collect();
        v4.sort();
        v4.first().copied().map(IpAddr::V4)
    })
}

#[cfg(test)]
mod tests;
