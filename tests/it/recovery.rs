//! Recovery: what opening a data directory does with torn tails, corrupt
//! records, damaged hint files and a directory that is already open, and
//! what `verify_dir` reports about damage (the rules are in
//! docs/FORMAT.md, "Crash safety, step by step").
//!
//! Every test builds a directory through the public API, closes it, damages
//! a *copy* of it byte by byte, and opens or verifies the copy.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use kvstore::engine::record::{self, HEADER_LEN};
use kvstore::engine::segment::FILE_HEADER_LEN;
use kvstore::engine::verify::verify_dir;
use kvstore::engine::{CompactionPolicy, Engine, Error, Options, WriteOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::copy_data_dir;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

const SMALL_SEGMENT: u64 = 4096;
pub(crate) const LARGE_SEGMENT: u64 = 1024 * 1024 * 1024;

pub(crate) fn options(segment_max_bytes: u64) -> Options {
    Options {
        segment_max_bytes,
        compaction: CompactionPolicy {
            check_every: None,
            ..CompactionPolicy::default()
        },
        ..Options::default()
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

/// A value whose bytes depend on `i` and `salt`, of a length that varies.
fn value(i: usize, salt: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i.wrapping_mul(31) ^ j.wrapping_mul(7)) as u8 ^ salt)
        .collect()
}

/// Writes `n` puts with values of varying length and returns the model.
fn fill(engine: &Engine, n: usize, model: &mut Model) {
    for i in 0..n {
        let v = value(i, 0, 20 + (i * 37) % 90);
        engine.put(&key(i), &v).unwrap();
        model.insert(key(i), v);
    }
}

fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    files_with_suffix(dir, ".seg")
}

fn active_segment(dir: &Path) -> PathBuf {
    segments(dir).pop().expect("a segment exists")
}

/// Every record of a data file as `(file position, encoded length)`.
fn records(path: &Path) -> Vec<(u64, usize)> {
    let bytes = fs::read(path).unwrap();
    let mut pos = FILE_HEADER_LEN as usize;
    let mut out = Vec::new();
    while pos < bytes.len() {
        let (_, len) = record::decode(&bytes[pos..])
            .unwrap()
            .expect("a whole record");
        out.push((pos as u64, len));
        pos += len;
    }
    out
}

/// The key of the record at `pos` of `path`.
fn key_at(path: &Path, pos: u64) -> Vec<u8> {
    let bytes = fs::read(path).unwrap();
    let (rec, _) = record::decode(&bytes[pos as usize..]).unwrap().unwrap();
    rec.key.to_vec()
}

fn truncate(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Appends `bytes` to the file at `path` (also used by `tail`).
pub(crate) fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn flip(path: &Path, at: u64, mask: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= mask;
    fs::write(path, bytes).unwrap();
}

/// Asserts that `engine` holds exactly `model`, values byte for byte.
fn assert_contents(engine: &Engine, model: &Model, keys: impl Iterator<Item = Vec<u8>>, ctx: &str) {
    for k in keys {
        assert_eq!(
            engine.get(&k).unwrap().as_ref(),
            model.get(&k),
            "{ctx}: key {}",
            String::from_utf8_lossy(&k)
        );
    }
    assert_eq!(engine.stats().keys, model.len() as u64, "{ctx}: key count");
}

fn assert_verify_clean(dir: &Path, ctx: &str) {
    let report = verify_dir(dir).unwrap();
    assert!(report.problems.is_empty(), "{ctx}: {:?}", report.problems);
}

/// Expects `Error::Corrupt` naming `file` and `offset`.
fn assert_corrupt(
    result: Result<impl std::fmt::Debug, Error>,
    file: &Path,
    offset: u64,
    ctx: &str,
) {
    match result {
        Err(Error::Corrupt {
            file: f, offset: o, ..
        }) => {
            assert_eq!(f, file, "{ctx}: corrupt file");
            assert_eq!(o, offset, "{ctx}: corrupt offset");
        }
        other => panic!("{ctx}: expected Error::Corrupt at {file:?}:{offset}, got {other:?}"),
    }
}

/// Opens the damaged copy, checks it holds exactly `model` (every key in
/// `keys`), closes it and verifies it.
fn open_and_check(dir: &Path, segment: u64, model: &Model, all_keys: &[Vec<u8>], ctx: &str) {
    let engine =
        Engine::open(dir, options(segment)).unwrap_or_else(|e| panic!("{ctx}: open failed: {e}"));
    assert_contents(&engine, model, all_keys.iter().cloned(), ctx);
    engine.close().unwrap();
    assert_verify_clean(dir, ctx);
}

fn torn_tail_of_last_record(segment: u64) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(segment)).unwrap();
    let mut model = Model::new();
    let n = 100;
    fill(&engine, n, &mut model);
    let last_key = key(n);
    let last_value = value(n, 0xA5, 40);
    engine.put(&last_key, &last_value).unwrap();
    engine.close().unwrap();
    if segment == SMALL_SEGMENT {
        assert!(segments(dir.path()).len() > 2, "want several segments");
    }

    let active = active_segment(dir.path());
    let file_len = fs::metadata(&active).unwrap().len();
    let last_len = record::encoded_len(last_key.len(), last_value.len()) as u64;
    let last_start = file_len - last_len;
    assert_eq!(key_at(&active, last_start), last_key, "layout assumption");
    let name = active.file_name().unwrap().to_owned();
    let all_keys: Vec<Vec<u8>> = (0..=n).map(key).collect();
    let mut rng = StdRng::seed_from_u64(0x7042_7a11 ^ segment);

    for cut in last_start..file_len {
        for garbage in [false, true] {
            let copy = copy_data_dir(dir.path());
            let path = copy.path().join(&name);
            truncate(&path, cut);
            if garbage {
                let len = rng.gen_range(1..64);
                let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                append(&path, &junk);
            }
            let ctx = format!("segment size {segment}, cut at {cut}, garbage {garbage}");
            open_and_check(copy.path(), segment, &model, &all_keys, &ctx);
            // The cut is durable: the file now ends where the valid records do.
            assert_eq!(fs::metadata(&path).unwrap().len(), last_start, "{ctx}");
        }
    }
}

#[test]
fn torn_tail_in_a_large_segment_loses_only_the_last_record() {
    torn_tail_of_last_record(LARGE_SEGMENT);
}

#[test]
fn torn_tail_with_small_segments_loses_only_the_last_record() {
    torn_tail_of_last_record(SMALL_SEGMENT);
}

#[test]
fn torn_batch_at_the_tail_is_absent_as_a_whole() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(LARGE_SEGMENT)).unwrap();
    let mut model = Model::new();
    let n = 20;
    fill(&engine, n, &mut model);
    // Overwrites one key, deletes another, adds two new ones.
    let (k3, k5, kn, kn1) = (key(3), key(5), key(n), key(n + 1));
    let (v3, vn, vn1) = (
        value(3, 0x11, 30),
        value(n, 0x22, 25),
        value(n + 1, 0x33, 1),
    );
    let batch = [
        WriteOp::Put(&k3, &v3),
        WriteOp::Delete(&k5),
        WriteOp::Put(&kn, &vn),
        WriteOp::Put(&kn1, &vn1),
    ];
    engine.write_batch(&batch).unwrap();
    assert_eq!(engine.get(&key(5)).unwrap(), None);
    engine.close().unwrap();

    let batch_len: u64 = batch
        .iter()
        .map(|op| record::encoded_len(op.key().len(), op.value().len()) as u64)
        .sum::<u64>()
        + record::encoded_len(0, 4) as u64;
    let active = active_segment(dir.path());
    let file_len = fs::metadata(&active).unwrap().len();
    let batch_start = file_len - batch_len;
    assert_eq!(key_at(&active, batch_start), key(3), "layout assumption");
    let name = active.file_name().unwrap().to_owned();
    let all_keys: Vec<Vec<u8>> = (0..n + 2).map(key).collect();
    let mut rng = StdRng::seed_from_u64(0xba7c4);

    // Every cut inside the members and inside the commit record, including
    // the cut right before the commit record.
    for cut in batch_start..file_len {
        for garbage in [false, true] {
            let copy = copy_data_dir(dir.path());
            let path = copy.path().join(&name);
            truncate(&path, cut);
            if garbage {
                let len = rng.gen_range(1..64);
                let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                append(&path, &junk);
            }
            let ctx = format!("batch cut at {cut} (batch at {batch_start}), garbage {garbage}");
            open_and_check(copy.path(), LARGE_SEGMENT, &model, &all_keys, &ctx);
            assert_eq!(fs::metadata(&path).unwrap().len(), batch_start, "{ctx}");
        }
    }

    // The whole batch is visible when nothing is cut.
    let copy = copy_data_dir(dir.path());
    let mut after = model.clone();
    for op in &batch {
        match *op {
            WriteOp::Put(key, value) | WriteOp::PutExpiring(key, value, _) => {
                after.insert(key.to_vec(), value.to_vec())
            }
            WriteOp::Delete(key) => after.remove(key),
        };
    }
    open_and_check(copy.path(), LARGE_SEGMENT, &after, &all_keys, "uncut");
}

/// A closed directory with several sealed segments (each with its hint)
/// and an active one; returns the model.
fn several_segments(dir: &Path) -> Model {
    let engine = Engine::open(dir, options(SMALL_SEGMENT)).unwrap();
    let mut model = Model::new();
    fill(&engine, 200, &mut model);
    engine.close().unwrap();
    // Opening writes any hint the background thread had not written yet.
    Engine::open(dir, options(SMALL_SEGMENT))
        .unwrap()
        .close()
        .unwrap();
    let segs = segments(dir);
    assert!(segs.len() >= 4, "want several segments, got {segs:?}");
    for seg in &segs[..segs.len() - 1] {
        let hint = seg.with_extension("hint");
        assert!(hint.exists(), "{hint:?} missing");
    }
    model
}

#[test]
fn corrupt_byte_in_a_sealed_segment_fails_open_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    several_segments(dir.path());
    let sealed = segments(dir.path())[1].clone();
    let recs = records(&sealed);
    let (pos, len) = recs[recs.len() / 2];
    let name = sealed.file_name().unwrap().to_owned();
    for at in pos..pos + len as u64 {
        let copy = copy_data_dir(dir.path());
        for hint in files_with_suffix(copy.path(), ".hint") {
            fs::remove_file(hint).unwrap();
        }
        let path = copy.path().join(&name);
        flip(&path, at, 0x40);
        let ctx = format!("byte {at} of the record at {pos}");
        assert_corrupt(
            Engine::open(copy.path(), options(SMALL_SEGMENT)).map(|_| ()),
            &path,
            pos,
            &ctx,
        );
    }
}

#[test]
fn corrupt_record_behind_a_valid_hint_fails_the_read_not_with_wrong_data() {
    let dir = tempfile::tempdir().unwrap();
    let model = several_segments(dir.path());
    let sealed = segments(dir.path())[1].clone();
    let recs = records(&sealed);
    let (pos, len) = recs[recs.len() / 2];
    let damaged_key = key_at(&sealed, pos);
    let name = sealed.file_name().unwrap().to_owned();
    // The first byte of each field: crc, kind, epoch, lengths, key, value.
    let fields = [0u64, 4, 5, 9, 13, HEADER_LEN as u64, len as u64 - 1];
    for at in fields.iter().map(|f| pos + f) {
        let copy = copy_data_dir(dir.path());
        let path = copy.path().join(&name);
        flip(&path, at, 0x01);
        let ctx = format!("byte {at} of the record at {pos}");
        let engine = Engine::open(copy.path(), options(SMALL_SEGMENT))
            .unwrap_or_else(|e| panic!("{ctx}: open with a valid hint failed: {e}"));
        assert_corrupt(engine.get(&damaged_key), &path, pos, &ctx);
        // Every other key still reads its exact value.
        for (k, v) in model.iter().filter(|(k, _)| **k != damaged_key) {
            assert_eq!(engine.get(k).unwrap().as_ref(), Some(v), "{ctx}");
        }
        engine.close().unwrap();
    }
}

#[test]
fn damaged_record_mid_active_segment_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(LARGE_SEGMENT)).unwrap();
    fill(&engine, 50, &mut Model::new());
    engine.close().unwrap();
    let active = active_segment(dir.path());
    let recs = records(&active);
    let name = active.file_name().unwrap().to_owned();
    for &(pos, len) in &[recs[10], recs[recs.len() - 2]] {
        for at in [pos, pos + HEADER_LEN as u64, pos + len as u64 - 1] {
            let copy = copy_data_dir(dir.path());
            let path = copy.path().join(&name);
            flip(&path, at, 0x08);
            let ctx = format!("byte {at} of the record at {pos}");
            assert_corrupt(
                Engine::open(copy.path(), options(LARGE_SEGMENT)).map(|_| ()),
                &path,
                pos,
                &ctx,
            );
            // Nothing was cut off: the records after the damage are still there.
            assert_eq!(
                fs::metadata(&path).unwrap().len(),
                fs::metadata(&active).unwrap().len(),
                "{ctx}"
            );
        }
    }
}

#[test]
fn damaged_hint_is_ignored_and_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let model = several_segments(dir.path());
    let hints = files_with_suffix(dir.path(), ".hint");
    let all_keys: Vec<Vec<u8>> = (0..200).map(key).collect();
    for (i, hint) in hints.iter().enumerate() {
        let original = fs::read(hint).unwrap();
        let name = hint.file_name().unwrap().to_owned();
        // A flipped byte in the header, in an entry, in the trailer; and a
        // hint cut short.
        let damages: [fn(&Path, u64); 4] = [
            |p, _| flip(p, 10, 0xff),
            |p, _| flip(p, 24 + 17 * 2 + 3, 0x01),
            |p, len| flip(p, len - 1, 0x80),
            |p, len| truncate(p, len - 5),
        ];
        for (d, damage) in damages.iter().enumerate() {
            let copy = copy_data_dir(dir.path());
            let path = copy.path().join(&name);
            damage(&path, original.len() as u64);
            let ctx = format!("hint {i} damage {d}");
            let engine = Engine::open(copy.path(), options(SMALL_SEGMENT))
                .unwrap_or_else(|e| panic!("{ctx}: open failed: {e}"));
            assert_contents(&engine, &model, all_keys.iter().cloned(), &ctx);
            engine.close().unwrap();
            assert_eq!(
                fs::read(&path).unwrap(),
                original,
                "{ctx}: hint not rewritten"
            );
            assert_verify_clean(copy.path(), &ctx);
        }
    }
}

#[test]
fn second_open_of_an_open_directory_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(SMALL_SEGMENT)).unwrap();
    engine.put(b"k", b"v").unwrap();
    match Engine::open(dir.path(), options(SMALL_SEGMENT)) {
        Err(Error::Locked { path }) => assert_eq!(path, dir.path()),
        Err(other) => panic!("expected Error::Locked, got {other:?}"),
        Ok(_) => panic!("a second open of an open directory succeeded"),
    }
    // The refused open did not disturb the first one.
    assert_eq!(engine.get(b"k").unwrap(), Some(b"v".to_vec()));
    engine.put(b"k2", b"v2").unwrap();
    engine.close().unwrap();
    let engine = Engine::open(dir.path(), options(SMALL_SEGMENT)).unwrap();
    assert_eq!(engine.get(b"k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(engine.get(b"k2").unwrap(), Some(b"v2".to_vec()));
    engine.close().unwrap();
}

#[test]
fn an_open_that_cannot_create_its_directory_names_the_step_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    fs::write(&not_a_dir, b"x").unwrap();
    match Engine::open(&not_a_dir, Options::default()) {
        Err(Error::Io { op, path, source }) => {
            assert_eq!(op, "create data directory");
            assert_eq!(path, not_a_dir);
            assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists);
        }
        other => panic!("expected an I/O error, got {:?}", other.err()),
    }
}

/// Flips one bit in a copy of `dir` and returns what `verify_dir` says.
fn verify_with_flip(
    dir: &Path,
    name: &std::ffi::OsStr,
    at: u64,
) -> (PathBuf, Vec<(PathBuf, u64, String)>) {
    let copy = copy_data_dir(dir);
    let path = copy.path().join(name);
    flip(&path, at, 0x04);
    let report = verify_dir(copy.path()).unwrap();
    let problems = report
        .problems
        .into_iter()
        .map(|p| (p.file, p.offset, p.what))
        .collect();
    (path, problems)
}

fn assert_one_problem_at(
    (path, problems): (PathBuf, Vec<(PathBuf, u64, String)>),
    offset: impl Fn(u64) -> bool,
    ctx: &str,
) {
    assert!(!problems.is_empty(), "{ctx}: verify found nothing");
    assert!(
        problems
            .iter()
            .any(|(file, off, _)| *file == path && offset(*off)),
        "{ctx}: no problem names {path:?} at a sensible offset: {problems:?}"
    );
}

#[test]
fn verify_reports_a_flipped_bit_in_a_sealed_segment_at_its_record() {
    let dir = tempfile::tempdir().unwrap();
    several_segments(dir.path());
    assert_verify_clean(dir.path(), "undamaged");
    let sealed = segments(dir.path())[1].clone();
    let recs = records(&sealed);
    let (pos, _) = recs[recs.len() / 2];
    let found = verify_with_flip(
        dir.path(),
        sealed.file_name().unwrap(),
        pos + HEADER_LEN as u64 + 2,
    );
    assert_one_problem_at(found, |o| o == pos, "sealed segment");
}

#[test]
fn verify_reports_a_flipped_bit_in_a_hint_file() {
    let dir = tempfile::tempdir().unwrap();
    several_segments(dir.path());
    let hint = files_with_suffix(dir.path(), ".hint")[0].clone();
    let hint_len = fs::metadata(&hint).unwrap().len();
    // Inside the second entry's length field.
    let found = verify_with_flip(dir.path(), hint.file_name().unwrap(), 24 + 17 + 6);
    assert_one_problem_at(found, |o| o < hint_len, "hint file");
}

#[test]
fn verify_reports_a_flipped_bit_in_a_merged_file_at_its_record() {
    let dir = tempfile::tempdir().unwrap();
    several_segments(dir.path());
    let engine = Engine::open(dir.path(), options(SMALL_SEGMENT)).unwrap();
    // Dead data, so the merged file differs from the segments.
    engine.put(&key(0), b"overwritten").unwrap();
    engine.delete(&key(1)).unwrap();
    let report = engine.compact().unwrap();
    assert!(report.keys_kept > 0, "{report:?}");
    engine.close().unwrap();
    assert_verify_clean(dir.path(), "after compaction");
    let merged = files_with_suffix(dir.path(), ".dat");
    assert!(!merged.is_empty(), "compaction wrote no merged file");
    let recs = records(&merged[0]);
    let (pos, len) = recs[recs.len() / 2];
    let found = verify_with_flip(
        dir.path(),
        merged[0].file_name().unwrap(),
        pos + len as u64 - 1,
    );
    assert_one_problem_at(found, |o| o == pos, "merged file");
}
