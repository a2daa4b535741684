//! The hint of the active segment: a clean close writes it, the next open
//! indexes the segment from it instead of scanning, and anything a crash
//! can leave (a segment that grew, one cut back and regrown to the same
//! length, a torn or damaged hint) makes open scan as before
//! (docs/FORMAT.md, "Hint file").

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use kvstore::engine::record::{self, Kind};
use kvstore::engine::segment::FILE_HEADER_LEN;
use kvstore::engine::verify::verify_dir;
use kvstore::engine::{Engine, Options};

use crate::common::copy_data_dir;
use crate::common::replication::{key, master, put_range, stats, value};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// One large segment, no background compaction: every write stays in the
/// active segment.
fn options() -> Options {
    crate::recovery::options(crate::recovery::LARGE_SEGMENT)
}

fn k(i: usize) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

fn v(i: usize, salt: u8) -> Vec<u8> {
    (0..20 + i % 70).map(|j| (i + j) as u8 ^ salt).collect()
}

fn fill(engine: &Engine, range: std::ops::Range<usize>, salt: u8, model: &mut Model) {
    for i in range {
        engine.put(&k(i), &v(i, salt)).unwrap();
        model.insert(k(i), v(i, salt));
    }
}

fn assert_model(engine: &Engine, model: &Model, upto: usize, ctx: &str) {
    for i in 0..upto {
        assert_eq!(
            engine.get(&k(i)).unwrap(),
            model.get(&k(i)).cloned(),
            "{ctx}: key {i}"
        );
    }
    assert_eq!(engine.stats().keys, model.len() as u64, "{ctx}: key count");
}

fn only_segment(dir: &Path) -> PathBuf {
    let segs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs[0].clone()
}

/// A directory closed cleanly after 300 puts and 20 deletes.
fn closed_dir(dir: &Path) -> Model {
    let engine = Engine::open(dir, options()).unwrap();
    let mut model = Model::new();
    fill(&engine, 0..300, 0, &mut model);
    for i in (0..300).step_by(15) {
        engine.delete(&k(i)).unwrap();
        model.remove(&k(i));
    }
    engine.close().unwrap();
    model
}

#[test]
fn a_clean_close_leaves_a_hint_the_next_open_uses() {
    let dir = tempfile::tempdir().unwrap();
    let model = closed_dir(dir.path());
    let hint = only_segment(dir.path()).with_extension("hint");
    assert!(hint.exists(), "no hint of the active segment after a close");
    let written = fs::read(&hint).unwrap();

    let engine = Engine::open(dir.path(), options()).unwrap();
    assert!(engine.stats().active_from_hint, "open scanned the segment");
    assert_model(&engine, &model, 300, "from the hint");
    engine.close().unwrap();
    // Nothing was written: the hint stays as it was, and stays usable.
    assert_eq!(fs::read(&hint).unwrap(), written);
    let report = verify_dir(dir.path()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let engine = Engine::open(dir.path(), options()).unwrap();
    assert!(engine.stats().active_from_hint);
    assert_model(&engine, &model, 300, "from the same hint again");
}

#[test]
fn writes_after_the_reopen_then_a_crash_ignore_the_stale_hint() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = closed_dir(dir.path());
    let engine = Engine::open(dir.path(), options()).unwrap();
    assert!(engine.stats().active_from_hint);
    fill(&engine, 250..400, 7, &mut model);
    for i in (0..400).step_by(9) {
        engine.delete(&k(i)).unwrap();
        model.remove(&k(i));
    }
    // The directory as a crash now would leave it: every write above is
    // durable (`always`), the hint still describes the segment as it was.
    let crashed = copy_data_dir(dir.path());
    engine.close().unwrap();

    let report = verify_dir(crashed.path()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let engine = Engine::open(crashed.path(), options()).unwrap();
    assert!(
        !engine.stats().active_from_hint,
        "open trusted a hint of a segment that grew since"
    );
    assert_model(&engine, &model, 400, "after the crash");
}

/// Every record of a segment as `(position, length)`.
fn records(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut pos = FILE_HEADER_LEN as usize;
    let mut out = Vec::new();
    while let Ok(Some((_, len))) = record::decode(&bytes[pos..]) {
        out.push((pos, len));
        pos += len;
    }
    assert_eq!(pos, bytes.len(), "the segment ends in a whole record");
    out
}

/// A segment cut back after the close that wrote its hint and appended to
/// again up to exactly the same length (a torn tail cut, a replica's
/// truncation, a live recovery): the length matches, the bytes do not.
#[test]
fn a_segment_regrown_to_the_hinted_length_is_scanned() {
    let dir = tempfile::tempdir().unwrap();
    let model = closed_dir(dir.path());
    let seg = only_segment(dir.path());
    let mut bytes = fs::read(&seg).unwrap();
    let (pos, len) = records(&bytes)
        .into_iter()
        .rev()
        .find(|&(pos, _)| record::decode(&bytes[pos..]).unwrap().unwrap().0.kind == Kind::Put)
        .unwrap();
    let (rec, _) = record::decode(&bytes[pos..]).unwrap().unwrap();
    // The same record for another key of the same length.
    let old_key = rec.key.to_vec();
    let mut new_key = old_key.clone();
    *new_key.last_mut().unwrap() = b'x';
    let mut new = Vec::new();
    record::encode(&mut new, Kind::Put, false, rec.epoch, &new_key, rec.value);
    assert_eq!(new.len(), len);
    let value = rec.value.to_vec();
    bytes[pos..pos + len].copy_from_slice(&new);
    fs::write(&seg, &bytes).unwrap();

    let engine = Engine::open(dir.path(), options()).unwrap();
    assert!(
        !engine.stats().active_from_hint,
        "open trusted a hint of different bytes of the same length"
    );
    assert_eq!(engine.get(&new_key).unwrap(), Some(value));
    assert_eq!(engine.get(&old_key).unwrap(), None);
    assert_eq!(engine.stats().keys, model.len() as u64);
}

#[test]
fn a_damaged_or_torn_hint_is_ignored_and_rewritten_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let model = closed_dir(dir.path());
    let name = only_segment(dir.path())
        .with_extension("hint")
        .file_name()
        .unwrap()
        .to_owned();
    let original = fs::read(dir.path().join(&name)).unwrap();
    let n = original.len();
    let damages: [(&str, Vec<u8>); 5] = [
        ("version", flipped(&original, 9)),
        ("checksum word", flipped(&original, 12)),
        ("an entry", flipped(&original, 24 + 17 * 3 + 5)),
        ("the trailer", flipped(&original, n - 1)),
        ("torn", original[..n / 2].to_vec()),
    ];
    for (what, bytes) in damages {
        let copy = copy_data_dir(dir.path());
        let path = copy.path().join(&name);
        fs::write(&path, bytes).unwrap();
        let engine = Engine::open(copy.path(), options())
            .unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
        assert!(!engine.stats().active_from_hint, "{what}: hint used");
        assert_model(&engine, &model, 300, what);
        engine.close().unwrap();
        assert_eq!(fs::read(&path).unwrap(), original, "{what}: not rewritten");
    }
}

fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at] ^= 0x10;
    out
}

/// Through a real node: SIGTERM is a clean close, the restart loads the
/// active segment from the hint (`stats`), and a damaged hint is named in
/// a warning and ignored.
#[test]
fn a_node_restarted_after_sigterm_loads_its_segment_from_the_hint() {
    let mut m = master(&[]);
    let mut c = m.client();
    put_range(&mut c, "h", 0..200, 40).unwrap();
    drop(c);
    assert_eq!(stats(m.addr)["active_from_hint"], false);
    assert!(m.sigterm().success());
    m.restart();
    assert_eq!(stats(m.addr)["active_from_hint"], true, "{}", m.logs());
    let mut c = m.client();
    assert_eq!(c.get(&key("h", 199)).unwrap(), Some(value("h", 199, 40)));
    drop(c);

    assert!(m.sigterm().success());
    let hint = only_segment(&m.data_dir()).with_extension("hint");
    let bytes = flipped(&fs::read(&hint).unwrap(), 30);
    fs::write(&hint, bytes).unwrap();
    m.restart();
    assert_eq!(stats(m.addr)["active_from_hint"], false);
    let logs = m.logs();
    assert!(
        logs.contains("ignoring a damaged hint of the active segment"),
        "no warning about the damaged hint:\n{logs}"
    );
    let mut c = m.client();
    for i in 0..200 {
        assert_eq!(c.get(&key("h", i)).unwrap(), Some(value("h", i, 40)));
    }
}
