//! The set of data files the engine reads from, published as one immutable
//! snapshot ([`FileTable`]) that readers load without locking and writers
//! replace whole (roll, compaction, truncation).

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use super::idhash::IdHasher;
use super::keydir::Loc;
use super::prefetch::prefetch;
use super::record::{self, EXPIRY_LEN, HEADER_LEN};
use super::segment::{DataFile, FILE_HEADER_LEN};

/// A CPU cache line, in bytes.
const LINE: usize = 64;
/// Cache lines of a record [`FileTable::prefetch`] asks for: enough for a
/// record with a short key and a value of up to about 200 bytes; a longer
/// value's copy costs more than its first misses.
const PREFETCH_LINES: usize = 4;

#[derive(Clone, Default, Debug)]
pub struct FileTable {
    by_id: HashMap<u32, Arc<DataFile>, BuildHasherDefault<IdHasher>>,
    /// The merged generation, in index order; covers the log below `horizon`.
    pub merged: Vec<Arc<DataFile>>,
    pub horizon: u64,
    /// Segments by base offset; the last one is the active segment.
    pub segments: BTreeMap<u64, Arc<DataFile>>,
}

impl FileTable {
    pub fn get(&self, id: u32) -> Option<&Arc<DataFile>> {
        self.by_id.get(&id)
    }

    /// Adds a file to the id index only (it is not part of the log yet).
    pub fn register(&mut self, file: Arc<DataFile>) {
        self.by_id.insert(file.id, file);
    }

    pub fn unregister(&mut self, id: u32) {
        self.by_id.remove(&id);
    }

    pub fn add_segment(&mut self, base: u64, file: Arc<DataFile>) {
        self.register(file.clone());
        self.segments.insert(base, file);
    }

    pub fn active(&self) -> Option<&Arc<DataFile>> {
        self.segments.values().next_back()
    }

    /// Sealed segments: every segment but the last.
    pub fn sealed(&self) -> impl Iterator<Item = (&u64, &Arc<DataFile>)> {
        let n = self.segments.len().saturating_sub(1);
        self.segments.iter().take(n)
    }

    /// Every data file, merged generation first, then segments in order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<DataFile>> {
        self.merged.iter().chain(self.segments.values())
    }

    /// The segment holding global offset `offset` (a segment holds
    /// `[base, base + len)`; the end of the active segment belongs to it).
    pub fn segment_at(&self, offset: u64) -> Option<(u64, &Arc<DataFile>)> {
        let (&base, file) = self.segments.range(..=offset).next_back()?;
        Some((base, file))
    }

    /// Bytes of records in all files (headers excluded).
    pub fn data_bytes(&self) -> u64 {
        self.all()
            .map(|f| f.readable_len().saturating_sub(FILE_HEADER_LEN))
            .sum()
    }

    /// Asks the CPU to start loading the record at `loc` into its caches
    /// (its first [`PREFETCH_LINES`] cache lines: the header, the key and
    /// a small value), and returns at once: a hint, which neither waits
    /// for memory nor faults, whatever the mapping holds. Nothing when the
    /// file is gone.
    pub fn prefetch(&self, loc: Loc) {
        let Some(record) = self
            .get(loc.file)
            .and_then(|f| f.slice(u64::from(loc.pos), loc.len as usize))
        else {
            return;
        };
        // The line holding the first byte, then each line after it.
        let first = record.as_ptr() as usize & !(LINE - 1);
        let end = record.as_ptr() as usize + record.len();
        for line in (first..end).step_by(LINE).take(PREFETCH_LINES) {
            let offset = line.saturating_sub(record.as_ptr() as usize);
            prefetch(&record[offset..]);
        }
    }

    /// The key of the record at `loc` and its expiry, read through the
    /// file's mapping. `None` if the file is gone or the bytes are not
    /// readable or not a record header.
    pub fn key_at(&self, loc: Loc) -> Option<KeyAt<'_>> {
        let file = self.get(loc.file)?;
        // A short record may end before the longest header would.
        let header_len = (HEADER_LEN + EXPIRY_LEN).min(loc.len as usize);
        let header = file.slice(u64::from(loc.pos), header_len)?;
        let header = record::decode_header(header).ok()??;
        let key = file.slice(u64::from(loc.pos) + header.key_at() as u64, header.key_len)?;
        Some(KeyAt {
            key,
            expires_at: header.expires_at,
        })
    }
}

/// A record's key and expiry, read without its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyAt<'a> {
    pub key: &'a [u8],
    pub expires_at: Option<u64>,
}
