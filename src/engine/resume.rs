//! Live recovery from a failed write or fsync (ENOSPC, EIO): the writer
//! is poisoned, because what the file holds past its last fsync is
//! unknown; once a write and an fsync succeed again, the engine resumes
//! without a restart.
//!
//! The flusher probes every [`super::writer::PROBE_EVERY`] while poisoned. A probe:
//! 1. writes and fsyncs the header of a fresh segment, named by the
//!    durable end `D` of the log, under a temporary name (through the
//!    fault hooks, so tests can keep the "disk" full);
//! 2. records the cut at `D` in the epoch history, as pending;
//! 3. renames the fresh segment into place and marks the cut finished
//!    (with the segment at `D` on disk, an open trims the old one to `D`
//!    by the finished cut alone);
//! 4. publishes a file table in which the old active segment is sealed
//!    at its durable length (a new mapping of the same file, never
//!    shrunk: readers of the old mapping go on safely) and a keydir
//!    rebuilt from it, so nothing points past `D` (under `interval` and
//!    `never`, writes past `D` were visible), and clears the poison.
//!
//! A replica (which does not roll segments on its own: their names follow
//! its master's) instead keeps the segment and continues in a new file
//! holding the segment's durable prefix, renamed over it, as a truncation
//! for replication does; this needs room for that copy.
//!
//! Every step may fail before anything in memory changes: the engine
//! stays poisoned and the next probe starts over (a pending cut is
//! replaced, a temporary file overwritten; after a failure in step 4,
//! which only maps and reads files, the cut is recorded a second time at
//! the same offset). The bytes past `D` in the old file are never reused:
//! they stay until the next open trims the file to its successor's base,
//! which the finished cut allows ([`super::tail`]).
//!
//! A write waiting for durability across a recovery gets an error, even
//! if the log grows past its end again later ([`super::writer::Progress`]
//! counts recoveries). The engine resumes on its own; with a coordinator
//! the node decides what a recovered master may do: it takes writes again
//! only while it still holds its lease in the same epoch, otherwise it
//! steps down and rejoins as a replica (`node::ha`, its lead loop, and
//! the fence check on every write).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::epochs::{CutCause, TailCut};
use super::error::{IoContext, Result};
use super::fault::{self, Faults};
use super::recovery::{build_index, open_active};
use super::segment::{DataFile, FileKind, FILE_HEADER_LEN};
use super::writer::WriterState;
use super::{tail, Inner};
use crate::durable;

/// Writes and fsyncs the header of segment `kind` at its temporary name:
/// the probe that the disk takes writes again.
fn stage_segment(dir: &Path, kind: FileKind, faults: Option<&Faults>) -> Result<()> {
    let tmp = durable::tmp_path(&dir.join(kind.file_name()));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .at("create", &tmp)?;
    let written = fault::write_all_at(faults, &file, &kind.header(), 0)
        .and_then(|()| fault::sync_data(faults, &file))
        .at("probe the disk by writing", &tmp);
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// A read-only mapping of segment `kind` at `len` bytes, its durable
/// length; the file may be longer and is never shortened below `len` while
/// this process runs.
fn map_sealed(dir: &Path, kind: FileKind, id: u32, len: u64) -> Result<Arc<DataFile>> {
    let path = dir.join(kind.file_name());
    let file = File::open(&path).at("open", &path)?;
    Ok(Arc::new(DataFile::new(id, kind, path, file, len, len)?))
}

impl Inner {
    /// The flush of a close. A poisoned engine first tries to resume (the
    /// disk may work again), and otherwise fsyncs what it had handed to
    /// the OS, best effort: under `interval` and `never` those writes were
    /// acknowledged, and open keeps whatever of them is whole.
    pub(crate) fn flush_for_close(&self) -> Result<()> {
        if self.writer.state.lock().poisoned.is_some() {
            if let Err(e) = self.try_resume() {
                tracing::warn!(error = %e, "closing a poisoned engine: the disk still fails");
            }
        }
        let flushed = self.flush();
        if let Err(super::Error::Poisoned { .. }) = &flushed {
            let mut st = self.writer.state.lock();
            self.wait_idle(&mut st);
            if let Err(e) = st.sync_written() {
                tracing::warn!(error = %e, file = %st.active.path.display(), "closing a poisoned engine: the last fsync failed too");
            }
        }
        flushed
    }

    /// Clears a poison from a failed write or fsync if the disk takes a
    /// write and an fsync again (see the module header). Returns whether
    /// it resumed.
    pub(crate) fn try_resume(&self) -> Result<bool> {
        let _compaction = self.compaction.lock();
        let mut st = self.writer.state.lock();
        if st.poisoned.is_none() || !st.resumable || st.closed {
            return Ok(false);
        }
        self.wait_idle(&mut st);
        let dir = &self.dir;
        let faults = self.options.faults.as_deref();
        let old = st.active.clone();
        let (old_base, durable_len) = (st.base, st.durable_len());
        let cut_at = st.durable_end();
        let kind = FileKind::Segment { base: cut_at };
        stage_segment(dir, kind, faults)?;

        // What is cut: bytes in the file past the durable end, and what the
        // buffers held when the writer was poisoned.
        let written = st.written_end() - old_base + FILE_HEADER_LEN;
        let mut in_file = vec![0; usize::try_from(written - durable_len).unwrap_or(0)];
        old.file()
            .read_exact_at(&mut in_file, durable_len)
            .at("read the unsynced tail of", &old.path)?;
        let records = tail::count_records(&in_file).saturating_add(st.dropped_records);
        let cut = TailCut::new(
            cut_at,
            st.end() - cut_at,
            records,
            st.epoch,
            CutCause::WriteFailure,
        );
        let mut epochs = st.epochs.clone();
        epochs.record_cut(TailCut {
            pending: true,
            ..cut
        });
        epochs.store(dir)?;

        if !st.auto_roll {
            // A replica's segments are named as its master's: it keeps the
            // segment and continues in a new file holding its durable
            // prefix, renamed over it (the old file stays intact under its
            // mappings), as a truncation for replication does.
            let _ = std::fs::remove_file(durable::tmp_path(&dir.join(kind.file_name())));
            st.set_epochs(epochs.clone());
            self.truncate_locked(&mut st, cut_at)?;
            let mut epochs = st.epochs.clone();
            epochs.finish_pending();
            epochs.store(dir)?;
            st.set_epochs(epochs);
            return Ok(self.resumed(&mut st, cut));
        }
        durable::commit(&dir.join(kind.file_name()))?;
        // With the segment at the cut on disk, an open trims the old
        // segment to the cut by the finished record alone. Finishing it
        // here, before anything in memory changes, leaves nothing half
        // done if the store fails: the engine stays poisoned as it was and
        // the next attempt starts over.
        epochs.finish_pending();
        epochs.store(dir)?;
        let (active, write) = open_active(dir, kind, self.next_id(), &self.options)?;
        let table = self.files.load_full();
        let mut new_table = (*table).clone();
        new_table.unregister(old.id);
        if old_base != cut_at {
            let sealed = map_sealed(dir, old.kind, self.next_id(), durable_len)?;
            new_table.add_segment(old_base, sealed);
        }
        new_table.add_segment(cut_at, active.clone());
        let index = build_index(dir, &new_table)?;
        self.publish_index(new_table, index.keydir);
        self.stats.set_live(index.live_bytes);
        st.set_epochs(epochs);
        st.reset_active(active, write, cut_at);
        st.clear_batches();
        Ok(self.resumed(&mut st, cut))
    }

    /// Clears the poison after a recovery that cut `cut`.
    fn resumed(&self, st: &mut WriterState, cut: TailCut) -> bool {
        st.last_poison = st.poisoned.take();
        st.resumable = false;
        st.dropped_records = 0;
        st.resumes += 1;
        self.stats.count_resume();
        tracing::warn!(
            offset = cut.offset,
            bytes = cut.bytes,
            records = cut.records,
            epoch = cut.epoch,
            cause = st.last_poison.as_deref().unwrap_or_default(),
            "writes resumed after a failed write or fsync: rolled the log back to its durable end and continued in a fresh segment; the cut is recorded in EPOCHS"
        );
        self.writer_publish(st);
        true
    }
}
