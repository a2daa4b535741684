//! The benchmark charts of docs/BENCHMARKS.md: every committed chart is
//! valid SVG, drawn from the CSV committed beside it, and shown on that
//! page; `scripts/charts.py` draws each kind of chart from a CSV and
//! refuses a CSV it has no chart for.

use std::fs;
use std::path::Path;

use crate::common::{repo_root, run_python_script};

/// Runs `scripts/charts.py` with `args`: (success, stdout + stderr).
fn charts(args: &[&Path]) -> (bool, String) {
    run_python_script("charts.py", args)
}

fn names(dir: &Path, ext: &str) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(ext).map(str::to_owned)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_committed_chart_is_valid_svg_drawn_from_its_csv_and_shown() {
    let dir = repo_root().join("docs/charts");
    let (ok, text) = charts(&[Path::new("--check"), &dir]);
    assert!(ok, "{text}");
    let svgs = names(&dir, ".svg");
    assert_eq!(
        svgs,
        ["failover", "latency", "replication-lag", "vs-redis"],
        "one chart per benchmark figure"
    );
    assert_eq!(names(&dir.join("data"), ".csv"), svgs);

    // Redrawn from the committed CSVs, each chart is byte for byte the
    // committed one: no chart is stale.
    let again = tempfile::tempdir().unwrap();
    fs::create_dir(again.path().join("data")).unwrap();
    for name in &svgs {
        let csv = format!("data/{name}.csv");
        fs::copy(dir.join(&csv), again.path().join(&csv)).unwrap();
    }
    let (ok, text) = charts(&[again.path()]);
    assert!(ok, "{text}");
    let page = fs::read_to_string(repo_root().join("docs/BENCHMARKS.md")).unwrap();
    for name in &svgs {
        let file = format!("{name}.svg");
        assert_eq!(
            fs::read_to_string(again.path().join(&file)).unwrap(),
            fs::read_to_string(dir.join(&file)).unwrap(),
            "docs/charts/{file} is not what its CSV draws: run scripts/charts.py"
        );
        assert!(
            page.contains(&format!("](charts/{file})")),
            "docs/BENCHMARKS.md does not show charts/{file}"
        );
    }
}

#[test]
fn the_generator_draws_a_chart_from_each_kind_of_csv_and_refuses_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::create_dir(&data).unwrap();
    // The lag chart's other shape: one row per probe, drawn over time.
    let mut lag = String::from("date,config,replica,t_s,lag_ms\n");
    for i in 0..50 {
        for r in 1..=2 {
            lag += &format!(
                "2026-01-01 00:00 UTC,always -c20 -P4,replica {r},{i}.02,{}\n",
                1 + i % 7
            );
        }
    }
    fs::write(data.join("replication-lag.csv"), lag).unwrap();
    fs::write(
        data.join("failover.csv"),
        "date,ttl_ms,failover,gap_ms\n2026-01-01 00:00 UTC,5000,1,4700\n2026-01-01 00:00 UTC,5000,2,5100\n",
    )
    .unwrap();
    let (ok, text) = charts(&[dir.path()]);
    assert!(ok, "{text}");
    let (ok, text) = charts(&[Path::new("--check"), dir.path()]);
    assert!(ok, "{text}");
    let svg = fs::read_to_string(dir.path().join("replication-lag.svg")).unwrap();
    assert!(
        svg.contains("<polyline"),
        "lag over time is not drawn as lines"
    );
    assert!(svg.contains("replica 2"), "{svg}");

    fs::write(data.join("mystery.csv"), "date,x\n2026-01-01,1\n").unwrap();
    let (ok, text) = charts(&[dir.path()]);
    assert!(!ok && text.contains("mystery"), "{text}");

    // A chart that is not SVG fails the check.
    fs::remove_file(data.join("mystery.csv")).unwrap();
    fs::write(dir.path().join("failover.svg"), "<html></html>").unwrap();
    let (ok, text) = charts(&[Path::new("--check"), dir.path()]);
    assert!(!ok && text.contains("failover.svg"), "{text}");
}
