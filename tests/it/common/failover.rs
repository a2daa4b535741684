//! Clusters of real kvstore nodes under a coordinator, for the failover
//! tests (failover.rs, failover_kube.rs, failover_rules.rs, cluster.rs,
//! chaos/failover.rs): the coordinator itself ([`Coord`]: real etcd, or
//! the Kubernetes API stand-in over TLS), each node's flags, and what a
//! node says about its role.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use kvstore::client::{BlockingClient, ClientOptions};
use serde_json::Value;

#[cfg(feature = "etcd")]
use super::etcd::EtcdCluster;
#[cfg(feature = "kubernetes")]
use super::kube_standin::KubeStandIn;
use super::Server;

/// The lease TTL the tests run with: the shortest both backends grant
/// (whole seconds), so a failover is quick.
pub const TTL_MS: &str = "2000";

/// The lease TTL as a duration.
pub fn ttl() -> Duration {
    Duration::from_millis(TTL_MS.parse().expect("TTL_MS is a number"))
}

/// Client options for talking to one node: no REDIRECT following, so a
/// test sees which node answers.
pub fn options() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(20),
        client_name: "failover-test".into(),
        follow_redirects: false,
        ..ClientOptions::default()
    }
}

/// The `replication` section of a node's STATS; `None` when it does not
/// answer.
pub fn repl_of(addr: SocketAddr) -> Option<Value> {
    let mut c = BlockingClient::connect(addr.to_string(), options()).ok()?;
    c.stats().ok()?.get("replication").cloned()
}

/// `(role, epoch)` from a node's STATS; `None` when it does not answer.
pub fn role_of(addr: SocketAddr) -> Option<(String, u64)> {
    let r = repl_of(addr)?;
    Some((
        r.get("role")?.as_str()?.to_string(),
        r.get("epoch")?.as_u64()?,
    ))
}

/// Whether exactly one of the nodes at `addrs` is master and every other
/// one follows it over a live link: its index and epoch.
pub fn one_master(addrs: &[SocketAddr]) -> Option<(usize, u64)> {
    let states: Vec<Option<Value>> = addrs.iter().map(|a| repl_of(*a)).collect();
    let masters: Vec<usize> = (0..addrs.len())
        .filter(|&i| {
            states[i]
                .as_ref()
                .and_then(|r| r.get("role"))
                .and_then(Value::as_str)
                == Some("master")
        })
        .collect();
    let [m] = masters[..] else { return None };
    let master = addrs[m].to_string();
    let followed = (0..addrs.len()).filter(|&i| i != m).all(|i| {
        let r = states[i].as_ref();
        r.and_then(|r| r.get("master")).and_then(Value::as_str) == Some(master.as_str())
            && r.and_then(|r| r.get("link_up")).and_then(Value::as_bool) == Some(true)
    });
    let epoch = states[m].as_ref()?.get("epoch")?.as_u64()?;
    followed.then_some((m, epoch))
}

/// One etcd node's flags: `--coordinator etcd`, its id `n<id>`, the short
/// TTL, then `extra`.
#[cfg(feature = "etcd")]
pub fn node_args(etcd: &EtcdCluster, id: usize, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--coordinator".into(),
        "etcd".into(),
        "--etcd-endpoints".into(),
        etcd.endpoints().join(","),
        "--node-id".into(),
        format!("n{id}"),
        "--lease-ttl-ms".into(),
        TTL_MS.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Starts etcd node `n<id>` (not waiting for readiness: a candidate is
/// not ready until it follows or leads).
#[cfg(feature = "etcd")]
pub fn start_node(etcd: &EtcdCluster, id: usize, extra: &[&str]) -> Server {
    start(&node_args(etcd, id, extra))
}

fn start(args: &[String]) -> Server {
    Server::start_unready(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The namespace the stand-in's Leases live in.
pub const KUBE_NAMESPACE: &str = "kvstore-test";

/// The Kubernetes API stand-in over TLS, with its bearer token in a file
/// as a node reads it. The nodes reach it with the `--kube-*` flags, as a
/// node outside a cluster reaches an API server.
#[cfg(feature = "kubernetes")]
pub struct KubeApi {
    pub standin: KubeStandIn,
    files: tempfile::TempDir,
}

#[cfg(feature = "kubernetes")]
impl KubeApi {
    pub fn start() -> KubeApi {
        let standin = KubeStandIn::start_tls();
        let files = tempfile::tempdir().expect("tempdir");
        std::fs::write(files.path().join("token"), format!("{}\n", standin.token))
            .expect("token file");
        KubeApi { standin, files }
    }

    pub fn token_file(&self) -> String {
        self.files.path().join("token").display().to_string()
    }

    /// One node's flags: `--coordinator kubernetes` with the stand-in's
    /// URL, token and CA, its id `n<id>`, the short TTL, then `extra`.
    pub fn node_args(&self, id: usize, extra: &[&str]) -> Vec<String> {
        let ca = self.standin.ca_file.as_deref().expect("TLS stand-in");
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
            KUBE_NAMESPACE,
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

    /// Starts node `n<id>` (not waiting for readiness).
    pub fn start_node(&self, id: usize, extra: &[&str]) -> Server {
        start(&self.node_args(id, extra))
    }

    /// The cluster Lease's holder as stored (expired or not).
    pub fn holder(&self) -> Option<String> {
        let lease = self.standin.object("leases", KUBE_NAMESPACE, "kvstore")?;
        Some(lease.pointer("/spec/holderIdentity")?.as_str()?.to_string())
    }
}

/// The coordinator a test cluster runs under: one setup, either backend.
#[cfg(any(feature = "etcd", feature = "kubernetes"))]
pub enum Coord {
    #[cfg(feature = "etcd")]
    Etcd(EtcdCluster),
    #[cfg(feature = "kubernetes")]
    Kube(KubeApi),
}

#[cfg(any(feature = "etcd", feature = "kubernetes"))]
impl Coord {
    /// Real etcd with `members` members.
    #[cfg(feature = "etcd")]
    pub fn etcd(members: usize) -> Coord {
        Coord::Etcd(EtcdCluster::start(members))
    }

    /// The Kubernetes API stand-in.
    #[cfg(feature = "kubernetes")]
    pub fn kube() -> Coord {
        Coord::Kube(KubeApi::start())
    }

    /// The backend's `--coordinator` name.
    pub fn name(&self) -> &'static str {
        match self {
            #[cfg(feature = "etcd")]
            Coord::Etcd(_) => "etcd",
            #[cfg(feature = "kubernetes")]
            Coord::Kube(_) => "kubernetes",
        }
    }

    /// Node `n<id>`'s flags under this coordinator, then `extra`.
    pub fn node_args(&self, id: usize, extra: &[&str]) -> Vec<String> {
        match self {
            #[cfg(feature = "etcd")]
            Coord::Etcd(etcd) => node_args(etcd, id, extra),
            #[cfg(feature = "kubernetes")]
            Coord::Kube(api) => api.node_args(id, extra),
        }
    }

    /// Starts node `n<id>` (not waiting for readiness).
    pub fn start_node(&self, id: usize, extra: &[&str]) -> Server {
        start(&self.node_args(id, extra))
    }
}
