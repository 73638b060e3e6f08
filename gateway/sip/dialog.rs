//! A SIP dialog as one of its two ends sees it (RFC 3261 section 12): the
//! Call-ID, both ends' identities with their tags, the remote target, the
//! route set and the CSeq counters. Shared by the calls the gateway
//! answers (it is the UAS) and the calls it places out a trunk (the UAC),
//! so both build their in-dialog requests, and judge the far end's, the
//! same way. Sans-IO: it builds bytes; the caller sends them.
//!
//! The route set is the Record-Route of the request that made the dialog,
//! in order, for the UAS (12.1.1), and of the 2xx that answered it,
//! reversed, for the UAC (12.1.2). Requests carry it as Route headers
//! (12.2.1.1): with loose routing (`lr` on the first route) the
//! Request-URI is the remote target; with a strict router first, the
//! Request-URI is that router and the remote target goes last in Route.
//! The bytes go to the dialog's transport peer (the trunk), which is the
//! first route when a carrier's edge proxy record-routes.

use std::time::{Duration, Instant};

use super::build::{self, RequestSpec};
use super::header::NameAddr;
use super::message::{HeaderName, Message};

/// One dialog, from our side.
#[derive(Clone, Debug)]
pub struct Dialog {
    pub call_id: Vec<u8>,
    /// Our From (as UAC) or To (as UAS) value, with our tag.
    pub local: Vec<u8>,
    pub local_tag: Vec<u8>,
    /// Their From or To value, with their tag once known.
    pub remote: Vec<u8>,
    /// Where in-dialog requests go: their Contact (or, until they sent
    /// one, the first Request-URI).
    pub remote_target: Vec<u8>,
    /// Route header values, in the order they are sent.
    pub route_set: Vec<Vec<u8>>,
    /// Our last CSeq number in the dialog.
    pub local_cseq: u32,
    /// Their last CSeq number, once they sent a request in it.
    pub remote_cseq: Option<u32>,
    /// Whether the far end's answer fixed the remote tag and route set
    /// (always true for a dialog we answered).
    pub established: bool,
}

/// An in-dialog request that arrived out of order (RFC 3261 12.2.2: a
/// CSeq lower than one already seen earns 500).
#[derive(Debug, PartialEq, Eq)]
pub struct OutOfOrder;

impl Dialog {
    /// The dialog an INVITE makes when we answer it with `local_tag`:
    /// their From is the remote end, their Contact the target, and the
    /// Record-Route values, in order, the route set.
    pub fn answering(m: &Message<'_>, local_tag: &[u8]) -> Self {
        let mut local = m
            .header(HeaderName::To)
            .map(|h| h.value.to_vec())
            .unwrap_or_default();
        local.extend_from_slice(b";tag=");
        local.extend_from_slice(local_tag);
        let remote = m
            .header(HeaderName::From)
            .map(|h| h.value.to_vec())
            .unwrap_or_default();
        let remote_target = contact_uri(m)
            .or_else(|| {
                let from = m.from()?.ok()?;
                Some(from.uri_bytes.to_vec())
            })
            .unwrap_or_default();
        Self {
            call_id: m.call_id().unwrap_or_default().to_vec(),
            local,
            local_tag: local_tag.to_vec(),
            remote,
            remote_target,
            route_set: m
                .values(HeaderName::RecordRoute)
                .map(<[u8]>::to_vec)
                .collect(),
            local_cseq: 1,
            remote_cseq: m.cseq().and_then(Result::ok).map(|c| c.seq),
            established: true,
        }
    }

    /// A dialog we start with a request to `uri`: `local` is our From
    /// with `local_tag` in it, `remote` their To (no tag yet).
    pub fn calling(
        call_id: Vec<u8>,
        local: Vec<u8>,
        local_tag: Vec<u8>,
        remote: Vec<u8>,
        uri: Vec<u8>,
    ) -> Self {
        Self {
            call_id,
            local,
            local_tag,
            remote,
            remote_target: uri,
            route_set: Vec::new(),
            local_cseq: 1,
            remote_cseq: None,
            established: false,
        }
    }

    /// The far end's 2xx to our INVITE. The first one fixes their tag,
    /// target and route set (its Record-Route, reversed); later ones (the
    /// same 2xx resent) change nothing.
    pub fn answered_by(&mut self, m: &Message<'_>) {
        if self.established {
            return;
        }
        self.established = true;
        if let Some(to) = m.header(HeaderName::To) {
            self.remote = to.value.to_vec();
        }
        if let Some(target) = contact_uri(m) {
            self.remote_target = target;
        }
        let mut routes: Vec<Vec<u8>> = m
            .values(HeaderName::RecordRoute)
            .map(<[u8]>::to_vec)
            .collect();
        routes.reverse();
        self.route_set = routes;
    }

    /// Whether in-dialog request `m` is in this dialog: its Call-ID, its To
    /// tag ours and its From tag theirs (RFC 3261 12.2.2).
    pub fn owns(&self, m: &Message<'_>) -> bool {
        let to_tag = m.to().and_then(Result::ok).and_then(|t| t.tag());
        let from_tag = m.from().and_then(Result::ok).and_then(|f| f.tag());
        let remote_tag = NameAddr::parse(&self.remote).ok().and_then(|r| r.tag());
        m.call_id() == Some(self.call_id.as_slice())
            && to_tag == Some(self.local_tag.as_slice())
            && (remote_tag.is_none() || from_tag == remote_tag)
    }

    /// A request from the far end in this dialog: its CSeq must not go
    /// back (else 500).
    pub fn received(&mut self, m: &Message<'_>) -> Result<(), OutOfOrder> {
        let Some(Ok(cseq)) = m.cseq() else {
            return Err(OutOfOrder);
        };
        if self.remote_cseq.is_some_and(|last| cseq.seq < last) {
            return Err(OutOfOrder);
        }
        self.remote_cseq = Some(cseq.seq);
        Ok(())
    }

    /// A target-refresh request (re-INVITE, UPDATE) we accept: its
    /// Contact, if any, becomes the remote target (RFC 3261 12.2.2).
    pub fn refresh_target(&mut self, m: &Message<'_>) {
        if let Some(target) = contact_uri(m) {
            self.remote_target = target;
        }
    }

    /// The next CSeq number for a new request of ours (not ACK or CANCEL,
    /// which reuse their INVITE's).
    pub fn next_cseq(&mut self) -> u32 {
        self.local_cseq = self.local_cseq.wrapping_add(1);
        self.local_cseq
    }

    /// An in-dialog request: to the remote target, with the route set as
    /// Route headers (loose routing), or to the first route with the
    /// target last (a strict router, RFC 3261 12.2.1.1). `extra` follows
    /// the Route headers.
    pub fn request(&self, r: &Request<'_>) -> Vec<u8> {
        let strict = self
            .route_set
            .first()
            .and_then(|first| NameAddr::parse(first).ok())
            .filter(|first| first.uri.sip().is_some_and(|u| u.param(b"lr").is_none()))
            .map(|first| first.uri_bytes.to_vec());
        let mut target_route = Vec::new();
        let (uri, routes): (&[u8], Vec<&[u8]>) = match &strict {
            Some(router) => {
                target_route.push(b'<');
                target_route.extend_from_slice(&self.remote_target);
                target_route.push(b'>');
                let mut rest: Vec<&[u8]> = self.route_set[1..].iter().map(Vec::as_slice).collect();
                rest.push(&target_route);
                (router, rest)
            }
            None => (
                &self.remote_target,
                self.route_set.iter().map(Vec::as_slice).collect(),
            ),
        };
        let mut extra: Vec<(&str, &[u8])> = routes.into_iter().map(|r| ("Route", r)).collect();
        extra.extend_from_slice(r.extra);
        build::request(&RequestSpec {
            method: r.method,
            uri,
            via: r.via,
            transport: r.transport,
            branch: r.branch,
            from: &self.local,
            to: &self.remote,
            call_id: &self.call_id,
            cseq: r.cseq,
            extra: &extra,
            body: r.body,
        })
    }

    /// The bytes it keeps (for the calls' memory budget).
    pub fn held(&self) -> usize {
        self.call_id.len()
            + self.local.len()
            + self.local_tag.len()
            + self.remote.len()
            + self.remote_target.len()
            + self.route_set.iter().map(Vec::len).sum::<usize>()
    }
}

/// What varies between our in-dialog requests.
pub struct Request<'a> {
    pub method: &'a str,
    pub cseq: u32,
    pub via: std::net::SocketAddr,
    pub transport: &'a str,
    pub branch: &'a [u8],
    pub extra: &'a [(&'a str, &'a [u8])],
    pub body: Option<(&'a str, &'a [u8])>,
}

/// A 2xx to an INVITE we answered, resent by us (the transaction user,
/// RFC 3261 13.3.1.4) until its ACK: at T1, doubling up to T2, given up
/// after 64*T1. Over a reliable transport nothing is resent but the wait
/// for the ACK is the same.
#[derive(Debug)]
pub struct Resend2xx {
    pub bytes: super::WipedBytes,
    /// Where the INVITE came from (the 2xx goes back there).
    pub to: super::transaction::Peer,
    /// The INVITE's CSeq number: only its ACK stops the resends.
    pub cseq: u32,
    next: Instant,
    interval: Duration,
    until: Instant,
}

/// No ACK came for a 2xx within 64*T1: the dialog must end (13.3.1.4).
#[derive(Debug, PartialEq, Eq)]
pub struct NoAck;

impl Resend2xx {
    pub fn new(
        bytes: super::WipedBytes,
        to: super::transaction::Peer,
        cseq: u32,
        now: Instant,
        t1: Duration,
    ) -> Self {
        Self {
            bytes,
            to,
            cseq,
            next: now + t1,
            interval: t1,
            until: now + 64 * t1,
        }
    }

    /// When it next needs a look.
    pub fn deadline(&self) -> Instant {
        self.next.min(self.until)
    }

    /// At `now`: `Ok(true)` if it is to be resent now, `Err(NoAck)` once
    /// the wait is over.
    pub fn due(&mut self, now: Instant, t2: Duration) -> Result<bool, NoAck> {
        if self.until <= now {
            return Err(NoAck);
        }
        if self.next > now {
            return Ok(false);
        }
        self.interval = (self.interval * 2).min(t2);
        self.next = now + self.interval;
        Ok(true)
    }

    /// Steps `ok` at `now`: its bytes queued on `out` when due (over an
    /// unreliable transport); `true` once its ACK is overdue (`ok` is
    /// then cleared).
    pub fn step(
        ok: &mut Option<Self>,
        now: Instant,
        t2: Duration,
        out: &mut Vec<super::transaction::Transmit>,
    ) -> bool {
        let Some(r) = ok.as_mut() else {
            return false;
        };
        match r.due(now, t2) {
            Err(NoAck) => {
                *ok = None;
                true
            }
            Ok(true) if !r.to.reliable => {
                out.push(super::transaction::Transmit {
                    peer: r.to,
                    bytes: r.bytes.clone(),
                });
                false
            }
            Ok(_) => false,
        }
    }

    /// Whether ACK `m` is the one for this 2xx (its CSeq number).
    pub fn acked_by(&self, m: &Message<'_>) -> bool {
        m.cseq()
            .and_then(Result::ok)
            .is_some_and(|c| c.seq == self.cseq)
    }
}

/// The URI of the first Contact, if it parses.
fn contact_uri(m: &Message<'_>) -> Option<Vec<u8>> {
    m.values(HeaderName::Contact)
        .next()
        .and_then(|v| NameAddr::parse(v).ok())
        .map(|n| n.uri_bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Framing, Limits};

    fn parse(s: &str) -> Message<'_> {
        Message::parse(s.as_bytes(), Framing::Stream, &Limits::default())
            .expect("parses")
            .0
    }

    const VIA: &str = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1";

    fn lines(bytes: &[u8]) -> Vec<String> {
        String::from_utf8(bytes.to_vec())
            .expect("text")
            .split("\r\n")
            .map(str::to_string)
            .collect()
    }

    fn routes(bytes: &[u8]) -> Vec<String> {
        lines(bytes)
            .into_iter()
            .filter_map(|l| l.strip_prefix("Route: ").map(str::to_string))
            .collect()
    }

    fn bye(d: &Dialog) -> Vec<u8> {
        d.request(&Request {
            method: "BYE",
            cseq: 2,
            via: "192.0.2.9:5060".parse().expect("addr"),
            transport: "UDP",
            branch: b"z9hG4bKx",
            extra: &[],
            body: None,
        })
    }

    #[test]
    fn the_answering_side_keeps_the_record_route_in_order() {
        let invite = format!(
            "INVITE sip:100@gw SIP/2.0\r\nVia: {VIA}\r\nRecord-Route: <sip:p2.example;lr>, <sip:p1.example;lr>\r\nRecord-Route: <sip:p0.example;lr>\r\nFrom: <sip:a@x>;tag=theirs\r\nTo: <sip:100@gw>\r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\nContact: <sip:a@198.51.100.7:5070>\r\nContent-Length: 0\r\n\r\n"
        );
        let d = Dialog::answering(&parse(&invite), b"ours");
        assert_eq!(d.local, b"<sip:100@gw>;tag=ours");
        assert_eq!(d.remote_target, b"sip:a@198.51.100.7:5070");
        assert_eq!(d.remote_cseq, Some(7));
        let b = bye(&d);
        assert_eq!(lines(&b)[0], "BYE sip:a@198.51.100.7:5070 SIP/2.0");
        assert_eq!(
            routes(&b),
            [
                "<sip:p2.example;lr>",
                "<sip:p1.example;lr>",
                "<sip:p0.example;lr>"
            ]
        );
        let text = String::from_utf8(b).expect("text");
        assert!(text.contains("From: <sip:100@gw>;tag=ours\r\n"), "{text}");
        assert!(text.contains("To: <sip:a@x>;tag=theirs\r\n"), "{text}");
    }

    #[test]
    fn the_calling_side_reverses_the_answers_record_route_once() {
        let mut d = Dialog::calling(
            b"c2".to_vec(),
            b"<sip:gw@192.0.2.9>;tag=ours".to_vec(),
            b"ours".to_vec(),
            b"<sip:200@carrier>".to_vec(),
            b"sip:200@carrier".to_vec(),
        );
        assert_eq!(lines(&bye(&d))[0], "BYE sip:200@carrier SIP/2.0");
        let ok = format!(
            "SIP/2.0 200 OK\r\nVia: {VIA}\r\nRecord-Route: <sip:edge.example;lr>, <sip:core.example;lr>\r\nFrom: <sip:gw@192.0.2.9>;tag=ours\r\nTo: <sip:200@carrier>;tag=far\r\nCall-ID: c2\r\nCSeq: 1 INVITE\r\nContact: <sip:200@203.0.113.5>\r\nContent-Length: 0\r\n\r\n"
        );
        d.answered_by(&parse(&ok));
        let b = bye(&d);
        assert_eq!(lines(&b)[0], "BYE sip:200@203.0.113.5 SIP/2.0");
        assert_eq!(
            routes(&b),
            ["<sip:core.example;lr>", "<sip:edge.example;lr>"]
        );
        assert!(String::from_utf8(b)
            .expect("text")
            .contains("To: <sip:200@carrier>;tag=far\r\n"));
        // A resent 2xx (or a forked one) does not change the dialog.
        let other = ok
            .replace("tag=far", "tag=fork")
            .replace("edge.example", "elsewhere");
        d.answered_by(&parse(&other));
        assert_eq!(
            routes(&bye(&d)),
            ["<sip:core.example;lr>", "<sip:edge.example;lr>"]
        );
    }

    #[test]
    fn a_strict_router_first_takes_the_request_uri_and_the_target_goes_last() {
        let invite = format!(
            "INVITE sip:100@gw SIP/2.0\r\nVia: {VIA}\r\nRecord-Route: <sip:strict.example>, <sip:loose.example;lr>\r\nFrom: <sip:a@x>;tag=t\r\nTo: <sip:100@gw>\r\nCall-ID: c3\r\nCSeq: 1 INVITE\r\nContact: <sip:a@198.51.100.7>\r\nContent-Length: 0\r\n\r\n"
        );
        let d = Dialog::answering(&parse(&invite), b"ours");
        let b = bye(&d);
        assert_eq!(lines(&b)[0], "BYE sip:strict.example SIP/2.0");
        assert_eq!(
            routes(&b),
            ["<sip:loose.example;lr>", "<sip:a@198.51.100.7>"]
        );
    }

    #[test]
    fn a_2xx_is_resent_at_t1_doubling_to_t2_until_64_t1() {
        let t0 = Instant::now();
        let (t1, t2) = (Duration::from_millis(500), Duration::from_secs(4));
        let peer = crate::sip::transaction::Peer {
            addr: "192.0.2.1:5060".parse().expect("addr"),
            reliable: false,
            tls: false,
        };
        let mut r = Resend2xx::new(b"SIP/2.0 200 OK".to_vec().into(), peer, 1, t0, t1);
        let mut sent = Vec::new();
        let mut at = t0;
        while let Ok(resend) = r.due(at, t2) {
            if resend {
                sent.push((at - t0).as_millis());
            }
            at = r.deadline();
        }
        assert_eq!(sent[..5], [500, 1500, 3500, 7500, 11500]);
        assert_eq!(at - t0, 64 * t1);
        assert!(sent.iter().all(|&ms| ms < 32_000));
        // Only the ACK with the INVITE's CSeq number is its ACK.
        let ack = |cseq: u32| {
            format!("ACK sip:gw SIP/2.0\r\nVia: {VIA}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: c\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n")
        };
        assert!(r.acked_by(&parse(&ack(1))));
        assert!(!r.acked_by(&parse(&ack(2))));
    }

    #[test]
    fn requests_in_the_dialog_are_told_apart_and_kept_in_order() {
        let invite = format!(
            "INVITE sip:100@gw SIP/2.0\r\nVia: {VIA}\r\nFrom: <sip:a@x>;tag=theirs\r\nTo: <sip:100@gw>\r\nCall-ID: c4\r\nCSeq: 5 INVITE\r\nContact: <sip:a@198.51.100.7>\r\nContent-Length: 0\r\n\r\n"
        );
        let mut d = Dialog::answering(&parse(&invite), b"ours");
        let req = |cseq: u32, method: &str, to_tag: &str, from_tag: &str| {
            format!(
                "{method} sip:gw SIP/2.0\r\nVia: {VIA}\r\nFrom: <sip:a@x>;tag={from_tag}\r\nTo: <sip:100@gw>;tag={to_tag}\r\nCall-ID: c4\r\nCSeq: {cseq} {method}\r\nContact: <sip:a@198.51.100.8>\r\nContent-Length: 0\r\n\r\n"
            )
        };
        assert!(d.owns(&parse(&req(6, "UPDATE", "ours", "theirs"))));
        assert!(!d.owns(&parse(&req(6, "UPDATE", "other", "theirs"))));
        assert!(!d.owns(&parse(&req(6, "UPDATE", "ours", "forger"))));
        // An older CSeq is refused; an accepted refresh moves the target.
        let update = req(6, "UPDATE", "ours", "theirs");
        assert_eq!(d.received(&parse(&update)), Ok(()));
        assert_eq!(d.remote_target, b"sip:a@198.51.100.7");
        d.refresh_target(&parse(&update));
        assert_eq!(d.remote_target, b"sip:a@198.51.100.8");
        assert_eq!(
            d.received(&parse(&req(4, "INVITE", "ours", "theirs"))),
            Err(OutOfOrder)
        );
        assert_eq!(d.next_cseq(), 2);
        assert_eq!(d.next_cseq(), 3);
    }
}
