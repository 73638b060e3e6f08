//! Typed SIP header values (RFC 3261 section 20 and the grammar of 25.1):
//! methods, Via, name-addr (From, To, Contact, Route, Record-Route), CSeq,
//! and generic `;name=value` parameters. All borrow the message buffer.

use super::scan::{decimal, is_token, Scanner};
use super::uri::{parse_hostport, Host, Uri};

/// Why a header value was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    #[error("malformed Via")]
    Via,
    #[error("malformed name-addr")]
    NameAddr,
    #[error("malformed CSeq")]
    CSeq,
    #[error("malformed parameter")]
    Param,
    #[error("number out of range")]
    Number,
    #[error("malformed URI")]
    Uri,
    #[error("unterminated quoted string")]
    Quote,
}

/// A request method. Methods are case-sensitive (RFC 3261 section 7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method<'a> {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Prack,
    Update,
    Info,
    Refer,
    Notify,
    Subscribe,
    Message,
    Publish,
    Other(&'a [u8]),
}

impl<'a> Method<'a> {
    pub fn from_bytes(b: &'a [u8]) -> Self {
        match b {
            b"INVITE" => Self::Invite,
            b"ACK" => Self::Ack,
            b"BYE" => Self::Bye,
            b"CANCEL" => Self::Cancel,
            b"OPTIONS" => Self::Options,
            b"REGISTER" => Self::Register,
            b"PRACK" => Self::Prack,
            b"UPDATE" => Self::Update,
            b"INFO" => Self::Info,
            b"REFER" => Self::Refer,
            b"NOTIFY" => Self::Notify,
            b"SUBSCRIBE" => Self::Subscribe,
            b"MESSAGE" => Self::Message,
            b"PUBLISH" => Self::Publish,
            other => Self::Other(other),
        }
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        match self {
            Self::Invite => b"INVITE",
            Self::Ack => b"ACK",
            Self::Bye => b"BYE",
            Self::Cancel => b"CANCEL",
            Self::Options => b"OPTIONS",
            Self::Register => b"REGISTER",
            Self::Prack => b"PRACK",
            Self::Update => b"UPDATE",
            Self::Info => b"INFO",
            Self::Refer => b"REFER",
            Self::Notify => b"NOTIFY",
            Self::Subscribe => b"SUBSCRIBE",
            Self::Message => b"MESSAGE",
            Self::Publish => b"PUBLISH",
            Self::Other(b) => b,
        }
    }

    /// A short, stable name for metrics labels (unknown methods pooled).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Options => "OPTIONS",
            Self::Register => "REGISTER",
            Self::Prack => "PRACK",
            Self::Update => "UPDATE",
            Self::Info => "INFO",
            Self::Refer => "REFER",
            Self::Notify => "NOTIFY",
            Self::Subscribe => "SUBSCRIBE",
            Self::Message => "MESSAGE",
            Self::Publish => "PUBLISH",
            Self::Other(_) => "other",
        }
    }
}

/// `;name[=value]` parameters after a header value, validated once and
/// re-read on demand (LWS may sit around every `;` and `=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HeaderParams<'a>(&'a [u8]);

impl<'a> HeaderParams<'a> {
    /// Reads parameters from `s` (positioned at a `;` or at the end) to the
    /// end of the value.
    fn read(s: &mut Scanner<'a>) -> Result<Self, HeaderError> {
        let rest = s.rest();
        let mut probe = Scanner::new(rest);
        while probe.sep(b';') {
            read_param(&mut probe).ok_or(HeaderError::Param)?;
        }
        probe.skip_lws();
        if !probe.at_end() {
            return Err(HeaderError::Param);
        }
        *s = Scanner::new(&[]);
        Ok(Self(rest))
    }

    /// (name, value) pairs in order; values have quotes removed.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let mut s = Scanner::new(self.0);
        std::iter::from_fn(move || {
            if s.sep(b';') {
                read_param(&mut s)
            } else {
                None
            }
        })
    }

    /// The value of `name` (case-insensitive): `Some(None)` for a flag.
    pub fn get(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// One `name [= value]`; value a token, a quoted string, a host (with
/// colons, for `received=2001:db8::9:255`) or a bracketed IPv6 reference.
fn read_param<'a>(s: &mut Scanner<'a>) -> Option<(&'a [u8], Option<&'a [u8]>)> {
    let name = s.token()?;
    if !s.sep(b'=') {
        return Some((name, None));
    }
    let value = match s.peek()? {
        b'"' => s.quoted()?,
        b'[' => {
            let start = s.rest();
            let v = s.take_while(|b| b != b']')?;
            if !s.eat(b']') {
                return None;
            }
            &start[..v.len() + 1]
        }
        _ => s.take_while(|b| is_token(b) || b == b':')?,
    };
    Some((name, Some(value)))
}

/// A Via header value (one hop).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    /// UDP, TCP, TLS, SCTP, WS, ... as sent.
    pub transport: &'a [u8],
    pub host: Host<'a>,
    pub port: Option<u16>,
    pub params: HeaderParams<'a>,
}

impl<'a> Via<'a> {
    pub fn parse(v: &'a [u8]) -> Result<Self, HeaderError> {
        let mut s = Scanner::new(v);
        s.skip_lws();
        let name = s.token().ok_or(HeaderError::Via)?;
        if !name.eq_ignore_ascii_case(b"SIP") || !s.sep(b'/') {
            return Err(HeaderError::Via);
        }
        if s.token() != Some(b"2.0") || !s.sep(b'/') {
            return Err(HeaderError::Via);
        }
        let transport = s.token().ok_or(HeaderError::Via)?;
        if !s.skip_lws() {
            return Err(HeaderError::Via);
        }
        let host_start = s.rest();
        let host_len = if s.peek() == Some(b'[') {
            s.take_while(|b| b != b']').ok_or(HeaderError::Via)?;
            if !s.eat(b']') {
                return Err(HeaderError::Via);
            }
            host_start.len() - s.rest().len()
        } else {
            s.take_while(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                .ok_or(HeaderError::Via)?
                .len()
        };
        let host_bytes = &host_start[..host_len];
        let port = if s.sep(b':') {
            let p = s
                .take_while(|b| b.is_ascii_digit())
                .ok_or(HeaderError::Via)?;
            Some(decimal(p, u64::from(u16::MAX)).ok_or(HeaderError::Via)? as u16)
        } else {
            None
        };
        let (host, _) = parse_hostport(host_bytes).map_err(|_| HeaderError::Via)?;
        let params = HeaderParams::read(&mut s)?;
        Ok(Self {
            transport,
            host,
            port,
            params,
        })
    }

    pub fn branch(&self) -> Option<&'a [u8]> {
        self.params.get(b"branch").flatten()
    }
}

/// A name-addr or addr-spec with header parameters: From, To, Contact,
/// Route, Record-Route, Refer-To.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name: a quoted string's contents (escapes kept) or the
    /// tokens before `<`.
    pub display: Option<&'a [u8]>,
    /// The URI as written, without angle brackets.
    pub uri_bytes: &'a [u8],
    pub uri: Uri<'a>,
    pub params: HeaderParams<'a>,
}

impl<'a> NameAddr<'a> {
    pub fn parse(v: &'a [u8]) -> Result<Self, HeaderError> {
        let mut s = Scanner::new(v);
        s.skip_lws();
        let mut display = None;
        let bracketed = if s.peek() == Some(b'"') {
            display = Some(s.quoted().ok_or(HeaderError::Quote)?);
            s.skip_lws();
            true
        } else {
            // Tokens separated by LWS up to '<' are a display name; without
            // a '<' this is an addr-spec.
            let save = s;
            let start = s.rest();
            let mut end = 0;
            while let Some(t) = s.token() {
                end = start.len() - s.rest().len();
                let _ = t;
                s.skip_lws();
            }
            if s.peek() == Some(b'<') {
                if end > 0 {
                    display = Some(&start[..end]);
                }
                true
            } else {
                s = save;
                false
            }
        };
        let uri_bytes = if bracketed {
            if !s.eat(b'<') {
                return Err(HeaderError::NameAddr);
            }
            let u = s.until(b">");
            if !s.eat(b'>') {
                return Err(HeaderError::NameAddr);
            }
            u
        } else {
            // addr-spec: no ';', ',' or '?' in the URI (RFC 3261 20.10).
            let u = s.take_while(|b| b > b' ' && !matches!(b, b';' | b',' | b'?' | b'<' | b'>'));
            match s.peek() {
                None | Some(b';' | b' ' | b'\t' | b'\r') => {}
                _ => return Err(HeaderError::NameAddr),
            }
            u.ok_or(HeaderError::NameAddr)?
        };
        let uri = Uri::parse(uri_bytes).map_err(|_| HeaderError::Uri)?;
        let params = HeaderParams::read(&mut s)?;
        Ok(Self {
            display,
            uri_bytes,
            uri,
            params,
        })
    }

    pub fn tag(&self) -> Option<&'a [u8]> {
        self.params.get(b"tag").flatten()
    }
}

/// A CSeq value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CSeq<'a> {
    pub seq: u32,
    pub method: Method<'a>,
}

impl<'a> CSeq<'a> {
    pub fn parse(v: &'a [u8]) -> Result<Self, HeaderError> {
        let mut s = Scanner::new(v);
        s.skip_lws();
        let n = s
            .take_while(|b| b.is_ascii_digit())
            .ok_or(HeaderError::CSeq)?;
        let seq = decimal(n, u64::from(u32::MAX)).ok_or(HeaderError::Number)? as u32;
        if !s.skip_lws() {
            return Err(HeaderError::CSeq);
        }
        let method = Method::from_bytes(s.token().ok_or(HeaderError::CSeq)?);
        s.skip_lws();
        if !s.at_end() {
            return Err(HeaderError::CSeq);
        }
        Ok(Self { seq, method })
    }
}

/// A header whose value is one decimal number no larger than `max`
/// (Max-Forwards, Expires, Content-Length).
pub fn number(v: &[u8], max: u64) -> Result<u64, HeaderError> {
    let mut s = Scanner::new(v);
    s.skip_lws();
    let n = s
        .take_while(|b| b.is_ascii_digit())
        .ok_or(HeaderError::Number)?;
    s.skip_lws();
    if !s.at_end() {
        return Err(HeaderError::Number);
    }
    decimal(n, max).ok_or(HeaderError::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_via_with_lws_everywhere() {
        let v =
            Via::parse(b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").expect("via");
        assert_eq!(v.transport, b"UDP");
        assert_eq!(v.host, Host::V4("192.0.2.2".parse().expect("v4")));
        assert_eq!(v.branch(), Some(&b"390skdjuw"[..]));
        let v = Via::parse(
            b"SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8",
        )
        .expect("via");
        assert_eq!(v.host, Host::Name(b"spindle.example.com"));
        assert_eq!(v.branch(), Some(&b"z9hG4bK9ikj8"[..]));
    }

    #[test]
    fn via_ipv6_and_received_forms() {
        let v = Via::parse(
            b"SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas3;received=[2001:db8::9:255]",
        )
        .expect("via");
        assert!(matches!(v.host, Host::V6(_)));
        assert_eq!(v.port, Some(5070));
        assert_eq!(
            v.params.get(b"received"),
            Some(Some(&b"[2001:db8::9:255]"[..]))
        );
        let v =
            Via::parse(b"SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3")
                .expect("via");
        assert_eq!(
            v.params.get(b"received"),
            Some(Some(&b"2001:db8::9:255"[..]))
        );
        assert!(Via::parse(b"SIP/2.0/UDP 192.0.2.15;;,;,,").is_err());
        assert!(Via::parse(b"SIP/3.0/UDP host").is_err());
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(
            b"\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8",
        )
        .expect("from");
        assert_eq!(n.display, Some(&br#"J Rosenberg \\\""#[..]));
        assert_eq!(n.tag(), Some(&b"98asjd8"[..]));
        let n = NameAddr::parse(b"\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n")
            .expect("to");
        assert_eq!(n.display, None);
        assert_eq!(n.uri_bytes, b"sip:vivekg@chair-dnrc.example.com");
        assert_eq!(n.tag(), Some(&b"1918181833n"[..]));
        let n = NameAddr::parse(b"caller<sip:caller@example.com>;tag=323").expect("lwsdisp");
        assert_eq!(n.display, Some(&b"caller"[..]));
        // Unknown param after an addr-spec belongs to the header.
        let n = NameAddr::parse(b"sip:user@example.com;unknownparam").expect("cparam01");
        assert_eq!(n.params.get(b"unknownparam"), Some(None));
        assert!(n.uri.sip().expect("sip").params.as_bytes().is_empty());
    }

    #[test]
    fn name_addr_refusals() {
        assert_eq!(
            NameAddr::parse(br#""Mr J. User <sip:j.user@example.com>"#).err(),
            Some(HeaderError::Quote)
        );
        assert!(NameAddr::parse(b"Bell, Alexander <sip:a.g.bell@example.com>").is_err());
        assert!(NameAddr::parse(b"< sip:t.watson@example.org >").is_err());
        assert!(NameAddr::parse(b"sip:user@example.com?Route=%3Csip:sip.example.com%3E").is_err());
    }

    #[test]
    fn cseq_and_numbers() {
        let c = CSeq::parse(b"0009\r\n  INVITE").expect("cseq");
        assert_eq!((c.seq, c.method), (9, Method::Invite));
        assert_eq!(
            CSeq::parse(b"36893488147419103232 INVITE").err(),
            Some(HeaderError::Number)
        );
        assert!(CSeq::parse(b"1INVITE").is_err());
        assert_eq!(number(b" 0068 ", 255), Ok(68));
        assert!(number(b"300", 255).is_err());
        assert!(number(b"-999", u64::MAX).is_err());
    }
}
