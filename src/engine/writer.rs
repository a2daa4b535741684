//! The single writer and group commit.
//!
//! A write encodes its records into the writer's buffer under one mutex
//! and returns a ticket naming the log offset its records end at. A round
//! takes the whole buffer, writes it with one `pwrite` and, under
//! [`Durability::Always`], one `fdatasync`, then makes the records visible
//! in the keydir and wakes every caller whose ticket is now durable. The
//! flusher thread runs rounds for async callers and for bytes left behind;
//! a blocking caller that finds no round under way runs its own, so a lone
//! synced writer never waits for a thread hand-off. While one fdatasync
//! runs, new writes pile up in the buffer and share the next one: that is
//! group commit, and it needs no tuning knob.
//!
//! Under `Interval` and `Never` a write is visible in the keydir as soon as
//! it is buffered (reads of buffered bytes are served from the buffer), and
//! the caller does not wait.
//!
//! After a failed write or fsync the writer is poisoned: the state of the
//! file is unknown, so every later write is refused with the reason.
//!
//! **The reserve.** A round that fsyncs also keeps zeros written (and
//! made durable by the same fsync) up to [`RESERVE_AHEAD`] past the end of
//! the log, so that the rounds after it write into blocks the file
//! already has. An `fdatasync` of an append that grows the file must also
//! write the file's new size and block map (on ext4, the inode and the
//! allocation bitmaps, or a journal commit); one that overwrites blocks
//! already written and durable writes the data alone: 1.7x faster per
//! fsync on the disks measured. The zeros are not part of the log:
//! readers never look past the end of the log, a roll cuts the sealed
//! segment back to its last record before the next segment exists, a
//! clean close cuts the active segment back before it writes its hint,
//! and an open after a crash drops a tail of zeros without recording a
//! cut (nothing was lost there) ([`super::tail::torn_part`]).
//!
//! Invariants (file positions in the active segment):
//! `synced <= written <= buf_pos <= len`, `inflight` holds
//! `[written, buf_pos)` while a round writes it, `buf` holds
//! `[buf_pos, len)`. Only the holder of `busy` does I/O on the active file.

use std::fs::File;
use std::mem;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, MutexGuard};
use tokio::sync::{oneshot, watch};

use super::epochs::EpochHistory;
use super::error::{Error, Result};
use super::fault;
use super::files::FileTable;
use super::hint::{Gathered, HintEntry};
use super::keydir::{hash_key, Loc};
use super::logbuf::LogBuf;
use super::options::Durability;
use super::park;
use super::record::{self, Kind, Record, MAX_APPEND_BYTES};
use super::recovery::{apply_entry, update_expiries};
use super::segment::{self, DataFile, FileKind, FILE_HEADER_LEN};
use super::{Inner, WARM_GROUP};

/// How often a poisoned engine tries to resume ([`super::resume`]).
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Under `interval` and `never`, how long the flusher lets writes gather
/// after a round before it takes the buffer again. While it waits, a write
/// does not wake it (unless the buffer passes [`KICK_AT`]): under a steady
/// stream of writes it then runs at most one round per tick instead of
/// being woken by a system call for nearly every write. A tick that finds
/// nothing buffered puts it to sleep, and the next write wakes it at once.
pub const FLUSH_TICK: Duration = Duration::from_micros(200);

/// How far past the end of the log a round that fsyncs keeps zeros
/// written in the active segment (see "The reserve" above). Extended,
/// once less than a quarter of it is left, in one piece of about this
/// size: under a steady stream of durable writes, one round in every
/// MiB of log writes a MiB of zeros more.
pub(crate) const RESERVE_AHEAD: u64 = 1 << 20;

/// The zeros a round that fsyncs `written` bytes ending at `end` writes
/// ahead, if the file's zeros end at `reserved` and it may not grow past
/// `capacity`: `Some((from, to))` once less than a quarter of
/// [`RESERVE_AHEAD`] is left, the range ending on a page boundary. None
/// for a round of a quarter MiB or more (a replica catching up): its
/// fsync is mostly its data, and the zeros would be written for nothing
/// by the next such round.
fn reserve_extension(written: u64, end: u64, reserved: u64, capacity: u64) -> Option<(u64, u64)> {
    const PAGE: u64 = 4096;
    if written == 0 || written >= RESERVE_AHEAD / 4 || reserved >= end + RESERVE_AHEAD / 4 {
        return None;
    }
    let to = (end + RESERVE_AHEAD).div_ceil(PAGE) * PAGE;
    let to = to.min(capacity);
    let from = reserved.max(end);
    (to > from).then_some((from, to))
}

/// Buffered bytes past which a write wakes the flusher even during its
/// tick, so a burst of large writes goes to the OS without waiting.
pub(crate) const KICK_AT: usize = 64 * 1024;

/// Buffered bytes past which [`Inner::append_raw`] waits for the round
/// under way before it appends more. A replica catching up receives log
/// bytes faster than its disk takes them; unbounded, the writer's buffer
/// grows for as long as the network outpaces the disk (tens of MiB in a
/// catch-up here), and every growth faults in fresh memory, which on a
/// virtual machine whose host takes back free memory costs more than the
/// copy itself. Bounded, the buffers stay this size and are reused (the
/// receive blocks whose chunks the buffer holds, [`LogBuf`], or the
/// vector copied into), and the link to the master stops reading instead
/// (TCP flow control); rounds of this size still keep the disk busy.
pub const RAW_BUFFER_MAX: usize = 8 << 20;

/// Shipped bytes held by the buffer rather than copied into it
/// ([`Shipped::Held`]) only from this many: a replica following a busy
/// master receives many small frames, and each held piece keeps its
/// whole receive block from being read into again until it is written.
/// (Held pieces share write calls: [`super::fault::write_pieces_at`]
/// joins them with `pwritev`.)
const HOLD_AT_LEAST: usize = 64 << 10;

/// Log bytes shipped from a master, for [`Inner::append_raw`].
pub(crate) enum Shipped<'a> {
    /// Copied into the writer's buffer.
    Copied(&'a [u8]),
    /// Held by the writer's buffer as they are, a view of the same
    /// allocation (see [`LogBuf`]), if at least [`HOLD_AT_LEAST`] bytes
    /// are taken; copied otherwise.
    Held(&'a Bytes),
}

impl Shipped<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Shipped::Copied(bytes) => bytes,
            Shipped::Held(bytes) => bytes,
        }
    }
}

/// A record appended but not yet in the keydir (`Always` waits for its
/// fsync; a replica's batch waits for its commit record).
#[derive(Clone, Copy)]
pub(crate) struct PendingOp {
    pub(crate) hash: u64,
    pub(crate) loc: Loc,
    pub(crate) kind: Kind,
    pub(crate) expires_at: Option<u64>,
}

impl PendingOp {
    /// The record's entry in its segment's hint.
    fn hint_entry(&self) -> HintEntry {
        HintEntry {
            kind: self.kind,
            pos: self.loc.pos,
            len: self.loc.len,
            hash: self.hash,
            expires_at: self.expires_at,
        }
    }
}

/// How far the log has got, published to async waiters (writers waiting
/// for durability, replication streams waiting for new bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Global log offset up to which everything is durable.
    pub durable: u64,
    /// Global log offset up to which the OS has everything.
    pub written: u64,
    pub poisoned: bool,
    /// Live recoveries so far: a write whose ticket names an older count
    /// was rolled back, whatever `durable` says now.
    pub resumes: u64,
}

pub(crate) struct WriterState {
    pub active: Arc<DataFile>,
    file: Arc<File>,
    /// Global offset of the active segment's first record byte.
    pub base: u64,
    pub len: u64,
    written: u64,
    /// Where the zeros written ahead of the log end in the active file:
    /// at least `written`, and `[written, reserved)` reads as zeros
    /// (written ahead, or past where a fill that failed stopped). The
    /// file is never longer. See "The reserve" above.
    reserved: u64,
    synced: u64,
    buf_pos: u64,
    inflight: Arc<LogBuf>,
    buf: LogBuf,
    spare: Vec<u8>,
    /// Records appended, not yet taken by the flusher, not in the keydir.
    pub(crate) pending: Vec<PendingOp>,
    /// Records the flusher took and is writing; in the keydir once it
    /// applied them (emptied under the lock right after). With `pending`,
    /// what a decision inside the writer must see beyond the keydir.
    pub(crate) flushing: Arc<Vec<PendingOp>>,
    /// Members of a shipped batch whose commit record has not arrived.
    open_batch: Vec<PendingOp>,
    busy: bool,
    flush_requested: bool,
    /// The flusher sleeps until a write wakes it (it is not in a
    /// [`FLUSH_TICK`] after a round).
    flusher_asleep: bool,
    last_sync: Instant,
    pub poisoned: Option<String>,
    /// Whether the poison came from a failed write or fsync, which a live
    /// recovery may clear ([`super::resume`]).
    pub resumable: bool,
    /// Records dropped from the buffers when the writer was poisoned (never
    /// written), for the cut the recovery records.
    pub dropped_records: u32,
    /// Live recoveries so far (see [`Progress::resumes`]).
    pub resumes: u64,
    /// The reason of the poison the last recovery cleared.
    pub last_poison: Option<String>,
    pub last_probe: Instant,
    pub closed: bool,
    /// Epoch stamped on records this node writes: the history's newest.
    pub epoch: u32,
    pub epochs: EpochHistory,
    /// Whether the writer seals segments by size on its own (a master);
    /// a replica's segment boundaries come from its master.
    pub auto_roll: bool,
    /// The length of the active segment that its hint on disk describes,
    /// when open indexed the segment from that hint and the segment has
    /// not been replaced since: a close at that length has nothing new to
    /// write.
    pub(crate) hinted_len: Option<u64>,
    /// The active segment's hint entries gathered by the appends of
    /// shipped log bytes, handed to its hint when it is sealed.
    pub(crate) gathered: Option<Gathered>,
}

impl WriterState {
    /// Global offset of the end of everything appended.
    pub fn end(&self) -> u64 {
        self.base + (self.len - FILE_HEADER_LEN)
    }

    /// Global offset of the end of what is durable under the policy.
    pub fn durable_end(&self) -> u64 {
        self.base + (self.synced - FILE_HEADER_LEN)
    }

    /// File length of the active segment that is durable.
    pub fn durable_len(&self) -> u64 {
        self.synced
    }

    pub(crate) fn set_epochs(&mut self, epochs: EpochHistory) {
        self.epoch = epochs.current();
        self.epochs = epochs;
    }

    /// Global offset of the end of what the OS has.
    pub fn written_end(&self) -> u64 {
        self.base + (self.written - FILE_HEADER_LEN)
    }

    /// Bytes at `[pos, pos + len)` of the active segment that are still in
    /// this process's buffers.
    pub(crate) fn buffered(&self, pos: u64, len: usize) -> Option<&[u8]> {
        let (src, start) = if pos >= self.buf_pos {
            (&self.buf, pos - self.buf_pos)
        } else {
            (&*self.inflight, pos.checked_sub(self.written)?)
        };
        src.get(usize::try_from(start).ok()?, len)
    }

    /// Makes `active` (holding only complete records) the file appended to.
    pub(crate) fn reset_active(&mut self, active: Arc<DataFile>, file: File, base: u64) {
        let len = active.readable_len();
        self.active = active;
        self.file = Arc::new(file);
        self.base = base;
        self.len = len;
        self.written = len;
        self.reserved = len;
        self.synced = len;
        self.buf_pos = len;
        self.buf.clear();
        self.inflight = Arc::default();
        self.hinted_len = None;
        self.gathered = Gathered::new(len, Vec::new()).filter(|_| len == FILE_HEADER_LEN);
    }

    /// Forgets records not yet in the keydir (after a truncation).
    pub(crate) fn clear_batches(&mut self) {
        self.open_batch.clear();
        self.pending.clear();
    }

    /// fsyncs the active file (the bytes already handed to the OS).
    pub(crate) fn sync_written(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// The error for a write a live recovery rolled back.
    pub(crate) fn rolled_back(&self) -> Error {
        let cause = self
            .last_poison
            .as_deref()
            .or(self.poisoned.as_deref())
            .unwrap_or("a failed write or fsync");
        Error::Poisoned {
            reason: format!("the write was rolled back by a live recovery after: {cause}"),
        }
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        if let Some(reason) = &self.poisoned {
            return Err(Error::Poisoned {
                reason: reason.clone(),
            });
        }
        Ok(())
    }
}

pub(crate) struct Writer {
    pub state: Mutex<WriterState>,
    /// The flusher sleeps here.
    work: Condvar,
    /// Callers waiting for durability, rolls or buffered reads sleep here.
    progress: Condvar,
    /// The last published progress, for blocking writers. Kept apart from
    /// the writer state so that a woken writer does not queue on the lock
    /// the next round needs.
    published: Mutex<Progress>,
    /// Blocking writers parked until the log is durable up to their end.
    /// A publish wakes only those it made durable (all of them on a
    /// poison or a live recovery), so a writer whose bytes wait for the
    /// next round sleeps through this one's wake-ups.
    waiters: Mutex<Vec<Parked>>,
    /// Writers made durable and not woken yet ([`Writer::wake`]).
    waking: Mutex<Vec<std::thread::Thread>>,
    /// Tasks waiting, without a thread, for durability up to an end
    /// ([`Inner::wait_durable_async`]). Like `waiters`, a publish wakes
    /// only those it made durable: with clients in several group-commit
    /// cohorts, waking every task on every publish would poll most of them
    /// for nothing, in the middle of the answers the round owes.
    tasks: Mutex<Vec<ParkedTask>>,
    progress_tx: watch::Sender<Progress>,
}

impl Writer {
    pub fn new(active: Arc<DataFile>, file: File, base: u64, epochs: EpochHistory) -> Self {
        let len = active.readable_len();
        let state = WriterState {
            active,
            file: Arc::new(file),
            base,
            len,
            written: len,
            reserved: len,
            synced: len,
            buf_pos: len,
            inflight: Arc::default(),
            buf: LogBuf::default(),
            spare: Vec::new(),
            pending: Vec::new(),
            flushing: Arc::default(),
            open_batch: Vec::new(),
            busy: false,
            flush_requested: false,
            flusher_asleep: false,
            last_sync: Instant::now(),
            poisoned: None,
            resumable: false,
            dropped_records: 0,
            resumes: 0,
            last_poison: None,
            last_probe: Instant::now(),
            closed: false,
            epoch: epochs.current(),
            epochs,
            auto_roll: true,
            hinted_len: None,
            gathered: None,
        };
        let progress = Progress {
            durable: state.durable_end(),
            written: state.written_end(),
            poisoned: false,
            resumes: 0,
        };
        Writer {
            state: Mutex::new(state),
            work: Condvar::new(),
            progress: Condvar::new(),
            published: Mutex::new(progress),
            waiters: Mutex::new(Vec::new()),
            waking: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
            progress_tx: watch::channel(progress).0,
        }
    }

    fn publish(&self, st: &WriterState) {
        self.publish_unwoken(st);
        self.wake(usize::MAX);
    }

    /// Publishes the ends in `st` and moves the blocking writers it made
    /// durable to the wake list, without waking them: see [`Writer::wake`].
    fn publish_unwoken(&self, st: &WriterState) {
        let progress = Progress {
            durable: st.durable_end(),
            written: st.written_end(),
            poisoned: st.poisoned.is_some(),
            resumes: st.resumes,
        };
        let before = mem::replace(&mut *self.published.lock(), progress);
        let all = progress.poisoned || progress.resumes != before.resumes;
        {
            let mut waking = self.waking.lock();
            self.waiters.lock().retain(|p| {
                let done = all || p.end <= progress.durable;
                if done {
                    waking.push(p.thread.clone());
                }
                !done
            });
        }
        let done: Vec<ParkedTask> = {
            let mut tasks = self.tasks.lock();
            if all {
                mem::take(&mut *tasks)
            } else if tasks.iter().any(|t| t.end <= progress.durable) {
                let (done, waiting) = mem::take(&mut *tasks)
                    .into_iter()
                    .partition(|t| t.end <= progress.durable);
                *tasks = waiting;
                done
            } else {
                Vec::new()
            }
        };
        for task in done {
            // The task may have stopped waiting (its connection closed).
            let _ = task.woken.send(());
        }
        self.progress_tx.send_replace(progress);
        self.progress.notify_all();
    }

    /// Wakes up to `n` writers of the wake list.
    ///
    /// Waking a parked thread costs a few microseconds of the waker's
    /// time (a futex wake, often an interrupt to an idle CPU). A round that
    /// made 64 writers durable and woke them all itself would spend
    /// hundreds of microseconds before its next write; instead it wakes
    /// two, and every woken writer wakes two more before it returns, so
    /// the wake-ups spread over the CPUs as a tree while the next round's
    /// I/O runs.
    fn wake(&self, n: usize) {
        let threads: Vec<_> = {
            let mut waking = self.waking.lock();
            let keep = waking.len().saturating_sub(n);
            waking.drain(keep..).collect()
        };
        for thread in threads {
            thread.unpark();
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress_tx.subscribe()
    }

    /// Wakes the flusher.
    pub fn kick(&self) {
        self.work.notify_one();
    }
}

/// How many parked writers a round, and then every writer it woke, wakes
/// in turn ([`Writer::wake`]).
const WAKE_FANOUT: usize = 2;

/// A blocking writer waiting for durability up to `end`.
struct Parked {
    end: u64,
    thread: std::thread::Thread,
}

/// A task waiting for durability up to `end`, woken through `woken`.
struct ParkedTask {
    end: u64,
    woken: oneshot::Sender<()>,
}

/// One unconditional write, borrowing its key and value: the engine's
/// write-op type (a protocol layer converts its own requests into it; the
/// conditional forms are [`super::Conditional`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOp<'a> {
    /// Sets the key to the value, without expiry (an expiry the key had is
    /// gone).
    Put(&'a [u8], &'a [u8]),
    /// Sets the key to the value until the expiry (ms since the Unix
    /// epoch). An expiry that has already passed when the write is made
    /// deletes the key instead: the log holds a delete.
    PutExpiring(&'a [u8], &'a [u8], u64),
    Delete(&'a [u8]),
}

impl<'a> WriteOp<'a> {
    pub fn key(&self) -> &'a [u8] {
        match *self {
            WriteOp::Put(key, _) | WriteOp::PutExpiring(key, ..) | WriteOp::Delete(key) => key,
        }
    }

    /// The value a put sets; empty for a delete.
    pub fn value(&self) -> &'a [u8] {
        match *self {
            WriteOp::Put(_, value) | WriteOp::PutExpiring(_, value, _) => value,
            WriteOp::Delete(_) => &[],
        }
    }

    /// The expiry a put sets.
    pub fn expires_at(&self) -> Option<u64> {
        match *self {
            WriteOp::PutExpiring(_, _, at) => Some(at),
            _ => None,
        }
    }

    fn kind(&self) -> Kind {
        match self {
            WriteOp::Put(..) | WriteOp::PutExpiring(..) => Kind::Put,
            WriteOp::Delete(_) => Kind::Delete,
        }
    }

    /// The op as it is logged at `now` (ms): a put whose expiry has passed
    /// is a delete.
    pub(crate) fn as_of(self, now: u64) -> WriteOp<'a> {
        match self {
            WriteOp::PutExpiring(key, _, at) if at <= now => WriteOp::Delete(key),
            other => other,
        }
    }

    /// Encoded size of the op's record (the largest it can be).
    pub(crate) fn encoded_len(&self) -> usize {
        record::encoded_len_with(
            self.key().len(),
            self.value().len(),
            self.expires_at().is_some(),
        )
    }
}

/// What [`super::Engine::append_log_deferred`] appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogAppend {
    /// Bytes taken from the front of the input (whole records only).
    pub taken: usize,
    /// The local log's end after them.
    pub end: u64,
    /// Live recoveries when they were appended.
    pub(crate) resumes: u64,
}

/// What [`Inner::append_locked`] did: where the log now ends, and whether
/// the flusher needs a wake-up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Appended {
    pub end: u64,
    /// Live recoveries when it was appended.
    pub resumes: u64,
    /// Bytes buffered, this append included.
    buffered: usize,
    kick: bool,
}

/// Names the end of an append: it is durable once the log is durable up to
/// `end`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    pub end: u64,
    pub existed: bool,
    /// Live recoveries when it was appended.
    pub resumes: u64,
}

impl Inner {
    pub(crate) fn writer_publish(&self, st: &WriterState) {
        self.writer.publish(st);
    }

    fn waits_for_sync(&self) -> bool {
        self.options.durability == Durability::Always
    }

    /// Appends `ops` (as one atomic batch when `batch`), returning the
    /// ticket to wait on. A caller that will block in
    /// [`Inner::wait_durable`] (`blocking`) does not wake the flusher: it
    /// writes the round itself if nobody else is.
    pub(crate) fn append(
        &self,
        ops: &[WriteOp<'_>],
        batch: bool,
        blocking: bool,
    ) -> Result<Ticket> {
        let mut total = 0usize;
        for op in ops {
            record::check_lengths(op.key().len(), op.value().len())?;
            total = total.saturating_add(op.encoded_len());
        }
        if batch {
            total = total.saturating_add(record::encoded_len(0, 4));
        }
        if total > MAX_APPEND_BYTES {
            return Err(Error::BatchTooLarge {
                len: total as u64,
                max: MAX_APPEND_BYTES,
            });
        }
        let mut st = self.writer.state.lock();
        st.check_writable()?;
        self.roll_if_full(&mut st, total)?;
        let now = self.now_ms();
        // A delete of one key says whether the key had a value: decided
        // here, against everything appended before it.
        let existed = match ops {
            [WriteOp::Delete(key)] => self
                .current_locked(&st, key, |rec| !rec.expired_at(now))?
                .unwrap_or(false),
            _ => false,
        };
        let appended = self.append_locked(&mut st, ops, batch, now);
        self.stats.count_ops(ops, total as u64);
        drop(st);
        if !(blocking && self.waits_for_sync()) {
            self.kick_after(appended);
        }
        Ok(Ticket {
            end: appended.end,
            existed,
            resumes: appended.resumes,
        })
    }

    /// [`super::Engine::warm_for_writes`]: the record headers the index
    /// names for each key are read and dropped. Under `always` the flusher
    /// applies writes outside the lock, once durable: nothing to do.
    pub(crate) fn warm_for_writes<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) {
        if !self.waits_for_sync() {
            self.with_candidates(keys, |table, loc| {
                std::hint::black_box(table.key_at(loc));
            });
        }
    }

    /// [`super::Engine::warm_for_reads`]: the records the index names for
    /// each key are prefetched.
    pub(crate) fn warm_for_reads<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) {
        self.with_candidates(keys, FileTable::prefetch);
    }

    /// Looks `keys` up, [`WARM_GROUP`] at a time (the index buckets of a
    /// group prefetched before the first is looked up), and calls `f` with
    /// the file table and each location the index names for each key.
    fn with_candidates<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k [u8]>,
        mut f: impl FnMut(&FileTable, Loc),
    ) {
        let keydir = self.keydir.load();
        let table = self.files.load();
        let mut look_up = |hashes: &[u64]| {
            for &hash in hashes {
                for loc in keydir.candidates(hash).iter() {
                    f(&table, loc);
                }
            }
        };
        let mut group = [0u64; WARM_GROUP];
        let mut n = 0;
        for key in keys {
            let hash = hash_key(key);
            keydir.prefetch(hash);
            group[n] = hash;
            n += 1;
            if n == WARM_GROUP {
                look_up(&group);
                n = 0;
            }
        }
        look_up(&group[..n]);
    }

    /// Seals the active segment first if `len` more bytes would overfill
    /// it (a master's writer only; a replica's segments end where its
    /// master's do).
    pub(crate) fn roll_if_full(
        &self,
        st: &mut MutexGuard<'_, WriterState>,
        len: usize,
    ) -> Result<()> {
        let limit = self.options.segment_max_bytes + FILE_HEADER_LEN;
        let full = |st: &WriterState| {
            st.auto_roll && st.len > FILE_HEADER_LEN && st.len + len as u64 > limit
        };
        if full(st) {
            self.roll_locked(st, full)?;
        }
        Ok(())
    }

    /// Encodes `ops` into the buffer (as one batch when `batch`) at `now`,
    /// and queues them for the keydir (or applies them at once when no
    /// fsync is waited for). The caller holds the lock, has checked the
    /// lengths and made room; it calls [`Inner::kick_after`] once it has
    /// let go of the lock.
    pub(crate) fn append_locked(
        &self,
        st: &mut WriterState,
        ops: &[WriteOp<'_>],
        batch: bool,
        now: u64,
    ) -> Appended {
        let was_empty = st.buf.is_empty();
        let (epoch, file) = (st.epoch, st.active.id);
        let mut pos = st.len;
        for op in ops {
            let op = op.as_of(now);
            let start = st.buf.len();
            record::encode_record(
                st.buf.encoded(),
                &Record {
                    expires_at: op.expires_at(),
                    ..Record::new(op.kind(), batch, epoch, op.key(), op.value())
                },
            );
            let len = (st.buf.len() - start) as u32;
            let loc = Loc {
                file,
                pos: pos as u32,
                len,
            };
            pos += u64::from(len);
            let applied = PendingOp {
                hash: hash_key(op.key()),
                loc,
                kind: op.kind(),
                expires_at: op.expires_at(),
            };
            // Queued for the keydir until durable, or applied now: the
            // lock is held either way, so no reader sees the difference.
            if self.waits_for_sync() {
                st.pending.push(applied);
            } else {
                self.apply_buffered(st, applied, Some(op.key()));
            }
        }
        if batch {
            let start = st.buf.len();
            record::encode_commit(st.buf.encoded(), epoch, ops.len() as u32);
            pos += (st.buf.len() - start) as u64;
        }
        st.len = pos;
        Appended {
            end: st.end(),
            resumes: st.resumes,
            buffered: st.buf.len(),
            kick: self.waits_for_sync()
                || (was_empty && st.flusher_asleep)
                || st.buf.len() >= KICK_AT,
        }
    }

    /// Wakes the flusher for what [`Inner::append_locked`] appended.
    /// Under `always`, a thread that takes its rounds at park leaves the
    /// flusher asleep ([`park`]) until a round passes
    /// [`park::ROUND_AT_PARK_MAX`].
    pub(crate) fn kick_after(&self, appended: Appended) {
        if !appended.kick {
            return;
        }
        if self.waits_for_sync() {
            if appended.buffered <= park::ROUND_AT_PARK_MAX {
                if park::defer(self) {
                    return;
                }
            } else {
                // The flusher takes the bytes deferred before these too.
                park::take(self);
            }
        }
        self.writer.kick();
    }

    /// Writes and fsyncs what is buffered, on this thread, as it parks
    /// ([`park::before_park`]); the flusher takes it instead when a round
    /// is under way, and what is appended meanwhile.
    pub(crate) fn round_at_park(&self) {
        let mut st = self.writer.state.lock();
        if st.buf.is_empty() {
            // Taken by another round.
            return;
        }
        if !st.busy && !st.closed && st.poisoned.is_none() {
            let synced = st.synced;
            self.flush_round(&mut st, true);
            if st.synced > synced {
                self.stats.count_fsync_at_park();
            }
            if st.buf.is_empty() {
                return;
            }
        }
        drop(st);
        self.writer.kick();
    }

    /// Applies one record to the keydir while the writer lock is held; the
    /// record's bytes may still be in the buffer. Returns the replaced
    /// location.
    fn apply_buffered(&self, st: &WriterState, op: PendingOp, key: Option<&[u8]>) -> Option<Loc> {
        let table = self.files.load();
        let read_back;
        let new_key = match key {
            Some(k) => k,
            None => {
                read_back = self.with_key_at(st, &table, op.loc, |k, _| k.to_vec())?;
                &read_back[..]
            }
        };
        let keydir = self.keydir.load();
        let mut replaced_expiry = None;
        let same = |other: Loc| {
            let at = self.with_key_at(st, &table, other, |k, at| (k == new_key).then_some(at));
            match at {
                Some(Some(at)) => {
                    replaced_expiry = at;
                    true
                }
                _ => false,
            }
        };
        let old = match op.kind {
            Kind::Put => keydir.insert(op.hash, op.loc, same),
            _ => keydir.remove(op.hash, same),
        };
        update_expiries(
            &keydir.expiries,
            op.hash,
            old.and(replaced_expiry),
            op.expires_at,
        );
        let added = if op.kind == Kind::Put {
            i64::from(op.loc.len)
        } else {
            0
        };
        self.stats
            .add_live(added - old.map_or(0, |o| i64::from(o.len)));
        old
    }

    /// Calls `f` with the key and expiry of the record at `loc`, read in
    /// place from `table` or, for the active segment, from the writer's
    /// buffers; `None` if it cannot be read there.
    fn with_key_at<R>(
        &self,
        st: &WriterState,
        table: &FileTable,
        loc: Loc,
        f: impl FnOnce(&[u8], Option<u64>) -> R,
    ) -> Option<R> {
        if let Some(k) = table.key_at(loc) {
            return Some(f(k.key, k.expires_at));
        }
        // A compaction registered its merged files after `table` was
        // loaded and moved this entry into one (see `apply_entry`).
        if table.get(loc.file).is_none() {
            if let Some(k) = self.files.load().key_at(loc) {
                return Some(f(k.key, k.expires_at));
            }
        }
        if loc.file != st.active.id {
            return None;
        }
        let longest = (record::HEADER_LEN + record::EXPIRY_LEN).min(loc.len as usize);
        let header = st.buffered(u64::from(loc.pos), longest)?;
        let header = record::decode_header(header).ok()??;
        let key = st.buffered(u64::from(loc.pos) + header.key_at() as u64, header.key_len)?;
        Some(f(key, header.expires_at))
    }

    /// Applies records whose bytes are in the file (readable) to the keydir.
    fn apply_written(&self, ops: &[PendingOp]) {
        let table = self.files.load();
        if let Some(f) = &self.options.faults {
            f.pass_apply_gate();
        }
        let keydir = self.keydir.load();
        let mut delta = 0i64;
        for op in ops {
            let entry = HintEntry {
                kind: op.kind,
                pos: op.loc.pos,
                len: op.loc.len,
                hash: op.hash,
                expires_at: op.expires_at,
            };
            delta += apply_entry(&keydir, &table, Some(&self.files), op.loc.file, entry);
        }
        self.stats.add_live(delta);
    }

    /// Blocks until the log is durable up to `end`, for bytes appended
    /// after `resumes` live recoveries.
    ///
    /// A caller that finds nobody writing does the round itself (write,
    /// fsync, keydir, publish) instead of waking the flusher thread and
    /// being woken by it: a lone synced writer then pays for no thread
    /// hand-off. Callers that find a round under way park until a round
    /// makes their bytes durable; whoever ends a round with bytes still
    /// buffered hands them on (the flusher thread loops, a writer that led
    /// kicks it), so the next round starts without waiting for a parked
    /// writer.
    pub(crate) fn wait_durable(&self, end: u64, resumes: u64) -> Result<()> {
        let w = &self.writer;
        loop {
            // A woken writer whose bytes are durable answers from the
            // published ends, without the lock the next round needs.
            let published = *w.published.lock();
            if published.resumes == resumes && published.durable >= end {
                return Ok(());
            }
            {
                let mut st = w.state.lock();
                if st.resumes != resumes {
                    return Err(st.rolled_back());
                }
                if st.durable_end() >= end {
                    return Ok(());
                }
                if st.poisoned.is_some() || (st.closed && !st.busy && st.buf.is_empty()) {
                    st.check_writable()?;
                    return Err(Error::Closed);
                }
                if !st.busy && !st.closed {
                    self.flush_round(&mut st, true);
                    // What was appended during the round is someone
                    // else's, parked: the flusher thread takes it.
                    if !st.buf.is_empty() {
                        w.kick();
                    }
                    continue;
                }
            }
            // Registered before the check, so that a publish between the
            // two wakes this thread.
            let me = std::thread::current();
            w.waiters.lock().push(Parked {
                end,
                thread: me.clone(),
            });
            let published = *w.published.lock();
            if published.durable < end && published.resumes == resumes && !published.poisoned {
                // Bounded, so that the checks above run again even if no
                // publish ever comes.
                std::thread::park_timeout(Duration::from_millis(100));
            }
            w.waiters.lock().retain(|p| p.thread.id() != me.id());
            w.wake(WAKE_FANOUT);
        }
    }

    /// Waits, without blocking a thread, until the log is durable up to
    /// `end`.
    pub(crate) async fn wait_durable_async(&self, end: u64, resumes: u64) -> Result<()> {
        let w = &self.writer;
        let settled = |p: &Progress| p.durable >= end || p.poisoned || p.resumes != resumes;
        let mut progress = *w.published.lock();
        if !settled(&progress) {
            let (woken, mut wake) = oneshot::channel();
            w.tasks.lock().push(ParkedTask { end, woken });
            // Registered before this second look, so a publish in between
            // finds the task in the list.
            progress = *w.published.lock();
            if !settled(&progress) {
                // Sent by the publish that makes `end` durable, poisons
                // the log or follows a live recovery; dropped unsent only
                // when the writer goes away (the checks below then say
                // the engine is closed). A round deferred to this
                // thread's park goes to the flusher if the thread stays
                // busy.
                let _ = if park::deferred(self) {
                    match tokio::time::timeout(park::PARK_WAIT_LIMIT, &mut wake).await {
                        Ok(woken) => woken,
                        Err(_) => {
                            park::hand_over(self);
                            wake.await
                        }
                    }
                } else {
                    wake.await
                };
                progress = *w.published.lock();
            }
        }
        // Durable in the same run of the log it was appended to: a live
        // recovery after this publish cuts only what was not durable. No
        // writer lock on this path.
        if progress.resumes == resumes && progress.durable >= end {
            return Ok(());
        }
        let st = self.writer.state.lock();
        if progress.resumes != resumes || st.resumes != resumes {
            return Err(st.rolled_back());
        }
        if progress.durable >= end {
            return Ok(());
        }
        st.check_writable()?;
        Err(Error::Closed)
    }

    /// Copies the record at `loc` if its bytes are still buffered or being
    /// written; waits for an in-progress write when needed.
    pub(crate) fn read_buffered(&self, loc: Loc) -> Option<Vec<u8>> {
        let w = &self.writer;
        let mut st = w.state.lock();
        loop {
            if st.active.id != loc.file {
                return None;
            }
            if let Some(bytes) = st.buffered(u64::from(loc.pos), loc.len as usize) {
                return Some(bytes.to_vec());
            }
            if st
                .active
                .slice(u64::from(loc.pos), loc.len as usize)
                .is_some()
                || !st.busy
            {
                return None;
            }
            w.progress.wait(&mut st);
        }
    }

    /// Writes and fsyncs everything appended so far and waits for it.
    pub(crate) fn flush(&self) -> Result<()> {
        let (end, resumes) = {
            let mut st = self.writer.state.lock();
            st.check_writable()?;
            if st.synced == st.len {
                return Ok(());
            }
            st.flush_requested = true;
            (st.end(), st.resumes)
        };
        self.writer.kick();
        self.wait_durable(end, resumes)
    }

    /// Refuses every write from now on. A failed write or fsync
    /// (`resumable`) is cleared by a live recovery once the disk works
    /// again; anything else stays until a restart.
    fn poison(&self, st: &mut WriterState, reason: String, resumable: bool) {
        if resumable {
            tracing::error!(%reason, "storage engine poisoned: refusing writes until a write and an fsync succeed again");
        } else {
            tracing::error!(%reason, "storage engine poisoned: refusing further writes");
        }
        let dropped = [&*st.inflight, &st.buf]
            .into_iter()
            .flat_map(LogBuf::pieces)
            .map(super::tail::count_records)
            .fold(0u32, u32::saturating_add);
        st.dropped_records = st.dropped_records.saturating_add(dropped);
        st.poisoned = Some(reason);
        st.resumable = resumable;
        st.last_probe = Instant::now();
        st.buf.clear();
        st.pending.clear();
        self.stats.set_poisoned();
        // A flusher asleep for a whole `interval` (it found another thread
        // doing the round that failed) would probe only after it: woken,
        // it sleeps until the next probe instead.
        self.writer.kick();
    }

    /// Waits until no one does I/O on the active file.
    pub(crate) fn wait_idle(&self, st: &mut MutexGuard<'_, WriterState>) {
        while st.busy {
            self.writer.progress.wait(st);
        }
    }

    /// Waits until no one does I/O on the active file, then writes and
    /// fsyncs the whole buffer itself (the writer lock stays held).
    pub(crate) fn drain_locked(&self, st: &mut MutexGuard<'_, WriterState>) -> Result<()> {
        if st.busy {
            if let Some(f) = &self.options.faults {
                f.count_drain_wait();
            }
        }
        self.wait_idle(st);
        st.check_writable()?;
        let faults = self.options.faults.as_deref();
        let pos = st.written;
        let result = fault::write_pieces_at(faults, &st.file, &st.buf.pieces(), pos, false)
            .and_then(|_| fault::sync_data(faults, &st.file));
        if let Err(e) = result {
            let path = st.active.path.display().to_string();
            self.poison(st, format!("write to {path} failed: {e}"), true);
            self.writer.publish(st);
            return Err(Error::io("write", &st.active.path, e));
        }
        // Emptied in place: the buffer keeps its allocation for the next
        // appends (see RAW_BUFFER_MAX).
        let len = st.buf.len();
        st.buf.clear();
        st.written = pos + len as u64;
        st.reserved = st.reserved.max(st.written);
        st.buf_pos = st.written;
        st.synced = st.written;
        st.last_sync = Instant::now();
        st.active.set_readable_len(st.written);
        self.stats.count_fsync();
        let pending = mem::take(&mut st.pending);
        self.apply_written(&pending);
        self.writer.publish(st);
        Ok(())
    }

    /// Cuts the active file back to the end of the log, dropping the zeros
    /// written ahead of it, durably. The caller holds the writer lock and
    /// has drained the buffer (`written == len`, nobody busy). Readers are
    /// not affected: none reads past the end of the log.
    pub(crate) fn cut_reserve(&self, st: &mut WriterState) -> Result<()> {
        if st.busy || st.reserved <= st.written {
            return Ok(());
        }
        st.file
            .set_len(st.written)
            .and_then(|_| st.file.sync_all())
            .map_err(|e| Error::io("cut the reserve of", &st.active.path, e))?;
        st.reserved = st.written;
        Ok(())
    }

    /// Seals the active segment and starts a new one at the end of the log,
    /// if `needed` still holds once the buffer is drained.
    ///
    /// The drain may wait for the flusher, and waiting releases the writer
    /// lock: another roll (a writer's, a compaction's seal) can run
    /// meanwhile. So `needed` is asked again after the drain, and an empty
    /// active segment is never sealed: the next segment is named by the log
    /// end, which for an empty segment is its own name. Every roll therefore
    /// names a segment above every existing one. Returns whether it rolled.
    pub(crate) fn roll_locked(
        &self,
        st: &mut MutexGuard<'_, WriterState>,
        needed: impl Fn(&WriterState) -> bool,
    ) -> Result<bool> {
        self.drain_locked(st)?;
        if st.len == FILE_HEADER_LEN || !needed(st) {
            return Ok(false);
        }
        // The sealed segment ends at its last record before the next one
        // exists: a segment followed by another is read to its file's end.
        if let Err(e) = self.cut_reserve(st) {
            self.poison(st, format!("could not seal the active segment: {e}"), true);
            self.writer.publish(st);
            return Err(e);
        }
        let base = st.end();
        let kind = FileKind::Segment { base };
        let created = segment::create(&self.dir, kind).and_then(|file| {
            let path = self.dir.join(kind.file_name());
            let read = file.try_clone().map_err(|e| Error::io("dup", &path, e))?;
            let capacity = segment::active_capacity(self.options.segment_max_bytes);
            let data = DataFile::new(self.next_id(), kind, path, read, FILE_HEADER_LEN, capacity)?;
            Ok((file, Arc::new(data)))
        });
        let (file, data) = match created {
            Ok(made) => made,
            Err(e) => {
                self.poison(
                    st,
                    format!("could not start segment {}: {e}", kind.file_name()),
                    true,
                );
                self.writer.publish(st);
                return Err(e);
            }
        };
        self.files.rcu(|t| {
            let mut t = (**t).clone();
            t.add_segment(base, data.clone());
            t
        });
        let sealed = st.active.clone();
        // Entries of a batch whose commit is not in the segment are not
        // gathered: such a segment is scanned (and refused) as before.
        let gathered = st.gathered.take().filter(|_| st.open_batch.is_empty());
        st.reset_active(data, file, base);
        self.writer.publish(st);
        self.sealed(sealed, gathered);
        Ok(true)
    }

    /// The flusher thread's loop: runs until the engine closes.
    pub(crate) fn run_flusher(&self) {
        let w = &self.writer;
        let interval = match self.options.durability {
            Durability::Interval(d) => Some(d),
            _ => None,
        };
        let mut st = w.state.lock();
        loop {
            let sync_due =
                interval.is_some_and(|d| st.synced < st.written && st.last_sync.elapsed() >= d);
            let has_work = !st.buf.is_empty() || st.flush_requested || sync_due;
            if st.poisoned.is_some()
                && st.resumable
                && !st.closed
                && !st.busy
                && st.last_probe.elapsed() >= PROBE_EVERY
            {
                st.last_probe = Instant::now();
                if let Err(e) = MutexGuard::unlocked(&mut st, || self.try_resume()) {
                    tracing::debug!(error = %e, "live recovery probe failed; still poisoned");
                }
                continue;
            }
            if st.busy || !has_work || st.poisoned.is_some() {
                if st.closed && !st.busy {
                    return;
                }
                let mut wait = interval.unwrap_or(std::time::Duration::from_secs(1));
                if st.poisoned.is_some() {
                    wait = wait.min(PROBE_EVERY);
                }
                st.flusher_asleep = true;
                if let Some(f) = &self.options.faults {
                    f.count_flusher_sleep();
                }
                w.work.wait_for(&mut st, wait);
                st.flusher_asleep = false;
                if let Some(f) = &self.options.faults {
                    f.count_flusher_wake();
                }
                continue;
            }
            let sync = self.waits_for_sync() || st.flush_requested || sync_due || st.closed;
            self.flush_round(&mut st, sync);
            if !self.waits_for_sync() && !st.closed && !st.flush_requested {
                // Let the writes that arrive meanwhile gather, unwoken.
                w.work.wait_for(&mut st, FLUSH_TICK);
            }
        }
    }

    /// One round of the writer's I/O: takes the whole buffer, writes it
    /// (and fsyncs it when `sync`), applies its records to the keydir and
    /// publishes the new ends. The caller holds the lock and has checked
    /// that nobody else is busy; the lock is let go during the I/O. Run by
    /// the flusher thread, or by a blocking writer that found nobody
    /// writing ([`Inner::wait_durable`]).
    fn flush_round(&self, st: &mut MutexGuard<'_, WriterState>, sync: bool) {
        let w = &self.writer;
        if sync {
            st.flush_requested = false;
        }
        let spare = LogBuf::with_spare(mem::take(&mut st.spare));
        let bytes = Arc::new(mem::replace(&mut st.buf, spare));
        st.inflight = bytes.clone();
        st.buf_pos = st.len;
        let pos = st.written;
        let pending = Arc::new(mem::take(&mut st.pending));
        st.flushing = pending.clone();
        let file = st.file.clone();
        let path = st.active.path.clone();
        let end = pos + bytes.len() as u64;
        let capacity = segment::active_capacity(self.options.segment_max_bytes);
        let reserve = reserve_extension(end - pos, end, st.reserved, capacity).filter(|_| sync);
        st.busy = true;
        let faults = self.options.faults.as_deref();
        let result = MutexGuard::unlocked(st, || {
            fault::write_pieces_at(faults, &file, &bytes.pieces(), pos, sync)?;
            // Zeros the fsync below makes durable with the records. A fill
            // that fails part-way (a full disk) leaves zeros and then
            // nothing up to `to`: the file is still at most `to` long.
            if let Some((from, to)) = reserve {
                if let Err(e) = fault::zero_fill(&file, from, to) {
                    tracing::debug!(file = %path.display(), error = %e, "could not write the segment's reserve; appending without it");
                }
            }
            if sync {
                fault::sync_data(faults, &file)?;
            }
            Ok::<_, std::io::Error>(())
        });
        match result {
            Err(e) => {
                self.poison(st, format!("write to {} failed: {e}", path.display()), true);
                st.inflight = Arc::default();
                st.flushing = Arc::default();
            }
            Ok(()) => {
                st.written = end;
                st.reserved = st.reserved.max(end).max(reserve.map_or(0, |(_, to)| to));
                st.active.set_readable_len(end);
                st.inflight = Arc::default();
                if !pending.is_empty() {
                    MutexGuard::unlocked(st, || self.apply_written(&pending));
                }
                st.flushing = Arc::default();
                // Durability is published only after the keydir holds
                // the records: a writer that sees its ticket durable
                // (even without waiting) must read its own write.
                if sync {
                    st.synced = end;
                    st.last_sync = Instant::now();
                    self.stats.count_fsync();
                }
            }
        }
        if let Ok(buf) = Arc::try_unwrap(bytes) {
            st.spare = buf.into_spare();
        }
        st.busy = false;
        w.publish_unwoken(st);
        w.wake(WAKE_FANOUT);
    }

    /// Appends raw log bytes shipped from a master, which must continue the
    /// local log exactly: `segment_base` names the segment they belong to.
    /// Only whole records are taken. Does not wait for durability: the
    /// flusher group-commits these bytes with whatever else is appended
    /// before its next fsync, like writes on a master.
    pub(crate) fn append_raw(&self, segment_base: u64, shipped: Shipped<'_>) -> Result<LogAppend> {
        let w = &self.writer;
        let bytes = shipped.bytes();
        let mut st = w.state.lock();
        if st.busy && st.buf.len() >= RAW_BUFFER_MAX {
            if let Some(f) = &self.options.faults {
                f.count_full_buffer_wait();
            }
            // Every round ends with a publish, which wakes this wait.
            while st.busy && st.buf.len() >= RAW_BUFFER_MAX {
                w.progress.wait(&mut st);
            }
        }
        st.check_writable()?;
        if segment_base != st.base {
            if segment_base != st.end() {
                return Err(Error::BadLogBytes {
                    offset: segment_base,
                    reason: format!(
                        "segment {segment_base} does not start at the local log end {}",
                        st.end()
                    ),
                });
            }
            // Only this call appends on a replica, so the log end cannot
            // move during the drain; the check is for the roll's contract.
            self.roll_locked(&mut st, |st| st.base != segment_base)?;
            if st.base != segment_base {
                return Err(Error::BadLogBytes {
                    offset: segment_base,
                    reason: format!("segment {segment_base} could not be started"),
                });
            }
        }
        let start_end = st.end();
        let mut taken = 0usize;
        let mut ops = Vec::new();
        let mut new_epochs = st.epochs.clone();
        let limit = bytes.len().min(MAX_APPEND_BYTES);
        while taken < limit {
            let (rec, len) = match record::decode(&bytes[taken..limit]) {
                Ok(Some(found)) => found,
                Ok(None) => break,
                Err(e) => {
                    return Err(Error::BadLogBytes {
                        offset: start_end + taken as u64,
                        reason: e.to_string(),
                    })
                }
            };
            new_epochs.push(rec.epoch, start_end + taken as u64);
            let loc = Loc {
                file: st.active.id,
                pos: (st.len + taken as u64) as u32,
                len: len as u32,
            };
            ops.push((
                rec.kind,
                rec.in_batch,
                rec.commit_count(),
                PendingOp {
                    hash: hash_key(rec.key),
                    loc,
                    kind: rec.kind,
                    expires_at: rec.expires_at,
                },
            ));
            taken += len;
        }
        if taken == 0 {
            return Ok(LogAppend {
                taken,
                end: start_end,
                resumes: st.resumes,
            });
        }
        // The log past a cut this node made now comes from its master.
        let refetched = new_epochs.mark_refetched(start_end + taken as u64);
        if refetched > 0 {
            tracing::info!(
                cuts = refetched,
                end = start_end + taken as u64,
                "the log past a cut tail is fetched again from the master"
            );
        }
        // The history names a new epoch before any of its records is
        // written, so it is never behind the log.
        if new_epochs != st.epochs {
            new_epochs.store(&self.dir)?;
            st.set_epochs(new_epochs);
        }
        let was_empty = st.buf.is_empty();
        match shipped {
            Shipped::Held(bytes) if taken >= HOLD_AT_LEAST => {
                st.buf.push_shipped(bytes.slice(..taken));
            }
            _ => st.buf.extend_from_slice(&bytes[..taken]),
        }
        let from = st.len;
        st.len += taken as u64;
        let mut ready = Vec::new();
        for (kind, in_batch, count, op) in ops {
            match kind {
                Kind::Commit => {
                    if count != Some(st.open_batch.len() as u32) {
                        let reason = format!(
                            "commit for {count:?} records closes a batch of {}",
                            st.open_batch.len()
                        );
                        self.poison(&mut st, reason.clone(), false);
                        w.publish(&st);
                        return Err(Error::BadLogBytes {
                            offset: start_end + u64::from(op.loc.pos),
                            reason,
                        });
                    }
                    ready.append(&mut st.open_batch);
                }
                _ if in_batch => st.open_batch.push(op),
                _ => ready.push(op),
            }
        }
        // Every record here was verified above: its entry is the one a
        // scan of the file would find, in the same order (batch members
        // at their commit).
        let gathered = st.gathered.take();
        st.gathered = Gathered::extend(
            gathered,
            from,
            st.len,
            ready.iter().map(|op| op.hint_entry()),
        );
        if self.waits_for_sync() {
            st.pending.extend_from_slice(&ready);
        } else {
            for op in ready {
                self.apply_buffered(&st, op, None);
            }
        }
        let (end, resumes) = (st.end(), st.resumes);
        drop(st);
        if self.waits_for_sync() || was_empty {
            w.kick();
        }
        Ok(LogAppend {
            taken,
            end,
            resumes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: u64 = 1 << 30;

    #[test]
    fn the_reserve_is_extended_only_when_it_runs_short() {
        let end = FILE_HEADER_LEN + 6_650;
        // A new segment: a MiB of zeros past the round's records.
        assert_eq!(
            reserve_extension(6_650, end, end, CAP),
            Some((end, (end + RESERVE_AHEAD).div_ceil(4096) * 4096))
        );
        // Plenty left: nothing to write.
        assert_eq!(
            reserve_extension(100, end, end + RESERVE_AHEAD / 2, CAP),
            None
        );
        // Less than a quarter left: from where the zeros end.
        let reserved = end + RESERVE_AHEAD / 8;
        let (from, to) = reserve_extension(100, end, reserved, CAP).unwrap();
        assert_eq!(from, reserved);
        assert!(to >= end + RESERVE_AHEAD && to % 4096 == 0, "{to}");
        // A round that ran past the zeros starts them at its end.
        assert_eq!(reserve_extension(100, end, end - 50, CAP).unwrap().0, end);
        // Never past the mapping's capacity, nothing when already there.
        assert_eq!(
            reserve_extension(100, end, end, end + 10),
            Some((end, end + 10))
        );
        assert_eq!(reserve_extension(100, end, end, end), None);
        // No records, or a big round: no zeros.
        assert_eq!(reserve_extension(0, end, end, CAP), None);
        assert_eq!(reserve_extension(RESERVE_AHEAD / 4, end, end, CAP), None);
    }
}
