//! `tollgate config check --strict`: a valid configuration can still be
//! an unsafe one to ship. These findings are what a reviewer of an
//! appliance's configuration would refuse; the image's own configuration
//! passes them (a test holds it to that).
//!
//! - a test number (`echo`, `tone`) open to every address: a forged
//!   INVITE could aim audio at anyone;
//! - SDES keys over cleartext signalling (`insecure_sdes_over_cleartext`);
//! - secrets other users can read: the configuration file itself, a
//!   registration `password_file`, the SIP TLS private key;
//! - `/metrics` listening beyond loopback with admin networks open to
//!   everyone.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{Config, Target};

/// Why a file is a finding: other users can read it.
fn world_readable(path: &Path, what: &str) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o004 != 0).then(|| {
        format!(
            "{what} {} is readable by every user (mode {mode:04o}): chmod o-r (0640, group tollgate)",
            path.display()
        )
    })
}

/// What `--strict` refuses in `config`, loaded from `path`.
pub fn findings(path: &Path, config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for r in &config.routes {
        let test = matches!(r.target, Target::Echo | Target::Tone);
        if test && r.test_peers.iter().any(|n| n.prefix_len() == 0) {
            out.push(format!(
                "route {:?}: test_peers opens a test number to every address (a forged INVITE could aim its audio at anyone): list the test phones' addresses",
                r.number
            ));
        }
    }
    for t in &config.trunks {
        if t.sdes_in_clear {
            out.push(format!(
                "trunk {:?}: insecure_sdes_over_cleartext sends SRTP keys in clear SIP: use transport = \"tls\"",
                t.name
            ));
        }
        if let Some(f) = t.register.as_ref().and_then(|r| r.password_file.as_deref()) {
            out.extend(world_readable(
                f,
                &format!("trunk {:?}: register.password_file", t.name),
            ));
        }
    }
    out.extend(world_readable(path, "the configuration"));
    if let Some(k) = &config.tls_private_key {
        out.extend(world_readable(k, "sip.tls_private_key"));
    }
    let nets = &config.firewall.admin_networks;
    if !config.admin_listen.ip().is_loopback()
        && (nets.is_empty() || nets.iter().any(|n| n.prefix_len() == 0))
    {
        out.push(format!(
            "admin.listen {} serves /metrics beyond this machine and firewall.admin_networks lets every address read it: list the monitoring networks",
            config.admin_listen
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_unsafe_setting_is_a_finding_and_safe_ones_are_not() {
        let dir = std::env::temp_dir().join(format!("tollgate-strict-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let pass = dir.join("carrier.pass");
        std::fs::write(&pass, "hunter2\n").expect("pass");
        let cfg = dir.join("tollgate.toml");
        let toml = format!(
            "[admin]\nlisten = \"0.0.0.0:9100\"\n\
             [firewall]\nadmin_networks = [\"0.0.0.0/0\"]\n\
             [[trunk]]\nname = \"open\"\npeers = [\"198.51.100.0/24\"]\naddress = \"198.51.100.1:5060\"\n\
             srtp = \"offered\"\ninsecure_sdes_over_cleartext = true\n\
             [trunk.register]\nusername = \"acct\"\npassword_file = \"{}\"\n\
             [[route]]\nnumber = \"echo\"\ntarget = \"echo\"\ntest_peers = [\"0.0.0.0/0\"]\n",
            pass.display()
        );
        std::fs::write(&cfg, &toml).expect("config");
        let set = |p: &Path, mode: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
        };
        set(&cfg, 0o644);
        set(&pass, 0o644);
        let c = Config::load(&cfg).expect("valid");
        assert_eq!(
            c.trunks[0].register.as_ref().map(|r| r.password.as_str()),
            Some("hunter2"),
            "the password file's content, without its newline"
        );
        let f = findings(&cfg, &c);
        for want in [
            "route \"echo\": test_peers",
            "insecure_sdes_over_cleartext",
            "register.password_file",
            "the configuration",
            "admin.listen 0.0.0.0:9100",
        ] {
            assert_eq!(
                f.iter().filter(|l| l.contains(want)).count(),
                1,
                "{want}: {f:#?}"
            );
        }
        assert_eq!(f.len(), 5, "{f:#?}");
        // Fixed: nothing left.
        set(&cfg, 0o640);
        set(&pass, 0o600);
        std::fs::write(
            &cfg,
            toml.replace("[\"0.0.0.0/0\"]", "[\"192.0.2.0/24\"]")
                .replace(
                    "srtp = \"offered\"\ninsecure_sdes_over_cleartext = true\n",
                    "",
                ),
        )
        .expect("config");
        let c = Config::load(&cfg).expect("valid");
        assert_eq!(findings(&cfg, &c), Vec::<String>::new());
        // Both a password and its file: refused.
        let both = toml.replace(
            "username = \"acct\"\n",
            "username = \"acct\"\npassword = \"x\"\n",
        );
        let e = Config::from_toml(&both).expect_err("both").to_string();
        assert!(e.contains("not both"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
