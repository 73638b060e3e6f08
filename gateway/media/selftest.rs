//! A power-on self-test of the media core: every suite seals and opens a
//! packet, and a tampered copy fails, before the gateway says it is ready.
//! An appliance that cannot protect media must not start serving calls.

use super::srtp::{MasterKey, SrtpConfig, SrtpError, SrtpReceiver, SrtpSender, Suite};

/// What failed, and for which suite.
#[derive(Debug, thiserror::Error)]
#[error("media self-test failed for {suite}: {what}")]
pub struct SelfTestError {
    pub suite: &'static str,
    pub what: &'static str,
}

/// Seals and opens one RTP and one RTCP packet with each suite from a fresh
/// random key; checks that a flipped bit fails authentication.
pub fn run() -> Result<Vec<Suite>, SelfTestError> {
    let mut ok = Vec::new();
    for suite in Suite::ALL {
        check(suite).map_err(|what| SelfTestError {
            suite: suite.sdes_name(),
            what,
        })?;
        ok.push(suite);
    }
    Ok(ok)
}

fn check(suite: Suite) -> Result<(), &'static str> {
    let key = MasterKey::random(suite).map_err(|_| "no random key")?;
    let cfg = SrtpConfig::default();
    let mut tx = SrtpSender::new(&key, cfg).map_err(|_| "sender setup")?;
    let mut rx = SrtpReceiver::new(&key, cfg).map_err(|_| "receiver setup")?;
    let mut rtp = [0u8; 12 + 160 + 16];
    rtp[0] = 0x80;
    rtp[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    rtp[12..172].fill(0xd5);
    let n = tx.seal_rtp(&mut rtp, 172).map_err(|_| "seal rtp")?;
    if suite != Suite::NullHmacSha1_80 && rtp[12..172].iter().all(|&b| b == 0xd5) {
        return Err("payload left in clear");
    }
    let mut bad = rtp;
    bad[20] ^= 1;
    if rx.open_rtp(&mut bad[..n]) != Err(SrtpError::AuthFailed) {
        return Err("tampered rtp accepted");
    }
    let m = rx.open_rtp(&mut rtp[..n]).map_err(|_| "open rtp")?;
    if m != 172 || rtp[12..172].iter().any(|&b| b != 0xd5) {
        return Err("rtp round trip");
    }
    let mut rtcp = [0u8; 8 + 24 + 20];
    rtcp[..8].copy_from_slice(&[0x80, 201, 0, 1, 0x12, 0x34, 0x56, 0x78]);
    let n = tx.seal_rtcp(&mut rtcp, 8).map_err(|_| "seal rtcp")?;
    let m = rx.open_rtcp(&mut rtcp[..n]).map_err(|_| "open rtcp")?;
    if m != 8 || rtcp[..8] != [0x80, 201, 0, 1, 0x12, 0x34, 0x56, 0x78] {
        return Err("rtcp round trip");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_suite_passes() {
        let ok = super::run().expect("self-test");
        assert_eq!(ok.len(), super::Suite::ALL.len());
    }
}
