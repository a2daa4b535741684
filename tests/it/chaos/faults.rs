//! Shared pieces of the chaos tests: the round budget (short by default,
//! `CHAOS_MINUTES` for the long run), the summary line, random fault
//! timing and bit flips (tmpfs mounts come from `common::host`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::Rng;

/// How many fault rounds a test runs: `short` rounds, or as many as fit in
/// `CHAOS_MINUTES` minutes when that is set.
pub struct Budget {
    short: u32,
    deadline: Option<Instant>,
    done: std::cell::Cell<u32>,
}

impl Budget {
    pub fn new(short: u32) -> Budget {
        let minutes = std::env::var("CHAOS_MINUTES").ok().map(|m| {
            m.parse::<f64>()
                .expect("CHAOS_MINUTES is a number of minutes")
        });
        Budget {
            short,
            deadline: minutes.map(|m| Instant::now() + Duration::from_secs_f64(m * 60.0)),
            done: std::cell::Cell::new(0),
        }
    }

    /// How long a load under this budget may run at most: what is left
    /// of the long run, or nothing, plus five minutes to finish.
    pub fn limit(&self) -> Duration {
        let left = self.deadline.map_or(Duration::ZERO, |end| {
            end.saturating_duration_since(Instant::now())
        });
        left + Duration::from_secs(300)
    }

    pub fn another_round(&self) -> bool {
        let done = self.done.get();
        self.done.set(done + 1);
        match self.deadline {
            // Bounded even in the long run.
            Some(end) => Instant::now() < end && done < 100_000,
            None => done < self.short,
        }
    }
}

#[derive(Debug, Default)]
pub struct Summary {
    pub faults: u64,
    pub acked: u64,
    pub lost: u64,
    pub full_resyncs: u64,
    pub partial_resyncs: u64,
}

impl Summary {
    pub fn print(&self, name: &str) {
        let line = format!(
            "chaos: faults={} acked={} lost={} full_resyncs={} partial_resyncs={} ({name})",
            self.faults, self.acked, self.lost, self.full_resyncs, self.partial_resyncs
        );
        println!("{line}");
        eprintln!("{line}");
    }
}

/// Sleeps a random time between `lo` and `hi` ms: when the next fault
/// strikes (the point is randomness, not waiting for anything).
pub fn sleep_random(rng: &mut impl Rng, lo: u64, hi: u64) {
    std::thread::sleep(Duration::from_millis(rng.gen_range(lo..hi)));
}

/// `(full_resyncs, partial_resyncs)` from a node's STATS.
pub fn replication_counts(addr: SocketAddr) -> (u64, u64) {
    let mut client = super::common::connect_client(addr);
    let stats = client.stats().expect("stats");
    let repl = stats
        .get("replication")
        .unwrap_or_else(|| panic!("no replication section in stats: {stats:?}"));
    let field = |name: &str| repl.get(name).and_then(|v| v.as_u64()).unwrap_or(0);
    (field("full_resyncs"), field("partial_resyncs"))
}

pub use crate::common::host::Tmpfs;

/// Flips one bit of `file` at `offset`.
pub fn flip_bit(file: &Path, offset: usize) {
    let mut bytes = std::fs::read(file).expect("read file to corrupt");
    let b = bytes.get_mut(offset).expect("offset inside the file");
    *b ^= 0x10;
    std::fs::write(file, bytes).expect("write corrupted file");
}

/// The data files of `dir` of one kind, by name.
pub fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list data dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

pub fn copy_dir(from: &Path, to: &Path) {
    for f in std::fs::read_dir(from).expect("list") {
        let p = f.expect("entry").path();
        if p.is_file() && !p.ends_with("LOCK") {
            std::fs::copy(&p, to.join(p.file_name().expect("name"))).expect("copy");
        }
    }
}

/// A child process (here: one started through `ip netns exec`) killed on drop.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
