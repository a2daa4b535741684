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

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use kvstore::client::BlockingClient;
use serde_json::Value;

use crate::common::dir_identity::{self, emptied_replica_is_not_elected};
use crate::common::failover::{options, role_of, KubeApi, KUBE_NAMESPACE};
use crate::common::host::Tmpfs;
use crate::common::{http_get, run_to_exit, wait_for, Server};

/// An election on a loaded 2-core machine: the TTL, the poll, the update.
const ELECTION_DEADLINE: Duration = Duration::from_secs(40);

/// An annotation of Lease `name`, parsed as JSON.
fn annotation(api: &KubeApi, name: &str, key: &str) -> Option<Value> {
    let lease = api.standin.object("leases", KUBE_NAMESPACE, name)?;
    let note = lease
        .get("metadata")?
        .get("annotations")?
        .get(key)?
        .as_str()?;
    serde_json::from_str(note).ok()
}

impl dir_identity::Backend for KubeApi {
    fn start_node(&self, id: usize, extra: &[&str]) -> Server {
        KubeApi::start_node(self, id, extra)
    }

    fn record(&self) -> Option<Value> {
        annotation(self, "kvstore", "kvstore.io/in-sync")
    }

    fn member(&self, id: usize) -> Option<Value> {
        annotation(self, &format!("kvstore-member-n{id}"), "kvstore.io/member")
    }

    fn holder(&self) -> Option<String> {
        KubeApi::holder(self).filter(|h| !h.is_empty())
    }
}

#[test]
fn a_listed_node_back_on_an_emptied_data_directory_is_not_elected() {
    emptied_replica_is_not_elected(&KubeApi::start());
}

/// Waits until exactly one of `nodes` says it is master and the Lease names
/// it; returns its index and epoch.
pub(crate) fn wait_one_master(api: &KubeApi, nodes: &[(usize, &Server)]) -> (usize, u64) {
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
    let api = KubeApi::start();
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

/// A master whose disk fills (a small tmpfs, ENOSPC): its engine refuses
/// writes, so `/readyz` fails (the Services stop routing to it) while
/// `/healthz` stays ok (it serves reads and resumes by itself once the
/// disk has room: no restart), and it releases the Lease so a replica
/// takes over.
#[test]
fn a_master_whose_disk_fills_turns_unready_stays_live_and_hands_the_lease_to_a_replica() {
    let Some(fs) = Tmpfs::mount("1m") else {
        return;
    };
    let api = KubeApi::start();
    // n0 alone first, so it is the master whose disk fills.
    let args = api.node_args(0, &["--segment-max-bytes", "131072"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let n0 = Server::start_on(&fs.path().join("data"), &args, false);
    let (_, epoch) = wait_one_master(&api, &[(0, &n0)]);
    let n1 = api.start_node(1, &[]);
    let n2 = api.start_node(2, &[]);
    let ready = |n: &Server| matches!(http_get(n.http_addr, "/readyz"), Ok((200, _)));
    wait_for(ELECTION_DEADLINE, "both replicas following n0", || {
        (ready(&n1) && ready(&n2)).then_some(())
    });

    let mut c = BlockingClient::connect(n0.addr.to_string(), options()).expect("connect");
    let first_refused = crate::resume::fill(&mut c, 0);
    assert!(first_refused > 0, "not one write fit on the tmpfs");
    // Take the last bytes too, so the engine's probe (a segment header)
    // cannot clear the poison while the test looks.
    fill_up(&fs.path().join("filler"));
    // /readyz names the first reason it finds; the engine's state reaches
    // it within its poll (100 ms), possibly after the node stepped down.
    wait_for(
        ELECTION_DEADLINE,
        "n0's /readyz to fail for the engine",
        || {
            let (code, body) = http_get(n0.http_addr, "/readyz").ok()?;
            (code == 503 && body.contains("refuses writes")).then_some(())
        },
    );
    let (new, new_epoch) = wait_one_master(&api, &[(1, &n1), (2, &n2)]);
    assert!(new_epoch > epoch, "epoch {new_epoch} after {epoch}");
    let (code, body) = http_get(n0.http_addr, "/healthz").expect("/healthz");
    assert_eq!(
        code, 200,
        "a node that can recover on its own stays live: {body}"
    );
    assert!(!ready(&n0), "n0 is still poisoned: it must not be ready");
    let node = if new == 1 { &n1 } else { &n2 };
    let mut c = BlockingClient::connect(node.addr.to_string(), options()).expect("connect");
    wait_for(ELECTION_DEADLINE, "a write on the new master", || {
        c.put(b"after-the-disk-filled", b"ok").ok()
    });
    assert!(
        n0.logs()
            .contains("releasing the lease so a replica takes over"),
        "{}",
        n0.logs()
    );
}

/// Appends to `file` until its file system is full.
fn fill_up(file: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(file).expect("filler");
    let chunk = [0u8; 4096];
    for _ in 0..1024 {
        if f.write_all(&chunk).and_then(|()| f.sync_data()).is_err() {
            return;
        }
    }
    panic!("4 MiB more fit on a full 1 MiB tmpfs?");
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

/// Not a test: serves the stand-in for `make bench-failover-kube`
/// (benches/failover.sh with COORDINATOR=kubernetes), which has no API
/// server either. Writes `url`, `token` and `ca.pem` into
/// `KVSTORE_STANDIN_DIR` (`url` last, so a reader that sees it sees the
/// rest), then serves until killed, until a file named `stop` appears
/// there, or for `KVSTORE_STANDIN_SECONDS` (default 7200).
#[test]
#[ignore = "serves the Kubernetes API stand-in for benches/failover.sh until killed"]
fn serve_the_stand_in_for_benches() {
    let dir = std::path::PathBuf::from(
        std::env::var_os("KVSTORE_STANDIN_DIR")
            .expect("KVSTORE_STANDIN_DIR: the directory to write url, token and ca.pem to"),
    );
    let limit = Duration::from_secs(
        std::env::var("KVSTORE_STANDIN_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(7200),
    );
    let api = KubeApi::start();
    let ca = api.standin.ca_file.as_deref().expect("TLS stand-in");
    std::fs::copy(ca, dir.join("ca.pem")).expect("write ca.pem");
    std::fs::write(dir.join("token"), format!("{}\n", api.standin.token)).expect("write token");
    std::fs::write(dir.join("url.tmp"), &api.standin.url).expect("write url");
    std::fs::rename(dir.join("url.tmp"), dir.join("url")).expect("rename url");
    eprintln!("stand-in serving at {}", api.standin.url);
    let started = std::time::Instant::now();
    while started.elapsed() < limit && !dir.join("stop").exists() {
        std::thread::sleep(Duration::from_millis(200));
    }
}
