//! The appliance's master key, and sealing with it.
//!
//! Secrets the appliance keeps on disk (the agent CA's private key, agents'
//! TOTP secrets; later the record store's data keys) are sealed with
//! AES-256-GCM under a master key that lives outside the data directory: a
//! systemd credential (`$CREDENTIALS_DIRECTORY/master-key`), a file named
//! with `--master-key` or `TOLLGATE_MASTER_KEY`, or, for development only,
//! a file beside the data directory made on first start. A copy of the data
//! directory alone reveals none of them.
//!
//! Each sealed blob names what it is for (the associated data), so a blob
//! moved from one purpose to another fails to open.
//!
//! `admin::rotate` re-seals all of it under a new master key.

use std::io::Write;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::crypto::aead::{Aead, AesGcm, NONCE_LEN, TAG_LEN};
use crate::crypto::random;

/// Sealed blobs start with this (format version 1).
const MAGIC: &[u8; 4] = b"TGS1";
pub const KEY_LEN: usize = 32;

/// Why a key could not be had or a blob not opened. Never carries key
/// material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("master key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("master key {0}: must hold 32 bytes, raw or as 64 hex digits")]
    BadLength(PathBuf),
    #[error("sealed data is damaged, or was sealed under another master key")]
    Unseal,
    #[error("the system random generator failed")]
    Random,
}

impl From<crate::crypto::RandomFailed> for KeyError {
    fn from(_: crate::crypto::RandomFailed) -> Self {
        Self::Random
    }
}

/// Where the master key comes from, in order: an explicit path, the
/// systemd credential, the `TOLLGATE_MASTER_KEY` file, and last a
/// development key beside (never inside) the data directory.
pub fn master_key_path(explicit: Option<&Path>, data_dir: &Path) -> (PathBuf, bool) {
    if let Some(p) = explicit {
        return (p.to_path_buf(), false);
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let p = Path::new(&dir).join("master-key");
        if p.exists() {
            return (p, false);
        }
    }
    if let Some(p) = std::env::var_os("TOLLGATE_MASTER_KEY") {
        return (PathBuf::from(p), false);
    }
    let mut name = data_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "tollgate-data".into());
    name.push(".master-key");
    (data_dir.with_file_name(name), true)
}

/// A key's public name: 16 hex digits of a domain-separated SHA-256 of
/// it. It tells keys apart in messages and the audit trail (which key the
/// data is sealed under, which one was given) and reveals nothing usable
/// about a 256-bit random key.
pub fn key_id(key: &[u8; KEY_LEN]) -> String {
    let mut input = Zeroizing::new(Vec::with_capacity(32 + KEY_LEN));
    input.extend_from_slice(b"tollgate master key id\0");
    input.extend_from_slice(key);
    let d = ring::digest::digest(&ring::digest::SHA256, &input);
    data_encoding::HEXLOWER.encode(&d.as_ref()[..8])
}

/// Reads a key file: 32 raw bytes, or 64 hex digits (whitespace around
/// them ignored).
pub fn parse_key(bytes: &[u8]) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    let text = std::str::from_utf8(bytes).map(str::trim).unwrap_or("");
    if bytes.len() == KEY_LEN {
        key.copy_from_slice(bytes);
    } else if text.len() == 2 * KEY_LEN
        && data_encoding::HEXLOWER_PERMISSIVE
            .decode_mut(text.as_bytes(), &mut key[..])
            .is_ok()
    {
    } else {
        return None;
    }
    Some(key)
}

/// Makes a new random master key.
pub fn new_key() -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    random(&mut key[..])?;
    Ok(key)
}

/// Seals and opens blobs under the master key. No `Debug`, no `Clone`; the
/// key schedule is wiped on drop.
pub struct Sealer(AesGcm, String);

impl Sealer {
    /// A sealer from 32 key bytes.
    pub fn from_key(key: &[u8; KEY_LEN]) -> Self {
        // A 32-byte key always makes an AES-256 cipher.
        #[allow(clippy::expect_used)]
        Self(AesGcm::new(key).expect("32-byte key"), key_id(key))
    }

    /// The key's id ([`key_id`]).
    pub fn id(&self) -> &str {
        &self.1
    }

    /// The master key at `path`, `dev` when it is the development key
    /// beside the data directory ([`master_key_path`]): made on first use,
    /// with a warning that says it is for trying Tollgate out only.
    pub fn load_master(path: &Path, dev: bool) -> Result<Self, KeyError> {
        if dev && !path.exists() {
            tracing::warn!(
                path = %path.display(),
                "no master key given: made a DEVELOPMENT key beside the data directory, for trying Tollgate out only; in production give the systemd credential master-key or --master-key FILE"
            );
        }
        Self::load(path, dev)
    }

    /// Reads the master key at `path`; with `create`, makes a new random one
    /// (mode 0600) when there is none.
    pub fn load(path: &Path, create: bool) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let key = new_key()?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                match write_private(path, &key[..], false) {
                    Ok(()) => return Ok(Self::from_key(&key)),
                    // Another process made it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Zeroizing::new(std::fs::read(path).map_err(io)?)
                    }
                    Err(e) => return Err(io(e)),
                }
            }
            Err(e) => return Err(io(e)),
        };
        let key = parse_key(&bytes).ok_or_else(|| KeyError::BadLength(path.to_path_buf()))?;
        Ok(Self::from_key(&key))
    }

    /// Seals `plain` for `purpose`: magic, a random nonce, the ciphertext
    /// and the tag.
    pub fn seal(&self, purpose: &str, plain: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce)?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self.0.seal(&nonce, purpose.as_bytes(), &mut out[start..]);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Opens a blob sealed for `purpose`.
    pub fn open(&self, purpose: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let body = sealed.strip_prefix(MAGIC).ok_or(KeyError::Unseal)?;
        if body.len() < NONCE_LEN + TAG_LEN {
            return Err(KeyError::Unseal);
        }
        let (nonce, rest) = body.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut plain = Zeroizing::new(ct.to_vec());
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| KeyError::Unseal)?;
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| KeyError::Unseal)?;
        self.0
            .open(&nonce, purpose.as_bytes(), &mut plain, &tag)
            .map_err(|_| KeyError::Unseal)?;
        Ok(plain)
    }
}

/// The master key of a running gateway, shared by whatever seals or opens
/// under it after start (agents' TOTP secrets at login) and replaced whole
/// when it rotates. Taken once per login, never per packet.
pub struct Master(std::sync::RwLock<std::sync::Arc<Sealer>>);

impl Master {
    pub fn new(sealer: Sealer) -> Self {
        Self(std::sync::RwLock::new(std::sync::Arc::new(sealer)))
    }

    /// The key now.
    pub fn current(&self) -> std::sync::Arc<Sealer> {
        // The value is replaced whole, so a poisoned lock still holds a
        // usable key.
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Switches to `new` (after the data on disk was re-sealed under it).
    pub fn replace(&self, new: std::sync::Arc<Sealer>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = new;
    }
}

/// Writes `bytes` to a new file readable by its owner only; with `replace`,
/// through a temporary file renamed over `path` (so readers never see half a
/// file), else failing if `path` exists.
pub fn write_private(path: &Path, bytes: &[u8], replace: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let target = if replace {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        path.with_file_name(name)
    } else {
        path.to_path_buf()
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(0o600);
    if replace {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(&target)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    if replace {
        std::fs::rename(&target, path)?;
    }
    // The rename (or the new name) is durable only once its directory is.
    sync_parent(path)
}

/// Syncs the directory holding `path`, so a new name or a rename in it
/// survives a crash.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tollgate-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn seal_round_trips_and_binds_purpose_and_key() {
        let a = Sealer::from_key(&[7; 32]);
        let b = Sealer::from_key(&[8; 32]);
        let sealed = a.seal("ca-key", b"secret bytes").expect("seal");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            &a.open("ca-key", &sealed).expect("open")[..],
            b"secret bytes"
        );
        assert!(matches!(a.open("totp", &sealed), Err(KeyError::Unseal)));
        assert!(matches!(b.open("ca-key", &sealed), Err(KeyError::Unseal)));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(a.open("ca-key", &bad).is_err(), "flip at {i}");
        }
        assert!(a.open("ca-key", &sealed[..20]).is_err());
        // Two seals of one secret differ (fresh nonce).
        assert_ne!(sealed, a.seal("ca-key", b"secret bytes").expect("seal"));
    }

    #[test]
    fn master_key_is_made_once_private_and_outside_the_data_dir() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("master");
        let data = d.join("data");
        let (path, dev) = master_key_path(None, &data);
        assert!(dev);
        assert!(!path.starts_with(&data), "{path:?} is inside {data:?}");
        let a = Sealer::load(&path, true).expect("create");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = a.seal("x", b"y").expect("seal");
        let b = Sealer::load(&path, true).expect("reload");
        assert_eq!(&b.open("x", &sealed).expect("same key")[..], b"y");
        assert!(Sealer::load(&d.join("absent"), false).is_err());
        std::fs::write(d.join("short"), b"abc").expect("write");
        assert!(matches!(
            Sealer::load(&d.join("short"), false),
            Err(KeyError::BadLength(_))
        ));
        std::fs::write(d.join("hex"), "ab".repeat(32) + "\n").expect("write");
        assert!(Sealer::load(&d.join("hex"), false).is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }
}
