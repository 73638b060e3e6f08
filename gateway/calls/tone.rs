//! The `tone` test service's audio: a 1 kHz sine at -10 dBm0 in G.711
//! (ITU-T G.711 μ-law and A-law encoders). 1 kHz at 8 kHz sampling is
//! exactly 8 samples a period, so one 20 ms packet (160 samples) holds 20
//! whole periods and every packet is the same.

/// Encodes a 16-bit linear sample as G.711 μ-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32_635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    // The segment: the highest set bit among bits 7..14.
    let mut exponent = 7;
    while exponent > 0 && s & (0x80 << exponent) == 0 {
        exponent -= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// Encodes a 16-bit linear sample as G.711 A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut s = i32::from(sample) >> 3; // 13-bit
    let sign = if s >= 0 {
        0x80
    } else {
        s = -s - 1;
        0x00
    };
    s = s.min(0x0fff);
    let (exponent, mantissa) = if s < 32 {
        (0, s >> 1)
    } else {
        let mut e = 1;
        while e < 7 && s >= (32 << e) {
            e += 1;
        }
        (e, (s >> e) & 0x0f)
    };
    (sign | (exponent << 4) as u8 | mantissa as u8) ^ 0x55
}

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
    fn ulaw_matches_g711_reference_points() {
        // Reference values from the G.711 tables.
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(linear_to_ulaw(-1), 0x7f);
        assert_eq!(linear_to_ulaw(32_767), 0x80);
        assert_eq!(linear_to_ulaw(-32_768), 0x00);
        assert_eq!(linear_to_ulaw(1000), 0xce);
    }

    #[test]
    fn alaw_matches_g711_reference_points() {
        assert_eq!(linear_to_alaw(0), 0xd5);
        assert_eq!(linear_to_alaw(-8), 0x55);
        assert_eq!(linear_to_alaw(32_767), 0xaa);
        assert_eq!(linear_to_alaw(-32_768), 0x2a);
    }

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
