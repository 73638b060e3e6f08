//! Every vector in `tests/vectors/srtp_vectors.json` (copied from the
//! project's shared reference data): RFC 7714 sections 16 and 17, libsrtp's
//! reference packets, RFC 3711 B.2/B.3 and RFC 6188 keystreams and key
//! derivation. Each packet vector is checked both ways: sealing the
//! plaintext gives the protected bytes exactly, and opening the protected
//! bytes gives the plaintext.

use serde_json::Value;
use tollgate::media::srtp::{
    kdf, MasterKey, SessionKeys, SrtpConfig, SrtpReceiver, SrtpSender, Suite,
};

fn vectors() -> Value {
    let text = include_str!("../vectors/srtp_vectors.json");
    serde_json::from_str(text).expect("vectors parse")
}

fn hx(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn suite(name: &str) -> Suite {
    Suite::from_sdes_name(name).unwrap_or_else(|| panic!("unknown suite {name}"))
}

fn contexts(v: &Value) -> (SrtpSender, SrtpReceiver) {
    let suite = suite(v["suite"].as_str().expect("suite"));
    let encrypt = v["mode"] == "encrypt_and_authenticate";
    let config = SrtpConfig {
        encrypt_rtp: encrypt,
        encrypt_rtcp: encrypt,
        ..SrtpConfig::default()
    };
    if v["kdf_applied"] == true {
        let master = MasterKey::new(suite, &hx(&v["master_key"]), &hx(&v["master_salt"]))
            .expect("master key");
        (
            SrtpSender::new(&master, config).expect("sender"),
            SrtpReceiver::new(&master, config).expect("receiver"),
        )
    } else {
        let keys = || {
            SessionKeys::new(suite, &hx(&v["session_key"]), &hx(&v["session_salt"]), &[])
                .expect("session keys")
        };
        (
            SrtpSender::with_session_keys(&keys(), &keys(), config).expect("sender"),
            SrtpReceiver::with_session_keys(&keys(), &keys(), config).expect("receiver"),
        )
    }
}

#[test]
fn packet_vectors_seal_and_open_byte_exactly() {
    let all = vectors();
    let list = all["packet_vectors"].as_array().expect("array");
    assert_eq!(list.len(), 16, "the shared file has 16 packet vectors");
    for v in list {
        let id = v["id"].as_str().expect("id");
        let plain = hx(&v["plaintext"]);
        let protected = hx(&v["protected"]);
        let rtcp = v["packet"] == "rtcp";
        let (mut tx, mut rx) = contexts(v);

        if rtcp {
            // SRTCP indices start at 1 and count up per SSRC; seal dummies
            // until the vector's index comes up.
            let want = v["srtcp_index"].as_u64().expect("index");
            let mut buf = vec![0u8; plain.len() + 64];
            for _ in 1..want {
                buf[..plain.len()].copy_from_slice(&plain);
                tx.seal_rtcp(&mut buf, plain.len()).expect("seal");
            }
            buf[..plain.len()].copy_from_slice(&plain);
            let n = tx.seal_rtcp(&mut buf, plain.len()).expect("seal");
            assert_eq!(
                hex::encode(&buf[..n]),
                hex::encode(&protected),
                "{id}: seal"
            );

            let mut buf = protected.clone();
            let n = rx.open_rtcp(&mut buf).expect(id);
            assert_eq!(hex::encode(&buf[..n]), hex::encode(&plain), "{id}: open");
        } else {
            assert_eq!(v["roc"], 0, "{id}: vectors use ROC 0");
            let mut buf = vec![0u8; plain.len() + 64];
            buf[..plain.len()].copy_from_slice(&plain);
            let n = tx.seal_rtp(&mut buf, plain.len()).expect("seal");
            assert_eq!(
                hex::encode(&buf[..n]),
                hex::encode(&protected),
                "{id}: seal"
            );

            let mut buf = protected.clone();
            let n = rx.open_rtp(&mut buf).expect(id);
            assert_eq!(hex::encode(&buf[..n]), hex::encode(&plain), "{id}: open");
        }
    }
}

#[test]
fn kdf_vectors_derive_every_listed_output() {
    let all = vectors();
    for v in all["kdf_vectors"].as_array().expect("array") {
        let id = v["id"].as_str().expect("id");
        let (mk, ms) = (hx(&v["master_key"]), hx(&v["master_salt"]));
        let out = &v["outputs"];
        let check = |label, field: &str| {
            if out[field].is_null() {
                return;
            }
            let want = hx(&out[field]);
            let mut got = vec![0u8; want.len()];
            kdf::derive(&mk, &ms, label, &mut got).expect("derive");
            assert_eq!(hex::encode(got), hex::encode(want), "{id}: {field}");
        };
        check(kdf::Label::RtpEncryption, "label_0x00_cipher_key");
        check(kdf::Label::RtpSalt, "label_0x02_cipher_salt");
        check(kdf::Label::RtpSalt, "label_0x02_aes_output_block");
        check(
            kdf::Label::RtpAuthentication,
            "label_0x01_auth_key_94_octets",
        );
        check(
            kdf::Label::RtpAuthentication,
            "auth_key_first_20_octets_for_HMAC_SHA1",
        );
    }
}

#[test]
fn derived_keys_listed_in_packet_vectors_match() {
    // The libsrtp vectors print the session keys derived from their master
    // keys, including the SRTCP labels and the 96-bit GCM salt padding.
    let all = vectors();
    let mut checked = 0;
    for v in all["packet_vectors"].as_array().expect("array") {
        let d = &v["derived_keys"];
        if d.is_null() {
            continue;
        }
        let (mk, ms) = (hx(&v["master_key"]), hx(&v["master_salt"]));
        for (field, label) in [
            ("srtp_encryption_key", kdf::Label::RtpEncryption),
            ("srtp_auth_key", kdf::Label::RtpAuthentication),
            ("srtp_salt", kdf::Label::RtpSalt),
            ("srtcp_encryption_key", kdf::Label::RtcpEncryption),
            ("srtcp_auth_key", kdf::Label::RtcpAuthentication),
            ("srtcp_salt", kdf::Label::RtcpSalt),
        ] {
            if d[field].is_null() {
                continue;
            }
            let want = hx(&d[field]);
            let mut got = vec![0u8; want.len()];
            kdf::derive(&mk, &ms, label, &mut got).expect("derive");
            assert_eq!(hex::encode(got), hex::encode(want), "{}: {field}", v["id"]);
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} derived keys checked");
}

#[test]
fn keystream_vectors_rfc3711_b2_and_rfc6188() {
    // The keystream is what sealing a zero payload with the session keys
    // produces: SSRC 0, index 0 gives counter block salt << 16.
    let all = vectors();
    assert_eq!(all["keystream_vectors"].as_array().map(Vec::len), Some(3));
    for v in all["keystream_vectors"].as_array().expect("array") {
        let id = v["id"].as_str().expect("id");
        let key = hx(&v["session_key"]);
        let salt = hx(&v["initial_counter"]);
        let suite = match key.len() {
            16 => Suite::AesCm128HmacSha1_80,
            24 => Suite::AesCm192HmacSha1_80,
            32 => Suite::AesCm256HmacSha1_80,
            n => panic!("{id}: key length {n}"),
        };
        let keys = || SessionKeys::new(suite, &key, &salt[..14], &[0; 20]).expect("keys");
        let mut tx =
            SrtpSender::with_session_keys(&keys(), &keys(), SrtpConfig::default()).expect("sender");
        let want = match v["keystream_first_48"].as_str() {
            Some(_) => hx(&v["keystream_first_48"]),
            None => hx(&v["keystream_first_32"]),
        };
        let header = hex::decode("800f0000decafbad00000000").expect("hex");
        let mut buf = vec![0u8; 12 + want.len() + 10];
        buf[..12].copy_from_slice(&header);
        tx.seal_rtp(&mut buf, 12 + want.len()).expect("seal");
        assert_eq!(
            hex::encode(&buf[12..12 + want.len()]),
            hex::encode(&want),
            "{id}"
        );

        if let Some(blocks) = v["keystream_blocks_0xfeff_0xff01"].as_str() {
            // Counter blocks 0xfeff..0xff01 of the same packet: a packet of
            // 0xff02 blocks, whose tail must match.
            let blocks = hex::decode(blocks).expect("hex");
            let payload = 0xff02 * 16;
            let mut tx = SrtpSender::with_session_keys(&keys(), &keys(), SrtpConfig::default())
                .expect("sender");
            let mut buf = vec![0u8; 12 + payload + 10];
            buf[..12].copy_from_slice(&header);
            tx.seal_rtp(&mut buf, 12 + payload).expect("seal");
            let tail = &buf[12 + payload - 48..12 + payload];
            assert_eq!(
                hex::encode(tail),
                hex::encode(&blocks),
                "{id}: blocks 0xfeff.."
            );
        }
    }
}
