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

/// The longest single write call of the engine's data. The kernel sizes the
/// page-cache folios of a write by its length and alignment: an aligned
/// write of 1 MiB or more takes folios that large, which on a virtual
/// machine whose host reclaims free guest memory (free page reporting)
/// come from memory the host must back again, page by page. Measured
/// there (512 MiB written into a new file and fsynced, after a few idle
/// seconds): in aligned 1 MiB writes 0.8 s of system time, in 512 KiB or
/// smaller ones 0.1 s; 16 MiB writes ran at 200-360 MB/s. On other
/// machines the extra calls (four per MiB) cost nothing measurable.
pub(crate) const MAX_WRITE_BYTES: usize = 256 << 10;

/// At most this many buffers go into one `pwritev`. A call joins the
/// end of one of the writer's pieces to the start of the next, and held
/// chunks are at least 64 KiB, so a call rarely spans more than five; one
/// that would span more ends early, and the next starts where it ended.
const MAX_WRITE_PIECES: usize = 16;

/// How much written data [`write_in_pieces`] gathers before it has the
/// kernel start writing it to the disk: ranges end where the file offset
/// is a multiple of this. Measured here (512 MiB in 256 KiB writes with an
/// fdatasync every 8 MiB), handing over every 1 MiB took 0.18 s, every
/// 256 KiB 0.20 s, every 2 MiB 0.20 s: fewer, larger disk writes, yet
/// started soon enough to run beside the copying of the next ones.
const WRITEBACK_BYTES: u64 = 1 << 20;

/// Writes `pieces` one after the other from `pos`. A write of up to
/// [`MAX_WRITE_BYTES`] is one call; a longer one is cut where the file
/// offset is a multiple of it ([`write_calls`]). With `ahead` (an
/// fdatasync follows), has the kernel start writing each
/// [`WRITEBACK_BYTES`] range to the disk once it is in the page cache,
/// without waiting for it, so the disk writes the first ranges while
/// the next are copied, and the rest once all is written.
fn write_in_pieces(
    file: &std::fs::File,
    pieces: &[&[u8]],
    pos: u64,
    ahead: bool,
) -> io::Result<()> {
    write_and_hand_over(
        pieces,
        pos,
        ahead,
        |slices, at| write_all_vectored(slices, at, |s, at| pwritev(file, s, at)),
        |at, len| start_writeback(file, at, len),
    )
}

/// [`write_in_pieces`] with its two system calls passed in: `write`
/// writes the slices at an offset, `hand_over` starts the disk write of a
/// range.
fn write_and_hand_over(
    pieces: &[&[u8]],
    pos: u64,
    ahead: bool,
    mut write: impl FnMut(&mut [io::IoSlice<'_>], u64) -> io::Result<()>,
    mut hand_over: impl FnMut(u64, u64),
) -> io::Result<()> {
    let (mut handed, mut end) = (pos, pos);
    write_calls(pieces, pos, |slices, at, len| {
        write(slices, at)?;
        end = at + len as u64;
        if ahead && end % WRITEBACK_BYTES == 0 {
            hand_over(handed, end - handed);
            handed = end;
        }
        Ok(())
    })?;
    if ahead && handed < end {
        hand_over(handed, end - handed);
    }
    Ok(())
}

/// Cuts `pieces`, to be written one after the other from `pos`, into
/// write calls, and makes each: `call(slices, at, len)` writes `slices`
/// (`len` bytes in all) at file offset `at`. A write of up to
/// [`MAX_WRITE_BYTES`] is one call. A longer one is cut where the file
/// offset is a multiple of [`MAX_WRITE_BYTES`], whatever the pieces'
/// boundaries (a call may span the end of one piece and the start of the
/// next): such a call gets page-cache folios of its size, aligned, and
/// its range goes to the disk on the same boundaries. A replica's log
/// rarely starts a chunk on one: 512 MiB written from offset 133,000 in
/// 256 KiB calls counted from there took 0.21-0.24 s, in calls cut on
/// the file's 256 KiB boundaries 0.18-0.19 s, as from offset 0.
fn write_calls(
    pieces: &[&[u8]],
    pos: u64,
    mut call: impl FnMut(&mut [io::IoSlice<'_>], u64, usize) -> io::Result<()>,
) -> io::Result<()> {
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    if total == 0 {
        return Ok(());
    }
    let unit = MAX_WRITE_BYTES as u64;
    let (mut piece, mut offset, mut at) = (0usize, 0usize, pos);
    while piece < pieces.len() {
        let room = if total <= MAX_WRITE_BYTES {
            total
        } else {
            (unit - at % unit) as usize
        };
        let mut slices = [io::IoSlice::new(&[]); MAX_WRITE_PIECES];
        let (mut len, mut used) = (0usize, 0usize);
        while len < room && used < MAX_WRITE_PIECES && piece < pieces.len() {
            let rest = &pieces[piece][offset..];
            let take = rest.len().min(room - len);
            if take > 0 {
                slices[used] = io::IoSlice::new(&rest[..take]);
                used += 1;
                len += take;
            }
            offset += take;
            if offset == pieces[piece].len() {
                (piece, offset) = (piece + 1, 0);
            }
        }
        if len > 0 {
            call(&mut slices[..used], at, len)?;
            at += len as u64;
        }
    }
    Ok(())
}

/// Writes all of `slices` from `pos` with `write_once` (one `pwritev`:
/// the bytes it wrote), calling it again after a short write or an
/// interruption.
fn write_all_vectored(
    mut slices: &mut [io::IoSlice<'_>],
    mut pos: u64,
    mut write_once: impl FnMut(&[io::IoSlice<'_>], u64) -> io::Result<usize>,
) -> io::Result<()> {
    while !slices.is_empty() {
        match write_once(slices, pos) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                io::IoSlice::advance_slices(&mut slices, n);
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One `pwritev(2)` of `slices` at `pos`: the bytes written.
fn pwritev(file: &std::fs::File, slices: &[io::IoSlice<'_>], pos: u64) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let offset = libc::off64_t::try_from(pos)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))?;
    let count = libc::c_int::try_from(slices.len()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix, and the
    // slices borrow memory that lives across the call; the file
    // descriptor is kept open by `file`.
    let n = unsafe { libc::pwritev64(file.as_raw_fd(), slices.as_ptr().cast(), count, offset) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Writes zeros over `[from, to)` of `file`, as any other write (calls
/// cut on the file's boundaries, handed to the disk as they are written).
/// For the active segment's reserve ([`super::writer`]), at most about a
/// MiB; not through the fault hooks, since a reserve that cannot be
/// written is skipped, never a failed write.
pub(crate) fn zero_fill(file: &std::fs::File, from: u64, to: u64) -> io::Result<()> {
    static ZEROS: [u8; MAX_WRITE_BYTES] = [0; MAX_WRITE_BYTES];
    let len = usize::try_from(to.saturating_sub(from))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "range too long"))?;
    let pieces: Vec<&[u8]> = (0..len)
        .step_by(MAX_WRITE_BYTES)
        .map(|at| &ZEROS[..(len - at).min(MAX_WRITE_BYTES)])
        .collect();
    write_in_pieces(file, &pieces, from, true)
}

/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`: queues the dirty pages of the
/// range for writing and returns. Advice for speed only: the fsync that
/// follows is what makes the bytes durable, and reports any error.
fn start_writeback(file: &std::fs::File, at: u64, len: u64) {
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
    let Some(faults) = faults else {
        return write_in_pieces(file, pieces, pos, before_sync);
    };
    faults.writes.fetch_add(1, Ordering::SeqCst);
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    let mut allowed = faults.allow_write(total);
    let cut = total - allowed;
    let mut allowed_pieces = Vec::with_capacity(pieces.len());
    for piece in pieces {
        let piece = &piece[..piece.len().min(allowed)];
        allowed -= piece.len();
        allowed_pieces.push(piece);
    }
    write_in_pieces(file, &allowed_pieces, pos, before_sync)?;
    if cut > 0 {
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

    /// Asserts that `file` holds `data` at `at` and ends with it.
    fn assert_file_holds(file: &std::fs::File, at: u64, data: &[u8], before_sync: bool) {
        let mut back = vec![0; data.len()];
        file.read_exact_at(&mut back, at).unwrap();
        assert!(back == data, "misplaced bytes (before_sync: {before_sync})");
        assert_eq!(file.metadata().unwrap().len(), at + data.len() as u64);
    }

    #[test]
    fn a_write_longer_than_one_piece_lands_whole_and_in_place() {
        for before_sync in [false, true] {
            let (_dir, file) = new_file();
            let at = 4097;
            let buf = pattern(2 * MAX_WRITE_BYTES + 12_345);
            write_at(None, &file, &buf, at, before_sync).unwrap();
            assert_file_holds(&file, at, &buf, before_sync);
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

    /// The calls [`write_calls`] makes for `lens`-long pieces written
    /// from `pos`: (offset, length, buffers) of each, after checking that
    /// they write every byte of the pieces once, in order, from `pos`.
    fn calls_for(lens: &[usize], pos: u64) -> Vec<(u64, usize, usize)> {
        let data = pattern(lens.iter().sum());
        let mut pieces = Vec::new();
        let mut from = 0;
        for &len in lens {
            pieces.push(&data[from..from + len]);
            from += len;
        }
        let (mut calls, mut written) = (Vec::new(), Vec::new());
        write_calls(&pieces, pos, |slices, at, len| {
            assert_eq!(at, pos + written.len() as u64, "calls are contiguous");
            let before = written.len();
            for slice in slices.iter() {
                written.extend_from_slice(slice);
            }
            assert_eq!(written.len() - before, len, "len is the call's bytes");
            calls.push((at, len, slices.len()));
            Ok(())
        })
        .unwrap();
        assert!(
            written == data,
            "the calls write the pieces' bytes in order"
        );
        calls
    }

    #[test]
    fn a_short_write_is_one_call_whatever_its_pieces() {
        let unit = MAX_WRITE_BYTES;
        for (lens, pos) in [
            (vec![100], 0),
            (vec![100, 0, 4000], unit as u64 - 50),
            (vec![unit / 2, unit / 2], 133_000),
            (vec![], 7),
        ] {
            let calls = calls_for(&lens, pos);
            let total: usize = lens.iter().sum();
            let expected = usize::from(total > 0);
            assert_eq!(calls.len(), expected, "{lens:?} at {pos}: {calls:?}");
        }
    }

    #[test]
    fn a_long_write_is_cut_on_the_file_s_boundaries_not_the_pieces() {
        let unit = MAX_WRITE_BYTES;
        for (lens, pos) in [
            (vec![3 * unit + 5], 133_000),
            (vec![unit + 1], 0),
            (vec![1 << 20, 1 << 20, 70_000, 1 << 20], 133_000),
            (vec![300_000, 0, 300_000, 65_536, 65_536], 4096),
        ] {
            let calls = calls_for(&lens, pos);
            let total: usize = lens.iter().sum();
            let (last_at, last_len, _) = *calls.last().unwrap();
            assert_eq!(last_at + last_len as u64, pos + total as u64);
            for &(at, len, _) in &calls[..calls.len() - 1] {
                assert!(len <= unit, "{lens:?} at {pos}: a call of {len}");
                assert_eq!(
                    (at + len as u64) % unit as u64,
                    0,
                    "{lens:?} at {pos}: {calls:?}"
                );
            }
            // Only the first and the last may be short.
            let full = calls.iter().filter(|c| c.1 == unit).count();
            assert!(full + 2 >= calls.len(), "{lens:?} at {pos}: {calls:?}");
        }
    }

    #[test]
    fn a_call_joins_at_most_so_many_pieces() {
        let lens = vec![10; 3 * MAX_WRITE_PIECES + 1];
        let calls = calls_for(&lens, 5);
        assert_eq!(calls.len(), 4, "{calls:?}");
        assert!(calls.iter().all(|c| c.2 <= MAX_WRITE_PIECES));
        let lens = vec![MAX_WRITE_BYTES / 8; 3 * MAX_WRITE_PIECES];
        let calls = calls_for(&lens, 100);
        assert!(calls
            .iter()
            .all(|c| c.2 <= MAX_WRITE_PIECES && c.1 <= MAX_WRITE_BYTES));
    }

    /// The ranges [`write_and_hand_over`] hands to the disk for a write of
    /// `len` bytes at `pos`.
    fn handed_over(len: usize, pos: u64, ahead: bool) -> Vec<(u64, u64)> {
        let data = pattern(len);
        let mut ranges = Vec::new();
        write_and_hand_over(
            &[&data],
            pos,
            ahead,
            |_, _| Ok(()),
            |at, n| ranges.push((at, n)),
        )
        .unwrap();
        ranges
    }

    #[test]
    fn writes_are_handed_to_the_disk_per_mib_of_the_file_then_the_rest() {
        let mib = WRITEBACK_BYTES;
        for (len, pos) in [
            (8 << 20, 133_000),
            (3 << 20, 0),
            (100, 5),
            (300_000, mib - 10),
        ] {
            let ranges = handed_over(len, pos, true);
            let mut at = pos;
            for &(from, n) in &ranges {
                assert_eq!(from, at, "{len} at {pos}: {ranges:?}");
                at += n;
            }
            assert_eq!(
                at,
                pos + len as u64,
                "{len} at {pos}: every byte is handed over once"
            );
            for &(from, n) in &ranges[..ranges.len() - 1] {
                assert_eq!((from + n) % mib, 0, "{len} at {pos}: {ranges:?}");
                assert!(n <= mib);
            }
        }
        // 8 MiB from 133,000: the MiB boundaries it crosses, then the rest.
        assert_eq!(handed_over(8 << 20, 133_000, true).len(), 9);
        assert!(
            handed_over(8 << 20, 133_000, false).is_empty(),
            "no fsync follows"
        );
    }

    #[test]
    fn a_short_or_interrupted_write_is_continued_where_it_stopped() {
        let data = pattern(10_000);
        let (a, b) = data.split_at(3_333);
        let mut slices = [io::IoSlice::new(a), io::IoSlice::new(b)];
        let mut file = vec![0u8; 20_000];
        let mut calls = 0;
        write_all_vectored(&mut slices, 500, |slices, at| {
            calls += 1;
            if calls % 3 == 0 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            // At most 1,000 bytes a call, as a disk near full or a signal
            // may cut a write short.
            let mut n = 0;
            for slice in slices {
                let take = slice.len().min(1_000 - n);
                let at = at as usize + n;
                file[at..at + take].copy_from_slice(&slice[..take]);
                n += take;
                if n == 1_000 {
                    break;
                }
            }
            Ok(n)
        })
        .unwrap();
        assert!(file[500..10_500] == data[..], "every byte once, in place");
        assert!(file[..500].iter().chain(&file[10_500..]).all(|&b| b == 0));
        assert!(
            calls >= 10,
            "{calls} calls for 10 short writes and the interruptions"
        );

        let mut slices = [io::IoSlice::new(a)];
        let err = write_all_vectored(&mut slices, 0, |_, _| Ok(0)).unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::WriteZero,
            "a write that takes nothing fails"
        );
    }

    #[test]
    fn pieces_written_across_calls_land_whole_and_in_place() {
        for before_sync in [false, true] {
            let (_dir, file) = new_file();
            let at = 133_000;
            let data = pattern(3 * MAX_WRITE_BYTES + 99_999);
            let (a, rest) = data.split_at(70_000);
            let (b, c) = rest.split_at(MAX_WRITE_BYTES + 3);
            write_pieces_at(None, &file, &[a, &[], b, c], at, before_sync).unwrap();
            assert_file_holds(&file, at, &data, before_sync);
        }
    }
}
