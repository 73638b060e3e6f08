//! The configuration's own tests: what each rule refuses and says.
use super::*;
use crate::sip::sdp::SrtpMode;

#[test]
fn sdes_needs_tls_or_a_loudly_named_override() {
    let trunk = |extra: &str| {
        Config::from_toml(&format!(
            "[[trunk]]\nname = \"c\"\npeers = [\"192.0.2.1\"]\naddress = \"192.0.2.1:5060\"\nsrtp = \"offered\"\n{extra}"
        ))
    };
    let e = trunk("").expect_err("SDES over UDP refused").to_string();
    assert!(
        e.contains("RFC 4568") && e.contains("insecure_sdes_over_cleartext"),
        "{e}"
    );
    assert!(trunk("transport = \"tcp\"\n").is_err());
    let c = trunk("insecure_sdes_over_cleartext = true\n").expect("overridden");
    assert_eq!(c.trunks[0].srtp_over(false), Some(SrtpMode::Offered));
    // An inbound-only trunk: SDES only for offers that came over TLS.
    let c = Config::from_toml(
        "[[trunk]]\nname = \"in\"\npeers = [\"192.0.2.0/24\"]\nsrtp = \"required\"\n",
    )
    .expect("no address: decided per message");
    assert_eq!(c.trunks[0].srtp_over(true), Some(SrtpMode::Required));
    // Required but not over TLS: refused, never answered in clear.
    assert_eq!(c.trunks[0].srtp_over(false), None);
}

#[test]
fn embedded_defaults_are_loopback_with_test_numbers() {
    let c = Config::embedded().expect("the embedded defaults are valid");
    assert_eq!(c.sip_udp, vec!["127.0.0.1:5060".parse().expect("addr")]);
    assert_eq!(c.sip_tcp, vec!["127.0.0.1:5060".parse().expect("addr")]);
    assert!(c.sip_tls.is_empty());
    assert_eq!(c.admin_listen, "127.0.0.1:9100".parse().expect("addr"));
    assert_eq!(c.rtp_ports, (20000, 39999));
    assert_eq!(c.route("echo").map(|r| &r.target), Some(&Target::Echo));
    assert_eq!(c.route("tone").map(|r| &r.target), Some(&Target::Tone));
    assert_eq!(c.trunk_for("127.0.0.5".parse().expect("ip")), Some(0));
    assert_eq!(
        c.trunk_for("::ffff:127.0.0.5".parse().expect("ip")),
        Some(0)
    );
    assert_eq!(c.trunk_for("192.0.2.1".parse().expect("ip")), None);
    assert_eq!(c.limits.max_size, 65536);
    assert_eq!(c.agents.listen, "127.0.0.1:4433".parse().expect("addr"));
    assert_eq!(c.agents.address, "127.0.0.1:4433");
    assert_eq!(c.agents.suite, crate::media::srtp::Suite::AeadAes128Gcm);
    assert_eq!(c.agents.drop_after, std::time::Duration::from_secs(2));
    assert_eq!(c.media_shards, None, "one per core, resolved at start");
    // An empty file is the same as the defaults for SIP and admin.
    let e = Config::from_toml("").expect("empty file");
    assert_eq!(e.sip_udp, c.sip_udp);
    assert!(e.trunks.is_empty() && e.routes.is_empty());
}

/// The appliance image's configuration (image/overlay) is valid, and
/// "auto" addresses resolve to the default route's source address.
#[test]
fn the_appliance_config_loads_with_auto_addresses() {
    let toml = include_str!("../../image/overlay/etc/tollgate/tollgate.toml");
    let checked = Config::from_toml(toml).expect("the shipped file is valid anywhere");
    assert!(
        checked.unresolved(),
        "auto stays auto until the gateway starts"
    );
    match (checked.resolve(), default_route_address()) {
        (Ok(c), Some(ip)) => {
            assert_eq!(c.public_address, ip);
            assert_eq!(c.agents.address, format!("{ip}:4433"));
            assert_eq!(c.sip_tls.len(), 1);
            assert_eq!(c.trunks.len(), 1);
        }
        (Err(e), None) => assert!(e.to_string().contains("no address"), "{e}"),
        (r, ip) => panic!("config {:?} with default route {ip:?}", r.err()),
    }
}

fn err(toml: &str) -> String {
    Config::from_toml(toml).expect_err("must fail").to_string()
}

#[test]
fn approvals_are_soon_and_their_role_is_a_group_of_its_own() {
    for (toml, field) in [
        (
            "[admin]\napproval_window_s = 0\n",
            "admin.approval_window_s",
        ),
        (
            "[admin]\napproval_window_s = 2592000\n",
            "admin.approval_window_s",
        ),
        (
            "[admin]\nauditor_group = \"staff\"\napprover_group = \"staff\"\n",
            "admin.approver_group",
        ),
    ] {
        let e = Config::from_toml(toml).expect_err("refused");
        assert!(e.to_string().starts_with(field), "{e}");
    }
    let c = Config::from_toml("[admin]\napproval_window_s = 600\n").expect("valid");
    assert_eq!(c.approval_window, std::time::Duration::from_secs(600));
}

#[test]
fn every_problem_is_reported_with_where_it_is() {
    let e = Config::from_toml(
        "[sip]\nudp = [\"x\"]\nt1_ms = 1\n[records]\nretention_days = 0\n\
[[trunk]]\nname = \"c\"\npeers = [\"10.0.0/8\"]\n\
[[dial]]\nprefix = \"+44\"\ntrunk = \"c\"\n\
[[route]]\nnumber = \"1\"\ntarget = \"tone\"\nring_ms = 999999\n",
    )
    .expect_err("must fail");
    let ConfigError::Several(all) = &e else {
        panic!("one problem only: {e}");
    };
    let said: Vec<String> = all.iter().map(ToString::to_string).collect();
    assert_eq!(
        said,
        [
            "sip.udp[0]: \"x\" is not an address:port",
            "sip.t1_ms: must be 50 to 5000 milliseconds",
            "records.retention_days: 1 to 36500 days",
            "trunk[0] \"c\": peers[0]: \"10.0.0/8\" is not a CIDR",
            // The trunk with a problem is not there for what names it.
            "dial[0] \"+44\": trunk: no trunk named \"c\"",
            "route[0] \"1\": ring_ms: at most 120000 (two minutes)",
        ]
    );
    // One per line when shown.
    assert_eq!(e.to_string().lines().count(), 6);
    // A single problem is shown as itself.
    assert_eq!(
        err("[sip]\nt1_ms = 1\n"),
        "sip.t1_ms: must be 50 to 5000 milliseconds"
    );
}

#[test]
fn media_shards_are_a_count_or_one_per_core() {
    let c = Config::from_toml("[media]\nshards = 3\n").expect("valid");
    assert_eq!(c.media_shards, Some(3));
    assert_eq!(
        Config::from_toml("[media]\nshards = 0\n")
            .expect("valid")
            .media_shards,
        None
    );
    assert_eq!(
        err("[media]\nshards = 300\n"),
        "media.shards: 0 (one per core) to 256"
    );
}

#[test]
fn auto_addresses_wait_for_the_machine() {
    let c = Config::from_toml(
        "[sip]\nudp = [\"0.0.0.0:5060\"]\npublic_address = \"auto\"\n\
[agents]\nlisten = \"0.0.0.0:4433\"\naddress = \"auto\"\n",
    )
    .expect("valid as a file on any machine");
    assert!(c.unresolved());
    assert!(c.public_address.is_unspecified());
    match (c.resolve(), default_route_address()) {
        (Ok(c), Some(ip)) => {
            assert!(!c.unresolved());
            assert_eq!(c.public_address, ip);
            assert_eq!(c.agents.address, format!("{ip}:4433"));
        }
        (Err(e), None) => {
            let e = e.to_string();
            assert!(
                e.contains("sip.public_address") && e.contains("agents.address"),
                "{e}"
            );
        }
        (r, ip) => panic!("resolved {:?} with default route {ip:?}", r.err()),
    }
    // Without "auto", resolving changes nothing.
    let fixed = Config::from_toml("[sip]\npublic_address = \"192.0.2.7\"\n").expect("valid");
    assert!(!fixed.unresolved());
    assert_eq!(
        fixed.resolve().expect("nothing to resolve").public_address,
        "192.0.2.7".parse::<IpAddr>().expect("ip")
    );
}

#[test]
fn errors_say_what_and_where() {
    let e = err("[sip]\nudp = [\"127.0.0.1\"]\n");
    assert_eq!(e, "sip.udp[0]: \"127.0.0.1\" is not an address:port");
    let e = err("[sip]\nupd = []\n");
    assert!(e.contains("line 2") && e.contains("upd"), "{e}");
    let e = err("[[trunk]]\nname = \"c\"\npeers = [\"10.0.0.0/8\", \"10.0.0/8\"]\n");
    assert_eq!(e, "trunk[0] \"c\": peers[1]: \"10.0.0/8\" is not a CIDR");
    let e = err("[[trunk]]\nname = \"c\"\npeers = [\"10.0.0.0/8\"]\nsrtp = \"maybe\"\n");
    assert_eq!(
        e,
        "trunk[0] \"c\": srtp: \"maybe\": use off, offered or required"
    );
    let e = err("[[route]]\nnumber = \"100\"\ntarget = \"trunk:nowhere\"\n");
    assert_eq!(e, "route[0] \"100\": target: no trunk named \"nowhere\"");
    let e = err("[media]\nrtp_ports = \"20001-20000\"\n");
    assert!(e.starts_with("media.rtp_ports:"), "{e}");
    let e = err("[sip]\ntls = [\"127.0.0.1:5061\"]\n");
    assert_eq!(e, "sip.tls: needs tls_certificate and tls_private_key");
    let e = err("[[trunk]]\nname = \"t\"\npeers = [\"10.0.0.0/8\"]\naddress = \"10.0.0.1:5061\"\ntransport = \"tls\"\n");
    assert!(e.starts_with("trunk[0] \"t\": tls_ca: a TLS trunk"), "{e}");
    let e = err("[agents]\nlisten = \"0.0.0.0:4433\"\n");
    assert_eq!(e, "agents.address: required when listen is 0.0.0.0 or ::");
    let e = err("[agents]\nsrtp = \"AES_CM_128_HMAC_SHA1_80\"\n");
    assert!(e.starts_with("agents.srtp: "), "{e}");
    let e = err("[sip]\nmax_headers = \"many\"\n");
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn register_passwords_are_not_printed() {
    let c = Config::from_toml(
        "[[trunk]]\nname = \"reg\"\npeers = [\"192.0.2.0/24\"]\naddress = \"192.0.2.1:5060\"\n\
         [trunk.register]\nusername = \"acct\"\npassword = \"hunter2\"\n",
    )
    .expect("valid");
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("acct"));
}
