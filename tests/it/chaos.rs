//! Fault injection against real `kvstore serve` processes: SIGKILL and
//! SIGSTOP of masters and replicas under load, a fault-injecting proxy on
//! the replication stream, full disks (tmpfs) and bit flips in data files.
//!
//! Every test keeps a record of every acknowledged write (tests/it/chaos/
//! load.rs) and checks afterwards that each one is readable; it prints
//! `chaos: faults=N acked=N lost=0 full_resyncs=N partial_resyncs=N`.
//! Short by default (a few rounds, well under a minute); with
//! `CHAOS_MINUTES=M` (`make chaos`) each test repeats its rounds for M
//! minutes. Only loopback, tmpfs mounts and a network namespace (with a
//! veth pair) that the tests make themselves are used. Both need root; a
//! test that cannot make them fails loudly unless
//! `KVSTORE_CHAOS_ALLOW_NO_MOUNT=1` / `KVSTORE_CHAOS_ALLOW_NO_NETNS=1`.

use crate::common;
#[cfg(feature = "etcd")]
mod failover;
mod faults;
mod load;
mod netns;
mod proxy;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{wait_for, Server};
use faults::{
    copy_dir, files_ending, flip_bit, replication_counts, sleep_random, Budget, KillOnDrop,
    Summary, Tmpfs,
};
use kvstore::engine::{Engine, Options};
use kvstore::protocol::ErrorCode;
use load::{count_lost, count_lost_eventually, Load};
use netns::NetNs;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use proxy::{Mode, Proxy};

const READ_BACK: Duration = Duration::from_secs(60);

fn start_replica(master: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--role", "replica", "--master-addr", master];
    args.extend_from_slice(extra);
    let replica = Server::start_unready(&args);
    wait_ready(&replica);
    replica
}

fn wait_ready(server: &Server) {
    wait_for(Duration::from_secs(30), "the node to be ready", || {
        matches!(common::http_get(server.http_addr, "/readyz"), Ok((200, _))).then_some(())
    });
}

fn signal(server: &Server, sig: Signal) {
    let pid = Pid::from_raw(i32::try_from(server.pid()).expect("pid fits"));
    kill(pid, sig).expect("signal the server");
}

#[test]
fn sigkill_of_master_and_replica_under_load_loses_no_acknowledged_write() {
    let budget = Budget::new(4);
    let master = &mut Server::start(&[
        "--replication-mode",
        "sync",
        "--min-acks",
        "1",
        "--sync-timeout-ms",
        "1000",
        "--segment-max-bytes",
        "65536",
    ]);
    let master_addr = master.addr.to_string();
    let replica = &mut start_replica(&master_addr, &["--segment-max-bytes", "65536"]);
    let load = Load::start(master.addr, 3, "kill", 100);
    let mut summary = Summary::default();
    let mut rng = rand::thread_rng();
    while budget.another_round() {
        sleep_random(&mut rng, 100, 500);
        if rand::Rng::gen_bool(&mut rng, 0.5) {
            master.sigkill();
            master.restart_same_port();
        } else {
            replica.sigkill();
            replica.restart();
        }
        summary.faults += 1;
        wait_ready(replica);
    }
    sleep_random(&mut rng, 200, 300);
    let (acked, lost_on_read) = load.stop();
    summary.acked = acked.len() as u64;
    // Sync mode, one replica: whatever was acknowledged is durable on both.
    summary.lost = lost_on_read
        + count_lost(master.addr, &acked, READ_BACK)
        + count_lost(replica.addr, &acked, READ_BACK);
    (summary.full_resyncs, summary.partial_resyncs) = replication_counts(replica.addr);
    summary.print("sigkill");
    assert!(summary.acked > 0, "no write was acknowledged at all");
    assert_eq!(summary.lost, 0, "acknowledged writes were lost");
}

/// Compaction racing segment rolls: 16 KiB segments, three writers and a
/// COMPACT every 0.2 s, with a SIGKILL and a restart on the same directory
/// at the end of every round. No write may be refused (a compaction whose
/// seal collided with a roll used to poison the engine within a second) and
/// every acknowledged write must read back.
#[test]
fn compaction_every_fifth_of_a_second_beside_rolling_writers_refuses_nothing() {
    let budget = Budget::new(3);
    let master = &mut Server::start(&["--segment-max-bytes", "16384"]);
    let load = Load::start(master.addr, 3, "compact", 100);
    let mut summary = Summary::default();
    let mut rng = rand::thread_rng();
    let mut compactions = 0u64;
    while budget.another_round() {
        let until =
            Instant::now() + Duration::from_millis(rand::Rng::gen_range(&mut rng, 1000..2500));
        let mut client = common::connect_client(master.addr);
        while Instant::now() < until {
            client.compact().expect("COMPACT failed");
            compactions += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
        let (refused, first) = load.refused.get();
        assert_eq!(refused, 0, "writes were refused: {first:?}");
        // A crash in the middle of it all, then the same directory again.
        master.sigkill();
        master.restart_same_port();
        summary.faults += 1;
    }
    let mut client = common::connect_client(master.addr);
    client.compact().expect("COMPACT after the last restart");
    let (refused, first) = load.refused.get();
    let (acked, lost_on_read) = load.stop();
    summary.acked = acked.len() as u64;
    summary.lost = lost_on_read + count_lost(master.addr, &acked, READ_BACK);
    summary.print(&format!("compaction race, {compactions} compactions"));
    assert!(compactions >= 5, "only {compactions} compactions ran");
    assert!(summary.acked > 0, "no write was acknowledged at all");
    assert_eq!(refused, 0, "writes were refused: {first:?}");
    assert_eq!(summary.lost, 0, "acknowledged writes were lost");
}

#[test]
fn sigstop_pauses_longer_than_the_timeouts_lose_nothing() {
    let budget = Budget::new(2);
    let master = &mut Server::start(&[
        "--replication-mode",
        "sync",
        "--sync-timeout-ms",
        "500",
        "--frame-timeout-secs",
        "1",
    ]);
    let master_addr = master.addr.to_string();
    let replica = &mut start_replica(&master_addr, &[]);
    let load = Load::start(master.addr, 2, "pause", 64);
    let mut summary = Summary::default();
    let mut rng = rand::thread_rng();
    while budget.another_round() {
        for victim in [&*master, &*replica] {
            sleep_random(&mut rng, 100, 300);
            signal(victim, Signal::SIGSTOP);
            // Longer than the sync timeout (0.5 s) and the frame timeout.
            std::thread::sleep(Duration::from_millis(1500));
            signal(victim, Signal::SIGCONT);
            summary.faults += 1;
        }
    }
    wait_ready(replica);
    let (acked, lost_on_read) = load.stop();
    summary.acked = acked.len() as u64;
    summary.lost = lost_on_read
        + count_lost(master.addr, &acked, READ_BACK)
        + count_lost(replica.addr, &acked, READ_BACK);
    (summary.full_resyncs, summary.partial_resyncs) = replication_counts(replica.addr);
    summary.print("sigstop");
    assert!(summary.acked > 0, "no write was acknowledged at all");
    assert_eq!(summary.lost, 0, "acknowledged writes were lost");
}

#[test]
fn proxy_drops_delays_duplicates_and_cuts_the_replication_stream() {
    let budget = Budget::new(2);
    let master = Server::start(&[]);
    let proxy = Proxy::start(master.addr);
    let replica = start_replica(&proxy.addr.to_string(), &[]);
    let load = Load::start(master.addr, 2, "proxy", 200);
    let mut summary = Summary::default();
    let mut rng = rand::thread_rng();
    while budget.another_round() {
        for mode in [Mode::Delay, Mode::DuplicateOnce, Mode::Drop] {
            proxy.set(mode);
            sleep_random(&mut rng, 300, 1200);
            proxy.set(Mode::Pass);
            if mode != Mode::Delay {
                // A duplicated chunk breaks the framing and a partition
                // leaves the link silent: the link is reset either way
                // (by the peers' timeouts or by the cut).
                proxy.cut();
            }
        }
        sleep_random(&mut rng, 100, 400);
        proxy.cut();
    }
    let (acked, lost_on_read) = load.stop();
    summary.faults = proxy.faults();
    summary.acked = acked.len() as u64;
    summary.lost = lost_on_read + count_lost(master.addr, &acked, READ_BACK);
    // Async mode: the replica converges once the link is healthy again.
    summary.lost += count_lost_eventually(replica.addr, &acked, READ_BACK);
    (summary.full_resyncs, summary.partial_resyncs) = replication_counts(replica.addr);
    summary.print("proxy");
    assert!(summary.acked > 0, "no write was acknowledged at all");
    assert_eq!(
        summary.lost, 0,
        "acknowledged writes were lost or never replicated"
    );
    assert!(
        summary.full_resyncs + summary.partial_resyncs >= 2,
        "the replica never had to resync: the faults did not reach the link"
    );
}

/// Writes 16 KiB values until the server refuses one; checks the refusal
/// is a clear storage error. Returns the number acknowledged.
fn fill_until_refused(
    addr: std::net::SocketAddr,
    tag: &str,
    acked: &mut std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
) -> String {
    let mut client = common::connect_client(addr);
    for i in 0..2_000 {
        let key = format!("{tag}-{i}").into_bytes();
        let value = vec![b'x'; 16 * 1024];
        match client.put(&key, &value) {
            Ok(()) => {
                acked.insert(key, value);
            }
            Err(kvstore::client::Error::Server { code, message }) => {
                assert!(
                    code == ErrorCode::STORAGE || code == ErrorCode::POISONED,
                    "a full disk gave {code}: {message}"
                );
                return format!("{code}: {message}");
            }
            Err(e) => panic!("a full disk gave a non-server error: {e}"),
        }
    }
    panic!("2,000 writes of 16 KiB fit on a 4 MiB tmpfs?");
}

#[test]
fn disk_full_on_master_and_replica_fails_clearly_and_recovers() {
    let mut summary = Summary::default();
    let mut master = Server::start(&[]);
    master.sigterm();
    let Some(master_fs) = Tmpfs::mount_on(&master.data_dir(), "4m") else {
        return;
    };
    master.restart_same_port();
    let mut replica = start_replica(&master.addr.to_string(), &[]);
    replica.sigterm();
    let Some(replica_fs) = Tmpfs::mount_on(&replica.data_dir(), "2m") else {
        return;
    };
    replica.restart();
    wait_ready(&replica);

    // The replica (2 MiB) fills first, then the master (4 MiB) refuses.
    let mut acked = std::collections::BTreeMap::new();
    let refusal = fill_until_refused(master.addr, "full", &mut acked);
    eprintln!("chaos: master with a full disk answered: {refusal}");
    summary.faults += 2;
    assert!(
        refusal.to_lowercase().contains("space"),
        "the error does not say the disk is full: {refusal}"
    );
    assert_eq!(
        count_lost(master.addr, &acked, READ_BACK),
        0,
        "reads after disk full"
    );

    // Space returns: the master resumes writes on its own (live recovery,
    // docs/RELIABILITY.md), without a restart.
    master_fs.resize("64m");
    replica_fs.resize("64m");
    let mut client = common::connect_client(master.addr);
    common::wait_for(
        Duration::from_secs(20),
        "the master to take writes again",
        || client.put(b"after-full", b"1").ok(),
    );
    acked.insert(b"after-full".to_vec(), b"1".to_vec());
    summary.acked = acked.len() as u64;
    summary.lost = count_lost(master.addr, &acked, READ_BACK);

    // The replica resumes too and catches up, without a restart.
    common::wait_for(
        Duration::from_secs(30),
        "the replica to catch up after space returned",
        || (count_lost(replica.addr, &acked, READ_BACK) == 0).then_some(()),
    );
    (summary.full_resyncs, summary.partial_resyncs) = replication_counts(replica.addr);
    summary.print("disk-full");
    drop(master);
    drop(replica);
    assert_eq!(summary.lost, 0, "acknowledged writes were lost");
}

#[test]
fn bit_flips_are_detected_and_a_corrupt_replica_is_reseeded() {
    let small = ["--segment-max-bytes", "4096"];
    let mut master = Server::start(&small);
    let mut replica = start_replica(&master.addr.to_string(), &small);
    let mut client = master.client();
    let mut acked = std::collections::BTreeMap::new();
    for i in 0..300 {
        if i == 150 {
            client.compact().expect("compact");
        }
        let (k, v) = (
            format!("c-{i:03}").into_bytes(),
            vec![b'a' + (i % 26) as u8; 100],
        );
        client.put(&k, &v).expect("put");
        acked.insert(k, v);
    }
    let mut summary = Summary {
        acked: acked.len() as u64,
        ..Summary::default()
    };
    wait_for(READ_BACK, "the replica to catch up", || {
        (count_lost(replica.addr, &acked, READ_BACK) == 0).then_some(())
    });
    master.sigterm();
    let dir = master.data_dir();
    let sealed = files_ending(&dir, ".seg");
    assert!(sealed.len() >= 2, "expected sealed segments: {sealed:?}");
    let targets = [
        ("sealed segment", sealed[0].clone()),
        ("segment hint", sealed[0].with_extension("hint")),
        ("merged file", files_ending(&dir, ".dat")[0].clone()),
        (
            "merged hint",
            files_ending(&dir, ".dat")[0].with_extension("hint"),
        ),
    ];
    for (what, file) in &targets {
        let copy = tempfile::tempdir().expect("tempdir");
        copy_dir(&dir, copy.path());
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let target = copy.path().join(&name);
        let len = std::fs::metadata(&target).expect("stat").len() as usize;
        flip_bit(&target, len / 2);
        summary.faults += 1;
        let out = Command::new(common::kvstore_bin())
            .args(["verify", "--data-dir"])
            .arg(copy.path())
            .output()
            .expect("run verify");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            !out.status.success(),
            "verify missed a flipped bit in the {what}:\n{text}"
        );
        assert!(
            text.contains(&name) && text.contains("offset"),
            "verify does not name {name} and an offset:\n{text}"
        );
        if name.ends_with(".hint") {
            // A hint is an optimisation: open ignores the damaged one and
            // rebuilds it by scanning; every key still reads back.
            let engine = Engine::open(copy.path(), Options::default()).expect("open");
            for (k, v) in &acked {
                assert_eq!(engine.get(k).expect("get").as_deref(), Some(&v[..]));
            }
        } else {
            // Without its hint the data file is scanned: open names it.
            std::fs::remove_file(target.with_extension("hint")).expect("remove hint");
            match Engine::open(copy.path(), Options::default()) {
                Err(kvstore::engine::Error::Corrupt { file, .. }) => {
                    assert!(file.ends_with(&name), "open named {file:?}, not {name}")
                }
                Err(e) => panic!("open of a corrupt {what} failed otherwise: {e}"),
                Ok(_) => panic!("open did not detect a flipped bit in the {what}"),
            }
        }
    }

    // A replica with a corrupt sealed file is quarantined and reseeded.
    master.restart_same_port();
    replica.sigterm();
    let rdir = replica.data_dir();
    let victim = files_ending(&rdir, ".seg")
        .first()
        .filter(|_| files_ending(&rdir, ".seg").len() >= 2)
        .cloned()
        .unwrap_or_else(|| files_ending(&rdir, ".dat")[0].clone());
    let len = std::fs::metadata(&victim).expect("stat").len() as usize;
    flip_bit(&victim, len / 2);
    let _ = std::fs::remove_file(victim.with_extension("hint"));
    summary.faults += 1;
    replica.restart();
    wait_ready(&replica);
    assert!(
        replica.logs().contains("quarantined"),
        "the replica did not say it quarantined its data:\n{}",
        replica.logs()
    );
    wait_for(READ_BACK, "the reseeded replica to catch up", || {
        (count_lost(replica.addr, &acked, READ_BACK) == 0).then_some(())
    });
    summary.lost = count_lost(master.addr, &acked, READ_BACK);
    (summary.full_resyncs, summary.partial_resyncs) = replication_counts(replica.addr);
    summary.print("corruption");
    assert_eq!(summary.lost, 0);
}

#[test]
fn netns_partitions_between_master_and_replica_heal_without_loss() {
    let Some(ns) = NetNs::create_or_skip() else {
        return;
    };
    let budget = Budget::new(2);
    let master = Server::start(&[]);
    // The replica lives in the namespace and reaches the master through
    // the veth link (a forwarder on the root side of it).
    let link = Proxy::start_on(&format!("{}:0", ns.root_ip), master.addr);
    let dir = tempfile::tempdir().expect("tempdir");
    let args: Vec<String> = ["--role", "replica", "--master-addr", &link.addr.to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (child, ports) = ns.spawn_serve(common::kvstore_bin(), dir.path(), &args);
    let _child = KillOnDrop(child);
    let (replica_addr, replica_http) =
        wait_for(Duration::from_secs(30), "the replica's port file", || {
            common::read_port_file(&ports)
        });
    let ready = || {
        wait_for(Duration::from_secs(30), "the replica to be ready", || {
            matches!(common::http_get(replica_http, "/readyz"), Ok((200, _))).then_some(())
        })
    };
    ready();
    let load = Load::start(master.addr, 2, "netns", 100);
    let mut summary = Summary::default();
    let mut rng = rand::thread_rng();
    while budget.another_round() {
        sleep_random(&mut rng, 200, 600);
        ns.partition(true);
        summary.faults += 1;
        // Longer than a heartbeat gap, so both sides notice the silence.
        sleep_random(&mut rng, 1500, 3000);
        ns.partition(false);
    }
    let (acked, lost_on_read) = load.stop();
    summary.acked = acked.len() as u64;
    summary.lost = lost_on_read + count_lost(master.addr, &acked, READ_BACK);
    ready();
    summary.lost += count_lost_eventually(replica_addr, &acked, READ_BACK);
    (summary.full_resyncs, summary.partial_resyncs) = replication_counts(replica_addr);
    summary.print("netns");
    assert!(summary.acked > 0);
    assert_eq!(
        summary.lost, 0,
        "acknowledged writes lost or never replicated"
    );
}
