//! Fuzzes the record codec (`kvstore::engine::record`) with arbitrary bytes,
//! read the way a segment scanner reads them: decode a record, step past it,
//! repeat until the bytes run out or stop being valid.
//!
//! Properties checked on every step:
//! - `decode` and `decode_header` never panic, and agree with each other
//!   (same header, same error, same "need more bytes");
//! - a decoded record satisfies the limits and the per-kind rules (only a
//!   put carries an expiry), and re-encoding it gives back exactly the bytes it consumed
//!   (the encoding is canonical: no two byte strings decode to one record);
//! - cutting a decoded record short is "incomplete", never an error and never
//!   a record, which is what lets recovery tell a torn tail from corruption.

#![no_main]

use kvstore::engine::record::{
    self, Kind, RecordError, EXPIRY_LEN, HEADER_LEN, MAX_KEY_LEN, MAX_RECORD_LEN, MAX_VALUE_LEN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Some(len) = step(rest) {
        rest = &rest[len..];
    }
});

/// Checks the record at the start of `buf`; returns its length when it is a
/// valid record the scanner should step past, `None` when the scan stops.
fn step(buf: &[u8]) -> Option<usize> {
    let header = record::decode_header(buf);
    match record::decode(buf) {
        Ok(Some((rec, len))) => {
            let h = match header {
                Ok(Some(h)) => h,
                other => panic!("decode gave a record but decode_header gave {other:?}"),
            };
            assert_eq!(h.record_len(), len, "header and decode disagree on length");
            assert!((HEADER_LEN..=MAX_RECORD_LEN).contains(&len));
            assert!(len <= buf.len());
            assert_eq!(
                (h.kind, h.in_batch, h.epoch, h.expires_at),
                (rec.kind, rec.in_batch, rec.epoch, rec.expires_at)
            );
            // Only a put carries an expiry (format 2, kind 0x04).
            assert!(rec.expires_at.is_none() || rec.kind == Kind::Put);
            assert_eq!((h.key_len, h.value_len), (rec.key.len(), rec.value.len()));
            assert!(rec.key.len() <= MAX_KEY_LEN);
            assert!(rec.value.len() <= MAX_VALUE_LEN);
            assert!(record::check_lengths(rec.key.len(), rec.value.len()).is_ok());
            match rec.kind {
                Kind::Put => assert_eq!(rec.commit_count(), None),
                Kind::Delete => {
                    assert!(rec.value.is_empty(), "delete with a value");
                    assert_eq!(rec.commit_count(), None);
                }
                Kind::Commit => {
                    assert!(!rec.in_batch, "commit marked as a batch member");
                    assert!(rec.key.is_empty(), "commit with a key");
                    assert!(rec.commit_count().is_some(), "commit without a count");
                }
            }

            let mut out = Vec::with_capacity(len);
            record::encode_record(&mut out, &rec);
            assert_eq!(out.len(), rec.encoded_len());
            assert!(
                out == buf[..len],
                "re-encoding differs from the consumed bytes"
            );

            // A torn write: the header complete but the body short, and the
            // header itself short. Both must read as "need more bytes".
            assert_eq!(
                record::decode(&buf[..len - 1]),
                Ok(None),
                "record cut by one byte"
            );
            assert_eq!(
                record::decode(&buf[..HEADER_LEN - 1]),
                Ok(None),
                "header cut"
            );
            assert_eq!(
                record::decode(&buf[..h.key_at() - 1]),
                Ok(None),
                "expiry field cut"
            );
            Some(len)
        }
        Ok(None) => {
            match header {
                // Short of the fixed header, or of a put's expiry field.
                Ok(None) => assert!(buf.len() < HEADER_LEN + EXPIRY_LEN),
                Ok(Some(h)) => assert!(h.record_len() > buf.len(), "complete record not decoded"),
                Err(e) => panic!("decode said incomplete but decode_header said {e:?}"),
            }
            None
        }
        Err(e) => {
            match (&e, header) {
                // The checksum needs the whole record: the header parsed.
                (RecordError::ChecksumMismatch { expected, actual }, Ok(Some(h))) => {
                    assert_ne!(expected, actual);
                    assert_eq!(*expected, h.crc);
                    assert!(h.record_len() <= buf.len());
                }
                // Everything else is refused from the header alone.
                (_, Err(he)) => assert_eq!(e, he, "decode and decode_header disagree"),
                (_, other) => panic!("decode gave {e:?} but decode_header gave {other:?}"),
            }
            None
        }
    }
}
