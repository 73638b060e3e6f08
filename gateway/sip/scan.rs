//! A checked scanner over a header value, for the RFC 3261 grammar.
//!
//! Header values are kept as they arrived (zero-copy), so a value may still
//! contain line folds (CRLF followed by SP or HT). The scanner treats folds,
//! spaces and tabs alike as linear white space (LWS), which is what lets
//! `Via: SIP  /   2.0\r\n /UDP` read as `SIP/2.0/UDP`. Every read is bounds
//! checked and fails as `None`; nothing here indexes past the input.

/// RFC 3261 `token` characters.
#[inline]
pub fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// A cursor over one header value.
#[derive(Clone, Copy, Debug)]
pub struct Scanner<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub fn new(s: &'a [u8]) -> Self {
        Self { s, pos: 0 }
    }

    /// What is left.
    pub fn rest(&self) -> &'a [u8] {
        &self.s[self.pos..]
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    pub fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    /// Skips spaces, tabs and line folds; returns whether any were skipped.
    pub fn skip_lws(&mut self) -> bool {
        let start = self.pos;
        loop {
            match self.s.get(self.pos) {
                Some(b' ' | b'\t') => self.pos += 1,
                Some(b'\r')
                    if self.s.get(self.pos + 1) == Some(&b'\n')
                        && matches!(self.s.get(self.pos + 2), Some(b' ' | b'\t')) =>
                {
                    self.pos += 3
                }
                _ => break,
            }
        }
        self.pos > start
    }

    /// Consumes `b` if it is next.
    pub fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Skips LWS, consumes `b` and the LWS after it (the SWS-sep-SWS of
    /// RFC 3261's SEMI, EQUAL, COMMA, SLASH, COLON).
    pub fn sep(&mut self, b: u8) -> bool {
        let save = self.pos;
        self.skip_lws();
        if self.eat(b) {
            self.skip_lws();
            true
        } else {
            self.pos = save;
            false
        }
    }

    /// One or more token characters.
    pub fn token(&mut self) -> Option<&'a [u8]> {
        self.take_while(is_token)
    }

    /// One or more bytes matching `f`.
    pub fn take_while(&mut self, f: impl Fn(u8) -> bool) -> Option<&'a [u8]> {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        (self.pos > start).then(|| &self.s[start..self.pos])
    }

    /// A quoted string; returns its contents with escapes left in place.
    /// `None` if it is not closed.
    pub fn quoted(&mut self) -> Option<&'a [u8]> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.pos;
        loop {
            match self.peek()? {
                b'"' => {
                    let inner = &self.s[start..self.pos];
                    self.pos += 1;
                    return Some(inner);
                }
                b'\\' => self.pos += 2,
                _ => self.pos += 1,
            }
            if self.pos > self.s.len() {
                return None;
            }
        }
    }

    /// Bytes up to (not including) the first of `stops`, or the end.
    pub fn until(&mut self, stops: &[u8]) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(|b| !stops.contains(&b)) {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }
}

/// Splits a header value on commas that are outside quoted strings and
/// angle brackets (RFC 3261 section 7.3.1), trimming LWS around each part.
/// Empty parts are returned as empty slices (callers decide whether they
/// are an error).
#[derive(Clone, Copy, Debug)]
pub struct CommaList<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> CommaList<'a> {
    pub fn new(value: &'a [u8]) -> Self {
        Self { rest: Some(value) }
    }
}

impl<'a> Iterator for CommaList<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let s = self.rest?;
        let (mut quoted, mut angle, mut i) = (false, false, 0);
        while i < s.len() {
            match s[i] {
                b'\\' if quoted => i += 1,
                b'"' => quoted = !quoted,
                b'<' if !quoted => angle = true,
                b'>' if !quoted => angle = false,
                b',' if !quoted && !angle => {
                    self.rest = Some(&s[i + 1..]);
                    return Some(trim_lws(&s[..i]));
                }
                _ => {}
            }
            i += 1;
        }
        self.rest = None;
        Some(trim_lws(s))
    }
}

/// Trims spaces, tabs, CR and LF from both ends.
pub fn trim_lws(s: &[u8]) -> &[u8] {
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let start = s.iter().position(|b| !ws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !ws(b)).map_or(start, |e| e + 1);
    &s[start..end]
}

/// Parses a decimal number of at most `max`, rejecting signs, empties and
/// overflow (RFC 4475 3.1.2.4: never wrap).
pub fn decimal(s: &[u8], max: u64) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    (v <= max).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lws_includes_folds() {
        let mut s = Scanner::new(b"SIP  /   2.0\r\n /UDP");
        assert_eq!(s.token(), Some(&b"SIP"[..]));
        assert!(s.sep(b'/'));
        assert_eq!(s.token(), Some(&b"2.0"[..]));
        assert!(s.sep(b'/'));
        assert_eq!(s.token(), Some(&b"UDP"[..]));
        assert!(s.at_end());
    }

    #[test]
    fn quoted_strings_and_escapes() {
        let mut s = Scanner::new(br#""J Rosenberg \\\""  <x>"#);
        assert_eq!(s.quoted(), Some(&br#"J Rosenberg \\\""#[..]));
        let mut open = Scanner::new(br#""unterminated"#);
        assert_eq!(open.quoted(), None);
        let mut trailing = Scanner::new(br#""ends in backslash\"#);
        assert_eq!(trailing.quoted(), None);
    }

    #[test]
    fn comma_lists_respect_quotes_and_brackets() {
        let v = br#""a, b" <sip:x@y;p=1,2>, <sip:z> ,sip:w"#;
        let parts: Vec<_> = CommaList::new(v).collect();
        assert_eq!(
            parts,
            vec![&br#""a, b" <sip:x@y;p=1,2>"#[..], b"<sip:z>", b"sip:w"]
        );
    }

    #[test]
    fn decimals_never_wrap() {
        assert_eq!(decimal(b"0068", 255), Some(68));
        assert_eq!(decimal(b"256", 255), None);
        assert_eq!(decimal(b"4294967296", u64::from(u32::MAX)), None);
        assert_eq!(decimal(b"-999", u64::MAX), None);
        assert_eq!(decimal(b"", 10), None);
        assert_eq!(decimal(b"99999999999999999999999", u64::MAX), None);
    }
}
