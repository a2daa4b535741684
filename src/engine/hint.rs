//! Hint files: a compact index of one sealed segment or merged file, so
//! that opening the engine does not have to read every record. In the
//! [envelope](super::envelope) every metadata file shares:
//!
//! ```text
//! header   8  magic "KVSTHNT\0"
//!          4  format version (2; version 1 is still read)
//!          4  reserved, zero
//!          8  length of the data file this hint describes
//! entries     each: kind u8 (1 put, 2 delete, 3 put with expiry)
//!             | position u32 | length u32 | key hash u64
//!             | kind 3 only: expiry u64 (ms since the Unix epoch)
//! trailer  8  entry count
//!          4  crc32 of every byte before it
//! ```
//!
//! Version 1 hints have no kind 3 entries, so every entry is 17 bytes.
//! The expiry is in the hint because recovery needs it for the index of
//! keys with an expiry (the sweep's side index) without reading records.
//!
//! Entries are in file order and cover every put and delete record of the
//! data file (commit records are left out: a sealed file holds only whole
//! batches). A hint is an optimisation, never the only copy of anything: a
//! hint that is missing, damaged, or written for a different file length
//! is ignored and the data file is scanned instead.

use std::path::Path;

use super::envelope::{u32_at, u64_at, Envelope, Invalid};
use super::error;
use super::record::Kind;
use crate::durable;

const ENVELOPE: Envelope = Envelope {
    name: "hint",
    magic: b"KVSTHNT\0",
    version: 2,
    oldest: 1,
    min_payload: PAYLOAD_MIN,
};
/// Payload of a hint without entries: reserved, data length, entry count.
const PAYLOAD_MIN: usize = 4 + 8 + 8;
/// Payload position of the first entry.
const ENTRIES_AT: usize = 12;
/// Bytes of an entry without expiry.
const ENTRY_LEN: usize = 17;
/// Bytes of an entry with expiry.
const EXPIRING_ENTRY_LEN: usize = ENTRY_LEN + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintEntry {
    pub kind: Kind,
    pub pos: u32,
    pub len: u32,
    pub hash: u64,
    /// The expiry of a put with expiry.
    pub expires_at: Option<u64>,
}

impl HintEntry {
    fn encoded_len(&self) -> usize {
        if self.expires_at.is_some() {
            EXPIRING_ENTRY_LEN
        } else {
            ENTRY_LEN
        }
    }
}

/// Encodes a hint for a data file of `data_len` bytes.
pub fn encode(data_len: u64, entries: &[HintEntry]) -> Vec<u8> {
    let len: usize = entries.iter().map(HintEntry::encoded_len).sum();
    ENVELOPE.encode(PAYLOAD_MIN + len, |out| {
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&data_len.to_le_bytes());
        for e in entries {
            out.push(match (e.kind, e.expires_at) {
                (Kind::Delete, _) => 2,
                (_, Some(_)) => 3,
                _ => 1,
            });
            out.extend_from_slice(&e.pos.to_le_bytes());
            out.extend_from_slice(&e.len.to_le_bytes());
            out.extend_from_slice(&e.hash.to_le_bytes());
            if let Some(at) = e.expires_at {
                out.extend_from_slice(&at.to_le_bytes());
            }
        }
        out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    })
}

/// Decodes a hint, checking it describes a data file of `data_len` bytes.
/// The error says why the hint is unusable and where.
pub fn decode(bytes: &[u8], data_len: u64) -> Result<Vec<HintEntry>, Invalid> {
    let (version, payload) = ENVELOPE.open_versioned(bytes)?;
    let described = u64_at(payload, 4);
    if described != data_len {
        return Err(Invalid::in_payload(
            4,
            format!("hint describes {described} bytes but the data file has {data_len}"),
        ));
    }
    let count_at = payload.len() - 8;
    let entries = &payload[ENTRIES_AT..count_at];
    let count = u64_at(payload, count_at);
    let wrong_count = || {
        Invalid::in_payload(
            count_at,
            format!(
                "entry area of {} bytes does not hold {count} entries",
                entries.len()
            ),
        )
    };
    // Every entry takes at least ENTRY_LEN bytes: bounds the allocation.
    if count > (entries.len() / ENTRY_LEN) as u64 {
        return Err(wrong_count());
    }
    let mut out = Vec::with_capacity(count as usize);
    let mut prev_end = 0u64;
    let mut at = 0usize;
    while at < entries.len() {
        let i = out.len();
        let here = ENTRIES_AT + at;
        let Some(e) = entries.get(at..at + ENTRY_LEN) else {
            return Err(wrong_count());
        };
        let (kind, expiring) = match e[0] {
            1 => (Kind::Put, false),
            2 => (Kind::Delete, false),
            3 if version >= 2 => (Kind::Put, true),
            other => {
                return Err(Invalid::in_payload(
                    here,
                    format!("entry {i}: unknown kind {other}"),
                ))
            }
        };
        let expires_at = if expiring {
            let Some(field) = entries.get(at + ENTRY_LEN..at + EXPIRING_ENTRY_LEN) else {
                return Err(wrong_count());
            };
            Some(u64_at(field, 0))
        } else {
            None
        };
        let (pos, len) = (u32_at(e, 1), u32_at(e, 5));
        let end = u64::from(pos) + u64::from(len);
        // Entries must be in file order, inside the data file.
        if u64::from(pos) < prev_end || end > data_len || len == 0 {
            return Err(Invalid::in_payload(
                here,
                format!("entry {i}: range {pos}+{len} is out of order or out of the file"),
            ));
        }
        prev_end = end;
        let entry = HintEntry {
            kind,
            pos,
            len,
            hash: u64_at(e, 9),
            expires_at,
        };
        at += entry.encoded_len();
        out.push(entry);
    }
    if out.len() as u64 != count {
        return Err(wrong_count());
    }
    Ok(out)
}

/// Writes a hint durably: a temporary file, fsync, rename, fsync of the
/// directory. A crash leaves either no hint or a complete one.
pub fn write(dir: &Path, name: &str, data_len: u64, entries: &[HintEntry]) -> error::Result<()> {
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
                expires_at: None,
            },
            HintEntry {
                kind: Kind::Delete,
                pos: 72,
                len: 20,
                hash: u64::MAX,
                expires_at: None,
            },
            HintEntry {
                kind: Kind::Put,
                pos: 92,
                len: 50,
                hash: 7,
                expires_at: Some(1_700_000_000_000),
            },
        ]
    }

    #[test]
    fn round_trips() {
        let bytes = encode(142, &sample());
        assert_eq!(decode(&bytes, 142).unwrap(), sample());
        assert_eq!(decode(&encode(32, &[]), 32).unwrap(), vec![]);
    }

    #[test]
    fn any_damage_or_mismatch_is_refused() {
        let bytes = encode(142, &sample());
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad, 142).is_err(), "flip at {i}");
        }
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], 142).is_err(), "cut at {cut}");
        }
        // The described length is the payload's second field.
        assert_eq!(decode(&bytes, 143).unwrap_err().offset, 16);
    }

    /// A version 1 hint cannot hold an entry with expiry: kind 3 is
    /// refused there even with a correct checksum.
    #[test]
    fn version_1_hints_have_no_expiring_entries() {
        let v1 = Envelope {
            version: 1,
            ..ENVELOPE
        };
        let payload = |kind: u8| {
            v1.encode(0, |out| {
                out.extend_from_slice(&0u32.to_le_bytes());
                out.extend_from_slice(&100u64.to_le_bytes());
                out.push(kind);
                out.extend_from_slice(&32u32.to_le_bytes());
                out.extend_from_slice(&10u32.to_le_bytes());
                out.extend_from_slice(&5u64.to_le_bytes());
                if kind == 3 {
                    out.extend_from_slice(&9u64.to_le_bytes());
                }
                out.extend_from_slice(&1u64.to_le_bytes());
            })
        };
        assert_eq!(decode(&payload(1), 100).unwrap().len(), 1);
        let err = decode(&payload(3), 100).unwrap_err();
        assert!(err.reason.contains("unknown kind 3"), "{err}");
    }

    /// Every checked-in version 1 hint file still decodes against its data
    /// file, and its entries (none with expiry) survive a version 2
    /// encoding. Version 2 encodes an entry without expiry exactly as
    /// version 1 did: only the version field differs.
    #[test]
    fn the_v1_hints_still_decode() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".hint") else {
                continue;
            };
            let data = if stem.starts_with("merged-") {
                format!("{stem}.dat")
            } else {
                format!("{stem}.seg")
            };
            let data_len = std::fs::metadata(dir.join(&data)).unwrap().len();
            let bytes = std::fs::read(dir.join(&name)).unwrap();
            let entries = decode(&bytes, data_len).unwrap();
            assert!(!entries.is_empty(), "{name}");
            assert!(entries.iter().all(|e| e.expires_at.is_none()), "{name}");
            let again = encode(data_len, &entries);
            assert_eq!(decode(&again, data_len).unwrap(), entries, "{name}");
            assert_eq!(again[12..again.len() - 4], bytes[12..bytes.len() - 4]);
            assert_eq!(again[8..12], 2u32.to_le_bytes());
            seen += 1;
        }
        assert!(seen >= 3, "the fixture has {seen} hint files");
    }
}
