//! Fault injection for the file layer, so tests can make writes fail
//! part-way (a short write followed by ENOSPC), make fsync fail, hold every
//! fsync at a gate (to force an interleaving of writers, rolls and
//! compactions), or stop a compaction at a chosen step, the way redb and
//! raft-engine test theirs.
//!
//! Production code passes no `Faults`; each hook is then one branch on a
//! `None`.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Shared, adjustable fault switches. All methods are cheap and thread-safe.
#[derive(Debug)]
pub struct Faults {
    write_budget: AtomicU64,
    fail_sync: AtomicBool,
    compaction_stop_at: AtomicU32,
    /// Every fsync of a data file passes this gate.
    sync_gate: Gate,
    /// The flusher passes this gate after it loaded the file table and
    /// before it applies written records to the keydir.
    apply_gate: Gate,
    /// A rebuilt keydir waits here before it is published (live recovery,
    /// truncation, snapshot install), its files already registered.
    index_gate: Gate,
    /// Callers that found the flusher busy and waited for it before doing
    /// the writer's I/O themselves (a roll, a drain), since creation.
    drain_waits: AtomicU32,
    /// Appends of shipped log bytes that waited for the round under way
    /// because the writer's buffer was full, since creation.
    full_buffer_waits: AtomicU32,
    /// Times the flusher thread went to sleep with nothing to do, and
    /// times it woke from such a sleep.
    flusher_sleeps: AtomicU32,
    flusher_wakes: AtomicU32,
    /// Rounds a connection thread deferred to its park and handed to the
    /// flusher because it stayed busy ([`super::park`]), since creation.
    handed_over: AtomicU32,
    /// Writes to data files through [`write_all_at`], since creation.
    writes: AtomicU32,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            write_budget: AtomicU64::new(u64::MAX),
            fail_sync: AtomicBool::new(false),
            compaction_stop_at: AtomicU32::new(0),
            sync_gate: Gate::default(),
            apply_gate: Gate::default(),
            index_gate: Gate::default(),
            drain_waits: AtomicU32::new(0),
            full_buffer_waits: AtomicU32::new(0),
            flusher_sleeps: AtomicU32::new(0),
            flusher_wakes: AtomicU32::new(0),
            handed_over: AtomicU32::new(0),
            writes: AtomicU32::new(0),
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

    /// While `hold` is true, every fsync of a data file waits at a gate
    /// until it is released (`hold_syncs(false)`): the flusher then stays
    /// busy, so a test can line up rolls and compactions behind it.
    pub fn hold_syncs(&self, hold: bool) {
        self.sync_gate.hold(hold);
    }

    /// Lets one fsync through the held gate (the one waiting there, or
    /// the next to arrive), which stays held for the rest: a test can end
    /// one group commit while the next waits.
    pub fn let_one_sync_pass(&self) {
        self.sync_gate.let_one_pass();
    }

    /// How many fsyncs are waiting at the gate now.
    pub fn syncs_held(&self) -> u32 {
        self.sync_gate.waiting()
    }

    /// The name of the thread that last stopped at the held fsync gate
    /// (`None` for an unnamed thread, or if none did): tells a test which
    /// thread ran a round of the writer's I/O.
    pub fn last_held_sync_thread(&self) -> Option<String> {
        self.sync_gate.last_thread.lock().clone()
    }

    /// While `hold` is true, the flusher stops after loading the file table
    /// and before applying written records to the keydir, until released:
    /// a test can then run a compaction against that stale table.
    pub fn hold_applies(&self, hold: bool) {
        self.apply_gate.hold(hold);
    }

    /// How many keydir applies are waiting at their gate now.
    pub fn applies_held(&self) -> u32 {
        self.apply_gate.waiting()
    }

    /// While `hold` is true, a rebuilt keydir (live recovery, truncation,
    /// snapshot install) stops just before it is published, its new files
    /// already readable, until released: a test reads in that window.
    pub fn hold_index_swaps(&self, hold: bool) {
        self.index_gate.hold(hold);
    }

    /// How many keydir swaps are waiting at their gate now.
    pub fn index_swaps_held(&self) -> u32 {
        self.index_gate.waiting()
    }

    /// How many writes went to a data file through these hooks (the
    /// writer's rounds and drains, a recovery's new segment header).
    pub fn writes(&self) -> u32 {
        self.writes.load(Ordering::SeqCst)
    }

    /// How many times a caller had to wait for the flusher before doing
    /// the writer's I/O itself (a segment roll, a drain).
    pub fn drain_waits(&self) -> u32 {
        self.drain_waits.load(Ordering::SeqCst)
    }

    /// How many appends of shipped log bytes waited for the round under
    /// way because the writer's buffer held its maximum.
    pub fn full_buffer_waits(&self) -> u32 {
        self.full_buffer_waits.load(Ordering::SeqCst)
    }

    /// How many times the flusher thread went to sleep with nothing to
    /// do: once it has, a write wakes it only by kicking it.
    pub fn flusher_sleeps(&self) -> u32 {
        self.flusher_sleeps.load(Ordering::SeqCst)
    }

    /// How many rounds deferred to a busy thread's park went to the
    /// flusher instead.
    pub fn rounds_handed_over(&self) -> u32 {
        self.handed_over.load(Ordering::SeqCst)
    }

    /// Whether the flusher thread sleeps now with nothing to do (it has
    /// not yet run since the last sleep began).
    pub fn flusher_asleep(&self) -> bool {
        self.flusher_wakes.load(Ordering::SeqCst) != self.flusher_sleeps.load(Ordering::SeqCst)
    }

    /// Polls `cond` until it holds or `timeout` passes; returns whether it
    /// held. For tests lining up threads against the hooks above.
    pub fn wait_until(&self, timeout: Duration, cond: impl Fn(&Faults) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while !cond(self) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
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

    pub(crate) fn count_drain_wait(&self) {
        self.drain_waits.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn count_full_buffer_wait(&self) {
        self.full_buffer_waits.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn count_flusher_sleep(&self) {
        self.flusher_sleeps.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn count_flusher_wake(&self) {
        self.flusher_wakes.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn count_hand_over(&self) {
        self.handed_over.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn pass_apply_gate(&self) {
        self.apply_gate.pass();
    }

    pub(crate) fn pass_index_gate(&self) {
        self.index_gate.pass();
    }

    pub(crate) fn check_sync(&self) -> io::Result<()> {
        self.sync_gate.pass();
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(5)); // EIO
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

/// A point a thread stops at while a test holds it closed.
#[derive(Debug, Default)]
struct Gate {
    held: Mutex<GateState>,
    released: Condvar,
    /// Threads waiting at the gate now.
    waiting: AtomicU32,
    /// The name of the last thread that waited.
    last_thread: Mutex<Option<String>>,
}

#[derive(Debug, Default)]
struct GateState {
    held: bool,
    /// Threads that may pass while the gate is held.
    passes: u32,
}

impl Gate {
    fn hold(&self, hold: bool) {
        *self.held.lock() = GateState {
            held: hold,
            passes: 0,
        };
        if !hold {
            self.released.notify_all();
        }
    }

    fn let_one_pass(&self) {
        self.held.lock().passes += 1;
        self.released.notify_all();
    }

    fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::SeqCst)
    }

    fn pass(&self) {
        let mut gate = self.held.lock();
        if gate.held {
            *self.last_thread.lock() = std::thread::current().name().map(str::to_owned);
            self.waiting.fetch_add(1, Ordering::SeqCst);
            while gate.held && gate.passes == 0 {
                self.released.wait(&mut gate);
            }
            if gate.held {
                gate.passes -= 1;
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The largest single `pwrite` of the engine's data. The kernel sizes the
/// page-cache folios of a write by its length and alignment: an aligned
/// write of 1 MiB or more takes folios that large, which on a virtual
/// machine whose host reclaims free guest memory (free page reporting)
/// come from memory the host must back again, page by page. Measured
/// there (512 MiB written into a new file and fsynced, after a few idle
/// seconds): in aligned 1 MiB writes 0.8 s of system time, in 512 KiB or
/// smaller ones 0.1 s; 16 MiB writes ran at 200-360 MB/s. On other
/// machines the extra calls (four per MiB) cost nothing measurable.
pub(crate) const MAX_WRITE_BYTES: usize = 256 << 10;

/// Writes `buf` at `pos` in calls of at most [`MAX_WRITE_BYTES`]; with
/// `ahead`, has the kernel start writing each piece to the disk once it
/// is in the page cache, without waiting for it.
fn write_in_pieces(file: &std::fs::File, buf: &[u8], pos: u64, ahead: bool) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut at = pos;
    for piece in buf.chunks(MAX_WRITE_BYTES) {
        file.write_all_at(piece, at)?;
        if ahead {
            start_writeback(file, at, piece.len());
        }
        at += piece.len() as u64;
    }
    Ok(())
}

/// Writes zeros over `[from, to)` of `file`, in pieces like any other
/// write, starting each piece's disk write. For the active segment's
/// reserve ([`super::writer`]); not through the fault hooks, since a
/// reserve that cannot be written is skipped, never a failed write.
pub(crate) fn zero_fill(file: &std::fs::File, from: u64, to: u64) -> io::Result<()> {
    static ZEROS: [u8; MAX_WRITE_BYTES] = [0; MAX_WRITE_BYTES];
    let mut at = from;
    while at < to {
        let len = usize::try_from(to - at).map_or(MAX_WRITE_BYTES, |n| n.min(MAX_WRITE_BYTES));
        write_in_pieces(file, &ZEROS[..len], at, true)?;
        at += len as u64;
    }
    Ok(())
}

/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`: queues the dirty pages of the
/// range for writing and returns. Advice for speed only: the fsync that
/// follows is what makes the bytes durable, and reports any error.
fn start_writeback(file: &std::fs::File, at: u64, len: usize) {
    use std::os::fd::AsRawFd;
    let (Ok(at), Ok(len)) = (libc::off64_t::try_from(at), libc::off64_t::try_from(len)) else {
        return;
    };
    // SAFETY: a plain system call on a file descriptor `file` keeps open;
    // no memory is passed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), at, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Writes `buf` at `pos`, through the fault hooks when there are any.
pub(crate) fn write_all_at(
    faults: Option<&Faults>,
    file: &std::fs::File,
    buf: &[u8],
    pos: u64,
) -> io::Result<()> {
    write_at(faults, file, buf, pos, false)
}

/// [`write_all_at`], and with `before_sync` (an fdatasync follows) has
/// the disk write the first pieces while the next ones are copied into
/// the page cache: the fdatasync then waits for the last piece (and the
/// disk's flush) rather than for all of it. Without that, the copy into
/// the page cache and the disk's write take turns, and a catch-up runs at
/// the speed of neither.
pub(crate) fn write_at(
    faults: Option<&Faults>,
    file: &std::fs::File,
    buf: &[u8],
    pos: u64,
    before_sync: bool,
) -> io::Result<()> {
    write_pieces_at(faults, file, &[buf], pos, before_sync)
}

/// [`write_at`] of `pieces` one after the other from `pos`: one write
/// for the fault hooks, whatever the number of pieces.
pub(crate) fn write_pieces_at(
    faults: Option<&Faults>,
    file: &std::fs::File,
    pieces: &[&[u8]],
    pos: u64,
    before_sync: bool,
) -> io::Result<()> {
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    let mut allowed = match faults {
        None => total,
        Some(faults) => {
            faults.writes.fetch_add(1, Ordering::SeqCst);
            faults.allow_write(total)
        }
    };
    let mut at = pos;
    for piece in pieces {
        let piece = &piece[..piece.len().min(allowed)];
        write_in_pieces(file, piece, at, before_sync)?;
        at += piece.len() as u64;
        allowed -= piece.len();
    }
    if at - pos < total as u64 {
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    /// A pattern that differs at every byte of a piece, so a piece written
    /// at the wrong place shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// A new empty file, and the directory that holds it.
    fn new_file() -> (tempfile::TempDir, std::fs::File) {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create_new(dir.path().join("f")).unwrap();
        (dir, file)
    }

    #[test]
    fn a_write_longer_than_one_piece_lands_whole_and_in_place() {
        for before_sync in [false, true] {
            let (_dir, file) = new_file();
            let at = 4097;
            let buf = pattern(2 * MAX_WRITE_BYTES + 12_345);
            write_at(None, &file, &buf, at, before_sync).unwrap();
            let mut back = vec![0; buf.len()];
            file.read_exact_at(&mut back, at).unwrap();
            assert!(back == buf, "misplaced bytes (before_sync: {before_sync})");
            assert_eq!(file.metadata().unwrap().len(), at + buf.len() as u64);
        }
    }

    #[test]
    fn a_write_cut_by_the_budget_writes_the_allowed_prefix_then_fails() {
        let (_dir, file) = new_file();
        let faults = Faults::default();
        let allowed = MAX_WRITE_BYTES + 100;
        faults.set_write_budget(allowed as u64);
        let buf = pattern(3 * MAX_WRITE_BYTES);
        let err = write_at(Some(&faults), &file, &buf, 0, true).unwrap_err();
        assert_eq!(err.kind(), Faults::disk_full().kind());
        let mut back = vec![0; allowed];
        file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, buf[..allowed]);
        assert_eq!(file.metadata().unwrap().len(), allowed as u64);
    }
}
