//! Who may win an election (docs/REPLICATION.md, "Automatic failover"),
//! with real etcd and real kvstore processes:
//! - sync mode, `--min-acks 1`, two replicas (the R1/R2 case): a write
//!   acknowledged while R2 lagged (stopped) was on R1 only, so R2 is
//!   dropped from the published in-sync set before the OK and may not win
//!   once the master dies (R2 is killed and restarted without the write);
//!   the acknowledged write is on the new master;
//! - a node that cut a tail off its log and has not fetched it again does
//!   not campaign, and says so;
//! - async mode: the most advanced live candidate wins, and what the old
//!   master loses when it rejoins is truncated, logged with its byte count
//!   and counted;
//! - a master whose disk fills keeps its lease, and once the disk has room
//!   again it takes writes in the same epoch (on a real tmpfs, when this
//!   process may mount);
//! - a listed node back on an emptied data directory (same node id, new
//!   directory id) is not elected (`common/dir_identity.rs`).
//!
//! Every wait polls with a deadline; every write loop is bounded.

#![cfg(feature = "etcd")]

use std::net::SocketAddr;

use kvstore::client::BlockingClient;
use kvstore::engine::{Engine, Options};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::common::dir_identity::{self, emptied_replica_is_not_elected};
use crate::common::etcd::EtcdCluster;
use crate::common::{metric, wait_for, Server};
use crate::failover::{
    node_args, options, repl_of, role_of, start_node, wait_one_master, ELECTION_DEADLINE,
};

fn signal(node: &Server, sig: Signal) {
    let pid = Pid::from_raw(i32::try_from(node.pid()).expect("pid"));
    kill(pid, sig).expect("signal");
}

/// The in-sync set the cluster record in etcd lists, and its epoch.
fn published(etcd: &EtcdCluster) -> Option<(Vec<String>, u64)> {
    let bytes = etcd.get("/kvstore/in-sync")?;
    let record: Value = serde_json::from_slice(&bytes).expect("the record is JSON");
    let set = record
        .get("in_sync")?
        .as_array()?
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    Some((set, record.get("epoch")?.as_u64()?))
}

/// A member state as the node published it.
fn member(etcd: &EtcdCluster, id: &str) -> Option<Value> {
    let bytes = etcd.get(&format!("/kvstore/members/{id}"))?;
    serde_json::from_slice(&bytes).ok()
}

fn end_of(addr: SocketAddr) -> u64 {
    repl_of(addr)
        .and_then(|r| r.get("end_offset")?.as_u64())
        .expect("end_offset in stats")
}

fn put(addr: SocketAddr, key: &str) {
    let mut c = BlockingClient::connect(addr.to_string(), options()).expect("connect");
    c.put(key.as_bytes(), b"v")
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
}

fn holds(addr: SocketAddr, key: &str) -> bool {
    let mut c = BlockingClient::connect(addr.to_string(), options()).expect("connect");
    c.get(key.as_bytes()).expect("get").is_some()
}

fn ids(list: &[usize]) -> Vec<String> {
    let mut ids: Vec<String> = list.iter().map(|i| format!("n{i}")).collect();
    ids.sort();
    ids
}

#[test]
fn a_write_only_one_replica_had_survives_the_masters_death() {
    let etcd = EtcdCluster::start(1);
    let sync = [
        "--replication-mode",
        "sync",
        "--min-acks",
        "1",
        "--in-sync-max-lag-ms",
        "500",
        "--sync-timeout-ms",
        "15000",
    ];
    let mut nodes: Vec<Server> = (0..3).map(|i| start_node(&etcd, i, &sync)).collect();
    let (m, epoch) = wait_one_master(&nodes.iter().collect::<Vec<_>>());
    let (r1, r2) = ((m + 1) % 3, (m + 2) % 3);
    wait_for(
        ELECTION_DEADLINE,
        "both replicas in the published in-sync set",
        || (published(&etcd) == Some((ids(&[0, 1, 2]), epoch))).then_some(()),
    );

    // R2 lags (stopped); a write gets its OK from R1 alone, once R2 is out
    // of the published set.
    signal(&nodes[r2], Signal::SIGSTOP);
    put(nodes[m].addr, "only-r1");
    let (set, in_epoch) = published(&etcd).expect("a cluster record");
    assert_eq!(
        (set, in_epoch),
        (ids(&[m, r1]), epoch),
        "the lagging replica must be dropped from the published set before the OK"
    );
    assert!(
        nodes[m].logs().contains("dropped lagging members"),
        "{}",
        nodes[m].logs()
    );

    // The master dies, and so does R2 (what the master had sent it unread
    // in its socket goes with it); R1 is stopped, so R2, restarted without
    // the write, is the only live candidate and must not win.
    signal(&nodes[r1], Signal::SIGSTOP);
    nodes[m].sigkill();
    nodes[r2].sigkill();
    nodes[r2].restart();
    let refused = wait_for(
        ELECTION_DEADLINE,
        "R2 to find the seat vacant and be refused as not in sync (or be elected)",
        || {
            if nodes[r2]
                .logs()
                .contains("not in the published in-sync set")
            {
                return Some(true);
            }
            match role_of(nodes[r2].addr) {
                Some((role, _)) if role == "master" => Some(false),
                _ => None,
            }
        },
    );
    assert!(
        refused,
        "R2, outside the in-sync set, was elected; it holds the acknowledged write: {}",
        holds(nodes[r2].addr, "only-r1")
    );
    assert_ne!(
        role_of(nodes[r2].addr).map(|(role, _)| role),
        Some("master".to_string()),
        "a replica outside the in-sync set was elected"
    );

    // R1 comes back and wins; the acknowledged write is there, and R2
    // follows it.
    signal(&nodes[r1], Signal::SIGCONT);
    let survivors = [&nodes[r1], &nodes[r2]];
    let (new, new_epoch) = wait_one_master(&survivors);
    assert_eq!(new, 0, "R1, the member of the set, must win");
    assert!(new_epoch > epoch, "epoch {new_epoch} after {epoch}");
    assert!(
        holds(nodes[r1].addr, "only-r1"),
        "the acknowledged write is lost"
    );
}

impl dir_identity::Backend for EtcdCluster {
    fn start_node(&self, id: usize, extra: &[&str]) -> Server {
        start_node(self, id, extra)
    }

    fn record(&self) -> Option<Value> {
        serde_json::from_slice(&self.get("/kvstore/in-sync")?).ok()
    }

    fn member(&self, id: usize) -> Option<Value> {
        member(self, &format!("n{id}"))
    }

    fn holder(&self) -> Option<String> {
        let leader: Value = serde_json::from_slice(&self.get("/kvstore/leader")?).ok()?;
        Some(leader.get("node_id")?.as_str()?.to_string())
    }
}

#[test]
fn a_listed_node_back_on_an_emptied_data_directory_is_not_elected() {
    emptied_replica_is_not_elected(&EtcdCluster::start(1));
}

#[test]
fn a_node_that_cut_a_tail_does_not_campaign() {
    // A data directory whose last record is torn: opening it cuts the tail
    // and records the cut, not yet fetched again from any master.
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), Options::default()).expect("open");
    engine.begin_epoch(1).expect("epoch");
    for i in 0..10u32 {
        engine.put(&i.to_le_bytes(), b"value").expect("put");
    }
    engine.close().expect("close");
    crate::recovery::append(&crate::tail::active_segment(dir.path()), crate::tail::TORN);

    let etcd = EtcdCluster::start(1);
    let args = node_args(&etcd, 0, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Server::start_on(dir.path(), &args, false);
    // Alone and the seat vacant, it would win at once; it says why not.
    wait_for(ELECTION_DEADLINE, "the node to refuse to campaign", || {
        node.logs()
            .contains("not campaigning for leadership: this node cut")
            .then_some(())
    });
    let state = wait_for(ELECTION_DEADLINE, "its member state, blocked", || {
        member(&etcd, "n0").filter(|m| m.get("blocked").is_some_and(Value::is_string))
    });
    assert_eq!(state.get("role").and_then(Value::as_str), Some("replica"));
    assert_eq!(
        metric(node.http_addr, "kvstore_engine_campaign_blocked"),
        1.0
    );
    assert_eq!(
        etcd.get("/kvstore/leader"),
        None,
        "nobody may hold the seat"
    );
    assert_eq!(
        role_of(node.addr).map(|(role, _)| role),
        Some("replica".to_string())
    );
    assert_eq!(
        node.logs()
            .matches("not campaigning for leadership")
            .count(),
        1,
        "said once, not every round"
    );
}

#[test]
fn async_the_most_advanced_candidate_wins_and_the_old_masters_loss_is_counted() {
    let etcd = EtcdCluster::start(1);
    let async_mode = ["--replication-mode", "async", "--campaign-grace-ms", "3000"];
    let mut nodes: Vec<Server> = (0..3).map(|i| start_node(&etcd, i, &async_mode)).collect();
    let (m, epoch) = wait_one_master(&nodes.iter().collect::<Vec<_>>());
    let (a, b) = ((m + 1) % 3, (m + 2) % 3);
    let master = nodes[m].addr;

    // B goes down behind; A gets everything the master has, durably, then
    // goes down too; the master takes writes nobody else gets. (Killed,
    // not stopped: a stopped replica still finds in its socket buffer what
    // the master sent it before it died.)
    nodes[b].sigkill();
    for i in 0..20 {
        put(master, &format!("mid-{i}"));
    }
    let end = end_of(master);
    wait_for(
        ELECTION_DEADLINE,
        "A to hold the master's end durably",
        || {
            let r = repl_of(nodes[a].addr)?;
            (r.get("durable_offset")?.as_u64()? == end).then_some(())
        },
    );
    nodes[a].sigkill();
    for i in 0..5 {
        put(master, &format!("late-{i}"));
    }
    let lost = end_of(master) - end;
    assert!(lost > 0);

    // The master dies; A and B come back as candidates with what they had.
    // Both see the seat go vacant at once. B, with a shorter grace, looks
    // at the members sooner (100 ms after, A 250 ms), so it finds A still
    // a candidate and ahead of it, and must defer; with equal graces B
    // might look only after A had won, and never have to. B's grace
    // (500 ms) still leaves A time to take the seat before B would
    // campaign itself.
    nodes[b].set_args(
        &node_args(
            &etcd,
            b,
            &["--replication-mode", "async", "--campaign-grace-ms", "500"],
        )
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    nodes[m].sigkill();
    nodes[a].restart();
    nodes[b].restart();
    let (new, new_epoch) = wait_one_master(&[&nodes[a], &nodes[b]]);
    assert!(new_epoch > epoch);
    assert_eq!(
        new,
        0,
        "A, the most advanced candidate, must win; B's log:\n{}",
        nodes[b].logs()
    );
    assert!(
        nodes[b]
            .logs()
            .contains("a more advanced candidate should take the seat"),
        "B did not defer to A:\n{}\nA's log:\n{}",
        nodes[b].logs(),
        nodes[a].logs()
    );
    for i in 0..20 {
        assert!(holds(nodes[a].addr, &format!("mid-{i}")), "mid-{i} lost");
    }

    // The old master rejoins: its late writes are cut, logged and counted.
    nodes[m].restart();
    let new_master = nodes[a].addr.to_string();
    wait_for(ELECTION_DEADLINE, "the old master to follow A", || {
        let r = repl_of(nodes[m].addr)?;
        (r.get("master")?.as_str()? == new_master && r.get("link_up")?.as_bool()?).then_some(())
    });
    let r = repl_of(nodes[m].addr).expect("stats");
    assert_eq!(
        r.get("truncations").and_then(Value::as_u64),
        Some(1),
        "{r}\nold master's log:\n{}\nA's log:\n{}",
        nodes[m].logs(),
        nodes[a].logs()
    );
    assert_eq!(r.get("truncated_bytes").and_then(Value::as_u64), Some(lost));
    assert_eq!(
        metric(
            nodes[m].http_addr,
            "kvstore_replication_truncated_bytes_total"
        ),
        lost as f64
    );
    assert!(
        nodes[m]
            .logs()
            .contains(&format!("truncating {lost} bytes the master does not have")),
        "{}",
        nodes[m].logs()
    );
    assert!(!holds(nodes[a].addr, "late-0"));
}

#[test]
fn a_poisoned_master_that_recovers_within_its_term_takes_writes_again() {
    use crate::common::host::Tmpfs;
    use crate::resume::{fill, key, value};
    let Some(fs) = Tmpfs::mount("1m") else {
        return;
    };
    let etcd = EtcdCluster::start(1);
    let args = node_args(&etcd, 0, &["--segment-max-bytes", "131072"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Server::start_on(&fs.path().join("data"), &args, false);
    let (_, epoch) = wait_one_master(&[&node]);
    let mut client = BlockingClient::connect(node.addr.to_string(), options()).expect("connect");
    let acked = fill(&mut client, 0);
    wait_for(
        ELECTION_DEADLINE,
        "the master to see its engine poisoned",
        || {
            node.logs()
                // Alone: no member could take over, so it keeps its term.
                .contains("no other member can take over: keeping the lease")
                .then_some(())
        },
    );

    fs.resize("16m");
    wait_for(ELECTION_DEADLINE, "writes to resume", || {
        client.put(b"probe", b"after").ok()
    });
    wait_for(ELECTION_DEADLINE, "the master to check its term", || {
        node.logs()
            .contains("still holds its lease in the same epoch")
            .then_some(())
    });
    assert_eq!(
        role_of(node.addr),
        Some(("master".to_string(), epoch)),
        "the same term goes on"
    );
    for i in 0..acked {
        assert_eq!(
            client.get(&key(i)).expect("get").as_deref(),
            Some(&value(i)[..]),
            "key {i}"
        );
    }
}
