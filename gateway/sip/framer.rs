//! SIP over a byte stream (TCP, TLS), sans-IO: messages are cut from the
//! stream by their Content-Length (RFC 3261 section 18.3), and RFC 5626
//! keepalives are taken between them (a CRLFCRLF ping earns a CRLF pong;
//! stray CRLFs are skipped). The connection task pushes what it reads and
//! drains frames; a stream whose framing is lost must be closed, since
//! nothing after the bad bytes can be trusted.
//!
//! Memory: the buffer holds at most one incomplete message, which the
//! parser refuses past `limits.max_message_size`, plus one read.

use super::message::{Framing, Limits, Message, ParseError};

/// What the stream yielded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One whole message, as received.
    Message(Vec<u8>),
    /// A keepalive ping (CRLFCRLF): answer with a CRLF.
    Ping,
}

/// The framing is lost (a message the parser refuses): close the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("SIP stream framing lost: {0}")]
pub struct Lost(pub ParseError);

/// A stream's framing state.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    limits: Limits,
}

impl Framer {
    pub fn new(limits: Limits) -> Self {
        Self {
            buf: Vec::with_capacity(4096),
            limits,
        }
    }

    /// Bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Whether part of a message is waiting for more bytes (the caller
    /// bounds how long it waits).
    pub fn is_partial(&self) -> bool {
        self.buf.iter().any(|&b| b != b'\r' && b != b'\n')
    }

    /// The next frame; `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Lost> {
        let crlfs = self
            .buf
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        if crlfs > 0 {
            let ping = self.buf[..crlfs].windows(4).any(|w| w == b"\r\n\r\n");
            if ping {
                self.buf.drain(..crlfs);
                return Ok(Some(Frame::Ping));
            }
            if crlfs == self.buf.len() {
                // A ping may be split across reads: keep its last three
                // bytes until the next ones say.
                self.buf.drain(..crlfs.saturating_sub(3));
                return Ok(None);
            }
            self.buf.drain(..crlfs);
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        match Message::parse(&self.buf, Framing::Stream, &self.limits) {
            Ok((_, used)) => Ok(Some(Frame::Message(self.buf.drain(..used).collect()))),
            Err(ParseError::Incomplete) => Ok(None),
            Err(e) => Err(Lost(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nMax-Forwards: 70\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 4\r\n\r\nbody";

    fn drain(f: &mut Framer) -> Result<Vec<Frame>, Lost> {
        let mut out = Vec::new();
        while let Some(x) = f.next_frame()? {
            out.push(x);
        }
        Ok(out)
    }

    #[test]
    fn messages_and_pings_come_out_whole_however_the_bytes_arrive() {
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(OPTIONS);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(OPTIONS);
        let want = vec![
            Frame::Ping,
            Frame::Message(OPTIONS.to_vec()),
            Frame::Message(OPTIONS.to_vec()),
        ];
        let mut whole = Framer::new(Limits::default());
        whole.push(&stream);
        assert_eq!(drain(&mut whole), Ok(want.clone()));
        assert!(!whole.is_partial());
        // A byte at a time: the same frames.
        let mut bytewise = Framer::new(Limits::default());
        let mut got = Vec::new();
        for b in &stream {
            bytewise.push(std::slice::from_ref(b));
            got.extend(drain(&mut bytewise).expect("framing holds"));
        }
        assert_eq!(got, want);
        // A ping split across two reads still earns its pong.
        let mut split = Framer::new(Limits::default());
        split.push(b"\r\n");
        assert_eq!(split.next_frame(), Ok(None));
        assert!(!split.is_partial());
        split.push(b"\r\n");
        assert_eq!(split.next_frame(), Ok(Some(Frame::Ping)));
        // Half a message is partial; garbage loses the framing.
        let mut f = Framer::new(Limits::default());
        f.push(&OPTIONS[..40]);
        assert_eq!(f.next_frame(), Ok(None));
        assert!(f.is_partial());
        let mut bad = Framer::new(Limits::default());
        bad.push(b"HELLO\r\n\r\n");
        assert!(bad.next_frame().is_err());
    }
}
