//! Which addresses a trunk's SDP may send our media to.
//!
//! An SDP address is the peer's claim; over UDP a forged INVITE can name
//! any host, the gateway's own loopback services included. So, as a
//! careful SBC does, each trunk accepts media addresses only of the
//! scopes it is configured for: "public" always, plus "private" and
//! "loopback" where its own peer networks are private or loopback (a
//! carrier on a private interconnect, a test peer on the box) or the
//! operator lists them in `media_addresses`. Link-local, multicast,
//! broadcast and unspecified addresses are never a destination for a
//! unicast call leg, so no setting allows them (an unspecified address in
//! a re-INVITE is taken as the old form of hold: nothing is sent).

use ipnet::IpNet;

use super::{invalid, ConfigError};
use crate::sip::sdp::AddrScope;

/// The scopes a trunk accepts: `listed` if given, else public plus the
/// scopes of `peers`.
pub(super) fn media_scopes(
    at: &str,
    listed: Option<&[String]>,
    peers: &[IpNet],
) -> Result<Vec<AddrScope>, ConfigError> {
    let mut scopes = match listed {
        Some(list) => list
            .iter()
            .map(|name| match name.as_str() {
                "public" => Ok(AddrScope::Public),
                "private" => Ok(AddrScope::Private),
                "loopback" => Ok(AddrScope::Loopback),
                other => Err(invalid(
                    format!("{at}: media_addresses"),
                    format!(
                        "{other:?}: use \"public\", \"private\" or \"loopback\" (link-local, multicast and unspecified addresses are never media destinations)"
                    ),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => {
            let mut v = vec![AddrScope::Public];
            v.extend(
                peers
                    .iter()
                    .filter(|n| n.prefix_len() > 0)
                    .map(|n| AddrScope::of(n.network()))
                    .filter(|s| matches!(s, AddrScope::Private | AddrScope::Loopback)),
            );
            v
        }
    };
    scopes.sort_unstable();
    scopes.dedup();
    Ok(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn scopes_default_to_public_and_the_peers_own() {
        let c = Config::from_toml(
            r#"
[[trunk]]
name = "internet"
peers = ["0.0.0.0/0"]
trusted = false
[[trunk]]
name = "mpls"
peers = ["10.20.0.0/16", "fd00::/8"]
[[trunk]]
name = "test"
peers = ["127.0.0.1"]
[[trunk]]
name = "strict"
peers = ["10.9.0.0/16"]
media_addresses = ["public"]
"#,
        )
        .expect("config");
        let ip = |s: &str| s.parse().expect("ip");
        let t = |n: usize| &c.trunks[n];
        assert_eq!(t(0).media_allowed(ip("198.51.100.7")), Ok(()));
        for (addr, scope) in [
            ("10.1.2.3", AddrScope::Private),
            ("192.168.0.1", AddrScope::Private),
            ("100.64.0.1", AddrScope::Private),
            ("127.0.0.1", AddrScope::Loopback),
            ("::1", AddrScope::Loopback),
            ("::ffff:127.0.0.1", AddrScope::Loopback),
            ("169.254.1.1", AddrScope::LinkLocal),
            ("fe80::1", AddrScope::LinkLocal),
            ("224.0.0.1", AddrScope::Multicast),
            ("255.255.255.255", AddrScope::Multicast),
            ("ff02::1", AddrScope::Multicast),
            ("0.0.0.0", AddrScope::Unspecified),
            ("::", AddrScope::Unspecified),
        ] {
            assert_eq!(t(0).media_allowed(ip(addr)), Err(scope), "{addr}");
        }
        assert_eq!(t(1).media_allowed(ip("10.1.2.3")), Ok(()));
        assert_eq!(t(1).media_allowed(ip("fd12::5")), Ok(()));
        assert_eq!(
            t(1).media_allowed(ip("127.0.0.1")),
            Err(AddrScope::Loopback)
        );
        assert_eq!(t(2).media_allowed(ip("127.0.0.1")), Ok(()));
        assert_eq!(t(3).media_allowed(ip("10.9.1.1")), Err(AddrScope::Private));
        let e = Config::from_toml(
            "[[trunk]]\nname = \"m\"\npeers = [\"192.0.2.1\"]\nmedia_addresses = [\"multicast\"]\n",
        )
        .expect_err("refused");
        assert!(e.to_string().contains("never media destinations"), "{e}");
    }

    #[test]
    fn an_untrusted_peer_names_only_itself_and_a_carrier_anyone_public() {
        let c = Config::from_toml(
            r#"
[[trunk]]
name = "carrier"
peers = ["192.0.2.0/24"]
[[trunk]]
name = "internet"
peers = ["0.0.0.0/0", "::/0"]
trusted = false
"#,
        )
        .expect("config");
        let ip = |s: &str| -> std::net::IpAddr { s.parse().expect("ip") };
        // A trusted carrier may keep its media on another public host.
        assert_eq!(c.media_refused(ip("192.0.2.9"), ip("198.51.100.7")), None);
        // An untrusted peer may name only its own address (IPv4-mapped
        // taken as IPv4), and its scope rules still come first.
        let other = Some(crate::config::NOT_SIGNALLING_SOURCE);
        assert_eq!(
            c.media_refused(ip("203.0.113.5"), ip("198.51.100.7")),
            other
        );
        assert_eq!(c.media_refused(ip("203.0.113.5"), ip("203.0.113.5")), None);
        assert_eq!(
            c.media_refused(ip("::ffff:203.0.113.5"), ip("203.0.113.5")),
            None
        );
        assert_eq!(c.media_refused(ip("2001:db8::1"), ip("2001:db8::2")), other);
        assert_eq!(
            c.media_refused(ip("203.0.113.5"), ip("127.0.0.1")),
            Some("loopback")
        );
    }
}
