//! Replication with real processes on loopback: convergence and
//! byte-identical tails, resume after a replica crash, master crash under
//! `always`, promotion with truncation of a stale master's tail, sync
//! mode (counting only what replicas fsynced), the replica's group commit
//! (one fsync and one acknowledgement for many chunks), full resync after
//! compaction, corruption on the wire, scale-up, redirects, `failover` and
//! readiness.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::replication::*;
use common::{cli, connect_client, http_get, kvstore_bin, wait_for, Server, START_DEADLINE};
use kvstore::client::Error;
use kvstore::protocol::{ErrorCode, Request, Response};
use nix::sys::signal::Signal;

fn keys(prefix: &str, range: std::ops::Range<usize>) -> Vec<Bytes> {
    range.map(|i| key(prefix, i)).collect()
}

fn ready(server: &Server) -> u16 {
    http_get(server.http_addr, "/readyz").map_or(0, |(s, _)| s)
}

/// Loads keys in the background until stopped (bounded to `max` keys);
/// returns how many were acknowledged.
fn background_writer(
    addr: std::net::SocketAddr,
    prefix: &'static str,
    max: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut client = connect_client(addr);
        let mut acked = 0;
        while acked < max && !stop.load(Ordering::Relaxed) {
            match put_range(&mut client, prefix, acked..acked + 16, 100) {
                Ok(n) => acked += n,
                Err(_) => break,
            }
        }
        acked
    })
}

#[test]
fn three_nodes_converge_to_identical_tails_and_a_fourth_joins() {
    let seg = ["--durability", "never", "--segment-max-bytes", "1048576"];
    let mut m = master(&seg);
    let mut r1 = replica(m.addr, &seg);
    let mut r2 = replica(m.addr, &seg);
    let master_pid = m.pid();

    let n = 100_000;
    let mut c = m.client();
    put_range(&mut c, "k", 0..n, 40).unwrap();
    // Overwrites and deletes too, so the replicas must apply them in order.
    put_range(&mut c, "k", 0..1000, 60).unwrap();
    for i in (0..n).step_by(997) {
        c.delete(&key("k", i)).unwrap();
    }
    wait_converged(m.addr, &[r1.addr, r2.addr]);
    let all = keys("k", 0..n);
    assert_same_contents(m.addr, &[r1.addr, r2.addr], &all);

    // Scale-up: a fourth node joins; the master is not touched.
    let mut r3 = replica(m.addr, &seg);
    put_range(&mut c, "late", 0..500, 40).unwrap();
    wait_converged(m.addr, &[r1.addr, r2.addr, r3.addr]);
    assert_eq!(m.pid(), master_pid, "the master was not restarted");
    assert_eq!(rstat(m.addr, "connected_replicas"), 3);
    assert_same_contents(m.addr, &[r3.addr], &keys("late", 0..500));
    assert_same_contents(m.addr, &[r3.addr], &all);
    // An empty node joining a non-empty master is seeded by a full resync.
    assert_eq!(rstat(r3.addr, "full_resyncs"), 1);

    let log_start = stats(m.addr)["log_start"].as_u64().unwrap();
    for node in [&mut r1, &mut r2, &mut r3, &mut m] {
        assert!(node.sigterm().success());
    }
    let reference = segments_from(&m.data_dir(), log_start);
    assert!(reference.len() > 3, "several segments were written");
    for node in [&r1, &r2, &r3] {
        let got = segments_from(&node.data_dir(), log_start);
        let names = |v: &[(u64, Vec<u8>)]| v.iter().map(|s| s.0).collect::<Vec<_>>();
        assert_eq!(names(&got), names(&reference), "segment names differ");
        for ((base, want), (_, have)) in reference.iter().zip(&got) {
            assert!(want == have, "segment {base:020}.seg differs");
        }
    }
}

#[test]
fn a_killed_replica_resumes_from_its_offset() {
    let flags = ["--durability", "never"];
    let m = master(&flags);
    let mut r = replica(m.addr, &flags);
    put_range(&mut m.client(), "base", 0..20_000, 100).unwrap();
    wait_converged(m.addr, &[r.addr]);
    let full_before = rstat(m.addr, "full_resyncs");
    let partial_before = rstat(m.addr, "partial_resyncs");

    let stop = Arc::new(AtomicBool::new(false));
    let writer = background_writer(m.addr, "load", 200_000, Arc::clone(&stop));
    wait_for(START_DEADLINE, "load to start", || {
        (rstat(m.addr, "end_offset") > rstat(r.addr, "end_offset") + 10_000
            || rstat(m.addr, "end_offset") > 4_000_000)
            .then_some(())
    });
    let acked_before_kill = repl(m.addr)["replicas"][0]["acked_offset"]
        .as_u64()
        .unwrap();
    r.sigkill();
    wait_for(START_DEADLINE, "the master to drop the replica", || {
        (rstat(m.addr, "connected_replicas") == 0).then_some(())
    });
    let shipped_before = rstat(m.addr, "log_bytes_shipped");
    r.restart_same_port();
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 0);
    let end = wait_converged(m.addr, &[r.addr]);

    assert_eq!(rstat(m.addr, "full_resyncs"), full_before, "no full resync");
    assert_eq!(rstat(m.addr, "partial_resyncs"), partial_before + 1);
    let shipped = rstat(m.addr, "log_bytes_shipped") - shipped_before;
    let received = rstat(r.addr, "log_bytes_shipped");
    assert_eq!(
        shipped, received,
        "the master sent exactly what was applied"
    );
    let resumed_from = end - shipped;
    assert!(
        resumed_from >= acked_before_kill,
        "resumed at {resumed_from}, below the {acked_before_kill} it had acknowledged"
    );
    assert_same_contents(m.addr, &[r.addr], &keys("load", 0..written));
    assert_same_contents(m.addr, &[r.addr], &keys("base", 0..20_000));
}

/// A replica stopped behind catches up across several segments, and an
/// empty one joins by full resync: both end with the master's segment
/// files byte for byte, wherever the master's chunks cut the records
/// (100 B, 70 KB and 1.5 MiB values: larger than one chunk). The one
/// catching up fsyncs (`always`), so its flusher writes cycles of several
/// MiB in 1 MiB pieces, each started on the disk before the fsync.
#[test]
fn catch_up_and_full_resync_across_segments_copy_the_log_byte_for_byte() {
    let seg = ["--durability", "never", "--segment-max-bytes", "4194304"];
    let mut m = master(&seg);
    let synced = ["--durability", "always", "--segment-max-bytes", "4194304"];
    let mut r = replica(m.addr, &synced);
    let mut c = m.client();
    put_range(&mut c, "base", 0..100, 100).unwrap();
    wait_converged(m.addr, &[r.addr]);
    assert!(r.sigterm().success());
    let mut written = Vec::new();
    for round in 0..3 {
        for (name, n, len) in [
            ("small", 2000, 100),
            ("mid", 60, 70_000),
            ("big", 2, 1_500_000),
        ] {
            let prefix = format!("{name}{round}");
            put_range(&mut c, &prefix, 0..n, len).unwrap();
            written.extend(keys(&prefix, 0..n));
        }
    }
    r.restart();
    let mut fresh = replica(m.addr, &seg);
    wait_converged(m.addr, &[r.addr, fresh.addr]);
    assert_eq!(rstat(r.addr, "full_resyncs"), 0, "{}", r.logs());
    assert!(rstat(r.addr, "partial_resyncs") >= 1);
    assert_eq!(rstat(fresh.addr, "full_resyncs"), 1);
    assert_same_contents(m.addr, &[r.addr, fresh.addr], &written);

    for node in [&mut r, &mut fresh, &mut m] {
        assert!(node.sigterm().success());
    }
    let reference = segments_from(&m.data_dir(), 0);
    assert!(reference.len() >= 5, "{} segments", reference.len());
    for node in [&r, &fresh] {
        let got = segments_from(&node.data_dir(), 0);
        let names = |v: &[(u64, Vec<u8>)]| v.iter().map(|s| s.0).collect::<Vec<_>>();
        assert_eq!(names(&got), names(&reference), "segment names differ");
        for ((base, want), (_, have)) in reference.iter().zip(&got) {
            assert!(want == have, "segment {base:020}.seg differs");
        }
    }
    // The replicas' hints, gathered as records were appended or read from
    // the files a full resync received, are the ones the master's scans
    // wrote.
    let reference = hint_files(&m.data_dir());
    assert!(reference.len() >= 5, "{} hints", reference.len());
    for node in [&r, &fresh] {
        assert_eq!(hint_files(&node.data_dir()), reference, "{}", node.logs());
    }
}

/// The hint files of a data directory, by name.
fn hint_files(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("read the data directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "hint"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read a hint"))
        })
        .collect()
}

#[test]
fn a_killed_master_loses_no_acknowledged_write_and_replicas_reconnect() {
    let flags = ["--durability", "always"];
    let mut m = master(&flags);
    let r1 = replica(m.addr, &flags);
    let r2 = replica(m.addr, &flags);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = background_writer(m.addr, "acked", 1_000_000, Arc::clone(&stop));
    wait_for(START_DEADLINE, "some writes", || {
        (rstat(m.addr, "end_offset") > 200_000).then_some(())
    });
    m.sigkill();
    let acked = writer.join().unwrap();
    assert!(acked > 0);
    // Readiness: a replica without its master is not ready.
    for r in [&r1, &r2] {
        wait_for(START_DEADLINE, "/readyz 503 without a master", || {
            (ready(r) == 503).then_some(())
        });
        assert!(!repl(r.addr)["link_up"].as_bool().unwrap());
    }

    m.restart_same_port();
    let got = get_all(m.addr, &keys("acked", 0..acked));
    for (i, answer) in got.iter().enumerate() {
        assert_eq!(
            *answer,
            Response::Value(value("acked", i, 100)),
            "acknowledged write {i} of {acked} is lost"
        );
    }
    wait_for(START_DEADLINE, "both replicas to reconnect", || {
        (rstat(m.addr, "connected_replicas") == 2).then_some(())
    });
    for r in [&r1, &r2] {
        wait_for(START_DEADLINE, "/readyz 200 with the master back", || {
            (ready(r) == 200).then_some(())
        });
    }
    put_range(&mut m.client(), "after", 0..100, 10).unwrap();
    wait_converged(m.addr, &[r1.addr, r2.addr]);
    assert_same_contents(m.addr, &[r1.addr, r2.addr], &keys("acked", 0..acked));
    assert_same_contents(m.addr, &[r1.addr, r2.addr], &keys("after", 0..100));
    assert!(
        rstat(r1.addr, "epoch") >= 2,
        "the replicas follow the new epoch"
    );
}

#[test]
fn a_stale_master_rejoins_as_replica_and_truncates_its_divergent_tail() {
    let flags = ["--durability", "never"];
    let mut a = master(&flags);
    let b = replica(a.addr, &flags);
    let c = replica(a.addr, &flags);
    put_range(&mut a.client(), "base", 0..1000, 50).unwrap();
    wait_converged(a.addr, &[b.addr, c.addr]);

    // Writes only the old master has: the replicas are frozen, and more is
    // written than socket buffers can hold for them.
    signal(&b, Signal::SIGSTOP);
    signal(&c, Signal::SIGSTOP);
    let only_a = 8000;
    put_range(&mut a.client(), "only-a", 0..only_a, 4096).unwrap();
    a.sigkill();
    signal(&b, Signal::SIGCONT);
    signal(&c, Signal::SIGCONT);

    let out = cli(b.addr, &["promote"]);
    assert!(out.status.success(), "{out:?}");
    wait_for(START_DEADLINE, "b to be master", || {
        (repl(b.addr)["role"] == "master").then_some(())
    });
    let out = cli(c.addr, &["replicate", "--master", &b.addr.to_string()]);
    assert!(out.status.success(), "{out:?}");
    put_range(&mut b.client(), "after", 0..300, 50).unwrap();

    // Which of the old master's writes reached b? Ask b, do not assume.
    let only_a_keys = keys("only-a", 0..only_a);
    let on_b = get_all(b.addr, &only_a_keys);
    let divergent: Vec<Bytes> = only_a_keys
        .iter()
        .zip(&on_b)
        .filter(|(_, r)| **r == Response::NotFound)
        .map(|(k, _)| k.clone())
        .collect();
    assert!(
        !divergent.is_empty(),
        "every write reached b: nothing diverged"
    );

    // The old master comes back as a replica of b: never as a master.
    let mut args = replica_args(b.addr);
    args.extend(flags.iter().map(|s| s.to_string()));
    a.set_args(&args.iter().map(String::as_str).collect::<Vec<_>>());
    a.restart();
    assert_eq!(repl(a.addr)["role"], "replica");
    match no_redirect_client(a.addr).put(b"x", b"y") {
        Err(Error::Redirected { master, .. }) => assert_eq!(master, b.addr.to_string()),
        other => panic!("a write to the old master was not redirected: {other:?}"),
    }
    wait_converged(b.addr, &[a.addr, c.addr]);
    for node in [a.addr, c.addr] {
        let gone = get_all(node, &divergent);
        assert!(
            gone.iter().all(|r| *r == Response::NotFound),
            "{node} still holds writes only the old master had"
        );
    }
    assert_same_contents(b.addr, &[a.addr, c.addr], &only_a_keys);
    assert_same_contents(b.addr, &[a.addr, c.addr], &keys("after", 0..300));
    assert_same_contents(b.addr, &[a.addr, c.addr], &keys("base", 0..1000));
}

/// A sync-mode master (`--min-acks 1`) that gives up on replicas after
/// `timeout_ms`.
fn sync_master(timeout_ms: &str) -> Server {
    master(&[
        "--replication-mode",
        "sync",
        "--min-acks",
        "1",
        "--sync-timeout-ms",
        timeout_ms,
    ])
}

#[test]
fn sync_mode_acks_only_what_the_replica_holds() {
    let m = sync_master("500");
    let mut r = replica(m.addr, &[]);
    let mut writer = m.client();
    let mut reader = r.client();
    for i in 0..300 {
        let (k, v) = (key("sync", i), value("sync", i, 20));
        writer.put(&k, &v).unwrap();
        assert_eq!(
            reader.get(&k).unwrap().as_deref(),
            Some(&v[..]),
            "acknowledged write {i} is not on the replica"
        );
    }

    // Pipelined puts, appended together, are acknowledged once the
    // replica holds them all.
    let puts = |prefix: &str| -> Vec<Request> {
        (0..50)
            .map(|i| Request::Put {
                key: key(prefix, i),
                value: value(prefix, i, 20),
            })
            .collect()
    };
    let answers = writer.pipeline(&puts("piped")).unwrap();
    assert!(answers.iter().all(|a| *a == Response::Ok), "{answers:?}");
    for i in 0..50 {
        assert_eq!(
            reader.get(&key("piped", i)).unwrap().as_deref(),
            Some(&value("piped", i, 20)[..]),
            "acknowledged pipelined write {i} is not on the replica"
        );
    }

    // A frozen replica never acknowledges: the outcome is unknown, for a
    // lone put and for each of a pipeline's.
    signal(&r, Signal::SIGSTOP);
    let started = Instant::now();
    match writer.put(b"frozen", b"1") {
        Err(Error::Server { code, .. }) => assert_eq!(code, ErrorCode::FATE_UNKNOWN),
        other => panic!("expected FATE_UNKNOWN, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(400));
    for answer in writer.pipeline(&puts("frozen")).unwrap() {
        match answer {
            Response::Error { code, .. } => assert_eq!(code, ErrorCode::FATE_UNKNOWN),
            other => panic!("expected FATE_UNKNOWN, got {other:?}"),
        }
    }
    signal(&r, Signal::SIGCONT);

    // No replica at all: refused up front.
    assert!(r.sigterm().success());
    wait_for(START_DEADLINE, "the master to see no replica", || {
        (rstat(m.addr, "connected_replicas") == 0).then_some(())
    });
    match writer.put(b"alone", b"1") {
        Err(Error::Server { code, .. }) => assert_eq!(code, ErrorCode::NOT_ENOUGH_REPLICAS),
        other => panic!("expected NOT_ENOUGH_REPLICAS, got {other:?}"),
    }
    assert_eq!(writer.get(b"alone").unwrap(), None, "not applied");
}

#[test]
fn an_empty_replica_joins_a_compacted_master_by_full_resync() {
    let m = master(&["--segment-max-bytes", "65536"]);
    let mut c = m.client();
    for _ in 0..3 {
        put_range(&mut c, "hot", 0..2000, 100).unwrap();
    }
    let out = cli(m.addr, &["compact"]);
    assert!(out.status.success(), "{out:?}");
    let log_start = stats(m.addr)["log_start"].as_u64().unwrap();
    assert!(log_start > 0, "compaction moved the log start");

    let r = replica(m.addr, &[]);
    assert_eq!(rstat(m.addr, "full_resyncs"), 1);
    assert_eq!(rstat(r.addr, "full_resyncs"), 1);
    // Then it streams.
    put_range(&mut c, "new", 0..1000, 100).unwrap();
    wait_converged(m.addr, &[r.addr]);
    assert!(rstat(r.addr, "log_bytes_shipped") >= 1000 * 100);
    assert_eq!(rstat(m.addr, "full_resyncs"), 1);
    assert_same_contents(m.addr, &[r.addr], &keys("hot", 0..2000));
    assert_same_contents(m.addr, &[r.addr], &keys("new", 0..1000));
}

#[test]
fn a_corrupted_byte_on_the_wire_is_refused_and_refetched() {
    let m = master(&[]);
    // Far past HELLO and the negotiation: inside the streamed log, which
    // is almost all record bytes with 64 KiB values.
    let proxy = FlipProxy::start(m.addr, 2_000_000);
    let mut r = replica(proxy.addr, &[]);
    put_range(&mut m.client(), "pre", 0..10, 65536).unwrap();
    wait_converged(m.addr, &[r.addr]);
    // Joining, the empty replica was seeded by a (tiny) full resync; what
    // follows the corruption must be a resume, not another full resync.
    let full_before = rstat(r.addr, "full_resyncs");
    let partial_before = rstat(r.addr, "partial_resyncs");
    put_range(&mut m.client(), "pre", 10..200, 65536).unwrap();
    wait_converged(m.addr, &[r.addr]);
    assert!(
        proxy.flipped.load(Ordering::Relaxed),
        "the byte was flipped"
    );
    assert!(
        proxy.connections.load(Ordering::Relaxed) >= 2,
        "the replica reconnected"
    );
    let logs = r.logs();
    assert_eq!(rstat(r.addr, "full_resyncs"), full_before, "{logs}");
    assert!(
        rstat(r.addr, "partial_resyncs") > partial_before,
        "it re-fetched: {logs}"
    );
    assert!(logs.contains("checksum"), "the record was refused: {logs}");
    assert_same_contents(m.addr, &[r.addr], &keys("pre", 0..200));
    assert!(r.sigterm().success());
    let dir = r.data_dir();
    let out = std::process::Command::new(kvstore_bin())
        .args(["verify", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "verify: {out:?}");
}

#[test]
fn writes_to_a_replica_are_redirected_to_the_master() {
    let m = master(&[]);
    let r = replica(m.addr, &[]);
    let out = cli(r.addr, &["put", "via-replica", "v1"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        m.client().get(b"via-replica").unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    match no_redirect_client(r.addr).put(b"k", b"v") {
        Err(Error::Redirected { master, .. }) => assert_eq!(master, m.addr.to_string()),
        other => panic!("expected Error::Redirected, got {other:?}"),
    }
    // The library follows by default.
    r.client().put(b"followed", b"v2").unwrap();
    assert_eq!(
        m.client().get(b"followed").unwrap().as_deref(),
        Some(&b"v2"[..])
    );
}

#[test]
fn failover_refuses_while_the_master_answers_then_promotes_the_most_advanced() {
    let flags = ["--durability", "never"];
    let mut a = master(&flags);
    let b = replica(a.addr, &flags);
    let c = replica(a.addr, &flags);
    let nodes = format!("{},{},{}", a.addr, b.addr, c.addr);
    let out = cli(a.addr, &["failover", "--nodes", &nodes]);
    assert!(!out.status.success(), "failover acted with a live master");
    assert_eq!(repl(a.addr)["role"], "master");

    // c falls behind: frozen while more is written than buffers hold.
    signal(&c, Signal::SIGSTOP);
    put_range(&mut a.client(), "x", 0..6000, 4096).unwrap();
    wait_converged(a.addr, &[b.addr]);
    a.sigkill();
    signal(&c, Signal::SIGCONT);
    wait_for(START_DEADLINE, "c to notice", || {
        (!repl(c.addr)["link_up"].as_bool().unwrap()).then_some(())
    });
    assert!(rstat(c.addr, "end_offset") < rstat(b.addr, "end_offset"));

    let out = cli(b.addr, &["failover", "--nodes", &nodes]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(repl(b.addr)["role"], "master", "b was the most advanced");
    assert_eq!(repl(c.addr)["master"], b.addr.to_string());
    put_range(&mut b.client(), "y", 0..100, 10).unwrap();
    wait_converged(b.addr, &[c.addr]);
    assert_same_contents(b.addr, &[c.addr], &keys("x", 0..6000));
    assert_same_contents(b.addr, &[c.addr], &keys("y", 0..100));
}

#[test]
fn replication_metrics_are_exported() {
    let m = master(&[]);
    let r = replica(m.addr, &[]);
    put_range(&mut m.client(), "m", 0..100, 10).unwrap();
    wait_converged(m.addr, &[r.addr]);
    let mm = |name| common::metric(m.http_addr, name);
    assert_eq!(mm("kvstore_replication_role"), 1.0);
    assert_eq!(mm("kvstore_replication_connected_replicas"), 1.0);
    assert!(mm("kvstore_replication_epoch") >= 1.0);
    assert_eq!(
        mm("kvstore_replication_end_offset"),
        rstat(m.addr, "end_offset") as f64
    );
    let rm = |name| common::metric(r.http_addr, name);
    assert_eq!(rm("kvstore_replication_role"), 0.0);
    assert_eq!(rm("kvstore_replication_link_up"), 1.0);
    assert_eq!(rm("kvstore_replication_lag_bytes"), 0.0);
    let scrape = common::scrape(m.http_addr);
    let acked = scrape
        .samples
        .iter()
        .find(|s| s.metric == "kvstore_replication_replica_acked_offset")
        .expect("a per-replica acked offset");
    assert_eq!(
        acked.labels.get("replica"),
        Some(r.addr.to_string().as_str())
    );
}

#[test]
fn a_replica_too_far_behind_is_not_ready_until_it_catches_up() {
    let m = master(&["--durability", "never"]);
    // The master's stream reaches the replica at about 4 MB/s. The load
    // (about 21 MB) is more than the loopback socket buffers hold, so the
    // master's sends block and the chunks the replica receives carry a
    // master end far ahead of its own: with a load the buffers could absorb,
    // every chunk would be sent as soon as written, name a master end just
    // past itself, and the replica would never see the lag (heartbeats queue
    // behind the buffered bytes).
    let proxy = FlipProxy::slow(m.addr, 4_000_000);
    let r = replica(proxy.addr, &["--replica-max-lag-bytes", "1000000"]);
    assert_eq!(ready(&r), 200);
    put_range(&mut m.client(), "big", 0..320, 65536).unwrap();
    wait_for(
        START_DEADLINE,
        "/readyz 503 while over the lag bound",
        || (ready(&r) == 503).then_some(()),
    );
    assert!(
        repl(r.addr)["link_up"].as_bool().unwrap(),
        "still connected"
    );
    wait_converged(m.addr, &[r.addr]);
    wait_for(START_DEADLINE, "/readyz 200 once caught up", || {
        (ready(&r) == 200).then_some(())
    });
}

/// The engine's fsync count of a node (`stats`).
fn fsyncs(addr: std::net::SocketAddr) -> u64 {
    stats(addr)
        .get("fsyncs")
        .and_then(serde_json::Value::as_u64)
        .expect("fsyncs in stats")
}

#[test]
fn one_replica_fsync_and_one_ack_cover_the_chunks_that_queued_up() {
    let m = master(&[]);
    let r = replica(m.addr, &[]);
    let mut c = m.client();
    put_range(&mut c, "warm", 0..100, 100).unwrap();
    wait_converged(m.addr, &[r.addr]);
    let (fsyncs0, chunks0, acks0) = (
        fsyncs(r.addr),
        rstat(r.addr, "log_chunks"),
        rstat(r.addr, "acks"),
    );
    let sent0 = rstat(m.addr, "log_chunks");
    // While the replica is frozen, every put is its own group commit on
    // the master and goes out as its own chunk: the chunks queue up in the
    // socket, as they do while a replica's fsync runs.
    signal(&r, Signal::SIGSTOP);
    for i in 0..300 {
        c.put(&key("q", i), &value("q", i, 100)).unwrap();
    }
    wait_for(START_DEADLINE, "the master to ship the puts", || {
        (rstat(m.addr, "log_chunks") >= sent0 + 100).then_some(())
    });
    signal(&r, Signal::SIGCONT);
    wait_converged(m.addr, &[r.addr]);
    let chunks = rstat(r.addr, "log_chunks") - chunks0;
    let fsyncs = fsyncs(r.addr) - fsyncs0;
    let acks = rstat(r.addr, "acks") - acks0;
    println!("replica: {chunks} chunks, {fsyncs} fsyncs, {acks} acks");
    assert!(
        chunks >= 100,
        "only {chunks} chunks: the test did not queue any up"
    );
    // One fsync per chunk (the old behaviour) fails both.
    assert!(fsyncs * 10 <= chunks, "{fsyncs} fsyncs for {chunks} chunks");
    assert!(acks * 10 <= chunks, "{acks} acks for {chunks} chunks");
    assert_same_contents(m.addr, &[r.addr], &keys("q", 0..300));
}

/// Where the replica's newest segment starts: under `never` only sealing
/// a segment fsyncs, so that is where its durable log ends.
fn active_segment_base(dir: &std::path::Path) -> u64 {
    segments_from(dir, 0)
        .last()
        .map(|(base, _)| *base)
        .expect("a segment")
}

#[test]
fn a_replica_under_never_acknowledges_as_durable_only_what_it_fsynced() {
    let seg = ["--segment-max-bytes", "65536"];
    let m = master(&seg);
    let r = replica(
        m.addr,
        &["--durability", "never", "--segment-max-bytes", "65536"],
    );
    // About 200 KB: the master seals three segments, so does the replica.
    put_range(&mut m.client(), "n", 0..1500, 100).unwrap();
    let end = rstat(m.addr, "end_offset");
    let durable = wait_for(START_DEADLINE, "the replica to acknowledge the end", || {
        let seen = &repl(m.addr)["replicas"][0];
        (seen["acked_offset"].as_u64() == Some(end)).then(|| seen["durable_offset"].as_u64())
    })
    .expect("a durable offset");
    let sealed_up_to = active_segment_base(&r.data_dir());
    assert!(sealed_up_to > 0, "the replica sealed no segment");
    assert_eq!(
        durable, sealed_up_to,
        "the replica claims {durable} durable; it fsynced up to {sealed_up_to} of {end}"
    );
    assert_eq!(
        common::metric(m.http_addr, "kvstore_replication_replica_durable_offset"),
        durable as f64
    );
}

#[test]
fn sync_mode_counts_durable_acknowledgements_not_received_bytes() {
    let m = sync_master("300");
    let r = replica(m.addr, &["--durability", "never"]);
    let mut writer = m.client();
    match writer.put(b"unsynced", b"1") {
        Err(Error::Server { code, message }) => {
            assert_eq!(code, ErrorCode::FATE_UNKNOWN);
            assert!(message.contains("not fsynced"), "{message}");
        }
        other => panic!("expected FATE_UNKNOWN, got {other:?}"),
    }
    // The replica did receive it: it is written there, only not durable.
    let mut reader = r.client();
    wait_for(START_DEADLINE, "the write to reach the replica", || {
        reader.get(b"unsynced").unwrap().map(|_| ())
    });
    let seen = &repl(m.addr)["replicas"][0];
    let end = rstat(m.addr, "end_offset");
    assert_eq!(seen["acked_offset"].as_u64(), Some(end));
    assert!(seen["durable_offset"].as_u64() < Some(end), "{seen}");
}

/// A master from before data-directory ids answers a REPL_SYNC that names
/// one MALFORMED_FRAME (trailing bytes): the replica asks again without it,
/// so a rolling upgrade that starts with the replicas keeps replicating.
/// The old master is played by hand on a socket.
#[test]
fn a_replica_asks_an_older_master_again_without_its_directory_id() {
    use kvstore::protocol::{HelloOk, Limits, Request, Role};
    use std::net::TcpListener;

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let old_master = listener.local_addr().expect("addr").to_string();
    let replica = Server::start_unready(&["--role", "replica", "--master-addr", &old_master]);
    let respond = |raw: &mut common::Raw, response: Response| {
        let mut buf = bytes::BytesMut::new();
        response.encode(&mut buf).expect("encode");
        let _ = raw.send(&buf);
    };
    let mut named = Vec::new();
    for attempt in 0..2 {
        let (stream, _) = wait_for(START_DEADLINE, "the replica to connect", || {
            listener.accept().ok()
        });
        stream.set_nonblocking(false).expect("blocking");
        let mut raw = common::Raw::over(stream);
        let hello = raw.frame().expect("HELLO");
        assert!(matches!(
            Request::decode(hello, &Limits::default()),
            Ok(Request::Hello(_))
        ));
        respond(
            &mut raw,
            Response::HelloOk(HelloOk {
                version: 2,
                role: Role::Master,
                limits: Limits::default(),
                server: "kvstore (before directory ids)".into(),
            }),
        );
        let sync = raw.frame().expect("REPL_SYNC");
        let Ok(Request::ReplSync(request)) = Request::decode(sync, &Limits::default()) else {
            panic!("attempt {attempt}: not a REPL_SYNC");
        };
        named.push(request.dir_id.clone());
        if !request.dir_id.is_empty() {
            respond(
                &mut raw,
                Response::error(
                    ErrorCode::MALFORMED_FRAME,
                    "malformed REPL_SYNC: 36 trailing bytes",
                ),
            );
        }
    }
    let own = kvstore::engine::DirId::load(&replica.data_dir())
        .expect("read DIR_ID")
        .expect("a DIR_ID")
        .to_string();
    assert_eq!(named, vec![own, String::new()], "{}", replica.logs());
    assert!(replica.logs().contains("asking again without it"));
}
