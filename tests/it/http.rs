//! The HTTP port of a real node: `/healthz`, `/readyz`, and `/metrics` in
//! the Prometheus text format, checked with an independent parser.

use crate::common;

use common::{http_get, Server};
use prometheus_parse::{Sample, Scrape, Value};

fn scrape(server: &Server) -> Scrape {
    common::scrape(server.http_addr)
}

fn sample<'a>(scrape: &'a Scrape, name: &str) -> &'a Sample {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .unwrap_or_else(|| panic!("no sample {name}"))
}

#[test]
fn health_and_readiness() {
    let server = Server::start(&[]);
    assert_eq!(
        http_get(server.http_addr, "/healthz").unwrap(),
        (200, "ok\n".to_string())
    );
    assert_eq!(
        http_get(server.http_addr, "/readyz").unwrap(),
        (200, "ready\n".to_string())
    );
    assert_eq!(http_get(server.http_addr, "/nope").unwrap().0, 404);
}

#[test]
fn metrics_parse_as_prometheus_text() {
    let server = Server::start(&[]);
    let scrape = scrape(&server);

    // Every sample belongs to a family with a HELP text.
    for s in &scrape.samples {
        assert!(
            scrape
                .docs
                .keys()
                .any(|family| s.metric.starts_with(family.as_str())),
            "no HELP for {}",
            s.metric
        );
    }

    // Engine figures, collected at scrape time.
    for name in [
        "kvstore_engine_keys",
        "kvstore_engine_disk_bytes",
        "kvstore_engine_live_bytes",
        "kvstore_engine_segments",
        "kvstore_engine_poisoned",
    ] {
        assert!(
            matches!(sample(&scrape, name).value, Value::Gauge(_)),
            "{name} is a gauge"
        );
    }
    for name in [
        "kvstore_engine_written_bytes_total",
        "kvstore_engine_fsyncs_total",
        "kvstore_engine_compactions_total",
        "kvstore_engine_puts_total",
        "kvstore_engine_deletes_total",
        "kvstore_connections_accepted_total",
        "kvstore_connections_rejected_total",
    ] {
        assert!(
            matches!(sample(&scrape, name).value, Value::Counter(_)),
            "{name} is a counter"
        );
    }

    // Requests by op and outcome, latency histograms by op.
    let get_ok = scrape.samples.iter().find(|s| {
        s.metric == "kvstore_requests_total"
            && s.labels.get("op") == Some("get")
            && s.labels.get("outcome") == Some("ok")
    });
    assert!(get_ok.is_some(), "requests_total{{op=get,outcome=ok}}");
    let hist = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "kvstore_request_duration_seconds" && s.labels.get("op") == Some("put")
        })
        .expect("latency histogram for put");
    assert!(
        matches!(&hist.value, Value::Histogram(b) if b.len() > 10),
        "{:?}",
        hist.value
    );
}

#[test]
fn connection_gauge_follows_clients() {
    let server = Server::start(&[]);
    let active = || common::metric(server.http_addr, "kvstore_connections_active");
    assert_eq!(active(), 0.0);
    let conn = std::net::TcpStream::connect(server.addr).unwrap();
    common::wait_for(common::START_DEADLINE, "active = 1", || {
        (active() == 1.0).then_some(())
    });
    drop(conn);
    common::wait_for(common::START_DEADLINE, "active = 0", || {
        (active() == 0.0).then_some(())
    });
}

#[test]
fn every_metric_is_documented_and_every_documented_metric_exists() {
    // Two connection threads, whatever the CPUs: one alone is not
    // balanced and has no busy ratio to export.
    let server = Server::start(&["--io-threads", "2"]);
    let scrape = scrape(&server);
    let doc_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIGURATION.md");
    let doc = std::fs::read_to_string(doc_path).unwrap();
    let metrics_section = doc.split("## Metrics").nth(1).expect("a Metrics section");
    for family in scrape.docs.keys() {
        assert!(
            metrics_section.contains(&format!("`{family}`")),
            "{family} is not documented"
        );
    }
    let documented = metrics_section
        .split('`')
        .filter(|w| w.starts_with("kvstore_") && !w.contains(' '));
    for name in documented {
        assert!(
            scrape.docs.contains_key(name),
            "documented {name} is not exported"
        );
    }
}
