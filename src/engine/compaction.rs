//! Compaction: merge the sealed prefix of the log `[0, H)` (the previous
//! merged generation plus every sealed segment) into a new merged
//! generation holding only the newest live value of each key.
//!
//! Because the whole prefix is merged, tombstones and batch commits inside
//! it are dropped: nothing older than them remains. Offsets at and above
//! `H` are untouched.
//!
//! Expired values: a key whose newest record has expired is dropped too,
//! with its keydir entry, but only on an engine that does not expire keys
//! itself (a replica, by its own clock). A master keeps the record until
//! its sweep has logged the delete that replicas need; the next compaction
//! then drops the record as overwritten. Dropping a key's newest record is
//! safe from resurrection because every older record of the key lies below
//! it, hence in the merged prefix, where it is dropped as not current.
//!
//! The swap is crash-safe (see `docs/FORMAT.md`):
//! 1. write the merged files `merged-H-NNNN.dat` and fsync them;
//! 2. write their hint files (each durable by rename);
//! 3. stage the manifest `MERGED.tmp` and fsync it;
//! 4. rename it to `MERGED` and fsync the directory: the commit point;
//! 5. point the keydir at the new copies, then delete the old files.
//!
//! A crash before 4 leaves the old generation in force (open deletes the
//! new files as leftovers); a crash after it leaves the new one (open
//! deletes the replaced files). Reads and writes go on throughout: readers
//! follow the keydir, which moves an entry only if it still points at the
//! copied record, so a key written during the merge keeps its new value.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::error::{Error, IoContext, Result};
use super::fault::CompactionStep;
use super::hint::{self, HintEntry};
use super::keydir::Loc;
use super::manifest::Manifest;
use super::record::{self, Kind, Record};
use super::recovery::{open_sealed, scan, ScanMode};
use super::segment::{self, DataFile, FileKind, FILE_HEADER_LEN};
use super::Inner;
use crate::durable::sync_dir;

/// What a compaction did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CompactionReport {
    /// The new generation replaces the log below this offset.
    pub horizon: u64,
    /// Data files merged (previous generation plus sealed segments).
    pub files_merged: u64,
    /// Bytes of those files.
    pub bytes_before: u64,
    /// Bytes of the new generation.
    pub bytes_after: u64,
    /// Live records copied.
    pub keys_kept: u64,
    /// Keys whose newest record had expired, dropped (on a replica only).
    pub expired_dropped: u64,
}

/// A record to copy: where it is, its key hash and its expiry.
struct Live {
    source: usize,
    hash: u64,
    loc: Loc,
    expires_at: Option<u64>,
}

/// A current record that expired and is not copied.
struct Expired {
    hash: u64,
    loc: Loc,
    at: u64,
}

/// Runs one compaction. With `seal_active`, the active segment is sealed
/// first (on demand, so that everything written so far can be merged).
pub(crate) fn compact(inner: &Inner, seal_active: bool) -> Result<CompactionReport> {
    let _guard = inner.compaction.lock();
    if seal_active {
        let mut st = inner.writer.state.lock();
        if st.auto_roll && st.len > FILE_HEADER_LEN {
            inner.roll_locked(&mut st, |_| true)?;
        }
    }
    let table = inner.files.load_full();
    let mut horizon = *table.segments.keys().next_back().expect("a segment exists");
    // Keep the segments replicas still need: merge only below the floor.
    if let Some(floor) = *inner.compaction_floor.lock() {
        horizon = table
            .segments
            .range(..=floor.min(horizon))
            .next_back()
            .map_or(0, |(b, _)| *b);
    }
    if horizon <= table.horizon {
        return Ok(CompactionReport {
            horizon: table.horizon,
            ..CompactionReport::default()
        });
    }
    let sources: Vec<Arc<DataFile>> = table
        .merged
        .iter()
        .chain(table.segments.range(..horizon).map(|(_, f)| f))
        .cloned()
        .collect();
    let keydir = inner.keydir.load_full();
    let now = inner.now_ms();
    let drop_expired = !inner
        .sweeper
        .active
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut live = Vec::new();
    let mut expired = Vec::new();
    for (source, file) in sources.iter().enumerate() {
        scan(file, ScanMode::Strict, |e| {
            let loc = Loc {
                file: file.id,
                pos: e.pos,
                len: e.len,
            };
            if e.kind != Kind::Put || !keydir.is_current(e.hash, loc) {
                return;
            }
            match e.expires_at {
                Some(at) if drop_expired && at <= now => expired.push(Expired {
                    hash: e.hash,
                    loc,
                    at,
                }),
                expires_at => live.push(Live {
                    source,
                    hash: e.hash,
                    loc,
                    expires_at,
                }),
            }
        })?;
    }

    let dir = &inner.dir;
    remove_generation_files(dir, horizon)?;
    let written = match write_generation(inner, horizon, &sources, &live) {
        Ok(w) => w,
        Err(e) => {
            // Nothing refers to the new files yet: remove them now rather
            // than at the next open.
            let _ = remove_generation_files(dir, horizon);
            return Err(e);
        }
    };
    let step = |s| check_step(inner, s);
    step(CompactionStep::ManifestStaged)?;
    Manifest {
        horizon,
        file_lens: written.iter().map(|g| g.len).collect(),
    }
    .stage(dir)?;
    step(CompactionStep::Committed)?;
    Manifest::commit(dir)?;

    // Committed. Make the new files readable, move the index, retire the
    // old files.
    let mut merged = Vec::with_capacity(written.len());
    for (index, _) in written.iter().enumerate() {
        let kind = FileKind::Merged {
            horizon,
            index: index as u32,
        };
        merged.push(open_sealed(dir, kind, inner.next_id())?);
    }
    inner.files.rcu(|t| {
        let mut t = (**t).clone();
        merged.iter().for_each(|f| t.register(f.clone()));
        t
    });
    let mut kept = 0u64;
    for (out, file) in written.iter().zip(&merged) {
        for &(index, pos) in &out.moved {
            let l = &live[index];
            let new = Loc {
                file: file.id,
                pos,
                len: l.loc.len,
            };
            if keydir.replace_if(l.hash, l.loc, new) {
                kept += 1;
            }
        }
    }
    // Before the old files go: an entry left pointing into them would be
    // unreadable. A key written meanwhile keeps its new value.
    let mut expired_dropped = 0u64;
    for e in &expired {
        if keydir.remove_if(e.hash, e.loc) {
            keydir.expiries.remove(e.hash, e.at);
            inner.stats.add_live(-i64::from(e.loc.len));
            expired_dropped += 1;
        }
    }
    inner.files.rcu(|t| {
        let mut t = (**t).clone();
        for old in &sources {
            t.unregister(old.id);
        }
        t.segments = t.segments.split_off(&horizon);
        t.merged = merged.clone();
        t.horizon = horizon;
        t
    });
    let mut first = true;
    for old in &sources {
        segment::remove(dir, old.kind)?;
        if std::mem::take(&mut first) {
            step(CompactionStep::OldFilesPartlyDeleted)?;
        }
    }
    sync_dir(dir)?;
    inner.stats.count_compaction();
    let report = CompactionReport {
        horizon,
        files_merged: sources.len() as u64,
        bytes_before: sources.iter().map(|f| f.readable_len()).sum(),
        bytes_after: written.iter().map(|g| g.len).sum(),
        keys_kept: kept,
        expired_dropped,
    };
    tracing::info!(?report, "compaction committed");
    Ok(report)
}

/// One merged file as written: its length and, for each copied record,
/// its index in the live list and its new position.
struct Written {
    len: u64,
    moved: Vec<(usize, u32)>,
}

/// Steps 1 and 2: writes the merged files and their hints, all durable.
fn write_generation(
    inner: &Inner,
    horizon: u64,
    sources: &[Arc<DataFile>],
    live: &[Live],
) -> Result<Vec<Written>> {
    let dir = &inner.dir;
    let limit = inner.options.segment_max_bytes + FILE_HEADER_LEN;
    let mut out: Vec<Written> = Vec::new();
    let mut hints: Vec<Vec<HintEntry>> = Vec::new();
    let mut current: Option<(BufWriter<File>, PathBuf)> = None;
    let mut pos = FILE_HEADER_LEN;
    let mut reencoded = Vec::new();
    for (index, l) in live.iter().enumerate() {
        let len = u64::from(l.loc.len);
        if current.is_none() || (pos > FILE_HEADER_LEN && pos + len > limit) {
            if let Some((w, path)) = current.take() {
                finish(w, &path)?;
            }
            let kind = FileKind::Merged {
                horizon,
                index: out.len() as u32,
            };
            let file = segment::create(dir, kind)?;
            current = Some((
                BufWriter::with_capacity(1 << 20, file),
                dir.join(kind.file_name()),
            ));
            out.push(Written {
                len: FILE_HEADER_LEN,
                moved: Vec::new(),
            });
            hints.push(Vec::new());
            pos = FILE_HEADER_LEN;
        }
        let source = &sources[l.source];
        let bytes = source
            .slice(u64::from(l.loc.pos), l.loc.len as usize)
            .ok_or_else(|| {
                Error::corrupt(
                    &source.path,
                    u64::from(l.loc.pos),
                    "record is past the end of the file",
                )
            })?;
        let (w, path) = current.as_mut().expect("a merged file is open");
        // A batch member is copied as a plain record: the merged file holds
        // no commit records, and the batch's atomicity no longer matters
        // once the whole batch is below the horizon.
        match record::decode(bytes) {
            Ok(Some((rec, _))) if rec.in_batch => {
                reencoded.clear();
                record::encode_record(
                    &mut reencoded,
                    &Record {
                        in_batch: false,
                        ..rec
                    },
                );
                w.write_all(&reencoded)
            }
            _ => w.write_all(bytes),
        }
        .at("write", path)?;
        let this = out.last_mut().expect("a merged file is open");
        this.moved.push((index, pos as u32));
        hints
            .last_mut()
            .expect("a merged file is open")
            .push(HintEntry {
                kind: Kind::Put,
                pos: pos as u32,
                len: l.loc.len,
                hash: l.hash,
                expires_at: l.expires_at,
            });
        pos += len;
        this.len = pos;
    }
    if let Some((w, path)) = current.take() {
        finish(w, &path)?;
    }
    sync_dir(dir)?;
    check_step(inner, CompactionStep::DataWritten)?;
    for (index, (w, entries)) in out.iter().zip(&hints).enumerate() {
        let kind = FileKind::Merged {
            horizon,
            index: index as u32,
        };
        hint::write(dir, &kind.hint_name(), w.len, entries)?;
    }
    check_step(inner, CompactionStep::HintsWritten)?;
    Ok(out)
}

/// Fails as injected when a test stops compactions before `step`.
fn check_step(inner: &Inner, step: CompactionStep) -> Result<()> {
    match &inner.options.faults {
        Some(f) => f.check_compaction(step).at("compact", &inner.dir),
        None => Ok(()),
    }
}

fn finish(w: BufWriter<File>, path: &Path) -> Result<()> {
    let file = w
        .into_inner()
        .map_err(|e| Error::io("write", path, e.into_error()))?;
    file.sync_all().at("fsync", path)
}

/// Removes any files of a generation with this horizon (left by an earlier
/// attempt that failed before committing).
fn remove_generation_files(dir: &Path, horizon: u64) -> Result<()> {
    let prefix = format!("merged-{horizon:020}-");
    let mut removed = false;
    for entry in fs::read_dir(dir).at("list", dir)? {
        let name = entry.at("list", dir)?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) {
            let path = dir.join(&*name);
            fs::remove_file(&path).at("remove", &path)?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::compact;
    use crate::engine::{CompactionPolicy, Durability, Engine, Faults, Options};

    /// A compaction registers its merged files and then moves keydir
    /// entries into them. If the flusher loaded the file table before that
    /// and applies a new record for a moved key after it, the new record
    /// must replace the moved entry, not be added beside it: two entries
    /// for one key let a read find the older value.
    #[test]
    fn a_write_applied_against_a_stale_file_table_replaces_the_moved_entry() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(Faults::default());
        let options = Options {
            durability: Durability::Always,
            segment_max_bytes: 4096,
            compaction: CompactionPolicy {
                check_every: None,
                ..CompactionPolicy::default()
            },
            faults: Some(faults.clone()),
            ..Options::default()
        };
        let engine = Engine::open(dir.path(), options).unwrap();
        engine.put(b"k", b"old").unwrap();
        // Enough to roll, so that "k"'s record is in a sealed segment.
        let fillers = 64u64;
        for i in 0..fillers {
            engine
                .put(format!("filler-{i}").as_bytes(), &[7u8; 100])
                .unwrap();
        }
        assert!(engine.inner().files.load().segments.len() >= 2);

        faults.hold_applies(true);
        std::thread::scope(|s| {
            let put = s.spawn(|| engine.put(b"k", b"new"));
            let held = faults.wait_until(Duration::from_secs(10), |f| f.applies_held() == 1);
            assert!(held, "the flusher never reached the apply gate");
            // The flusher now holds a table without the merged files.
            let report = compact(engine.inner(), false).unwrap();
            assert!(report.keys_kept > fillers / 2, "{report:?}");
            faults.hold_applies(false);
            put.join().unwrap().unwrap();
        });

        assert_eq!(engine.get(b"k").unwrap().as_deref(), Some(&b"new"[..]));
        assert_eq!(engine.stats().keys, fillers + 1, "one entry per key");
    }
}
