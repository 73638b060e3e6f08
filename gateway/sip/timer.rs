//! Session timers (RFC 4028), the answering side: a carrier that asks for
//! them (`Session-Expires`, with `Supported: timer`) gets them, as the
//! refresher, and a session it stops refreshing is ended by the gateway —
//! so a carrier that disappears without a BYE does not leave a call (and
//! an agent) hanging. Sans-IO: the caller passes `now`.
//!
//! The gateway never volunteers to refresh: when the carrier does not
//! support timers, there are none (RFC 4028 allows it), and RTP inactivity
//! still ends the call. When a peer asks the gateway to refresh
//! (`refresher=uas` in its request, or `refresher=uac` in the 2xx to a
//! request the gateway sent), it does, by UPDATE at half the interval
//! ([`SessionTimer::next_due`]).

use std::time::{Duration, Instant};

use super::message::{HeaderName, Message};

/// The smallest interval accepted (RFC 4028 section 4: at least 90 s).
pub const MIN_SE: u32 = 90;
/// The largest interval kept; longer requests are lowered to it.
pub const MAX_SE: u32 = 7200;
/// How soon a refresh that could not go is tried again (RFC 3261 14.1
/// waits up to 4 s after a 491).
pub const RETRY: Duration = Duration::from_secs(4);

/// Who refreshes a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresher {
    /// The peer: the gateway ends the session if the refresh is late.
    Peer,
    /// The gateway: it sends the refresh.
    Us,
}

/// A negotiated session timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionTimer {
    pub interval: u32,
    pub refresher: Refresher,
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
        // RFC 4028 9: the request's choice stands; without one the
        // gateway, answering, leaves the refreshing to the peer.
        let refresher = match refresher_param(v) {
            Some(Side::Uas) => Refresher::Us,
            _ => Refresher::Peer,
        };
        Asked::Timer(Self {
            interval: delta.min(MAX_SE),
            refresher,
            refreshed: now,
        })
    }

    /// Reads the 2xx to a request the gateway sent (an INVITE out, or
    /// its own refresh) at `now`: `None` if it carries no
    /// `Session-Expires` (no timer, RFC 4028 7.2).
    pub fn from_answer(m: &Message<'_>, now: Instant) -> Option<Self> {
        let v = m.values(HeaderName::SessionExpires).next()?;
        let delta = v
            .split(|&b| b == b';')
            .next()
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.trim().parse::<u32>().ok())?;
        // We were the UAC: `uac` names us; `uas`, or none, the peer.
        let refresher = match refresher_param(v) {
            Some(Side::Uac) => Refresher::Us,
            _ => Refresher::Peer,
        };
        Some(Self {
            interval: delta.clamp(MIN_SE, MAX_SE),
            refresher,
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

    /// When the gateway next acts: it ends a session the peer did not
    /// refresh in time ([`SessionTimer::deadline`]), and refreshes its own
    /// at half the interval (RFC 4028 10).
    pub fn next_due(&self) -> Instant {
        match self.refresher {
            Refresher::Peer => self.deadline(),
            Refresher::Us => self.refreshed + Duration::from_secs(u64::from(self.interval / 2)),
        }
    }

    /// Our refresh could not go, or met a passing refusal (491, 5xx): the
    /// next try comes [`RETRY`] from `now`, not half an interval on (by
    /// then the peer may have ended the session).
    pub fn retry_soon(&mut self, now: Instant) {
        let half = Duration::from_secs(u64::from(self.interval / 2));
        self.refreshed = now.checked_sub(half).map_or(now, |t| t + RETRY);
    }

    /// The `Session-Expires` of the 2xx to a request the peer sent.
    pub fn session_expires(&self) -> Vec<u8> {
        let who = match self.refresher {
            Refresher::Peer => "uac",
            Refresher::Us => "uas",
        };
        format!("{};refresher={who}", self.interval).into_bytes()
    }

    /// The `Session-Expires` of the gateway's own refresh (it stays the
    /// refresher: it is the UAC of the refresh).
    pub fn refresh_request(&self) -> Vec<u8> {
        format!("{};refresher=uac", self.interval).into_bytes()
    }
}

enum Side {
    Uac,
    Uas,
}

/// The `refresher` parameter of a `Session-Expires` value.
fn refresher_param(v: &[u8]) -> Option<Side> {
    v.split(|&b| b == b';').skip(1).find_map(|p| {
        let p = std::str::from_utf8(p).ok()?.trim();
        let (name, value) = p.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("refresher") {
            return None;
        }
        match value.trim().to_ascii_lowercase().as_str() {
            "uac" => Some(Side::Uac),
            "uas" => Some(Side::Uas),
            _ => None,
        }
    })
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

    #[test]
    fn the_refresher_is_whom_the_peer_names() {
        let t0 = Instant::now();
        // A request naming the UAS (us): the gateway refreshes at half
        // the interval, and says so in its 2xx.
        let Asked::Timer(t) = asked(
            "Supported: timer\r\nSession-Expires: 1800; Refresher=UAS\r\n",
            t0,
        ) else {
            panic!("no timer")
        };
        assert_eq!(t.refresher, Refresher::Us);
        assert_eq!(t.session_expires(), b"1800;refresher=uas");
        assert_eq!(t.next_due(), t0 + Duration::from_secs(900));
        assert_eq!(t.refresh_request(), b"1800;refresher=uac");
        let mut retried = t;
        retried.retry_soon(t0 + Duration::from_secs(2000));
        assert_eq!(retried.next_due(), t0 + Duration::from_secs(2000) + RETRY);
        // The peer refreshes: the gateway acts only at the deadline.
        let Asked::Timer(t) = asked("Supported: timer\r\nSession-Expires: 1800\r\n", t0) else {
            panic!("no timer")
        };
        assert_eq!((t.refresher, t.next_due()), (Refresher::Peer, t.deadline()));
        // In a 2xx to our request, `uac` is us.
        let ok = |se: &str| {
            let b = format!(
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP gw;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n\
To: <sip:x@gw>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{se}Content-Length: 0\r\n\r\n"
            );
            let (m, _) =
                Message::parse(b.as_bytes(), Framing::Stream, &Limits::default()).expect("parses");
            SessionTimer::from_answer(&m, t0).map(|t| (t.interval, t.refresher))
        };
        assert_eq!(ok(""), None);
        assert_eq!(
            ok("Session-Expires: 600;refresher=uac\r\n"),
            Some((600, Refresher::Us))
        );
        assert_eq!(
            ok("Session-Expires: 600;refresher=uas\r\n"),
            Some((600, Refresher::Peer))
        );
        assert_eq!(
            ok("Session-Expires: 30\r\n"),
            Some((MIN_SE, Refresher::Peer))
        );
    }
}
