//! Snapshots of the immutable part of the log, for backups and for a
//! replica's full resync, and installing one in place of the current data.
//!
//! A snapshot lists the merged generation, every sealed segment and the
//! active segment up to its durable end, plus the manifest and the epoch
//! history as they are at that moment. None of those bytes ever change:
//! sealed and merged files are immutable and the active segment is only
//! appended to. The snapshot holds the files' memory maps, so a compaction
//! that deletes them meanwhile does not disturb a copy in progress (an
//! unlinked file stays readable through its mapping until released).

use std::fs;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::epochs::{self, EpochHistory};
use super::error::{Error, IoContext, Result};
use super::manifest::{self, Manifest};
use super::recovery;
use super::segment::{DataFile, FileKind};
use super::{Engine, LOCK_FILE};
use crate::durable::sync_dir;

/// One file of a snapshot.
#[derive(Clone)]
pub struct SnapshotFile {
    /// File name inside a data directory.
    pub name: String,
    /// Bytes of the file that belong to the snapshot.
    pub len: u64,
    source: Source,
}

#[derive(Clone)]
enum Source {
    Data(Arc<DataFile>),
    Bytes(Bytes),
}

impl SnapshotFile {
    /// Up to `max` bytes from `offset` (empty at the end): a view of the
    /// file's mapping (or of the encoded manifest), not a copy.
    pub fn read(&self, offset: u64, max: usize) -> Result<Bytes> {
        let end = self.len.min(offset.saturating_add(max as u64));
        let len = usize::try_from(end.saturating_sub(offset)).unwrap_or(0);
        match &self.source {
            Source::Bytes(b) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
                Ok(b.slice(start..(start + len).min(b.len())))
            }
            Source::Data(d) => d
                .shared(offset, len)
                .ok_or_else(|| Error::corrupt(&d.path, offset, "snapshot range is not readable")),
        }
    }
}

impl std::fmt::Debug for SnapshotFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} bytes)", self.name, self.len)
    }
}

/// A consistent, immutable view of a node's log.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Data files in log order, then `MERGED` (if any) and `EPOCHS`.
    pub files: Vec<SnapshotFile>,
    /// Log offset the snapshot ends at: a node restored from it resumes
    /// replication here.
    pub end: u64,
    /// First log offset that is raw log (the merged horizon).
    pub start: u64,
}

/// Whether `name` is a file a snapshot carries (data, manifest, epochs).
pub fn is_snapshot_file(name: &str) -> bool {
    FileKind::parse(name).is_some() || name == manifest::FILE_NAME || name == epochs::FILE_NAME
}

impl Engine {
    /// Takes a snapshot: everything buffered is made durable first.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let inner = self.inner();
        // The compaction lock keeps the table, manifest and epoch history
        // consistent with each other while they are read.
        let _guard = inner.compaction.lock();
        inner.flush()?;
        let st = inner.writer.state.lock();
        let table = inner.files.load_full();
        let mut files: Vec<SnapshotFile> = Vec::new();
        let data = |f: &Arc<DataFile>, len: u64| SnapshotFile {
            name: f.kind.file_name(),
            len,
            source: Source::Data(f.clone()),
        };
        for f in table.all() {
            let len = if f.id == st.active.id {
                st.durable_len()
            } else {
                f.readable_len()
            };
            files.push(data(f, len));
        }
        let bytes = |name: &str, b: Vec<u8>| SnapshotFile {
            name: name.to_string(),
            len: b.len() as u64,
            source: Source::Bytes(Bytes::from(b)),
        };
        if !table.merged.is_empty() || table.horizon > 0 {
            let m = Manifest {
                horizon: table.horizon,
                file_lens: table.merged.iter().map(|f| f.readable_len()).collect(),
            };
            files.push(bytes(manifest::FILE_NAME, m.encode()));
        }
        files.push(bytes(epochs::FILE_NAME, st.epochs.encode()));
        Ok(Snapshot {
            files,
            end: st.durable_end(),
            start: table
                .segments
                .keys()
                .next()
                .copied()
                .unwrap_or(table.horizon),
        })
    }

    /// Replaces this engine's whole log with the snapshot files in `staged`
    /// (a directory on the same filesystem, e.g. inside the data
    /// directory), as a replica's full resync does. The staged files are
    /// moved, not copied.
    pub fn install_snapshot(&self, staged: &Path) -> Result<()> {
        let inner = self.inner();
        let _guard = inner.compaction.lock();
        let mut st = inner.writer.state.lock();
        inner.drain_locked(&mut st)?;
        let dir = &inner.dir;
        for entry in fs::read_dir(dir).at("list", dir)? {
            let name = entry.at("list", dir)?.file_name();
            let name = name.to_string_lossy();
            if name != LOCK_FILE && (is_snapshot_file(&name) || name.ends_with(".hint")) {
                let path = dir.join(&*name);
                fs::remove_file(&path).at("remove", &path)?;
            }
        }
        for entry in fs::read_dir(staged).at("list", staged)? {
            let name = entry.at("list", staged)?.file_name();
            let name = name.to_string_lossy();
            // A hint the receiver wrote for a staged file is moved with it.
            if is_snapshot_file(&name) || name.ends_with(".hint") {
                let from = staged.join(&*name);
                fs::rename(&from, dir.join(&*name)).at("move into place", &from)?;
            }
        }
        sync_dir(dir)?;
        let rec = recovery::recover(dir, &inner.options, &inner.ids)?;
        let active = rec
            .table
            .active()
            .expect("recovery leaves a segment")
            .clone();
        let FileKind::Segment { base } = active.kind else {
            unreachable!("the active file is a segment")
        };
        let history = EpochHistory::load(dir)?;
        inner.publish_index(rec.table, rec.keydir);
        inner.stats.set_live(rec.live_bytes);
        inner.stats.set_active_from_hint(rec.active_from_hint);
        st.reset_active(active, rec.active_file, base);
        st.gathered = super::hint::Gathered::new(st.len, rec.active_entries);
        st.clear_batches();
        st.set_epochs(history);
        inner.writer_publish(&st);
        tracing::info!(end = st.end(), "installed a snapshot");
        Ok(())
    }
}
