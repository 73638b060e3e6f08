//! The appliance's own certificate authority for agents, made with `rcgen`
//! on first start. Its certificate is `agents/ca.pem`; its private key is
//! kept only sealed under the master key (`agents/ca.key.sealed`, see
//! [`crate::keys`]), never in plain form on disk. It issues each agent's
//! client certificate at enrolment and, at every start, the QUIC server's
//! certificate (whose key lives only in memory).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::keys::{write_private, KeyError, Sealer};

/// The DNS name in the QUIC server's certificate, which agents check
/// (whatever address they reach the gateway by).
pub const SERVER_NAME: &str = "gateway.tollgate.invalid";
const SEAL_PURPOSE: &str = "tollgate agent CA key v1";
const CA_CN: &str = "Tollgate agent CA";
/// How long agent certificates last.
const AGENT_DAYS: i64 = 2 * 365;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{0}: not a PEM certificate")]
    BadCert(PathBuf),
}

/// The SHA-256 of a certificate's DER, in lower-case hex: how the gateway
/// knows an agent's certificate.
pub fn fingerprint(der: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(der))
}

/// A certificate and its private key, for an agent's bundle.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
    pub fingerprint: String,
}

/// The CA, able to issue. No `Debug`: it holds the CA key.
pub struct Ca {
    cert_pem: String,
    issuer: rcgen::Certificate,
    key: KeyPair,
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_CN);
    dn.push(DnType::OrganizationName, "Tollgate");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

fn validity(p: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(days);
}

fn random_serial() -> Result<SerialNumber, KeyError> {
    let mut s = [0u8; 16];
    crate::crypto::random(&mut s)?;
    s[0] &= 0x7f; // positive
    Ok(SerialNumber::from(s.to_vec()))
}

impl Ca {
    /// Opens the CA in `dir`, making it if there is none.
    pub fn open_or_create(dir: &Path, sealer: &Sealer) -> Result<Self, PkiError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PkiError::Io { path, source }
        };
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key.sealed");
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        if !cert_path.exists() {
            let key = KeyPair::generate()?;
            let mut p = ca_params();
            validity(&mut p, 20 * 365);
            p.serial_number = Some(random_serial()?);
            let cert = p.self_signed(&key)?;
            let sealed = sealer.seal(SEAL_PURPOSE, key.serialize_pem().as_bytes())?;
            write_private(&key_path, &sealed, true).map_err(io(&key_path))?;
            // The certificate last: its presence says the pair is complete.
            write_private(&cert_path, cert.pem().as_bytes(), true).map_err(io(&cert_path))?;
        }
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let sealed = std::fs::read(&key_path).map_err(io(&key_path))?;
        let key_pem = sealer.open(SEAL_PURPOSE, &sealed)?;
        let key_pem = std::str::from_utf8(&key_pem).map_err(|_| KeyError::Unseal)?;
        let key = KeyPair::from_pem(key_pem)?;
        // Issuing needs the CA's name and key, which these params rebuild
        // exactly; the stored certificate stays the trust anchor.
        let issuer = ca_params().self_signed(&key)?;
        Ok(Self {
            cert_pem,
            issuer,
            key,
        })
    }

    /// The sealed key file's path and its content re-sealed under `new`,
    /// for a master-key rotation; `None` when there is no CA yet.
    pub fn resealed_key(
        dir: &Path,
        old: &Sealer,
        new: &Sealer,
    ) -> Result<Option<(PathBuf, Vec<u8>)>, PkiError> {
        let key_path = dir.join("ca.key.sealed");
        let sealed = match std::fs::read(&key_path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(PkiError::Io {
                    path: key_path,
                    source,
                })
            }
        };
        let pem = old.open(SEAL_PURPOSE, &sealed)?;
        Ok(Some((key_path, new.seal(SEAL_PURPOSE, &pem)?)))
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> Result<CertificateDer<'static>, PkiError> {
        rustls_pemfile::certs(&mut self.cert_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| PkiError::BadCert("ca.pem".into()))
    }

    /// A client certificate for agent `name`.
    pub fn issue_agent(&self, name: &str) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.distinguished_name
            .push(DnType::OrganizationalUnitName, "agents");
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(random_serial()?);
        validity(&mut p, AGENT_DAYS);
        let cert = p.signed_by(&key, &self.issuer, &self.key)?;
        Ok(Issued {
            fingerprint: fingerprint(cert.der()),
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }

    /// The QUIC server's certificate for [`SERVER_NAME`], with a key that
    /// never touches the disk.
    pub fn issue_server(
        &self,
    ) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), PkiError> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(vec![SERVER_NAME.to_string()])?;
        p.distinguished_name.push(DnType::CommonName, SERVER_NAME);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(random_serial()?);
        validity(&mut p, 365);
        let cert = p.signed_by(&key, &self.issuer, &self.key)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((cert.der().clone(), der))
    }
}

/// A self-signed certificate and key (PEM) for a server known by `names`
/// (DNS names or IP addresses): the SIP TLS certificate the appliance
/// makes on first boot, until the operator installs one carriers trust.
pub fn self_signed_server(
    names: &[String],
    days: i64,
) -> Result<(String, Zeroizing<String>), PkiError> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(names.to_vec())?;
    if let Some(first) = names.first() {
        p.distinguished_name
            .push(DnType::CommonName, first.as_str());
    }
    p.distinguished_name
        .push(DnType::OrganizationName, "Tollgate (self-signed)");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.serial_number = Some(random_serial()?);
    validity(&mut p, days);
    let cert = p.self_signed(&key)?;
    Ok((cert.pem(), Zeroizing::new(key.serialize_pem())))
}

/// A QUIC server known as "localhost" by a fresh self-signed
/// certificate, and a client that trusts it (and nothing else): for
/// loopback tests and benchmarks of the QUIC layers, not for agents.
pub fn localhost_quic_configs() -> Result<(quinn::ServerConfig, quinn::ClientConfig), String> {
    let provider = super::server::provider();
    let (cert, key) = self_signed_server(&["localhost".into()], 1).map_err(|e| e.to_string())?;
    let cert = rustls_pemfile::certs(&mut cert.as_bytes())
        .next()
        .ok_or("no certificate")?
        .map_err(|e| e.to_string())?;
    let key = rustls_pemfile::private_key(&mut key.as_bytes())
        .map_err(|e| e.to_string())?
        .ok_or("no key")?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .map_err(|e| e.to_string())?;
    tls.alpn_protocols = vec![b"t".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).map_err(|e| e.to_string())?;
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"t".to_vec()];
    let server =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let client =
        quinn::crypto::rustls::QuicClientConfig::try_from(client).map_err(|e| e.to_string())?;
    Ok((
        quinn::ServerConfig::with_crypto(std::sync::Arc::new(server)),
        quinn::ClientConfig::new(std::sync::Arc::new(client)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_server_certificate_serves_tls() {
        let (cert, key) = self_signed_server(&["gw.example.net".into(), "192.0.2.10".into()], 30)
            .expect("certificate");
        let d = std::env::temp_dir().join(format!("tollgate-selfsigned-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::write(d.join("c.pem"), &cert).expect("cert");
        std::fs::write(d.join("k.pem"), key.as_bytes()).expect("key");
        // The SIP listener's own loader takes the pair.
        crate::sip::transport::tls_server_config(&d.join("c.pem"), &d.join("k.pem"))
            .expect("a usable server certificate");
        let der = rustls_pemfile::certs(&mut cert.as_bytes())
            .next()
            .expect("one")
            .expect("pem");
        let has = |b: &[u8]| der.windows(b.len()).any(|w| w == b);
        assert!(has(b"gw.example.net"), "the DNS name is in it");
        assert!(has(&[192, 0, 2, 10]), "so is the address");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn ca_is_made_once_sealed_and_issues_verifiable_certs() {
        let d = std::env::temp_dir().join(format!("tollgate-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let sealer = Sealer::from_key(&[3; 32]);
        let ca = Ca::open_or_create(&d, &sealer).expect("create");
        let sealed = std::fs::read(d.join("ca.key.sealed")).expect("sealed key");
        assert!(!String::from_utf8_lossy(&sealed).contains("PRIVATE KEY"));
        // Reopening keeps the same CA.
        let again = Ca::open_or_create(&d, &sealer).expect("reopen");
        assert_eq!(ca.cert_pem(), again.cert_pem());
        // Another master key cannot open it.
        assert!(matches!(
            Ca::open_or_create(&d, &Sealer::from_key(&[4; 32])),
            Err(PkiError::Key(KeyError::Unseal))
        ));
        // A certificate issued after reopening verifies against the stored
        // CA certificate.
        let agent = again.issue_agent("alice").expect("issue");
        let der = rustls_pemfile::certs(&mut agent.cert_pem.as_bytes())
            .next()
            .expect("one")
            .expect("pem");
        assert_eq!(agent.fingerprint, fingerprint(&der));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der().expect("ca der")).expect("root");
        let verifier = rustls::server::WebPkiClientVerifier::builder(roots.into())
            .build()
            .expect("verifier");
        verifier
            .verify_client_cert(&der, &[], rustls::pki_types::UnixTime::now())
            .expect("agent cert verifies against the CA");
        let _ = std::fs::remove_dir_all(&d);
    }
}
