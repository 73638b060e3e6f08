//! The `tone` test service's audio: a 1 kHz sine at -10 dBm0 in G.711
//! (ITU-T G.711 μ-law and A-law encoders). 1 kHz at 8 kHz sampling is
//! exactly 8 samples a period, so one 20 ms packet (160 samples) holds 20
//! whole periods and every packet is the same.

pub use crate::media::g711::{alaw_to_linear, linear_to_alaw, linear_to_ulaw, ulaw_to_linear};

/// Samples of one 1 kHz period at 8 kHz, at -10 dBm0 (peak about 10,300
/// of 32,767 for μ-law's 3.17 dBm0 full scale).
fn period() -> [i16; 8] {
    let peak = 10_300.0;
    let mut s = [0i16; 8];
    for (n, v) in s.iter_mut().enumerate() {
        *v = (peak * (std::f64::consts::PI * n as f64 / 4.0).sin()).round() as i16;
    }
    s
}

/// `samples` samples of tone, encoded with `encode`.
pub fn tone(samples: usize, encode: fn(i16) -> u8) -> Vec<u8> {
    let p = period();
    (0..samples).map(|n| encode(p[n % 8])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_is_twenty_whole_periods() {
        let t = tone(160, linear_to_ulaw);
        assert_eq!(t.len(), 160);
        for k in 0..8 {
            assert!(t.iter().skip(k).step_by(8).all(|&b| b == t[k]));
        }
        // Zero crossings at samples 0 and 4, peaks at 2 and 6.
        assert_eq!(t[0], linear_to_ulaw(0));
        assert_ne!(t[2], t[6], "opposite signs");
    }
}
