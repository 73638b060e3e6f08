//! The appliance's report signature: Ed25519 (ring), its key derived
//! from the audit key (random, sealed under the master key, unchanged by
//! a master-key rotation), so the same appliance signs every report with
//! the same key and no further key file needs sealing and rotating.
//!
//! A signed HTML report is the page, then one last line
//! `<!-- tollgate-signature ed25519:SIG -->`: the signature covers every
//! byte before that line, and the public half is inside what it covers
//! (`<meta name="tollgate-signing-key" content="ed25519:KEY">`), so
//! nothing in the page can change, the key included, without breaking
//! it. A signed JSON report is `{"signing_key", "signature", "report"}`
//! with the signature over the `report` value's bytes as written.
//! An assessor compares the key's fingerprint with the one the appliance
//! shows (`tollgate compliance report` prints it; the audit trail keeps
//! it with each report's SHA-256).

use base64::Engine;
use hmac::{Hmac, Mac};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What marks the key in a page.
pub const KEY_META: &str = "<meta name=\"tollgate-signing-key\" content=\"ed25519:";
/// What begins the signature line.
const SIGNATURE_LINE: &str = "<!-- tollgate-signature ed25519:";

/// Why a report does not verify. Names no key material beyond the
/// public key's fingerprint.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("no signature: the report's last line is not a tollgate signature")]
    Unsigned,
    #[error("the report names no signing key, or more than one")]
    NoKey,
    #[error("the signature or key is not valid base64 of the right length")]
    Malformed,
    #[error("the signature does not match: the report was changed after it was signed, or signed by another key than {0}")]
    Mismatch(String),
    #[error("signed by key {found}, not the appliance's {expected}")]
    OtherKey { found: String, expected: String },
    #[error("the report's own facts name another signing key than the one that signed it")]
    Inconsistent,
    #[error("the signed report cannot be read ({0})")]
    Unreadable(String),
}

/// The appliance's signing key. No `Debug`: it holds the private half.
pub struct Signer(Ed25519KeyPair);

impl Signer {
    /// Derived from the audit key for this purpose only.
    pub fn new(audit_key: &[u8; 32]) -> Self {
        // HMAC takes a key of any length: this cannot fail.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(audit_key).expect("any key length");
        m.update(b"tollgate-report-signing-v1");
        let seed = Zeroizing::new(<[u8; 32]>::from(m.finalize().into_bytes()));
        // A 32-byte seed is every seed Ed25519 accepts.
        Self(Ed25519KeyPair::from_seed_unchecked(&seed[..]).expect("a 32-byte seed"))
    }

    /// The public half, base64.
    pub fn public_key(&self) -> String {
        B64.encode(self.0.public_key().as_ref())
    }

    /// The public half's fingerprint.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.0.public_key().as_ref())
    }

    /// The `<meta>` element that names the key; the page must hold it.
    pub fn key_meta(&self) -> String {
        format!("{KEY_META}{}\">", self.public_key())
    }

    /// `page` (which holds [`Signer::key_meta`]) with its signature line.
    pub fn sign_html(&self, mut page: String) -> String {
        if !page.ends_with('\n') {
            page.push('\n');
        }
        let sig = self.0.sign(page.as_bytes());
        page.push_str(&format!(
            "{SIGNATURE_LINE}{} -->\n",
            B64.encode(sig.as_ref())
        ));
        page
    }

    /// `report` (a JSON value) in its signed envelope.
    pub fn sign_json(&self, report: &str) -> String {
        let sig = self.0.sign(report.as_bytes());
        format!(
            "{{\"signing_key\":\"ed25519:{}\",\"signature\":\"ed25519:{}\",\"report\":{report}}}\n",
            self.public_key(),
            B64.encode(sig.as_ref())
        )
    }
}

/// SHA-256 of a public key, as `SHA256:` and 16 colon-separated bytes
/// (enough to compare by eye or by script).
pub fn fingerprint(public_key: &[u8]) -> String {
    let d = Sha256::digest(public_key);
    let hex: Vec<String> = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("SHA256:{}", hex.join(":"))
}

fn check<'a>(key_b64: &str, signed: &'a str, sig_b64: &str) -> Result<Verified<'a>, VerifyError> {
    let key = B64.decode(key_b64).map_err(|_| VerifyError::Malformed)?;
    let sig = B64.decode(sig_b64).map_err(|_| VerifyError::Malformed)?;
    if key.len() != 32 || sig.len() != 64 {
        return Err(VerifyError::Malformed);
    }
    let fp = fingerprint(&key);
    UnparsedPublicKey::new(&ED25519, &key)
        .verify(signed.as_bytes(), &sig)
        .map_err(|_| VerifyError::Mismatch(fp.clone()))?;
    Ok(Verified {
        fingerprint: fp,
        public_key: key_b64.to_string(),
        signed,
    })
}

/// What a good signature covered.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified<'a> {
    /// The key's fingerprint and the key (base64).
    pub fingerprint: String,
    pub public_key: String,
    /// The signed text: the whole page before the signature line, or the
    /// JSON envelope's `report` value.
    pub signed: &'a str,
}

/// Checks a signed report's signature, HTML or JSON, against the key the
/// report names. (Which key that must be is the caller's to check.)
pub fn verify(report: &[u8]) -> Result<Verified<'_>, VerifyError> {
    if report.first() == Some(&b'{') {
        verify_json(report)
    } else {
        verify_html(report)
    }
}

fn verify_html(page: &[u8]) -> Result<Verified<'_>, VerifyError> {
    let text = std::str::from_utf8(page).map_err(|_| VerifyError::Unsigned)?;
    let body = text.strip_suffix(" -->\n").ok_or(VerifyError::Unsigned)?;
    let at = body.rfind(SIGNATURE_LINE).ok_or(VerifyError::Unsigned)?;
    if at != 0 && !body[..at].ends_with('\n') {
        return Err(VerifyError::Unsigned);
    }
    let (signed, sig) = (&body[..at], &body[at + SIGNATURE_LINE.len()..]);
    if sig.contains('\n') {
        return Err(VerifyError::Unsigned);
    }
    let mut metas = signed.match_indices(KEY_META);
    let (Some((k, _)), None) = (metas.next(), metas.next()) else {
        return Err(VerifyError::NoKey);
    };
    let rest = &signed[k + KEY_META.len()..];
    let key = rest.split_once('"').ok_or(VerifyError::NoKey)?.0;
    check(key, signed, sig)
}

fn verify_json(doc: &[u8]) -> Result<Verified<'_>, VerifyError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Envelope<'a> {
        signing_key: String,
        signature: String,
        #[serde(borrow)]
        report: &'a serde_json::value::RawValue,
    }
    let e: Envelope<'_> = serde_json::from_slice(doc).map_err(|_| VerifyError::Unsigned)?;
    let key = e
        .signing_key
        .strip_prefix("ed25519:")
        .ok_or(VerifyError::NoKey)?;
    let sig = e
        .signature
        .strip_prefix("ed25519:")
        .ok_or(VerifyError::Malformed)?;
    let (key, sig) = (key.to_string(), sig.to_string());
    check(&key, e.report.get(), &sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(signer: &Signer, body: &str) -> String {
        format!(
            "<!DOCTYPE html>\n<html><head>{}</head><body>{body}</body></html>\n",
            signer.key_meta()
        )
    }

    fn fp(doc: &str) -> Result<String, VerifyError> {
        verify(doc.as_bytes()).map(|v| v.fingerprint)
    }

    #[test]
    fn a_signed_page_verifies_and_names_its_key() {
        let s = Signer::new(&[7; 32]);
        let body = page(&s, "<p>pass</p>");
        let signed = s.sign_html(body.clone());
        let v = verify(signed.as_bytes()).expect("verifies");
        assert_eq!(v.fingerprint, s.fingerprint());
        assert_eq!(v.public_key, s.public_key());
        assert_eq!(v.signed, body);
        // The same audit key, the same key; another, another.
        assert_eq!(Signer::new(&[7; 32]).public_key(), s.public_key());
        assert_ne!(Signer::new(&[8; 32]).public_key(), s.public_key());
    }

    #[test]
    fn any_change_breaks_it() {
        let s = Signer::new(&[7; 32]);
        let signed = s.sign_html(page(&s, "<p>fail</p>"));
        let edited = signed.replace("<p>fail</p>", "<p>pass</p>");
        assert!(matches!(fp(&edited), Err(VerifyError::Mismatch(_))));
        // The key swapped in a page signed by the first.
        let other = Signer::new(&[9; 32]);
        let swapped = signed.replace(&s.public_key(), &other.public_key());
        assert!(matches!(fp(&swapped), Err(VerifyError::Mismatch(_))));
        // Text after the signature line, or none at all.
        assert_eq!(
            fp(&format!("{signed}<p>pass</p>\n")),
            Err(VerifyError::Unsigned)
        );
        assert_eq!(fp(&page(&s, "x")), Err(VerifyError::Unsigned));
        // A second key element inside the signed part.
        let two = s.sign_html(page(&s, &s.key_meta()));
        assert_eq!(fp(&two), Err(VerifyError::NoKey));
    }

    #[test]
    fn a_json_report_verifies_over_its_bytes() {
        let s = Signer::new(&[7; 32]);
        let report = "{\"controls\":[{\"mark\":\"warn\"}]}";
        let doc = s.sign_json(report);
        let v = verify(doc.as_bytes()).expect("verifies");
        assert_eq!((v.fingerprint, v.signed), (s.fingerprint(), report));
        assert!(matches!(
            fp(&doc.replace("warn", "pass")),
            Err(VerifyError::Mismatch(_))
        ));
        // Whitespace changed inside the report changes its bytes too.
        assert!(matches!(
            fp(&doc.replace("[{", "[ {")),
            Err(VerifyError::Mismatch(_))
        ));
        // Nothing rides along beside the signed value.
        let extra = doc.replacen('{', "{\"note\":\"all pass\",", 1);
        assert_eq!(fp(&extra), Err(VerifyError::Unsigned));
    }
}
