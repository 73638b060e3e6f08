//! SRTP open on hostile bytes, for a GCM and a CM suite; and sealing
//! arbitrary input then opening it must give the input back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate::media::srtp::{MasterKey, SrtpConfig, SrtpReceiver, SrtpSender, Suite};

fuzz_target!(|data: &[u8]| {
    for suite in [Suite::AeadAes128Gcm, Suite::AesCm128HmacSha1_32] {
        let key = MasterKey::new(suite, &[7; 16], &vec![9; suite.salt_len()]).expect("key");
        let cfg = SrtpConfig::default();
        let mut rx = SrtpReceiver::new(&key, cfg).expect("rx");
        let mut buf = data.to_vec();
        let _ = rx.open_rtp(&mut buf);

        let mut tx = SrtpSender::new(&key, cfg).expect("tx");
        let mut rx = SrtpReceiver::new(&key, cfg).expect("rx");
        let mut buf = data.to_vec();
        buf.resize(data.len() + suite.rtp_overhead(), 0);
        if let Ok(n) = tx.seal_rtp(&mut buf, data.len()) {
            let m = rx.open_rtp(&mut buf[..n]).expect("what we seal opens");
            assert_eq!(&buf[..m], data);
        }
    }
});
