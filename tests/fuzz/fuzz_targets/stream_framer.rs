//! The SIP stream framer (TCP, TLS) fed a peer's bytes in pieces of any
//! size: never a panic, messages stay within the size limit, and the
//! messages cut do not depend on how the bytes were split (keepalive
//! pings may be counted differently: one run of CRLFs is one pong).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate::sip::framer::{Frame, Framer};
use tollgate::sip::message::Limits;

fn frames(pieces: &[&[u8]]) -> (Vec<Frame>, bool) {
    let limits = Limits {
        max_size: 4096,
        ..Limits::default()
    };
    let mut f = Framer::new(limits);
    let mut out = Vec::new();
    for p in pieces {
        f.push(p);
        loop {
            match f.next_frame() {
                Ok(Some(x)) => out.push(x),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let whole = frames(&[stream]);
    // The same bytes in pieces of `cut` (at least one) bytes.
    let step = usize::from(cut).max(1);
    let pieces: Vec<&[u8]> = stream.chunks(step).collect();
    let split = frames(&pieces);
    // Frames before any loss of framing agree; a loss is a loss either way
    // (a piecewise feed can only stop at the same point or later).
    let messages = |v: &[Frame]| -> Vec<Frame> {
        v.iter()
            .filter(|f| matches!(f, Frame::Message(_)))
            .cloned()
            .collect()
    };
    if !whole.1 && !split.1 {
        assert_eq!(messages(&whole.0), messages(&split.0));
    }
    for f in &whole.0 {
        if let Frame::Message(m) = f {
            assert!(m.len() <= 4096);
        }
    }
});
