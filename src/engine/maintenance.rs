//! The maintenance thread: writes hint files for freshly sealed segments
//! and runs compaction when the policy says so. Also the hint of the
//! active segment that a clean close writes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::compaction;
use super::hint::{self, Gathered};
use super::recovery::{scan, ScanMode};
use super::segment::{DataFile, FILE_HEADER_LEN};
use super::Inner;

#[derive(Default)]
pub(crate) struct Maintenance {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// Sealed segments, with their entries when gathered as they were
    /// written.
    hint_jobs: VecDeque<(Arc<DataFile>, Option<Gathered>)>,
    stop: bool,
}

impl Maintenance {
    pub fn push_hint_job(&self, file: Arc<DataFile>, gathered: Option<Gathered>) {
        self.state.lock().hint_jobs.push_back((file, gathered));
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
                Some((file, gathered)) => self.write_hint(&file, gathered),
                None => {
                    next_check = policy.check_every.map(|d| Instant::now() + d);
                    self.compact_if_due();
                }
            }
        }
    }

    /// Writes the hint of a sealed segment: from the entries gathered as
    /// its records were verified and appended, which cover exactly its
    /// length (see [`hint::Gathered`]), or else from a scan of the file.
    fn write_hint(&self, file: &DataFile, gathered: Option<Gathered>) {
        // Holding the compaction lock keeps the file from being merged
        // away while its hint is written.
        let _guard = self.compaction.lock();
        if self.files.load().get(file.id).is_none() {
            return;
        }
        let len = file.readable_len();
        let entries = match Gathered::covering(gathered, len) {
            Some(entries) => Ok(entries),
            None => {
                let mut entries = Vec::new();
                scan(file, ScanMode::Strict, |e| entries.push(e)).map(|_| entries)
            }
        };
        let result = entries
            .and_then(|entries| hint::write(&self.dir, &file.kind.hint_name(), len, &entries));
        if let Err(e) = result {
            tracing::error!(file = %file.path.display(), error = %e, "could not write hint file");
        }
    }

    /// At a clean close, once everything is durable and the background
    /// threads are stopped: cuts the active segment back to the end of the
    /// log (the zeros written ahead go) and writes its hint (with the
    /// crc32 of the bytes it covers), so that the next open need not scan
    /// it. Best effort: without it the next open scans, as after a crash.
    /// The bytes are durable before the hint names them (the caller
    /// flushed), and the hint itself is written by rename.
    pub(crate) fn write_active_hint(&self) {
        let _guard = self.compaction.lock();
        let mut st = self.writer.state.lock();
        let len = st.len;
        if st.poisoned.is_some() || st.durable_len() != len {
            return;
        }
        if let Err(e) = self.cut_reserve(&mut st) {
            tracing::warn!(error = %e, "could not cut the active segment back to the end of the log at close; the next open does");
            return;
        }
        if len <= FILE_HEADER_LEN || st.hinted_len == Some(len) {
            return;
        }
        let file = st.active.clone();
        drop(st);
        let data = file.tail_from(0);
        if data.len() as u64 != len {
            return;
        }
        let mut entries = Vec::new();
        // A replica may close with a shipped batch whose commit has not
        // arrived: the segment then ends inside a batch and gets no hint.
        if let Err(e) = scan(&file, ScanMode::Strict, |e| entries.push(e)) {
            tracing::info!(file = %file.path.display(), error = %e, "no hint for the active segment at close; the next open scans it");
            return;
        }
        let name = file.kind.hint_name();
        match hint::write_active(&self.dir, &name, len, crc32fast::hash(data), &entries) {
            Ok(()) => {
                tracing::debug!(hint = %name, entries = entries.len(), "wrote the hint of the active segment")
            }
            Err(e) => {
                tracing::warn!(hint = %name, error = %e, "could not write the hint of the active segment; the next open scans it")
            }
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
