//! The epoch history: for each master epoch this node has seen, the log
//! offset where it started (Kafka's leader-epoch checkpoint, KIP-101/279).
//!
//! A new master starts a new, higher epoch at its log end; a replica adds
//! an entry when the first record of a newer epoch reaches it. The end of
//! epoch `e` on a node is the start of the next entry, which is how a
//! replica learns where its log diverged from a new master's.
//!
//! File `EPOCHS`:
//! ```text
//!  8      magic "KVSTEPO\0"
//!  4      version = 1
//!  4      number of entries n (≤ 1,000,000)
//! 12 × n  entries, ascending: epoch u32, start offset u64
//!  4      crc32 of every byte before it
//! ```
//! Written to a temporary file, fsynced, renamed, directory fsynced; always
//! before any record of a new epoch is written.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use serde::Serialize;

use super::error::{Error, Result};
use crate::durable;

pub const FILE_NAME: &str = "EPOCHS";
const MAGIC: &[u8; 8] = b"KVSTEPO\0";
const VERSION: u32 = 1;
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
        let mut out = Vec::with_capacity(20 + 12 * self.entries.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.epoch.to_le_bytes());
            out.extend_from_slice(&e.start.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        let body_len = bytes
            .len()
            .checked_sub(4)
            .filter(|&n| n >= 16)
            .ok_or("epoch history is too short")?;
        let (body, crc) = bytes.split_at(body_len);
        if u32::from_le_bytes(crc.try_into().expect("4 bytes")) != crc32fast::hash(body) {
            return Err("epoch history checksum mismatch".into());
        }
        if &body[..8] != MAGIC {
            return Err("bad epoch history magic".into());
        }
        let version = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(format!("unsupported epoch history version {version}"));
        }
        let count = u32::from_le_bytes(body[12..16].try_into().expect("4 bytes"));
        if count > MAX_ENTRIES || body.len() - 16 != count as usize * 12 {
            return Err(format!(
                "epoch history lists {count} entries in {} bytes",
                body.len()
            ));
        }
        let mut history = EpochHistory::default();
        for c in body[16..].chunks_exact(12) {
            let epoch = u32::from_le_bytes(c[0..4].try_into().expect("4 bytes"));
            let start = u64::from_le_bytes(c[4..12].try_into().expect("8 bytes"));
            let ordered = history.entries.last().is_none_or(|l| l.start <= start);
            if !ordered || !history.push(epoch, start) {
                return Err("epoch history is not ascending".into());
            }
        }
        Ok(history)
    }

    /// Reads `dir/EPOCHS`; empty if there is none yet.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE_NAME);
        match fs::read(&path) {
            Ok(bytes) => Self::decode(&bytes).map_err(|why| Error::corrupt(&path, 0, why)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
    }

    /// Writes `dir/EPOCHS` durably.
    pub fn store(&self, dir: &Path) -> Result<()> {
        Ok(durable::write_file(&dir.join(FILE_NAME), &self.encode())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
