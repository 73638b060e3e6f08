//! An SRTP trunk call end to end, with libsrtp2 as the carrier's media
//! stack: the carrier offers SDES `a=crypto` on RTP/SAVP, the gateway
//! answers with its own key, and 100 packets protected by libsrtp2 come
//! back from the echo number re-protected by the gateway and open with
//! libsrtp2 to the same audio. Both SDES suites the trunk side takes.
//! Without the operator's explicit override, an SDES offer over UDP is
//! refused: the key would travel in clear signalling.

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::common::gateway::Gateway;
use crate::common::libsrtp;
use crate::common::uac::{recv_sip, request};
use base64::Engine as _;
use tollgate::media::srtp::{MasterKey, Suite};
use tollgate::sip::message::{Framing, Limits, Message};
use tollgate::sip::sdp::Sdp;

const TRUNK: &str = r#"
[sip]
udp = ["127.0.0.1:16000"]
tcp = []
[media]
rtp_ports = "57000-57999"
[admin]
listen = "127.0.0.1:16001"
[agents]
listen = "127.0.0.1:16002"
[[trunk]]
name = "secure"
peers = ["127.0.0.0/8"]
codecs = ["PCMU"]
srtp = "required"
# The carrier here is on loopback, over UDP: the test accepts keys in
# clear signalling (the record says so).
insecure_sdes_over_cleartext = true
[[route]]
number = "echo"
target = "echo"
"#;

#[test]
fn sdes_srtp_echo_call_with_libsrtp_on_the_carrier_side() {
    let gw = Gateway::start_toml("sdes", 16000, 16001, TRUNK);
    for (i, suite) in [Suite::AesCm128HmacSha1_80, Suite::AeadAes128Gcm]
        .into_iter()
        .enumerate()
    {
        let sip = UdpSocket::bind("127.0.0.1:0").expect("sip socket");
        sip.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let rtp = UdpSocket::bind("127.0.0.1:0").expect("rtp socket");
        rtp.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let (sip_addr, rtp_port) = (
            sip.local_addr().expect("addr"),
            rtp.local_addr().expect("addr").port(),
        );
        // The carrier's offer with its key, at SDP version `version`.
        let offer = |key: &MasterKey, version: u32| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&*key.to_concatenated());
            format!(
                "v=0\r\no=carrier 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio {rtp_port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 {} inline:{b64}\r\n",
                suite.sdes_name()
            )
        };
        let ours = MasterKey::random(suite).expect("key");
        let sdp = offer(&ours, 1);
        let call = format!("sdes-call-{i}");
        sip.send_to(
            &request("INVITE", &call, 1, None, sip_addr, gw.sip, Some(&sdp)),
            gw.sip,
        )
        .expect("send");
        let ok = loop {
            let m = recv_sip(&sip);
            if m.starts_with(b"SIP/2.0 200") {
                break m;
            }
            assert!(
                m.starts_with(b"SIP/2.0 1"),
                "{}",
                String::from_utf8_lossy(&m)
            );
        };
        let (resp, _) =
            Message::parse(&ok, Framing::Datagram, &Limits::default()).expect("200 parses");
        let tag = resp
            .to()
            .expect("to")
            .expect("valid")
            .tag()
            .map(|t| String::from_utf8_lossy(t).into_owned());
        let answer = Sdp::parse(resp.body).expect("answer parses");
        let audio = answer.audio().expect("audio");
        assert!(audio.is_savp(), "{suite:?}: RTP/SAVP answered");
        let crypto = audio.cryptos().next().expect("the gateway's key");
        assert_eq!(crypto.tag, 1);
        let theirs = crypto.master_key(&[suite]).expect("key decodes");
        let gw_media = SocketAddr::new(answer.connection.expect("c="), audio.port);
        sip.send_to(
            &request("ACK", &call, 1, tag.as_deref(), sip_addr, gw.sip, None),
            gw.sip,
        )
        .expect("ack");

        let mut tx = libsrtp::session(&ours, true);
        let mut rx = libsrtp::session(&theirs, false);
        let back = echo_batch(&rtp, gw_media, &mut tx, &mut rx, 0, 100);
        assert!(back >= 95, "{suite:?}: {back} of 100 came back");

        // A session refresh (a re-INVITE with the same offer, as carriers
        // send under RFC 4028): the answer keeps the gateway's key, the
        // one its media seals with, and audio goes on.
        let reinvite_with = |cseq, sdp: &str| {
            reinvite(
                &sip,
                &call,
                cseq,
                tag.as_deref(),
                sip_addr,
                gw.sip,
                sdp,
                suite,
            )
        };
        let again = reinvite_with(2, &sdp);
        assert!(
            again.same_as(&theirs),
            "{suite:?}: the re-INVITE's answer keeps the key"
        );
        let back = echo_batch(&rtp, gw_media, &mut tx, &mut rx, 100, 30);
        assert!(back >= 28, "{suite:?}: {back} of 30 after the refresh");

        // The carrier re-keys in a re-INVITE: its packets under the new
        // key open, and the gateway's key stays.
        let renewed = MasterKey::random(suite).expect("key");
        let rekeyed = offer(&renewed, 2);
        let again = reinvite_with(3, &rekeyed);
        assert!(again.same_as(&theirs), "{suite:?}: the gateway's key stays");
        let mut tx = libsrtp::session(&renewed, true);
        let back = echo_batch(&rtp, gw_media, &mut tx, &mut rx, 130, 30);
        assert!(back >= 28, "{suite:?}: {back} of 30 after the re-key");
        sip.send_to(
            &request("BYE", &call, 4, tag.as_deref(), sip_addr, gw.sip, None),
            gw.sip,
        )
        .expect("bye");
        assert!(recv_sip(&sip).starts_with(b"SIP/2.0 200"), "BYE answered");
    }
    assert_eq!(gw.metric("tollgate_calls_total{outcome=\"answered\"}"), 2.0);
    assert_eq!(
        gw.metric("tollgate_rtp_dropped_total{reason=\"srtp\"}"),
        0.0
    );
}

/// Sends `count` packets from sequence number `first`, protected with
/// `tx`; returns how many came back from the echo opening with `rx` to
/// the same audio (and not in clear on the wire).
fn echo_batch(
    rtp: &UdpSocket,
    gw_media: SocketAddr,
    tx: &mut srtp::Session,
    rx: &mut srtp::Session,
    first: u16,
    count: u16,
) -> usize {
    let mut buf = [0u8; 2048];
    let mut matched = 0;
    for n in first..first + count {
        let payload: Vec<u8> = (0..160).map(|k| (n as usize * 7 + k) as u8).collect();
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&n.to_be_bytes());
        p.extend_from_slice(&(u32::from(n) * 160).to_be_bytes());
        p.extend_from_slice(&0x0c0f_fee0u32.to_be_bytes());
        p.extend_from_slice(&payload);
        tx.protect(&mut p).expect("libsrtp protects");
        rtp.send_to(&p, gw_media).expect("send rtp");
        if let Ok((len, _)) = rtp.recv_from(&mut buf) {
            let mut got = buf[..len].to_vec();
            assert_ne!(&got[12..172], &payload[..], "encrypted on the wire");
            rx.unprotect(&mut got)
                .expect("libsrtp opens the gateway's SRTP");
            assert_eq!(&got[12..], &payload[..], "packet {n}");
            matched += 1;
        }
    }
    matched
}

/// A re-INVITE in the dialog with `sdp`, answered 200 and ACKed: the key
/// in the gateway's answer.
#[allow(clippy::too_many_arguments)]
fn reinvite(
    sip: &UdpSocket,
    call: &str,
    cseq: u32,
    tag: Option<&str>,
    me: SocketAddr,
    gw: SocketAddr,
    sdp: &str,
    suite: Suite,
) -> MasterKey {
    sip.send_to(&request("INVITE", call, cseq, tag, me, gw, Some(sdp)), gw)
        .expect("send");
    let ok = loop {
        let m = recv_sip(sip);
        if !m.starts_with(b"SIP/2.0 1") {
            break m;
        }
    };
    assert!(
        ok.starts_with(b"SIP/2.0 200"),
        "{}",
        String::from_utf8_lossy(&ok)
    );
    let (resp, _) = Message::parse(&ok, Framing::Datagram, &Limits::default()).expect("parses");
    let answer = Sdp::parse(resp.body).expect("answer parses");
    let audio = answer.audio().expect("audio");
    let key = audio
        .cryptos()
        .next()
        .expect("a crypto line")
        .master_key(&[suite])
        .expect("key decodes");
    sip.send_to(&request("ACK", call, cseq, tag, me, gw, None), gw)
        .expect("ack");
    key
}

#[test]
fn sdes_over_udp_is_refused_without_the_override() {
    let toml = TRUNK
        .replace("16000", "18700")
        .replace("16001", "18701")
        .replace("16002", "18702")
        .replace("57000-57999", "31000-31999")
        .replace("insecure_sdes_over_cleartext = true\n", "");
    let gw = Gateway::start_toml("sdes-clear", 18700, 18701, &toml);
    let sip = UdpSocket::bind("127.0.0.1:0").expect("sip socket");
    sip.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let me = sip.local_addr().expect("addr");
    let key = MasterKey::random(Suite::AeadAes128Gcm).expect("key");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&*key.to_concatenated());
    let sdp = format!(
        "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 AEAD_AES_128_GCM inline:{b64}\r\n"
    );
    let r = common::uac::transact(
        &sip,
        gw.sip,
        &request("INVITE", "sdes-clear-1", 1, None, me, gw.sip, Some(&sdp)),
    );
    let text = String::from_utf8_lossy(&r);
    assert!(text.starts_with("SIP/2.0 488"), "{text}");
    assert!(
        !text.contains("a=crypto"),
        "a key in clear signalling: {text}"
    );
    // The trunk requires SRTP: a plain offer over UDP is refused too, never
    // taken in clear.
    let plain = "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let r = common::uac::transact(
        &sip,
        gw.sip,
        &request("INVITE", "sdes-clear-2", 1, None, me, gw.sip, Some(plain)),
    );
    let text = String::from_utf8_lossy(&r);
    assert!(text.starts_with("SIP/2.0 488"), "{text}");
}
