//! Automatic failover with `--coordinator kubernetes`, through real
//! kvstore processes, against the Kubernetes API STAND-IN
//! (tests/it/common/kube_standin.rs). No API server can run on this
//! machine; the stand-in keeps the Lease API's semantics the backend relies
//! on (`resourceVersion`, 409 on a conflicting update) and serves HTTPS
//! with a CA of its own. The nodes reach it with the `--kube-*` flags, as a
//! node outside a cluster reaches an API server; inside a pod the same
//! settings come from the service account.
//!
//! Every wait polls with a deadline.

#![cfg(feature = "kubernetes")]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use kvstore::client::{BlockingClient, ClientOptions};
use serde_json::Value;

use crate::common::dir_identity::{self, emptied_replica_is_not_elected};
use crate::common::kube_standin::KubeStandIn;
use crate::common::{run_to_exit, wait_for, Server};

const NS: &str = "kvstore-test";
/// The shortest lease the backends grant, so that a failover is quick.
const TTL_MS: &str = "2000";
/// An election on a loaded 2-core machine: the TTL, the poll, the update.
const ELECTION_DEADLINE: Duration = Duration::from_secs(40);

/// The stand-in over TLS and its bearer token in a file, as a node reads it.
struct Api {
    standin: KubeStandIn,
    files: tempfile::TempDir,
}

impl Api {
    fn start() -> Api {
        let standin = KubeStandIn::start_tls();
        let files = tempfile::tempdir().expect("tempdir");
        std::fs::write(files.path().join("token"), format!("{}\n", standin.token))
            .expect("token file");
        Api { standin, files }
    }

    fn token_file(&self) -> String {
        self.files.path().join("token").display().to_string()
    }

    fn node_args(&self, id: usize, extra: &[&str]) -> Vec<String> {
        let ca: &Path = self.standin.ca_file.as_deref().expect("TLS stand-in");
        let mut args: Vec<String> = [
            "--coordinator",
            "kubernetes",
            "--kube-api-url",
            &self.standin.url,
            "--kube-token-file",
            &self.token_file(),
            "--kube-ca-file",
            &ca.display().to_string(),
            "--kube-namespace",
            NS,
            "--lease-ttl-ms",
            TTL_MS,
            "--node-id",
            &format!("n{id}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn start_node(&self, id: usize, extra: &[&str]) -> Server {
        let args = self.node_args(id, extra);
        Server::start_unready(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The Lease's holder as stored.
    fn holder(&self) -> Option<String> {
        let lease = self.standin.object("leases", NS, "kvstore")?;
        Some(lease.pointer("/spec/holderIdentity")?.as_str()?.to_string())
    }
}

/// An annotation of Lease `name`, parsed as JSON.
fn annotation(api: &Api, name: &str, key: &str) -> Option<Value> {
    let lease = api.standin.object("leases", NS, name)?;
    let note = lease
        .get("metadata")?
        .get("annotations")?
        .get(key)?
        .as_str()?;
    serde_json::from_str(note).ok()
}

impl dir_identity::Backend for Api {
    fn start_node(&self, id: usize, extra: &[&str]) -> Server {
        Api::start_node(self, id, extra)
    }

    fn record(&self) -> Option<Value> {
        annotation(self, "kvstore", "kvstore.io/in-sync")
    }

    fn member(&self, id: usize) -> Option<Value> {
        annotation(self, &format!("kvstore-member-n{id}"), "kvstore.io/member")
    }

    fn holder(&self) -> Option<String> {
        Api::holder(self).filter(|h| !h.is_empty())
    }
}

#[test]
fn a_listed_node_back_on_an_emptied_data_directory_is_not_elected() {
    emptied_replica_is_not_elected(&Api::start());
}

fn options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(20),
        client_name: "failover-kube-test".into(),
        follow_redirects: false,
        ..ClientOptions::default()
    }
}

/// `(role, epoch)` from a node's STATS; `None` when it does not answer.
fn role_of(addr: SocketAddr) -> Option<(String, u64)> {
    let mut c = BlockingClient::connect(addr.to_string(), options()).ok()?;
    let stats = c.stats().ok()?;
    let r = stats.get("replication")?;
    Some((
        r.get("role")?.as_str()?.to_string(),
        r.get("epoch").and_then(Value::as_u64)?,
    ))
}

/// Waits until exactly one of `nodes` says it is master and the Lease names
/// it; returns its index and epoch.
fn wait_one_master(api: &Api, nodes: &[(usize, &Server)]) -> (usize, u64) {
    wait_for(ELECTION_DEADLINE, "one master, named by the Lease", || {
        let masters: Vec<(usize, u64)> = nodes
            .iter()
            .filter_map(|(id, n)| match role_of(n.addr)? {
                (role, epoch) if role == "master" => Some((*id, epoch)),
                _ => None,
            })
            .collect();
        let [(id, epoch)] = masters[..] else {
            return None;
        };
        (api.holder()? == format!("n{id}")).then_some((id, epoch))
    })
}

#[test]
fn the_lease_elects_one_master_and_replaces_it_after_sigkill() {
    let api = Api::start();
    let sync = ["--replication-mode", "sync", "--min-acks", "2"];
    let mut nodes: Vec<Server> = (0..3).map(|i| api.start_node(i, &sync)).collect();
    let all: Vec<(usize, &Server)> = nodes.iter().enumerate().collect();
    let (m, epoch) = wait_one_master(&api, &all);
    assert!(epoch >= 1, "the coordinator issues epochs from 1");

    // Sync writes with every replica's acknowledgement: each OK means both
    // replicas hold the key durably.
    let keys: Vec<Bytes> = (0..20).map(|i| Bytes::from(format!("k-{i:02}"))).collect();
    let mut c = BlockingClient::connect(nodes[m].addr.to_string(), options()).expect("connect");
    for key in &keys {
        wait_for(ELECTION_DEADLINE, "a sync write acknowledged", || {
            c.put(key, b"v").ok()
        });
    }

    nodes[m].sigkill();
    let survivors: Vec<(usize, &Server)> =
        nodes.iter().enumerate().filter(|(i, _)| *i != m).collect();
    let (new, new_epoch) = wait_one_master(&api, &survivors);
    assert!(new_epoch > epoch, "epoch {new_epoch} after {epoch}");
    let mut c = BlockingClient::connect(nodes[new].addr.to_string(), options()).expect("connect");
    for key in &keys {
        assert!(
            c.get(key).expect("get").is_some(),
            "{key:?} was acknowledged by the old master and is missing on the new one"
        );
    }
}

#[test]
fn a_bad_kubernetes_setting_stops_the_node_with_a_clear_error() {
    let (status, stderr) = run_to_exit(
        &[
            "serve",
            "--coordinator",
            "kubernetes",
            "--kube-api-url",
            "https://127.0.0.1:1",
            "--kube-token-file",
            "/nonexistent/token",
        ],
        &[],
        Duration::from_secs(20),
    );
    assert!(!status.success());
    assert!(
        stderr.contains("--kube-token-file (KVSTORE_KUBE_TOKEN_FILE)") && !stderr.contains("panic"),
        "{stderr}"
    );
}
