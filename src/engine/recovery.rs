//! Opening a data directory: clean up after an interrupted compaction, map
//! every data file, rebuild the keydir from hint files where they are valid
//! and from the records elsewhere, and cut a torn tail off the active
//! segment.
//!
//! The active segment is indexed from its hint only when a clean close
//! wrote that hint for exactly the bytes the segment holds now (length and
//! crc32 of the whole file): anything a crash can leave behind (a segment
//! that grew, was cut or rewritten, a torn hint) fails that check, and the
//! segment is scanned as after any crash.
//!
//! The keydir is filled file by file, in log order. Within a file the
//! entries are split by keydir shard (a key lives in one shard, and entries
//! of different keys never interact), and each shard is filled under one
//! lock with its room reserved, while its table is in cache; a large file
//! is filled by several threads, each owning a set of shards.
//!
//! Rules (docs/FORMAT.md, "Crash safety, step by step", says the same):
//! - A record that is incomplete, or damaged with nothing valid after it,
//!   at the end of the *active* segment is a torn write: the segment is cut
//!   back to the end of the last complete record (or of the last complete
//!   batch) and the cut is logged.
//! - Any other bad record is corruption: open fails naming file and offset.
//! - Files left by a compaction that did not commit, and files a committed
//!   compaction replaced, are deleted; nothing the manifest names is.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::epochs::{EpochHistory, TailCut};
use super::error::{Error, IoContext, Result};
use super::expiries::ExpiryIndex;
use super::files::FileTable;
use super::hint::{self, HintEntry};
use super::keydir::{hash_key, shard_of, KeyDir, Loc, Slots, SHARDS};
use super::manifest::Manifest;
use super::options::Options;
use super::record::{self, Kind};
use super::segment::{self, DataFile, FileKind, FILE_HEADER_LEN};
use super::tail;
use crate::durable::sync_dir;

/// What opening produced.
pub struct Recovered {
    pub table: FileTable,
    pub keydir: KeyDir,
    pub live_bytes: u64,
    /// Write handle of the active segment.
    pub active_file: fs::File,
    pub max_epoch: u32,
    /// The epoch history, made to cover every epoch seen in the log.
    pub epochs: EpochHistory,
    /// Tails this open cut off the log (already in `epochs`).
    pub cuts: Vec<TailCut>,
    /// Whether the active segment was indexed from the hint its last clean
    /// close wrote (otherwise it was scanned).
    pub active_from_hint: bool,
    /// The hint entries of the active segment's valid prefix (its readable
    /// length), for the hint written when it is sealed.
    pub active_entries: Vec<HintEntry>,
}

/// How a scan treats a bad record.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ScanMode {
    /// Sealed and merged files: every byte must be a valid record.
    Strict,
    /// The active segment: a torn tail is tolerated and reported.
    TornTailAllowed,
}

/// Result of scanning one file.
pub struct ScanEnd {
    /// File length up to the end of the last complete record or batch.
    pub valid_len: u64,
    pub max_epoch: u32,
}

/// Reads every record of `file` from its header on, verifying checksums,
/// and calls `on_entry` for each committed put or delete, in file order
/// (batch members only once their commit record is seen).
pub fn scan(
    file: &DataFile,
    mode: ScanMode,
    mut on_entry: impl FnMut(HintEntry),
) -> Result<ScanEnd> {
    let data = file.tail_from(0);
    let mut pos = FILE_HEADER_LEN as usize;
    let mut committed = pos;
    let mut commits = Committer::default();
    let corrupt = |at: usize, why: String| Error::corrupt(&file.path, at as u64, why);
    while pos < data.len() {
        let rec = match record::decode(&data[pos..]) {
            Ok(Some(found)) => found,
            Ok(None) if mode == ScanMode::Strict => {
                return Err(corrupt(pos, "record runs past the end of the file".into()))
            }
            Ok(None) => break,
            Err(e) if mode == ScanMode::Strict || valid_record_after(data, pos + 1) => {
                return Err(corrupt(pos, e.to_string()))
            }
            Err(_) => break,
        };
        let (rec, len) = rec;
        commits
            .take(&rec, pos, len, &mut on_entry)
            .map_err(|why| corrupt(pos, why))?;
        pos += len;
        if commits.batch.is_empty() {
            committed = pos;
        }
    }
    if mode == ScanMode::Strict && !commits.batch.is_empty() {
        return Err(corrupt(committed, "file ends inside a batch".into()));
    }
    Ok(ScanEnd {
        valid_len: committed as u64,
        max_epoch: commits.max_epoch,
    })
}

/// The committed entries of records met in file order: a put or delete
/// outside a batch at once, the members of a batch when its commit record
/// is met.
#[derive(Default)]
struct Committer {
    /// Members of the batch whose commit has not been met.
    batch: Vec<HintEntry>,
    max_epoch: u32,
}

impl Committer {
    /// Takes the record `rec` of `len` bytes at file position `pos`,
    /// passing what it commits to `on_entry`; the error says why it cannot
    /// follow the records before it.
    fn take(
        &mut self,
        rec: &record::Record<'_>,
        pos: usize,
        len: usize,
        on_entry: &mut impl FnMut(HintEntry),
    ) -> std::result::Result<(), String> {
        self.max_epoch = self.max_epoch.max(rec.epoch);
        // Positions fit in u32: files are bounded well below 4 GiB.
        let entry = |kind| HintEntry {
            kind,
            pos: pos as u32,
            len: len as u32,
            hash: hash_key(rec.key),
            expires_at: rec.expires_at,
        };
        match rec.kind {
            Kind::Put | Kind::Delete if rec.in_batch => self.batch.push(entry(rec.kind)),
            Kind::Put | Kind::Delete => {
                if !self.batch.is_empty() {
                    return Err("record inside an unterminated batch".into());
                }
                on_entry(entry(rec.kind));
            }
            Kind::Commit => {
                if rec.commit_count() != Some(self.batch.len() as u32) {
                    return Err(format!(
                        "batch commit for {:?} records follows {}",
                        rec.commit_count(),
                        self.batch.len()
                    ));
                }
                self.batch.drain(..).for_each(on_entry);
            }
        }
        Ok(())
    }
}

/// A strict scan of a sealed or merged file whose bytes arrive in pieces,
/// in order, as a full resync receives them: the entries of its hint,
/// read from the bytes while they are in memory on their way to the file,
/// so that opening the installed file needs neither a scan nor a read of
/// it. The same checks as [`scan`] in [`ScanMode::Strict`], but nothing is
/// refused here: a file that fails them gets no hint, and opening it
/// scans it and reports the damage as before.
#[derive(Default)]
pub struct ScanStream {
    /// File position of the next byte fed.
    pos: u64,
    /// The start of a record cut by the end of the last piece.
    carry: Vec<u8>,
    commits: Committer,
    entries: Vec<HintEntry>,
    /// Why the bytes are not a valid file, once known (nothing more is
    /// read then).
    failed: Option<String>,
}

impl ScanStream {
    /// Takes the next bytes of the file (the first ones hold its header,
    /// which opening the file checks).
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        let header = usize::try_from(FILE_HEADER_LEN.saturating_sub(self.pos))
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        self.pos += header as u64;
        if let Err(why) = self.records(&bytes[header..]) {
            self.failed = Some(why);
        }
    }

    fn records(&mut self, mut bytes: &[u8]) -> std::result::Result<(), String> {
        const LONGEST_HEADER: usize = record::HEADER_LEN + record::EXPIRY_LEN;
        // First complete the record the last piece cut, copying only its
        // missing bytes (a header read ahead may take a few of the next).
        while !self.carry.is_empty() && !bytes.is_empty() {
            let wanted = match record::decode_header(&self.carry) {
                Ok(Some(h)) => h.record_len(),
                Ok(None) => LONGEST_HEADER,
                Err(e) => return Err(e.to_string()),
            };
            let take = wanted.saturating_sub(self.carry.len()).min(bytes.len());
            self.carry.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            let mut carry = std::mem::take(&mut self.carry);
            let used = self.take_records(&carry)?;
            carry.drain(..used);
            self.carry = carry;
        }
        let used = self.take_records(bytes)?;
        self.carry.extend_from_slice(&bytes[used..]);
        Ok(())
    }

    /// Takes the whole records at the start of `bytes`; returns their length.
    fn take_records(&mut self, bytes: &[u8]) -> std::result::Result<usize, String> {
        let mut at = 0;
        while at < bytes.len() {
            let (rec, len) = match record::decode(&bytes[at..]) {
                Ok(Some(found)) => found,
                Ok(None) => break,
                Err(e) => return Err(format!("at {}: {e}", self.pos)),
            };
            let pos = usize::try_from(self.pos)
                .ok()
                .filter(|&p| p + len <= u32::MAX as usize)
                .ok_or("file too long for a hint")?;
            let entries = &mut self.entries;
            self.commits
                .take(&rec, pos, len, &mut |e| entries.push(e))
                .map_err(|why| format!("at {pos}: {why}"))?;
            self.pos += len as u64;
            at += len;
        }
        Ok(at)
    }

    /// The hint entries of the file, if every byte fed was a whole record
    /// (batches included) and they were `len` bytes; otherwise why not.
    pub fn finish(self, len: u64) -> std::result::Result<Vec<HintEntry>, String> {
        if let Some(why) = self.failed {
            return Err(why);
        }
        if !self.carry.is_empty() {
            return Err("the file ends inside a record".into());
        }
        if !self.commits.batch.is_empty() {
            return Err("the file ends inside a batch".into());
        }
        if self.pos != len {
            return Err(format!("{} bytes read of {len}", self.pos));
        }
        Ok(self.entries)
    }
}

/// Whether any valid record starts at or after `from`: a damaged record
/// with valid ones after it is corruption, not a torn write.
fn valid_record_after(data: &[u8], from: usize) -> bool {
    // A record has a kind byte that is not zero: none starts in the zeros
    // at the end of an active segment (its reserve).
    let end = tail::torn_part(data).len();
    (from..end).any(|p| matches!(record::decode(&data[p..]), Ok(Some(_))))
}

/// Applies one committed entry to the keydir and its expiry index.
/// Returns the change in live bytes (bytes of current put records).
///
/// `current`: the live file table, when a compaction may run meanwhile
/// (the flusher). A compaction registers its merged files and only then
/// moves keydir entries into them, so an entry may point into a file that
/// `table`, loaded earlier, does not hold; such an entry is checked against
/// the current table, not taken for another key (which would leave two
/// entries for one key, and a read could find the older one).
pub fn apply_entry(
    keydir: &KeyDir,
    table: &FileTable,
    current: Option<&ArcSwap<FileTable>>,
    file: u32,
    e: HintEntry,
) -> i64 {
    apply_entry_to(&mut &*keydir, table, current, file, e)
}

/// [`apply_entry`] into any [`Slots`]: the keydir, or one shard held while
/// the index is filled at open.
fn apply_entry_to(
    slots: &mut impl Slots,
    table: &FileTable,
    current: Option<&ArcSwap<FileTable>>,
    file: u32,
    e: HintEntry,
) -> i64 {
    let loc = Loc {
        file,
        pos: e.pos,
        len: e.len,
    };
    // The new record's key is read only when the hash has a candidate to
    // compare it with: most entries have none, and reading every key would
    // touch every record's page on reopen.
    let mut new_key = None;
    let mut replaced_expiry = None;
    let mut same_in = |t: &FileTable, other: Loc| {
        let new = *new_key.get_or_insert_with(|| table.key_at(loc).map(|k| k.key));
        match (t.key_at(other), new) {
            (Some(old), Some(new)) if old.key == new => {
                replaced_expiry = old.expires_at;
                true
            }
            _ => false,
        }
    };
    let mut same_key = |other: Loc| match (table.get(other.file), current) {
        (None, Some(current)) => same_in(&current.load(), other),
        _ => same_in(table, other),
    };
    let (added, old) = match e.kind {
        Kind::Put => (i64::from(e.len), slots.insert(e.hash, loc, &mut same_key)),
        Kind::Delete | Kind::Commit => (0, slots.remove(e.hash, &mut same_key)),
    };
    update_expiries(
        slots.expiries(),
        e.hash,
        old.and(replaced_expiry),
        e.expires_at,
    );
    added - old.map_or(0, |o| i64::from(o.len))
}

/// Keeps the expiry index in step with one keydir change: the replaced
/// record's entry goes, the new record's comes.
pub(crate) fn update_expiries(
    expiries: &ExpiryIndex,
    hash: u64,
    replaced: Option<u64>,
    added: Option<u64>,
) {
    if let Some(at) = replaced {
        expiries.remove(hash, at);
    }
    if let Some(at) = added {
        expiries.add(hash, at);
    }
}

/// Entries from which a file is filled on more than one thread: below it,
/// starting threads costs more than it saves.
const PARALLEL_FROM: usize = 64 * 1024;
/// Most threads that fill the keydir at open.
const MAX_FILL_THREADS: usize = 4;

/// Applies one file's committed entries, in file order per key, to the
/// keydir; returns the change in live bytes. Nothing else may use the
/// keydir meanwhile (it is being built).
fn apply_file(keydir: &KeyDir, table: &FileTable, file: u32, entries: &[HintEntry]) -> i64 {
    let threads = if entries.len() < PARALLEL_FROM {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_FILL_THREADS)
    };
    if threads == 1 {
        return fill_shards(keydir, table, file, entries, 0, 1);
    }
    std::thread::scope(|s| {
        let mut live = 0;
        let mut others = Vec::new();
        for part in 1..threads {
            let fill = move || fill_shards(keydir, table, file, entries, part, threads);
            match open_thread().spawn_scoped(s, fill) {
                Ok(t) => others.push(t),
                // No thread to be had: this one fills that part as well.
                Err(_) => live += fill_shards(keydir, table, file, entries, part, threads),
            }
        }
        live += fill_shards(keydir, table, file, entries, 0, threads);
        for t in others {
            live += t.join().expect("a keydir fill thread panicked");
        }
        live
    })
}

/// A helper thread of open (it ends before open returns).
fn open_thread() -> std::thread::Builder {
    std::thread::Builder::new().name("kvstore-open".into())
}

/// Fills the shards `s` with `s % of == part` from `entries`: first splits
/// them by shard (keeping their order), then fills each shard under one
/// lock, with room reserved for its puts.
fn fill_shards(
    keydir: &KeyDir,
    table: &FileTable,
    file: u32,
    entries: &[HintEntry],
    part: usize,
    of: usize,
) -> i64 {
    let share = entries.len() / SHARDS + entries.len() / (4 * SHARDS) + 1;
    let mut by_shard: Vec<Vec<HintEntry>> = (0..SHARDS)
        .map(|s| Vec::with_capacity(if s % of == part { share } else { 0 }))
        .collect();
    for e in entries {
        let s = shard_of(e.hash);
        if s % of == part {
            by_shard[s].push(*e);
        }
    }
    let mut live = 0;
    for (shard, list) in by_shard.iter().enumerate() {
        if list.is_empty() {
            continue;
        }
        let puts = list.iter().filter(|e| e.kind == Kind::Put).count();
        let mut slots = keydir.fill_shard(shard, puts);
        for &e in list {
            live += apply_entry_to(&mut slots, table, None, file, e);
        }
    }
    live
}

/// The entries of one sealed or merged file, and the newest epoch seen
/// (0 when they come from the hint): from its hint when that is valid,
/// otherwise by a strict scan, after which the hint is (re)written.
fn sealed_entries(dir: &Path, file: &Arc<DataFile>) -> Result<(Vec<HintEntry>, u32)> {
    let hint_name = file.kind.hint_name();
    let data_len = file.readable_len();
    let from_hint = match fs::read(dir.join(&hint_name)) {
        Ok(bytes) => match hint::decode(&bytes, data_len) {
            Ok(entries) => Some(entries),
            Err(why) => {
                tracing::warn!(hint = %hint_name, %why, "ignoring unusable hint file; scanning the data file");
                None
            }
        },
        Err(_) => None,
    };
    if let Some(entries) = from_hint {
        return Ok((entries, 0));
    }
    let mut entries = Vec::new();
    let end = scan(file, ScanMode::Strict, |e| entries.push(e))?;
    hint::write(dir, &hint_name, data_len, &entries)?;
    Ok((entries, end.max_epoch))
}

/// Active segments from this length on have their checksum computed on a
/// thread of its own while the hint is decoded.
const PARALLEL_CRC_FROM: usize = 4 * 1024 * 1024;

/// The entries of the active segment from the hint its last clean close
/// wrote, if that hint describes the segment's bytes exactly as they are
/// now (see [`hint::Hint::check_covers`]), and the epoch of its last
/// record. `None`, with the reason logged, means: scan it.
fn active_from_hint(dir: &Path, active: &DataFile) -> Option<(Vec<HintEntry>, u32)> {
    let name = active.kind.hint_name();
    let bytes = fs::read(dir.join(&name)).ok()?;
    let data = active.tail_from(0);
    let (decoded, crc) = if data.len() >= PARALLEL_CRC_FROM {
        std::thread::scope(|s| {
            let crc = open_thread().spawn_scoped(s, || crc32fast::hash(data));
            let decoded = hint::decode_any(&bytes);
            let crc = match crc {
                Ok(t) => t.join().expect("the checksum thread panicked"),
                Err(_) => crc32fast::hash(data),
            };
            (decoded, crc)
        })
    } else {
        (hint::decode_any(&bytes), crc32fast::hash(data))
    };
    let decoded = match decoded {
        Ok(decoded) => decoded,
        Err(why) => {
            tracing::warn!(hint = %name, %why, "ignoring a damaged hint of the active segment; scanning the segment");
            return None;
        }
    };
    if let Err(why) = decoded.check_covers(data.len() as u64, crc) {
        tracing::info!(hint = %name, %why, "the active segment changed since the clean close that wrote its hint; scanning the segment");
        return None;
    }
    // Epochs never decrease along the log: the last record has the newest.
    let epoch = decoded.entries.last().map_or(0, |e| {
        let at = active.slice(u64::from(e.pos), record::HEADER_LEN.min(e.len as usize));
        at.and_then(|h| record::decode_header(h).ok().flatten())
            .map_or(0, |h| h.epoch)
    });
    Some((decoded.entries, epoch))
}

/// Opens the data directory (already locked by the caller).
pub fn recover(dir: &Path, options: &Options, ids: &AtomicU32) -> Result<Recovered> {
    let manifest = Manifest::load(dir)?.unwrap_or_default();
    let horizon = manifest.horizon;
    let mut merged_found = vec![false; manifest.file_lens.len()];
    let mut segments: Vec<u64> = Vec::new();
    let mut removed_any = false;
    let mut remove = |name: &str, why: &str| -> Result<()> {
        tracing::info!(file = name, why, "removing leftover file");
        removed_any = true;
        let path = dir.join(name);
        fs::remove_file(&path).at("remove", &path)
    };
    let mut names: Vec<String> = Vec::new();
    for entry in fs::read_dir(dir).at("list", dir)? {
        let entry = entry.at("list", dir)?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    for name in &names {
        if name.ends_with(".tmp") {
            remove(name, "temporary file of an interrupted write")?;
            continue;
        }
        match FileKind::parse(name) {
            Some(FileKind::Segment { base }) if base < horizon => {
                remove(name, "segment replaced by the merged generation")?;
            }
            Some(FileKind::Segment { base }) => segments.push(base),
            Some(FileKind::Merged { horizon: h, index }) => {
                match merged_found.get_mut(index as usize) {
                    Some(found) if h == horizon => *found = true,
                    _ => remove(name, "merged file not in the committed generation")?,
                }
            }
            None => {}
        }
    }
    // Hints whose data file is gone.
    for name in &names {
        if let Some(stem) = name.strip_suffix(".hint") {
            let data_name = match stem.strip_prefix("merged-") {
                Some(_) => format!("{stem}.dat"),
                None => format!("{stem}.seg"),
            };
            if dir.join(&data_name).exists() {
                continue;
            }
            remove(name, "hint of a data file that no longer exists")?;
        }
    }
    if removed_any {
        sync_dir(dir)?;
    }
    if let Some(missing) = merged_found.iter().position(|f| !f) {
        let name = FileKind::Merged {
            horizon,
            index: missing as u32,
        }
        .file_name();
        return Err(Error::corrupt(
            dir.join(super::manifest::FILE_NAME),
            0,
            format!("merged file {name} is missing"),
        ));
    }

    let mut table = FileTable::default();
    table.horizon = horizon;
    let next_id = || ids.fetch_add(1, Ordering::Relaxed);
    for (index, &len) in manifest.file_lens.iter().enumerate() {
        let kind = FileKind::Merged {
            horizon,
            index: index as u32,
        };
        let file = open_sealed(dir, kind, next_id())?;
        if file.readable_len() != len {
            return Err(Error::corrupt(
                &file.path,
                0,
                format!(
                    "file has {} bytes but the manifest says {len}",
                    file.readable_len()
                ),
            ));
        }
        table.register(file.clone());
        table.merged.push(file);
    }

    if segments.is_empty() {
        segment::create(dir, FileKind::Segment { base: horizon })?;
        segments.push(horizon);
    }
    let mut epochs = EpochHistory::load(dir)?;
    let mut expected = horizon;
    let last = segments.len() - 1;
    let mut active_file = None;
    for (i, &base) in segments.iter().enumerate() {
        let kind = FileKind::Segment { base };
        let path = dir.join(kind.file_name());
        trim_segment(&path, base, segments.get(i + 1).copied(), &epochs)?;
        if base != expected {
            return Err(Error::corrupt(
                &path,
                0,
                format!("segment starts at offset {base} but the log before it ends at {expected}"),
            ));
        }
        let file = if i == last {
            let (file, write) = open_active(dir, kind, next_id(), options)?;
            active_file = Some(write);
            file
        } else {
            open_sealed(dir, kind, next_id())?
        };
        expected = base + (file.readable_len() - FILE_HEADER_LEN);
        table.add_segment(base, file);
    }

    if epochs.pending_cut().is_some() {
        // Every segment now ends at or before the cut (trim_segment).
        epochs.finish_pending();
        epochs.store(dir)?;
    }
    let index = build_index(dir, &table)?;
    let active = table.active().expect("a segment exists").clone();
    let active_file = active_file.expect("last segment opened for writing");
    let mut cuts = Vec::new();
    if index.active_valid_len < index.active_file_len {
        let FileKind::Segment { base } = active.kind else {
            unreachable!("the active file is a segment")
        };
        // The mapping's readable length is already the cut and no reader
        // has this file table yet (see the SAFETY comment of DataFile::new);
        // the bytes past it are read through the file to count them.
        let mut tail = vec![0; (index.active_file_len - index.active_valid_len) as usize];
        active
            .file()
            .read_exact_at(&mut tail, index.active_valid_len)
            .at("read the torn tail of", &active.path)?;
        let torn = tail::torn_part(&tail);
        if torn.is_empty() {
            tracing::info!(
                file = %active.path.display(),
                bytes = tail.len(),
                "dropped the zeros written ahead of the end of the log"
            );
            tail::cut_file(&active.path, index.active_valid_len)?;
        } else {
            cuts.push(tail::cut_torn_tail(
                dir,
                &active.path,
                base,
                index.active_valid_len,
                torn,
                &mut epochs,
            )?);
        }
    }
    if index.max_epoch > epochs.current() {
        // Only possible if EPOCHS was lost: attribute the newest epoch
        // conservatively to the end of the log.
        let end = table
            .segments
            .iter()
            .next_back()
            .map_or(horizon, |(b, f)| b + f.readable_len() - FILE_HEADER_LEN);
        tracing::warn!(
            epoch = index.max_epoch,
            start = end,
            "epoch history behind the log; repaired"
        );
        epochs.push(index.max_epoch, end);
        epochs.store(dir)?;
    }
    Ok(Recovered {
        table,
        keydir: index.keydir,
        live_bytes: index.live_bytes,
        active_file,
        max_epoch: index.max_epoch,
        epochs,
        cuts,
        active_from_hint: index.active_from_hint,
        active_entries: index.active_entries,
    })
}

/// Cuts segment `base` back where a recorded cut says its end is not part
/// of the log ([`tail::segment_len`]). Runs before the file is mapped.
fn trim_segment(path: &Path, base: u64, next: Option<u64>, epochs: &EpochHistory) -> Result<()> {
    let len = fs::metadata(path).at("stat", path)?.len();
    match tail::segment_len(base, len, next, epochs) {
        Ok(None) => Ok(()),
        Ok(Some((keep, why))) => {
            tracing::warn!(
                file = %path.display(),
                from = len,
                to = keep,
                why,
                "trimming a segment to a cut recorded in EPOCHS"
            );
            tail::cut_file(path, keep)
        }
        Err(why) => Err(Error::corrupt(path, 0, why)),
    }
}

/// The keydir built from a set of files.
pub struct Index {
    pub keydir: KeyDir,
    pub live_bytes: u64,
    pub max_epoch: u32,
    /// Length of the active segment's valid prefix; the readable length of
    /// the active file is set to it.
    pub active_valid_len: u64,
    /// Length the active segment had before the scan.
    pub active_file_len: u64,
    /// Whether the active segment was indexed from its hint.
    pub active_from_hint: bool,
    /// The entries of the active segment's valid prefix.
    pub active_entries: Vec<HintEntry>,
}

/// Builds the keydir from the merged generation and sealed segments (via
/// their hints where valid) and the active segment: from the hint of its
/// last clean close if that still describes it exactly, otherwise by a
/// scan, after which its readable length is cut back to its valid prefix.
pub fn build_index(dir: &Path, table: &FileTable) -> Result<Index> {
    let keydir = KeyDir::new();
    let mut live = 0i64;
    let mut max_epoch = 0u32;
    let sealed: Vec<Arc<DataFile>> = table
        .merged
        .iter()
        .chain(table.sealed().map(|(_, f)| f))
        .cloned()
        .collect();
    for file in &sealed {
        let (entries, epoch) = sealed_entries(dir, file)?;
        max_epoch = max_epoch.max(epoch);
        live += apply_file(&keydir, table, file.id, &entries);
    }
    let active = table.active().expect("a segment exists").clone();
    let active_file_len = active.readable_len();
    let from_hint = active_from_hint(dir, &active);
    let active_from_hint = from_hint.is_some();
    let (entries, valid_len, epoch) = match from_hint {
        Some((entries, epoch)) => (entries, active_file_len, epoch),
        None => {
            let mut entries = Vec::new();
            let end = scan(&active, ScanMode::TornTailAllowed, |e| entries.push(e))?;
            active.set_readable_len(end.valid_len);
            (entries, end.valid_len, end.max_epoch)
        }
    };
    live += apply_file(&keydir, table, active.id, &entries);
    Ok(Index {
        keydir,
        live_bytes: u64::try_from(live).unwrap_or(0),
        max_epoch: max_epoch.max(epoch),
        active_valid_len: valid_len,
        active_file_len,
        active_from_hint,
        active_entries: entries,
    })
}

/// Maps a sealed or merged file and checks its header.
pub fn open_sealed(dir: &Path, kind: FileKind, id: u32) -> Result<Arc<DataFile>> {
    let path = dir.join(kind.file_name());
    let file = fs::File::open(&path).at("open", &path)?;
    let len = file.metadata().at("stat", &path)?.len();
    let data = DataFile::new(id, kind, path, file, len, len)?;
    kind.check_header(data.tail_from(0))
        .map_err(|why| Error::corrupt(&data.path, 0, why))?;
    Ok(Arc::new(data))
}

/// Opens the active segment for reading and appending. A file shorter than
/// its header is a segment whose creation was interrupted: it gets its
/// header again.
pub fn open_active(
    dir: &Path,
    kind: FileKind,
    id: u32,
    options: &Options,
) -> Result<(Arc<DataFile>, fs::File)> {
    let path = dir.join(kind.file_name());
    let write = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .at("open", &path)?;
    let mut len = write.metadata().at("stat", &path)?.len();
    if len < FILE_HEADER_LEN {
        tracing::warn!(file = %path.display(), len, "rewriting the header of an interrupted segment creation");
        use std::os::unix::fs::FileExt;
        write
            .set_len(0)
            .and_then(|_| write.write_all_at(&kind.header(), 0))
            .and_then(|_| write.sync_all())
            .at("rewrite header of", &path)?;
        len = FILE_HEADER_LEN;
    }
    let read = write.try_clone().at("dup", &path)?;
    let capacity = segment::active_capacity(options.segment_max_bytes);
    let data = DataFile::new(id, kind, path, read, len, capacity)?;
    kind.check_header(data.tail_from(0))
        .map_err(|why| Error::corrupt(&data.path, 0, why))?;
    Ok((Arc::new(data), write))
}
