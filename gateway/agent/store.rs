//! Enrolled agents, in `agents/agents.json` under the data directory.
//!
//! The file is shared by the `tollgate agent` commands and a running
//! gateway: writers take an exclusive lock on `agents.lock`, write a new
//! file and rename it over the old one, so a reader never sees half a
//! file; the gateway notices a new file (its inode changes) within a poll
//! and applies revocations at once. TOTP secrets are stored sealed under
//! the master key; certificates are known by their SHA-256 fingerprint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::pki::{Ca, PkiError, SERVER_NAME};
use super::totp::Secret;
use crate::keys::{write_private, KeyError, Sealer};

const TOTP_PURPOSE: &str = "tollgate agent TOTP v1";
const FORMAT: u32 = 1;
/// Most agents enrolled at once.
pub const MAX_AGENTS: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: damaged ({what})")]
    Damaged { path: PathBuf, what: String },
    #[error("agent names are 1 to 64 letters, digits, '.', '-' or '_'")]
    BadName,
    #[error("profile names are 1 to 64 letters, digits, '-' or '_'")]
    BadProfile,
    #[error("no profile named {0:?} in the configuration (add its [[profile]] first)")]
    UnknownProfile(String),
    #[error("an agent named {0:?} is enrolled already (revoke it first)")]
    Exists(String),
    #[error("no enrolled agent named {0:?}")]
    NoSuchAgent(String),
    #[error("too many agents enrolled")]
    Full,
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A profile name the configuration holds. Enrolment takes only this, so
/// no agent is ever enrolled with a profile that does not exist (such an
/// agent could not dial: the dial check fails closed).
#[derive(Clone, Copy, Debug)]
pub struct KnownProfile<'a>(&'a str);

impl<'a> KnownProfile<'a> {
    /// `name` if `config` has a `[[profile]]` of that name.
    pub fn check(name: &'a str, config: &crate::config::Config) -> Result<Self, StoreError> {
        if !valid_name(name, b"") {
            return Err(StoreError::BadProfile);
        }
        if config.profile(name).is_none() {
            return Err(StoreError::UnknownProfile(name.to_string()));
        }
        Ok(Self(name))
    }

    pub fn name(&self) -> &'a str {
        self.0
    }
}

/// The active agents of `agents` whose profile `config` does not hold,
/// as "agent (profile)" for a message. A reload that would leave any is
/// refused; at start they are named in the log (they cannot dial).
pub fn orphans(agents: &[Agent], config: &crate::config::Config) -> Vec<String> {
    agents
        .iter()
        .filter(|a| a.active())
        .filter_map(|a| {
            let p = a.profile.as_deref()?;
            config
                .profile(p)
                .is_none()
                .then(|| format!("{} ({p:?})", a.name))
        })
        .collect()
}

/// One enrolment. An agent re-enrolled after a revocation has a second
/// record; the revoked one stays, so its certificate stays refused.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Agent {
    pub name: String,
    #[serde(default)]
    pub profile: Option<String>,
    /// SHA-256 of the client certificate's DER, hex.
    pub fingerprint: String,
    /// The TOTP secret sealed under the master key, base64.
    pub totp: String,
    /// Unix seconds.
    pub enrolled: u64,
    #[serde(default)]
    pub revoked: Option<u64>,
}

impl Agent {
    pub fn active(&self) -> bool {
        self.revoked.is_none()
    }

    /// The agent's TOTP secret.
    pub fn totp_secret(&self, sealer: &Sealer) -> Result<Secret, KeyError> {
        use base64::Engine;
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&self.totp)
            .map_err(|_| KeyError::Unseal)?;
        let plain = sealer.open(TOTP_PURPOSE, &sealed)?;
        Ok(Secret::new(&plain))
    }
}

#[derive(Serialize, Deserialize)]
struct Registry {
    format: u32,
    agents: Vec<Agent>,
}

/// What an agent needs to connect, apart from its TOTP secret: written to
/// the file `tollgate agent enroll --out` names (mode 0600), read by
/// `tollgate agent connect --identity`.
#[derive(Serialize, Deserialize)]
pub struct Bundle {
    pub name: String,
    /// host:port of the gateway's QUIC listener.
    pub gateway: String,
    /// The name in the gateway's certificate.
    pub server_name: String,
    pub ca: String,
    pub certificate: String,
    pub private_key: Zeroizing<String>,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("name", &self.name)
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

impl Bundle {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
        );
        toml::from_str(&text).map_err(|e| format!("{}: not an agent bundle: {e}", path.display()))
    }
}

/// A new enrolment's outputs: the bundle to hand to the agent and the TOTP
/// provisioning URI to show once.
pub struct Enrolment {
    pub bundle: Zeroizing<String>,
    pub otp_uri: Zeroizing<String>,
    pub agent: Agent,
}

fn valid_name(s: &str, extra: &[u8]) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || extra.contains(&b))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The agents directory of a data directory.
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("agents"),
        }
    }

    /// Where the CA and the registry live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("agents.json")
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    }

    /// Every enrolment, revoked ones included; none when there is no file.
    pub fn load(&self) -> Result<Vec<Agent>, StoreError> {
        let path = self.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(&path)(e)),
        };
        let r: Registry = serde_json::from_str(&text).map_err(|e| StoreError::Damaged {
            path: path.clone(),
            what: e.to_string(),
        })?;
        if r.format != FORMAT {
            return Err(StoreError::Damaged {
                path,
                what: format!("format {} (this version reads {FORMAT})", r.format),
            });
        }
        Ok(r.agents)
    }

    /// Takes the writers' lock (released when the file is dropped).
    fn lock(&self) -> Result<std::fs::File, StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(self.io(&self.dir))?;
        let lock_path = self.dir.join("agents.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(self.io(&lock_path))?;
        lock.lock().map_err(self.io(&lock_path))?;
        Ok(lock)
    }

    fn render(&self, agents: Vec<Agent>) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec_pretty(&Registry {
            format: FORMAT,
            agents,
        })
        .map_err(|e| StoreError::Damaged {
            path: self.path(),
            what: e.to_string(),
        })
    }

    /// Loads under the lock, applies `f`, writes the result back.
    fn update<R>(
        &self,
        f: impl FnOnce(&mut Vec<Agent>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let _lock = self.lock()?;
        let mut agents = self.load()?;
        let r = f(&mut agents)?;
        let text = self.render(agents)?;
        let path = self.path();
        write_private(&path, &text, true).map_err(self.io(&path))?;
        Ok(r)
    }

    /// For a master-key rotation: the registry (every TOTP secret) and the
    /// CA's key re-sealed under `new`, with the writers' lock held until
    /// the stage is dropped, so no enrolment slips in under the old key.
    pub fn stage_master(&self, old: &Sealer, new: &Sealer) -> Result<StagedAgents, StoreError> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let lock = self.lock()?;
        let mut files = Vec::new();
        if let Some(ca) = Ca::resealed_key(&self.dir, old, new)? {
            files.push(ca);
        }
        let mut agents = self.load()?;
        let count = agents.len();
        if self.path().exists() {
            for a in &mut agents {
                let secret = a.totp_secret(old)?;
                a.totp = b64.encode(new.seal(TOTP_PURPOSE, secret.bytes())?);
            }
            files.push((self.path(), self.render(agents)?));
        }
        Ok(StagedAgents {
            _lock: lock,
            files,
            agents: count,
        })
    }

    /// Enrols `name`: issues its certificate, makes its TOTP secret, and
    /// returns the bundle for an agent reaching the gateway at `gateway`.
    pub fn enroll(
        &self,
        sealer: &Sealer,
        name: &str,
        profile: Option<KnownProfile<'_>>,
        gateway: &str,
    ) -> Result<Enrolment, StoreError> {
        use base64::Engine;
        if !valid_name(name, b".") {
            return Err(StoreError::BadName);
        }
        let profile = profile.map(|p| p.name());
        // Everything under the lock: a master-key rotation takes it too,
        // so the CA key is opened, and the secret sealed, under the key
        // the registry is sealed under.
        let (ca, issued, secret, agent) = self.update(|agents| {
            if agents.iter().any(|a| a.name == name && a.active()) {
                return Err(StoreError::Exists(name.to_string()));
            }
            if agents.len() >= MAX_AGENTS {
                return Err(StoreError::Full);
            }
            let ca = Ca::open_or_create(&self.dir, sealer)?;
            let secret = Secret::random()?;
            let sealed = sealer.seal(TOTP_PURPOSE, secret.bytes())?;
            let issued = ca.issue_agent(name)?;
            let agent = Agent {
                name: name.to_string(),
                profile: profile.map(str::to_string),
                fingerprint: issued.fingerprint.clone(),
                totp: base64::engine::general_purpose::STANDARD.encode(sealed),
                enrolled: unix_now(),
                revoked: None,
            };
            agents.push(agent.clone());
            Ok((ca, issued, secret, agent))
        })?;
        let bundle = Bundle {
            name: name.to_string(),
            gateway: gateway.to_string(),
            server_name: SERVER_NAME.to_string(),
            ca: ca.cert_pem().to_string(),
            certificate: issued.cert_pem,
            private_key: issued.key_pem,
        };
        let text = toml::to_string(&bundle).map_err(|e| StoreError::Damaged {
            path: PathBuf::from("bundle"),
            what: e.to_string(),
        })?;
        Ok(Enrolment {
            bundle: Zeroizing::new(text),
            otp_uri: secret.uri("Tollgate", name),
            agent,
        })
    }

    /// Revokes every active enrolment of `name`.
    pub fn revoke(&self, name: &str) -> Result<(), StoreError> {
        let now = unix_now();
        self.update(|agents| {
            let mut found = false;
            for a in agents.iter_mut().filter(|a| a.name == name && a.active()) {
                a.revoked = Some(now);
                found = true;
            }
            if found {
                Ok(())
            } else {
                Err(StoreError::NoSuchAgent(name.to_string()))
            }
        })
    }
}

/// A rotation's re-sealed agent files, not yet in place; the writers' lock
/// is held until it is dropped.
pub struct StagedAgents {
    _lock: std::fs::File,
    /// Each file's path and new content.
    pub files: Vec<(PathBuf, Vec<u8>)>,
    /// Enrolments re-sealed (revoked ones included).
    pub agents: usize,
}

/// Notices when the registry file is replaced, for a running gateway.
pub struct Watch {
    store: Store,
    /// What the file looked like when last read (`None` inside: absent).
    seen: Option<Option<(u64, u64, std::time::SystemTime)>>,
}

impl Watch {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            store: Store::new(data_dir),
            seen: None,
        }
    }

    /// The registry if it changed since the last call (the first call
    /// always reads it).
    pub fn poll(&mut self) -> Option<Result<Vec<Agent>, StoreError>> {
        use std::os::unix::fs::MetadataExt;
        let id = std::fs::metadata(self.store.path()).ok().map(|m| {
            (
                m.ino(),
                m.len(),
                m.modified().unwrap_or(std::time::UNIX_EPOCH),
            )
        });
        if self.seen == Some(id) {
            return None;
        }
        self.seen = Some(id);
        Some(self.store.load())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enroll_revoke_and_watch() {
        let d = std::env::temp_dir().join(format!("tollgate-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let sealer = Sealer::from_key(&[5; 32]);
        let store = Store::new(&d);
        let mut watch = Watch::new(&d);
        assert_eq!(watch.poll().expect("first").expect("empty").len(), 0);
        assert!(watch.poll().is_none());

        let config =
            crate::config::Config::from_toml("[[profile]]\nname = \"sales\"\n").expect("config");
        assert!(matches!(
            KnownProfile::check("sale", &config),
            Err(StoreError::UnknownProfile(p)) if p == "sale"
        ));
        assert!(matches!(
            KnownProfile::check("a b", &config),
            Err(StoreError::BadProfile)
        ));
        let sales = KnownProfile::check("sales", &config).expect("sales");
        let e = store
            .enroll(&sealer, "alice", Some(sales), "127.0.0.1:4433")
            .expect("enroll");
        assert!(e
            .otp_uri
            .starts_with("otpauth://totp/Tollgate:alice?secret="));
        let bundle: Bundle = toml::from_str(&e.bundle).expect("bundle parses");
        assert_eq!(bundle.gateway, "127.0.0.1:4433");
        assert!(bundle.private_key.contains("PRIVATE KEY"));
        // The secret in the URI is the one stored sealed.
        let from_uri = Secret::parse(&e.otp_uri).expect("uri secret");
        let stored = store.load().expect("load");
        assert_eq!(stored.len(), 1);
        assert_eq!(
            stored[0].totp_secret(&sealer).expect("unseal").bytes(),
            from_uri.bytes()
        );
        let json = std::fs::read_to_string(store.path()).expect("file");
        assert!(!json.contains(from_uri.base32().as_str()));

        assert!(matches!(
            store.enroll(&sealer, "alice", None, "x:1"),
            Err(StoreError::Exists(_))
        ));
        for bad in ["", "a b", "x/../y", &"n".repeat(65)] {
            assert!(matches!(
                store.enroll(&sealer, bad, None, "x:1"),
                Err(StoreError::BadName)
            ));
        }
        let seen = watch.poll().expect("changed").expect("load");
        assert_eq!(seen.len(), 1);
        assert!(seen[0].active());
        // A configuration without "sales" orphans alice; with it, nobody.
        assert!(orphans(&seen, &config).is_empty());
        let without = crate::config::Config::from_toml("").expect("config");
        assert_eq!(orphans(&seen, &without), ["alice (\"sales\")"]);

        store.revoke("alice").expect("revoke");
        let seen = watch.poll().expect("changed").expect("load");
        assert!(!seen[0].active());
        assert!(matches!(
            store.revoke("alice"),
            Err(StoreError::NoSuchAgent(_))
        ));
        // Re-enrolled: a new certificate, the old one stays revoked.
        let again = store.enroll(&sealer, "alice", None, "x:1").expect("again");
        let all = store.load().expect("load");
        assert_eq!(all.len(), 2);
        assert_ne!(all[0].fingerprint, again.agent.fingerprint);
        assert!(!all[0].active() && all[1].active());
        let _ = std::fs::remove_dir_all(&d);
    }
}
