//! `make bench-engine`: the engine workload of `benches/common/workload.rs`
//! against kvstore alone, in this process. For the same workload beside
//! sled, redb and fjall, see `benches/compare` (`make bench-compare`).

#[path = "common/report.rs"]
mod report;

#[path = "common/workload.rs"]
mod workload;

#[path = "common/kvstore_db.rs"]
mod kvstore_db;

#[path = "common/machine.rs"]
mod machine;

use std::path::Path;

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to select here.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    machine::print(repo);
    let cfg = workload::Config::from_env();
    eprintln!(
        "N = {}, synced ops <= {} (1 writer) / {} (64 writers), {} s cap each, data in {}",
        cfg.n,
        cfg.sync_ops_1,
        cfg.sync_ops_64,
        cfg.sync_cap.as_secs(),
        cfg.dir.display()
    );
    let results = workload::run::<kvstore_db::Kvstore>("kvstore", &cfg);
    print!("{}", report::table(&[("kvstore".to_string(), results)]));
    machine::print(repo);
}
