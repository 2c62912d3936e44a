//! The Prometheus config, the alert rules and the Grafana dashboard.

use super::*;

#[test]
fn prometheus_config_and_alerts_pass_promtool() {
    let promtool = tool("promtool");
    for args in [
        vec!["check", "config", "deploy/prometheus/prometheus.yml"],
        vec!["check", "rules", "deploy/prometheus/alerts.yml"],
        vec!["test", "rules", "deploy/prometheus/alerts_test.yml"],
    ] {
        let out = run(Command::new(&promtool).args(&args).current_dir(root()), None);
        assert!(out.status.success(), "promtool {}:\n{}", args.join(" "), text(&out));
    }
    let names: BTreeSet<String> = alert_rules().into_iter().map(|(n, _)| n).collect();
    for a in ALERTS_REQUIRED {
        assert!(names.contains(a), "no alert {a}");
    }
    // Alerts and dashboard select jobs by the names the scrape config uses.
    let jobs = scrape_jobs(&yaml_file("deploy/prometheus/prometheus.yml"));
    for (what, expr) in queries() {
        for job in label_values(&expr, "job") {
            assert!(jobs.contains_key(&job), "{what}: no scrape job {job}");
        }
    }
}

#[test]
fn dashboard_is_well_formed_and_shows_what_operators_need() {
    let dash: Value = serde_json::from_str(&read("deploy/grafana/switchboard.json")).expect("dashboard JSON");
    assert_eq!(dash["uid"], "switchboard");
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"));
    let mut ids = BTreeSet::new();
    for p in panels(&dash) {
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "duplicate panel id {}", p["id"]);
        assert!(p["gridPos"]["w"].as_u64().is_some() && p["title"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {}", p["title"]);
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("panel {} has no targets", p["title"]));
        assert!(!targets.is_empty(), "panel {} has no targets", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {}", p["title"]);
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "panel {}", p["title"]);
        }
    }
    let used: BTreeSet<String> =
        queries().into_iter().filter(|(w, _)| w.starts_with("dashboard")).flat_map(|(_, e)| metric_names(&e)).collect();
    for m in DASHBOARD_MUST_SHOW {
        assert!(used.contains(m), "the dashboard does not query {m}");
    }
}

/// Every panel, including those inside collapsed rows.
pub(super) fn panels(dash: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        out.push(p.clone());
        out.extend(p["panels"].as_array().cloned().unwrap_or_default());
    }
    out
}

/// (where, PromQL) for every dashboard query and alert expression.
pub(super) fn queries() -> Vec<(String, String)> {
    let dash: Value = serde_json::from_str(&read("deploy/grafana/switchboard.json")).unwrap();
    let mut out = Vec::new();
    for p in panels(&dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("dashboard panel {:?}", p["title"].as_str().unwrap()),
                t["expr"].as_str().unwrap().into(),
            ));
        }
    }
    out.extend(alert_rules().into_iter().map(|(n, e)| (format!("alert {n}"), e)));
    out
}

pub(super) fn alert_rules() -> Vec<(String, String)> {
    let rules = yaml_file("deploy/prometheus/alerts.yml");
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .map(|r| (r["alert"].as_str().unwrap().to_owned(), r["expr"].as_str().unwrap().to_owned()))
        .collect()
}

/// The `switchboard_…` metric names in a PromQL expression (outside strings).
pub(super) fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut word = String::new();
    let mut quoted = false;
    for ch in expr.chars().chain([' ']) {
        if ch == '"' {
            quoted = !quoted;
        }
        if !quoted && (ch.is_ascii_alphanumeric() || ch == '_' || ch == ':') {
            word.push(ch);
            continue;
        }
        if word.starts_with("switchboard_") {
            out.insert(std::mem::take(&mut word));
        }
        word.clear();
    }
    out
}

/// Values of `label="…"` matchers in a PromQL expression.
pub(super) fn label_values(expr: &str, label: &str) -> BTreeSet<String> {
    let needle = format!("{label}=\"");
    expr.match_indices(&needle)
        .filter(|(i, _)| !expr[..*i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
        .filter_map(|(i, _)| expr[i + needle.len()..].split('"').next().map(str::to_owned))
        .collect()
}
