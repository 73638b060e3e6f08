//! HTTP Digest authentication for the gateway as a SIP client (RFC 3261
//! 22, RFC 2617, RFC 7616/8760 for SHA-256): parsing a WWW-Authenticate or
//! Proxy-Authenticate challenge and computing the Authorization answer.
//! Registration trunks use it; the password never leaves this module in
//! any form but the hash.

use md5::Md5;
use sha2::{Digest as _, Sha256};

use super::scan::{trim_lws, CommaList};

/// Digest algorithms supported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

/// A parsed Digest challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    /// Whether the server offered qop=auth.
    pub qop_auth: bool,
    pub algorithm: Algorithm,
}

fn unquote(v: &[u8]) -> String {
    let v = trim_lws(v);
    let v = v
        .strip_prefix(b"\"")
        .and_then(|x| x.strip_suffix(b"\""))
        .unwrap_or(v);
    String::from_utf8_lossy(v).replace("\\\"", "\"")
}

impl Challenge {
    /// Parses `Digest realm="...", nonce="...", ...`. `None` for other
    /// schemes, unsupported algorithms or a missing realm or nonce.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let v = trim_lws(value);
        let rest = v
            .get(..6)
            .filter(|s| s.eq_ignore_ascii_case(b"Digest"))
            .map(|_| &v[6..])?;
        let (mut realm, mut nonce, mut opaque, mut qop_auth) = (None, None, None, false);
        let mut algorithm = Algorithm::Md5;
        for part in CommaList::new(rest) {
            let Some(eq) = part.iter().position(|&b| b == b'=') else {
                continue;
            };
            let name = trim_lws(&part[..eq]);
            let value = unquote(&part[eq + 1..]);
            match name.to_ascii_lowercase().as_slice() {
                b"realm" => realm = Some(value),
                b"nonce" => nonce = Some(value),
                b"opaque" => opaque = Some(value),
                b"qop" => {
                    qop_auth = value
                        .split(',')
                        .any(|q| q.trim().eq_ignore_ascii_case("auth"))
                }
                b"algorithm" => {
                    algorithm = match value.to_ascii_uppercase().as_str() {
                        "MD5" => Algorithm::Md5,
                        "SHA-256" => Algorithm::Sha256,
                        _ => return None,
                    }
                }
                _ => {}
            }
        }
        Some(Self {
            realm: realm?,
            nonce: nonce?,
            opaque,
            qop_auth,
            algorithm,
        })
    }

    fn hash(&self, data: &str) -> String {
        let bytes: Vec<u8> = match self.algorithm {
            Algorithm::Md5 => Md5::digest(data.as_bytes()).to_vec(),
            Algorithm::Sha256 => Sha256::digest(data.as_bytes()).to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The Authorization (or Proxy-Authorization) value for a request.
    /// `nc` counts the uses of this nonce; `cnonce` is the client's nonce.
    pub fn answer(
        &self,
        method: &str,
        uri: &str,
        username: &str,
        password: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let ha1 = self.hash(&format!("{username}:{}:{password}", self.realm));
        let ha2 = self.hash(&format!("{method}:{uri}"));
        let nc = format!("{nc:08x}");
        let response = if self.qop_auth {
            self.hash(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
        } else {
            self.hash(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        let alg = match self.algorithm {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        };
        let mut out = format!(
            "Digest username=\"{username}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={alg}",
            self.realm, self.nonce
        );
        if self.qop_auth {
            out.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
        }
        if let Some(o) = &self.opaque {
            out.push_str(&format!(", opaque=\"{o}\""));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_section_3_5_example() {
        let c = Challenge::parse(
            b"Digest realm=\"testrealm@host.com\",\r\n qop=\"auth,auth-int\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .expect("parses");
        assert!(c.qop_auth);
        assert_eq!(c.algorithm, Algorithm::Md5);
        let a = c.answer(
            "GET",
            "/dir/index.html",
            "Mufasa",
            "Circle Of Life",
            1,
            "0a4f113b",
        );
        assert!(
            a.contains("response=\"6629fae49393a05397450978507c4ef1\""),
            "{a}"
        );
        assert!(
            a.contains("nc=00000001") && a.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"")
        );
    }

    #[test]
    fn other_schemes_and_algorithms_are_refused() {
        assert!(Challenge::parse(b"Basic realm=\"x\"").is_none());
        assert!(
            Challenge::parse(b"Digest realm=\"x\", nonce=\"n\", algorithm=SHA-512-256").is_none()
        );
        assert!(Challenge::parse(b"Digest realm=\"x\"").is_none());
        let c =
            Challenge::parse(b"Digest realm=\"x\", nonce=\"n\", algorithm=SHA-256").expect("ok");
        assert_eq!(c.algorithm, Algorithm::Sha256);
        // No qop: the RFC 2069 form, and 64 hex digits for SHA-256.
        let a = c.answer("REGISTER", "sip:x", "u", "p", 1, "c");
        let resp = a
            .split("response=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("response");
        assert_eq!(resp.len(), 64);
        assert!(!a.contains("qop"));
    }
}
