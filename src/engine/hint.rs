//! Hint files: a compact index of one sealed segment or merged file, so
//! that opening the engine does not have to read every record. In the
//! [envelope](super::envelope) every metadata file shares:
//!
//! ```text
//! header   8  magic "KVSTHNT\0"
//!          4  format version (2, or 3 for the active segment's hint;
//!             version 1 is still read)
//!          4  version 3: crc32 of the data file's first `length` bytes;
//!             versions 1 and 2: reserved, zero
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
//!
//! Sealed and merged files never change, so their hints (version 2) are
//! checked against the file's length alone. The active segment's hint
//! (version 3) is written only at a clean close, and the segment may be
//! appended to, cut back and appended to again after it: open uses it only
//! if the segment still has exactly the described length *and* the
//! checksum of those bytes, which [`Hint::check_covers`] decides.

use std::path::Path;

use super::envelope::{u32_at, u64_at, Envelope, Invalid};
use super::error;
use super::record::Kind;
use crate::durable;

const ENVELOPE: Envelope = Envelope {
    name: "hint",
    magic: b"KVSTHNT\0",
    version: ACTIVE_VERSION,
    oldest: 1,
    min_payload: PAYLOAD_MIN,
};
/// The version of the active segment's hint, which carries the checksum of
/// the bytes it describes. Older builds refuse it and scan the segment.
const ACTIVE_VERSION: u32 = 3;
/// Hints of sealed and merged files are written as version 2.
const SEALED: Envelope = Envelope {
    version: 2,
    ..ENVELOPE
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

/// Most entries gathered for one segment ([`Gathered`]): a segment with
/// more is scanned for its hint when sealed instead, which bounds the
/// memory gathering takes (about 40 bytes an entry).
pub const MAX_GATHERED: usize = 1 << 20;

/// The hint entries of the active segment, gathered as its records are
/// appended and verified, so that the hint written when it is sealed needs
/// no second read of the file. They describe exactly the segment's first
/// `len` bytes: an append that does not gather, or a cut, leaves `len`
/// apart from the segment's length, and the entries are then dropped (the
/// seal scans the file as before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gathered {
    /// Length of the segment's prefix the entries cover, header included.
    pub len: u64,
    pub entries: Vec<HintEntry>,
}

impl Gathered {
    /// The entries of a segment of `len` bytes (every committed record in
    /// it, in file order), unless there are too many to keep.
    pub fn new(len: u64, entries: Vec<HintEntry>) -> Option<Gathered> {
        (entries.len() <= MAX_GATHERED).then_some(Gathered { len, entries })
    }

    /// `this` continued by the bytes `[from, to)` of the same segment and
    /// the entries committed by them; `None` unless `this` covers exactly
    /// the bytes before `from`.
    pub fn extend(
        this: Option<Gathered>,
        from: u64,
        to: u64,
        entries: impl ExactSizeIterator<Item = HintEntry>,
    ) -> Option<Gathered> {
        let mut g = this.filter(|g| g.len == from && from <= to)?;
        if g.entries.len() + entries.len() > MAX_GATHERED {
            return None;
        }
        g.entries.extend(entries);
        g.len = to;
        Some(g)
    }

    /// The entries, if they cover exactly a file of `len` bytes.
    pub fn covering(this: Option<Gathered>, len: u64) -> Option<Vec<HintEntry>> {
        this.filter(|g| g.len == len).map(|g| g.entries)
    }
}

/// A decoded hint, before it is matched with a data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub version: u32,
    /// Length of the data file it describes, header included.
    pub data_len: u64,
    /// Version 3: the crc32 of the data file's first `data_len` bytes.
    pub data_crc: Option<u32>,
    pub entries: Vec<HintEntry>,
}

impl Hint {
    /// Whether this hint may index an active segment of `data_len` bytes
    /// whose crc32 is `data_crc`: only a version 3 hint written for exactly
    /// those bytes may. The error says why not.
    pub fn check_covers(&self, data_len: u64, data_crc: u32) -> Result<(), String> {
        let Some(crc) = self.data_crc else {
            return Err(format!(
                "a version {} hint has no checksum of the data",
                self.version
            ));
        };
        if self.data_len != data_len {
            return Err(format!(
                "hint describes {} bytes but the segment has {data_len}",
                self.data_len
            ));
        }
        if crc != data_crc {
            return Err(format!(
                "the segment's {data_len} bytes have crc32 {data_crc:#010x}, the hint says {crc:#010x}"
            ));
        }
        Ok(())
    }
}

/// Encodes a hint for a sealed or merged data file of `data_len` bytes.
pub fn encode(data_len: u64, entries: &[HintEntry]) -> Vec<u8> {
    encode_with(&SEALED, 0, data_len, entries)
}

/// Encodes the hint of an active segment of `data_len` bytes whose crc32
/// is `data_crc`.
pub fn encode_active(data_len: u64, data_crc: u32, entries: &[HintEntry]) -> Vec<u8> {
    encode_with(&ENVELOPE, data_crc, data_len, entries)
}

fn encode_with(envelope: &Envelope, word: u32, data_len: u64, entries: &[HintEntry]) -> Vec<u8> {
    let len: usize = entries.iter().map(HintEntry::encoded_len).sum();
    envelope.encode(PAYLOAD_MIN + len, |out| {
        out.extend_from_slice(&word.to_le_bytes());
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
    let hint = decode_any(bytes)?;
    if hint.data_len != data_len {
        return Err(Invalid::in_payload(
            4,
            format!(
                "hint describes {} bytes but the data file has {data_len}",
                hint.data_len
            ),
        ));
    }
    Ok(hint.entries)
}

/// Decodes a hint whatever data file it describes: its entries are checked
/// against the length it names.
pub fn decode_any(bytes: &[u8]) -> Result<Hint, Invalid> {
    let (version, payload) = ENVELOPE.open_versioned(bytes)?;
    let data_len = u64_at(payload, 4);
    let data_crc = (version >= ACTIVE_VERSION).then(|| u32_at(payload, 0));
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
    Ok(Hint {
        version,
        data_len,
        data_crc,
        entries: out,
    })
}

/// Writes a hint durably: a temporary file, fsync, rename, fsync of the
/// directory. A crash leaves either no hint or a complete one.
pub fn write(dir: &Path, name: &str, data_len: u64, entries: &[HintEntry]) -> error::Result<()> {
    Ok(durable::write_file(
        &dir.join(name),
        &encode(data_len, entries),
    )?)
}

/// Writes the hint of an active segment durably, as [`write`] does.
pub fn write_active(
    dir: &Path,
    name: &str,
    data_len: u64,
    data_crc: u32,
    entries: &[HintEntry],
) -> error::Result<()> {
    Ok(durable::write_file(
        &dir.join(name),
        &encode_active(data_len, data_crc, entries),
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

    /// The active segment's hint carries the checksum of the bytes it
    /// covers and is usable only for exactly those bytes; a sealed file's
    /// hint has no checksum and is never usable for an active segment.
    #[test]
    fn an_active_hint_covers_exactly_its_bytes() {
        let bytes = encode_active(142, 0xabcd_0123, &sample());
        let hint = decode_any(&bytes).unwrap();
        assert_eq!((hint.version, hint.data_len), (3, 142));
        assert_eq!(hint.data_crc, Some(0xabcd_0123));
        assert_eq!(hint.entries, sample());
        assert_eq!(decode(&bytes, 142).unwrap(), sample());
        assert!(hint.check_covers(142, 0xabcd_0123).is_ok());
        let grew = hint.check_covers(160, 0xabcd_0123).unwrap_err();
        assert!(grew.contains("describes 142 bytes"), "{grew}");
        let rewritten = hint.check_covers(142, 0xabcd_0124).unwrap_err();
        assert!(rewritten.contains("crc32"), "{rewritten}");
        let sealed = decode_any(&encode(142, &sample())).unwrap();
        assert_eq!((sealed.version, sealed.data_crc), (2, None));
        assert!(sealed.check_covers(142, 0).is_err());
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x04;
            assert!(decode_any(&bad).is_err(), "flip at {i}");
        }
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
