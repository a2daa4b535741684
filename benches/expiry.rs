//! `make bench-expiry`: the engine's active expiry at scale, in this
//! process (docs/BENCHMARKS.md, "Expiry"). The targets:
//!
//! - N keys (default 10,000,000) with TTLs spread evenly over 1 to 60 s
//!   (about 170,000 expiries a second once the first minute is loaded):
//!   every expired key's index entry gone within 2× its TTL;
//! - the sweep's cost per expired key at most 1.5× an explicit DEL.
//!
//! Phases:
//! 1. load: the N keys in batches of 1,000, each key's expiry its write
//!    time plus its TTL, the TTL of key i being 1 + (i × 7919 mod 60) s;
//! 2. expiry: the engine's own background sweep (100 ms rounds, 25 % of a
//!    core) runs; every second the program samples the keys left in the
//!    index against the keys still allowed there (those written less
//!    than 2 × TTL ago), until none is left or 3 minutes passed.
//!    A sample with more keys than allowed means keys outlived 2× TTL, and
//!    is reported as a miss with the excess;
//! 3. DEL: the same number of keys without expiry, so that the index is
//!    as large as the sweep's was, deleted in a random order (the sweep's
//!    order is random to the index too) in batches of 100 (as group commit
//!    batches a server's DELs); process CPU per delete.
//!
//! Printed: load rate, per-second samples (keys, allowed, due backlog,
//! expired so far, sweep CPU and process CPU per wall second), then the
//! sweep CPU per expired key, the process CPU per expired key and per
//! DEL, and their ratio.
//!
//! Env: `BENCH_N` (10,000,000), `BENCH_DIR` (default `bench-data-expiry`
//! beside the executable, on the build disk, not a tmpfs),
//! `BENCH_DURABILITY` (`interval`, or `always`/`never`).

#[path = "common/machine.rs"]
mod machine;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kvstore::engine::{Durability, Engine, ExpiryPolicy, Options, WriteOp};
use rand::seq::SliceRandom;
use rustix::time::{clock_gettime, ClockId};

const BATCH: usize = 1_000;
const DEL_BATCH: usize = 100;
const MAX_TTL_S: u64 = 60;
const EXPIRY_DEADLINE: Duration = Duration::from_secs(180);
const VALUE: &[u8] = &[b'v'; 100];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn process_cpu() -> Duration {
    let t = clock_gettime(ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

fn ttl_ms(i: u64) -> u64 {
    (1 + (i * 7919) % MAX_TTL_S) * 1_000
}

fn key(prefix: &str, i: u64) -> Vec<u8> {
    format!("{prefix}{i:014}").into_bytes()
}

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    machine::print(repo);
    let n: u64 = env_or("BENCH_N", 10_000_000);
    let durability = match std::env::var("BENCH_DURABILITY").as_deref() {
        Ok("always") => Durability::Always,
        Ok("never") => Durability::Never,
        _ => Durability::Interval(Duration::from_secs(1)),
    };
    let dir = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("the bench's own path");
            exe.parent().expect("a directory").join("bench-data-expiry")
        });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the bench directory");
    let options = Options {
        durability,
        expiry: ExpiryPolicy {
            active: true,
            ..ExpiryPolicy::default()
        },
        ..Options::default()
    };
    let engine = Engine::open(&dir, options).expect("open the engine");
    eprintln!(
        "N = {n}, TTLs 1..={MAX_TTL_S} s, {durability:?}, data in {}",
        dir.display()
    );

    // 1. Load, remembering per TTL (in whole seconds) how many keys have
    // it and when the last of them was written.
    let mut latest_write = vec![0u64; MAX_TTL_S as usize + 1];
    let mut per_ttl = vec![0u64; MAX_TTL_S as usize + 1];
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let now = engine.now_ms();
        let end = (i + BATCH as u64).min(n);
        let keys: Vec<Vec<u8>> = (i..end).map(|j| key("t", j)).collect();
        let ops: Vec<WriteOp<'_>> = keys
            .iter()
            .zip(i..end)
            .map(|(k, j)| WriteOp::PutExpiring(k, VALUE, now + ttl_ms(j)))
            .collect();
        engine.write_batch(&ops).expect("load a batch");
        for j in i..end {
            let s = (ttl_ms(j) / 1_000) as usize;
            per_ttl[s] += 1;
            latest_write[s] = now;
        }
        i = end;
    }
    let load = started.elapsed();
    println!(
        "load: {n} keys in {:.1} s ({:.0} puts/s)",
        load.as_secs_f64(),
        n as f64 / load.as_secs_f64()
    );

    // 2. Expiry by the background sweep. Allowed = the keys of the TTL
    // groups whose last write + 2 × TTL has not passed: an upper bound on
    // what may be left, exact once a group is past its deadline.
    let allowed = |now: u64| -> u64 {
        (1..=MAX_TTL_S as usize)
            .filter(|&s| latest_write[s] + 2 * 1_000 * s as u64 > now)
            .map(|s| per_ttl[s])
            .sum()
    };
    println!(
        "  t(s)        keys     allowed   due backlog     expired  sweep cpu/s  process cpu/s"
    );
    let expiry_start = Instant::now();
    let stats0 = engine.stats();
    let cpu0 = process_cpu();
    let (mut last_cpu, mut last_sweep, mut last_t) = (cpu0, stats0.expiry_sweep_seconds, 0.0);
    let mut misses = 0u64;
    let mut worst_excess = 0u64;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let s = engine.stats();
        let now = engine.now_ms();
        let t = expiry_start.elapsed().as_secs_f64();
        let cpu = process_cpu();
        let allowed_now = allowed(now);
        if s.keys > allowed_now {
            misses += 1;
            worst_excess = worst_excess.max(s.keys - allowed_now);
        }
        let dt = t - last_t;
        println!(
            "{t:6.1} {:11} {:11} {:13} {:11} {:12.3} {:14.3}",
            s.keys,
            allowed_now,
            s.expiry_due,
            s.expired_keys - stats0.expired_keys,
            (s.expiry_sweep_seconds - last_sweep) / dt,
            (cpu - last_cpu).as_secs_f64() / dt,
        );
        (last_cpu, last_sweep, last_t) = (cpu, s.expiry_sweep_seconds, t);
        if s.keys == 0 || expiry_start.elapsed() > EXPIRY_DEADLINE {
            break;
        }
    }
    let s = engine.stats();
    let expired = (s.expired_keys - stats0.expired_keys).max(1);
    let sweep_cpu = s.expiry_sweep_seconds - stats0.expiry_sweep_seconds;
    let expiry_cpu = (process_cpu() - cpu0).as_secs_f64();
    println!(
        "expiry: {expired} keys deleted by the sweep, {} left; samples over 2x TTL: {misses} (worst excess {worst_excess} keys)",
        s.keys
    );
    println!(
        "  sweep CPU {:.2} s = {:.2} us per expired key; process CPU {:.2} s = {:.2} us per expired key",
        sweep_cpu,
        sweep_cpu * 1e6 / expired as f64,
        expiry_cpu,
        expiry_cpu * 1e6 / expired as f64
    );

    // 3. Explicit deletes of as many keys, from an index as large, in a
    // random order, for the ratio.
    let dels = n;
    let mut i = 0;
    while i < dels {
        let end = (i + BATCH as u64).min(dels);
        let keys: Vec<Vec<u8>> = (i..end).map(|j| key("d", j)).collect();
        let ops: Vec<WriteOp<'_>> = keys.iter().map(|k| WriteOp::Put(k, VALUE)).collect();
        engine.write_batch(&ops).expect("load a batch to delete");
        i = end;
    }
    engine.flush().expect("flush");
    let mut order: Vec<u64> = (0..dels).collect();
    order.shuffle(&mut rand::thread_rng());
    let cpu = process_cpu();
    let started = Instant::now();
    for batch in order.chunks(DEL_BATCH) {
        let keys: Vec<Vec<u8>> = batch.iter().map(|&j| key("d", j)).collect();
        let ops: Vec<WriteOp<'_>> = keys.iter().map(|k| WriteOp::Delete(k)).collect();
        engine.write_batch(&ops).expect("delete a batch");
    }
    engine.flush().expect("flush");
    let del_cpu = (process_cpu() - cpu).as_secs_f64();
    let per_del = del_cpu * 1e6 / dels as f64;
    println!(
        "DEL: {dels} keys in {:.1} s, process CPU {:.2} s = {per_del:.2} us per delete",
        started.elapsed().as_secs_f64(),
        del_cpu
    );
    println!(
        "ratio, process CPU per expired key / per DEL: {:.2} (target <= 1.5); sweep CPU alone: {:.2}",
        expiry_cpu * 1e6 / expired as f64 / per_del,
        sweep_cpu * 1e6 / expired as f64 / per_del
    );
    engine.close().expect("close");
    let _ = std::fs::remove_dir_all(&dir);
    machine::print(repo);
}
