//! The reserve: a writer that fsyncs keeps zeros written ahead of the end
//! of the log in the active segment, so that its fsyncs overwrite blocks
//! the file already has. The zeros are never part of the log: a directory
//! copied while the engine runs (what a crash leaves when every write was
//! fsynced) opens with every write and without a recorded cut, a torn
//! record among the zeros is cut counting its own bytes only, and a
//! sealed segment or a cleanly closed one ends at its last record.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use kvstore::engine::segment::{FileKind, FILE_HEADER_LEN};
use kvstore::engine::verify::verify_dir;
use kvstore::engine::{CompactionPolicy, Durability, Engine, Options};

use crate::common::copy_data_dir;
use crate::tail::{active_segment, segments, TORN};

const KEYS: u32 = 300;

fn options(segment_max_bytes: u64) -> Options {
    Options {
        durability: Durability::Always,
        segment_max_bytes,
        compaction: CompactionPolicy {
            check_every: None,
            ..CompactionPolicy::default()
        },
        ..Options::default()
    }
}

fn value(i: u32) -> Vec<u8> {
    format!("value-{i:06}-").repeat(8).into_bytes()
}

/// An engine under `always` that took `KEYS` puts, each durable.
fn written(dir: &Path, segment_max_bytes: u64) -> Engine {
    let engine = Engine::open(dir, options(segment_max_bytes)).unwrap();
    for i in 0..KEYS {
        engine.put(&i.to_le_bytes(), &value(i)).unwrap();
    }
    engine
}

fn base_of(path: &Path) -> u64 {
    let name = path.file_name().unwrap().to_str().unwrap();
    match FileKind::parse(name) {
        Some(FileKind::Segment { base }) => base,
        other => panic!("{name} is not a segment: {other:?}"),
    }
}

/// The file position where the log ends in the active segment at `path`.
fn log_end_in(path: &Path, log_end: u64) -> u64 {
    FILE_HEADER_LEN + (log_end - base_of(path))
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

fn assert_all_keys(engine: &Engine, ctx: &str) {
    for i in 0..KEYS {
        assert_eq!(
            engine.get(&i.to_le_bytes()).unwrap().as_deref(),
            Some(&value(i)[..]),
            "{ctx}: key {i}"
        );
    }
}

#[test]
fn zeros_ahead_of_the_log_are_dropped_by_an_open_without_a_cut() {
    let dir = tempfile::tempdir().unwrap();
    let engine = written(dir.path(), 64 << 20);
    let active = active_segment(dir.path());
    let end = log_end_in(&active, engine.log_end());
    let len = file_len(&active);
    assert!(
        len > end,
        "no reserve: the file ends at {len}, the log at {end}"
    );
    let mut past_end = vec![0xFF; (len - end) as usize];
    fs::File::open(&active)
        .unwrap()
        .read_exact_at(&mut past_end, end)
        .unwrap();
    assert!(
        past_end.iter().all(|&b| b == 0),
        "the reserve holds only zeros"
    );

    // Every put was fsynced: a copy now is what a crash would leave.
    let copy = copy_data_dir(dir.path());
    let report = verify_dir(copy.path()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let reopened = Engine::open(copy.path(), options(64 << 20)).unwrap();
    assert_all_keys(&reopened, "crash copy");
    assert_eq!(reopened.tail_cuts(), vec![], "zeros are no torn tail");
    assert_eq!(file_len(&active_segment(copy.path())), end, "zeros cut off");
    reopened.close().unwrap();

    engine.close().unwrap();
    assert_eq!(file_len(&active), end, "a clean close cuts the reserve");
    let reopened = Engine::open(dir.path(), options(64 << 20)).unwrap();
    assert_all_keys(&reopened, "after a clean close");
    assert_eq!(reopened.tail_cuts(), vec![]);
}

#[test]
fn a_torn_record_in_the_reserve_is_cut_counting_its_own_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = written(dir.path(), 64 << 20);
    let active = active_segment(dir.path());
    let end = log_end_in(&active, engine.log_end());
    assert!(file_len(&active) > end + TORN.len() as u64, "no reserve");
    let copy = copy_data_dir(dir.path());
    engine.close().unwrap();

    let torn_copy = active_segment(copy.path());
    fs::OpenOptions::new()
        .write(true)
        .open(&torn_copy)
        .unwrap()
        .write_all_at(TORN, end)
        .unwrap();
    let report = verify_dir(copy.path()).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(
        report.problems[0]
            .what
            .contains(&format!("torn tail of {} bytes", TORN.len())),
        "{:?}",
        report.problems
    );

    let reopened = Engine::open(copy.path(), options(64 << 20)).unwrap();
    assert_all_keys(&reopened, "torn copy");
    let cuts = reopened.tail_cuts();
    assert_eq!(cuts.len(), 1, "{cuts:?}");
    assert_eq!(cuts[0].bytes, TORN.len() as u64, "{cuts:?}");
    assert_eq!(cuts[0].records, 1, "{cuts:?}");
    assert_eq!(file_len(&torn_copy), end);
}

#[test]
fn a_sealed_segment_ends_at_its_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let engine = written(dir.path(), 8 * 1024);
    let segs = segments(dir.path());
    assert!(segs.len() > 3, "want several rolls, got {}", segs.len());
    for pair in segs.windows(2) {
        let (sealed, next) = (&pair[0], &pair[1]);
        assert_eq!(
            file_len(sealed),
            FILE_HEADER_LEN + (base_of(next) - base_of(sealed)),
            "{} runs past the next segment's base",
            sealed.display()
        );
    }
    let copy = copy_data_dir(dir.path());
    let report = verify_dir(copy.path()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let reopened = Engine::open(copy.path(), options(8 * 1024)).unwrap();
    assert_all_keys(&reopened, "crash copy with rolls");
    assert_eq!(reopened.tail_cuts(), vec![]);
    engine.close().unwrap();
}
