//! SDP parsing and answering on hostile bodies: no panic, and every answer
//! Tollgate writes parses back with the negotiated codec and address.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate::media::srtp::Suite;
use tollgate::sip::sdp::{answer, Codec, Local, Sdp, SrtpMode};

fuzz_target!(|data: &[u8]| {
    let Ok(offer) = Sdp::parse(data) else {
        return;
    };
    for m in &offer.media {
        for &pt in &m.formats {
            let _ = (m.codec(pt), m.rtpmap(pt));
        }
        let _ = (m.ptime(), m.rtcp_mux(), offer.direction(m), m.cryptos().count());
    }
    for srtp in [SrtpMode::Off, SrtpMode::Offered, SrtpMode::Required] {
        let local = Local {
            address: "192.0.2.10".parse().expect("ip"),
            port: 30_000,
            codecs: vec![Codec::Pcma, Codec::Pcmu, Codec::G722],
            srtp,
            suites: vec![Suite::AeadAes128Gcm, Suite::AesCm128HmacSha1_80],
            session_id: 1,
            session_version: 1,
        };
        if let Ok(n) = answer(&offer, &local) {
            let back = Sdp::parse(&n.answer).expect("our answer parses");
            let m = back.audio().expect("audio section");
            assert_eq!(m.port, 30_000);
            assert_eq!(m.codec(n.pt), Some(n.codec));
            assert_eq!(m.cryptos().count(), usize::from(n.srtp.is_some()));
        }
    }
});
