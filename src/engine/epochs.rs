//! The epoch history: for each master epoch this node has seen, the log
//! offset where it started (Kafka's leader-epoch checkpoint, KIP-101/279).
//!
//! A new master starts a new, higher epoch at its log end; a replica adds
//! an entry when the first record of a newer epoch reaches it. The end of
//! epoch `e` on a node is the start of the next entry, which is how a
//! replica learns where its log diverged from a new master's.
//!
//! File `EPOCHS`, in the [envelope](super::envelope) every metadata file
//! shares:
//! ```text
//!  8      magic "KVSTEPO\0"
//!  4      version = 1
//!  4      number of entries n (≤ 1,000,000)
//! 12 × n  entries, ascending: epoch u32, start offset u64
//!  4      crc32 of every byte before it
//! ```
//! Written to a temporary file, fsynced, renamed, directory fsynced; always
//! before any record of a new epoch is written.

use std::path::Path;

use serde::Serialize;

use super::envelope::{self, u32_at, u64_at, Envelope, Invalid};
use super::error::Result;
use crate::durable;

pub const FILE_NAME: &str = "EPOCHS";
const ENVELOPE: Envelope = Envelope {
    name: "epoch history",
    magic: b"KVSTEPO\0",
    version: 1,
    oldest: 1,
    min_payload: 4,
};
const ENTRY_LEN: usize = 12;
const MAX_ENTRIES: u32 = 1_000_000;

/// Epoch `epoch` began at log offset `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EpochStart {
    pub epoch: u32,
    pub start: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochHistory {
    entries: Vec<EpochStart>,
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
    pub fn truncate(&mut self, to: u64) {
        self.entries.retain(|e| e.start < to);
    }

    pub fn encode(&self) -> Vec<u8> {
        let n = self.entries.len();
        ENVELOPE.encode(4 + ENTRY_LEN * n, |out| {
            // At most MAX_ENTRIES: `push` is the only way in and decode
            // refuses more.
            out.extend_from_slice(&(n as u32).to_le_bytes());
            for e in &self.entries {
                out.extend_from_slice(&e.epoch.to_le_bytes());
                out.extend_from_slice(&e.start.to_le_bytes());
            }
        })
    }

    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, Invalid> {
        let payload = ENVELOPE.open(bytes)?;
        let count = u32_at(payload, 0);
        let entries = &payload[4..];
        if count > MAX_ENTRIES || entries.len() != count as usize * ENTRY_LEN {
            return Err(Invalid::in_payload(
                0,
                format!(
                    "epoch history lists {count} entries in {} bytes",
                    entries.len()
                ),
            ));
        }
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
        let bytes = ENVELOPE.encode(28, |out| {
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

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
