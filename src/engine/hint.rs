//! Hint files: a compact index of one sealed segment or merged file, so
//! that opening the engine does not have to read every record. In the
//! [envelope](super::envelope) every metadata file shares:
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

use super::envelope::{u32_at, u64_at, Envelope, Invalid};
use super::error;
use super::record::Kind;
use crate::durable;

const ENVELOPE: Envelope = Envelope {
    name: "hint",
    magic: b"KVSTHNT\0",
    version: 1,
    min_payload: PAYLOAD_MIN,
};
/// Payload of a hint without entries: reserved, data length, entry count.
const PAYLOAD_MIN: usize = 4 + 8 + 8;
/// Payload position of the first entry.
const ENTRIES_AT: usize = 12;
const ENTRY_LEN: usize = 17;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintEntry {
    pub kind: Kind,
    pub pos: u32,
    pub len: u32,
    pub hash: u64,
}

/// Encodes a hint for a data file of `data_len` bytes.
pub fn encode(data_len: u64, entries: &[HintEntry]) -> Vec<u8> {
    ENVELOPE.encode(PAYLOAD_MIN + entries.len() * ENTRY_LEN, |out| {
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
    })
}

/// Decodes a hint, checking it describes a data file of `data_len` bytes.
/// The error says why the hint is unusable and where.
pub fn decode(bytes: &[u8], data_len: u64) -> Result<Vec<HintEntry>, Invalid> {
    let payload = ENVELOPE.open(bytes)?;
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
    if entries.len() % ENTRY_LEN != 0 || (entries.len() / ENTRY_LEN) as u64 != count {
        return Err(Invalid::in_payload(
            count_at,
            format!(
                "entry area of {} bytes does not hold {count} entries",
                entries.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(entries.len() / ENTRY_LEN);
    let mut prev_end = 0u64;
    for (i, e) in entries.chunks_exact(ENTRY_LEN).enumerate() {
        let at = ENTRIES_AT + i * ENTRY_LEN;
        let kind = match e[0] {
            1 => Kind::Put,
            2 => Kind::Delete,
            other => {
                return Err(Invalid::in_payload(
                    at,
                    format!("entry {i}: unknown kind {other}"),
                ))
            }
        };
        let (pos, len) = (u32_at(e, 1), u32_at(e, 5));
        let end = u64::from(pos) + u64::from(len);
        // Entries must be in file order, inside the data file.
        if u64::from(pos) < prev_end || end > data_len || len == 0 {
            return Err(Invalid::in_payload(
                at,
                format!("entry {i}: range {pos}+{len} is out of order or out of the file"),
            ));
        }
        prev_end = end;
        out.push(HintEntry {
            kind,
            pos,
            len,
            hash: u64_at(e, 9),
        });
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
        // The described length is the payload's second field.
        assert_eq!(decode(&bytes, 93).unwrap_err().offset, 16);
    }

    /// Every checked-in v1 hint file decodes against its data file and
    /// encodes back to the same bytes: the envelope did not change the
    /// format.
    #[test]
    fn the_v1_hints_encode_byte_for_byte() {
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
            assert_eq!(encode(data_len, &entries), bytes, "{name}");
            seen += 1;
        }
        assert!(seen >= 3, "the fixture has {seen} hint files");
    }
}
