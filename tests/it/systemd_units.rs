//! The shipped systemd units: `systemd-analyze security` rates the
//! service "OK" or better; sysusers makes the service user and the three
//! operators' groups the configuration names; tmpfiles makes the
//! credential directories root-only; the first-boot script is valid sh.

use std::path::Path;
use std::process::Command;

fn units() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd"))
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("runs (scripts/deps installs systemd)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_service_is_sandboxed_to_an_ok_rating_or_better() {
    let (_, out) = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(units().join("tollgate.service")));
    // Read as the compliance report reads it.
    let (exposure, rating) = tollgate::admin::compliance::facts::analyze_rating(&out)
        .unwrap_or_else(|| panic!("no rating in {out}"));
    assert!(
        out.contains("Overall exposure level for tollgate.service"),
        "{out}"
    );
    eprintln!("systemd-analyze security: {exposure} {rating}");
    assert!(
        matches!(rating.as_str(), "SAFE" | "OK"),
        "{exposure} {rating}"
    );
    // What the rating rests on, by name.
    let unit = std::fs::read_to_string(units().join("tollgate.service")).expect("unit");
    for must in [
        "Type=notify",
        "WatchdogSec=",
        "User=tollgate",
        "CapabilityBoundingSet=CAP_NET_ADMIN\n",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "RuntimeDirectory=tollgate",
        "StateDirectory=tollgate",
        "LoadCredentialEncrypted=master-key:",
        "LimitCORE=0\n",
        "MemoryMax=",
        "TasksMax=",
    ] {
        assert!(unit.contains(must), "tollgate.service lacks {must}");
    }
}

#[test]
fn sysusers_and_tmpfiles_make_the_user_groups_and_private_credstores() {
    use std::os::unix::fs::PermissionsExt;
    let root = std::env::temp_dir().join(format!("tollgate-sysroot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("etc")).expect("root");
    let (ok, out) = run(Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.display()))
        .arg(units().join("sysusers.d/tollgate.conf")));
    assert!(ok, "{out}");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("passwd");
    let group = std::fs::read_to_string(root.join("etc/group")).expect("group");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("tollgate:")
                && l.ends_with(":/var/lib/tollgate:/usr/sbin/nologin")),
        "{passwd}"
    );
    let names = [
        "tollgate-viewer",
        "tollgate-auditor",
        "tollgate-admin",
        "tollgate",
    ];
    for g in names {
        assert!(
            group.lines().any(|l| l.starts_with(&format!("{g}:"))),
            "{g}: {group}"
        );
    }
    // The groups the appliance's configuration gives roles to are made.
    let config: toml::Value = toml::from_str(include_str!(
        "../../image/overlay/etc/tollgate/tollgate.toml"
    ))
    .expect("toml");
    for role in ["viewer_group", "auditor_group", "admin_group"] {
        let g = config["admin"][role].as_str().expect(role);
        assert!(names.contains(&g), "{role} = {g} is made by sysusers");
    }
    // The admin socket's group is made, with the service in it (it gives
    // the socket to that group).
    let socket_group = config["admin"]["socket_group"]
        .as_str()
        .expect("the appliance restricts its admin socket to a group");
    assert!(
        group
            .lines()
            .any(|l| l.starts_with(&format!("{socket_group}:"))
                && l.rsplit(':')
                    .next()
                    .is_some_and(|m| m.split(',').any(|u| u == "tollgate"))),
        "{socket_group} with tollgate as a member: {group}"
    );
    let (ok, out) = run(Command::new("systemd-tmpfiles")
        .arg(format!("--root={}", root.display()))
        .arg("--create")
        .arg(units().join("tmpfiles.d/tollgate.conf")));
    assert!(ok, "{out}");
    for d in ["etc/credstore", "etc/credstore.encrypted"] {
        let mode = std::fs::metadata(root.join(d))
            .expect(d)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{d}");
    }
    let (ok, out) = run(Command::new("sh").arg("-n").arg(units().join("firstboot")));
    assert!(ok, "{out}");
    let _ = std::fs::remove_dir_all(&root);
}
