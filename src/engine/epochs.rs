//! The node's log history: for each master epoch it has seen, the log
//! offset where it started (Kafka's leader-epoch checkpoint, KIP-101/279),
//! and every tail this node cut off its log.
//!
//! A new master starts a new, higher epoch at its log end; a replica adds
//! an entry when the first record of a newer epoch reaches it. The end of
//! epoch `e` on a node is the start of the next entry, which is how a
//! replica learns where its log diverged from a new master's.
//!
//! A **tail cut** is recorded whenever this node discards bytes at the end
//! of its log that it had once appended: a torn tail cut at open, or the
//! bytes of unknown fate a live recovery from a failed write or fsync rolls
//! back ([`super::resume`]). A torn unacknowledged write and a damaged
//! acknowledged one can look alike, so no cut is silent: it is logged,
//! counted, and kept here, where replication can later compare it with
//! other nodes' logs (a node that cut a tail has to re-fetch past it from
//! its master before it may lead; a replica holding bytes past its
//! master's cut holds writes the master no longer has).
//!
//! File `EPOCHS`, in the [envelope](super::envelope) every metadata file
//! shares. Version 1 (written while no cut is recorded, so older nodes can
//! still read it):
//! ```text
//!  8      magic "KVSTEPO\0"
//!  4      version = 1
//!  4      number of entries n (≤ 1,000,000)
//! 12 × n  entries, ascending: epoch u32, start offset u64
//!  4      crc32 of every byte before it
//! ```
//! Version 2 adds the cuts after the entries:
//! ```text
//!  4      number of cuts m (≤ 1,024), oldest first
//! 36 × m  cuts: offset u64 (the log end after the cut), bytes u64 (cut
//!         past it), records u32, epoch u32, cause u8 (1 torn tail at
//!         open, 2 write failure), flags u8 (bit 0 pending, bit 1
//!         refetched), reserved u16 = 0, unix_ms u64
//! ```
//! Written to a temporary file, fsynced, renamed, directory fsynced; always
//! before any record of a new epoch is written, and before a cut is made.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::envelope::{self, u32_at, u64_at, Envelope, Invalid};
use super::error::Result;
use crate::durable;

pub const FILE_NAME: &str = "EPOCHS";
/// Files are read in every version from 1 to this one.
const ENVELOPE: Envelope = Envelope {
    name: "epoch history",
    magic: b"KVSTEPO\0",
    version: 2,
    oldest: 1,
    min_payload: 4,
};
/// The version written while no cut is recorded.
const ENVELOPE_V1: Envelope = Envelope {
    version: 1,
    ..ENVELOPE
};
const ENTRY_LEN: usize = 12;
const MAX_ENTRIES: u32 = 1_000_000;
const CUT_LEN: usize = 36;
/// Cuts kept; beyond it the oldest is forgotten. A node cuts a tail only
/// after a crash or a failed write, so this is years of history.
pub const MAX_CUTS: usize = 1024;
const FLAG_PENDING: u8 = 1;
const FLAG_REFETCHED: u8 = 2;

/// Epoch `epoch` began at log offset `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EpochStart {
    pub epoch: u32,
    pub start: u64,
}

/// Why bytes were cut off the end of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CutCause {
    /// Open found the active segment ending in an incomplete or damaged
    /// record, or in a batch without its commit.
    TornTail,
    /// A write or fsync failed; the live recovery rolled the log back to
    /// its durable end.
    WriteFailure,
}

impl CutCause {
    /// The name used in logs, stats and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            CutCause::TornTail => "torn_tail",
            CutCause::WriteFailure => "write_failure",
        }
    }

    fn code(self) -> u8 {
        match self {
            CutCause::TornTail => 1,
            CutCause::WriteFailure => 2,
        }
    }

    fn from_code(code: u8) -> Option<CutCause> {
        match code {
            1 => Some(CutCause::TornTail),
            2 => Some(CutCause::WriteFailure),
            _ => None,
        }
    }
}

/// Bytes this node cut off the end of its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TailCut {
    /// The log's end after the cut: everything from here on was cut.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes: u64,
    /// How many records they held, whole or not (a torn write is one).
    pub records: u32,
    /// The newest epoch of the log when it was cut.
    pub epoch: u32,
    pub cause: CutCause,
    /// Recorded, but the files not yet cut: open finishes it (only seen
    /// after a crash in the middle of a cut).
    pub pending: bool,
    /// The log past `offset` has since been fetched again from a master.
    pub refetched: bool,
    /// When, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl TailCut {
    /// A cut made now.
    pub fn new(offset: u64, bytes: u64, records: u32, epoch: u32, cause: CutCause) -> TailCut {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        TailCut {
            offset,
            bytes,
            records,
            epoch,
            cause,
            pending: false,
            refetched: false,
            unix_ms,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.bytes.to_le_bytes());
        out.extend_from_slice(&self.records.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.push(self.cause.code());
        let mut flags = 0;
        if self.pending {
            flags |= FLAG_PENDING;
        }
        if self.refetched {
            flags |= FLAG_REFETCHED;
        }
        out.push(flags);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.unix_ms.to_le_bytes());
    }

    /// Decodes one cut of `CUT_LEN` bytes; the reason names the field.
    fn decode(c: &[u8]) -> std::result::Result<TailCut, (usize, &'static str)> {
        let cause = CutCause::from_code(c[24]).ok_or((24, "unknown cut cause"))?;
        let flags = c[25];
        if flags & !(FLAG_PENDING | FLAG_REFETCHED) != 0 {
            return Err((25, "unknown cut flags"));
        }
        if c[26..28] != [0, 0] {
            return Err((26, "reserved bytes of a cut are not zero"));
        }
        Ok(TailCut {
            offset: u64_at(c, 0),
            bytes: u64_at(c, 8),
            records: u32_at(c, 16),
            epoch: u32_at(c, 20),
            cause,
            pending: flags & FLAG_PENDING != 0,
            refetched: flags & FLAG_REFETCHED != 0,
            unix_ms: u64_at(c, 28),
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochHistory {
    entries: Vec<EpochStart>,
    cuts: Vec<TailCut>,
}

impl EpochHistory {
    pub fn entries(&self) -> &[EpochStart] {
        &self.entries
    }

    /// The newest epoch, 0 before any.
    pub fn current(&self) -> u32 {
        self.entries.last().map_or(0, |e| e.epoch)
    }

    /// Records that `epoch` (newer than every known one) starts at `start`.
    pub fn push(&mut self, epoch: u32, start: u64) -> bool {
        if epoch <= self.current() {
            return false;
        }
        self.entries.push(EpochStart { epoch, start });
        true
    }

    /// Where `epoch` ended on this node: the largest known epoch not above
    /// `epoch`, and the offset where the next epoch began (`log_end` if it
    /// is still the current one). `None` if every known epoch is newer.
    pub fn end_of(&self, epoch: u32, log_end: u64) -> Option<(u32, u64)> {
        let i = self.entries.iter().rposition(|e| e.epoch <= epoch)?;
        let end = self.entries.get(i + 1).map_or(log_end, |next| next.start);
        Some((self.entries[i].epoch, end))
    }

    /// Forgets epochs that started at or after `to` (after a truncation).
    /// Cuts stay: they are history, whatever the log holds now.
    pub fn truncate(&mut self, to: u64) {
        self.entries.retain(|e| e.start < to);
    }

    /// Every recorded cut, oldest first.
    pub fn cuts(&self) -> &[TailCut] {
        &self.cuts
    }

    /// Records `cut`. A pending cut newest in the list is the same cut
    /// being retried, and is replaced.
    pub fn record_cut(&mut self, cut: TailCut) {
        if self.cuts.last().is_some_and(|c| c.pending) {
            self.cuts.pop();
        }
        if self.cuts.len() >= MAX_CUTS {
            let oldest = self.cuts.remove(0);
            tracing::warn!(
                ?oldest,
                "epoch history holds {MAX_CUTS} cuts; forgetting the oldest"
            );
        }
        self.cuts.push(cut);
    }

    /// The newest cut, if it is still pending.
    pub fn pending_cut(&self) -> Option<TailCut> {
        self.cuts.last().filter(|c| c.pending).copied()
    }

    /// Marks the pending cut done.
    pub fn finish_pending(&mut self) {
        if let Some(c) = self.cuts.last_mut() {
            c.pending = false;
        }
    }

    /// Whether a finished cut ends the log at `offset`.
    pub fn cut_at(&self, offset: u64) -> bool {
        self.cuts.iter().any(|c| !c.pending && c.offset == offset)
    }

    /// The oldest cut that keeps this node from campaigning for leadership:
    /// one still pending, or one whose log past it has not been fetched
    /// again from a master. The bytes it cut may have held acknowledged
    /// writes, so until a master's copy of that part of the log is here,
    /// this node's log may lack them. `None`: the node may campaign.
    pub fn blocking_cut(&self) -> Option<TailCut> {
        self.cuts
            .iter()
            .find(|c| c.pending || !c.refetched)
            .copied()
    }

    /// Marks every cut below `end` as fetched again from a master (the
    /// local log, fetched from it, now reaches `end`). Returns how many
    /// changed.
    pub fn mark_refetched(&mut self, end: u64) -> usize {
        let mut changed = 0;
        for c in &mut self.cuts {
            if !c.refetched && !c.pending && c.offset < end {
                c.refetched = true;
                changed += 1;
            }
        }
        changed
    }

    pub fn encode(&self) -> Vec<u8> {
        let n = self.entries.len();
        let m = self.cuts.len();
        let envelope = if m == 0 { ENVELOPE_V1 } else { ENVELOPE };
        let extra = if m == 0 { 0 } else { 4 + CUT_LEN * m };
        envelope.encode(4 + ENTRY_LEN * n + extra, |out| {
            // At most MAX_ENTRIES: `push` is the only way in and decode
            // refuses more. Likewise at most MAX_CUTS cuts.
            out.extend_from_slice(&(n as u32).to_le_bytes());
            for e in &self.entries {
                out.extend_from_slice(&e.epoch.to_le_bytes());
                out.extend_from_slice(&e.start.to_le_bytes());
            }
            if m > 0 {
                out.extend_from_slice(&(m as u32).to_le_bytes());
                for c in &self.cuts {
                    c.encode(out);
                }
            }
        })
    }

    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, Invalid> {
        let (version, payload) = ENVELOPE.open_versioned(bytes)?;
        let count = u32_at(payload, 0);
        let entries_len = usize::try_from(count)
            .ok()
            .filter(|_| count <= MAX_ENTRIES)
            .map(|c| c * ENTRY_LEN);
        let rest = entries_len.and_then(|len| payload.get(4..)?.get(..len).map(|e| (len, e)));
        let fits = |len: usize| match version {
            1 => payload.len() == 4 + len,
            _ => payload.len() >= 4 + len + 4,
        };
        let Some((len, entries)) = rest.filter(|(len, _)| fits(*len)) else {
            return Err(Invalid::in_payload(
                0,
                format!(
                    "epoch history lists {count} entries in {} bytes",
                    payload.len() - 4
                ),
            ));
        };
        let mut history = EpochHistory::default();
        for (i, c) in entries.chunks_exact(ENTRY_LEN).enumerate() {
            let (epoch, start) = (u32_at(c, 0), u64_at(c, 4));
            let ordered = history.entries.last().is_none_or(|l| l.start <= start);
            if !ordered || !history.push(epoch, start) {
                return Err(Invalid::in_payload(
                    4 + i * ENTRY_LEN,
                    "epoch history is not ascending",
                ));
            }
        }
        if version == 1 {
            return Ok(history);
        }
        let at = 4 + len;
        let cuts = u32_at(payload, at);
        let cut_bytes = &payload[at + 4..];
        if cuts as usize > MAX_CUTS || cut_bytes.len() != cuts as usize * CUT_LEN {
            return Err(Invalid::in_payload(
                at,
                format!(
                    "epoch history lists {cuts} cuts in {} bytes",
                    cut_bytes.len()
                ),
            ));
        }
        for (i, c) in cut_bytes.chunks_exact(CUT_LEN).enumerate() {
            let cut = TailCut::decode(c)
                .map_err(|(field, why)| Invalid::in_payload(at + 4 + i * CUT_LEN + field, why))?;
            history.cuts.push(cut);
        }
        Ok(history)
    }

    /// Reads `dir/EPOCHS`; empty if there is none yet.
    pub fn load(dir: &Path) -> Result<Self> {
        let history = envelope::read_file(&dir.join(FILE_NAME), Self::decode)?;
        Ok(history.unwrap_or_default())
    }

    /// Writes `dir/EPOCHS` durably.
    pub fn store(&self, dir: &Path) -> Result<()> {
        Ok(durable::write_file(&dir.join(FILE_NAME), &self.encode())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::error::Error;

    fn history(entries: &[(u32, u64)]) -> EpochHistory {
        let mut h = EpochHistory::default();
        for &(e, s) in entries {
            assert!(h.push(e, s));
        }
        h
    }

    #[test]
    fn end_of_an_epoch_is_where_the_next_began() {
        let h = history(&[(1, 0), (2, 100), (5, 250)]);
        assert_eq!(h.end_of(1, 400), Some((1, 100)));
        assert_eq!(h.end_of(2, 400), Some((2, 250)));
        // An epoch this node never saw ends where the last older one did.
        assert_eq!(h.end_of(3, 400), Some((2, 250)));
        assert_eq!(h.end_of(5, 400), Some((5, 400)));
        assert_eq!(h.end_of(9, 400), Some((5, 400)));
        assert_eq!(h.end_of(0, 400), None);
    }

    #[test]
    fn round_trips_truncates_and_refuses_damage() {
        let mut h = history(&[(1, 0), (3, 10), (4, 10)]);
        let bytes = h.encode();
        assert_eq!(EpochHistory::decode(&bytes).unwrap(), h);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(EpochHistory::decode(&bad).is_err(), "flip at {i}");
        }
        assert!(!h.push(2, 50), "epochs only grow");
        h.truncate(10);
        assert_eq!(h, history(&[(1, 0)]));
    }

    #[test]
    fn a_file_out_of_order_is_corrupt_at_the_offending_entry() {
        // Valid envelope, but the second entry goes back in epoch.
        let bytes = ENVELOPE_V1.encode(28, |out| {
            out.extend_from_slice(&2u32.to_le_bytes());
            for (epoch, start) in [(2u32, 0u64), (1, 10)] {
                out.extend_from_slice(&epoch.to_le_bytes());
                out.extend_from_slice(&start.to_le_bytes());
            }
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), &bytes).unwrap();
        match EpochHistory::load(dir.path()) {
            // Magic and version (12 bytes), the count (4), entry 0 (12).
            Err(Error::Corrupt { file, offset, .. }) => {
                assert_eq!(file, dir.path().join(FILE_NAME));
                assert_eq!(offset, 28);
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    /// The v1 fixture holds no `EPOCHS`: these are its bytes as FORMAT.md
    /// describes them (computed with Python's zlib.crc32).
    #[test]
    fn the_epoch_history_encodes_to_its_v1_bytes() {
        let mut h = EpochHistory::default();
        for (epoch, start) in [(1, 0), (3, 4096), (7, 1 << 40)] {
            assert!(h.push(epoch, start));
        }
        let golden = "4b56535445504f00010000000300000001000000000000000000000003000000\
                      0010000000000000070000000000000000010000e9785edf";
        assert_eq!(hex(&h.encode()), golden);
        assert_eq!(EpochHistory::decode(&h.encode()).unwrap(), h);
        let empty = "4b56535445504f000100000000000000045441d5";
        assert_eq!(hex(&EpochHistory::default().encode()), empty);
    }

    /// Version 2: the same entries followed by the cuts (bytes computed
    /// with Python's struct and zlib.crc32, as FORMAT.md describes them).
    #[test]
    fn cuts_encode_to_their_v2_bytes_and_v1_files_still_open() {
        let mut h = history(&[(1, 0), (3, 4096)]);
        let v1 = h.encode();
        assert_eq!(&v1[8..12], &1u32.to_le_bytes(), "no cut: still version 1");
        let torn = TailCut {
            offset: 4000,
            bytes: 96,
            records: 2,
            epoch: 3,
            cause: CutCause::TornTail,
            pending: false,
            refetched: true,
            unix_ms: 1_767_225_600_000,
        };
        let live = TailCut {
            offset: 8192,
            bytes: 17,
            records: 1,
            epoch: 3,
            cause: CutCause::WriteFailure,
            pending: true,
            refetched: false,
            unix_ms: 1_767_225_600_123,
        };
        h.record_cut(torn);
        h.record_cut(live);
        let golden = "4b56535445504f0002000000020000000100000000000000000000000300000000\
                      1000000000000002000000a00f000000000000600000000000000002000000030000\
                      000102000000a8da769b010000002000000000000011000000000000000100000003\
                      000000020100007ba8da769b010000b95fe5e9";
        assert_eq!(hex(&h.encode()), golden);
        let back = EpochHistory::decode(&h.encode()).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.pending_cut(), Some(live));
        // The version 1 bytes of the same entries read as before.
        assert_eq!(
            EpochHistory::decode(&v1).unwrap(),
            history(&[(1, 0), (3, 4096)])
        );
        for i in 0..h.encode().len() {
            let mut bad = h.encode();
            bad[i] ^= 1;
            assert!(EpochHistory::decode(&bad).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn a_retried_pending_cut_replaces_itself_and_the_list_is_bounded() {
        let mut h = EpochHistory::default();
        let cut = |offset, pending| TailCut {
            pending,
            ..TailCut::new(offset, 10, 1, 1, CutCause::WriteFailure)
        };
        h.record_cut(cut(100, true));
        h.record_cut(cut(100, true));
        assert_eq!(h.cuts().len(), 1);
        h.finish_pending();
        assert!(h.pending_cut().is_none());
        assert!(h.cut_at(100) && !h.cut_at(90));
        h.record_cut(cut(200, false));
        assert_eq!(h.cuts().len(), 2, "a finished cut is never replaced");
        assert_eq!(h.mark_refetched(150), 1);
        assert_eq!(h.mark_refetched(150), 0);
        assert!(h.cuts()[0].refetched && !h.cuts()[1].refetched);
        for i in 0..MAX_CUTS as u64 {
            h.record_cut(cut(1000 + i, false));
        }
        assert_eq!(h.cuts().len(), MAX_CUTS);
        assert_eq!(h.cuts()[0].offset, 1000, "the oldest went first");
        let back = EpochHistory::decode(&h.encode()).unwrap();
        assert_eq!(back, h);
        // Truncating the log keeps the cuts.
        h.truncate(0);
        assert_eq!(h.cuts().len(), MAX_CUTS);
    }

    #[test]
    fn a_cut_with_an_unknown_cause_or_flag_is_corrupt_at_that_byte() {
        let mut h = history(&[(1, 0)]);
        h.record_cut(TailCut::new(5, 1, 1, 1, CutCause::TornTail));
        let good = h.encode();
        // Header 12, count 4, one entry 12, cut count 4: the cut at 32.
        for (field, value) in [(24, 9u8), (25, 4), (26, 1)] {
            let mut bad = good.clone();
            bad[32 + field] = value;
            let end = bad.len() - 4;
            let crc = crc32fast::hash(&bad[..end]);
            bad[end..].copy_from_slice(&crc.to_le_bytes());
            let err = EpochHistory::decode(&bad).unwrap_err();
            assert_eq!(err.offset, 32 + field as u64, "{err}");
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
