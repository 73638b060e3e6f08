//! Session timers (RFC 4028), the answering side: a carrier that asks for
//! them (`Session-Expires`, with `Supported: timer`) gets them, as the
//! refresher, and a session it stops refreshing is ended by the gateway —
//! so a carrier that disappears without a BYE does not leave a call (and
//! an agent) hanging. Sans-IO: the caller passes `now`.
//!
//! The gateway never volunteers to refresh: when the carrier does not
//! support timers, there are none (RFC 4028 allows it), and RTP inactivity
//! still ends the call.

use std::time::{Duration, Instant};

use super::message::{HeaderName, Message};

/// The smallest interval accepted (RFC 4028 section 4: at least 90 s).
pub const MIN_SE: u32 = 90;
/// The largest interval kept; longer requests are lowered to it.
pub const MAX_SE: u32 = 7200;

/// A negotiated session timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionTimer {
    pub interval: u32,
    refreshed: Instant,
}

/// What the request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asked {
    /// No timer (none asked, or the carrier cannot refresh).
    None,
    /// A timer with the carrier refreshing.
    Timer(SessionTimer),
    /// Too short: answer 422 with `Min-SE: 90`.
    TooSmall,
}

impl SessionTimer {
    /// Reads an INVITE (or re-INVITE) received at `now`.
    pub fn from_request(m: &Message<'_>, now: Instant) -> Asked {
        let Some(v) = m.values(HeaderName::SessionExpires).next() else {
            return Asked::None;
        };
        let delta = v
            .split(|&b| b == b';')
            .next()
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.trim().parse::<u32>().ok());
        let Some(delta) = delta else {
            return Asked::None;
        };
        let supported = m
            .values(HeaderName::Supported)
            .any(|t| t.eq_ignore_ascii_case(b"timer"));
        if !supported {
            return Asked::None;
        }
        if delta < MIN_SE {
            return Asked::TooSmall;
        }
        Asked::Timer(Self {
            interval: delta.min(MAX_SE),
            refreshed: now,
        })
    }

    /// A refresh (re-INVITE) arrived at `now`.
    pub fn refreshed(&mut self, now: Instant) {
        self.refreshed = now;
    }

    /// When the gateway ends a session not refreshed: before expiry by a
    /// third of the interval or 32 s, whichever is less (RFC 4028 10).
    pub fn deadline(&self) -> Instant {
        let i = self.interval;
        self.refreshed + Duration::from_secs(u64::from(i - (i / 3).min(32)))
    }

    /// The headers the 2xx carries.
    pub fn session_expires(&self) -> Vec<u8> {
        format!("{};refresher=uac", self.interval).into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Framing, Limits};

    fn invite(extra: &str) -> Vec<u8> {
        format!(
            "INVITE sip:x@gw SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:x@gw>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn asked(extra: &str, now: Instant) -> Asked {
        let b = invite(extra);
        let (m, _) = Message::parse(&b, Framing::Stream, &Limits::default()).expect("parses");
        SessionTimer::from_request(&m, now)
    }

    #[test]
    fn negotiates_and_expires_on_the_rfc_schedule() {
        let t0 = Instant::now();
        assert_eq!(asked("", t0), Asked::None);
        // Without Supported: timer the carrier cannot refresh: no timer.
        assert_eq!(asked("Session-Expires: 1800\r\n", t0), Asked::None);
        assert_eq!(
            asked("Supported: timer\r\nSession-Expires: 60\r\n", t0),
            Asked::TooSmall
        );
        let Asked::Timer(mut t) =
            asked("Supported: 100rel, timer\r\nx: 1800;refresher=uac\r\n", t0)
        else {
            panic!("no timer")
        };
        assert_eq!(t.interval, 1800);
        assert_eq!(t.session_expires(), b"1800;refresher=uac");
        // 1800 s: BYE 32 s before expiry.
        assert_eq!(t.deadline(), t0 + Duration::from_secs(1768));
        t.refreshed(t0 + Duration::from_secs(900));
        assert_eq!(t.deadline(), t0 + Duration::from_secs(900 + 1768));
        // 90 s: a third (30 s) before.
        let Asked::Timer(t) = asked("Supported: timer\r\nSession-Expires: 90\r\n", t0) else {
            panic!("no timer")
        };
        assert_eq!(t.deadline(), t0 + Duration::from_secs(60));
        // Very long intervals are lowered.
        let Asked::Timer(t) = asked("Supported: timer\r\nSession-Expires: 86400\r\n", t0) else {
            panic!("no timer")
        };
        assert_eq!(t.interval, MAX_SE);
    }
}
