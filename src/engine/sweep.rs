//! Active expiry: the background sweep that deletes keys whose expiry has
//! passed, so that they stop holding memory (their keydir entry) and,
//! after the next compaction, disk.
//!
//! Expired keys already read as absent without it; the sweep bounds how
//! long they keep their space. It runs only while the engine *expires
//! keys* (on a master; see [`super::ExpiryPolicy`]): a replica never
//! deletes on its own, it applies its master's deletes.
//!
//! Each round takes the buckets of the expiry index that are due, oldest
//! first, reads each key's record, and hands the keys whose record has
//! expired to the writer, which deletes each one only if its current
//! record (newer writes included) has still expired
//! ([`Inner::delete_expired`]). Unlike Redis's random sampling, the index
//! is ordered by expiry time, so a round visits exactly the keys that are
//! due, and every expired key is deleted within about one round of its
//! expiry while the sweep keeps up. A round stops after its CPU budget
//! (`sweep_every × cpu_budget`) and puts back what it did not get to, so
//! under a burst of expiries the sweep falls behind instead of taking the
//! writer from clients.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rustix::time::{clock_gettime, ClockId};
use serde::Serialize;

use super::error::Result;
use super::keydir::KeyDir;
use super::{Inner, READ_RETRIES};

/// Keys handed to the writer at once: bounds how long one decision holds
/// the writer lock.
const CHUNK: usize = 256;

/// What one sweep round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Index entries visited.
    pub visited: u64,
    /// Keys deleted.
    pub deleted: u64,
    /// Whether the round stopped at its budget with due keys left.
    pub out_of_budget: bool,
}

/// The sweep thread's controls.
#[derive(Default)]
pub(crate) struct Sweeper {
    /// Held for a whole round: rounds never overlap, so a round that
    /// returns has seen every key that was due when it started (none was
    /// taken out of the index by another round still working on it).
    round: Mutex<()>,
    stop: Mutex<bool>,
    wake: Condvar,
    /// Whether this engine deletes expired keys.
    pub active: AtomicBool,
}

impl Sweeper {
    pub fn stop(&self) {
        *self.stop.lock() = true;
        self.wake.notify_all();
    }

    pub fn set_active(&self, on: bool) {
        self.active.store(on, Relaxed);
        self.wake.notify_all();
    }
}

impl Inner {
    /// The sweep thread's loop: a round every `sweep_every` while the engine
    /// expires keys, until the engine closes.
    pub(crate) fn run_sweeper(&self) {
        let policy = &self.options.expiry;
        let every = policy.sweep_every.unwrap_or(Duration::from_secs(3600));
        let budget = every.mul_f64(policy.cpu_budget);
        loop {
            {
                let mut stop = self.sweeper.stop.lock();
                if !*stop {
                    self.sweeper.wake.wait_for(&mut stop, every);
                }
                if *stop {
                    return;
                }
            }
            if policy.sweep_every.is_none() || !self.sweeper.active.load(Relaxed) {
                continue;
            }
            if let Err(e) = self.sweep(Some(budget)) {
                tracing::error!(error = %e, "expiry sweep failed");
            }
        }
    }

    /// One round: deletes the keys whose expiry has passed, oldest first,
    /// until none is due or `budget` (wall time) is spent.
    pub(crate) fn sweep(&self, budget: Option<Duration>) -> Result<SweepReport> {
        let _round = self.sweeper.round.lock();
        let started = Instant::now();
        let cpu_start = thread_cpu_nanos();
        let result = self.sweep_round(started, budget);
        self.stats
            .count_sweep(thread_cpu_nanos().saturating_sub(cpu_start));
        result
    }

    fn sweep_round(&self, started: Instant, budget: Option<Duration>) -> Result<SweepReport> {
        let now = self.now_ms();
        let keydir = self.keydir.load_full();
        let mut report = SweepReport::default();
        let mut unread = Vec::new();
        while let Some(due) = keydir.expiries.take_due(now) {
            let mut rest = due.hashes.into_iter();
            loop {
                let chunk: Vec<u64> = rest.by_ref().take(CHUNK).collect();
                if chunk.is_empty() {
                    break;
                }
                let mut keys = Vec::new();
                for &hash in &chunk {
                    if !self.expired_keys_of(&keydir, hash, now, &mut keys)? {
                        unread.push((due.bucket, hash));
                    }
                }
                report.visited += chunk.len() as u64;
                if !keys.is_empty() {
                    report.deleted += self.delete_expired(&keys)?;
                }
                if budget.is_some_and(|b| started.elapsed() >= b) {
                    let rest: Vec<u64> = rest.collect();
                    report.out_of_budget = !rest.is_empty() || keydir.expiries.due(now) > 0;
                    keydir.expiries.restore(due.bucket, rest);
                    return Ok(finish(&keydir, unread, report));
                }
            }
        }
        Ok(finish(&keydir, unread, report))
    }

    /// Adds to `out` the keys with this hash whose record has expired at
    /// `now`. False if a compaction kept moving the records while they were
    /// read (the hash goes back for the next round).
    fn expired_keys_of(
        &self,
        keydir: &KeyDir,
        hash: u64,
        now: u64,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<bool> {
        'retry: for _ in 0..READ_RETRIES {
            let mut found = Vec::new();
            for loc in keydir.candidates(hash).iter() {
                let key =
                    self.with_record(loc, |rec| rec.expired_at(now).then(|| rec.key.to_vec()))?;
                match key {
                    None => continue 'retry,
                    Some(Some(key)) => found.push(key),
                    Some(None) => {}
                }
            }
            out.append(&mut found);
            return Ok(true);
        }
        Ok(false)
    }
}

/// Puts back the hashes whose records could not be read this round.
fn finish(keydir: &KeyDir, unread: Vec<(u64, u64)>, report: SweepReport) -> SweepReport {
    for (bucket, hash) in unread {
        keydir.expiries.restore(bucket, [hash]);
    }
    report
}

/// CPU time this thread has used, in nanoseconds.
fn thread_cpu_nanos() -> u64 {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}
