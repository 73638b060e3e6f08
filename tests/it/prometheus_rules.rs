//! The monitoring shipped in image/monitoring: promtool accepts the alert
//! rules and the scrape config, its rule unit tests
//! (tollgate-alerts.test.yml) show each alert firing when it should and
//! not before, and every metric the rules and the Grafana dashboard use is
//! one a running gateway serves on /metrics from its start.

use std::collections::BTreeSet;
use std::process::Command;

use crate::common::gateway::Gateway;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/image/monitoring");

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(DIR)
        .output()
        .expect("promtool runs (Debian package prometheus; scripts/deps installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The metric names in `text`: `tollgate_*` words, histogram series
/// (`_bucket`, `_sum`, `_count`) named by their histogram.
fn metric_names(text: &str, histograms: &BTreeSet<String>) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("tollgate_"))
        .map(|w| {
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = w.strip_suffix(suffix) {
                    if histograms.contains(base) {
                        return base.to_string();
                    }
                }
            }
            w.to_string()
        })
        .collect()
}

#[test]
fn alert_rules_check_and_fire_when_they_should() {
    let (ok, out) = promtool(&["check", "rules", "tollgate-alerts.yml"]);
    assert!(ok && out.contains("22 rules found"), "{out}");
    let (ok, out) = promtool(&["test", "rules", "tollgate-alerts.test.yml"]);
    assert!(ok, "{out}");
    let (ok, out) = promtool(&["check", "config", "prometheus.yml"]);
    assert!(ok, "{out}");
    // Every alert has a test that sees it quiet and one that sees it fire.
    let rules = std::fs::read_to_string(format!("{DIR}/tollgate-alerts.yml")).expect("rules");
    let tests = std::fs::read_to_string(format!("{DIR}/tollgate-alerts.test.yml")).expect("tests");
    for line in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        let n = tests.matches(&format!("alertname: {line}")).count();
        assert!(n >= 2, "{line} is tested {n} time(s)");
    }
}

#[test]
fn every_metric_the_rules_and_dashboard_use_is_served() {
    let gw = Gateway::start("monitoring", 17900, 41400);
    let served = gw.metrics();
    let types: BTreeSet<String> = served
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let histograms: BTreeSet<String> = served
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter(|l| l.ends_with(" histogram"))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let rules = std::fs::read_to_string(format!("{DIR}/tollgate-alerts.yml")).expect("rules");
    let dashboard =
        std::fs::read_to_string(format!("{DIR}/tollgate-dashboard.json")).expect("dashboard");
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let used: BTreeSet<String> = metric_names(&rules, &histograms)
        .union(&metric_names(&dashboard, &histograms))
        .cloned()
        .collect();
    assert!(used.len() >= 20, "{used:?}");
    let missing: Vec<_> = used.difference(&types).collect();
    assert!(
        missing.is_empty(),
        "used but not served at start: {missing:?}"
    );
    // Series the alerts compare against exist at 0 before the first event.
    for series in [
        "tollgate_ids_carrier_over_limit_total{trunk=\"loopback\"} 0",
        "tollgate_rtp_dropped_total{reason=\"srtp\"} 0",
        "tollgate_cdr_write_errors_total 0",
        "tollgate_cdr_records_shed_total{reason=\"disk_floor\"} 0",
        "tollgate_cdr_storage_ok 1",
        "tollgate_trunk_up{trunk=\"loopback\"}",
        "tollgate_firewall_dropped_packets_total{rule=\"banned\"} 0",
    ] {
        assert!(served.contains(series), "{series} not served at start");
    }
    // The storage gauges are read at start.
    assert!(gw.metric("tollgate_data_total_bytes") > 0.0);
    assert!(gw.metric("tollgate_data_free_bytes") > 0.0);
}
