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
    /// The version written.
    pub version: u32,
    /// The oldest version still read (equal to `version` for a kind whose
    /// layout never changed).
    pub oldest: u32,
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
        self.open_versioned(bytes).map(|(_, payload)| payload)
    }

    /// As [`Envelope::open`], also returning the file's version (between
    /// [`Envelope::oldest`] and [`Envelope::version`]).
    pub fn open_versioned<'a>(&self, bytes: &'a [u8]) -> Result<(u32, &'a [u8]), Invalid> {
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
        if !(self.oldest..=self.version).contains(&version) {
            return Err(Invalid {
                offset: 8,
                reason: format!("unsupported {} version {version}", self.name),
            });
        }
        Ok((version, &body[HEADER_LEN..]))
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
    use super::*;

    const TEST: Envelope = Envelope {
        name: "test file",
        magic: b"KVSTTST\0",
        version: 3,
        oldest: 2,
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
        let newer = Envelope {
            version: 4,
            oldest: 4,
            ..TEST
        };
        assert_eq!(newer.open(&bytes).unwrap_err().offset, 8);
        let older = Envelope { version: 2, ..TEST };
        let older_bytes = older.encode(3, |out| out.extend_from_slice(b"abc"));
        assert_eq!(TEST.open_versioned(&older_bytes).unwrap(), (2, &b"abc"[..]));
        let oldest = Envelope { version: 1, ..TEST };
        let oldest_bytes = oldest.encode(3, |out| out.extend_from_slice(b"abc"));
        assert_eq!(TEST.open(&oldest_bytes).unwrap_err().offset, 8);
    }
}
