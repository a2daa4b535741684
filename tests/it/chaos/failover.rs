//! Chaos for automatic failover (`--coordinator etcd|kubernetes`,
//! src/node/ha/): real etcd or the Kubernetes API stand-in
//! (common/kube_standin.rs), three real `kvstore serve` nodes with a 2 s
//! lease, writers that find the master by themselves, and faults round
//! after round:
//! - SIGKILL of the master, again and again, each time restarted at once
//!   on its directory and port (as a supervisor would) so it rejoins: sync
//!   mode with `--min-acks 2` (every replica) loses nothing; async mode
//!   loses what the killed master had not sent, and the test counts it.
//!   Against the stand-in, SIGKILL and SIGSTOP (held until the survivors
//!   elect a new master, then SIGCONT: the old master must step down and
//!   rejoin) take turns, in sync mode; the cluster setup is the same for
//!   both backends (`common::failover::Coord`);
//! - a partition (a network namespace) that cuts the master off from etcd
//!   and from the replicas but not from a client beside it: no OK it sends
//!   after the new master is elected, and in sync mode every OK it sent is
//!   on the new master;
//! - etcd member loss: one member of three that is not etcd's leader (no
//!   kvstore election, writes go on), then a second one (no quorum: the
//!   master's fence runs out, writes are refused and none acknowledged),
//!   then both back (service returns, nothing acknowledged lost).
//!
//! Each test prints one line (docs/RELIABILITY.md, "Latest figures"):
//! `chaos: failover faults=N elections=N acked=N lost=N unwritable_ms p50=N p99=N max=N (test)`.
//! `elections` is how far the epoch grew (the coordinator issues one epoch
//! per won campaign, so that is the number of terms begun); `lost` counts
//! acknowledged writes missing on the final master; an unwritable window
//! runs from the last write acknowledged before a fault to the first one
//! after it, as the writers saw them.
//!
//! Short by default (one or two rounds each); `CHAOS_MINUTES` repeats the
//! rounds (faults.rs, [`Budget`]). Every wait polls with a deadline; every
//! writer is bounded in count and time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use kvstore::client::{BlockingClient, ClientOptions, Error};

use nix::sys::signal::Signal;

use super::faults::{sleep_random, Budget, KillOnDrop};
use super::load::count_lost;
use super::netns::NetNs;
use super::proxy::Proxy;
use crate::common::etcd::EtcdCluster;
use crate::common::failover::{node_args, one_master, role_of, start_node, ttl, Coord};
use crate::common::{self, wait_for, Server};
use crate::failover::ELECTION_DEADLINE;

const READ_BACK: Duration = Duration::from_secs(60);
/// Bound on each writer's operations (besides its time limit).
const MAX_WRITES: u64 = 1_000_000;
/// How long service may take to return after a fault: an election, a
/// restart and a rejoin on a loaded 2-core machine.
const RETURN_DEADLINE: Duration = Duration::from_secs(60);
const SYNC: [&str; 6] = [
    "--replication-mode",
    "sync",
    "--min-acks",
    "2",
    "--sync-timeout-ms",
    "1000",
];
const ASYNC: [&str; 2] = ["--replication-mode", "async"];

fn options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(3),
        client_name: "chaos-failover".into(),
        // The writers note which node answered OK.
        follow_redirects: false,
        ..ClientOptions::default()
    }
}

/// The value written under `key` (keys are never overwritten).
fn value_of(key: &[u8]) -> Vec<u8> {
    let mut v = key.to_vec();
    v.resize(64.max(key.len()), b'.');
    v
}

/// One acknowledged write: which node answered OK, when the request was
/// sent and when the OK arrived.
#[derive(Clone)]
struct Ack {
    key: Vec<u8>,
    by: SocketAddr,
    sent: Instant,
    at: Instant,
}

fn as_map<'a>(acks: impl IntoIterator<Item = &'a Ack>) -> BTreeMap<Vec<u8>, Vec<u8>> {
    acks.into_iter()
        .map(|a| (a.key.clone(), value_of(&a.key)))
        .collect()
}

/// What the writers share: where the nodes are, what was acknowledged,
/// and every error answer (time, text).
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    addrs: Mutex<Vec<SocketAddr>>,
    acks: Mutex<Vec<Ack>>,
    refusals: Mutex<Vec<(Instant, String)>>,
}

/// Writer threads putting unique keys to whichever node is master: after
/// a REDIRECT to the node it names, after any other failure to the next
/// node of the list.
struct Writers {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Writers {
    fn start(addrs: &[SocketAddr], n: usize, tag: &str, limit: Duration) -> Writers {
        let shared = Arc::new(Shared::default());
        *shared.addrs.lock().unwrap() = addrs.to_vec();
        let threads = (0..n)
            .map(|w| {
                let shared = Arc::clone(&shared);
                let tag = format!("{tag}-w{w}");
                thread::spawn(move || write_loop(w, &tag, &shared, limit))
            })
            .collect();
        Writers { shared, threads }
    }

    fn set_addrs(&self, addrs: &[SocketAddr]) {
        *self.shared.addrs.lock().unwrap() = addrs.to_vec();
    }

    /// How many writes were acknowledged after `t`.
    fn acked_after(&self, t: Instant) -> usize {
        let acks = self.shared.acks.lock().unwrap();
        acks.iter().filter(|a| a.at > t).count()
    }

    /// Waits until `n` writes were acknowledged after `t`.
    fn wait_acked_after(&self, t: Instant, n: usize, what: &str) {
        wait_for(RETURN_DEADLINE, what, || {
            (self.acked_after(t) >= n).then_some(())
        });
    }

    /// The unwritable window of a fault at `fault`, called once service
    /// is back: the longest gap between consecutive acknowledged writes
    /// from the last one before the fault to the first one after now
    /// (waited for). Writes in flight at the fault may still be
    /// acknowledged after it; the gap comes after them.
    fn window(&self, fault: Instant) -> Duration {
        let back = Instant::now();
        let first_after = wait_for(
            RETURN_DEADLINE,
            "a write acknowledged once service is back",
            || {
                let acks = self.shared.acks.lock().unwrap();
                acks.iter().filter(|a| a.at > back).map(|a| a.at).min()
            },
        );
        let acks = self.shared.acks.lock().unwrap();
        let last_before = acks
            .iter()
            .filter(|a| a.at <= fault)
            .map(|a| a.at)
            .max()
            .unwrap_or(fault);
        let mut times: Vec<Instant> = acks
            .iter()
            .map(|a| a.at)
            .filter(|at| (last_before..=first_after).contains(at))
            .collect();
        times.sort_unstable();
        times
            .windows(2)
            .map(|pair| pair[1] - pair[0])
            .max()
            .unwrap_or(first_after - last_before)
    }

    /// Error answers (refusals) received after `t`.
    fn refusals_after(&self, t: Instant) -> Vec<String> {
        let refusals = self.shared.refusals.lock().unwrap();
        refusals
            .iter()
            .filter(|(at, _)| *at > t)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// Stops the writers; every acknowledged write.
    fn stop(self) -> Vec<Ack> {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("writer thread panicked");
        }
        let acks = self.shared.acks.lock().unwrap();
        acks.clone()
    }
}

fn write_loop(w: usize, tag: &str, shared: &Shared, limit: Duration) {
    let started = Instant::now();
    let mut client: Option<(BlockingClient, SocketAddr)> = None;
    let mut redirected: Option<SocketAddr> = None;
    let mut turn = w;
    for n in 0..MAX_WRITES {
        if shared.stop.load(Ordering::Relaxed) || started.elapsed() > limit {
            return;
        }
        let Some((c, addr)) = client.as_mut() else {
            let addr = redirected.take().unwrap_or_else(|| {
                let addrs = shared.addrs.lock().unwrap();
                turn += 1;
                addrs[turn % addrs.len()]
            });
            match BlockingClient::connect(addr.to_string(), options()) {
                Ok(c) => client = Some((c, addr)),
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
            continue;
        };
        let key = format!("{tag}-{n}").into_bytes();
        let sent = Instant::now();
        match c.put(&key, &value_of(&key)) {
            Ok(()) => {
                let ack = Ack {
                    key,
                    by: *addr,
                    sent,
                    at: Instant::now(),
                };
                shared.acks.lock().unwrap().push(ack);
            }
            Err(e) => {
                match &e {
                    Error::Redirected { master, .. } => redirected = master.parse().ok(),
                    Error::Server { .. } => {
                        let mut refusals = shared.refusals.lock().unwrap();
                        refusals.push((Instant::now(), e.to_string()));
                    }
                    _ => {}
                }
                client = None;
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The line each test prints, and what it counted.
#[derive(Default)]
struct Report {
    faults: u64,
    elections: u64,
    acked: u64,
    lost: u64,
    windows: Vec<Duration>,
}

impl Report {
    fn print(&self, name: &str) {
        let mut ms: Vec<u128> = self.windows.iter().map(Duration::as_millis).collect();
        ms.sort_unstable();
        // Nearest rank.
        let pct = |p: f64| {
            let rank = ((p * ms.len() as f64).ceil() as usize).max(1);
            ms.get(rank - 1).copied().unwrap_or(0)
        };
        let line = format!(
            "chaos: failover faults={} elections={} acked={} lost={} unwritable_ms p50={} p99={} max={} ({name})",
            self.faults,
            self.elections,
            self.acked,
            self.lost,
            pct(0.5),
            pct(0.99),
            ms.last().copied().unwrap_or(0),
        );
        println!("{line}");
        eprintln!("{line}");
    }
}

fn addrs_of(nodes: &[Server]) -> Vec<SocketAddr> {
    nodes.iter().map(|n| n.addr).collect()
}

/// Waits for a term above `epoch` that every node of `addrs` follows.
fn wait_new_term(addrs: &[SocketAddr], epoch: u64, what: &str) -> (usize, u64) {
    wait_term(addrs, epoch + 1, what)
}

/// Waits for a term of epoch `at_least` or later that every node of
/// `addrs` follows.
fn wait_term(addrs: &[SocketAddr], at_least: u64, what: &str) -> (usize, u64) {
    wait_for(RETURN_DEADLINE, what, || {
        one_master(addrs).filter(|&(_, e)| e >= at_least)
    })
}

/// What a run of repeated faults leaves for the checks.
struct Kills {
    report: Report,
    acks: Vec<Ack>,
    master: SocketAddr,
    last_fault: Instant,
    _nodes: Vec<Server>,
    _coord: Coord,
}

/// What happens to the master in one round.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGKILL, then a restart on its directory and port.
    Kill,
    /// SIGSTOP until the survivors follow a new master, then SIGCONT.
    Stop,
}

/// Three nodes in `mode` under `coord` and two writers; the master is hit
/// by `faults` in turn, round after round, each round ending when a new
/// term is followed by every node and a write was acknowledged again.
fn fault_the_master_again_and_again(
    coord: Coord,
    mode: &[&str],
    tag: &str,
    faults: &[Fault],
) -> Kills {
    let budget = Budget::new(2);
    let mut nodes: Vec<Server> = (0..3).map(|i| coord.start_node(i, mode)).collect();
    let addrs = addrs_of(&nodes);
    let (mut m, first_epoch) = wait_new_term(&addrs, 0, "the first master");
    let mut epoch = first_epoch;
    let writers = Writers::start(&addrs, 2, tag, budget.limit());
    writers.wait_acked_after(Instant::now(), 20, "20 writes before the first fault");
    let mut report = Report::default();
    let mut rng = rand::thread_rng();
    let mut last_fault = Instant::now();
    let mut kills = 0u64;
    while budget.another_round() {
        sleep_random(&mut rng, 200, 1000);
        let fault = faults[usize::try_from(report.faults).unwrap_or(0) % faults.len()];
        let survivors: Vec<SocketAddr> = (0..3).filter(|&i| i != m).map(|i| addrs[i]).collect();
        last_fault = Instant::now();
        report.faults += 1;
        let at_least = match fault {
            Fault::Kill => {
                nodes[m].sigkill();
                kills += 1;
                if kills.is_multiple_of(2) {
                    // Back only once another node leads: whatever it had
                    // not sent is not on the new master.
                    wait_new_term(&survivors, epoch, "a new term among the survivors");
                }
                // Otherwise back at once, as a supervisor restarts a
                // crashed process: a candidate again, it waits out its old
                // lease like the others and may win with the longest log.
                nodes[m].restart_same_port();
                epoch + 1
            }
            Fault::Stop => {
                // Stopped past its lease: it must not acknowledge anything
                // once it runs again, and must step down and follow.
                super::signal(&nodes[m], Signal::SIGSTOP);
                let (_, elected) =
                    wait_new_term(&survivors, epoch, "a new term while the master is stopped");
                super::signal(&nodes[m], Signal::SIGCONT);
                elected
            }
        };
        (m, epoch) = wait_term(&addrs, at_least, "every node following a new term");
        report.windows.push(writers.window(last_fault));
    }
    writers.wait_acked_after(Instant::now(), 10, "writes in the last term");
    let acks = writers.stop();
    report.elections = epoch - first_epoch;
    report.acked = acks.len() as u64;
    let master = nodes[m].addr;
    report.lost = count_lost(master, &as_map(&acks), READ_BACK);
    Kills {
        report,
        acks,
        master,
        last_fault,
        _nodes: nodes,
        _coord: coord,
    }
}

/// A sync-mode run: every fault made an election and nothing that was
/// acknowledged is missing.
fn assert_sync_run_lost_nothing(run: &Kills) {
    assert!(run.report.acked > 0, "no write was acknowledged");
    assert!(
        run.report.elections >= run.report.faults,
        "{} faults but {} elections",
        run.report.faults,
        run.report.elections
    );
    assert_eq!(
        run.report.lost, 0,
        "acknowledged writes are missing on the final master (sync mode)"
    );
}

#[test]
fn repeated_sigkill_of_the_master_loses_nothing_in_sync_mode() {
    let run =
        fault_the_master_again_and_again(Coord::etcd(1), &SYNC, "fo-kill-sync", &[Fault::Kill]);
    run.report.print("sigkill, sync --min-acks 2");
    assert_sync_run_lost_nothing(&run);
}

/// The same rounds with the Kubernetes Lease backend against the API
/// stand-in, SIGKILL and SIGSTOP of the master taking turns.
#[cfg(feature = "kubernetes")]
#[test]
fn repeated_sigkill_and_sigstop_of_the_master_under_the_lease_api_lose_nothing() {
    let run = fault_the_master_again_and_again(
        Coord::kube(),
        &SYNC,
        "fo-kube-sync",
        &[Fault::Kill, Fault::Stop],
    );
    run.report
        .print("sigkill+sigstop, sync --min-acks 2, kubernetes stand-in");
    assert_sync_run_lost_nothing(&run);
}

/// Async mode may lose what a killed master had not yet sent: the count is
/// printed, never hidden. What must hold: every write the final master
/// acknowledged after the last kill is on it.
#[test]
fn repeated_sigkill_of_the_master_in_async_mode_counts_what_is_lost() {
    let run =
        fault_the_master_again_and_again(Coord::etcd(1), &ASYNC, "fo-kill-async", &[Fault::Kill]);
    run.report.print("sigkill, async");
    assert!(run.report.acked > 0, "no write was acknowledged");
    let last_term = run
        .acks
        .iter()
        .filter(|a| a.by == run.master && a.sent > run.last_fault);
    let last_term = as_map(last_term);
    assert!(!last_term.is_empty(), "no write in the last term");
    assert_eq!(
        count_lost(run.master, &last_term, READ_BACK),
        0,
        "writes the final master acknowledged in its own term are missing on it"
    );
}

/// What the client beside the cut-off master saw.
#[derive(Default)]
struct Beside {
    acks: Vec<Ack>,
    /// Send times of every request.
    sent: Vec<Instant>,
}

/// One connection from inside the namespace to the node there, writing
/// until `stop`; reconnects (to the same node) if the connection breaks.
fn write_beside(ns: &NetNs, addr: SocketAddr, tag: &str, stop: &AtomicBool, seen: &Mutex<Beside>) {
    ns.enter();
    let started = Instant::now();
    let mut client = None;
    for n in 0..MAX_WRITES {
        if stop.load(Ordering::Relaxed) || started.elapsed() > RETURN_DEADLINE * 3 {
            return;
        }
        let Some(c) = client.as_mut() else {
            client = BlockingClient::connect(addr.to_string(), options()).ok();
            if client.is_none() {
                thread::sleep(Duration::from_millis(20));
            }
            continue;
        };
        let key = format!("{tag}-beside-{n}").into_bytes();
        let sent = Instant::now();
        let answer = c.put(&key, &value_of(&key));
        let mut seen = seen.lock().unwrap();
        seen.sent.push(sent);
        match answer {
            Ok(()) => seen.acks.push(Ack {
                key,
                by: addr,
                sent,
                at: Instant::now(),
            }),
            // An error answer leaves the connection usable.
            Err(Error::Server { .. } | Error::Redirected { .. }) => {
                drop(seen);
                thread::sleep(Duration::from_millis(20));
            }
            Err(_) => {
                drop(seen);
                client = None;
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// One partition round on a fresh cluster: node 0 lives in the namespace
/// (reaching etcd through a forwarder on the link) and is elected first;
/// nodes 1 and 2 follow it over the link. The link goes down; a master
/// is elected on the other side while the client beside node 0 keeps
/// writing to it. Node 0 then comes back on the others' side (restarted on
/// its directory outside the namespace: inside, it could not reach the
/// loopback addresses the others advertise) and rejoins. Adds to `report`;
/// returns the OKs node 0 sent for requests sent after the new master
/// was seen.
fn partition_round(ns: &NetNs, mode: &[&str], tag: &str, report: &mut Report) -> u64 {
    let etcd = EtcdCluster::start(1);
    let etcd_link = Proxy::start_on(&format!("{}:0", ns.root_ip), etcd.members[0].client_addr());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = node_args(&etcd, 0, mode);
    let endpoints = 1 + args
        .iter()
        .position(|a| a == "--etcd-endpoints")
        .expect("node_args sets --etcd-endpoints");
    args[endpoints] = format!("http://{}", etcd_link.addr);
    let (child, ports) = ns.spawn_serve(common::kvstore_bin(), dir.path(), &args);
    let cut_off = KillOnDrop(child);
    let (n0, _) = wait_for(Duration::from_secs(30), "the port file of node 0", || {
        common::read_port_file(&ports)
    });
    wait_for(
        ELECTION_DEADLINE,
        "node 0 (in the namespace) elected",
        || matches!(role_of(n0), Some((role, _)) if role == "master").then_some(()),
    );
    let others: Vec<Server> = (1..3).map(|i| start_node(&etcd, i, mode)).collect();
    let all = [n0, others[0].addr, others[1].addr];
    let (m, epoch) = wait_new_term(&all, 0, "nodes 1 and 2 following node 0");
    assert_eq!(m, 0, "node 0 was elected first, yet node {m} leads");
    let writers = Writers::start(&all, 2, tag, RETURN_DEADLINE * 3);
    let (stop, beside) = (AtomicBool::new(false), Mutex::new(Beside::default()));
    let (cut, elected_seen) = thread::scope(|s| {
        s.spawn(|| write_beside(ns, n0, tag, &stop, &beside));
        wait_for(
            RETURN_DEADLINE,
            "20 OKs to the client beside node 0",
            || (beside.lock().unwrap().acks.len() >= 20).then_some(()),
        );
        let cut = Instant::now();
        ns.partition(true);
        report.faults += 1;
        let new_term = |n: &Server| matches!(role_of(n.addr), Some((role, e)) if role == "master" && e > epoch);
        wait_for(RETURN_DEADLINE, "a master elected on the far side", || {
            others.iter().any(new_term).then_some(())
        });
        let elected_seen = Instant::now();
        // The client keeps at it for a lease period more: node 0's term
        // is over, it may acknowledge nothing now.
        wait_for(
            RETURN_DEADLINE,
            "10 requests to node 0 after the election",
            || {
                let seen = beside.lock().unwrap();
                let after = seen.sent.iter().filter(|t| **t > elected_seen).count();
                (after >= 10 && elected_seen.elapsed() > ttl()).then_some(())
            },
        );
        stop.store(true, Ordering::Relaxed);
        (cut, elected_seen)
    });
    drop(cut_off);
    ns.partition(false);
    let node0_args = node_args(&etcd, 0, mode);
    let node0_args: Vec<&str> = node0_args.iter().map(String::as_str).collect();
    let node0 = Server::start_on(&dir.path().join("data"), &node0_args, false);
    let all = [node0.addr, others[0].addr, others[1].addr];
    writers.set_addrs(&all);
    let (m, final_epoch) = wait_new_term(&all, epoch, "node 0 rejoined, following the new master");
    report.windows.push(writers.window(cut));
    writers.wait_acked_after(Instant::now(), 10, "writes after node 0 rejoined");
    let mut acks = writers.stop();
    let beside = beside.into_inner().unwrap();
    let stale = beside.acks.iter().filter(|a| a.sent > elected_seen).count() as u64;
    acks.extend(beside.acks);
    report.elections += final_epoch - epoch;
    report.acked += acks.len() as u64;
    report.lost += count_lost(all[m], &as_map(&acks), READ_BACK);
    stale
}

/// Runs partition rounds in `mode`; the report and the stale OKs.
fn partitions(mode: &[&str], tag: &str) -> Option<(Report, u64)> {
    let ns = NetNs::create_or_skip()?;
    let budget = Budget::new(1);
    let mut report = Report::default();
    let mut stale = 0;
    while budget.another_round() {
        stale += partition_round(&ns, mode, tag, &mut report);
    }
    Some((report, stale))
}

#[test]
fn a_master_cut_off_from_etcd_and_replicas_sends_no_ok_the_new_master_lacks() {
    let Some((report, stale)) = partitions(&SYNC, "fo-cut-sync") else {
        return;
    };
    report.print("netns partition, sync --min-acks 2");
    assert_eq!(
        stale, 0,
        "the cut-off master acknowledged writes after the new master was elected"
    );
    assert_eq!(
        report.lost, 0,
        "acknowledged writes are missing on the new master (sync mode)"
    );
}

/// Async mode: nothing holds a write back but the fence, so the cut-off
/// master acknowledges writes until its deadline (those are lost, and
/// counted), and none once another master can have been elected.
#[test]
fn a_master_cut_off_from_etcd_fences_itself_in_async_mode() {
    let Some((report, stale)) = partitions(&ASYNC, "fo-cut-async") else {
        return;
    };
    report.print("netns partition, async");
    assert_eq!(
        stale, 0,
        "the cut-off master acknowledged writes after the new master was elected"
    );
}

/// One round on a fresh 3-member etcd cluster under three sync nodes.
fn etcd_loss_round(report: &mut Report) {
    let mut etcd = EtcdCluster::start(3);
    let nodes: Vec<Server> = (0..3).map(|i| start_node(&etcd, i, &SYNC)).collect();
    let addrs = addrs_of(&nodes);
    let (m, epoch) = wait_new_term(&addrs, 0, "the first master");
    let writers = Writers::start(&addrs, 2, "fo-etcd", RETURN_DEADLINE * 4);
    writers.wait_acked_after(Instant::now(), 20, "20 writes before etcd loses a member");

    // One member that is not etcd's leader: nothing changes for kvstore.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let leader = runtime.block_on(etcd.leader());
    let follower = (leader + 1) % 3;
    etcd.kill(follower);
    report.faults += 1;
    let one_lost = Instant::now();
    wait_for(
        RETURN_DEADLINE,
        "writes for three lease periods with one etcd member down",
        || (one_lost.elapsed() > 3 * ttl() && writers.acked_after(one_lost) >= 20).then_some(()),
    );
    assert_eq!(
        role_of(addrs[m]),
        Some(("master".to_string(), epoch)),
        "losing one etcd member of three (not the leader) ended the kvstore term: epochs only grow, so an election happened"
    );

    // A second one: no quorum, no renewal; the master's fence runs out.
    let quorum_lost = Instant::now();
    etcd.kill(leader);
    report.faults += 1;
    // Two lease periods under load without etcd: whatever was sent a
    // lease period after the quorum went cannot have been acknowledged.
    wait_for(RETURN_DEADLINE, "two lease periods without etcd", || {
        (quorum_lost.elapsed() > 2 * ttl()).then_some(())
    });
    let late = quorum_lost + ttl();
    let acked_without_etcd = {
        let acks = writers.shared.acks.lock().unwrap();
        acks.iter().filter(|a| a.sent > late).count()
    };
    assert_eq!(
        acked_without_etcd, 0,
        "writes sent a lease period after etcd lost its quorum were acknowledged"
    );
    // The master stepped down, and writes are refused (answered, not left
    // hanging).
    assert!(
        matches!(role_of(addrs[m]), Some((role, _)) if role != "master"),
        "the master is still master two lease periods after etcd lost its quorum"
    );
    wait_for(RETURN_DEADLINE, "a write refused without etcd", || {
        (!writers.refusals_after(late).is_empty()).then_some(())
    });

    // etcd comes back: a term begins again and writes resume.
    etcd.restart(leader);
    etcd.restart(follower);
    let (m, final_epoch) = wait_new_term(&addrs, epoch, "a new term once etcd is back");
    report.windows.push(writers.window(quorum_lost));
    writers.wait_acked_after(Instant::now(), 10, "writes after etcd came back");
    let acks = writers.stop();
    report.elections += final_epoch - epoch;
    report.acked += acks.len() as u64;
    report.lost += count_lost(addrs[m], &as_map(&acks), READ_BACK);
}

#[test]
fn etcd_losing_one_member_changes_nothing_and_losing_two_fences_the_master() {
    let budget = Budget::new(1);
    let mut report = Report::default();
    while budget.another_round() {
        etcd_loss_round(&mut report);
    }
    report.print("etcd member loss, sync --min-acks 2");
    assert_eq!(report.lost, 0, "acknowledged writes were lost");
}
