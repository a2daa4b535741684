//! The emptied-data-directory scenario (docs/FAILOVER.md, "Data-directory
//! identity"; the chaos finding in docs/RELIABILITY.md), written once and
//! run against each coordinator backend: `failover_rules.rs` (etcd) and
//! `failover_kube.rs` (the Kubernetes API stand-in).
//!
//! Sync mode, `--min-acks 1`, two nodes: writes are acknowledged by both;
//! the replica loses its disk (killed, its data directory emptied) and
//! comes back with the same node id while the master is stopped, then the
//! master dies. The node on the emptied directory is still listed in the
//! in-sync set by node id; it must not be elected (it holds none of the
//! acknowledged writes): no master until the old master returns, which
//! wins with every acknowledged write, reseeds the emptied node and lists
//! it again with its new directory.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use kvstore::client::{BlockingClient, ClientOptions};
use nix::sys::signal::Signal;
use serde_json::Value;

use super::replication::signal;
use super::{wait_for, Server};

/// An election on a loaded 2-core machine: the TTL, the watch or poll, the
/// campaign.
const ELECTION_DEADLINE: Duration = Duration::from_secs(40);
/// Acknowledged writes before the disk is lost.
const WRITES: usize = 20;

/// A coordinator backend as the scenario sees it.
pub trait Backend {
    /// Starts node `n<id>` with `extra` flags (and a short lease).
    fn start_node(&self, id: usize, extra: &[&str]) -> Server;
    /// The cluster record (`{"epoch","in_sync","dirs"}`) as stored.
    fn record(&self) -> Option<Value>;
    /// Node `n<id>`'s published member state, as stored.
    fn member(&self, id: usize) -> Option<Value>;
    /// The node id the coordinator shows holding the seat, live or not
    /// (`None`: nobody).
    fn holder(&self) -> Option<String>;
}

fn options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(20),
        client_name: "dir-identity-test".into(),
        follow_redirects: false,
        ..ClientOptions::default()
    }
}

fn role_of(addr: SocketAddr) -> Option<String> {
    let mut c = BlockingClient::connect(addr.to_string(), options()).ok()?;
    let stats = c.stats().ok()?;
    Some(stats.get("replication")?.get("role")?.as_str()?.to_string())
}

/// How many of `keys` `addr` holds (0 when it does not answer).
fn held(addr: SocketAddr, keys: &[String]) -> usize {
    let Ok(mut c) = BlockingClient::connect(addr.to_string(), options()) else {
        return 0;
    };
    keys.iter()
        .filter(|k| matches!(c.get(k.as_bytes()), Ok(Some(_))))
        .count()
}

/// The one node of `nodes` that says it is master, and the coordinator
/// names.
fn wait_master(backend: &dyn Backend, nodes: &[Server]) -> usize {
    wait_for(
        ELECTION_DEADLINE,
        "one master, named by the coordinator",
        || {
            let masters: Vec<usize> = (0..nodes.len())
                .filter(|&i| role_of(nodes[i].addr).as_deref() == Some("master"))
                .collect();
            let [m] = masters[..] else {
                return None;
            };
            (backend.holder()? == format!("n{m}")).then_some(m)
        },
    )
}

/// The directory id the cluster record lists for `n<id>`.
fn listed_dir(backend: &dyn Backend, id: usize) -> Option<String> {
    let record = backend.record()?;
    Some(
        record
            .get("dirs")?
            .get(format!("n{id}"))?
            .as_str()?
            .to_string(),
    )
}

/// The directory id in `dir/DIR_ID`, as the coordinator stores it.
pub fn dir_id(dir: &Path) -> String {
    kvstore::engine::DirId::load(dir)
        .expect("read DIR_ID")
        .expect("the data directory has a DIR_ID")
        .to_string()
}

/// Removes everything in `dir`, as a lost disk replaced by an empty one.
fn empty(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("list the data directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("remove");
        } else {
            std::fs::remove_file(&path).expect("remove");
        }
    }
}

/// Runs the scenario of the module header against `backend`.
pub fn emptied_replica_is_not_elected(backend: &dyn Backend) {
    let sync = [
        "--replication-mode",
        "sync",
        "--min-acks",
        "1",
        "--sync-timeout-ms",
        "15000",
    ];
    let mut nodes: Vec<Server> = (0..2).map(|i| backend.start_node(i, &sync)).collect();
    let m = wait_master(backend, &nodes);
    let r = 1 - m;
    let old_dir = dir_id(&nodes[r].data_dir());
    wait_for(
        ELECTION_DEADLINE,
        "the replica listed in the in-sync set with its directory",
        || (listed_dir(backend, r).as_deref() == Some(old_dir.as_str())).then_some(()),
    );
    assert_eq!(
        listed_dir(backend, m),
        Some(dir_id(&nodes[m].data_dir())),
        "the master lists itself with its own directory"
    );
    // The master counts the replica for its writes once it has seen
    // the record it published stored, a moment after the record is read
    // here.
    wait_for(ELECTION_DEADLINE, "the master counting the replica", || {
        let members = super::metric(nodes[m].http_addr, "kvstore_replication_in_sync_members");
        (members == 2.0).then_some(())
    });
    let keys: Vec<String> = (0..WRITES).map(|i| format!("acked-{i:02}")).collect();
    let mut c = BlockingClient::connect(nodes[m].addr.to_string(), options()).expect("connect");
    for k in &keys {
        c.put(k.as_bytes(), b"v")
            .unwrap_or_else(|e| panic!("sync write {k}: {e}"));
    }
    drop(c);

    // The replica loses its disk and comes back with the same node id
    // while the master is stopped (so it cannot be reseeded); then the
    // master dies.
    nodes[r].sigkill();
    empty(&nodes[r].data_dir());
    signal(&nodes[m], Signal::SIGSTOP);
    nodes[r].restart();
    nodes[m].sigkill();

    let refused = wait_for(
        ELECTION_DEADLINE,
        "the node on the emptied directory to be refused (or elected)",
        || {
            if nodes[r].logs().contains("runs on data directory") {
                return Some(true);
            }
            (role_of(nodes[r].addr).as_deref() == Some("master")).then_some(false)
        },
    );
    assert!(
        refused,
        "the node on the emptied directory was elected; it holds {} of the {WRITES} acknowledged writes",
        held(nodes[r].addr, &keys)
    );
    let new_dir = dir_id(&nodes[r].data_dir());
    assert_ne!(new_dir, old_dir, "an emptied directory gets a new id");
    let state = wait_for(ELECTION_DEADLINE, "its member state, blocked", || {
        backend
            .member(r)
            .filter(|s| s.get("blocked").is_some_and(Value::is_string))
    });
    assert!(
        state["blocked"]
            .as_str()
            .is_some_and(|b| b.contains(&new_dir)),
        "{state}"
    );
    assert_ne!(
        role_of(nodes[r].addr).as_deref(),
        Some("master"),
        "the node on the emptied directory was elected"
    );
    assert_eq!(
        nodes[r]
            .logs()
            .matches("not campaigning for leadership")
            .count(),
        1,
        "said once, not every round:\n{}",
        nodes[r].logs()
    );

    // The old master returns: it wins with every acknowledged write, and
    // the emptied node follows it as a new replica, is reseeded and listed
    // again with its new directory.
    nodes[m].restart();
    assert_eq!(wait_master(backend, &nodes), m, "the listed directory wins");
    assert_eq!(
        held(nodes[m].addr, &keys),
        WRITES,
        "acknowledged writes lost"
    );
    wait_for(
        ELECTION_DEADLINE,
        "the emptied node listed again with its new directory",
        || (listed_dir(backend, r).as_deref() == Some(new_dir.as_str())).then_some(()),
    );
    // The master logs the replacement once the coordinator answered its
    // CAS, which can be after the record is visible there.
    wait_for(
        ELECTION_DEADLINE,
        "the master to log the replacement",
        || {
            nodes[m]
                .logs()
                .contains("nodes back on another data directory are listed with it now")
                .then_some(())
        },
    );
    assert_eq!(held(nodes[r].addr, &keys), WRITES, "the reseeded replica");
    wait_for(
        ELECTION_DEADLINE,
        "its member state, no longer blocked",
        || {
            backend
                .member(r)
                .filter(|s| s.get("blocked").is_none())
                .map(|_| ())
        },
    );
}
