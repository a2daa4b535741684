//! Model test: random operations, including reopen and compaction, checked
//! against a `BTreeMap` after every step. Keys come from a small set so
//! they collide often; segments are tiny so rolls happen all the time.

use std::collections::BTreeMap;

use kvstore::engine::{CompactionPolicy, Durability, Engine, Options, WriteOp};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Put(u8, Vec<u8>),
    Delete(u8),
    Get(u8),
    Batch(Vec<(u8, Option<Vec<u8>>)>),
    Reopen,
    /// The directory as a crash would leave it, opened: after a reopen
    /// from the active segment's hint and more writes, that hint is stale.
    Crash,
    Compact,
}

fn key(k: u8) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

fn op() -> impl Strategy<Value = Op> {
    let value = prop::collection::vec(any::<u8>(), 0..300);
    prop_oneof![
        6 => (0u8..24, value.clone()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0u8..24).prop_map(Op::Delete),
        3 => (0u8..24).prop_map(Op::Get),
        1 => prop::collection::vec((0u8..24, prop::option::of(value)), 1..6).prop_map(Op::Batch),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => Just(Op::Compact),
    ]
}

fn options(durability: Durability) -> Options {
    Options {
        durability,
        segment_max_bytes: 4096,
        compaction: CompactionPolicy {
            check_every: None,
            ..CompactionPolicy::default()
        },
        ..Options::default()
    }
}

fn check_all(engine: &Engine, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
    for k in 0..24u8 {
        assert_eq!(
            engine.get(&key(k)).unwrap(),
            model.get(&key(k)).cloned(),
            "key {k}"
        );
    }
    assert_eq!(engine.stats().keys, model.len() as u64);
}

fn run(ops: Vec<Op>, durability: Durability) {
    let mut dir = tempfile::tempdir().unwrap();
    let mut engine = Engine::open(dir.path(), options(durability)).unwrap();
    let mut model = BTreeMap::new();
    for op in ops {
        match op {
            Op::Put(k, v) => {
                engine.put(&key(k), &v).unwrap();
                model.insert(key(k), v);
            }
            Op::Delete(k) => {
                engine.delete(&key(k)).unwrap();
                model.remove(&key(k));
            }
            Op::Get(k) => assert_eq!(engine.get(&key(k)).unwrap(), model.get(&key(k)).cloned()),
            Op::Batch(items) => {
                let keys: Vec<Vec<u8>> = items.iter().map(|(k, _)| key(*k)).collect();
                let ops: Vec<WriteOp> = keys
                    .iter()
                    .zip(&items)
                    .map(|(k, (_, v))| match v {
                        Some(v) => WriteOp::Put(k, v),
                        None => WriteOp::Delete(k),
                    })
                    .collect();
                engine.write_batch(&ops).unwrap();
                for (k, v) in items {
                    match v {
                        Some(v) => model.insert(key(k), v),
                        None => model.remove(&key(k)),
                    };
                }
            }
            Op::Reopen => {
                engine.close().unwrap();
                engine = Engine::open(dir.path(), options(durability)).unwrap();
            }
            Op::Crash => {
                // Under `never` an acknowledged write may be lost in a
                // crash: flushed first, the model holds either way.
                engine.flush().unwrap();
                let image = crate::common::copy_data_dir(dir.path());
                engine.close().unwrap();
                dir = image;
                engine = Engine::open(dir.path(), options(durability)).unwrap();
            }
            Op::Compact => {
                engine.compact().unwrap();
            }
        }
        check_all(&engine, &model);
    }
    engine.close().unwrap();
    let report = kvstore::engine::verify::verify_dir(dir.path()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let engine = Engine::open(dir.path(), options(durability)).unwrap();
    check_all(&engine, &model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn matches_a_btreemap_under_always(ops in prop::collection::vec(op(), 1..120)) {
        run(ops, Durability::Always);
    }

    #[test]
    fn matches_a_btreemap_under_never(ops in prop::collection::vec(op(), 1..120)) {
        run(ops, Durability::Never);
    }
}
