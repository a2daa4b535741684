//! The on-disk record: the unit of the log, of merged files and of
//! replication.
//!
//! ```text
//! offset  size  field
//!      0     4  crc32 (IEEE, crc32fast) of every byte after this field
//!      4     1  kind: 0x01 put, 0x02 delete, 0x03 batch commit,
//!               0x04 put with expiry (format 2);
//!               bit 0x80 set on a put/delete that belongs to a batch
//!      5     4  epoch of the master that wrote the record
//!      9     4  key length
//!     13     4  value length
//!     17     8  kind 0x04 only: expiry, ms since the Unix epoch
//!  17|25     .  key bytes, then value bytes
//! ```
//!
//! A put with expiry is a put: it sets the key's value, and the key reads
//! as absent from its expiry on. A plain put (0x01) keeps the layout of
//! format 1 byte for byte, so keys without expiry cost what they did.
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

/// Bytes before the key of a record without expiry: crc, kind, epoch, key
/// length, value length. Every record starts with these fields.
pub const HEADER_LEN: usize = 17;
/// Bytes of the expiry field that follows the fixed header in a put with
/// expiry.
pub const EXPIRY_LEN: usize = 8;
/// Largest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 64 * 1024;
/// Largest value accepted, in bytes.
pub const MAX_VALUE_LEN: usize = 64 * 1024 * 1024;
/// Largest encoded record.
pub const MAX_RECORD_LEN: usize = HEADER_LEN + EXPIRY_LEN + MAX_KEY_LEN + MAX_VALUE_LEN;
/// Largest single append (one record or one whole batch), encoded.
pub const MAX_APPEND_BYTES: usize = 128 * 1024 * 1024;

const BATCH_BIT: u8 = 0x80;
const KIND_PUT: u8 = 0x01;
const KIND_DELETE: u8 = 0x02;
const KIND_COMMIT: u8 = 0x03;
const KIND_PUT_EXPIRING: u8 = 0x04;
/// Length of a commit record's value: the member count as u32.
const COMMIT_VALUE_LEN: usize = 4;

/// What a record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Sets `key` to `value` (until the record's expiry, if it has one).
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
    /// When the value stops being readable, in ms since the Unix epoch;
    /// `None` for a put without expiry and for deletes and commits.
    pub expires_at: Option<u64>,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl<'a> Record<'a> {
    /// A put (without expiry when `expires_at` is `None`) or a delete
    /// (`value` empty, `expires_at` `None`).
    pub fn new(kind: Kind, in_batch: bool, epoch: u32, key: &'a [u8], value: &'a [u8]) -> Self {
        Record {
            kind,
            in_batch,
            epoch,
            expires_at: None,
            key,
            value,
        }
    }

    /// Whether the record's value has expired at `now_ms`.
    pub fn expired_at(&self, now_ms: u64) -> bool {
        self.expires_at.is_some_and(|at| at <= now_ms)
    }

    /// Encoded size of this record.
    pub fn encoded_len(&self) -> usize {
        encoded_len_with(self.key.len(), self.value.len(), self.expires_at.is_some())
    }

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

/// Encoded size of a record without expiry with these lengths.
pub fn encoded_len(key_len: usize, value_len: usize) -> usize {
    encoded_len_with(key_len, value_len, false)
}

/// Encoded size of a record with these lengths, with or without expiry.
pub fn encoded_len_with(key_len: usize, value_len: usize, expiring: bool) -> usize {
    body_at(expiring) + key_len + value_len
}

/// Where the key starts.
fn body_at(expiring: bool) -> usize {
    if expiring {
        HEADER_LEN + EXPIRY_LEN
    } else {
        HEADER_LEN
    }
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

/// Appends one encoded record without expiry to `out`.
///
/// The caller has checked the lengths with [`check_lengths`]; a key or value
/// over the limits is a programming error here, not bad input.
pub fn encode(out: &mut Vec<u8>, kind: Kind, in_batch: bool, epoch: u32, key: &[u8], value: &[u8]) {
    encode_record(out, &Record::new(kind, in_batch, epoch, key, value));
}

/// Appends one encoded record to `out` (lengths checked as for [`encode`];
/// only a put may carry an expiry).
pub fn encode_record(out: &mut Vec<u8>, rec: &Record<'_>) {
    let (key, value) = (rec.key, rec.value);
    // Not a debug assertion: a length over u32 would otherwise be written
    // truncated. Callers check the limits first, so this never fires.
    assert!(
        check_lengths(key.len(), value.len()).is_ok(),
        "record encode called with unchecked lengths"
    );
    assert!(
        rec.expires_at.is_none() || rec.kind == Kind::Put,
        "only a put carries an expiry"
    );
    let mut kind_byte = match (rec.kind, rec.expires_at) {
        (Kind::Put, Some(_)) => KIND_PUT_EXPIRING,
        (Kind::Put, None) => KIND_PUT,
        (Kind::Delete, _) => KIND_DELETE,
        (Kind::Commit, _) => KIND_COMMIT,
    };
    if rec.in_batch && rec.kind != Kind::Commit {
        kind_byte |= BATCH_BIT;
    }
    let start = out.len();
    out.reserve(rec.encoded_len());
    out.extend_from_slice(&[0; 4]);
    out.push(kind_byte);
    out.extend_from_slice(&rec.epoch.to_le_bytes());
    // Lengths fit in u32: they are bounded by the limits checked above.
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    if let Some(at) = rec.expires_at {
        out.extend_from_slice(&at.to_le_bytes());
    }
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
    pub expires_at: Option<u64>,
    pub key_len: usize,
    pub value_len: usize,
}

impl Header {
    /// Whole record length: header, expiry, key and value.
    pub fn record_len(&self) -> usize {
        encoded_len_with(self.key_len, self.value_len, self.expires_at.is_some())
    }

    /// Position of the key within the record.
    pub fn key_at(&self) -> usize {
        body_at(self.expires_at.is_some())
    }
}

/// Parses a header from the first bytes of `buf`: [`HEADER_LEN`], plus
/// [`EXPIRY_LEN`] for a put with expiry.
///
/// `Ok(None)` means `buf` is shorter than a header. Every error is decided
/// by the first [`HEADER_LEN`] bytes (the expiry field has no invalid
/// values). The checksum is not verified here (the body is not available
/// yet); [`decode`] does that.
pub fn decode_header(buf: &[u8]) -> Result<Option<Header>, RecordError> {
    let Some(h) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let u32_at = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let kind_byte = h[4];
    let in_batch = kind_byte & BATCH_BIT != 0;
    let (kind, expiring) = match kind_byte & !BATCH_BIT {
        KIND_PUT => (Kind::Put, false),
        KIND_PUT_EXPIRING => (Kind::Put, true),
        KIND_DELETE => (Kind::Delete, false),
        KIND_COMMIT if !in_batch => (Kind::Commit, false),
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
    let expires_at = if expiring {
        let Some(at) = buf.get(HEADER_LEN..HEADER_LEN + EXPIRY_LEN) else {
            return Ok(None);
        };
        let mut le = [0u8; EXPIRY_LEN];
        le.copy_from_slice(at);
        Some(u64::from_le_bytes(le))
    } else {
        None
    };
    Ok(Some(Header {
        crc: u32_at(0),
        kind,
        in_batch,
        epoch: u32_at(5),
        expires_at,
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
    let (key, value) = bytes[header.key_at()..].split_at(header.key_len);
    Ok(Some((
        Record {
            kind: header.kind,
            in_batch: header.in_batch,
            epoch: header.epoch,
            expires_at: header.expires_at,
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
            assert_eq!(rec, Record::new(kind, in_batch, epoch, key, value));
        }
        let mut commit = Vec::new();
        encode_commit(&mut commit, 3, 42);
        let (rec, _) = decode(&commit).unwrap().unwrap();
        assert_eq!(rec.kind, Kind::Commit);
        assert_eq!(rec.commit_count(), Some(42));
        assert_eq!(rec.epoch, 3);
    }

    fn expiring(in_batch: bool, at: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(
            &mut out,
            &Record {
                expires_at: Some(at),
                ..Record::new(Kind::Put, in_batch, 4, key, value)
            },
        );
        out
    }

    #[test]
    fn a_put_with_expiry_round_trips_and_a_plain_put_keeps_its_bytes() {
        for (in_batch, at) in [(false, 0), (true, 1_700_000_000_123), (false, u64::MAX)] {
            let bytes = expiring(in_batch, at, b"key", b"value");
            assert_eq!(bytes.len(), encoded_len_with(3, 5, true));
            assert_eq!(bytes.len(), encoded_len(3, 5) + EXPIRY_LEN);
            assert_eq!(bytes[4] & !BATCH_BIT, KIND_PUT_EXPIRING);
            assert_eq!(bytes[17..25], at.to_le_bytes());
            let (rec, len) = decode(&bytes).unwrap().unwrap();
            assert_eq!(len, bytes.len());
            assert_eq!(rec.expires_at, Some(at));
            assert_eq!((rec.kind, rec.in_batch), (Kind::Put, in_batch));
            assert_eq!((rec.key, rec.value), (&b"key"[..], &b"value"[..]));
            assert_eq!(rec.encoded_len(), len);
            assert!(rec.expired_at(at) && (at == 0 || !rec.expired_at(at - 1)));
            // A header cut inside the expiry field needs more bytes.
            for cut in HEADER_LEN..HEADER_LEN + EXPIRY_LEN {
                assert_eq!(decode_header(&bytes[..cut]), Ok(None), "cut at {cut}");
            }
        }
        // The layout of a put without expiry is format 1's, byte for byte:
        // kind 0x01, the key right after the 17-byte header.
        let plain = one(Kind::Put, false, 4, b"key", b"value");
        assert_eq!(plain[4], KIND_PUT);
        assert_eq!(&plain[HEADER_LEN..HEADER_LEN + 3], b"key");
        assert_eq!(decode(&plain).unwrap().unwrap().0.expires_at, None);
    }

    #[test]
    #[should_panic(expected = "only a put carries an expiry")]
    fn a_delete_cannot_carry_an_expiry() {
        encode_record(
            &mut Vec::new(),
            &Record {
                expires_at: Some(1),
                ..Record::new(Kind::Delete, false, 1, b"k", b"")
            },
        );
    }

    #[test]
    fn any_flipped_bit_is_caught() {
        let plain = one(Kind::Put, false, 5, b"some-key", b"some value bytes");
        let with_expiry = expiring(true, 1_700_000_000_000, b"some-key", b"some value");
        for bytes in [plain, with_expiry] {
            any_flipped_bit_is_caught_in(&bytes);
        }
    }

    fn any_flipped_bit_is_caught_in(bytes: &[u8]) {
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.to_vec();
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
        for bytes in [
            one(Kind::Put, false, 1, b"key", b"value"),
            expiring(false, 99, b"key", b"value"),
        ] {
            for cut in 0..bytes.len() {
                assert_eq!(decode(&bytes[..cut]), Ok(None), "cut at {cut}");
            }
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
