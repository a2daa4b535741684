//! Compaction: crash safety at every step of the swap, reads and writes
//! during a merge, tombstones dropped, and the background policy.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvstore::engine::verify::verify_dir;
use kvstore::engine::{CompactionPolicy, CompactionStep, Engine, Faults, Options};

fn options(faults: Option<Arc<Faults>>) -> Options {
    Options {
        segment_max_bytes: 4096,
        compaction: CompactionPolicy {
            check_every: None,
            ..CompactionPolicy::default()
        },
        faults,
        ..Options::default()
    }
}

/// Writes overwrites and deletes over 40 keys; returns the expected state.
fn load(engine: &Engine, rounds: usize) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    for round in 0..rounds {
        for k in 0..40 {
            let key = format!("k{k:02}").into_bytes();
            if (k + round) % 7 == 0 {
                engine.delete(&key).unwrap();
                model.remove(&key);
            } else {
                let value = format!("v{round}-{k}-{}", "x".repeat(k * 3)).into_bytes();
                engine.put(&key, &value).unwrap();
                model.insert(key, value);
            }
        }
    }
    model
}

fn assert_state(engine: &Engine, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
    for k in 0..40 {
        let key = format!("k{k:02}").into_bytes();
        assert_eq!(
            engine.get(&key).unwrap(),
            model.get(&key).cloned(),
            "key k{k:02}"
        );
    }
    assert_eq!(engine.stats().keys, model.len() as u64);
}

#[test]
fn a_failure_at_any_step_of_the_swap_leaves_the_old_or_the_new_state() {
    let steps = [
        CompactionStep::DataWritten,
        CompactionStep::HintsWritten,
        CompactionStep::ManifestStaged,
        CompactionStep::Committed,
        CompactionStep::OldFilesPartlyDeleted,
    ];
    for step in steps {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(Faults::default());
        let engine = Engine::open(dir.path(), options(Some(faults.clone()))).unwrap();
        let model = load(&engine, 6);
        // A first, successful compaction so that a previous generation
        // exists and is replaced by the failing one.
        engine.compact().unwrap();
        let more = load(&engine, 3);
        faults.stop_compaction_at(Some(step));
        assert!(
            engine.compact().is_err(),
            "{step:?}: injected failure must surface"
        );
        // The engine keeps serving the right data after the failure...
        assert_state(&engine, &more);
        engine.close().unwrap();
        // ...and a reopen (what a crash at this point leads to) sees the
        // old or the new generation, both with every key.
        let engine = Engine::open(dir.path(), options(None)).unwrap();
        assert_state(&engine, &more);
        let committed = matches!(step, CompactionStep::OldFilesPartlyDeleted);
        assert!(engine.log_start() > 0, "{step:?}");
        if committed {
            assert_eq!(engine.stats().merged_files, 1, "{step:?}");
        }
        engine.compact().unwrap();
        assert_state(&engine, &more);
        engine.close().unwrap();
        let report = verify_dir(dir.path()).unwrap();
        assert!(
            report.problems.is_empty(),
            "{step:?}: {:?}",
            report.problems
        );
        drop(model);
    }
}

#[test]
fn compaction_drops_tombstones_and_dead_values() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(None)).unwrap();
    let model = load(&engine, 20);
    let before = engine.stats();
    let report = engine.compact().unwrap();
    let after = engine.stats();
    assert_state(&engine, &model);
    assert!(report.bytes_after < report.bytes_before / 4, "{report:?}");
    assert_eq!(report.keys_kept, model.len() as u64);
    assert_eq!(
        after.data_bytes, after.live_bytes,
        "only live records remain: {after:?}"
    );
    assert!(after.disk_bytes < before.disk_bytes);
    assert_eq!(after.compactions, 1);
    // Delete everything: after the next merge nothing is left.
    for key in model.keys() {
        engine.delete(key).unwrap();
    }
    engine.compact().unwrap();
    let empty = engine.stats();
    assert_eq!(
        (empty.keys, empty.data_bytes, empty.live_bytes),
        (0, 0, 0),
        "{empty:?}"
    );
}

#[test]
fn reads_and_writes_go_on_during_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(None)).unwrap();
    // Stable keys that readers check while everything moves around them.
    for k in 0..50 {
        engine
            .put(format!("stable{k}").as_bytes(), &[k as u8; 64])
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let compactor = {
        let (engine, stop) = (engine.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) && runs < 200 {
                engine.compact().unwrap();
                runs += 1;
            }
            runs
        })
    };
    let reader = {
        let (engine, stop) = (engine.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) && reads < 2_000_000 {
                let k = reads % 50;
                let got = engine.get(format!("stable{k}").as_bytes()).unwrap();
                assert_eq!(got, Some(vec![k as u8; 64]), "stable{k}");
                reads += 1;
            }
            reads
        })
    };
    let mut model = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut i = 0u64;
    while Instant::now() < deadline && i < 20_000 {
        let key = format!("hot{}", i % 97).into_bytes();
        let value = i.to_le_bytes().repeat(1 + (i % 5) as usize);
        engine.put(&key, &value).unwrap();
        model.insert(key, value);
        i += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let runs = compactor.join().unwrap();
    let reads = reader.join().unwrap();
    assert!(runs > 0 && reads > 0, "compactions {runs}, reads {reads}");
    for (key, value) in &model {
        assert_eq!(engine.get(key).unwrap().as_ref(), Some(value));
    }
    engine.close().unwrap();
    let engine = Engine::open(dir.path(), options(None)).unwrap();
    for (key, value) in &model {
        assert_eq!(engine.get(key).unwrap().as_ref(), Some(value));
    }
}

#[test]
fn the_background_policy_compacts_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(None);
    opts.compaction = CompactionPolicy {
        min_dead_ratio: 0.3,
        min_dead_bytes: 1024,
        check_every: Some(Duration::from_millis(20)),
    };
    let engine = Engine::open(dir.path(), opts).unwrap();
    let model = load(&engine, 15);
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.stats().compactions == 0 {
        assert!(
            Instant::now() < deadline,
            "no background compaction: {:?}",
            engine.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_state(&engine, &model);
}

#[test]
fn the_floor_keeps_segments_replicas_still_need() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(None)).unwrap();
    load(&engine, 5);
    let floor = engine.log_end();
    let model = load(&engine, 5);
    engine.set_compaction_floor(Some(floor));
    let report = engine.compact().unwrap();
    assert!(
        report.horizon > 0 && report.horizon <= floor,
        "{report:?} floor {floor}"
    );
    // Everything from the floor on is still raw log.
    assert!(engine.read_log(floor, 10).is_ok());
    assert_state(&engine, &model);
    engine.set_compaction_floor(None);
    let report = engine.compact().unwrap();
    assert!(report.horizon > floor);
    assert!(engine.read_log(floor, 10).is_err());
    assert_state(&engine, &model);
}

/// A caller that wants to seal the active segment.
#[derive(Clone, Copy, Debug)]
enum Roller {
    /// A compaction, which seals the active segment first.
    Compaction,
    /// A writer whose record does not fit the active segment.
    Writer,
}

/// Two callers that each want to seal the active segment wait for the same
/// busy flusher (its fsync held at the fault gate). The first to run seals
/// the segment and starts the next one at the log end; the second must then
/// see that there is nothing left to seal. Before the fix, a writer queued
/// behind a compaction's seal sealed the new, empty segment, named its
/// successor by the same log end (the compaction's horizon), failed with
/// "File exists" and poisoned the engine: every later write was refused.
#[test]
fn a_roll_queued_behind_another_roll_does_not_collide_with_it() {
    use Roller::{Compaction, Writer};
    for (first, second) in [(Compaction, Writer), (Writer, Compaction), (Writer, Writer)] {
        let case = format!("{first:?} then {second:?}");
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(Faults::default());
        let engine = Arc::new(Engine::open(dir.path(), options(Some(faults.clone()))).unwrap());
        engine.put(b"first", &[b'f'; 3000]).unwrap();
        let wait = Duration::from_secs(10);
        let start = |roller: Roller, key: &'static [u8]| {
            let engine = engine.clone();
            std::thread::spawn(move || match roller {
                Compaction => engine.compact().map(|_| ()),
                Writer => engine.put(key, &[b'v'; 2000]),
            })
        };

        faults.hold_syncs(true);
        // The flusher takes this write and stays busy in its fsync.
        let small = {
            let engine = engine.clone();
            std::thread::spawn(move || engine.put(b"small", b"s"))
        };
        assert!(
            faults.wait_until(wait, |f| f.syncs_held() == 1),
            "{case}: the flusher never reached its fsync"
        );
        let one = start(first, b"one");
        assert!(
            faults.wait_until(wait, |f| f.drain_waits() == 1),
            "{case}: the first roll never waited for the flusher"
        );
        let two = start(second, b"two");
        assert!(
            faults.wait_until(wait, |f| f.drain_waits() == 2),
            "{case}: the second roll never waited for the flusher"
        );
        faults.hold_syncs(false);

        small.join().unwrap().unwrap();
        for (roller, handle) in [(first, one), (second, two)] {
            handle
                .join()
                .unwrap()
                .unwrap_or_else(|e| panic!("{case}: {roller:?} failed: {e}"));
        }
        engine
            .put(b"after", b"still writable")
            .unwrap_or_else(|e| panic!("{case}: the engine refuses writes: {e}"));
        let mut expect: Vec<(&[u8], Vec<u8>)> = vec![
            (b"first", vec![b'f'; 3000]),
            (b"small", b"s".to_vec()),
            (b"after", b"still writable".to_vec()),
        ];
        for (roller, key) in [(first, &b"one"[..]), (second, b"two")] {
            if let Writer = roller {
                expect.push((key, vec![b'v'; 2000]));
            }
        }
        let check = |engine: &Engine| {
            for (key, value) in &expect {
                assert_eq!(engine.get(key).unwrap().as_ref(), Some(value), "{case}");
            }
        };
        check(&engine);
        Arc::into_inner(engine).unwrap().close().unwrap();
        let engine = Engine::open(dir.path(), options(None)).unwrap();
        check(&engine);
        engine.close().unwrap();
    }
}

/// Warming reads is a hint that changes nothing: before and after a
/// compaction has moved every record to new files, for present, deleted
/// and never-written keys, the reads that follow answer as without it.
#[test]
fn warming_reads_before_and_after_a_compaction_changes_no_answer() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(None)).unwrap();
    let model = load(&engine, 5);
    let keys: Vec<Vec<u8>> = (0..45).map(|k| format!("k{k:02}").into_bytes()).collect();
    let check = |when: &str| {
        engine.warm_for_reads(keys.iter().map(|key| &key[..]));
        for key in &keys {
            assert_eq!(
                engine.get(key).unwrap().as_ref(),
                model.get(key),
                "{when}: {}",
                String::from_utf8_lossy(key)
            );
        }
    };
    check("before");
    engine.compact().unwrap();
    check("after the compaction");
}
