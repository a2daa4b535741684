//! Runs the engine workload (`benches/common/workload.rs`) against kvstore,
//! sled, redb and fjall and prints one table with kvstore / best-peer ratios.
//!
//! Each store runs in a process of its own (this program re-executed with
//! `--store NAME`), one after another: no store inherits another's heap,
//! threads or background work, and the two cores are never shared between
//! two stores. A child prints its figures as `RESULT id value` lines.
//!
//! `BENCH_STORES=kvstore,redb` picks stores; see the workload module for
//! the other settings (`BENCH_N`, ...).

#[path = "../../common/report.rs"]
mod report;

#[path = "../../common/workload.rs"]
#[allow(dead_code)]
mod workload;

#[path = "../../common/kvstore_db.rs"]
mod kvstore_db;

#[path = "../../common/machine.rs"]
mod machine;

mod fjall_db;
mod redb_db;
mod sled_db;

use std::path::Path;
use std::process::{Command, Stdio};

use report::Results;
use workload::Config;

const STORES: &[&str] = &["kvstore", "sled", "redb", "fjall"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cfg = Config::from_env();
    if let Some(pos) = args.iter().position(|a| a == "--store") {
        let name = args.get(pos + 1).expect("--store needs a name");
        let results = run_store(name, &cfg);
        for (id, v) in results {
            println!("RESULT {id} {v}");
        }
        return;
    }

    let stores: Vec<String> = match std::env::var("BENCH_STORES") {
        Ok(list) => list.split(',').map(|s| s.trim().to_string()).collect(),
        Err(_) => STORES.iter().map(|s| s.to_string()).collect(),
    };
    eprintln!(
        "N = {}, synced ops <= {} (1 writer) / {} (64 writers), {} s cap each, data in {}",
        cfg.n,
        cfg.sync_ops_1,
        cfg.sync_ops_64,
        cfg.sync_cap.as_secs(),
        cfg.dir.display()
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    machine::print(&repo);
    let exe = std::env::current_exe().expect("current_exe");
    let mut columns = Vec::new();
    for store in &stores {
        let out = Command::new(&exe)
            .args(["--store", store])
            .stderr(Stdio::inherit())
            .output()
            .expect("start the child");
        if !out.status.success() {
            eprintln!("[{store}] failed ({}); left out of the table", out.status);
            continue;
        }
        columns.push((store.clone(), parse(&String::from_utf8_lossy(&out.stdout))));
    }
    print!("{}", report::table(&columns));
    machine::print(&repo);
}

fn run_store(name: &str, cfg: &Config) -> Results {
    match name {
        "kvstore" => workload::run::<kvstore_db::Kvstore>(name, cfg),
        "sled" => workload::run::<sled_db::Sled>(name, cfg),
        "redb" => workload::run::<redb_db::Redb>(name, cfg),
        "fjall" => workload::run::<fjall_db::Fjall>(name, cfg),
        other => panic!("unknown store {other:?}; known: {STORES:?}"),
    }
}

fn parse(stdout: &str) -> Results {
    stdout
        .lines()
        .filter_map(|line| {
            let mut parts = line.strip_prefix("RESULT ")?.split_whitespace();
            let id = parts.next()?;
            let v: f64 = parts.next()?.parse().ok()?;
            // Map back to the metric's static id.
            let m = report::METRICS.iter().find(|m| m.id == id)?;
            Some((m.id, v))
        })
        .collect()
}
