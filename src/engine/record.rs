//! The on-disk record: the unit of the log, of merged files and of
//! replication.
//!
//! ```text
//! offset  size  field
//!      0     4  crc32 (IEEE, crc32fast) of every byte after this field
//!      4     1  kind: 0x01 put, 0x02 delete, 0x03 batch commit;
//!               bit 0x80 set on a put/delete that belongs to a batch
//!      5     4  epoch of the master that wrote the record
//!      9     4  key length
//!     13     4  value length
//!     17     .  key bytes, then value bytes
//! ```
//!
//! All integers are little-endian. Lengths are checked against
//! [`MAX_KEY_LEN`] and [`MAX_VALUE_LEN`] before anything is allocated or
//! summed, so a hostile header can never make a reader allocate or index
//! past what the limits allow.
//!
//! A batch is written as its put/delete records with the batch bit set,
//! followed by one commit record whose value is the number of records in the
//! batch. Readers (recovery, replicas) make batch members visible only when
//! the commit record is seen, so a batch is all-or-nothing.

use std::fmt;

/// Bytes before the key: crc, kind, epoch, key length, value length.
pub const HEADER_LEN: usize = 17;
/// Largest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 64 * 1024;
/// Largest value accepted, in bytes.
pub const MAX_VALUE_LEN: usize = 64 * 1024 * 1024;
/// Largest encoded record.
pub const MAX_RECORD_LEN: usize = HEADER_LEN + MAX_KEY_LEN + MAX_VALUE_LEN;
/// Largest single append (one record or one whole batch), encoded.
pub const MAX_APPEND_BYTES: usize = 128 * 1024 * 1024;

const BATCH_BIT: u8 = 0x80;
const KIND_PUT: u8 = 0x01;
const KIND_DELETE: u8 = 0x02;
const KIND_COMMIT: u8 = 0x03;
/// Length of a commit record's value: the member count as u32.
const COMMIT_VALUE_LEN: usize = 4;

/// What a record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Sets `key` to `value`.
    Put,
    /// Removes `key`; the value is empty.
    Delete,
    /// Ends a batch: makes the preceding `count` batch members visible.
    Commit,
}

/// A decoded record, borrowing its key and value from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: Kind,
    /// True for a put or delete that belongs to a batch.
    pub in_batch: bool,
    pub epoch: u32,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl<'a> Record<'a> {
    /// Number of batch members a commit record closes.
    pub fn commit_count(&self) -> Option<u32> {
        if self.kind != Kind::Commit {
            return None;
        }
        let bytes: [u8; COMMIT_VALUE_LEN] = self.value.try_into().ok()?;
        Some(u32::from_le_bytes(bytes))
    }
}

/// A key or value over the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooLarge {
    Key { len: u64, max: usize },
    Value { len: u64, max: usize },
}

impl From<TooLarge> for RecordError {
    fn from(e: TooLarge) -> Self {
        match e {
            TooLarge::Key { len, max } => RecordError::KeyTooLarge { len, max },
            TooLarge::Value { len, max } => RecordError::ValueTooLarge { len, max },
        }
    }
}

/// Why a run of bytes is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("unknown record kind byte {0:#04x}")]
    BadKind(u8),
    #[error("key of {len} bytes is over the limit of {max} bytes")]
    KeyTooLarge { len: u64, max: usize },
    #[error("value of {len} bytes is over the limit of {max} bytes")]
    ValueTooLarge { len: u64, max: usize },
    #[error("checksum mismatch: stored {expected:#010x}, computed {actual:#010x}")]
    ChecksumMismatch { expected: u32, actual: u32 },
    #[error("malformed batch commit record")]
    BadCommit,
    #[error("delete record carries a value")]
    DeleteWithValue,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Put => "put",
            Kind::Delete => "delete",
            Kind::Commit => "commit",
        })
    }
}

/// Encoded size of a record with these lengths.
pub fn encoded_len(key_len: usize, value_len: usize) -> usize {
    HEADER_LEN + key_len + value_len
}

/// Checks a key and value against the limits; the engine calls this before
/// it encodes anything.
pub fn check_lengths(key_len: usize, value_len: usize) -> Result<(), TooLarge> {
    // usize -> u64 is lossless on every platform Rust supports.
    check_limits(key_len as u64, value_len as u64)
}

fn check_limits(key_len: u64, value_len: u64) -> Result<(), TooLarge> {
    if key_len > MAX_KEY_LEN as u64 {
        return Err(TooLarge::Key {
            len: key_len,
            max: MAX_KEY_LEN,
        });
    }
    if value_len > MAX_VALUE_LEN as u64 {
        return Err(TooLarge::Value {
            len: value_len,
            max: MAX_VALUE_LEN,
        });
    }
    Ok(())
}

/// Appends one encoded record to `out`.
///
/// The caller has checked the lengths with [`check_lengths`]; a key or value
/// over the limits is a programming error here, not bad input.
pub fn encode(out: &mut Vec<u8>, kind: Kind, in_batch: bool, epoch: u32, key: &[u8], value: &[u8]) {
    // Not a debug assertion: a length over u32 would otherwise be written
    // truncated. Callers check the limits first, so this never fires.
    assert!(
        check_lengths(key.len(), value.len()).is_ok(),
        "record encode called with unchecked lengths"
    );
    let mut kind_byte = match kind {
        Kind::Put => KIND_PUT,
        Kind::Delete => KIND_DELETE,
        Kind::Commit => KIND_COMMIT,
    };
    if in_batch && kind != Kind::Commit {
        kind_byte |= BATCH_BIT;
    }
    let start = out.len();
    out.reserve(encoded_len(key.len(), value.len()));
    out.extend_from_slice(&[0; 4]);
    out.push(kind_byte);
    out.extend_from_slice(&epoch.to_le_bytes());
    // Lengths fit in u32: they are bounded by the limits checked above.
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Appends the commit record that closes a batch of `count` members.
pub fn encode_commit(out: &mut Vec<u8>, epoch: u32, count: u32) {
    encode(out, Kind::Commit, false, epoch, &[], &count.to_le_bytes());
}

/// The fixed-size part of a record, parsed and checked against the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub crc: u32,
    pub kind: Kind,
    pub in_batch: bool,
    pub epoch: u32,
    pub key_len: usize,
    pub value_len: usize,
}

impl Header {
    /// Whole record length: header, key and value.
    pub fn record_len(&self) -> usize {
        encoded_len(self.key_len, self.value_len)
    }
}

/// Parses a header from the first [`HEADER_LEN`] bytes of `buf`.
///
/// `Ok(None)` means `buf` is shorter than a header. The checksum is not
/// verified here (the body is not available yet); [`decode`] does that.
pub fn decode_header(buf: &[u8]) -> Result<Option<Header>, RecordError> {
    let Some(h) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let u32_at = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let kind_byte = h[4];
    let in_batch = kind_byte & BATCH_BIT != 0;
    let kind = match kind_byte & !BATCH_BIT {
        KIND_PUT => Kind::Put,
        KIND_DELETE => Kind::Delete,
        KIND_COMMIT if !in_batch => Kind::Commit,
        _ => return Err(RecordError::BadKind(kind_byte)),
    };
    let key_len = u32_at(9);
    let value_len = u32_at(13);
    // Widening u32 -> u64 is lossless; compare before converting to usize.
    check_limits(key_len.into(), value_len.into())?;
    let (key_len, value_len) = (key_len as usize, value_len as usize);
    match kind {
        Kind::Commit if key_len != 0 || value_len != COMMIT_VALUE_LEN => {
            return Err(RecordError::BadCommit)
        }
        Kind::Delete if value_len != 0 => return Err(RecordError::DeleteWithValue),
        _ => {}
    }
    Ok(Some(Header {
        crc: u32_at(0),
        kind,
        in_batch,
        epoch: u32_at(5),
        key_len,
        value_len,
    }))
}

/// Decodes the record at the start of `buf`.
///
/// Returns `Ok(None)` when `buf` ends before the record does (more bytes are
/// needed: at the end of a file this is a torn write), or the record and its
/// encoded length.
pub fn decode(buf: &[u8]) -> Result<Option<(Record<'_>, usize)>, RecordError> {
    let Some(header) = decode_header(buf)? else {
        return Ok(None);
    };
    let len = header.record_len();
    let Some(bytes) = buf.get(..len) else {
        return Ok(None);
    };
    let actual = crc32fast::hash(&bytes[4..]);
    if actual != header.crc {
        return Err(RecordError::ChecksumMismatch {
            expected: header.crc,
            actual,
        });
    }
    let (key, value) = bytes[HEADER_LEN..].split_at(header.key_len);
    Ok(Some((
        Record {
            kind: header.kind,
            in_batch: header.in_batch,
            epoch: header.epoch,
            key,
            value,
        },
        len,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(kind: Kind, in_batch: bool, epoch: u32, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, kind, in_batch, epoch, key, value);
        out
    }

    #[test]
    fn every_field_round_trips() {
        for (kind, in_batch, epoch, key, value) in [
            (Kind::Put, false, 0, &b"k"[..], &b"v"[..]),
            (Kind::Put, true, u32::MAX, &b""[..], &b""[..]),
            (Kind::Delete, false, 7, &b"gone"[..], &b""[..]),
            (Kind::Delete, true, 9, &[0xff; 300][..], &b""[..]),
        ] {
            let bytes = one(kind, in_batch, epoch, key, value);
            assert_eq!(bytes.len(), encoded_len(key.len(), value.len()));
            let (rec, len) = decode(&bytes).unwrap().unwrap();
            assert_eq!(len, bytes.len());
            assert_eq!(
                rec,
                Record {
                    kind,
                    in_batch,
                    epoch,
                    key,
                    value
                }
            );
        }
        let mut commit = Vec::new();
        encode_commit(&mut commit, 3, 42);
        let (rec, _) = decode(&commit).unwrap().unwrap();
        assert_eq!(rec.kind, Kind::Commit);
        assert_eq!(rec.commit_count(), Some(42));
        assert_eq!(rec.epoch, 3);
    }

    #[test]
    fn any_flipped_bit_is_caught() {
        let bytes = one(Kind::Put, false, 5, b"some-key", b"some value bytes");
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[byte] ^= 1 << bit;
                // A flipped length bit can make the record look longer than
                // the buffer: that is "incomplete", never valid.
                if let Ok(Some((rec, _))) = decode(&damaged) {
                    panic!("flip at {byte}:{bit} decoded as {rec:?}");
                }
            }
        }
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        let bytes = one(Kind::Put, false, 1, b"key", b"value");
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn oversized_lengths_are_refused_from_the_header_alone() {
        // Only a header: if the decoder tried to allocate or wait for the
        // body first, it would answer None instead of an error.
        let mut header = one(Kind::Put, false, 1, b"", b"");
        header[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode(&header),
            Err(RecordError::KeyTooLarge {
                len: u32::MAX.into(),
                max: MAX_KEY_LEN
            })
        );
        let mut header = one(Kind::Put, false, 1, b"", b"");
        header[13..17].copy_from_slice(&(MAX_VALUE_LEN as u32 + 1).to_le_bytes());
        assert!(matches!(
            decode(&header),
            Err(RecordError::ValueTooLarge { .. })
        ));
        assert!(check_lengths(MAX_KEY_LEN + 1, 0).is_err());
        assert!(check_lengths(0, MAX_VALUE_LEN + 1).is_err());
        assert!(check_lengths(MAX_KEY_LEN, MAX_VALUE_LEN).is_ok());
    }

    #[test]
    fn malformed_kinds_are_refused() {
        let mut bytes = one(Kind::Put, false, 1, b"k", b"v");
        bytes[4] = 0x09;
        assert_eq!(decode(&bytes), Err(RecordError::BadKind(0x09)));
        // A commit cannot itself be a batch member.
        let mut commit = Vec::new();
        encode_commit(&mut commit, 1, 1);
        commit[4] |= BATCH_BIT;
        assert!(matches!(decode(&commit), Err(RecordError::BadKind(_))));
    }
}
