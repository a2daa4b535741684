//! Data files: log segments and merged files share one layout, a 32-byte
//! header followed by records.
//!
//! ```text
//! offset  size  field
//!      0     8  magic: "KVSTSEG\0" (segment) or "KVSTMRG\0" (merged file)
//!      8     4  format version: 2 for files this build creates; 1 is
//!               still read
//!     12     4  index: 0 for a segment, the file's number within its
//!               merged generation otherwise
//!     16     8  base: a segment's global base offset, or a merged
//!               generation's horizon
//!     24     4  reserved, zero
//!     28     4  crc32 of bytes 0..28
//! ```
//!
//! Header bytes are not part of the global offset space: the byte at file
//! position `p` of segment `base` has global offset `base + p - 32`.
//!
//! A [`DataFile`] is the read side of one file. Every file is memory-mapped
//! read-only; the active segment is mapped at its full capacity so appends
//! become visible without remapping. Reads stop at the file's readable
//! length, and a mapped file is never shortened below it (see the SAFETY
//! comment in [`DataFile::new`] for the two places that shorten a file),
//! so a read through a mapping never touches a page past the end of its
//! file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};

use super::error::{Error, IoContext, Result};
use super::record::MAX_APPEND_BYTES;
use crate::durable;

pub const FILE_HEADER_LEN: u64 = 32;
/// The format version of the files this build creates: 2 added the put
/// with expiry (record kind 0x04) and hint entries that carry the expiry.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this build reads.
pub const MIN_FORMAT_VERSION: u32 = 1;
const SEGMENT_MAGIC: &[u8; 8] = b"KVSTSEG\0";
const MERGED_MAGIC: &[u8; 8] = b"KVSTMRG\0";

/// Which role a data file plays, as named by its file name and header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileKind {
    /// A log segment starting at this global offset.
    Segment { base: u64 },
    /// File `index` of the merged generation with this horizon.
    Merged { horizon: u64, index: u32 },
}

impl FileKind {
    /// The data file's name inside the data directory.
    pub fn file_name(&self) -> String {
        match self {
            FileKind::Segment { base } => format!("{base:020}.seg"),
            FileKind::Merged { horizon, index } => format!("merged-{horizon:020}-{index:04}.dat"),
        }
    }

    /// The name of the hint file that indexes this data file.
    pub fn hint_name(&self) -> String {
        match self {
            FileKind::Segment { base } => format!("{base:020}.hint"),
            FileKind::Merged { horizon, index } => format!("merged-{horizon:020}-{index:04}.hint"),
        }
    }

    /// Parses a data file name; `None` for any other file.
    pub fn parse(name: &str) -> Option<FileKind> {
        if let Some(stem) = name.strip_suffix(".seg") {
            if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
                return stem.parse().ok().map(|base| FileKind::Segment { base });
            }
            return None;
        }
        let stem = name.strip_prefix("merged-")?.strip_suffix(".dat")?;
        let (horizon, index) = stem.split_once('-')?;
        if horizon.len() != 20 || index.len() != 4 {
            return None;
        }
        if !(horizon.bytes().all(|b| b.is_ascii_digit())
            && index.bytes().all(|b| b.is_ascii_digit()))
        {
            return None;
        }
        Some(FileKind::Merged {
            horizon: horizon.parse().ok()?,
            index: index.parse().ok()?,
        })
    }

    fn magic(&self) -> &'static [u8; 8] {
        match self {
            FileKind::Segment { .. } => SEGMENT_MAGIC,
            FileKind::Merged { .. } => MERGED_MAGIC,
        }
    }

    fn header_fields(&self) -> (u32, u64) {
        match *self {
            FileKind::Segment { base } => (0, base),
            FileKind::Merged { horizon, index } => (index, horizon),
        }
    }

    /// The encoded header for a new file of this kind.
    pub fn header(&self) -> [u8; FILE_HEADER_LEN as usize] {
        self.header_of_version(FORMAT_VERSION)
    }

    /// The header a file of this kind has when written by `version`.
    fn header_of_version(&self, version: u32) -> [u8; FILE_HEADER_LEN as usize] {
        let (index, base) = self.header_fields();
        let mut h = [0u8; FILE_HEADER_LEN as usize];
        h[0..8].copy_from_slice(self.magic());
        h[8..12].copy_from_slice(&version.to_le_bytes());
        h[12..16].copy_from_slice(&index.to_le_bytes());
        h[16..24].copy_from_slice(&base.to_le_bytes());
        let crc = crc32fast::hash(&h[0..28]);
        h[28..32].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Checks that `bytes` start with this kind's header; the reason on
    /// failure names what differs.
    pub fn check_header(&self, bytes: &[u8]) -> std::result::Result<(), String> {
        let Some(h) = bytes.get(..FILE_HEADER_LEN as usize) else {
            return Err(format!(
                "file is {} bytes, shorter than its header",
                bytes.len()
            ));
        };
        if &h[0..8] != self.magic() {
            return Err("bad magic: not a kvstore data file of this kind".into());
        }
        let stored = u32::from_le_bytes([h[28], h[29], h[30], h[31]]);
        if stored != crc32fast::hash(&h[0..28]) {
            return Err("header checksum mismatch".into());
        }
        let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(format!(
                "unsupported format version {version} (this build reads {MIN_FORMAT_VERSION} to {FORMAT_VERSION})"
            ));
        }
        if h != self.header_of_version(version) {
            return Err("header does not match the file name".into());
        }
        Ok(())
    }
}

/// Bytes of address space the active segment is mapped with, so that it
/// grows without a remap: a segment is sealed once it is over
/// `segment_max_bytes`, and the append that crosses the limit adds at most
/// [`MAX_APPEND_BYTES`].
pub fn active_capacity(segment_max_bytes: u64) -> u64 {
    FILE_HEADER_LEN + segment_max_bytes + MAX_APPEND_BYTES as u64
}

/// Deletes the data file of `kind` and its hint; either may be gone
/// already. The caller fsyncs the directory.
pub fn remove(dir: &Path, kind: FileKind) -> Result<()> {
    for name in [kind.file_name(), kind.hint_name()] {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::io("remove", path, e))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Creates a new data file holding only its header, fsynced, and fsyncs
/// the directory. Fails if the file exists.
pub fn create(dir: &Path, kind: FileKind) -> Result<File> {
    let path = dir.join(kind.file_name());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .at("create", &path)?;
    // A plain write leaves the cursor after the header, where a sequential
    // writer (compaction) continues; appenders use positioned writes.
    (&file)
        .write_all(&kind.header())
        .and_then(|_| file.sync_all())
        .at("write header of", &path)?;
    durable::sync_dir(dir)?;
    Ok(file)
}

/// The read side of one data file.
pub struct DataFile {
    /// In-memory identity, never reused while the process runs; the
    /// keydir names files by it.
    pub id: u32,
    pub kind: FileKind,
    pub path: PathBuf,
    file: File,
    map: Mmap,
    /// File length that holds complete, written records; reads never go
    /// past it. Grows as the writer hands bytes to the OS.
    readable: AtomicU64,
}

impl DataFile {
    /// Maps `file`, reserving `capacity` bytes of address space so that the
    /// active segment can grow without a remap.
    pub fn new(
        id: u32,
        kind: FileKind,
        path: PathBuf,
        file: File,
        len: u64,
        capacity: u64,
    ) -> Result<Self> {
        let map_len = capacity.max(len).max(FILE_HEADER_LEN);
        let map_len = usize::try_from(map_len).map_err(|_| Error::InvalidOption {
            name: "segment_max_bytes",
            reason: format!("{map_len} bytes cannot be mapped on this platform"),
        })?;
        // SAFETY: the mapping is read-only, and every read through it stays
        // below `readable` (`slice` and `tail_from` check it), which is never
        // above the file's length: the file is only appended to, and the
        // engine shortens a file below `readable` in two places only, both
        // in recovery and before any other thread can reach the file (a
        // roll and a clean close also shorten the active file, but only to
        // `readable`, dropping the zeros the writer wrote ahead of it):
        // - `recovery::open_active` rewrites a file shorter than its header
        //   (an interrupted creation) before mapping it;
        // - `recovery::recover` cuts a torn tail off the active segment it
        //   has just mapped, after `build_index` lowered `readable` to the
        //   cut, and before the file table holding it is published.
        // Truncating the log for replication never shortens a file in
        // place: it writes the kept prefix to a new file and renames it
        // over the old one, so existing mappings keep the old inode. The
        // directory's LOCK file keeps other kvstore processes out.
        let map = unsafe { MmapOptions::new().len(map_len).map(&file) }.at("mmap", &path)?;
        Ok(DataFile {
            id,
            kind,
            path,
            file,
            map,
            readable: AtomicU64::new(len),
        })
    }

    pub fn readable_len(&self) -> u64 {
        self.readable.load(Ordering::Acquire)
    }

    /// Publishes that the file now holds `len` bytes of written records.
    pub fn set_readable_len(&self, len: u64) {
        self.readable.store(len, Ordering::Release);
    }

    /// The bytes at `[pos, pos + len)`, if they are within the readable
    /// part of the file.
    pub fn slice(&self, pos: u64, len: usize) -> Option<&[u8]> {
        let end = pos.checked_add(len as u64)?;
        if end > self.readable_len() {
            return None;
        }
        let start = usize::try_from(pos).ok()?;
        self.map.get(start..start.checked_add(len)?)
    }

    /// [`DataFile::slice`] as shared bytes that keep the file mapped: no
    /// copy of the data, which stays in the page cache until a writer
    /// (e.g. a socket) reads it. The range is within the readable part of
    /// the file, which is never shortened while mapped, so the bytes
    /// cannot change under the holder.
    pub fn shared(self: &Arc<Self>, pos: u64, len: usize) -> Option<Bytes> {
        self.slice(pos, len)?;
        let start = usize::try_from(pos).ok()?;
        Some(Bytes::from_owner(MappedRange {
            file: Arc::clone(self),
            start,
            len,
        }))
    }

    /// Everything readable from `pos` on (for scans).
    pub fn tail_from(&self, pos: u64) -> &[u8] {
        let end = usize::try_from(self.readable_len())
            .unwrap_or(usize::MAX)
            .min(self.map.len());
        let start = usize::try_from(pos).unwrap_or(usize::MAX).min(end);
        &self.map[start..end]
    }

    /// The underlying file, for positioned reads of very large ranges.
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// A checked range of a mapped file, owned by the [`Bytes`] that views it.
struct MappedRange {
    file: Arc<DataFile>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for MappedRange {
    fn as_ref(&self) -> &[u8] {
        // Checked by `DataFile::shared` against the readable length, which
        // only grows while the file is mapped.
        &self.file.map[self.start..self.start + self.len]
    }
}

impl std::fmt::Debug for DataFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataFile")
            .field("id", &self.id)
            .field("path", &self.path)
            .field("readable", &self.readable_len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in [
            FileKind::Segment { base: 0 },
            FileKind::Segment { base: 104_857_600 },
            FileKind::Merged {
                horizon: 77,
                index: 3,
            },
        ] {
            assert_eq!(FileKind::parse(&kind.file_name()), Some(kind));
        }
        for bad in [
            "LOCK",
            "1.seg",
            "merged-1-1.dat",
            "00000000000000000000.hint",
            "x0000000000000000000.seg",
        ] {
            assert_eq!(FileKind::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn header_checks_name_magic_and_crc() {
        let kind = FileKind::Segment { base: 4096 };
        let header = kind.header();
        assert!(kind.check_header(&header).is_ok());
        assert!(FileKind::Segment { base: 0 }.check_header(&header).is_err());
        assert!(FileKind::Merged {
            horizon: 4096,
            index: 0
        }
        .check_header(&header)
        .is_err());
        let mut bad = header;
        bad[17] ^= 1;
        assert!(kind.check_header(&bad).unwrap_err().contains("checksum"));
        assert!(kind.check_header(&header[..10]).is_err());
    }

    #[test]
    fn version_1_headers_are_read_and_unknown_versions_refused() {
        let kind = FileKind::Segment { base: 4096 };
        assert_eq!(FORMAT_VERSION, 2);
        assert_eq!(kind.header()[8..12], 2u32.to_le_bytes());
        assert!(kind.check_header(&kind.header_of_version(1)).is_ok());
        for version in [0, 3, u32::MAX] {
            let why = kind
                .check_header(&kind.header_of_version(version))
                .unwrap_err();
            assert!(why.contains("unsupported format version"), "{why}");
        }
    }
}
