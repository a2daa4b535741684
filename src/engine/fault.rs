//! Fault injection for the file layer, so tests can make writes fail
//! part-way (a short write followed by ENOSPC), make fsync fail or slow,
//! or stop a compaction at a chosen step, the way redb and raft-engine
//! test theirs.
//!
//! Production code passes no `Faults`; each hook is then one branch on a
//! `None`.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Shared, adjustable fault switches. All methods are cheap and thread-safe.
#[derive(Debug)]
pub struct Faults {
    write_budget: AtomicU64,
    fail_sync: AtomicBool,
    sync_delay_us: AtomicU64,
    compaction_stop_at: AtomicU32,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            write_budget: AtomicU64::new(u64::MAX),
            fail_sync: AtomicBool::new(false),
            sync_delay_us: AtomicU64::new(0),
            compaction_stop_at: AtomicU32::new(0),
        }
    }
}

/// The steps of a compaction, in order; a test may stop it before any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CompactionStep {
    /// Merged data files written and fsynced.
    DataWritten = 1,
    /// Hint files of the new generation written.
    HintsWritten = 2,
    /// Manifest written to its temporary name, not yet renamed.
    ManifestStaged = 3,
    /// Manifest renamed: the new generation is committed.
    Committed = 4,
    /// Some of the old files deleted.
    OldFilesPartlyDeleted = 5,
}

impl Faults {
    /// From now on, allow only `bytes` more bytes to be written to data
    /// files; the write that crosses the budget is cut short and fails with
    /// ENOSPC, as on a full disk.
    pub fn set_write_budget(&self, bytes: u64) {
        self.write_budget.store(bytes, Ordering::SeqCst);
    }

    /// Removes the write budget ("the disk has space again").
    pub fn clear_write_budget(&self) {
        self.write_budget.store(u64::MAX, Ordering::SeqCst);
    }

    /// Makes every fsync fail with EIO while set.
    pub fn set_fail_sync(&self, fail: bool) {
        self.fail_sync.store(fail, Ordering::SeqCst);
    }

    /// Makes every fsync take at least `delay` more (a slow disk), so a
    /// test can act while one runs.
    pub fn set_sync_delay(&self, delay: std::time::Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.sync_delay_us.store(us, Ordering::SeqCst);
    }

    /// Makes the next compactions fail just before `step`.
    pub fn stop_compaction_at(&self, step: Option<CompactionStep>) {
        self.compaction_stop_at
            .store(step.map_or(0, |s| s as u32), Ordering::SeqCst);
    }

    /// How many of `len` bytes may be written; the caller writes that many
    /// and then fails with [`Faults::disk_full`] if it is fewer.
    pub(crate) fn allow_write(&self, len: usize) -> usize {
        let want = len as u64;
        let mut budget = self.write_budget.load(Ordering::SeqCst);
        loop {
            let grant = budget.min(want);
            match self.write_budget.compare_exchange(
                budget,
                budget - grant,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                // `grant <= len`, so it fits in usize.
                Ok(_) => return grant as usize,
                Err(now) => budget = now,
            }
        }
    }

    pub(crate) fn disk_full() -> io::Error {
        io::Error::from_raw_os_error(28) // ENOSPC
    }

    pub(crate) fn check_sync(&self) -> io::Result<()> {
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        let delay = self.sync_delay_us.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_micros(delay));
        }
        Ok(())
    }

    pub(crate) fn check_compaction(&self, step: CompactionStep) -> io::Result<()> {
        if self.compaction_stop_at.load(Ordering::SeqCst) == step as u32 {
            return Err(io::Error::other(format!(
                "injected failure before compaction step {step:?}"
            )));
        }
        Ok(())
    }
}

/// Writes `buf` at `pos`, through the fault hooks when there are any.
pub(crate) fn write_all_at(
    faults: Option<&Faults>,
    file: &std::fs::File,
    buf: &[u8],
    pos: u64,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let Some(faults) = faults else {
        return file.write_all_at(buf, pos);
    };
    let allowed = faults.allow_write(buf.len());
    file.write_all_at(&buf[..allowed], pos)?;
    if allowed < buf.len() {
        return Err(Faults::disk_full());
    }
    Ok(())
}

/// fdatasync through the fault hooks.
pub(crate) fn sync_data(faults: Option<&Faults>, file: &std::fs::File) -> io::Result<()> {
    if let Some(faults) = faults {
        faults.check_sync()?;
    }
    file.sync_data()
}
