//! SIP and SIPS URIs (RFC 3261 section 19.1, RFC 5118 for IPv6), parsed
//! without copying; other schemes (tel:, and anything a carrier sends) are
//! kept whole so a caller can answer 416 rather than fail to parse.
//!
//! Escapes (`%41`) are validated and kept as sent: `value%41` is not
//! `valueA` for comparison of the raw form (RFC 4475 3.1.1.3), and a `%00`
//! in a user part does not truncate it (3.1.1.4).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Why a URI was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    #[error("no scheme")]
    NoScheme,
    #[error("bad character in URI")]
    BadChar,
    #[error("bad escape in URI")]
    BadEscape,
    #[error("bad host")]
    BadHost,
    #[error("bad port")]
    BadPort,
    #[error("bad URI parameter")]
    BadParam,
}

/// A host: a name, an IPv4 address or a bracketed IPv6 reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host<'a> {
    Name(&'a [u8]),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

/// A parsed `sip:` or `sips:` URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SipUri<'a> {
    pub secure: bool,
    /// The user part, escapes kept.
    pub user: Option<&'a [u8]>,
    pub password: Option<&'a [u8]>,
    pub host: Host<'a>,
    pub port: Option<u16>,
    /// `;name[=value]...` after the host, without the leading `;`.
    pub params: Params<'a>,
    /// `name=value&...` after `?`, without the `?`.
    pub headers: Option<&'a [u8]>,
}

/// A URI of any scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uri<'a> {
    Sip(SipUri<'a>),
    /// Any other scheme (tel:, im:, http:, ...): the scheme and the rest.
    Other {
        scheme: &'a [u8],
        rest: &'a [u8],
    },
}

impl<'a> Uri<'a> {
    /// Parses a URI. Spaces, controls and angle brackets are refused.
    pub fn parse(s: &'a [u8]) -> Result<Self, UriError> {
        let colon = s
            .iter()
            .position(|&b| b == b':')
            .ok_or(UriError::NoScheme)?;
        let (scheme, rest) = (&s[..colon], &s[colon + 1..]);
        let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
            && scheme
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !scheme_ok {
            return Err(UriError::NoScheme);
        }
        if rest
            .iter()
            .any(|&b| b <= b' ' || b >= 0x7f || matches!(b, b'<' | b'>' | b'"'))
        {
            return Err(UriError::BadChar);
        }
        if scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips") {
            SipUri::parse_rest(rest, scheme.len() == 4).map(Uri::Sip)
        } else {
            Ok(Uri::Other { scheme, rest })
        }
    }

    /// The SIP URI, if this is one.
    pub fn sip(&self) -> Option<&SipUri<'a>> {
        match self {
            Uri::Sip(u) => Some(u),
            Uri::Other { .. } => None,
        }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

/// Checks that every byte is unreserved, one of `extra`, or a valid
/// `%HH` escape.
fn check_chars(s: &[u8], extra: &[u8]) -> Result<(), UriError> {
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'%' {
            let ok = s
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
            if !ok {
                return Err(UriError::BadEscape);
            }
            i += 3;
            continue;
        }
        if !(is_unreserved(b) || extra.contains(&b)) {
            return Err(UriError::BadChar);
        }
        i += 1;
    }
    Ok(())
}

/// Parses `host[:port]`, with RFC 5118's bracketed IPv6 references.
pub fn parse_hostport(s: &[u8]) -> Result<(Host<'_>, Option<u16>), UriError> {
    let (host, port) = if let Some(inner) = s.strip_prefix(b"[") {
        let close = inner
            .iter()
            .position(|&b| b == b']')
            .ok_or(UriError::BadHost)?;
        let addr = std::str::from_utf8(&inner[..close])
            .ok()
            .and_then(|a| a.parse::<Ipv6Addr>().ok())
            .ok_or(UriError::BadHost)?;
        let after = &inner[close + 1..];
        let port = match after {
            [] => None,
            [b':', p @ ..] => Some(parse_port(p)?),
            _ => return Err(UriError::BadHost),
        };
        (Host::V6(addr), port)
    } else {
        let (name, port) = match s.iter().position(|&b| b == b':') {
            Some(c) => (&s[..c], Some(parse_port(&s[c + 1..])?)),
            None => (s, None),
        };
        (parse_host_name(name)?, port)
    };
    Ok((host, port))
}

fn parse_port(p: &[u8]) -> Result<u16, UriError> {
    super::scan::decimal(p, u64::from(u16::MAX))
        .filter(|_| p.len() <= 5)
        .map(|v| v as u16)
        .ok_or(UriError::BadPort)
}

fn parse_host_name(name: &[u8]) -> Result<Host<'_>, UriError> {
    if name.is_empty() || name.len() > 255 {
        return Err(UriError::BadHost);
    }
    if name.iter().all(|b| b.is_ascii_digit() || *b == b'.') {
        return std::str::from_utf8(name)
            .ok()
            .and_then(|a| a.parse::<Ipv4Addr>().ok())
            .map(Host::V4)
            .ok_or(UriError::BadHost);
    }
    let trimmed = name.strip_suffix(b".").unwrap_or(name);
    let labels_ok = trimmed.split(|&b| b == b'.').all(|l| {
        !l.is_empty()
            && l.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && !l.starts_with(b"-")
            && !l.ends_with(b"-")
    });
    if labels_ok {
        Ok(Host::Name(name))
    } else {
        Err(UriError::BadHost)
    }
}

impl<'a> SipUri<'a> {
    fn parse_rest(s: &'a [u8], secure: bool) -> Result<Self, UriError> {
        // The userinfo ends at the first '@' (user parts may hold ';' and
        // '?', RFC 4475 3.1.1.2 and 3.1.1.9; '@' itself must be escaped
        // there). After it, headers start at the first '?' and parameters
        // at the first ';'.
        let (userinfo, after_user) = match s.iter().position(|&b| b == b'@') {
            Some(at) => (Some(&s[..at]), &s[at + 1..]),
            None => (None, s),
        };
        let (hostpart, headers) = match after_user.iter().position(|&b| b == b'?') {
            Some(q) => (&after_user[..q], Some(&after_user[q + 1..])),
            None => (after_user, None),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match ui.iter().position(|&b| b == b':') {
                    Some(c) => (&ui[..c], Some(&ui[c + 1..])),
                    None => (ui, None),
                };
                if u.is_empty() {
                    return Err(UriError::BadChar);
                }
                check_chars(u, b"&=+$,;?/")?;
                if let Some(p) = p {
                    check_chars(p, b"&=+$,")?;
                }
                (Some(u), p)
            }
        };
        let (hostport, params) = match hostpart.iter().position(|&b| b == b';') {
            Some(sc) => (&hostpart[..sc], &hostpart[sc + 1..]),
            None => (hostpart, &hostpart[hostpart.len()..]),
        };
        let (host, port) = parse_hostport(hostport)?;
        let params = Params::parse(params, b"[]/:&+$")?;
        if let Some(h) = headers {
            for pair in h.split(|&b| b == b'&') {
                let mut kv = pair.splitn(2, |&b| b == b'=');
                let k = kv.next().unwrap_or_default();
                let v = kv.next().ok_or(UriError::BadParam)?;
                if k.is_empty() {
                    return Err(UriError::BadParam);
                }
                check_chars(k, b"[]/?:+$")?;
                check_chars(v, b"[]/?:+$")?;
            }
        }
        Ok(Self {
            secure,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// The value of URI parameter `name` (`Some(None)` for a flag).
    pub fn param(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        self.params.get(name)
    }
}

/// `name[=value]` pairs separated by `;`, validated, read lazily.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Params<'a>(&'a [u8]);

impl<'a> Params<'a> {
    /// Checks `s` (without the leading `;`): every name non-empty, names
    /// and values of allowed characters.
    pub fn parse(s: &'a [u8], extra: &[u8]) -> Result<Self, UriError> {
        if s.is_empty() {
            return Ok(Self(s));
        }
        for p in s.split(|&b| b == b';') {
            let mut kv = p.splitn(2, |&b| b == b'=');
            let k = kv.next().unwrap_or_default();
            if k.is_empty() {
                return Err(UriError::BadParam);
            }
            check_chars(k, extra).map_err(|_| UriError::BadParam)?;
            if let Some(v) = kv.next() {
                if v.is_empty() {
                    return Err(UriError::BadParam);
                }
                check_chars(v, extra).map_err(|_| UriError::BadParam)?;
            }
        }
        Ok(Self(s))
    }

    /// The raw parameters, without the leading `;`.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// (name, value) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let s = self.0;
        s.split(|&b| b == b';')
            .filter(move |_| !s.is_empty())
            .map(|p| {
                let mut kv = p.splitn(2, |&b| b == b'=');
                (kv.next().unwrap_or_default(), kv.next())
            })
    }

    /// The value of `name`, compared case-insensitively.
    pub fn get(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri<'_> {
        match Uri::parse(s.as_bytes()) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn parts_of_a_sip_uri() {
        let u = sip("sip:alice:secret@atlanta.example.com:5061;transport=tcp;lr?subject=x&h=y");
        assert_eq!(u.user, Some(&b"alice"[..]));
        assert_eq!(u.password, Some(&b"secret"[..]));
        assert_eq!(u.host, Host::Name(b"atlanta.example.com"));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.param(b"TRANSPORT"), Some(Some(&b"tcp"[..])));
        assert_eq!(u.param(b"lr"), Some(None));
        assert_eq!(u.param(b"maddr"), None);
        assert_eq!(u.headers, Some(&b"subject=x&h=y"[..]));
        assert!(!u.secure);
        assert!(sip("sips:bob@192.0.2.4").secure);
        assert_eq!(
            sip("sips:bob@192.0.2.4").host,
            Host::V4(Ipv4Addr::new(192, 0, 2, 4))
        );
    }

    #[test]
    fn user_parts_keep_semicolons_and_escapes() {
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user, Some(&b"user;par=u%40example.net"[..]));
        assert_eq!(u.host, Host::Name(b"example.com"));
        let u = sip("sip:null-%00-null@example.com");
        assert_eq!(u.user, Some(&b"null-%00-null"[..]));
        assert_eq!(
            Uri::parse(b"sip:bad%4@example.com"),
            Err(UriError::BadEscape)
        );
    }

    #[test]
    fn ipv6_references_per_rfc5118() {
        let u = sip("sip:[2001:db8::10]:5070");
        assert_eq!(u.host, Host::V6("2001:db8::10".parse().expect("v6")));
        assert_eq!(u.port, Some(5070));
        // One address, no port: the ambiguous form of 4.3.
        let u = sip("sip:[2001:db8::10:5070]");
        assert_eq!(u.port, None);
        assert!(matches!(u.host, Host::V6(_)));
        assert!(Uri::parse(b"sip:[2001:db8::192.0.2.1]").is_ok());
        assert_eq!(
            Uri::parse(b"sip:[2001:db8:::192.0.2.1]"),
            Err(UriError::BadHost)
        );
        assert!(Uri::parse(b"sip:user@2001:db8::10").is_err());
    }

    #[test]
    fn other_schemes_are_kept_and_junk_refused() {
        assert_eq!(
            Uri::parse(b"tel:+1-201-555-0123"),
            Ok(Uri::Other {
                scheme: b"tel",
                rest: b"+1-201-555-0123"
            })
        );
        assert_eq!(Uri::parse(b"<sip:x@y>"), Err(UriError::NoScheme));
        assert_eq!(Uri::parse(b"sip:x@y; lr"), Err(UriError::BadChar));
        assert_eq!(Uri::parse(b"nocolon"), Err(UriError::NoScheme));
        assert_eq!(Uri::parse(b"sip:x@y;;lr"), Err(UriError::BadParam));
        assert_eq!(Uri::parse(b"sip:x@y:99999"), Err(UriError::BadPort));
        assert_eq!(Uri::parse(b"sip:@y"), Err(UriError::BadChar));
    }
}
