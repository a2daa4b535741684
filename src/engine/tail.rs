//! The rule for the end of the log: which bytes at the end of a segment
//! file are not part of the log, and how a cut of them is made. Open
//! ([`super::recovery`]), `kvstore verify` and the live recovery
//! ([`super::resume`]) all go by it.
//!
//! Bytes at the end of a segment are cut in three cases, and every cut is
//! recorded in the epoch history before any file is shortened:
//! - a **torn tail**: the active segment ends in an incomplete or damaged
//!   record with nothing valid after it, or in batch members without
//!   their commit. Open records the cut, then truncates the file. Zeros
//!   after the torn bytes, or instead of them, are not counted: they are
//!   the reserve the writer keeps written ahead of the log
//!   ([`torn_part`]), and a tail of zeros alone is dropped without a cut.
//! - a **write failure**: a live recovery rolled the log back to its
//!   durable end and continued in a fresh segment named by that offset.
//!   The old segment keeps its bytes past the cut (it is memory-mapped and
//!   may not shrink under readers) until the next open, which trims it to
//!   its successor's base because a finished cut is recorded there.
//! - a **pending** cut (recorded, then the process died before the files
//!   were cut): open finishes it, cutting every segment back to its
//!   offset.
//!
//! A segment that runs past its successor's base without a recorded cut
//! there stays corruption.

use std::fs::OpenOptions;
use std::path::Path;

use super::epochs::{CutCause, EpochHistory, TailCut};
use super::error::{IoContext, Result};
use super::record;
use super::segment::FILE_HEADER_LEN;

/// How many bytes of segment `base`, a file of `file_len` bytes followed by
/// a segment at `next_base` (if any), belong to the log: `Ok(None)` if all
/// of them, `Ok(Some((len, why)))` if only the first `len`, `Err(why)` if
/// the file contradicts the recorded cuts.
pub fn segment_len(
    base: u64,
    file_len: u64,
    next_base: Option<u64>,
    history: &EpochHistory,
) -> std::result::Result<Option<(u64, String)>, String> {
    let end = base + file_len.saturating_sub(FILE_HEADER_LEN);
    if let Some(pending) = history.pending_cut() {
        let x = pending.offset;
        if base > x {
            return Err(format!(
                "segment starts past the unfinished cut at offset {x} recorded in the epoch history"
            ));
        }
        if end > x {
            return Ok(Some((
                x - base + FILE_HEADER_LEN,
                format!("an unfinished cut at offset {x} is recorded in the epoch history"),
            )));
        }
    }
    match next_base {
        Some(next) if end > next && history.cut_at(next) => Ok(Some((
            next - base + FILE_HEADER_LEN,
            format!("a live recovery rolled the log back to offset {next} and continued in the next segment"),
        ))),
        _ => Ok(None),
    }
}

/// Shortens the file at `path` to `len` bytes and makes that durable. Only
/// for a file no reader has mapped yet (open, before the file table is
/// published).
pub fn cut_file(path: &Path, len: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .at("open for cutting", path)?;
    file.set_len(len)
        .and_then(|_| file.sync_all())
        .at("cut the tail of", path)
}

/// The part of `tail`, the bytes past the valid prefix of the active
/// segment, that a crash tore: all of it up to its last byte that is not
/// zero. The zeros after that are the reserve the writer keeps written
/// ahead of the log (or blocks the file system filled with zeros), never
/// part of a record: a record's kind byte is never zero, and a record
/// that ends in zeros and is cut short still has its header in the part.
/// An open drops a tail that is all zeros without recording a cut.
pub fn torn_part(tail: &[u8]) -> &[u8] {
    let end = tail
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    &tail[..end]
}

/// How many records `bytes` (the cut-off end of a segment) held: each
/// whole one, plus one for the incomplete or damaged record they end in.
pub fn count_records(bytes: &[u8]) -> u32 {
    let mut pos = 0;
    let mut count = 0u32;
    while pos < bytes.len() {
        count = count.saturating_add(1);
        match record::decode(&bytes[pos..]) {
            Ok(Some((_, len))) => pos += len,
            _ => break,
        }
    }
    count
}

/// Cuts the active segment at `path` back from `file_len` to `valid_len`
/// bytes (a torn tail found at open): records the cut in `history` (as
/// pending, durably), shortens the file, then marks the cut finished.
/// Returns the cut.
pub fn cut_torn_tail(
    dir: &Path,
    path: &Path,
    base: u64,
    valid_len: u64,
    tail: &[u8],
    history: &mut EpochHistory,
) -> Result<TailCut> {
    let offset = base + (valid_len - FILE_HEADER_LEN);
    let cut = TailCut {
        pending: true,
        ..TailCut::new(
            offset,
            tail.len() as u64,
            count_records(tail),
            history.current(),
            CutCause::TornTail,
        )
    };
    tracing::warn!(
        file = %path.display(),
        offset,
        bytes = cut.bytes,
        records = cut.records,
        epoch = cut.epoch,
        "cut a torn tail off the end of the log; the cut is recorded in EPOCHS"
    );
    history.record_cut(cut);
    history.store(dir)?;
    cut_file(path, valid_len)?;
    history.finish_pending();
    history.store(dir)?;
    Ok(TailCut {
        pending: false,
        ..cut
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::record::{encode, encode_commit, Kind};

    fn history_with(cuts: &[(u64, bool)]) -> EpochHistory {
        let mut h = EpochHistory::default();
        for &(offset, pending) in cuts {
            h.finish_pending();
            h.record_cut(TailCut {
                pending,
                ..TailCut::new(offset, 1, 1, 0, CutCause::WriteFailure)
            });
        }
        h
    }

    #[test]
    fn a_segment_is_trimmed_only_where_a_cut_is_recorded() {
        let none = EpochHistory::default();
        // Contiguous: whole.
        assert_eq!(segment_len(0, 132, Some(100), &none), Ok(None));
        // Runs past its successor without a recorded cut: not ours to trim
        // (open then reports the discontinuity).
        assert_eq!(segment_len(0, 140, Some(100), &none), Ok(None));
        let live = history_with(&[(100, false)]);
        assert_eq!(
            segment_len(0, 140, Some(100), &live).unwrap().map(|t| t.0),
            Some(132)
        );
        // The last segment is never trimmed by a finished cut: after a cut
        // at open, writes go on in the same file.
        assert_eq!(segment_len(0, 140, None, &live), Ok(None));
        // A pending cut trims everything at or below it, and nothing may
        // start past it.
        let pending = history_with(&[(100, true)]);
        assert_eq!(
            segment_len(0, 140, None, &pending).unwrap().map(|t| t.0),
            Some(132)
        );
        assert_eq!(
            segment_len(100, 40, None, &pending).unwrap().map(|t| t.0),
            Some(32)
        );
        assert_eq!(segment_len(100, 32, None, &pending), Ok(None));
        assert!(segment_len(101, 32, None, &pending).is_err());
    }

    #[test]
    fn records_of_a_tail_count_whole_ones_and_the_torn_one() {
        let mut bytes = Vec::new();
        encode(&mut bytes, Kind::Put, true, 1, b"a", b"1");
        encode(&mut bytes, Kind::Put, true, 1, b"b", b"2");
        assert_eq!(count_records(&bytes), 2);
        let whole = bytes.len();
        encode_commit(&mut bytes, 1, 2);
        assert_eq!(count_records(&bytes[..bytes.len() - 1]), 3);
        let mut flipped = bytes[..whole].to_vec();
        flipped[whole - 1] ^= 1;
        assert_eq!(count_records(&flipped), 2);
        assert_eq!(count_records(&[]), 0);
    }
}
