//! Fuzzes the hint file codec (`kvstore::engine::hint`).
//!
//! The first 8 bytes of the input are the data file length the hint is
//! checked against (so the fuzzer can hit the "described length" check);
//! the rest is the hint file. Properties checked:
//! - `decode` never panics;
//! - an accepted hint of the current version re-encodes with `encode` to
//!   exactly the same bytes (one encoding per hint: a damaged hint cannot
//!   pass as another one); one of an older version (still read) re-encodes
//!   to the current version with the same entries;
//! - its entries are in file order, non-empty and inside the data file.

#![no_main]

use kvstore::engine::hint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len_bytes, bytes)) = data.split_first_chunk::<8>() else {
        return;
    };
    let data_len = u64::from_le_bytes(*len_bytes);
    if let Ok(entries) = hint::decode(bytes, data_len) {
        let encoded = hint::encode(data_len, &entries);
        if encoded != bytes {
            // The envelope's version is the u32 after the 8-byte magic.
            let version = |b: &[u8]| u32::from_le_bytes(b[8..12].try_into().unwrap());
            assert!(version(bytes) < version(&encoded), "re-encoding differs");
            assert_eq!(
                hint::decode(&encoded, data_len).expect("re-encoded hint decodes"),
                entries,
                "an older hint re-encodes to different entries"
            );
        }
        let mut prev_end = 0u64;
        for e in &entries {
            let end = u64::from(e.pos) + u64::from(e.len);
            assert!(e.len > 0 && u64::from(e.pos) >= prev_end && end <= data_len);
            prev_end = end;
        }
    }
});
