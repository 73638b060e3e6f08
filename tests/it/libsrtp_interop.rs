//! Interop with libsrtp2, the SRTP library inside Asterisk, FreeSWITCH and
//! rtpengine (built by the `srtp` crate with its OpenSSL backend; a
//! dev-dependency only, the gateway never links it).
//!
//! For each suite a stream of 70,000 RTP packets (starting near the top of
//! the sequence space, so the 16-bit sequence number wraps and the rollover
//! counter moves twice) is protected by one side and opened by the other, both
//! ways, with packets reordered in flight, including across the wrap; then
//! 70,000 RTCP compounds the same way.

use crate::common::libsrtp::{self, SUITES};
use tollgate::media::rtcp::{RtcpWriter, SenderInfo};
use tollgate::media::srtp::{MasterKey, SrtpConfig, SrtpReceiver, SrtpSender};

const PACKETS: usize = 70_000;
const FIRST_SEQ: u16 = 65_000;
const SSRC: u32 = 0x1357_9bdf;
/// The rollover counter after the last packet: 65,000 + 70,000 crosses the
/// 16-bit wrap twice.
const LAST_ROC: u32 = ((FIRST_SEQ as usize + PACKETS - 1) >> 16) as u32;

/// RTP packet `i` of the test stream: varying payload sizes, some CSRCs,
/// some header extensions, some marker bits.
fn rtp_packet(i: usize) -> Vec<u8> {
    let seq = FIRST_SEQ.wrapping_add(i as u16);
    let csrcs = if i.is_multiple_of(7) { 2 } else { 0 };
    let ext = i.is_multiple_of(11);
    let mut p = vec![0x80 | csrcs as u8 | if ext { 0x10 } else { 0 }];
    p.push(if i.is_multiple_of(50) { 0x80 } else { 0 });
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&((i as u32).wrapping_mul(160)).to_be_bytes());
    p.extend_from_slice(&SSRC.to_be_bytes());
    for c in 0..csrcs {
        p.extend_from_slice(&(0x1000 + c as u32).to_be_bytes());
    }
    if ext {
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, i as u8, 0, 0]);
    }
    let payload = match i % 13 {
        0 => 20,
        1 => 1,
        _ => 160,
    };
    p.extend((0..payload).map(|k| (i * 31 + k) as u8));
    p
}

/// RTCP compound `i`: an SR and an SDES CNAME.
fn rtcp_packet(i: usize) -> Vec<u8> {
    let mut buf = [0u8; 128];
    let mut w = RtcpWriter::new(&mut buf);
    let info = SenderInfo {
        ntp_timestamp: 0xe000_0000_0000_0000 | i as u64,
        rtp_timestamp: i as u32 * 160,
        packet_count: i as u32,
        octet_count: i as u32 * 160,
    };
    w.sender_report(SSRC, &info, &[]).expect("sr");
    w.sdes_cname(SSRC, b"interop@tollgate").expect("sdes");
    let n = w.len();
    buf[..n].to_vec()
}

/// Delivery order: in order except adjacent swaps every 50 packets and one
/// swap straddling the sequence-number wrap.
fn delivery_order() -> Vec<usize> {
    let mut order: Vec<usize> = (0..PACKETS).collect();
    for k in (10..PACKETS - 1).step_by(50) {
        order.swap(k, k + 1);
    }
    let wrap = usize::from(u16::MAX - FIRST_SEQ);
    order.swap(wrap, wrap + 1); // seq 65535 and 0 arrive swapped
    assert_eq!(rtp_packet(order[wrap])[2..4], [0, 0]);
    order
}

#[test]
fn libsrtp_protects_tollgate_opens_rtp_across_the_wrap() {
    let order = delivery_order();
    for suite in SUITES {
        let key = MasterKey::random(suite).expect("key");
        let mut tx = libsrtp::session(&key, true);
        let mut rx = SrtpReceiver::new(&key, SrtpConfig::default()).expect("receiver");
        let sealed: Vec<Vec<u8>> = (0..PACKETS)
            .map(|i| {
                let mut p = rtp_packet(i);
                tx.protect(&mut p).expect("libsrtp protect");
                p
            })
            .collect();
        for &i in &order {
            let mut p = sealed[i].clone();
            let n = rx
                .open_rtp(&mut p)
                .unwrap_or_else(|e| panic!("{suite:?} packet {i}: {e}"));
            assert_eq!(&p[..n], &rtp_packet(i)[..], "{suite:?} packet {i}");
        }
        assert_eq!(LAST_ROC, 2);
        assert_eq!(rx.roc(SSRC), Some(LAST_ROC), "{suite:?}: two wraps");
        // Every packet again: all replays.
        let mut p = sealed[PACKETS - 1].clone();
        assert!(rx.open_rtp(&mut p).is_err());
    }
}

#[test]
fn tollgate_protects_libsrtp_opens_rtp_across_the_wrap() {
    let order = delivery_order();
    for suite in SUITES {
        let key = MasterKey::random(suite).expect("key");
        let mut tx = SrtpSender::new(&key, SrtpConfig::default()).expect("sender");
        let mut rx = libsrtp::session(&key, false);
        let sealed: Vec<Vec<u8>> = (0..PACKETS)
            .map(|i| {
                let mut p = rtp_packet(i);
                let len = p.len();
                p.resize(len + suite.rtp_overhead(), 0);
                let n = tx.seal_rtp(&mut p, len).expect("seal");
                p.truncate(n);
                p
            })
            .collect();
        assert_eq!(tx.roc(SSRC), Some(LAST_ROC));
        for &i in &order {
            let mut p = sealed[i].clone();
            rx.unprotect(&mut p)
                .unwrap_or_else(|e| panic!("{suite:?} packet {i}: libsrtp says {e:?}"));
            assert_eq!(p, rtp_packet(i), "{suite:?} packet {i}");
        }
        assert_eq!(rx.get_stream_roc(SSRC).expect("roc"), LAST_ROC);
    }
}

#[test]
fn srtcp_both_ways() {
    for suite in SUITES {
        let key = MasterKey::random(suite).expect("key");
        // libsrtp -> Tollgate
        let mut ltx = libsrtp::session(&key, true);
        let mut rx = SrtpReceiver::new(&key, SrtpConfig::default()).expect("receiver");
        // Tollgate -> libsrtp
        let mut tx = SrtpSender::new(&key, SrtpConfig::default()).expect("sender");
        let mut lrx = libsrtp::session(&key, false);
        for i in 0..PACKETS {
            let plain = rtcp_packet(i);

            let mut p = plain.clone();
            ltx.protect_rtcp(&mut p).expect("libsrtp protect_rtcp");
            let n = rx
                .open_rtcp(&mut p)
                .unwrap_or_else(|e| panic!("{suite:?} rtcp {i}: {e}"));
            assert_eq!(&p[..n], &plain[..], "{suite:?} rtcp {i}");

            let mut p = plain.clone();
            p.resize(plain.len() + suite.rtcp_overhead(), 0);
            let n = tx.seal_rtcp(&mut p, plain.len()).expect("seal");
            p.truncate(n);
            lrx.unprotect_rtcp(&mut p)
                .unwrap_or_else(|e| panic!("{suite:?} rtcp {i}: libsrtp says {e:?}"));
            assert_eq!(p, plain, "{suite:?} rtcp {i}");
        }
    }
}
