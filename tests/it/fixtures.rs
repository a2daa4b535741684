//! Frozen data directories of each on-disk format version. Each one was
//! written once by the engine of its version and is checked in; the test
//! opens a copy with today's engine and checks every key and value, so a
//! format change that cannot read old data fails here.
//!
//! `tests/fixtures/v1/` holds, with 4 KiB segments: a merged generation
//! (from a compaction that dropped an overwritten value and a tombstone),
//! sealed segments with their hint files, an active segment, overwrites,
//! deleted keys (tombstones after the merge) and an atomic batch.
//!
//! Regenerating is only for a *new* format version: never rewrite an old
//! version's directory, or this test stops guarding it. To add one, bump
//! `VERSION` below, then run
//!
//! ```text
//! cargo test --test it -- --ignored --exact fixtures::generate_fixture
//! ```
//!
//! and commit the new `tests/fixtures/vN/` beside the old ones, with a test
//! for it like `v1_opens_with_exact_contents`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use kvstore::engine::manifest;
use kvstore::engine::verify::verify_dir;
use kvstore::engine::{CompactionPolicy, Engine, Options, WriteOp, LOCK_FILE};

/// The version `generate_fixture` writes.
const VERSION: &str = "v1";

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// One step of the script that wrote the fixture.
enum Step {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    /// Keys with the value to set, or `None` to delete.
    Batch(Vec<(Vec<u8>, Option<Vec<u8>>)>),
    Compact,
}

fn k(prefix: &str, i: usize) -> Vec<u8> {
    format!("{prefix}-{i:03}").into_bytes()
}

/// A value whose bytes and length depend on `(prefix, i, version)`.
fn v(prefix: &str, i: usize, version: u8) -> Vec<u8> {
    let len = 10 + (i * 29 + usize::from(version) * 13) % 90;
    let mut out = format!("{prefix}{i}v{version}:").into_bytes();
    out.extend((0..len).map(|j| (j as u8).wrapping_mul(17) ^ (i as u8) ^ version));
    out
}

/// The writes that produced `tests/fixtures/v1`. Frozen: changing it makes
/// the expected contents differ from the checked-in data.
fn v1_script() -> Vec<Step> {
    let mut s = Vec::new();
    for i in 0..60 {
        s.push(Step::Put(k("a", i), v("a", i, 1)));
    }
    for i in 0..10 {
        s.push(Step::Put(k("a", i), v("a", i, 2)));
    }
    s.push(Step::Delete(k("a", 10)));
    s.push(Step::Compact);
    for i in 0..100 {
        s.push(Step::Put(k("b", i), v("b", i, 1)));
    }
    for i in 5..8 {
        s.push(Step::Put(k("a", i), v("a", i, 3)));
    }
    s.push(Step::Delete(k("a", 11)));
    s.push(Step::Delete(k("b", 3)));
    s.push(Step::Batch(vec![
        (k("c", 0), Some(v("c", 0, 1))),
        (k("a", 12), None),
        (k("a", 13), Some(v("a", 13, 4))),
        (k("c", 1), Some(Vec::new())),
    ]));
    for i in 40..45 {
        s.push(Step::Put(k("b", i), v("b", i, 2)));
    }
    s
}

/// Every key the script touches, plus some it never wrote.
fn universe() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..62).map(|i| k("a", i)).collect();
    keys.extend((0..102).map(|i| k("b", i)));
    keys.extend((0..3).map(|i| k("c", i)));
    keys.push(b"".to_vec());
    keys
}

fn apply(model: &mut Model, step: &Step) {
    let mut put_or_delete = |key: &Vec<u8>, value: Option<&Vec<u8>>| match value {
        Some(value) => {
            model.insert(key.clone(), value.clone());
        }
        None => {
            model.remove(key);
        }
    };
    match step {
        Step::Put(key, value) => put_or_delete(key, Some(value)),
        Step::Delete(key) => put_or_delete(key, None),
        Step::Batch(ops) => ops.iter().for_each(|(k, v)| put_or_delete(k, v.as_ref())),
        Step::Compact => {}
    }
}

fn expected(script: &[Step]) -> Model {
    let mut model = Model::new();
    script.iter().for_each(|s| apply(&mut model, s));
    model
}

fn options() -> Options {
    Options {
        segment_max_bytes: 4096,
        compaction: CompactionPolicy {
            check_every: None,
            ..CompactionPolicy::default()
        },
        ..Options::default()
    }
}

fn fixture_dir(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(version)
}

fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// Copies the fixture: the engine takes a lock file and deletes leftover
/// `*.tmp` files, so the checked-in directory is never opened in place.
fn copy_fixture(version: &str) -> tempfile::TempDir {
    let from = fixture_dir(version);
    assert!(from.is_dir(), "fixture {} is missing", from.display());
    let to = tempfile::tempdir().unwrap();
    for name in names(&from) {
        fs::copy(from.join(&name), to.path().join(&name)).unwrap();
    }
    to
}

fn assert_contents(engine: &Engine, model: &Model, ctx: &str) {
    for key in universe() {
        assert_eq!(
            engine.get(&key).unwrap().as_ref(),
            model.get(&key),
            "{ctx}: key {}",
            String::from_utf8_lossy(&key)
        );
    }
    assert_eq!(engine.stats().keys, model.len() as u64, "{ctx}: key count");
}

#[test]
fn v1_opens_with_exact_contents() {
    let model = expected(&v1_script());
    let copy = copy_fixture("v1");
    let dir = copy.path();

    // The fixture still covers what it claims to.
    let files = names(dir);
    let count = |suffix: &str| files.iter().filter(|n| n.ends_with(suffix)).count();
    assert!(count(".dat") >= 1, "no merged file: {files:?}");
    assert!(count(".seg") >= 3, "want several segments: {files:?}");
    assert!(count(".hint") >= 3, "want hint files: {files:?}");
    assert!(files.iter().any(|n| n == manifest::FILE_NAME), "{files:?}");
    assert!(!files.iter().any(|n| n == LOCK_FILE), "{files:?}");
    let total: u64 = files
        .iter()
        .map(|n| fs::metadata(dir.join(n)).unwrap().len())
        .sum();
    assert!(total < 64 * 1024, "fixture is {total} bytes");

    let report = verify_dir(dir).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.records > 0);

    let engine = Engine::open(dir, options()).unwrap();
    assert_contents(&engine, &model, "opened");
    // Old data takes new writes and a compaction.
    engine.put(b"new", b"after the upgrade").unwrap();
    engine.compact().unwrap();
    assert_eq!(
        engine.get(b"new").unwrap(),
        Some(b"after the upgrade".to_vec())
    );
    engine.close().unwrap();

    let report = verify_dir(dir).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let engine = Engine::open(dir, options()).unwrap();
    let mut model = model;
    model.insert(b"new".to_vec(), b"after the upgrade".to_vec());
    assert_contents(&engine, &model, "reopened");
    engine.close().unwrap();
}

/// Writes `tests/fixtures/<VERSION>/` (see the module comment for when).
#[test]
#[ignore = "writes the checked-in fixture; run by hand for a new format version"]
fn generate_fixture() {
    let dir = fixture_dir(VERSION);
    if dir.exists() {
        fs::remove_dir_all(&dir).unwrap();
    }
    let script = v1_script();
    let engine = Engine::open(&dir, options()).unwrap();
    for step in &script {
        match step {
            Step::Put(key, value) => engine.put(key, value).unwrap(),
            Step::Delete(key) => {
                engine.delete(key).unwrap();
            }
            Step::Batch(ops) => {
                let ops: Vec<WriteOp> = ops
                    .iter()
                    .map(|(k, v)| match v {
                        Some(v) => WriteOp::Put(k, v),
                        None => WriteOp::Delete(k),
                    })
                    .collect();
                engine.write_batch(&ops).unwrap()
            }
            Step::Compact => {
                engine.compact().unwrap();
            }
        }
    }
    assert_contents(&engine, &expected(&script), "generated");
    engine.close().unwrap();
    // Opening writes the hint of any sealed segment the background thread
    // had not got to yet.
    Engine::open(&dir, options()).unwrap().close().unwrap();
    fs::remove_file(dir.join(LOCK_FILE)).unwrap();
    let report = verify_dir(&dir).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    fs::remove_file(dir.join(LOCK_FILE)).unwrap();
}
