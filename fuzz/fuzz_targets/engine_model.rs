//! Fuzzes the engine as a whole against a `BTreeMap` model: an arbitrary
//! sequence of puts, deletes, batches, reads, flushes, compactions and
//! reopens (close, then open the same directory) on tiny segments, so rolls,
//! sealed segments, hint files and merged generations all occur.
//!
//! Properties checked:
//! - no operation panics, and none fails (the directory is healthy);
//! - every read agrees with the model, after every operation that can
//!   change what is on disk (reopen, compact) all keys are compared, and
//!   the key count in `stats` matches the model's.
//!
//! Data directories go under /dev/shm (tmpfs) when it exists, for speed.

#![no_main]

use std::collections::BTreeMap;
use std::fs;

use arbitrary::Arbitrary;
use kvstore::engine::options::MIN_SEGMENT_BYTES;
use kvstore::engine::{CompactionPolicy, Engine, Options, WriteOp};
use libfuzzer_sys::fuzz_target;

mod scratch;
use scratch::scratch_dir;

/// Keys are drawn from a small set so that overwrites and deletes of live
/// keys are common.
const KEYS: u8 = 24;

#[derive(Arbitrary, Debug)]
enum Op {
    Put { key: u8, len: u16, fill: u8 },
    Delete { key: u8 },
    Batch(Vec<(u8, Option<u8>)>),
    Get { key: u8 },
    Flush,
    Compact,
    Reopen,
}

fn key(k: u8) -> Vec<u8> {
    format!("key-{}", k % KEYS).into_bytes()
}

fn value(len: u16, fill: u8) -> Vec<u8> {
    vec![fill; usize::from(len % 700)]
}

fn options() -> Options {
    Options {
        segment_max_bytes: MIN_SEGMENT_BYTES,
        compaction: CompactionPolicy {
            check_every: None,
            ..CompactionPolicy::default()
        },
        ..Options::default()
    }
}

fn check_all(engine: &Engine, model: &BTreeMap<Vec<u8>, Vec<u8>>, after: &str) {
    for k in 0..KEYS {
        let k = key(k);
        let got = engine.get(&k).expect("get");
        assert_eq!(got.as_ref(), model.get(&k), "key {k:?} after {after}");
    }
    assert_eq!(
        engine.stats().keys,
        model.len() as u64,
        "key count after {after}"
    );
}

fuzz_target!(|ops: Vec<Op>| {
    let dir = scratch_dir("model");
    let mut engine = Engine::open(&dir, options()).expect("open");
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for op in ops.iter().take(200) {
        match op {
            Op::Put { key: k, len, fill } => {
                engine.put(&key(*k), &value(*len, *fill)).expect("put");
                model.insert(key(*k), value(*len, *fill));
            }
            Op::Delete { key: k } => {
                let existed = engine.delete(&key(*k)).expect("delete");
                assert_eq!(existed, model.remove(&key(*k)).is_some(), "delete existed");
            }
            Op::Batch(items) => {
                let owned: Vec<(Vec<u8>, Option<Vec<u8>>)> = items
                    .iter()
                    .take(20)
                    .map(|(k, v)| {
                        let v = v.map(|fill| value(u16::from(fill) * 3, fill));
                        (key(*k), v)
                    })
                    .collect();
                let batch: Vec<WriteOp> = owned
                    .iter()
                    .map(|(k, v)| match v {
                        Some(v) => WriteOp::Put(k, v),
                        None => WriteOp::Delete(k),
                    })
                    .collect();
                engine.write_batch(&batch).expect("batch");
                for (k, v) in owned {
                    match v {
                        Some(v) => model.insert(k, v),
                        None => model.remove(&k),
                    };
                }
            }
            Op::Get { key: k } => {
                assert_eq!(
                    engine.get(&key(*k)).expect("get").as_ref(),
                    model.get(&key(*k))
                );
                assert_eq!(
                    engine.contains(&key(*k)).expect("contains"),
                    model.contains_key(&key(*k))
                );
            }
            Op::Flush => engine.flush().expect("flush"),
            Op::Compact => {
                engine.compact().expect("compact");
                check_all(&engine, &model, "compact");
            }
            Op::Reopen => {
                engine.close().expect("close");
                engine = Engine::open(&dir, options()).expect("reopen");
                check_all(&engine, &model, "reopen");
            }
        }
    }
    engine.close().expect("close");
    let engine = Engine::open(&dir, options()).expect("final reopen");
    check_all(&engine, &model, "final reopen");
    engine.close().expect("close");
    let _ = fs::remove_dir_all(&dir);
});
