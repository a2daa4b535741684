//! Live recovery: an engine poisoned by a failed write or fsync resumes on
//! its own once a write and an fsync succeed again, rolled back to its
//! durable end and continuing in a fresh segment, with readers never
//! failing meanwhile (docs/RELIABILITY.md, "Disk full and I/O errors").
//! Driven by the engine's fault hooks, and on a real tmpfs that fills and
//! is then remounted bigger when this process may mount.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::host::Tmpfs;
use kvstore::engine::verify::verify_dir;
use kvstore::engine::{CutCause, Durability, Engine, Error, Faults, Options};

const DEADLINE: Duration = Duration::from_secs(20);

pub(crate) fn key(i: u32) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

pub(crate) fn value(i: u32) -> Vec<u8> {
    i.to_le_bytes().repeat(25)
}

/// Readers that look up `keys` in a loop until stopped; any error or
/// missing value fails the test when they are joined.
struct Readers {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<Result<(), String>>>,
}

impl Readers {
    fn start(engine: &Engine, keys: u32) -> Readers {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let threads = (0..2)
            .map(|t| {
                let (engine, stop, reads) = (engine.clone(), stop.clone(), reads.clone());
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < 3 * DEADLINE {
                        let k = i % keys;
                        match engine.get(&key(k)) {
                            Ok(Some(v)) if v == value(k) => {}
                            other => return Err(format!("key {k}: {other:?}")),
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                        i = i.wrapping_add(7);
                    }
                    Ok(())
                })
            })
            .collect();
        Readers {
            stop,
            reads,
            threads,
        }
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap().unwrap();
        }
        assert!(self.reads.load(Ordering::Relaxed) > 0, "the readers ran");
    }
}

fn wait_resumed(engine: &Engine) {
    let deadline = Instant::now() + DEADLINE;
    while engine.stats().poisoned.is_some() {
        assert!(Instant::now() < deadline, "the engine did not resume");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn open(dir: &Path, durability: Durability, faults: &Arc<Faults>) -> Engine {
    Engine::open(
        dir,
        Options {
            durability,
            segment_max_bytes: 64 << 10,
            faults: Some(faults.clone()),
            ..Options::default()
        },
    )
    .unwrap()
}

#[test]
fn a_full_disk_resumes_once_it_has_space_and_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let engine = open(dir.path(), Durability::Always, &faults);
    let base = 500;
    for i in 0..base {
        engine.put(&key(i), &value(i)).unwrap();
    }
    let readers = Readers::start(&engine, base);

    faults.set_write_budget(3_000);
    let mut acked = base;
    let err = loop {
        match engine.put(&key(acked), &value(acked)) {
            Ok(()) => acked += 1,
            Err(e) => break e,
        }
        assert!(acked < base + 10_000, "the full disk never hit");
    };
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    // Still full: probing fails, writes are refused.
    assert!(engine.try_resume().is_err());
    assert!(matches!(
        engine.put(b"x", b"y"),
        Err(Error::Poisoned { .. })
    ));

    faults.clear_write_budget();
    wait_resumed(&engine);
    for i in acked..acked + 300 {
        engine.put(&key(i), &value(i)).unwrap();
    }
    let total = acked + 300;
    for i in 0..total {
        assert_eq!(engine.get(&key(i)).unwrap(), Some(value(i)), "key {i}");
    }
    readers.finish();
    let s = engine.stats();
    assert_eq!(s.resumes, 1);
    assert_eq!(s.tail_cuts, 1);
    let cut = engine.tail_cuts()[0];
    assert_eq!(cut.cause, CutCause::WriteFailure);
    assert!(cut.records >= 1, "{cut:?}");
    engine.close().unwrap();
    // Stopped before the next open trimmed the old segment: verify goes by
    // the recorded cut too.
    let report = verify_dir(dir.path()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    // On disk: every acknowledged write, the old segment trimmed at the cut.
    let engine = open(dir.path(), Durability::Always, &faults);
    for i in 0..total {
        assert_eq!(engine.get(&key(i)).unwrap(), Some(value(i)), "key {i}");
    }
    assert_eq!(engine.tail_cuts().len(), 1, "open cut nothing more");
    engine.close().unwrap();
    let report = verify_dir(dir.path()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn under_interval_writes_past_the_durable_end_are_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let interval = Durability::Interval(Duration::from_secs(3600));
    let engine = open(dir.path(), interval, &faults);
    for i in 0..100 {
        engine.put(&key(i), &value(i)).unwrap();
    }
    engine.flush().unwrap();
    let readers = Readers::start(&engine, 100);
    // Visible at once, never synced.
    for i in 100..200 {
        engine.put(&key(i), &value(i)).unwrap();
    }
    assert_eq!(engine.get(&key(150)).unwrap(), Some(value(150)));
    faults.set_fail_sync(true);
    assert!(engine.flush().is_err());
    assert!(engine.stats().poisoned.is_some());
    assert!(engine.try_resume().is_err(), "fsync still fails");
    faults.set_fail_sync(false);
    wait_resumed(&engine);

    for i in 100..200 {
        assert_eq!(engine.get(&key(i)).unwrap(), None, "key {i} rolled back");
    }
    engine.put(b"after", b"resume").unwrap();
    engine.flush().unwrap();
    readers.finish();
    let cut = engine.tail_cuts()[0];
    assert_eq!(cut.records, 100, "{cut:?}");
    engine.close().unwrap();
    let engine = open(dir.path(), interval, &faults);
    assert_eq!(
        engine.get(b"after").unwrap().as_deref(),
        Some(&b"resume"[..])
    );
    assert_eq!(engine.get(&key(150)).unwrap(), None);
    assert_eq!(engine.get(&key(50)).unwrap(), Some(value(50)));
}

/// A flush whose fsync fails on the caller's own thread, while the
/// flusher (kicked by that flush, and finding the round already taken)
/// went back to sleep for a whole `interval`: the poison wakes it, and it
/// probes a second later rather than an hour later.
#[test]
fn a_round_failed_on_a_callers_thread_wakes_the_sleeping_flusher_to_probe() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let engine = open(
        dir.path(),
        Durability::Interval(Duration::from_secs(3600)),
        &faults,
    );
    // Who takes a flush's round, its caller or the kicked flusher, is a
    // race; the caller usually wins. Retried until it does.
    for attempt in 0..50u32 {
        for i in attempt * 10..attempt * 10 + 10 {
            engine.put(&key(i), &value(i)).unwrap();
        }
        assert!(
            faults.wait_until(DEADLINE, |f| f.flusher_asleep()),
            "the flusher never went to sleep"
        );
        let slept = faults.flusher_sleeps();
        faults.hold_syncs(true);
        let flush = {
            let engine = engine.clone();
            std::thread::Builder::new()
                .name("flush-caller".into())
                .spawn(move || engine.flush())
                .unwrap()
        };
        assert!(
            faults.wait_until(DEADLINE, |f| f.syncs_held() == 1),
            "the flush never reached its fsync"
        );
        if faults.last_held_sync_thread().as_deref() != Some("flush-caller") {
            faults.hold_syncs(false);
            flush.join().unwrap().unwrap();
            continue;
        }
        // The flusher woke for the flush, found the round taken, and slept
        // again: with nothing else to wake it, for the whole interval.
        assert!(
            faults.wait_until(DEADLINE, |f| f.flusher_sleeps() > slept
                && f.flusher_asleep()),
            "the flusher, kicked by the flush, never went back to sleep"
        );
        faults.set_fail_sync(true);
        faults.hold_syncs(false);
        assert!(flush.join().unwrap().is_err(), "the fsync failed");
        assert!(engine.stats().poisoned.is_some());
        faults.set_fail_sync(false);
        wait_resumed(&engine);
        assert_eq!(engine.stats().resumes, 1);
        engine.put(b"after", b"resume").unwrap();
        engine.flush().unwrap();
        return;
    }
    panic!("in 50 flushes the flusher always took the round");
}

#[test]
fn readers_keep_finding_every_key_while_a_recovery_swaps_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let engine = open(dir.path(), Durability::Always, &faults);
    for i in 0..100 {
        engine.put(&key(i), &value(i)).unwrap();
    }
    faults.set_fail_sync(true);
    assert!(engine.put(&key(100), &value(100)).is_err());
    // The recovery (run by the engine's own probe) stops with its rebuilt
    // keydir not yet published: readers still use the old one, whose
    // segment the new file table replaces.
    faults.hold_index_swaps(true);
    faults.set_fail_sync(false);
    assert!(
        faults.wait_until(DEADLINE, |f| f.index_swaps_held() == 1),
        "the recovery reached the keydir swap"
    );
    // Read everything first: the gate must be opened before asserting, or
    // the engine's close would wait on it.
    let missed: Vec<_> = (0..100)
        .map(|i| (i, engine.get(&key(i))))
        .filter(|(i, got)| !matches!(got, Ok(Some(v)) if *v == value(*i)))
        .collect();
    faults.hold_index_swaps(false);
    assert!(
        missed.is_empty(),
        "{} keys failed during the swap, first {:?}",
        missed.len(),
        missed.first()
    );
    wait_resumed(&engine);
    for i in 0..100 {
        assert_eq!(engine.get(&key(i)).unwrap(), Some(value(i)), "key {i}");
    }
    assert_eq!(engine.get(&key(100)).unwrap(), None, "never acknowledged");
}

#[test]
fn a_replica_resumes_in_the_segment_its_master_names() {
    let (mdir, rdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let faults = Arc::new(Faults::default());
    let master = open(
        mdir.path(),
        Durability::Always,
        &Arc::new(Faults::default()),
    );
    let replica = open(rdir.path(), Durability::Always, &faults);
    replica.set_auto_roll(false);
    for i in 0..300 {
        master.put(&key(i), &value(i)).unwrap();
    }
    crate::tail::replicate(&master, &replica);
    for i in 300..600 {
        master.put(&key(i), &value(i)).unwrap();
    }
    faults.set_write_budget(2_000);
    let from = replica.end();
    let chunk = master.read_log(from, 1 << 20).unwrap();
    assert!(replica
        .append_log(chunk.segment_base, &chunk.bytes)
        .is_err());
    faults.clear_write_budget();
    wait_resumed(&replica);
    assert_eq!(replica.end(), from, "rolled back to its durable end");
    crate::tail::replicate(&master, &replica);
    for i in 0..600 {
        assert_eq!(replica.get(&key(i)).unwrap(), Some(value(i)), "key {i}");
    }
    let names = |dir: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".seg"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(rdir.path()), names(mdir.path()), "segment names");
}

#[test]
fn a_write_waiting_across_a_recovery_is_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let engine = open(dir.path(), Durability::Always, &faults);
    engine.put(b"before", b"1").unwrap();
    faults.hold_syncs(true);
    let waiting = {
        let engine = engine.clone();
        std::thread::spawn(move || engine.put(b"lost", b"2"))
    };
    assert!(faults.wait_until(DEADLINE, |f| f.syncs_held() == 1));
    faults.set_fail_sync(true);
    faults.hold_syncs(false);
    let result = waiting.join().unwrap();
    assert!(matches!(result, Err(Error::Poisoned { .. })), "{result:?}");
    faults.set_fail_sync(false);
    wait_resumed(&engine);
    for i in 0..50 {
        engine.put(&key(i), &value(i)).unwrap();
    }
    assert_eq!(engine.get(b"lost").unwrap(), None);
    assert_eq!(engine.get(b"before").unwrap().as_deref(), Some(&b"1"[..]));
}

/// A node whose data directory is on a fresh 1 MiB tmpfs; `None` (the
/// test is skipped, and says so) when this process may not mount.
fn node_on_tmpfs() -> Option<(Tmpfs, crate::common::Server)> {
    let fs = Tmpfs::mount("1m")?;
    let data = fs.path().join("data");
    let node = crate::common::Server::start_on(&data, &["--segment-max-bytes", "131072"], true);
    Some((fs, node))
}

/// Puts keys from `from` on until the disk is full; returns the first
/// key not acknowledged.
pub(crate) fn fill(client: &mut kvstore::client::BlockingClient, from: u32) -> u32 {
    for i in from..from + 20_000 {
        if let Err(e) = client.put(&key(i), &value(i)) {
            assert!(e.to_string().to_lowercase().contains("space"), "{e}");
            return i;
        }
    }
    panic!("the tmpfs never filled");
}

#[test]
fn a_node_on_a_full_tmpfs_resumes_writes_once_it_is_remounted_bigger() {
    use crate::common::connect_client;
    let Some((fs, mut node)) = node_on_tmpfs() else {
        return;
    };
    let mut client = node.client();
    let base = 200;
    for i in 0..base {
        client.put(&key(i), &value(i)).unwrap();
    }
    // Readers on their own connections never fail, through the full disk
    // and the recovery.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let (addr, stop) = (node.addr, stop.clone());
            std::thread::spawn(move || {
                let mut c = connect_client(addr);
                let started = Instant::now();
                let mut i = t;
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < 3 * DEADLINE {
                    let k = i % base;
                    let got = c.get(&key(k)).map_err(|e| format!("key {k}: {e}"))?;
                    if got.as_deref() != Some(&value(k)[..]) {
                        return Err(format!("key {k}: {got:?}"));
                    }
                    reads += 1;
                    i += 3;
                }
                Ok::<u64, String>(reads)
            })
        })
        .collect();

    let acked = fill(&mut client, base);

    fs.resize("16m");
    let deadline = Instant::now() + DEADLINE;
    while client.put(b"probe", b"after").is_err() {
        assert!(
            Instant::now() < deadline,
            "writes did not resume:\n{}",
            node.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in acked..acked + 200 {
        client.put(&key(i), &value(i)).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap().unwrap() > 0, "the readers ran");
    }
    for i in 0..acked + 200 {
        assert_eq!(
            client.get(&key(i)).unwrap().as_deref(),
            Some(&value(i)[..]),
            "key {i}"
        );
    }
    let stats = client.stats().unwrap();
    assert_eq!(stats["resumes"], 1, "{stats:?}");
    assert_eq!(stats["tail_cuts"], 1, "{stats:?}");
    assert!(node.logs().contains("writes resumed"), "{}", node.logs());
    assert!(node.sigterm().success());
}

#[test]
fn sigterm_on_a_still_full_disk_exits_3_and_keeps_every_acknowledged_write() {
    let Some((fs, mut node)) = node_on_tmpfs() else {
        return;
    };
    let acked = fill(&mut node.client(), 0);
    let status = node.sigterm();
    assert_eq!(status.code(), Some(3), "{}", node.logs());
    assert!(
        node.logs()
            .contains("error: stopped with the storage engine refusing writes ("),
        "{}",
        node.logs()
    );

    fs.resize("16m");
    node.restart();
    let mut client = node.client();
    for i in 0..acked {
        assert_eq!(
            client.get(&key(i)).unwrap().as_deref(),
            Some(&value(i)[..]),
            "key {i}"
        );
    }
    client.put(b"after", b"restart").unwrap();
    assert!(node.sigterm().success());
}
