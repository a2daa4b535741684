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
//! `tests/fixtures/v2/` adds keys with an expiry (record kind 0x04, hint
//! entries of kind 3), written on a clock set to 2020: some expire in 2023,
//! so they read as absent today though the files hold them, others in
//! 2100; some in the merged generation, some in sealed segments and a
//! batch, some overwritten by plain puts that cleared their expiry.
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

use kvstore::engine::verify::verify_dir;
use kvstore::engine::{hint, manifest};
use kvstore::engine::{Engine, KeyExpiry, ManualClock, Options, WriteOp, LOCK_FILE};

use crate::common;

/// The version `generate_fixture` writes.
const VERSION: &str = "v2";

/// The clock the v2 fixture was written on (2020-09-13).
const WRITTEN_AT: u64 = 1_600_000_000_000;
/// An expiry that was in the future when the v2 fixture was written and is
/// past today (2023-11-14).
const PAST: u64 = 1_700_000_000_000;
/// An expiry still in the future (2100-01-01).
const FUTURE: u64 = 4_102_444_800_000;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// A value and its expiry.
type Value = (Vec<u8>, Option<u64>);

/// One step of the script that wrote the fixture.
enum Step {
    Put(Vec<u8>, Vec<u8>),
    /// A put with expiry (format 2).
    PutExpiring(Vec<u8>, Vec<u8>, u64),
    Delete(Vec<u8>),
    /// Keys with the value (and expiry) to set, or `None` to delete.
    Batch(Vec<(Vec<u8>, Option<Value>)>),
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
        (k("c", 0), Some((v("c", 0, 1), None))),
        (k("a", 12), None),
        (k("a", 13), Some((v("a", 13, 4), None))),
        (k("c", 1), Some((Vec::new(), None))),
    ]));
    for i in 40..45 {
        s.push(Step::Put(k("b", i), v("b", i, 2)));
    }
    s
}

/// The writes that produced `tests/fixtures/v2`, on a clock reading
/// [`WRITTEN_AT`]. Frozen, like [`v1_script`].
fn v2_script() -> Vec<Step> {
    let mut s = Vec::new();
    let at = |i: usize| if i.is_multiple_of(2) { PAST } else { FUTURE };
    for i in 0..40 {
        s.push(Step::Put(k("a", i), v("a", i, 1)));
    }
    for i in 0..20 {
        s.push(Step::PutExpiring(k("e", i), v("e", i, 1), at(i)));
    }
    // An expiry set on a plain key, and plain puts clearing an expiry.
    for i in 0..4 {
        s.push(Step::PutExpiring(k("a", i), v("a", i, 2), at(i)));
    }
    for i in 0..3 {
        s.push(Step::Put(k("e", i), v("e", i, 2)));
    }
    s.push(Step::Delete(k("e", 15)));
    s.push(Step::Compact);
    for i in 0..60 {
        s.push(Step::Put(k("b", i), v("b", i, 1)));
    }
    for i in 0..20 {
        s.push(Step::PutExpiring(k("f", i), v("f", i, 1), at(i)));
    }
    for i in 10..14 {
        s.push(Step::PutExpiring(k("e", i), v("e", i, 3), FUTURE));
    }
    s.push(Step::Batch(vec![
        (k("c", 0), Some((v("c", 0, 1), Some(FUTURE)))),
        (k("c", 1), Some((v("c", 1, 1), Some(PAST)))),
        (k("c", 2), Some((v("c", 2, 1), None))),
        (k("a", 20), None),
    ]));
    for i in 60..100 {
        s.push(Step::Put(k("b", i), v("b", i, 1)));
    }
    s
}

/// Every key the scripts touch, plus some they never wrote.
fn universe() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..62).map(|i| k("a", i)).collect();
    keys.extend((0..102).map(|i| k("b", i)));
    keys.extend((0..3).map(|i| k("c", i)));
    keys.extend((0..21).map(|i| k("e", i)));
    keys.extend((0..21).map(|i| k("f", i)));
    keys.push(b"".to_vec());
    keys
}

/// What the script left for a key: its value and expiry.
type Written = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

fn apply(written: &mut Written, step: &Step) {
    let mut set = |key: &Vec<u8>, value: Option<(&Vec<u8>, Option<u64>)>| match value {
        Some((value, at)) => {
            written.insert(key.clone(), (value.clone(), at));
        }
        None => {
            written.remove(key);
        }
    };
    match step {
        Step::Put(key, value) => set(key, Some((value, None))),
        Step::PutExpiring(key, value, at) => set(key, Some((value, Some(*at)))),
        Step::Delete(key) => set(key, None),
        Step::Batch(ops) => ops
            .iter()
            .for_each(|(k, v)| set(k, v.as_ref().map(|(v, at)| (v, *at)))),
        Step::Compact => {}
    }
}

fn written(script: &[Step]) -> Written {
    let mut written = Written::new();
    script.iter().for_each(|s| apply(&mut written, s));
    written
}

/// The values that read as present at `now` (ms).
fn visible(written: &Written, now: u64) -> Model {
    written
        .iter()
        .filter(|(_, (_, at))| at.is_none_or(|at| at > now))
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect()
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

/// Checks every key's value and expiry against what the script wrote, at
/// the engine's `now`, and that the index holds `keys` entries (expired
/// keys keep theirs until the sweep deletes them).
fn assert_contents(engine: &Engine, written: &Written, keys: usize, ctx: &str) {
    let now = engine.now_ms();
    let model = visible(written, now);
    for key in universe() {
        let name = String::from_utf8_lossy(&key);
        assert_eq!(
            engine.get(&key).unwrap().as_ref(),
            model.get(&key),
            "{ctx}: key {name}"
        );
        let expiry = match written.get(&key) {
            Some((_, Some(at))) if *at > now => KeyExpiry::At(*at),
            Some((_, None)) => KeyExpiry::Never,
            _ => KeyExpiry::Absent,
        };
        assert_eq!(engine.expiry(&key).unwrap(), expiry, "{ctx}: key {name}");
    }
    assert_eq!(engine.stats().keys, keys as u64, "{ctx}: key count");
}

/// Checks that the fixture still covers what it claims to, and passes
/// `verify`.
fn check_shape(dir: &Path) {
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
}

/// Opens the copy, checks it, writes to it, compacts, reopens.
fn opens_and_takes_writes(dir: &Path, written: &Written) {
    let engine = Engine::open(dir, common::small_segment_options()).unwrap();
    assert_contents(&engine, written, written.len(), "opened");
    let expiring = written.values().filter(|(_, at)| at.is_some()).count();
    assert_eq!(engine.stats().keys_with_expiry, expiring as u64);
    // Once expiring keys (as a master does), the sweep deletes exactly the
    // keys whose expiry has passed (the background sweep may get there
    // before this call does).
    let live = visible(written, engine.now_ms()).len();
    engine.set_expiring(true);
    engine.expire_due().unwrap();
    assert_eq!(engine.stats().expired_keys as usize, written.len() - live);
    let mut written: Written = written
        .iter()
        .filter(|(_, (_, at))| at.is_none_or(|at| at > engine.now_ms()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_contents(&engine, &written, live, "swept");
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
    let engine = Engine::open(dir, common::small_segment_options()).unwrap();
    written.insert(b"new".to_vec(), (b"after the upgrade".to_vec(), None));
    assert_contents(&engine, &written, written.len(), "reopened");
    engine.close().unwrap();
}

#[test]
fn v1_opens_with_exact_contents() {
    let copy = copy_fixture("v1");
    check_shape(copy.path());
    opens_and_takes_writes(copy.path(), &written(&v1_script()));
}

#[test]
fn v2_opens_with_exact_contents_and_expiries() {
    let copy = copy_fixture("v2");
    let dir = copy.path();
    check_shape(dir);
    // Hints of both a merged file and a segment carry expiries (kind 3).
    for suffix in [".dat", ".seg"] {
        let with_expiry = names(dir)
            .into_iter()
            .filter(|n| n.ends_with(suffix))
            .any(|data| {
                let hint_path = dir.join(&data).with_extension("hint");
                let Ok(bytes) = fs::read(hint_path) else {
                    return false;
                };
                let data_len = fs::metadata(dir.join(&data)).unwrap().len();
                hint::decode(&bytes, data_len)
                    .unwrap()
                    .iter()
                    .any(|e| e.expires_at.is_some())
            });
        assert!(with_expiry, "no {suffix} file's hint has an expiry");
    }
    let written = written(&v2_script());
    assert!(written.values().any(|(_, at)| *at == Some(PAST)));
    assert!(written.values().any(|(_, at)| *at == Some(FUTURE)));
    opens_and_takes_writes(dir, &written);
}

/// Writes `tests/fixtures/<VERSION>/` (see the module comment for when).
#[test]
#[ignore = "writes the checked-in fixture; run by hand for a new format version"]
fn generate_fixture() {
    let dir = fixture_dir(VERSION);
    if dir.exists() {
        fs::remove_dir_all(&dir).unwrap();
    }
    let script = match VERSION {
        "v1" => v1_script(),
        _ => v2_script(),
    };
    let clock = ManualClock::new(WRITTEN_AT);
    let options = Options {
        clock: clock.clock(),
        ..common::small_segment_options()
    };
    let engine = Engine::open(&dir, options.clone()).unwrap();
    for step in &script {
        match step {
            Step::Put(key, value) => engine.put(key, value).unwrap(),
            Step::PutExpiring(key, value, at) => engine.put_expiring(key, value, *at).unwrap(),
            Step::Delete(key) => {
                engine.delete(key).unwrap();
            }
            Step::Batch(ops) => {
                let ops: Vec<WriteOp> = ops
                    .iter()
                    .map(|(k, v)| match v {
                        Some((v, None)) => WriteOp::Put(k, v),
                        Some((v, Some(at))) => WriteOp::PutExpiring(k, v, *at),
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
    let written = written(&script);
    assert_contents(&engine, &written, written.len(), "generated");
    engine.close().unwrap();
    // Opening writes the hint of any sealed segment the background thread
    // had not got to yet.
    Engine::open(&dir, options).unwrap().close().unwrap();
    fs::remove_file(dir.join(LOCK_FILE)).unwrap();
    let report = verify_dir(&dir).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    fs::remove_file(dir.join(LOCK_FILE)).unwrap();
}
