//! A minimal carrier UAC for tests that need to hold the media sockets
//! themselves: builds requests to the gateway and reads its answers.

use std::net::{SocketAddr, UdpSocket};

/// The next SIP message on `sock` (panics after the socket's timeout).
pub fn recv_sip(sock: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 8192];
    let (n, _) = sock
        .recv_from(&mut buf)
        .expect("a SIP message within the timeout");
    buf[..n].to_vec()
}

/// A request in dialog `call` to the number `echo` at `gw`, from the UAC at
/// `me`, with an optional SDP body.
pub fn request(
    method: &str,
    call: &str,
    cseq: u32,
    to_tag: Option<&str>,
    me: SocketAddr,
    gw: SocketAddr,
    body: Option<&str>,
) -> Vec<u8> {
    request_to("echo", method, call, cseq, to_tag, me, gw, body)
}

/// As [`request`], to `number`.
#[allow(clippy::too_many_arguments)]
pub fn request_to(
    number: &str,
    method: &str,
    call: &str,
    cseq: u32,
    to_tag: Option<&str>,
    me: SocketAddr,
    gw: SocketAddr,
    body: Option<&str>,
) -> Vec<u8> {
    let to = match to_tag {
        Some(t) => format!("<sip:{number}@{gw}>;tag={t}"),
        None => format!("<sip:{number}@{gw}>"),
    };
    let body = body.unwrap_or("");
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:{number}@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call}{cseq}{method}\r\n\
Max-Forwards: 70\r\nFrom: <sip:+447700900123@{me}>;tag=carrier{call}\r\nTo: {to}\r\nCall-ID: {call}\r\n\
CSeq: {cseq} {method}\r\nContact: <sip:carrier@{me}>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends `req` and returns the final response (skipping provisionals).
pub fn transact(sock: &UdpSocket, gw: SocketAddr, req: &[u8]) -> Vec<u8> {
    sock.send_to(req, gw).expect("send");
    loop {
        let m = recv_sip(sock);
        if !m.starts_with(b"SIP/2.0 1") {
            return m;
        }
    }
}
