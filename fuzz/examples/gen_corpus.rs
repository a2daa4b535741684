//! Writes the seed corpora of every fuzz target with the real encoders, so
//! the seeds follow the formats instead of hand-typed hex: `record_decode`
//! here, the others in `corpus_more/mod.rs`.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus
//! ```
//!
//! It overwrites the files it names and leaves any other file in the corpus
//! directory alone (minimised crash reproducers added there stay). Each seed
//! states what the codec must make of it and the program fails if it does
//! not, so a format change that silently turns a "broken" seed valid (or the
//! reverse) is noticed. Run it again after a format change and commit.

use std::fs;
use std::path::Path;

#[path = "corpus_more/mod.rs"]
mod gen_corpus_more;

use kvstore::engine::record::{self, Kind, RecordError, HEADER_LEN, MAX_KEY_LEN, MAX_VALUE_LEN};

/// What `record::decode` must answer for a seed (its first record).
#[derive(Debug, Clone, Copy)]
enum Expect {
    Record,
    Incomplete,
    Checksum,
    BadKind,
    KeyTooLarge,
    ValueTooLarge,
    BadCommit,
    DeleteWithValue,
}

impl Expect {
    fn holds(self, bytes: &[u8]) -> bool {
        let got = record::decode(bytes);
        match self {
            Expect::Record => matches!(got, Ok(Some(_))),
            Expect::Incomplete => matches!(got, Ok(None)),
            Expect::Checksum => matches!(got, Err(RecordError::ChecksumMismatch { .. })),
            Expect::BadKind => matches!(got, Err(RecordError::BadKind(_))),
            Expect::KeyTooLarge => matches!(got, Err(RecordError::KeyTooLarge { .. })),
            Expect::ValueTooLarge => matches!(got, Err(RecordError::ValueTooLarge { .. })),
            Expect::BadCommit => matches!(got, Err(RecordError::BadCommit)),
            Expect::DeleteWithValue => matches!(got, Err(RecordError::DeleteWithValue)),
        }
    }
}

fn one(kind: Kind, in_batch: bool, epoch: u32, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    record::encode(&mut out, kind, in_batch, epoch, key, value);
    out
}

fn commit(epoch: u32, count: u32) -> Vec<u8> {
    let mut out = Vec::new();
    record::encode_commit(&mut out, epoch, count);
    out
}

/// Overwrites the little-endian u32 at `at` (a header field).
fn with_u32(mut rec: Vec<u8>, at: usize, v: u32) -> Vec<u8> {
    rec[at..at + 4].copy_from_slice(&v.to_le_bytes());
    rec
}

/// Recomputes the crc of an edited record, so that it gets past the
/// checksum and reaches the check meant to refuse it.
fn with_crc(mut rec: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&rec[4..]);
    rec[..4].copy_from_slice(&crc.to_le_bytes());
    rec
}

fn main() {
    let put = one(Kind::Put, false, 1, b"user:42", b"{\"name\":\"ada\"}");
    let batch_put = one(Kind::Put, true, 2, b"a", b"1");
    let batch_delete = one(Kind::Delete, true, 2, b"b", b"");
    let batch_commit = commit(2, 2);
    let header = |rec: &[u8]| rec[..HEADER_LEN].to_vec();

    let mut flipped = put.clone();
    *flipped.last_mut().expect("non-empty") ^= 0x01;
    let mut bad_kind = put.clone();
    bad_kind[4] = 0x09;
    let mut commit_in_batch = batch_commit.clone();
    commit_in_batch[4] |= 0x80;
    let delete_with_value = with_u32(header(&one(Kind::Delete, false, 1, b"k", b"")), 13, 3);
    let commit_with_key = with_u32(header(&batch_commit), 9, 1);

    use Expect::*;
    // A table reads better one seed a line than as rustfmt would wrap it.
    #[rustfmt::skip]
    let seeds: Vec<(&str, Vec<u8>, Expect)> = vec![
        // Valid records, alone.
        ("put", put.clone(), Record),
        ("put-empty", one(Kind::Put, false, 0, b"", b""), Record),
        ("delete", one(Kind::Delete, false, 7, b"user:42", b""), Record),
        ("batch-put", batch_put.clone(), Record),
        ("batch-delete", batch_delete.clone(), Record),
        ("commit", batch_commit.clone(), Record),
        ("max-key", one(Kind::Put, false, u32::MAX, &[0xab; MAX_KEY_LEN], b"v"), Record),
        // Valid streams, as a segment holds them.
        ("stream-batch", [&batch_put[..], &batch_delete, &batch_commit].concat(), Record),
        ("stream-mixed", [&put[..], &batch_put, &batch_commit, &put].concat(), Record),
        ("stream-torn-tail", [&put[..], &batch_put[..batch_put.len() - 1]].concat(), Record),
        ("stream-garbage-tail", [&put[..], &[0xff; 40]].concat(), Record),
        // Torn writes.
        ("torn-body", put[..put.len() - 3].to_vec(), Incomplete),
        ("torn-header", put[..HEADER_LEN - 5].to_vec(), Incomplete),
        // Corrupt, each refused by a different check.
        ("checksum-mismatch", flipped, Checksum),
        ("bad-kind", with_crc(bad_kind), BadKind),
        ("commit-in-batch", with_crc(commit_in_batch), BadKind),
        // Lengths over the limits: the header alone must be refused.
        ("key-too-large", with_u32(header(&put), 9, MAX_KEY_LEN as u32 + 1), KeyTooLarge),
        ("value-too-large", with_u32(header(&put), 13, MAX_VALUE_LEN as u32 + 1), ValueTooLarge),
        ("lengths-u32-max", with_u32(with_u32(header(&put), 9, u32::MAX), 13, u32::MAX), KeyTooLarge),
        // Per-kind rules, with a correct crc so only the rule refuses them.
        ("delete-with-value", with_crc([&delete_with_value[..], b"kxyz"].concat()), DeleteWithValue),
        ("commit-with-key", with_crc([&commit_with_key[..], b"k", &batch_commit[HEADER_LEN..]].concat()), BadCommit),
        ("commit-short-count", with_crc(with_u32(batch_commit[..HEADER_LEN + 2].to_vec(), 13, 2)), BadCommit),
    ];

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/record_decode");
    fs::create_dir_all(&dir).expect("create the corpus directory");
    let mut wrong = 0;
    for (name, bytes, expect) in &seeds {
        let ok = expect.holds(bytes);
        println!(
            "{name:<20} {:>6} bytes  expect {expect:?}: {}",
            bytes.len(),
            if ok { "ok" } else { "WRONG" }
        );
        wrong += usize::from(!ok);
        fs::write(dir.join(name), bytes).expect("write a seed");
    }
    assert_eq!(wrong, 0, "some seeds no longer mean what their names say");
    println!("wrote {} seeds to {}", seeds.len(), dir.display());
    gen_corpus_more::write_all();
}
