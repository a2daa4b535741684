//! The envelope of the engine's small metadata files: the epoch history
//! (`EPOCHS`), the merged-generation manifest (`MERGED`) and hint files.
//!
//! ```text
//!  8  magic: names the kind of file
//!  4  format version
//!  .  payload: the kind's own fields
//!  4  crc32 of every byte before it
//! ```
//!
//! A reader checks, in this order, that the file is long enough for the
//! envelope and the kind's smallest payload, the checksum, the magic and
//! the version; only then does it parse the payload. One bad byte anywhere
//! is caught by the checksum before any field is trusted.

use std::fmt;
use std::io::ErrorKind;
use std::path::Path;

use super::error::{Error, Result};

/// Bytes before the payload: magic and version.
pub const HEADER_LEN: usize = 12;
/// Bytes after the payload: the checksum.
pub const TRAILER_LEN: usize = 4;

/// One kind of enveloped file.
#[derive(Debug, Clone, Copy)]
pub struct Envelope {
    /// What the file is, for error messages ("epoch history").
    pub name: &'static str,
    pub magic: &'static [u8; 8],
    pub version: u32,
    /// The smallest valid payload, in bytes.
    pub min_payload: usize,
}

/// Why the bytes of an enveloped file are not valid, and where: `offset`
/// is the byte of the file at which the problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub offset: u64,
    pub reason: String,
}

impl Invalid {
    /// A problem at byte `offset` of the payload.
    pub fn in_payload(offset: usize, reason: impl Into<String>) -> Invalid {
        Invalid {
            offset: (HEADER_LEN + offset) as u64,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.reason, self.offset)
    }
}

impl std::error::Error for Invalid {}

impl Envelope {
    /// Encodes a file whose payload `payload` appends (`payload_len` bytes
    /// are reserved for it).
    pub fn encode(&self, payload_len: usize, payload: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + payload_len + TRAILER_LEN);
        out.extend_from_slice(self.magic);
        out.extend_from_slice(&self.version.to_le_bytes());
        payload(&mut out);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Checks the envelope of `bytes` and returns the payload, which is at
    /// least [`Envelope::min_payload`] bytes long.
    pub fn open<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8], Invalid> {
        let min = HEADER_LEN + self.min_payload + TRAILER_LEN;
        let Some(body_len) = bytes
            .len()
            .checked_sub(TRAILER_LEN)
            .filter(|_| bytes.len() >= min)
        else {
            return Err(Invalid {
                offset: bytes.len() as u64,
                reason: format!(
                    "{} of {} bytes is shorter than the {min} bytes of the smallest one",
                    self.name,
                    bytes.len()
                ),
            });
        };
        let (body, trailer) = bytes.split_at(body_len);
        let stored = u32_at(trailer, 0);
        let computed = crc32fast::hash(body);
        if stored != computed {
            return Err(Invalid {
                offset: body_len as u64,
                reason: format!(
                    "{} checksum mismatch: stored {stored:#010x}, computed {computed:#010x}",
                    self.name
                ),
            });
        }
        if &body[..8] != self.magic {
            return Err(Invalid {
                offset: 0,
                reason: format!("bad {} magic", self.name),
            });
        }
        let version = u32_at(body, 8);
        if version != self.version {
            return Err(Invalid {
                offset: 8,
                reason: format!("unsupported {} version {version}", self.name),
            });
        }
        Ok(&body[HEADER_LEN..])
    }
}

/// Reads and decodes the enveloped file at `path`: `None` if there is no
/// such file, [`Error::Corrupt`] at the offending byte if it is invalid.
pub fn read_file<T>(
    path: &Path,
    decode: impl FnOnce(&[u8]) -> std::result::Result<T, Invalid>,
) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => decode(&bytes)
            .map(Some)
            .map_err(|e| Error::corrupt(path, e.offset, e.reason)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// The little-endian u32 at `at`; the caller has checked the length.
pub fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// The little-endian u64 at `at`; the caller has checked the length.
pub fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::epochs::EpochHistory;
    use super::super::hint;
    use super::super::manifest::{self, Manifest};
    use super::*;

    const TEST: Envelope = Envelope {
        name: "test file",
        magic: b"KVSTTST\0",
        version: 3,
        min_payload: 2,
    };

    #[test]
    fn round_trips_and_names_where_damage_is() {
        let bytes = TEST.encode(3, |out| out.extend_from_slice(b"abc"));
        assert_eq!(bytes.len(), HEADER_LEN + 3 + TRAILER_LEN);
        assert_eq!(TEST.open(&bytes).unwrap(), b"abc");
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            let err = TEST.open(&bad).unwrap_err();
            assert_eq!(err.offset, 15, "flip at {i}: {err}");
            assert!(err.reason.contains("checksum"), "{err}");
        }
        let short = TEST.encode(1, |out| out.push(b'a'));
        assert_eq!(TEST.open(&short).unwrap_err().offset, 17);
        let other = Envelope {
            magic: b"KVSTOTH\0",
            ..TEST
        };
        assert_eq!(other.open(&bytes).unwrap_err().offset, 0);
        let newer = Envelope { version: 4, ..TEST };
        assert_eq!(newer.open(&bytes).unwrap_err().offset, 8);
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/v1")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The checked-in v1 manifest decodes and encodes back to the same
    /// bytes: the envelope did not change the format.
    #[test]
    fn the_v1_manifest_encodes_byte_for_byte() {
        let bytes = fixture(manifest::FILE_NAME);
        let m = Manifest::decode(&bytes).unwrap();
        assert_eq!(m.file_lens.len(), 2);
        assert_eq!(m.encode(), bytes);
    }

    /// Every checked-in v1 hint file decodes against its data file and
    /// encodes back to the same bytes.
    #[test]
    fn the_v1_hints_encode_byte_for_byte() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
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
            let bytes = fixture(&name);
            let entries = hint::decode(&bytes, data_len).unwrap();
            assert!(!entries.is_empty(), "{name}");
            assert_eq!(hint::encode(data_len, &entries), bytes, "{name}");
            seen += 1;
        }
        assert!(seen >= 3, "the fixture has {seen} hint files");
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
