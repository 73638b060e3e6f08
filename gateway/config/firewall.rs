//! The `[firewall]` section: whether the gateway loads its nftables table,
//! which networks may reach the admin listener, and where the IDS rules
//! are read from.

use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use super::{invalid, ConfigError};
use crate::config::rules::Rules;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FirewallFile {
    pub nftables: String,
    pub admin_networks: Vec<String>,
    pub ids_rules: Option<PathBuf>,
}

impl Default for FirewallFile {
    fn default() -> Self {
        Self {
            nftables: "auto".into(),
            admin_networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
            ids_rules: None,
        }
    }
}

/// Whether the gateway loads its nftables table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nftables {
    /// When the process may (CAP_NET_ADMIN and `nft` present); otherwise
    /// bans are enforced in the process, and the log says so once.
    Auto,
    /// Refuse to start without it (the appliance image).
    Required,
    /// Never touch nftables.
    Off,
}

/// The validated `[firewall]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Firewall {
    pub nftables: Nftables,
    pub admin_networks: Vec<IpNet>,
    /// The rules file, when not the shipped rules (re-read on SIGHUP).
    pub ids_rules_path: Option<PathBuf>,
    pub ids_rules: Rules,
}

/// Reads and validates an IDS rules file; errors name the file.
pub fn load_rules(path: Option<&Path>) -> Result<Rules, String> {
    match path {
        None => Rules::shipped(),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            Rules::from_toml(&text).map_err(|e| format!("{}: {e}", p.display()))
        }
    }
}

pub(super) fn validate_firewall(f: &FirewallFile) -> Result<Firewall, ConfigError> {
    let nftables = match f.nftables.as_str() {
        "auto" => Nftables::Auto,
        "required" => Nftables::Required,
        "off" => Nftables::Off,
        other => {
            return Err(invalid(
                "firewall.nftables",
                format!("{other:?}: use auto, required or off"),
            ))
        }
    };
    let admin_networks = f
        .admin_networks
        .iter()
        .enumerate()
        .map(|(i, n)| {
            super::parse_net(n).ok_or_else(|| {
                invalid(
                    format!("firewall.admin_networks[{i}]"),
                    format!("{n:?} is not a CIDR"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let ids_rules =
        load_rules(f.ids_rules.as_deref()).map_err(|e| invalid("firewall.ids_rules", e))?;
    Ok(Firewall {
        nftables,
        admin_networks,
        ids_rules_path: f.ids_rules.clone(),
        ids_rules,
    })
}
