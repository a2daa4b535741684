//! Counters the engine keeps while it runs, and the [`Stats`] snapshot it
//! reports (the server turns it into `stats` answers and metrics).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use super::writer::WriteOp;

/// A point-in-time view of the engine. Field names are part of the `stats`
/// output and stay stable.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Stats {
    /// Live keys.
    pub keys: u64,
    /// Bytes of the records holding live values.
    pub live_bytes: u64,
    /// Bytes of all records in all data files (live and dead).
    pub data_bytes: u64,
    /// Bytes of every data file on disk, headers included.
    pub disk_bytes: u64,
    /// Heap bytes of the keydir's tables.
    pub keydir_bytes: u64,
    pub segments: u64,
    pub merged_files: u64,
    /// First offset still in the log (the merged generation's horizon).
    pub log_start: u64,
    /// End of everything appended.
    pub log_end: u64,
    /// End of what is durable under the durability policy.
    pub durable_end: u64,
    pub epoch: u32,
    pub puts: u64,
    pub deletes: u64,
    pub batches: u64,
    pub bytes_written: u64,
    pub fsyncs: u64,
    /// Of `fsyncs`, those a connection thread ran itself as it ran out of
    /// work (`always`: group commit at park, [`super::park`]).
    pub fsyncs_at_park: u64,
    pub compactions: u64,
    /// Keys with an expiry (entries of the expiry index).
    pub keys_with_expiry: u64,
    /// Heap bytes of the expiry index (beside `keydir_bytes`).
    pub expiry_index_bytes: u64,
    /// Keys with an expiry that has passed and that the sweep has not
    /// deleted yet (they already read as absent).
    pub expiry_due: u64,
    /// Keys the sweep deleted because their expiry passed.
    pub expired_keys: u64,
    /// Sweep rounds run (while the engine expires keys).
    pub expiry_sweeps: u64,
    /// CPU time the sweep spent, in seconds.
    pub expiry_sweep_seconds: f64,
    /// Whether this engine deletes expired keys (a master) or only hides
    /// them (a replica).
    pub expiring: bool,
    /// Why the engine refuses writes, if it does.
    pub poisoned: Option<String>,
    /// Tails cut off the end of the log, as recorded in the epoch history
    /// (it keeps the newest 1,024): torn tails cut at open and bytes of
    /// unknown fate rolled back by a live recovery.
    pub tail_cuts: u64,
    /// Bytes those cuts discarded.
    pub tail_cut_bytes: u64,
    /// Records those cuts discarded (a torn record counts as one).
    pub tail_cut_records: u64,
    /// Offset of the oldest cut not yet fetched again from a master: while
    /// there is one, this node must not campaign for leadership
    /// ([`super::Engine::may_campaign`]).
    pub unrefetched_cut: Option<u64>,
    /// Times the engine resumed writes on its own after a failed write or
    /// fsync (since this process started).
    pub resumes: u64,
    /// Whether the last open indexed the active segment from the hint the
    /// clean close before it wrote (false: it scanned the segment, as after
    /// a crash).
    pub active_from_hint: bool,
}

impl Stats {
    /// Fraction of record bytes that are dead.
    pub fn dead_ratio(&self) -> f64 {
        if self.data_bytes == 0 {
            return 0.0;
        }
        1.0 - self.live_bytes as f64 / self.data_bytes as f64
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    puts: AtomicU64,
    deletes: AtomicU64,
    batches: AtomicU64,
    bytes_written: AtomicU64,
    fsyncs: AtomicU64,
    fsyncs_at_park: AtomicU64,
    compactions: AtomicU64,
    expired: AtomicU64,
    sweeps: AtomicU64,
    sweep_nanos: AtomicU64,
    live_bytes: AtomicI64,
    poisoned: AtomicBool,
    resumes: AtomicU64,
    active_from_hint: AtomicBool,
}

impl Counters {
    pub fn count_ops(&self, ops: &[WriteOp<'_>], bytes: u64) {
        let deletes = ops
            .iter()
            .filter(|o| matches!(o, WriteOp::Delete(_)))
            .count() as u64;
        // A put whose expiry passed is logged as a delete but asked as a
        // put: it counts as a put.
        self.deletes.fetch_add(deletes, Relaxed);
        self.puts.fetch_add(ops.len() as u64 - deletes, Relaxed);
        if ops.len() > 1 {
            self.batches.fetch_add(1, Relaxed);
        }
        self.bytes_written.fetch_add(bytes, Relaxed);
    }

    pub fn add_live(&self, delta: i64) {
        self.live_bytes.fetch_add(delta, Relaxed);
    }

    pub fn set_live(&self, bytes: u64) {
        self.live_bytes
            .store(i64::try_from(bytes).unwrap_or(i64::MAX), Relaxed);
    }

    pub fn live(&self) -> u64 {
        u64::try_from(self.live_bytes.load(Relaxed)).unwrap_or(0)
    }

    /// Deletes the sweep appended for expired keys.
    pub fn count_expired(&self, keys: u64, bytes: u64) {
        self.expired.fetch_add(keys, Relaxed);
        self.bytes_written.fetch_add(bytes, Relaxed);
    }

    /// One sweep round and the CPU time it took.
    pub fn count_sweep(&self, cpu_nanos: u64) {
        self.sweeps.fetch_add(1, Relaxed);
        self.sweep_nanos.fetch_add(cpu_nanos, Relaxed);
    }

    pub fn count_fsync(&self) {
        self.fsyncs.fetch_add(1, Relaxed);
    }

    pub fn count_fsync_at_park(&self) {
        self.fsyncs_at_park.fetch_add(1, Relaxed);
    }

    pub fn count_compaction(&self) {
        self.compactions.fetch_add(1, Relaxed);
    }

    pub fn set_poisoned(&self) {
        self.poisoned.store(true, Relaxed);
    }

    /// How the last open (or snapshot install) indexed the active segment.
    pub fn set_active_from_hint(&self, from_hint: bool) {
        self.active_from_hint.store(from_hint, Relaxed);
    }

    pub fn count_resume(&self) {
        self.resumes.fetch_add(1, Relaxed);
    }

    /// Fills the counter fields of a snapshot.
    pub fn fill(&self, s: &mut Stats) {
        s.puts = self.puts.load(Relaxed);
        s.deletes = self.deletes.load(Relaxed);
        s.batches = self.batches.load(Relaxed);
        s.bytes_written = self.bytes_written.load(Relaxed);
        s.fsyncs = self.fsyncs.load(Relaxed);
        s.fsyncs_at_park = self.fsyncs_at_park.load(Relaxed);
        s.compactions = self.compactions.load(Relaxed);
        s.expired_keys = self.expired.load(Relaxed);
        s.expiry_sweeps = self.sweeps.load(Relaxed);
        s.expiry_sweep_seconds = self.sweep_nanos.load(Relaxed) as f64 / 1e9;
        s.live_bytes = self.live();
        s.resumes = self.resumes.load(Relaxed);
        s.active_from_hint = self.active_from_hint.load(Relaxed);
    }
}
