//! The maintenance thread: writes hint files for freshly sealed segments
//! and runs compaction when the policy says so.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::compaction;
use super::hint;
use super::recovery::{scan, ScanMode};
use super::segment::DataFile;
use super::Inner;

#[derive(Default)]
pub(crate) struct Maintenance {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    hint_jobs: VecDeque<Arc<DataFile>>,
    stop: bool,
}

impl Maintenance {
    pub fn push_hint_job(&self, file: Arc<DataFile>) {
        self.state.lock().hint_jobs.push_back(file);
        self.wake.notify_one();
    }

    pub fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_all();
    }
}

impl Inner {
    pub(crate) fn run_maintenance(&self) {
        let policy = self.options.compaction.clone();
        let mut next_check = policy.check_every.map(|d| Instant::now() + d);
        loop {
            let job = {
                let mut st = self.maintenance.state.lock();
                loop {
                    // Pending hints are written even when stopping, so a
                    // cleanly closed directory has every hint.
                    if let Some(job) = st.hint_jobs.pop_front() {
                        break Some(job);
                    }
                    if st.stop {
                        return;
                    }
                    let now = Instant::now();
                    match next_check {
                        Some(at) if at <= now => break None,
                        Some(at) => {
                            self.maintenance.wake.wait_for(&mut st, at - now);
                        }
                        None => {
                            self.maintenance
                                .wake
                                .wait_for(&mut st, Duration::from_secs(3600));
                        }
                    }
                }
            };
            match job {
                Some(file) => self.write_hint(&file),
                None => {
                    next_check = policy.check_every.map(|d| Instant::now() + d);
                    self.compact_if_due();
                }
            }
        }
    }

    fn write_hint(&self, file: &DataFile) {
        // Holding the compaction lock keeps the file from being merged
        // away while its hint is written.
        let _guard = self.compaction.lock();
        if self.files.load().get(file.id).is_none() {
            return;
        }
        let mut entries = Vec::new();
        let result = scan(file, ScanMode::Strict, |e| entries.push(e)).and_then(|_| {
            hint::write(
                &self.dir,
                &file.kind.hint_name(),
                file.readable_len(),
                &entries,
            )
        });
        if let Err(e) = result {
            tracing::error!(file = %file.path.display(), error = %e, "could not write hint file");
        }
    }

    fn compact_if_due(&self) {
        let policy = &self.options.compaction;
        let stats = self.stats();
        let dead = stats.data_bytes.saturating_sub(stats.live_bytes);
        if stats.segments < 2
            || dead < policy.min_dead_bytes
            || stats.dead_ratio() < policy.min_dead_ratio
        {
            return;
        }
        match compaction::compact(self, false) {
            Ok(report) => tracing::info!(?report, "background compaction finished"),
            Err(e) => tracing::error!(error = %e, "background compaction failed"),
        }
    }
}
