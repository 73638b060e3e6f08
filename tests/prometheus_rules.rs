//! The Prometheus alerting rules shipped in rulesets/prometheus: promtool
//! accepts them, and its rule unit tests (tollgate-alerts.test.yml) show
//! each alert firing when it should and not before. The metric names
//! they use are ones the gateway exports.

use std::process::Command;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rulesets/prometheus");

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

#[test]
fn alert_rules_check_and_fire_when_they_should() {
    let (ok, out) = promtool(&["check", "rules", "tollgate-alerts.yml"]);
    assert!(ok && out.contains("3 rules found"), "{out}");
    let (ok, out) = promtool(&["test", "rules", "tollgate-alerts.test.yml"]);
    assert!(ok, "{out}");

    // Every metric the rules name is one the gateway registers.
    let rules = std::fs::read_to_string(format!("{DIR}/tollgate-alerts.yml")).expect("rules");
    // As a gateway on the embedded defaults exports them at start.
    let m = std::sync::Arc::new(tollgate::admin::metrics::Metrics::new().expect("metrics"));
    m.prime();
    let config = std::sync::Arc::new(tollgate::config::Config::embedded().expect("config"));
    let _guard = tollgate::guard::Guard::new(config, m.clone(), std::time::Instant::now());
    let exported = String::from_utf8(m.render()).expect("utf8");
    assert!(
        exported.contains("tollgate_ids_carrier_over_limit_total{trunk=\"loopback\"} 0"),
        "a carrier's series must exist at 0 before its first drop"
    );
    let named: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("tollgate_"))
        .collect();
    assert!(named.len() >= 3, "{named:?}");
    for name in named {
        assert!(
            exported.contains(&format!("# TYPE {name} ")),
            "{name} is not a metric the gateway exports"
        );
    }
}
