//! Group commit at park (`engine::park`): under `always`, a connection
//! thread writes and fsyncs its tasks' writes itself when it runs out of
//! work, one round for all it has read; a thread that never runs out of
//! work hands its round to the flusher instead of holding it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvstore::engine::{park, Engine, Faults, Options, WriteOp};

use crate::common;

const WAIT: Duration = Duration::from_secs(10);

/// Runs `f` on a thread of its own named `name`, in a current-thread
/// runtime set up as the node's connection threads are: timer on, rounds
/// taken at park.
fn on_connection_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(park::before_park)
                .build()
                .unwrap();
            park::enable_on_this_thread();
            f(&runtime)
        })
        .unwrap()
}

async fn put(engine: &Engine, key: &str) {
    engine
        .write_async(&[WriteOp::Put(key.as_bytes(), b"v")], false)
        .await
        .unwrap();
}

/// An engine under `always` (the default) whose flusher has gone to sleep:
/// once asleep, only a kick wakes it to take a round.
fn engine_with_flusher_asleep(dir: &std::path::Path) -> (Engine, Arc<Faults>) {
    let (engine, faults) = common::faulty_engine(dir, Options::default());
    assert!(
        faults.wait_until(WAIT, |f| f.flusher_sleeps() >= 1),
        "the flusher never went to sleep"
    );
    (engine, faults)
}

/// Waits until an fsync is held at the gate (`Faults::hold_syncs`) and
/// names the thread that runs it.
fn thread_at_held_fsync(faults: &Faults, what: &str) -> Option<String> {
    assert!(
        faults.wait_until(WAIT, |f| f.syncs_held() == 1),
        "{what} never reached an fsync"
    );
    faults.last_held_sync_thread()
}

#[test]
fn the_writes_a_thread_has_read_make_one_round_fsynced_on_that_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, faults) = engine_with_flusher_asleep(dir.path());
    let fsyncs = engine.stats().fsyncs;
    faults.hold_syncs(true);
    let thread = {
        let engine = engine.clone();
        on_connection_thread("conn-thread", move |runtime| {
            // Thirty-two clients' writes, all read before the thread runs
            // out of work.
            let tasks: Vec<_> = (0..32)
                .map(|i| {
                    let engine = engine.clone();
                    runtime.spawn(async move { put(&engine, &format!("k{i}")).await })
                })
                .collect();
            runtime.block_on(async {
                for task in tasks {
                    task.await.unwrap();
                }
            })
        })
    };
    assert_eq!(
        thread_at_held_fsync(&faults, "the writes").as_deref(),
        Some("conn-thread"),
        "the round of a thread that commits at park was fsynced elsewhere"
    );
    faults.hold_syncs(false);
    thread.join().unwrap();
    assert_eq!(
        engine.stats().fsyncs - fsyncs,
        1,
        "32 writes read in one pass took more than one round"
    );
    assert_eq!(engine.stats().fsyncs_at_park, 1);
    assert_eq!(faults.rounds_handed_over(), 0);
    for i in 0..32 {
        assert_eq!(
            engine.get(format!("k{i}").as_bytes()).unwrap(),
            Some(b"v".to_vec())
        );
    }
}

/// A thread that served a read since its last round hands the round to
/// the flusher at park, so reads arriving during the fsync are served;
/// with no read since, it runs the next round itself again.
#[test]
fn a_round_after_reads_goes_to_the_flusher_and_the_next_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, faults) = engine_with_flusher_asleep(dir.path());
    engine.put(b"read-me", b"v").unwrap();
    faults.hold_syncs(true);
    let (first_done, first_seen) = std::sync::mpsc::channel::<()>();
    let (go_on, second) = std::sync::mpsc::channel::<()>();
    let thread = {
        let engine = engine.clone();
        on_connection_thread("conn-thread", move |runtime| {
            runtime.block_on(async {
                assert_eq!(engine.get(b"read-me").unwrap(), Some(b"v".to_vec()));
                put(&engine, "after-a-read").await;
                first_done.send(()).unwrap();
                second.recv().unwrap();
                put(&engine, "writes-only").await;
            })
        })
    };
    let held_on = |what: &str| {
        let thread = thread_at_held_fsync(&faults, what);
        faults.let_one_sync_pass();
        thread
    };
    assert_eq!(
        held_on("the write after a read").as_deref(),
        Some("kvstore-flusher")
    );
    first_seen.recv_timeout(WAIT).unwrap();
    go_on.send(()).unwrap();
    assert_eq!(
        held_on("the write after no read").as_deref(),
        Some("conn-thread")
    );
    faults.hold_syncs(false);
    thread.join().unwrap();
    assert_eq!(faults.rounds_handed_over(), 0);
}

/// A round past `ROUND_AT_PARK_MAX` (a pipelining load) goes to the
/// flusher at once, which overlaps its fsync with the thread's reading.
#[test]
fn a_round_past_the_limit_goes_to_the_flusher_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, faults) = engine_with_flusher_asleep(dir.path());
    faults.hold_syncs(true);
    let thread = {
        let engine = engine.clone();
        on_connection_thread("conn-thread", move |runtime| {
            runtime.block_on(async {
                let value = vec![7u8; park::ROUND_AT_PARK_MAX];
                let (small, large) = (
                    [WriteOp::Put(b"small", b"v")],
                    [WriteOp::Put(b"large", &value)],
                );
                let (small, large) = tokio::join!(
                    engine.write_async(&small, false),
                    engine.write_async(&large, false)
                );
                small.unwrap();
                large.unwrap();
            })
        })
    };
    assert_eq!(
        thread_at_held_fsync(&faults, "the writes").as_deref(),
        Some("kvstore-flusher")
    );
    faults.hold_syncs(false);
    thread.join().unwrap();
    // The small write's deferral went with the kick: nothing was left
    // waiting for the thread to park, or to be handed over.
    assert_eq!(faults.rounds_handed_over(), 0);
    assert_eq!(engine.get(b"small").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn a_thread_that_never_runs_out_of_work_hands_its_round_to_the_flusher() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, faults) = engine_with_flusher_asleep(dir.path());
    faults.hold_syncs(true);
    let written = Arc::new(AtomicBool::new(false));
    let thread = {
        let engine = engine.clone();
        let written = written.clone();
        on_connection_thread("busy-thread", move |runtime| {
            // Always ready to run, so the runtime never parks: it only
            // polls for I/O and timers between passes.
            let spinner = {
                let written = written.clone();
                runtime.spawn(async move {
                    let deadline = Instant::now() + WAIT;
                    while !written.load(Ordering::SeqCst) && Instant::now() < deadline {
                        tokio::task::yield_now().await;
                    }
                    written.load(Ordering::SeqCst)
                })
            };
            runtime.block_on(async {
                put(&engine, "k").await;
                written.store(true, Ordering::SeqCst);
                spinner.await.unwrap()
            })
        })
    };
    assert_eq!(
        thread_at_held_fsync(&faults, "the write of a thread that never parks").as_deref(),
        Some("kvstore-flusher")
    );
    // Handed over by the waiting write, not found by the flusher's
    // periodic look for work.
    assert_eq!(faults.rounds_handed_over(), 1);
    assert_eq!(engine.stats().fsyncs_at_park, 0);
    faults.hold_syncs(false);
    assert!(
        thread.join().unwrap(),
        "the write waited for its busy thread to park"
    );
    assert_eq!(engine.get(b"k").unwrap(), Some(b"v".to_vec()));
}

/// Two connection threads and blocking writers at once: rounds taken at
/// park by either thread, by a blocking writer or by the flusher, every
/// write returns and survives a reopen.
#[test]
fn writers_on_two_connection_threads_and_blocking_ones_all_return_and_survive() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), Options::default()).unwrap();
    let connection_threads: Vec<_> = (0..2)
        .map(|t| {
            let engine = engine.clone();
            on_connection_thread(&format!("conn-{t}"), move |runtime| {
                let tasks: Vec<_> = (0..16)
                    .map(|c| {
                        let engine = engine.clone();
                        runtime.spawn(async move {
                            for i in 0..50 {
                                put(&engine, &format!("conn{t}-{c}-{i}")).await;
                            }
                        })
                    })
                    .collect();
                runtime.block_on(async {
                    for task in tasks {
                        tokio::time::timeout(WAIT, task)
                            .await
                            .expect("a write never returned")
                            .unwrap();
                    }
                })
            })
        })
        .collect();
    let blocking: Vec<_> = (0..4)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    engine.put(format!("sync{t}-{i}").as_bytes(), b"v").unwrap();
                }
            })
        })
        .collect();
    for t in connection_threads.into_iter().chain(blocking) {
        t.join().unwrap();
    }
    engine.close().unwrap();
    let engine = Engine::open(dir.path(), Options::default()).unwrap();
    let mut keys: Vec<String> = (0..2)
        .flat_map(|t| (0..16).flat_map(move |c| (0..50).map(move |i| format!("conn{t}-{c}-{i}"))))
        .collect();
    keys.extend((0..4).flat_map(|t| (0..50).map(move |i| format!("sync{t}-{i}"))));
    for key in keys {
        assert_eq!(
            engine.get(key.as_bytes()).unwrap(),
            Some(b"v".to_vec()),
            "{key}"
        );
    }
}

/// The node's connection threads are set up for it: under `always` (the
/// default), a client that only writes has each of its writes fsynced by
/// its connection's thread, as the metric shows; a read sends the next
/// round to the flusher.
#[test]
fn a_node_fsyncs_a_write_only_clients_writes_on_its_connection_thread() {
    let server = common::Server::start(&[]);
    let at_park = || common::metric(server.http_addr, "kvstore_engine_fsyncs_at_park_total");
    let before = at_park();
    let mut client = server.client();
    for i in 0..10 {
        client.put(format!("k{i}").as_bytes(), b"v").unwrap();
    }
    // One round per write: the client waits for each answer, and the
    // thread runs out of work after each request.
    assert_eq!(at_park() - before, 10.0);
    assert_eq!(client.get(b"k0").unwrap().as_deref(), Some(&b"v"[..]));
    client.put(b"after-a-read", b"v").unwrap();
    assert_eq!(
        at_park() - before,
        10.0,
        "the round after a read ran at park"
    );
}
