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
    /// Wiped when dropped, and where a message leaves it (messages carry
    /// SDES keys; see [`super::WipedBytes`]).
    buf: zeroize::Zeroizing<Vec<u8>>,
    limits: Limits,
}

impl Framer {
    pub fn new(limits: Limits) -> Self {
        Self {
            buf: Vec::with_capacity(4096).into(),
            limits,
        }
    }

    /// The first `n` bytes, taken out; the bytes left move to the front
    /// and the places they leave are zeroed.
    fn take_front(&mut self, n: usize) -> Vec<u8> {
        let old = self.buf.len();
        let front = self.buf.drain(..n).collect();
        let left = self.buf.len();
        self.buf.resize(old, 0);
        self.buf.truncate(left);
        front
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
                self.take_front(crlfs);
                return Ok(Some(Frame::Ping));
            }
            if crlfs == self.buf.len() {
                // A ping may be split across reads: keep its last three
                // bytes until the next ones say.
                self.take_front(crlfs.saturating_sub(3));
                return Ok(None);
            }
            self.take_front(crlfs);
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        match Message::parse(&self.buf, Framing::Stream, &self.limits) {
            Ok((_, used)) => Ok(Some(Frame::Message(self.take_front(used)))),
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

    /// The bytes the framer's buffer holds past its length: where taken
    /// messages used to be.
    ///
    /// `unsafe` (test only): safe Rust cannot read a `Vec`'s spare
    /// capacity. Sound here because every byte read was written before
    /// (by a push, or by the wipe), and truncation does not de-initialise.
    #[allow(unsafe_code)]
    fn left_behind(f: &mut Framer, upto: usize) -> Vec<u8> {
        let spare = f.buf.spare_capacity_mut();
        spare[..upto]
            .iter()
            // SAFETY: see above; `upto` is at most what was ever written.
            .map(|b| unsafe { b.assume_init() })
            .collect()
    }

    #[test]
    fn a_taken_message_leaves_no_copy_in_the_buffer() {
        let mut f = Framer::new(Limits::default());
        let mut stream = OPTIONS.to_vec();
        stream.extend_from_slice(b"OPT"); // the start of the next one
        f.push(&stream);
        assert_eq!(f.next_frame(), Ok(Some(Frame::Message(OPTIONS.to_vec()))));
        assert_eq!(&f.buf[..], b"OPT");
        let stale = left_behind(&mut f, OPTIONS.len());
        assert!(
            stale.iter().all(|&b| b == 0),
            "{}",
            String::from_utf8_lossy(&stale)
        );
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
