//! Monitoring (`k8s/monitoring/`, docs/KUBERNETES.md "Monitoring"): the
//! PrometheusRule's alerts pass the real `promtool check rules` and
//! `promtool test rules` (tests/monitoring/alerts.test.yaml), with a case
//! where each alert fires and one where it does not; the dashboard's
//! queries are valid PromQL; and every metric the rules and the dashboard
//! name is on the `/metrics` of real nodes, which report their role, epoch,
//! elections, disk and backups as the alerts expect.

use crate::common;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use common::monitoring::{
    alert_names, as_promql, dashboard, dashboard_panels, dashboard_queries, kvstore_names,
    promtool, rules, sample_names, write_rule_file,
};
use common::replication::{master, replica};
use common::{http_get, repo_root, wait_for, Server, START_DEADLINE};
use serde_yaml::Value;

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn page(http: SocketAddr) -> String {
    let (status, body) = http_get(http, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the one sample of `name` whose line contains `with`.
fn value(page: &str, name: &str, with: &str) -> Option<f64> {
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| l.contains(with))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn promtool_checks_and_unit_tests_the_alert_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_rule_file(dir.path(), "rules.yaml");
    let tests = repo_root().join("tests/monitoring/alerts.test.yaml");
    std::fs::copy(&tests, dir.path().join("alerts.test.yaml")).expect("copy the tests");

    let check = promtool(&["check", "rules", "rules.yaml"], dir.path());
    assert!(check.status.success(), "{}", text(&check));
    let n = alert_names().len();
    assert!(
        text(&check).contains(&format!("SUCCESS: {n} rules found")),
        "{}",
        text(&check)
    );

    let run = promtool(&["test", "rules", "alerts.test.yaml"], dir.path());
    assert!(run.status.success(), "{}", text(&run));
    assert!(text(&run).contains("SUCCESS"), "{}", text(&run));
}

#[test]
fn every_alert_has_a_firing_case_and_a_quiet_case() {
    let path = repo_root().join("tests/monitoring/alerts.test.yaml");
    let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(path).expect("read"))
        .expect("alerts.test.yaml is YAML");
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in doc["tests"].as_sequence().expect("tests") {
        for t in case["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = t["alertname"].as_str().expect("alertname").to_string();
            match t["exp_alerts"].as_sequence() {
                Some(list) if !list.is_empty() => fires.insert(name),
                _ => quiet.insert(name),
            };
        }
    }
    let alerts = alert_names();
    assert!(alerts.len() >= 8, "{alerts:?}");
    for a in &alerts {
        assert!(fires.contains(a), "no case where {a} fires");
        assert!(quiet.contains(a), "no case where {a} stays quiet");
    }
    let unknown: Vec<_> = fires
        .union(&quiet)
        .filter(|a| !alerts.contains(*a))
        .collect();
    assert!(
        unknown.is_empty(),
        "cases for alerts that do not exist: {unknown:?}"
    );
}

#[test]
fn the_dashboard_is_well_formed_and_its_queries_are_valid_promql() {
    let d = dashboard();
    assert_eq!(d["uid"], "kvstore");
    let panels = dashboard_panels(&d);
    let mut ids = BTreeSet::new();
    for p in &panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "duplicate id {}",
            p["id"]
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        assert!(
            p["targets"].as_array().is_some_and(|t| !t.is_empty()),
            "{} has no query",
            p["title"]
        );
    }
    // What the issue asks the dashboard to show.
    let titles: String = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap_or("").to_lowercase() + "\n")
        .collect();
    for topic in [
        "requests per second",
        "latency",
        "lag",
        "role",
        "volume",
        "backup",
    ] {
        assert!(titles.contains(topic), "no panel about {topic}:\n{titles}");
    }

    // promtool parses every query, as recording rules of a scratch file.
    let queries = dashboard_queries(&d);
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, q)) in queries.iter().enumerate() {
        let expr = serde_json::to_string(&as_promql(q)).expect("json string");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {expr}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("dashboard.yaml"), &rules).expect("write");
    let check = promtool(&["check", "rules", "dashboard.yaml"], dir.path());
    assert!(check.status.success(), "{}\n{rules}", text(&check));
    assert!(
        text(&check).contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{}",
        text(&check)
    );
}

/// A master and a replica that follows it, with one key written.
fn cluster() -> (Server, Server) {
    let m = master(&[]);
    let r = replica(m.addr, &[]);
    m.client().put(b"k", b"v").expect("put");
    wait_for(START_DEADLINE, "the replica to have k", || {
        (r.client().get(b"k").ok()?.as_deref() == Some(&b"v"[..])).then_some(())
    });
    (m, r)
}

#[test]
fn every_metric_the_rules_and_the_dashboard_name_is_exported() {
    let (m, r) = cluster();
    let mut exported = sample_names(&page(m.http_addr));
    exported.extend(sample_names(&page(r.http_addr)));

    let mut named = BTreeSet::new();
    for (_, expr) in rules() {
        named.extend(kvstore_names(&expr));
    }
    for (_, q) in dashboard_queries(&dashboard()) {
        named.extend(kvstore_names(&q));
    }
    // The names the alerts depend on must be among them (the extraction
    // works), and every one must be exported.
    for must in [
        "kvstore_master",
        "kvstore_replication_lag_seconds",
        "kvstore_replication_lag_bytes",
        "kvstore_replication_link_up",
        "kvstore_engine_poisoned",
        "kvstore_data_dir_free_bytes",
        "kvstore_data_dir_total_bytes",
        "kvstore_elections_total",
        "kvstore_backup_last_success_timestamp_seconds",
        "kvstore_request_duration_seconds_bucket",
    ] {
        assert!(
            named.contains(must),
            "{must} not found in the rules or dashboard"
        );
    }
    let missing: Vec<_> = named.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "named by k8s/monitoring/ but not exported: {missing:?}\nexported: {exported:?}"
    );
}

#[test]
fn nodes_report_role_epoch_elections_and_disk() {
    let (m, r) = cluster();
    let mp = page(m.http_addr);
    let rp = page(r.http_addr);
    let epoch = common::replication::rstat(m.addr, "epoch");
    let label = format!("epoch=\"{epoch}\"");
    assert_eq!(value(&mp, "kvstore_master", &label), Some(1.0), "{mp}");
    assert_eq!(value(&rp, "kvstore_master", &label), Some(0.0), "{rp}");
    // Starting as master is not an election; a promotion is.
    assert_eq!(value(&mp, "kvstore_elections_total", ""), Some(0.0));
    assert_eq!(value(&rp, "kvstore_elections_total", ""), Some(0.0));
    for p in [&mp, &rp] {
        let free = value(p, "kvstore_data_dir_free_bytes", "").expect("free bytes");
        let total = value(p, "kvstore_data_dir_total_bytes", "").expect("total bytes");
        assert!(total > 0.0 && free <= total, "free {free}, total {total}");
    }

    let out = common::cli(r.addr, &["promote"]);
    assert!(out.status.success(), "{}", text(&out));
    let promoted = format!("epoch=\"{}\"", epoch + 1);
    wait_for(START_DEADLINE, "the promoted replica's metrics", || {
        let p = page(r.http_addr);
        (value(&p, "kvstore_master", &promoted) == Some(1.0)
            && value(&p, "kvstore_elections_total", "") == Some(1.0))
        .then_some(())
    });
    // Promoting a master again changes nothing.
    let out = common::cli(r.addr, &["promote"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        value(&page(r.http_addr), "kvstore_elections_total", ""),
        Some(1.0)
    );
}
