//! Helpers for the monitoring tests: the files of `k8s/monitoring/`, the
//! real `promtool`, and the metric names that PromQL expressions and a
//! `/metrics` page contain.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value as Json;
use serde_yaml::Value;

use super::repo_root;

/// A file of `k8s/monitoring/`.
pub fn monitoring_file(name: &str) -> PathBuf {
    repo_root().join("k8s/monitoring").join(name)
}

/// The PrometheusRule of `k8s/monitoring/prometheusrule.yaml`.
pub fn prometheus_rule() -> Value {
    let text = std::fs::read_to_string(monitoring_file("prometheusrule.yaml")).expect("read");
    let rule: Value = serde_yaml::from_str(&text).expect("prometheusrule.yaml is YAML");
    assert_eq!(rule["kind"].as_str(), Some("PrometheusRule"));
    rule
}

/// Writes the PrometheusRule's `spec` (a plain Prometheus rule file: the
/// operator hands `spec.groups` to Prometheus as it is) to `dir/NAME`.
pub fn write_rule_file(dir: &Path, name: &str) -> PathBuf {
    let spec = &prometheus_rule()["spec"];
    assert!(spec["groups"].is_sequence(), "spec.groups is a list");
    let path = dir.join(name);
    std::fs::write(&path, serde_yaml::to_string(spec).expect("yaml")).expect("write rules");
    path
}

/// Every rule of the PrometheusRule: `(alert name or record name, expr)`.
pub fn rules() -> Vec<(String, String)> {
    let rule = prometheus_rule();
    let mut out = Vec::new();
    for group in rule["spec"]["groups"].as_sequence().expect("groups") {
        for r in group["rules"].as_sequence().expect("rules") {
            let name = r["alert"].as_str().or(r["record"].as_str()).expect("name");
            let expr = r["expr"].as_str().expect("expr");
            out.push((name.to_string(), expr.to_string()));
        }
    }
    out
}

/// The alert names of the PrometheusRule.
pub fn alert_names() -> BTreeSet<String> {
    let rule = prometheus_rule();
    rule["spec"]["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules"))
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect()
}

/// The Grafana dashboard, `k8s/monitoring/dashboard.json`.
pub fn dashboard() -> Json {
    let text = std::fs::read_to_string(monitoring_file("dashboard.json")).expect("read");
    serde_json::from_str(&text).expect("dashboard.json is JSON")
}

/// Every panel of the dashboard (rows' nested panels included), rows aside.
pub fn dashboard_panels(dashboard: &Json) -> Vec<Json> {
    fn walk(panels: &Json, out: &mut Vec<Json>) {
        for p in panels.as_array().into_iter().flatten() {
            walk(&p["panels"], out);
            if p["type"] != "row" {
                out.push(p.clone());
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every query of the dashboard: panel targets and template variables,
/// as `(where, expr)`.
pub fn dashboard_queries(dashboard: &Json) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in dashboard_panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("every target has an expr");
            out.push((
                format!("panel {:?} {}", p["title"], t["refId"]),
                expr.into(),
            ));
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(q) = v["query"]["query"].as_str() {
            out.push((format!("variable {}", v["name"]), q.to_string()));
        }
    }
    out
}

/// A dashboard query as plain PromQL: Grafana's variables replaced by
/// values they take (`$__rate_interval` by a duration), `label_values(E,
/// label)` by its series selector `E`.
pub fn as_promql(query: &str) -> String {
    let q = query
        .replace("$__rate_interval", "1m")
        .replace("$namespace", "kvstore");
    match q
        .strip_prefix("label_values(")
        .and_then(|rest| rest.rsplit_once(','))
    {
        Some((selector, _label)) => selector.to_string(),
        None => q,
    }
}

/// The `kvstore_*` metric names an expression (or any text) mentions.
pub fn kvstore_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while let Some(pos) = text.get(i..).and_then(|t| t.find("kvstore_")) {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && ident(bytes[end]) {
            end += 1;
        }
        // Only a whole identifier: not the tail of another name.
        if start == 0 || !ident(bytes[start - 1]) {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

/// The sample names of a Prometheus text page (`kvstore_x_bucket`,
/// `kvstore_y_total`, ... as they appear on the lines).
pub fn sample_names(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// The real `promtool` (Debian package `prometheus`, installed by `make
/// deps`); panics with that hint when it is missing.
pub fn promtool(args: &[&str], dir: &Path) -> Output {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output();
    match out {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run promtool ({e}): run `make deps` (scripts/setup.sh installs the Debian package prometheus)"
        ),
    }
}
