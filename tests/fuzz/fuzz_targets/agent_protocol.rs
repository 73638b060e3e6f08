//! The agent control stream and media datagram framing on hostile bytes:
//! no panic, the decoder never holds more than one message's worth plus
//! what was pushed, every decoded message re-encodes to a frame that
//! decodes to the same message, and varints round-trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate::agent::protocol::{
    encode, get_varint, put_varint, split_datagram, ClientMsg, Decoder, ServerMsg,
};

fn check<T>(data: &[u8])
where
    T: for<'de> serde::Deserialize<'de> + serde::Serialize + PartialEq + std::fmt::Debug,
{
    let mut d = Decoder::default();
    // Pushed in uneven pieces, as a stream delivers.
    for chunk in data.chunks(7) {
        d.push(chunk);
        loop {
            match d.decode::<T>() {
                Ok(Some(m)) => {
                    let mut wire = Vec::new();
                    encode(&m, &mut wire);
                    let mut again = Decoder::default();
                    again.push(&wire);
                    assert_eq!(again.decode::<T>().expect("re-encoded parses"), Some(m));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check::<ClientMsg>(data);
    check::<ServerMsg>(data);
    if let Some((flow, packet)) = split_datagram(data) {
        assert!(!packet.is_empty());
        let mut b = [0u8; 8];
        let n = put_varint(flow, &mut b).expect("fits");
        assert_eq!(get_varint(&b[..n]), Some((flow, n)));
    }
});
