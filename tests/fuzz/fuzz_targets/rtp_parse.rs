//! RTP parsing: anything either parser accepts must be self-consistent.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate::media::rtp::{self, SrtpHeader};

fuzz_target!(|data: &[u8]| {
    let header = SrtpHeader::parse(data);
    if let Ok(p) = rtp::parse(data) {
        let h = header.expect("a valid RTP packet has a valid clear header");
        assert_eq!(h.len, p.payload_offset());
        assert_eq!(h.sequence, p.sequence());
        assert_eq!(h.ssrc, p.ssrc());
        let _ = (p.marker(), p.payload_type(), p.timestamp(), p.extension());
        assert!(p.csrcs().count() <= 15);
        assert_eq!(
            p.payload_offset() + p.payload().len() + usize::from(p.padding()),
            data.len()
        );
    }
    let _ = rtp::is_rtcp(data);
});
