//! Hint files: a compact index of one sealed segment or merged file, so
//! that opening the engine does not have to read every record.
//!
//! ```text
//! header   8  magic "KVSTHNT\0"
//!          4  format version (1)
//!          4  reserved, zero
//!          8  length of the data file this hint describes
//! entries 17  each: kind u8 (1 put, 2 delete) | position u32 | length u32 | key hash u64
//! trailer  8  entry count
//!          4  crc32 of every byte before it
//! ```
//!
//! Entries are in file order and cover every put and delete record of the
//! data file (commit records are left out: a sealed file holds only whole
//! batches). A hint is an optimisation, never the only copy of anything: a
//! hint that is missing, damaged, or written for a different file length
//! is ignored and the data file is scanned instead.

use std::path::Path;

use super::error::Result;
use super::record::Kind;
use crate::durable;

const MAGIC: &[u8; 8] = b"KVSTHNT\0";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 24;
const ENTRY_LEN: usize = 17;
const TRAILER_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintEntry {
    pub kind: Kind,
    pub pos: u32,
    pub len: u32,
    pub hash: u64,
}

/// Encodes a hint for a data file of `data_len` bytes.
pub fn encode(data_len: u64, entries: &[HintEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + entries.len() * ENTRY_LEN + TRAILER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&data_len.to_le_bytes());
    for e in entries {
        out.push(match e.kind {
            Kind::Delete => 2,
            _ => 1,
        });
        out.extend_from_slice(&e.pos.to_le_bytes());
        out.extend_from_slice(&e.len.to_le_bytes());
        out.extend_from_slice(&e.hash.to_le_bytes());
    }
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a hint, checking it describes a data file of `data_len` bytes.
/// The error says why the hint is unusable.
pub fn decode(bytes: &[u8], data_len: u64) -> std::result::Result<Vec<HintEntry>, String> {
    let body_len = bytes
        .len()
        .checked_sub(TRAILER_LEN)
        .filter(|&n| n >= HEADER_LEN)
        .ok_or_else(|| {
            format!(
                "hint of {} bytes is shorter than header and trailer",
                bytes.len()
            )
        })?;
    let (body, trailer) = bytes.split_at(body_len);
    let stored_crc = u32::from_le_bytes(trailer[8..12].try_into().expect("4 bytes"));
    let actual = crc32fast::hash(&bytes[..body_len + 8]);
    if stored_crc != actual {
        return Err(format!(
            "checksum mismatch: stored {stored_crc:#010x}, computed {actual:#010x}"
        ));
    }
    if &body[0..8] != MAGIC {
        return Err("bad magic".into());
    }
    let version = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(format!("unsupported hint version {version}"));
    }
    let described = u64::from_le_bytes(body[16..24].try_into().expect("8 bytes"));
    if described != data_len {
        return Err(format!(
            "hint describes {described} bytes but the data file has {data_len}"
        ));
    }
    let entries = &body[HEADER_LEN..];
    let count = u64::from_le_bytes(trailer[0..8].try_into().expect("8 bytes"));
    if entries.len() % ENTRY_LEN != 0 || (entries.len() / ENTRY_LEN) as u64 != count {
        return Err(format!(
            "entry area of {} bytes does not hold {count} entries",
            entries.len()
        ));
    }
    let mut out = Vec::with_capacity(entries.len() / ENTRY_LEN);
    let mut prev_end = 0u64;
    for (i, e) in entries.chunks_exact(ENTRY_LEN).enumerate() {
        let kind = match e[0] {
            1 => Kind::Put,
            2 => Kind::Delete,
            other => return Err(format!("entry {i}: unknown kind {other}")),
        };
        let pos = u32::from_le_bytes(e[1..5].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(e[5..9].try_into().expect("4 bytes"));
        let end = u64::from(pos) + u64::from(len);
        // Entries must be in file order, inside the data file.
        if u64::from(pos) < prev_end || end > data_len || len == 0 {
            return Err(format!(
                "entry {i}: range {pos}+{len} is out of order or out of the file"
            ));
        }
        prev_end = end;
        out.push(HintEntry {
            kind,
            pos,
            len,
            hash: u64::from_le_bytes(e[9..17].try_into().expect("8 bytes")),
        });
    }
    Ok(out)
}

/// Writes a hint durably: a temporary file, fsync, rename, fsync of the
/// directory. A crash leaves either no hint or a complete one.
pub fn write(dir: &Path, name: &str, data_len: u64, entries: &[HintEntry]) -> Result<()> {
    Ok(durable::write_file(
        &dir.join(name),
        &encode(data_len, entries),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<HintEntry> {
        vec![
            HintEntry {
                kind: Kind::Put,
                pos: 32,
                len: 40,
                hash: 1,
            },
            HintEntry {
                kind: Kind::Delete,
                pos: 72,
                len: 20,
                hash: u64::MAX,
            },
        ]
    }

    #[test]
    fn round_trips() {
        let bytes = encode(92, &sample());
        assert_eq!(decode(&bytes, 92).unwrap(), sample());
        assert_eq!(decode(&encode(32, &[]), 32).unwrap(), vec![]);
    }

    #[test]
    fn any_damage_or_mismatch_is_refused() {
        let bytes = encode(92, &sample());
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad, 92).is_err(), "flip at {i}");
        }
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], 92).is_err(), "cut at {cut}");
        }
        assert!(decode(&bytes, 93).unwrap_err().contains("describes"));
    }
}
