//! The log as raw bytes, for replication: where it starts and ends, reading
//! bytes from an offset, appending bytes received from a master (verified
//! record by record) and cutting the log back to an offset.

use std::fs;
use std::os::unix::fs::FileExt;

use bytes::Bytes;

use super::epochs::{EpochHistory, EpochStart, TailCut};
use super::error::{Error, IoContext, Result};
use super::recovery::{build_index, open_active};
use super::segment::{self, FileKind, FILE_HEADER_LEN};
use super::writer::{LogAppend, Shipped, WriterState};
use super::{global_offset, Engine, Inner};
use crate::durable;

/// Raw log bytes read from one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// Base offset of the segment the bytes belong to: a replica appends
    /// them to its segment of the same name.
    pub segment_base: u64,
    /// Global offset of the first byte.
    pub offset: u64,
    /// Log bytes, cut at `max_bytes` wherever that falls (a record may
    /// continue in the next chunk). A view of the segment's mapping, not
    /// a copy, when the range is mapped.
    pub bytes: Bytes,
}

impl Engine {
    /// First offset still in the log (below it, the merged generation).
    pub fn log_start(&self) -> u64 {
        let table = self.inner().files.load();
        table
            .segments
            .keys()
            .next()
            .copied()
            .unwrap_or(table.horizon)
    }

    /// End of the log that may be shipped: durable bytes under `Always`,
    /// bytes handed to the OS otherwise.
    pub fn log_end(&self) -> u64 {
        self.inner().shippable_end()
    }

    /// End of everything appended (durable or not).
    pub fn end(&self) -> u64 {
        self.inner().writer.state.lock().end()
    }

    /// End of what is durable under this engine's durability policy.
    pub fn durable_end(&self) -> u64 {
        self.inner().writer.state.lock().durable_end()
    }

    /// Up to `max_bytes` of the log from `from`, never crossing a segment
    /// boundary. Empty at the end of the log.
    pub fn read_log(&self, from: u64, max_bytes: usize) -> Result<LogChunk> {
        let inner = self.inner();
        let end = inner.shippable_end();
        let table = inner.files.load();
        let start = table
            .segments
            .keys()
            .next()
            .copied()
            .unwrap_or(table.horizon);
        if from < start {
            return Err(Error::Compacted {
                offset: from,
                start,
            });
        }
        if from > end {
            return Err(Error::BeyondEnd { offset: from, end });
        }
        let (base, file) = table.segment_at(from).ok_or(Error::Compacted {
            offset: from,
            start,
        })?;
        let seg_end = global_offset(base, file.readable_len()).min(end);
        let len = usize::try_from(seg_end.saturating_sub(from))
            .unwrap_or(usize::MAX)
            .min(max_bytes);
        let pos = FILE_HEADER_LEN + (from - base);
        let bytes = match file.shared(pos, len) {
            Some(b) => b,
            None => {
                let mut buf = vec![0; len];
                file.file()
                    .read_exact_at(&mut buf, pos)
                    .at("read", &file.path)?;
                Bytes::from(buf)
            }
        };
        Ok(LogChunk {
            segment_base: base,
            offset: from,
            bytes,
        })
    }

    /// Appends records shipped from a master to the segment named
    /// `segment_base` (starting it if it is new). Every record's checksum is
    /// verified; only whole records are taken and their count in bytes is
    /// returned, so a caller keeps the rest for the next call. Durable under
    /// this engine's policy on return.
    pub fn append_log(&self, segment_base: u64, bytes: &[u8]) -> Result<usize> {
        let appended = self.append_log_deferred(segment_base, bytes)?;
        if self.inner().options.durability == super::Durability::Always {
            self.inner().wait_durable(appended.end, appended.resumes)?;
        }
        Ok(appended.taken)
    }

    /// [`Engine::append_log`] without the wait: returns once the records
    /// are verified and in the writer's buffer. The flusher makes them
    /// durable with everything else appended before its next fsync (one
    /// fsync for many calls, as for writes on a master); under `always`
    /// they become readable at that fsync, otherwise at once. Watch
    /// [`Engine::subscribe`] for the written and durable ends.
    pub fn append_log_deferred(&self, segment_base: u64, bytes: &[u8]) -> Result<LogAppend> {
        self.inner()
            .append_raw(segment_base, Shipped::Copied(bytes))
    }

    /// [`Engine::append_log_deferred`] without copying: the writer's
    /// buffer holds the records taken as a view of `bytes` until they are
    /// written, so a replica writes its master's log from the buffers it
    /// received it in (runs of records under 64 KiB are copied: a held
    /// piece pins its receive block until it is written).
    pub fn append_log_held(&self, segment_base: u64, bytes: &Bytes) -> Result<LogAppend> {
        self.inner().append_raw(segment_base, Shipped::Held(bytes))
    }

    /// Cuts the log back to offset `to` (a record boundary), discarding
    /// everything after it, and rebuilds the index. For a replica whose log
    /// diverged from its new master.
    pub fn truncate_log(&self, to: u64) -> Result<()> {
        self.inner().truncate(to)
    }

    /// Whether this engine seals segments by size on its own (a master) or
    /// only where shipped bytes say (a replica).
    pub fn set_auto_roll(&self, on: bool) {
        let mut st = self.inner().writer.state.lock();
        st.auto_roll = on;
        if on {
            // A master's own writes do not gather hint entries: the ones
            // gathered so far would only take memory until the seal.
            st.gathered = None;
        }
    }

    /// The epoch history: where each master epoch began in this log.
    pub fn epoch_history(&self) -> Vec<EpochStart> {
        self.inner().writer.state.lock().epochs.entries().to_vec()
    }

    /// The newest epoch this node knows (0 before any).
    pub fn current_epoch(&self) -> u32 {
        self.inner().writer.state.lock().epoch
    }

    /// Starts epoch `epoch` (higher than any known) at the end of the log:
    /// records written from now on carry it. Durable on return.
    pub fn begin_epoch(&self, epoch: u32) -> Result<()> {
        let inner = self.inner();
        let mut st = inner.writer.state.lock();
        let mut epochs = st.epochs.clone();
        if !epochs.push(epoch, st.end()) {
            return Err(Error::InvalidOption {
                name: "epoch",
                reason: format!("{epoch} is not above the current epoch {}", st.epoch),
            });
        }
        epochs.store(&inner.dir)?;
        st.set_epochs(epochs);
        Ok(())
    }

    /// Every tail this node cut off its log, oldest first (the epoch
    /// history keeps them).
    pub fn tail_cuts(&self) -> Vec<TailCut> {
        self.inner().writer.state.lock().epochs.cuts().to_vec()
    }

    /// Whether this node may campaign for leadership: `Err` names the
    /// oldest tail it cut whose part of the log it has not yet fetched
    /// again from a master. The bytes of a cut tail may have held
    /// acknowledged writes that only the master (or another replica) still
    /// has, so a node that cut one leads only once it has replicated past
    /// the cut. The coordinator asks this before it campaigns; a node with
    /// no coordinator is master or replica by configuration and is not
    /// held back.
    pub fn may_campaign(&self) -> std::result::Result<(), TailCut> {
        match self.inner().writer.state.lock().epochs.blocking_cut() {
            Some(cut) => Err(cut),
            None => Ok(()),
        }
    }

    /// Where `epoch` ended in this log: the largest known epoch not above
    /// it and the offset the next one began at (Kafka's
    /// OffsetsForLeaderEpoch). `None` if every known epoch is newer.
    pub fn epoch_end(&self, epoch: u32) -> Option<(u32, u64)> {
        let st = self.inner().writer.state.lock();
        st.epochs.end_of(epoch, st.end())
    }
}

impl Inner {
    pub(crate) fn shippable_end(&self) -> u64 {
        let st = self.writer.state.lock();
        match self.options.durability {
            super::Durability::Always => st.durable_end(),
            _ => st.written_end(),
        }
    }

    fn truncate(&self, to: u64) -> Result<()> {
        let _guard = self.compaction.lock();
        let mut st = self.writer.state.lock();
        self.drain_locked(&mut st)?;
        self.truncate_locked(&mut st, to)
    }

    /// [`Inner::truncate`] once the caller holds the compaction and writer
    /// locks and nothing is buffered: the segment holding `to` is rewritten
    /// to a new file, so the old one stays intact under its mappings.
    pub(crate) fn truncate_locked(&self, st: &mut WriterState, to: u64) -> Result<()> {
        let end = st.end();
        let table = self.files.load_full();
        let start = table
            .segments
            .keys()
            .next()
            .copied()
            .unwrap_or(table.horizon);
        if to > end {
            return Err(Error::BeyondEnd { offset: to, end });
        }
        if to < start {
            return Err(Error::Compacted { offset: to, start });
        }
        if to == end {
            return Ok(());
        }
        let (base, keep_file) = table.segment_at(to).expect("to is within the log");
        let keep_file = keep_file.clone();
        let dir = &self.dir;
        // Later segments go entirely.
        for (_, file) in table.segments.range(base + 1..) {
            segment::remove(dir, file.kind)?;
        }
        // The segment holding `to` is rewritten to a new file and renamed
        // over the old one: the old file stays intact for anyone still
        // reading it through its mapping.
        let kind = keep_file.kind;
        let keep = FILE_HEADER_LEN + (to - base);
        let prefix = keep_file.slice(0, keep as usize).ok_or_else(|| {
            Error::corrupt(
                &keep_file.path,
                keep,
                "segment is shorter than its offsets say",
            )
        })?;
        // The segment turns active, whose hint is never read; a stale one
        // would only be ignored (it describes another length). The
        // directory fsync of the replacement makes the removal durable too.
        let _ = fs::remove_file(dir.join(kind.hint_name()));
        durable::write_file(&keep_file.path, prefix)?;
        let (active, write) = open_active(dir, kind, self.next_id(), &self.options)?;
        let mut new_table = (*table).clone();
        for (_, file) in table.segments.range(base..) {
            new_table.unregister(file.id);
        }
        new_table.segments.split_off(&base);
        new_table.add_segment(base, active.clone());
        let index = build_index(dir, &new_table)?;
        tracing::warn!(from = end, to, "log truncated");
        self.publish_index(new_table, index.keydir);
        self.stats.set_live(index.live_bytes);
        debug_assert!(matches!(kind, FileKind::Segment { .. }));
        st.reset_active(active, write, base);
        st.clear_batches();
        let mut epochs: EpochHistory = st.epochs.clone();
        epochs.truncate(to);
        epochs.store(dir)?;
        st.set_epochs(epochs);
        self.writer_publish(st);
        Ok(())
    }
}
