//! 8 kHz mono 16-bit PCM WAV files, the softphone's audio in and out.
//! The format is a 44-byte RIFF header and little-endian samples; other
//! WAV kinds are refused with a clear message rather than resampled.

use std::path::Path;

/// Reads an 8 kHz mono 16-bit PCM WAV file.
pub fn read(path: &Path) -> Result<Vec<i16>, String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&b).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses WAV bytes (chunks in any order; unknown chunks skipped).
pub fn parse(b: &[u8]) -> Result<Vec<i16>, String> {
    if b.len() < 12 || &b[..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return Err("not a WAV file".into());
    }
    let mut at = 12;
    let mut format = None;
    while at + 8 <= b.len() {
        let id = &b[at..at + 4];
        let len = u32::from_le_bytes([b[at + 4], b[at + 5], b[at + 6], b[at + 7]]) as usize;
        let body = b
            .get(at + 8..at + 8 + len)
            .ok_or("a chunk runs past the end of the file")?;
        match id {
            b"fmt " if body.len() >= 16 => {
                let tag = u16::from_le_bytes([body[0], body[1]]);
                let channels = u16::from_le_bytes([body[2], body[3]]);
                let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
                let bits = u16::from_le_bytes([body[14], body[15]]);
                format = Some((tag, channels, rate, bits));
            }
            b"data" => {
                match format {
                    Some((1, 1, 8000, 16)) => {}
                    Some((tag, ch, rate, bits)) => {
                        return Err(format!(
                            "{ch}-channel {rate} Hz {bits}-bit (format {tag}); use 8000 Hz mono 16-bit PCM"
                        ))
                    }
                    None => return Err("no fmt chunk before the data".into()),
                }
                return Ok(body
                    .chunks_exact(2)
                    .map(|s| i16::from_le_bytes([s[0], s[1]]))
                    .collect());
            }
            _ => {}
        }
        at += 8 + len + (len & 1);
    }
    Err("no data chunk".into())
}

/// The bytes of an 8 kHz mono 16-bit PCM WAV file of `samples`.
pub fn encode(samples: &[i16]) -> Vec<u8> {
    let data = (samples.len() * 2) as u32;
    let mut b = Vec::with_capacity(44 + samples.len() * 2);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&8000u32.to_le_bytes());
    b.extend_from_slice(&16000u32.to_le_bytes()); // bytes per second
    b.extend_from_slice(&2u16.to_le_bytes()); // block align
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&s.to_le_bytes());
    }
    b
}

/// Writes `samples` as an 8 kHz mono 16-bit PCM WAV file.
pub fn write(path: &Path, samples: &[i16]) -> Result<(), String> {
    std::fs::write(path, encode(samples)).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_formats() {
        let s: Vec<i16> = (0..800).map(|i| (i * 37 % 2000 - 1000) as i16).collect();
        let b = encode(&s);
        assert_eq!(b.len(), 44 + 1600);
        assert_eq!(parse(&b).expect("parses"), s);
        let mut stereo = b.clone();
        stereo[22] = 2;
        assert!(parse(&stereo).expect_err("stereo").contains("2-channel"));
        assert!(parse(b"RIFF\0\0\0\0WAVE").is_err());
        assert!(parse(&b[..50]).is_err());
        assert!(parse(b"not a wav").is_err());
    }
}
