//! Trunks: `[[trunk]]` as written ([`TrunkFile`], with its
//! `[trunk.register]` credentials) and validated ([`Trunk`]): the peers'
//! networks, transport, codecs, SRTP policy, media scopes, registration.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use super::{invalid, ConfigError};
use crate::sip::sdp::{AddrScope, Codec, SrtpMode};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkFile {
    pub name: String,
    pub peers: Vec<String>,
    pub address: Option<String>,
    #[serde(default = "default_transport")]
    pub transport: String,
    #[serde(default = "default_codecs")]
    pub codecs: Vec<String>,
    /// SDES SRTP: "off", "offered" or "required". Defaults to "offered"
    /// where SDES is safe (a TLS trunk, or an inbound-only one, where it
    /// applies to offers that arrive over TLS), else "off".
    #[serde(default)]
    pub srtp: Option<String>,
    #[serde(default)]
    pub country_code: Option<String>,
    #[serde(default)]
    pub register: Option<RegisterFile>,
    /// Seconds between OPTIONS keepalives to `address`; 0 turns them off.
    #[serde(default = "default_keepalive")]
    pub keepalive_s: u64,
    /// For `transport = "tls"` with an address: the PEM file of the CA
    /// certificates that sign the carrier's certificate.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// The name the carrier's certificate must carry; defaults to the
    /// address's IP.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// A carrier's trunk (the default): its peers are never banned by the
    /// IDS, only rate-limited at `carriers.limit_factor` times the limits.
    /// Its P-Asserted-Identity is believed (RFC 3325's trust domain).
    /// `false` for a trunk open to a wide network (SIP from the internet),
    /// whose sources the IDS bans like any other.
    #[serde(default = "default_trusted")]
    pub trusted: bool,
    /// Address scopes the trunk's SDP may name for media: any of
    /// "public", "private" and "loopback". Defaults to "public" plus the
    /// scopes of the trunk's own peer networks (a carrier peering over a
    /// private interconnect sends private media addresses).
    #[serde(default)]
    pub media_addresses: Option<Vec<String>>,
    /// Calls at once on this trunk, in and out (so one trunk cannot take
    /// every slot). Defaults to 4000 for a trusted trunk and 500 for an
    /// untrusted one; at most 5000, the gateway's own limit.
    #[serde(default)]
    pub max_calls: Option<u32>,
    /// SDES (`srtp` offered or required) over UDP or TCP, where anyone on
    /// the path reads the key. Off by default: SDES is used only over TLS.
    #[serde(default)]
    pub insecure_sdes_over_cleartext: bool,
}

fn default_trusted() -> bool {
    true
}

fn default_keepalive() -> u64 {
    30
}

fn default_transport() -> String {
    "udp".into()
}
fn default_codecs() -> Vec<String> {
    vec!["PCMU".into(), "PCMA".into(), "G722".into()]
}
/// Digest credentials for a registration trunk. The password is never
/// printed (no `Debug` of its value).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterFile {
    pub username: String,
    /// The password written here; better, `password_file`.
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding only the password (mode 0600 or 0640), such as a
    /// systemd credential: `$CREDENTIALS_DIRECTORY/carrier-password`.
    #[serde(default)]
    pub password_file: Option<String>,
    #[serde(default = "default_expires")]
    pub expires: u32,
}

impl std::fmt::Debug for RegisterFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterFile")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

fn default_expires() -> u32 {
    3600
}

/// SIP transport of a trunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// A validated trunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Trunk {
    pub name: String,
    pub peers: Vec<IpNet>,
    pub address: Option<SocketAddr>,
    pub transport: Transport,
    pub codecs: Vec<Codec>,
    pub srtp: SrtpMode,
    pub country_code: Option<String>,
    pub register: Option<Register>,
    /// OPTIONS keepalive interval, when the trunk has an address.
    pub keepalive: Option<std::time::Duration>,
    /// For TLS trunks: (CA file, server name) to verify the carrier by.
    pub tls: Option<(PathBuf, String)>,
    /// Never banned by the IDS (see [`TrunkFile::trusted`]).
    pub trusted: bool,
    /// Address scopes its SDP may name for media (see
    /// [`TrunkFile::media_addresses`]).
    pub media_scopes: Vec<AddrScope>,
    /// Calls at once on this trunk (see [`TrunkFile::max_calls`]).
    pub max_calls: u32,
    /// SDES allowed over UDP and TCP (see
    /// [`TrunkFile::insecure_sdes_over_cleartext`]).
    pub sdes_in_clear: bool,
}

impl Trunk {
    /// The SRTP mode for a message that came `over_tls` or not: SDES only
    /// where the key cannot be read on the way (TLS), unless the operator
    /// accepted keys in clear. `None`: SRTP is required but could only be
    /// keyed in clear, so the call is refused rather than taken plain.
    pub fn srtp_over(&self, over_tls: bool) -> Option<SrtpMode> {
        match (self.srtp, over_tls || self.sdes_in_clear) {
            (mode, true) => Some(mode),
            (SrtpMode::Required, false) => None,
            (_, false) => Some(SrtpMode::Off),
        }
    }

    /// Whether this trunk's SDP may send media to `ip`; the refused
    /// address's scope if not.
    pub fn media_allowed(&self, ip: IpAddr) -> Result<(), AddrScope> {
        let scope = AddrScope::of(ip);
        if self.media_scopes.contains(&scope) {
            Ok(())
        } else {
            Err(scope)
        }
    }
}

/// A registration password from the configuration or from its file
/// (`$CREDENTIALS_DIRECTORY/` at the start is systemd's credentials
/// directory). Exactly one of the two.
pub(super) fn register_password(
    at: &str,
    inline: Option<String>,
    file: Option<&str>,
) -> Result<(zeroize::Zeroizing<String>, Option<PathBuf>), ConfigError> {
    match (inline, file) {
        (Some(p), None) => Ok((zeroize::Zeroizing::new(p), None)),
        (None, Some(f)) => {
            let path = match f.strip_prefix("$CREDENTIALS_DIRECTORY/") {
                Some(name) => {
                    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                        invalid(
                            format!("{at}: register.password_file"),
                            "$CREDENTIALS_DIRECTORY is not set (not started by systemd with LoadCredential=)",
                        )
                    })?;
                    PathBuf::from(dir).join(name)
                }
                None => PathBuf::from(f),
            };
            let text = std::fs::read_to_string(&path).map_err(|e| {
                invalid(
                    format!("{at}: register.password_file"),
                    format!("{}: {e}", path.display()),
                )
            })?;
            let text = zeroize::Zeroizing::new(text);
            let password = text.trim_end_matches(['\r', '\n']).to_string();
            Ok((zeroize::Zeroizing::new(password), Some(path)))
        }
        _ => Err(invalid(
            format!("{at}: register"),
            "give password_file (a file only the gateway reads) or password, not both",
        )),
    }
}

/// Validated registration credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Register {
    pub username: String,
    pub password: zeroize::Zeroizing<String>,
    /// Where the password came from, if not the configuration itself.
    pub password_file: Option<PathBuf>,
    pub expires: u32,
}

impl std::fmt::Debug for Register {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Register({}, expires {})", self.username, self.expires)
    }
}

/// Validates `[[trunk]]` number `i`, given the trunks before it.
pub(super) fn validate_trunk(
    i: usize,
    t: TrunkFile,
    earlier: &[Trunk],
) -> Result<Trunk, ConfigError> {
    let at = format!("trunk[{i}] {:?}", t.name);
    if t.name.is_empty()
        || !t
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid(at, "name must be letters, digits, '-' or '_'"));
    }
    if earlier.iter().any(|x| x.name == t.name) {
        return Err(invalid(at, "duplicate trunk name"));
    }
    if t.peers.is_empty() {
        return Err(invalid(at, "peers: at least one network"));
    }
    let peers: Vec<IpNet> = t
        .peers
        .iter()
        .enumerate()
        .map(|(j, p)| {
            super::parse_net(p)
                .ok_or_else(|| invalid(format!("{at}: peers[{j}]"), format!("{p:?} is not a CIDR")))
        })
        .collect::<Result<_, _>>()?;
    let address = t
        .address
        .as_ref()
        .map(|a| {
            a.parse().map_err(|_| {
                invalid(
                    format!("{at}: address"),
                    format!("{a:?} is not an address:port"),
                )
            })
        })
        .transpose()?;
    let transport = match t.transport.to_ascii_lowercase().as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        "tls" => Transport::Tls,
        other => {
            return Err(invalid(
                format!("{at}: transport"),
                format!("{other:?}: use udp, tcp or tls"),
            ))
        }
    };
    let tls = match (transport, address) {
        (Transport::Tls, Some(addr)) => {
            let addr: SocketAddr = addr;
            let ca = t.tls_ca.clone().ok_or_else(|| {
                invalid(
                    format!("{at}: tls_ca"),
                    "a TLS trunk with an address needs the CA file that signs the carrier's certificate",
                )
            })?;
            let name = t
                .tls_server_name
                .clone()
                .unwrap_or_else(|| addr.ip().to_string());
            if rustls::pki_types::ServerName::try_from(name.clone()).is_err() {
                return Err(invalid(
                    format!("{at}: tls_server_name"),
                    format!("{name:?} is not a DNS name or IP"),
                ));
            }
            Some((ca, name))
        }
        _ => None,
    };
    let codecs = t
        .codecs
        .iter()
        .map(|c| {
            Codec::from_name(c)
                .filter(|c| *c != Codec::TelephoneEvent)
                .ok_or_else(|| {
                    invalid(
                        format!("{at}: codecs"),
                        format!("{c:?}: use PCMU, PCMA or G722"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if codecs.is_empty() {
        return Err(invalid(format!("{at}: codecs"), "at least one codec"));
    }
    let srtp_default = if transport == Transport::Tls || address.is_none() {
        "offered"
    } else {
        "off"
    };
    let srtp = match t.srtp.as_deref().unwrap_or(srtp_default) {
        "off" => SrtpMode::Off,
        "offered" => SrtpMode::Offered,
        "required" => SrtpMode::Required,
        other => {
            return Err(invalid(
                format!("{at}: srtp"),
                format!("{other:?}: use off, offered or required"),
            ))
        }
    };
    if let Some(cc) = &t.country_code {
        if cc.is_empty() || cc.len() > 3 || !cc.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                format!("{at}: country_code"),
                "one to three digits",
            ));
        }
    }
    let register = match t.register {
        None => None,
        Some(r) => {
            if address.is_none() {
                return Err(invalid(
                    format!("{at}: register"),
                    "needs the trunk's address",
                ));
            }
            let (password, password_file) =
                register_password(&at, r.password, r.password_file.as_deref())?;
            if r.username.is_empty() || password.is_empty() {
                return Err(invalid(
                    format!("{at}: register"),
                    "username and password must not be empty",
                ));
            }
            if !(60..=86_400).contains(&r.expires) {
                return Err(invalid(
                    format!("{at}: register.expires"),
                    "60 to 86400 seconds",
                ));
            }
            Some(Register {
                username: r.username,
                password,
                password_file,
                expires: r.expires,
            })
        }
    };
    let media_scopes = super::scope::media_scopes(&at, t.media_addresses.as_deref(), &peers)?;
    if srtp != SrtpMode::Off
        && transport != Transport::Tls
        && address.is_some()
        && !t.insecure_sdes_over_cleartext
    {
        return Err(invalid(
            format!("{at}: srtp"),
            "SDES puts the SRTP key inside the SIP message, so over UDP or TCP anyone on the path reads it (RFC 4568 section 8.3 requires TLS): use transport = \"tls\", or srtp = \"off\", or accept keys in clear with insecure_sdes_over_cleartext = true",
        ));
    }
    let max_calls = t.max_calls.unwrap_or(if t.trusted { 4000 } else { 500 });
    if !(1..=5000).contains(&max_calls) {
        return Err(invalid(format!("{at}: max_calls"), "1 to 5000 calls"));
    }
    Ok(Trunk {
        media_scopes,
        max_calls,
        sdes_in_clear: t.insecure_sdes_over_cleartext,
        name: t.name,
        peers,
        address,
        transport,
        codecs,
        srtp,
        country_code: t.country_code,
        register,
        keepalive: (t.keepalive_s > 0 && address.is_some())
            .then(|| std::time::Duration::from_secs(t.keepalive_s)),
        tls,
        trusted: t.trusted,
    })
}
