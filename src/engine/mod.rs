//! The storage engine: an append-only log of checksummed records cut into
//! segment files, an in-memory hash index (the keydir), hint files for fast
//! restart, group commit, and compaction of the sealed prefix. No
//! networking here.
//!
//! A write goes `Engine::put` → [`writer`] (buffer, one pwrite + fdatasync
//! per group) → keydir. A read goes keydir → [`files`] snapshot → one copy
//! out of a memory map, with the record's checksum and key verified.
//!
//! Locks are taken in one order only: writer state, then a keydir shard;
//! the file table is a lock-free snapshot ([`arc_swap`]).

pub mod clock;
pub mod compaction;
mod conditional;
pub mod dir_id;
pub mod envelope;
pub mod epochs;
pub mod error;
mod expiries;
pub mod fault;
mod files;
pub mod hint;
mod idhash;
mod keydir;
mod log;
mod logbuf;
mod maintenance;
pub mod manifest;
pub mod options;
pub mod park;
mod prefetch;
pub mod record;
pub mod recovery;
mod resume;
pub mod segment;
pub mod snapshot;
mod stats;
mod sweep;
mod tail;
pub mod verify;
mod writer;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

pub use clock::{Clock, ManualClock};
pub use compaction::CompactionReport;
pub use conditional::{Conditional, Decided, ExpireIf, KeyExpiry, SetExpiry, SetWhen};
pub use dir_id::DirId;
pub use epochs::{CutCause, EpochStart, TailCut};
pub use error::{Error, Result};
pub use fault::{CompactionStep, Faults};
pub use log::LogChunk;
pub use options::{CompactionPolicy, Durability, ExpiryPolicy, Options};
pub use record::{MAX_KEY_LEN, MAX_VALUE_LEN};
pub use snapshot::{Snapshot, SnapshotFile};
pub use stats::Stats;
pub use sweep::SweepReport;
pub use writer::{LogAppend, Progress, WriteOp, FLUSH_TICK, RAW_BUFFER_MAX};

use error::IoContext;
use files::FileTable;
use keydir::{hash_key, KeyDir, Loc};
use maintenance::Maintenance;
use record::Record;
use segment::{DataFile, FileKind, FILE_HEADER_LEN};
use stats::Counters;
use sweep::Sweeper;
use writer::Writer;

/// Keys whose index buckets [`Engine::warm_for_reads`] and
/// [`Engine::warm_for_writes`] ask the CPU for at once, before looking the
/// first up: about as many loads as a CPU keeps in flight.
pub const WARM_GROUP: usize = 16;

/// Name of the lock file that makes a data directory single-owner.
pub const LOCK_FILE: &str = "LOCK";

/// What a write did: where it ends in the log (replication waits for
/// replicas to acknowledge that offset) and, for a single delete, whether
/// the key had a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub end: u64,
    pub existed: bool,
}

/// Why an engine refuses writes ([`Engine::poison`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    pub reason: String,
    /// True for a failed write or fsync, which a live recovery clears once
    /// the disk takes a write and an fsync again; false for anything else,
    /// which only a restart (a fresh open of the log) clears.
    pub recovers: bool,
}

/// A handle on an open data directory. Cheap to clone; the directory is
/// closed when the last handle is dropped or [`Engine::close`] is called.
#[derive(Clone)]
pub struct Engine {
    handle: Arc<Handle>,
}

struct Handle {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) options: Options,
    _lock: File,
    /// This directory's identity (`DIR_ID`), fixed while it is open.
    dir_id: DirId,
    pub(crate) keydir: ArcSwap<KeyDir>,
    pub(crate) files: ArcSwap<FileTable>,
    pub(crate) writer: Writer,
    ids: AtomicU32,
    pub(crate) stats: Counters,
    /// Held by a compaction or a truncation, which both replace files.
    pub(crate) compaction: Mutex<()>,
    /// Compaction leaves the log at and above this offset alone.
    pub(crate) compaction_floor: Mutex<Option<u64>>,
    pub(crate) maintenance: Maintenance,
    pub(crate) sweeper: Sweeper,
    /// This engine, for a round deferred to a thread's park ([`park`]).
    me: Weak<Inner>,
}

/// Takes the directory's lock file, or says who has it.
pub fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .at("open", &path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(Error::Locked {
            path: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
    }
}

impl Engine {
    /// Opens (creating if needed) the data directory `dir`: takes its lock,
    /// recovers the log and starts the flusher and maintenance threads.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Engine> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).at("create data directory", &dir)?;
        let lock = lock_dir(&dir)?;
        // Before recovery, which starts a segment: whether the directory
        // held data decides how a missing id is made.
        let dir_id = DirId::open(&dir)?;
        let ids = AtomicU32::new(1);
        let rec = recovery::recover(&dir, &options, &ids)?;
        let active = rec
            .table
            .active()
            .expect("recovery leaves a segment")
            .clone();
        let FileKind::Segment { base } = active.kind else {
            unreachable!("the active file is a segment")
        };
        let hinted_len = rec.active_from_hint.then(|| active.readable_len());
        let gathered = hint::Gathered::new(active.readable_len(), rec.active_entries);
        let writer = Writer::new(active, rec.active_file, base, rec.epochs);
        {
            let mut st = writer.state.lock();
            st.hinted_len = hinted_len;
            st.gathered = gathered;
        }
        let inner = Arc::new_cyclic(|me| Inner {
            dir,
            options,
            _lock: lock,
            dir_id,
            keydir: ArcSwap::from_pointee(rec.keydir),
            files: ArcSwap::from_pointee(rec.table),
            writer,
            ids,
            stats: Counters::default(),
            compaction: Mutex::new(()),
            compaction_floor: Mutex::new(None),
            maintenance: Maintenance::default(),
            sweeper: Sweeper::default(),
            me: me.clone(),
        });
        inner.sweeper.set_active(inner.options.expiry.active);
        inner.stats.set_live(rec.live_bytes);
        inner.stats.set_active_from_hint(rec.active_from_hint);
        let spawn = |name: &'static str, f: fn(&Inner)| {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || f(&inner))
                .map_err(|source| Error::Thread { name, source })
        };
        let threads = vec![
            spawn("kvstore-flusher", Inner::run_flusher)?,
            spawn("kvstore-maintenance", Inner::run_maintenance)?,
            spawn("kvstore-expiry", Inner::run_sweeper)?,
        ];
        Ok(Engine {
            handle: Arc::new(Handle {
                inner,
                threads: Mutex::new(threads),
            }),
        })
    }

    fn inner(&self) -> &Inner {
        &self.handle.inner
    }

    /// The data directory's identity (docs/FORMAT.md, `DIR_ID`).
    pub fn dir_id(&self) -> DirId {
        self.inner().dir_id
    }

    /// The value of `key`, if it has one. A key whose expiry has passed
    /// has none, whether or not the sweep has deleted it yet.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner().get_with(key, |value| value.to_vec())
    }

    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        Ok(self.inner().get_with(key, |_| ())?.is_some())
    }

    /// Whether `key` has a value, and until when.
    pub fn expiry(&self, key: &[u8]) -> Result<KeyExpiry> {
        let found = self.inner().lookup(key, |rec| rec.expires_at)?;
        Ok(match found {
            None => KeyExpiry::Absent,
            Some(None) => KeyExpiry::Never,
            Some(Some(at)) => KeyExpiry::At(at),
        })
    }

    /// Sets `key` to `value` without expiry; returns once durable under
    /// the policy.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.write_blocking(&[WriteOp::Put(key, value)], false)
            .map(|_| ())
    }

    /// Sets `key` to `value` until `expires_at` (ms since the Unix epoch,
    /// on this engine's clock); an expiry already passed deletes the key.
    pub fn put_expiring(&self, key: &[u8], value: &[u8], expires_at: u64) -> Result<()> {
        self.write_blocking(&[WriteOp::PutExpiring(key, value, expires_at)], false)
            .map(|_| ())
    }

    /// A write decided from the key's current state inside the single
    /// writer (`SET NX`, `EXPIRE GT`, `PERSIST`...); returns once what it
    /// decided on is durable under the policy.
    pub fn decide(&self, op: &Conditional<'_>) -> Result<Decided> {
        let decided = self.inner().decide(op)?;
        if self.inner().options.durability == Durability::Always {
            self.inner().wait_durable(decided.end, decided.resumes)?;
        }
        Ok(decided)
    }

    /// [`Engine::decide`] without blocking a thread.
    pub async fn decide_async(&self, op: &Conditional<'_>) -> Result<Decided> {
        let decided = self.inner().decide(op)?;
        if self.inner().options.durability == Durability::Always {
            self.inner()
                .wait_durable_async(decided.end, decided.resumes)
                .await?;
        }
        Ok(decided)
    }

    /// The time on this engine's clock, in ms since the Unix epoch: what
    /// a relative expiry (`EX 60`) is added to.
    pub fn now_ms(&self) -> u64 {
        self.inner().now_ms()
    }

    /// Whether this engine deletes keys whose expiry has passed (a master)
    /// or only hides them (a replica, whose deletes come from its master).
    /// A node that becomes master turns it on and takes over expiring
    /// every key that is due, however long ago.
    ///
    /// Turning it off returns only once no delete of the sweep can land
    /// any more: the sweep checks the flag under the writer lock, which
    /// this takes once after clearing it. A node about to follow a master
    /// relies on that (its log must stay its master's).
    pub fn set_expiring(&self, on: bool) {
        self.inner().sweeper.set_active(on);
        if !on {
            drop(self.inner().writer.state.lock());
        }
    }

    pub fn is_expiring(&self) -> bool {
        self.inner().sweeper.active.load(Ordering::Relaxed)
    }

    /// Runs one sweep round now, without a budget: deletes every key whose
    /// expiry has passed, and returns once the deletes are durable (and in
    /// the index). Does nothing on an engine that does not expire keys
    /// ([`Engine::set_expiring`]).
    pub fn expire_due(&self) -> Result<SweepReport> {
        if !self.is_expiring() {
            return Ok(SweepReport::default());
        }
        let report = self.inner().sweep(None)?;
        self.inner().flush()?;
        Ok(report)
    }

    /// Removes `key`; returns whether it had a value (see
    /// `docs/ARCHITECTURE.md` for how exact that is under concurrency).
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        self.write_blocking(&[WriteOp::Delete(key)], false)
    }

    /// Applies every operation or none, even across a crash.
    pub fn write_batch(&self, ops: &[WriteOp<'_>]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        self.write_blocking(ops, true).map(|_| ())
    }

    /// Readies the index for writes of `keys` that follow soon. Under
    /// `interval` and `never` a write applies to the keydir under the
    /// writer lock, and an overwrite misses memory twice there: the key's
    /// bucket in the index, and the old record's header in the mapped log,
    /// read to confirm the key. This touches both outside the lock, the
    /// buckets of up to [`WARM_GROUP`] keys at once. A caller with several
    /// writes at hand (a pipeline) warms them all before it runs the first;
    /// a lone write gains nothing and pays the look-up twice, so it is not
    /// warmed. Changes nothing (the writes look again).
    pub fn warm_for_writes<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) {
        self.inner().warm_for_writes(keys);
    }

    /// Readies the index and the log for reads of `keys` that follow soon.
    /// A read of a key not in the CPU's caches waits on memory twice, the
    /// second wait after the first: the key's bucket in the index, then
    /// the record in the mapped log. This asks the CPU for the buckets of
    /// up to [`WARM_GROUP`] keys at once, then looks each key up and asks
    /// for its record, without waiting for either: the misses of a
    /// pipeline of GETs overlap, where one read alone waits for each in
    /// turn. A lone read gains nothing and pays the look-up twice. Changes
    /// nothing (the reads look again).
    pub fn warm_for_reads<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) {
        self.inner().warm_for_reads(keys);
    }

    /// Appends `ops` (atomically when `atomic`) and waits, without blocking
    /// a thread, until they are durable under the policy.
    pub async fn write_async(&self, ops: &[WriteOp<'_>], atomic: bool) -> Result<Receipt> {
        let ticket = self.inner().append(ops, atomic, false)?;
        if self.inner().options.durability == Durability::Always {
            self.inner()
                .wait_durable_async(ticket.end, ticket.resumes)
                .await?;
        }
        Ok(Receipt {
            end: ticket.end,
            existed: ticket.existed,
        })
    }

    /// Watches how far the log has got (durable and written ends).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Progress> {
        self.inner().writer.subscribe()
    }

    /// Keeps compaction from merging the log at or above `floor` (the
    /// oldest offset a connected replica still needs); `None` lifts it.
    pub fn set_compaction_floor(&self, floor: Option<u64>) {
        *self.inner().compaction_floor.lock() = floor;
    }

    fn write_blocking(&self, ops: &[WriteOp<'_>], batch: bool) -> Result<bool> {
        let ticket = self.inner().append(ops, batch, true)?;
        if self.inner().options.durability == Durability::Always {
            self.inner().wait_durable(ticket.end, ticket.resumes)?;
        }
        Ok(ticket.existed)
    }

    /// Seals the active segment and merges the sealed prefix of the log
    /// into a new merged generation. Blocks; reads and writes go on.
    pub fn compact(&self) -> Result<CompactionReport> {
        compaction::compact(self.inner(), true)
    }

    /// If the engine is poisoned by a failed write or fsync, tries to
    /// resume now rather than at the next probe (the flusher probes every
    /// second on its own). Returns whether it resumed.
    pub fn try_resume(&self) -> Result<bool> {
        self.inner().try_resume()
    }

    /// Why the engine refuses writes, if it does (a failed write or
    /// fsync, or log bytes it could not apply), and whether that clears on
    /// its own.
    pub fn poison(&self) -> Option<Poison> {
        let st = self.inner().writer.state.lock();
        st.poisoned.as_ref().map(|reason| Poison {
            reason: reason.clone(),
            recovers: st.resumable,
        })
    }

    /// Writes and fsyncs everything buffered.
    pub fn flush(&self) -> Result<()> {
        self.inner().flush()
    }

    pub fn stats(&self) -> Stats {
        self.inner().stats()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner().dir
    }

    /// Flushes, stops the background threads and releases the directory.
    /// Other clones of this handle get [`Error::Closed`] afterwards.
    pub fn close(self) -> Result<()> {
        self.handle.shutdown()
    }
}

impl Handle {
    fn shutdown(&self) -> Result<()> {
        let flushed = self.inner.flush_for_close();
        {
            let mut st = self.inner.writer.state.lock();
            st.closed = true;
        }
        self.inner.writer.kick();
        self.inner.maintenance.stop();
        self.inner.sweeper.stop();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
        // Only a close that made everything durable leaves a hint for the
        // next open (the second call, from drop, finds the engine closed).
        if flushed.is_ok() {
            self.inner.write_active_hint();
        }
        match flushed {
            Err(Error::Closed) => Ok(()),
            other => other,
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(error = %e, "closing the engine on drop failed");
        }
    }
}

/// How many times a read retries when its location was moved by a
/// compaction between the index lookup and the file read.
pub(crate) const READ_RETRIES: usize = 16;

impl Inner {
    pub(crate) fn next_id(&self) -> u32 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// The engine clock's time, in ms since the Unix epoch.
    pub(crate) fn now_ms(&self) -> u64 {
        self.options.clock.now_ms()
    }

    /// Looks `key` up and calls `f` with its value.
    pub(crate) fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        self.lookup(key, |rec| f(rec.value))
    }

    /// Looks `key` up and calls `f` with its record, unless the key has no
    /// value or its expiry has passed (the clock is read only for a record
    /// that has one).
    pub(crate) fn lookup<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(Record<'_>) -> R,
    ) -> Result<Option<R>> {
        record::check_lengths(key.len(), 0)?;
        park::note_read();
        let hash = hash_key(key);
        let mut f = Some(f);
        for _ in 0..READ_RETRIES {
            let candidates = self.keydir.load().candidates(hash);
            let mut stale = false;
            for loc in candidates.iter() {
                let found = self.with_record(loc, |rec| {
                    (rec.key == key).then(|| {
                        let expired = rec.expires_at.is_some_and(|at| at <= self.now_ms());
                        (!expired).then(|| (f.take().expect("called once"))(rec))
                    })
                })?;
                match found {
                    None => stale = true,
                    Some(Some(Some(out))) => return Ok(Some(out)),
                    Some(Some(None)) => return Ok(None),
                    Some(None) => {}
                }
            }
            if !stale {
                return Ok(None);
            }
        }
        Err(Error::ReadRaced {
            attempts: READ_RETRIES,
        })
    }

    /// Calls `f` with the verified record at `loc`; `Ok(None)` when the
    /// location is stale (its file was replaced meanwhile).
    pub(crate) fn with_record<R>(
        &self,
        loc: Loc,
        f: impl FnOnce(Record<'_>) -> R,
    ) -> Result<Option<R>> {
        let table = self.files.load();
        let Some(file) = table.get(loc.file) else {
            return Ok(None);
        };
        if let Some(bytes) = file.slice(u64::from(loc.pos), loc.len as usize) {
            return decode_at(file, loc, bytes).map(|r| Some(f(r)));
        }
        let path = file.path.clone();
        drop(table);
        if let Some(bytes) = self.read_buffered(loc) {
            return decode_in(&path, loc, &bytes).map(|r| Some(f(r)));
        }
        let table = self.files.load();
        match table.get(loc.file) {
            Some(file) => match file.slice(u64::from(loc.pos), loc.len as usize) {
                Some(bytes) => decode_at(file, loc, bytes).map(|r| Some(f(r))),
                None => Ok(None),
            },
            None => Ok(None),
        }
    }

    /// Publishes a rebuilt keydir with the file table it names (a live
    /// recovery, a truncation, an installed snapshot). A reader loads the
    /// keydir, then the table, and takes a location whose file is missing
    /// as moved by a compaction and looks again, at most [`READ_RETRIES`]
    /// times: had the new table gone out first, a reader still on the old
    /// keydir could spend all its retries while this thread was preempted
    /// between the two stores. So the files the old keydir names stay
    /// registered until the new keydir is out, and only then are they
    /// dropped: a reader meets a missing file at most once.
    pub(crate) fn publish_index(&self, table: FileTable, keydir: KeyDir) {
        let old = self.files.load_full();
        let mut interim = table.clone();
        for file in old.all() {
            if interim.get(file.id).is_none() {
                interim.register(file.clone());
            }
        }
        self.files.store(Arc::new(interim));
        if let Some(f) = &self.options.faults {
            f.pass_index_gate();
        }
        self.keydir.store(Arc::new(keydir));
        self.files.store(Arc::new(table));
    }

    pub(crate) fn stats(&self) -> Stats {
        let table = self.files.load();
        let keydir = self.keydir.load();
        let mut s = Stats {
            keys: keydir.len() as u64,
            keydir_bytes: keydir.allocated_bytes() as u64,
            keys_with_expiry: keydir.expiries.len(),
            expiry_index_bytes: keydir.expiries.allocated_bytes() as u64,
            expiry_due: keydir.expiries.due(self.now_ms()),
            expiring: self.sweeper.active.load(Ordering::Relaxed),
            data_bytes: table.data_bytes(),
            disk_bytes: table.all().map(|f| f.readable_len()).sum(),
            segments: table.segments.len() as u64,
            merged_files: table.merged.len() as u64,
            log_start: table
                .segments
                .keys()
                .next()
                .copied()
                .unwrap_or(table.horizon),
            ..Stats::default()
        };
        {
            let st = self.writer.state.lock();
            s.log_end = st.end();
            s.durable_end = st.durable_end();
            s.epoch = st.epoch;
            s.poisoned = st.poisoned.clone();
            let cuts = st.epochs.cuts();
            s.tail_cuts = cuts.len() as u64;
            s.tail_cut_bytes = cuts.iter().map(|c| c.bytes).sum();
            s.tail_cut_records = cuts.iter().map(|c| u64::from(c.records)).sum();
            s.unrefetched_cut = st.epochs.blocking_cut().map(|c| c.offset);
        }
        self.stats.fill(&mut s);
        s
    }

    /// Hands a freshly sealed segment to the maintenance thread for its
    /// hint file, with its entries if they were gathered as it was written.
    pub(crate) fn sealed(&self, file: Arc<DataFile>, gathered: Option<hint::Gathered>) {
        self.maintenance.push_hint_job(file, gathered);
    }
}

fn decode_at<'a>(file: &DataFile, loc: Loc, bytes: &'a [u8]) -> Result<Record<'a>> {
    decode_in(&file.path, loc, bytes)
}

/// Decodes the record the keydir points at; anything but one whole valid
/// record of the expected length is corruption.
pub(crate) fn decode_in<'a>(path: &Path, loc: Loc, bytes: &'a [u8]) -> Result<Record<'a>> {
    match record::decode(bytes) {
        Ok(Some((rec, len))) if len == bytes.len() => Ok(rec),
        Ok(_) => Err(Error::corrupt(
            path,
            u64::from(loc.pos),
            "record length differs from the index",
        )),
        Err(e) => Err(Error::corrupt(path, u64::from(loc.pos), e)),
    }
}

/// Global offset of the first record byte of a segment file position.
pub(crate) fn global_offset(base: u64, pos: u64) -> u64 {
    base + (pos - FILE_HEADER_LEN)
}
