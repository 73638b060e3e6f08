//! RTCP compound parsing: every packet and every nested list is walked.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate::media::rtcp::{Compound, RtcpPacket};

fuzz_target!(|data: &[u8]| {
    let Ok(compound) = Compound::parse(data) else {
        return;
    };
    for packet in compound.take(1000) {
        match packet {
            Ok(RtcpPacket::SenderReport { reports, .. })
            | Ok(RtcpPacket::ReceiverReport { reports, .. }) => {
                let n = reports.len();
                assert_eq!(reports.count(), n);
            }
            Ok(RtcpPacket::SourceDescription(chunks)) => {
                for c in chunks {
                    for (kind, value) in c.items() {
                        assert!(kind != 0 && value.len() <= 255);
                    }
                    let _ = c.cname();
                }
            }
            Ok(RtcpPacket::Bye { ssrcs, reason }) => {
                let _ = ssrcs.count();
                assert!(reason.map_or(0, <[u8]>::len) <= 255);
            }
            Ok(RtcpPacket::Other { body, .. }) => assert!(body.len() <= data.len()),
            Err(_) => {}
        }
    }
});
