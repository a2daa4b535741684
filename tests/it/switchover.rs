//! Planned switchover (`kvstore switchover`, SIGTERM of a master; src/node/ha/switchover.rs)
//! with real etcd and real kvstore processes, and with the Kubernetes API
//! stand-in (tests/it/common/kube_standin.rs) for the switchover under
//! load and a plain hand-over of the Lease: the master
//! pauses writes, lets its successor catch up, names it and resigns; no
//! write it acknowledged is lost; the successor takes the seat in a higher
//! epoch long before the old lease could have run out; a successor that
//! dies after being named does not stall the cluster.
//!
//! Sync mode with `--min-acks 1` on three nodes: the in-sync set is what
//! keeps every acknowledged write on the successor. Every wait polls with
//! a deadline; every writer is bounded in count and time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::common::{cli, wait_for, Server};

/// What `kvstore switchover` printed: the new master's node id, address
/// and epoch.
fn switched(out: &std::process::Output) -> (String, String, u64) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kvstore switchover failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "switched over: n1 (127.0.0.1:1234) is the master in epoch 5"
    let rest = stdout
        .trim()
        .strip_prefix("switched over: ")
        .unwrap_or_else(|| panic!("unexpected output {stdout:?}"));
    let (id, rest) = rest.split_once(" (").expect("node id");
    let (addr, rest) = rest.split_once(") is the master in epoch ").expect("addr");
    (
        id.to_string(),
        addr.to_string(),
        rest.parse().expect("epoch"),
    )
}

/// A refused `kvstore switchover`: exit non-zero, the one-line reason.
fn refused(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "kvstore switchover should have been refused: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panic"), "{stderr}");
    stderr
}

#[test]
fn without_a_coordinator_switchover_is_refused_with_what_to_do_instead() {
    let node = Server::start(&["--role", "master"]);
    let why = refused(&cli(node.addr, &["switchover"]));
    assert!(
        why.contains("without a coordinator") && why.contains("kvstore failover"),
        "{why}"
    );
}

#[cfg(feature = "etcd")]
mod etcd {
    use super::*;
    use crate::common::etcd::EtcdCluster;
    use crate::common::failover::Coord;
    use crate::failover::{
        assert_holds_all, node_args, one_master, repl_of, role_of, wait_acked, wait_in_sync,
        wait_one_master, writer, Acked, ELECTION_DEADLINE,
    };

    const SYNC: [&str; 4] = ["--replication-mode", "sync", "--min-acks", "1"];

    /// Three nodes with `mode`'s flags (in sync mode, every one in the
    /// in-sync set); the master's index and epoch.
    fn three(coord: &Coord, mode: &[&str]) -> (Vec<Server>, usize, u64) {
        let nodes: Vec<Server> = (0..3).map(|i| coord.start_node(i, mode)).collect();
        let (m, epoch) = wait_one_master(&nodes.iter().collect::<Vec<_>>());
        if mode.contains(&"sync") {
            wait_in_sync(nodes[m].addr, 3);
        }
        (nodes, m, epoch)
    }

    type Writer = (
        Arc<Mutex<Acked>>,
        Arc<AtomicBool>,
        std::thread::JoinHandle<()>,
    );

    /// A writer over every node's address (it moves to whichever takes
    /// its writes); see [`finish_writer`].
    fn start_writer(nodes: &[Server]) -> Writer {
        let addrs = Arc::new(Mutex::new(nodes.iter().map(|n| n.addr).collect()));
        let acked = Arc::new(Mutex::new(Acked::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = writer(addrs, Arc::clone(&acked), Arc::clone(&stop));
        (acked, stop, task)
    }

    /// Waits for 30 more acknowledged writes (the cluster takes writes
    /// again), stops the writer, returns every key it saw acknowledged.
    fn finish_writer((acked, stop, task): Writer, what: &str) -> Vec<bytes::Bytes> {
        let before = acked.lock().unwrap().keys.len();
        wait_acked(&acked, before + 30, what);
        stop.store(true, Ordering::Relaxed);
        task.join().expect("writer");
        let keys = acked.lock().unwrap().keys.clone();
        keys
    }

    #[test]
    fn a_switchover_under_sync_writes_loses_no_acknowledged_write() {
        switchover_under_load(&Coord::etcd(1), &SYNC);
    }

    /// The same through the Kubernetes API stand-in's Lease.
    #[cfg(feature = "kubernetes")]
    #[test]
    fn a_switchover_on_the_lease_api_under_sync_writes_loses_no_acknowledged_write() {
        switchover_under_load(&Coord::kube(), &SYNC);
    }

    /// Async mode has no in-sync set: only the catch-up keeps the master's
    /// last acknowledged writes on its successor. The successor is stopped
    /// while the master acknowledges 5 MiB of writes, and continued only
    /// once the master paused for the switchover: it must be waited for.
    #[test]
    fn a_lagging_successor_is_waited_for_before_the_seat_is_handed_over() {
        let coord = Coord::etcd(1);
        let (nodes, m, _) = three(&coord, &["--replication-mode", "async"]);
        let target = (m + 1) % 3;
        let master = nodes[m].addr;
        crate::common::replication::signal(&nodes[target], Signal::SIGSTOP);
        let mut c = nodes[m].client();
        // More than the kernel's socket buffers hold: most of it is still
        // on the master when the switchover is asked.
        let keys: Vec<bytes::Bytes> = (0..80)
            .map(|i| bytes::Bytes::from(format!("lag-{i:02}")))
            .collect();
        let value = vec![b'v'; 64 << 10];
        for key in &keys {
            c.put(key, &value).expect("an async write on the master");
        }
        let to = format!("n{target}");
        let asked = {
            let to = to.clone();
            std::thread::spawn(move || cli(master, &["switchover", "--to", &to]))
        };
        wait_for(
            ELECTION_DEADLINE,
            "the master to pause for the switchover",
            || {
                nodes[m]
                    .logs()
                    .contains(&format!("writes paused until {to}"))
                    .then_some(())
            },
        );
        crate::common::replication::signal(&nodes[target], Signal::SIGCONT);
        let (id, _, _) = switched(&asked.join().expect("switchover thread"));
        assert_eq!(id, to);
        assert_holds_all(nodes[target].addr, &keys, "on the successor");
    }

    fn switchover_under_load(coord: &Coord, mode: &[&str]) {
        let (nodes, m, epoch) = three(coord, mode);
        let load = start_writer(&nodes);
        wait_acked(
            &load.0,
            200,
            "200 acknowledged writes before the switchover",
        );

        // Asked of a replica: its REDIRECT leads the CLI to the master.
        let replica = nodes[(m + 1) % 3].addr;
        let (id, addr, new_epoch) = switched(&cli(replica, &["switchover"]));
        assert!(new_epoch > epoch, "epoch {new_epoch} after {epoch}");
        assert_ne!(id, format!("n{m}"), "the master handed the seat to itself");
        let new = (0..3)
            .find(|&i| nodes[i].addr.to_string() == addr)
            .expect("the new master is one of the nodes");
        assert_eq!(id, format!("n{new}"));

        // The old master follows the new one; writes go on.
        let all: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
        wait_for(
            ELECTION_DEADLINE,
            "the old master to follow the new one",
            || (one_master(&all)? == (new, new_epoch)).then_some(()),
        );
        let keys = finish_writer(load, "writes acknowledged after the switchover");
        assert_holds_all(nodes[new].addr, &keys, "after the switchover");
        assert_holds_all(nodes[m].addr, &keys, "on the old master, now a replica");
        let logs = nodes[m].logs();
        assert!(logs.contains("resigned in favour of"), "{logs}");
    }

    #[test]
    fn to_picks_the_named_node_and_refuses_one_that_cannot_take_the_seat() {
        let coord = Coord::etcd(1);
        let (nodes, m, epoch) = three(&coord, &SYNC);
        let master = nodes[m].addr;

        let why = refused(&cli(master, &["switchover", "--to", "n9"]));
        assert!(
            why.contains("\"n9\"") && why.contains("not connected to this master"),
            "{why}"
        );
        let why = refused(&cli(master, &["switchover", "--to", &format!("n{m}")]));
        assert!(why.contains("the master already"), "{why}");
        let why = refused(&cli(master, &["switchover", "--to", ""]));
        assert!(why.contains("--to needs a node id"), "{why}");
        // Refusals change nothing: same master, same epoch, writes taken.
        assert_eq!(role_of(master), Some(("master".to_string(), epoch)));
        nodes[m]
            .client()
            .put(b"still", b"here")
            .expect("a write after the refusals");

        // The named node takes the seat, not merely the most caught-up one.
        for _ in 0..2 {
            let (m, epoch) = wait_one_master(&nodes.iter().collect::<Vec<_>>());
            let target = (m + 2) % 3;
            let (id, addr, new_epoch) = switched(&cli(
                nodes[m].addr,
                &["switchover", "--to", &format!("n{target}")],
            ));
            assert_eq!(id, format!("n{target}"));
            assert_eq!(addr, nodes[target].addr.to_string());
            assert!(new_epoch > epoch, "epoch {new_epoch} after {epoch}");
            wait_in_sync(nodes[target].addr, 3);
        }
    }

    #[test]
    fn sigterm_of_the_master_hands_over_long_before_its_lease_could_expire() {
        // A long lease: without the hand-over, nobody could take the seat
        // until the old lease ran out, at least TTL - TTL/3 after SIGTERM.
        const LONG_TTL_MS: u64 = 15_000;
        let etcd = EtcdCluster::start(1);
        let ttl = LONG_TTL_MS.to_string();
        let mut nodes: Vec<Server> = (0..3)
            .map(|i| {
                let mut flags = SYNC.to_vec();
                flags.extend([
                    "--sync-timeout-ms",
                    "20000",
                    "--in-sync-max-lag-ms",
                    "10000",
                ]);
                let mut args = node_args(&etcd, i, &flags);
                let at = args
                    .iter()
                    .position(|a| a == "--lease-ttl-ms")
                    .expect("ttl flag");
                args[at + 1] = ttl.clone();
                Server::start_unready(&args.iter().map(String::as_str).collect::<Vec<_>>())
            })
            .collect();
        let (m, epoch) = wait_one_master(&nodes.iter().collect::<Vec<_>>());
        wait_in_sync(nodes[m].addr, 3);
        let load = start_writer(&nodes);
        wait_acked(&load.0, 50, "50 acknowledged writes before SIGTERM");

        let sent = Instant::now();
        let status = nodes[m].stop_with(Signal::SIGTERM);
        assert!(status.success(), "the old master exited with {status}");
        let survivors: Vec<SocketAddr> =
            (0..3).filter(|&i| i != m).map(|i| nodes[i].addr).collect();
        // Well inside TTL - TTL/3 = 10 s: only a hand-over can be this quick.
        let handover_deadline = Duration::from_millis(LONG_TTL_MS * 3 / 5);
        let (new, new_epoch) = wait_for(
            handover_deadline.saturating_sub(sent.elapsed()),
            "a new master before the old lease could have expired",
            || {
                survivors
                    .iter()
                    .enumerate()
                    .find_map(|(i, a)| match role_of(*a) {
                        Some((role, e)) if role == "master" && e > epoch => Some((i, e)),
                        _ => None,
                    })
            },
        );
        let new_addr = survivors[new];
        // The old master left the in-sync set before it resigned: the new
        // one waits for nobody that is gone (with the long lag bound here,
        // it would otherwise wait 10 s before dropping it).
        let set = repl_of(new_addr)
            .and_then(|r| r.get("in_sync").cloned())
            .expect("in-sync set");
        assert!(
            !set.to_string().contains(&format!("\"n{m}\"")),
            "the stopped master is still in the in-sync set {set}"
        );
        let keys = finish_writer(load, "writes acknowledged after the hand-over");
        assert_eq!(role_of(new_addr), Some(("master".to_string(), new_epoch)));
        assert_holds_all(new_addr, &keys, "after SIGTERM of the master");
        let logs = nodes[m].logs();
        assert!(
            logs.contains("handed the seat over before shutting down"),
            "{logs}"
        );
    }

    #[test]
    fn a_named_successor_that_dies_does_not_stall_the_cluster() {
        let coord = Coord::etcd(1);
        let (mut nodes, m, epoch) = three(&coord, &SYNC);
        let target = (m + 1) % 3;
        // Idle and caught up, then stopped: it still counts as caught up
        // and connected, so it is named, but it cannot take the seat.
        let master = nodes[m].addr;
        wait_for(
            ELECTION_DEADLINE,
            "the target to acknowledge the whole log",
            || {
                let r = repl_of(master)?;
                let end = r.get("durable_offset")?.as_u64()?;
                let replicas = r.get("replicas")?.as_array()?;
                replicas
                    .iter()
                    .any(|x| {
                        x.get("id").and_then(|v| v.as_str()) == Some(&format!("n{target}"))
                            && x.get("durable_offset").and_then(|v| v.as_u64()) == Some(end)
                    })
                    .then_some(())
            },
        );
        crate::common::replication::signal(&nodes[target], Signal::SIGSTOP);
        let asked = Instant::now();
        let answer = cli(master, &["switchover", "--to", &format!("n{target}")]);
        let waited = asked.elapsed();
        nodes[target].sigkill();
        let master_logs = nodes[m].logs();
        assert!(
            master_logs.contains(&format!("resigned in favour of n{target}")),
            "the stopped node was not named: {}{master_logs}",
            String::from_utf8_lossy(&answer.stderr)
        );

        // The others gave it a lease TTL (counted from when each saw the
        // name, after the request left), then elected one of themselves:
        // the answer names that master.
        let (id, _, answered_epoch) = switched(&answer);
        assert_ne!(id, format!("n{target}"));
        assert!(
            answered_epoch > epoch,
            "epoch {answered_epoch} after {epoch}"
        );
        let ttl = Duration::from_millis(crate::common::failover::TTL_MS.parse().expect("ttl"));
        assert!(
            waited >= ttl / 2,
            "a new master within {waited:?}: the named successor was not given its turn"
        );
        let rest: Vec<&Server> = (0..3).filter(|&i| i != target).map(|i| &nodes[i]).collect();
        let (_, new_epoch) = wait_one_master(&rest);
        assert_eq!(new_epoch, answered_epoch);
        assert!(
            rest.iter()
                .any(|n| n.logs().contains("did not take the seat within")),
            "no node said it waited for the named successor"
        );
    }
}

#[cfg(feature = "kubernetes")]
mod kube {
    use super::*;
    use crate::common::failover::KubeApi;
    use crate::failover_kube::wait_one_master;

    #[test]
    fn a_switchover_hands_the_lease_to_the_successor() {
        let api = KubeApi::start();
        let sync = ["--replication-mode", "sync", "--min-acks", "1"];
        let nodes: Vec<Server> = (0..3).map(|i| api.start_node(i, &sync)).collect();
        let all: Vec<(usize, &Server)> = nodes.iter().enumerate().collect();
        let (m, epoch) = wait_one_master(&api, &all);
        wait_for(
            Duration::from_secs(40),
            "every node in the in-sync set",
            || {
                let set = crate::common::replication::repl(nodes[m].addr);
                (set.get("in_sync")?.as_array()?.len() == 3).then_some(())
            },
        );
        let mut c = nodes[m].client();
        let keys: Vec<String> = (0..20).map(|i| format!("k-{i:02}")).collect();
        for key in &keys {
            wait_for(Duration::from_secs(40), "a sync write acknowledged", || {
                c.put(key.as_bytes(), b"v").ok()
            });
        }

        let target = (m + 1) % 3;
        let (id, _, new_epoch) = switched(&cli(
            nodes[(m + 2) % 3].addr,
            &["switchover", "--to", &format!("n{target}")],
        ));
        assert_eq!(id, format!("n{target}"));
        assert!(new_epoch > epoch, "epoch {new_epoch} after {epoch}");
        assert_eq!(wait_one_master(&api, &all), (target, new_epoch));
        assert_eq!(api.holder().as_deref(), Some(id.as_str()));
        let mut c = nodes[target].client();
        for key in &keys {
            assert!(
                c.get(key.as_bytes()).expect("get").is_some(),
                "{key} was acknowledged before the switchover and is missing after it"
            );
        }
    }
}
