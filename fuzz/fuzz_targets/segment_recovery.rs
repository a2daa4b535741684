//! Fuzzes crash recovery of the active segment: a valid prefix of records
//! written by the engine, then arbitrary bytes appended to the active
//! segment file (a torn or damaged tail), then `Engine::open`.
//!
//! Input: byte 0 picks how many prefix operations the engine writes
//! (puts, deletes and batches over a few keys); the rest is the tail.
//!
//! The expected outcome is computed independently with
//! `engine::record::decode`, following the recovery rules of docs/FORMAT.md
//! ("Crash safety, step by step"): records are applied in
//! order (batch members at their commit), the scan stops at an incomplete
//! record or at a bad record with no valid record anywhere after it (a torn
//! write, cut off), and a bad record followed by a valid one, a batch
//! commit with the wrong count or a plain record inside an open batch is
//! corruption. Properties checked:
//! - `Engine::open` never panics;
//! - when the model says corruption, open fails with `Error::Corrupt`;
//! - otherwise open succeeds and every key the model saw (prefix and tail)
//!   reads exactly as the model says: exactly the valid prefix is kept;
//! - the cut is durable: a second open agrees.
//!
//! Data directories go under /dev/shm (tmpfs) when it exists, for speed.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;

use kvstore::engine::record::{self, Kind};
use kvstore::engine::segment::FILE_HEADER_LEN;
use kvstore::engine::{CompactionPolicy, Engine, Error, Options, WriteOp};
use libfuzzer_sys::fuzz_target;

mod scratch;
use scratch::scratch_dir;

fn options() -> Options {
    Options {
        compaction: CompactionPolicy {
            check_every: None,
            ..CompactionPolicy::default()
        },
        ..Options::default()
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("k{}", i % 5).into_bytes()
}

fn write_prefix(engine: &Engine, n: usize) {
    for i in 0..n {
        match i % 7 {
            3 => {
                engine.delete(&key(i)).expect("prefix delete");
            }
            5 => engine
                .write_batch(&[
                    WriteOp::Put(&key(i), format!("b{i}").as_bytes()),
                    WriteOp::Delete(&key(i + 1)),
                ])
                .expect("prefix batch"),
            _ => engine
                .put(&key(i), format!("v{i}").repeat(i % 4 + 1).as_bytes())
                .expect("prefix put"),
        }
    }
}

/// What recovery must make of the segment body (records after the header).
enum Expect {
    State {
        map: BTreeMap<Vec<u8>, Vec<u8>>,
        seen: BTreeSet<Vec<u8>>,
    },
    Corrupt,
}

fn model(body: &[u8]) -> Expect {
    let mut map = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut batch: Vec<(Kind, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let (rec, len) = match record::decode(&body[pos..]) {
            Ok(Some(found)) => found,
            Ok(None) => break,
            Err(_) => {
                let valid_after = (pos + 1..body.len())
                    .any(|p| matches!(record::decode(&body[p..]), Ok(Some(_))));
                if valid_after {
                    return Expect::Corrupt;
                }
                break;
            }
        };
        seen.insert(rec.key.to_vec());
        let apply = |map: &mut BTreeMap<Vec<u8>, Vec<u8>>, kind, k: Vec<u8>, v: Vec<u8>| {
            if kind == Kind::Put {
                map.insert(k, v);
            } else {
                map.remove(&k);
            }
        };
        match rec.kind {
            Kind::Put | Kind::Delete if rec.in_batch => {
                batch.push((rec.kind, rec.key.to_vec(), rec.value.to_vec()))
            }
            Kind::Put | Kind::Delete => {
                if !batch.is_empty() {
                    return Expect::Corrupt;
                }
                apply(&mut map, rec.kind, rec.key.to_vec(), rec.value.to_vec());
            }
            Kind::Commit => {
                if rec.commit_count() != Some(batch.len() as u32) {
                    return Expect::Corrupt;
                }
                for (kind, k, v) in batch.drain(..) {
                    apply(&mut map, kind, k, v);
                }
            }
        }
        pos += len;
    }
    // An open batch at the end is a torn batch: its members are not applied.
    Expect::State { map, seen }
}

fn check_state(engine: &Engine, map: &BTreeMap<Vec<u8>, Vec<u8>>, seen: &BTreeSet<Vec<u8>>) {
    for k in seen {
        let got = engine.get(k).expect("get after recovery");
        assert_eq!(got.as_ref(), map.get(k), "key {k:?} after recovery");
    }
    assert_eq!(
        engine.stats().keys,
        map.len() as u64,
        "key count after recovery"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, tail)) = data.split_first() else {
        return;
    };
    let dir = scratch_dir("segrec");
    let engine = Engine::open(&dir, options()).expect("open a fresh dir");
    write_prefix(&engine, usize::from(n % 16));
    engine.close().expect("close");

    let seg = fs::read_dir(&dir)
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("one segment");
    let mut f = OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open segment");
    f.write_all(tail).expect("append tail");
    drop(f);
    let bytes = fs::read(&seg).expect("read segment");
    let body = bytes
        .get(FILE_HEADER_LEN as usize..)
        .expect("segment has a header");

    match (model(body), Engine::open(&dir, options())) {
        (Expect::Corrupt, Err(Error::Corrupt { .. })) => {}
        (Expect::Corrupt, other) => panic!("corrupt tail but open gave {:?}", other.err()),
        (Expect::State { .. }, Err(e)) => panic!("valid prefix but open failed: {e}"),
        (Expect::State { map, seen }, Ok(engine)) => {
            check_state(&engine, &map, &seen);
            engine.close().expect("close");
            let engine = Engine::open(&dir, options()).expect("second open");
            check_state(&engine, &map, &seen);
            engine.close().expect("close");
        }
    }
    let _ = fs::remove_dir_all(&dir);
});
