//! Group commit and the poisoned state: concurrent writers share fsyncs;
//! a failed write or fsync stops all writes and loses nothing acknowledged.

use std::sync::{Arc, Mutex};

use kvstore::engine::{Durability, Engine, Error, Options};

use crate::common;

#[test]
fn sixty_four_writers_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), Options::default()).unwrap();
    let before = engine.stats().fsyncs;
    let writers: Vec<_> = (0..64)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    engine
                        .put(format!("t{t}-{i}").as_bytes(), &[t as u8; 100])
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let stats = engine.stats();
    let fsyncs = stats.fsyncs - before;
    assert_eq!(stats.puts, 6400);
    assert!(
        fsyncs * 4 < stats.puts,
        "{fsyncs} fsyncs for {} writes",
        stats.puts
    );
    println!("6400 synced writes from 64 threads took {fsyncs} fsyncs");
    assert_eq!(engine.get(b"t63-99").unwrap(), Some(vec![63; 100]));
}

/// Writes until the fault hits; returns the acknowledged keys.
fn write_until_failure(engine: &Engine) -> (Vec<Vec<u8>>, Error) {
    let mut acked = Vec::new();
    for i in 0..100_000u32 {
        let key = format!("key{i}").into_bytes();
        match engine.put(&key, &i.to_le_bytes().repeat(10)) {
            Ok(()) => acked.push(key),
            Err(e) => return (acked, e),
        }
    }
    panic!("the injected fault never hit");
}

fn check_survivors(dir: &std::path::Path, acked: &[Vec<u8>], durability: Durability) {
    let engine = Engine::open(
        dir,
        Options {
            durability,
            ..Options::default()
        },
    )
    .unwrap();
    for key in acked {
        let i: u32 = std::str::from_utf8(&key[3..]).unwrap().parse().unwrap();
        assert_eq!(
            engine.get(key).unwrap(),
            Some(i.to_le_bytes().repeat(10)),
            "{key:?}"
        );
    }
}

#[test]
fn a_full_disk_poisons_the_engine_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, faults) = common::faulty_engine(dir.path(), Options::default());
    faults.set_write_budget(20_000);
    let (acked, err) = write_until_failure(&engine);
    assert!(!acked.is_empty());
    let message = err.to_string();
    assert!(
        message.contains("No space left") || message.contains("space"),
        "{message}"
    );
    // Every later write is refused with the reason while the disk is full
    // (tests/it/resume.rs: what happens once it has space again).
    match engine.put(b"after", b"x") {
        Err(Error::Poisoned { reason }) => assert!(reason.contains("space"), "{reason}"),
        other => panic!("expected Poisoned, got {other:?}"),
    }
    // Reads still work.
    assert!(engine.get(&acked[0]).unwrap().is_some());
    assert!(engine.stats().poisoned.is_some());
    drop(engine);
    check_survivors(dir.path(), &acked, Durability::Always);
}

#[test]
fn a_failed_fsync_poisons_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, faults) = common::faulty_engine(dir.path(), Options::default());
    let acked = Arc::new(Mutex::new(Vec::new()));
    for i in 0..50u32 {
        let key = format!("key{i}").into_bytes();
        engine.put(&key, &i.to_le_bytes().repeat(10)).unwrap();
        acked.lock().unwrap().push(key);
    }
    faults.set_fail_sync(true);
    let err = engine.put(b"key999", b"x").unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    assert!(matches!(
        engine.put(b"key1000", b"y"),
        Err(Error::Poisoned { .. })
    ));
    drop(engine);
    check_survivors(dir.path(), &acked.lock().unwrap(), Durability::Always);
}

#[test]
fn a_writer_always_reads_its_own_acknowledged_write() {
    // Many writers share each fsync; each must see its write the moment
    // its put returns, even when it reached the lock while the flusher was
    // still moving the batch into the index.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), Options::default()).unwrap();
    let writers: Vec<_> = (0..32)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for i in 0..300u32 {
                    let key = format!("k{}", i % 7).into_bytes();
                    let value = [t as u8, (i % 251) as u8];
                    let key = [&key[..], &[t as u8]].concat();
                    engine.put(&key, &value).unwrap();
                    assert_eq!(
                        engine.get(&key).unwrap(),
                        Some(value.to_vec()),
                        "thread {t} write {i}"
                    );
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
}

const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[test]
fn a_lone_synced_writer_writes_and_fsyncs_on_its_own_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, faults) = common::faulty_engine(dir.path(), Options::default());
    // A flusher thread just started may still be on its first look for
    // work and take the put's round; once asleep, only a kick wakes it.
    assert!(
        faults.wait_until(WAIT, |f| f.flusher_sleeps() >= 1),
        "the flusher never went to sleep"
    );
    faults.hold_syncs(true);
    let writer = {
        let engine = engine.clone();
        std::thread::Builder::new()
            .name("lone-writer".into())
            .spawn(move || engine.put(b"k", b"v"))
            .unwrap()
    };
    assert!(
        faults.wait_until(WAIT, |f| f.syncs_held() == 1),
        "the put never reached its fsync"
    );
    assert_eq!(
        faults.last_held_sync_thread().as_deref(),
        Some("lone-writer"),
        "the fsync of a lone writer's put ran on another thread"
    );
    faults.hold_syncs(false);
    writer.join().unwrap().unwrap();
    assert_eq!(engine.get(b"k").unwrap(), Some(b"v".to_vec()));
}

/// Blocking and async writers mixed, under `always`: every write returns
/// (no writer is left parked with its bytes durable) and survives a
/// reopen.
#[test]
fn blocking_and_async_synced_writers_mixed_all_return_and_survive() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), Options::default()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let engine = engine.clone();
            runtime.spawn(async move {
                for i in 0..100 {
                    let key = format!("async{t}-{i}");
                    engine
                        .write_async(
                            &[kvstore::engine::WriteOp::Put(key.as_bytes(), b"v")],
                            false,
                        )
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    engine.put(format!("sync{t}-{i}").as_bytes(), b"v").unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    runtime.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    engine.close().unwrap();
    let engine = Engine::open(dir.path(), Options::default()).unwrap();
    for t in 0..16 {
        for i in 0..100 {
            for kind in ["async", "sync"] {
                let key = format!("{kind}{t}-{i}");
                assert_eq!(
                    engine.get(key.as_bytes()).unwrap(),
                    Some(b"v".to_vec()),
                    "{key}"
                );
            }
        }
    }
}

/// An async synced writer whose bytes wait for the next group commit is
/// not woken (polled) by the commit before it: a publish wakes only the
/// tasks it made durable, so clients in several cohorts do not poll each
/// other for nothing between their answers.
#[test]
fn an_async_writer_sleeps_through_a_group_commit_that_is_not_its_own() {
    use std::future::Future;
    use std::sync::atomic::{AtomicU32, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let (engine, faults) = common::faulty_engine(dir.path(), Options::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A write as a task, counting how often the runtime polls it.
    let spawn_write = |key: &'static [u8]| {
        let engine = engine.clone();
        let polls = Arc::new(AtomicU32::new(0));
        let counted = polls.clone();
        let task = runtime.spawn(async move {
            let ops = [kvstore::engine::WriteOp::Put(key, b"v")];
            let mut write = std::pin::pin!(engine.write_async(&ops, false));
            std::future::poll_fn(|cx| {
                counted.fetch_add(1, Ordering::SeqCst);
                write.as_mut().poll(cx)
            })
            .await
        });
        (task, polls)
    };
    // Runs the runtime until `cond` holds (or fails the test at WAIT).
    let run_until = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + WAIT;
        runtime.block_on(async {
            while !cond() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{what} never happened"
                );
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        })
    };

    faults.hold_syncs(true);
    let (first, _) = spawn_write(b"first");
    run_until("the first write's fsync", &|| faults.syncs_held() == 1);
    // Appended while the first commit's fsync runs: its bytes are the next
    // commit's.
    let (second, second_polls) = spawn_write(b"second");
    run_until("the second write's append", &|| {
        second_polls.load(Ordering::SeqCst) == 1
    });
    faults.let_one_sync_pass();
    run_until("the first write's answer", &|| first.is_finished());
    run_until("the second commit's fsync", &|| faults.syncs_held() == 1);
    // Whatever the first commit woke has run by now.
    runtime.block_on(async {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    });
    assert_eq!(
        second_polls.load(Ordering::SeqCst),
        1,
        "a write waiting for the next commit was woken by the one before"
    );
    assert!(!second.is_finished());
    faults.hold_syncs(false);
    runtime.block_on(first).unwrap().unwrap();
    runtime.block_on(second).unwrap().unwrap();
    assert_eq!(second_polls.load(Ordering::SeqCst), 2);
    assert_eq!(engine.get(b"second").unwrap(), Some(b"v".to_vec()));
}

/// Under `never`, a stream of writes from one thread is handed to the OS
/// in shared `pwrite`s, at most one per flush tick, rather than one per
/// write; and the last of them still reaches the OS without a flush.
#[test]
fn under_never_a_stream_of_writes_shares_pwrites_and_still_reaches_the_os() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, faults) = common::faulty_engine(
        dir.path(),
        Options {
            durability: Durability::Never,
            ..Options::default()
        },
    );
    let before = faults.writes();
    let started = std::time::Instant::now();
    let writes = 20_000u32;
    for i in 0..writes {
        engine.put(format!("k{i}").as_bytes(), &[7; 100]).unwrap();
    }
    let elapsed = started.elapsed();
    let rounds = faults.writes() - before;
    // Two rounds are always at least a tick apart (nothing here wakes the
    // flusher early: no flush, no roll, no large buffer); the first and
    // the one running when the clock stopped are not.
    let bound = (elapsed.as_nanos() / kvstore::engine::FLUSH_TICK.as_nanos()) as u32 + 2;
    assert!(
        rounds <= bound,
        "{rounds} pwrites for {writes} writes in {elapsed:?} (at most {bound})"
    );
    assert!(rounds < writes / 4, "{rounds} pwrites for {writes} writes");
    let end = engine.end();
    let progress = engine.subscribe();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while progress.borrow().written < end {
        assert!(
            std::time::Instant::now() < deadline,
            "the OS has the log up to {} of {end} after 10 s",
            progress.borrow().written
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    println!("{writes} writes in {elapsed:?}: {rounds} pwrites");
}
