//! Real etcd for tests: Debian's `etcd-server` (the `etcd` binary) on free
//! loopback ports, with a temporary data directory and short heartbeat and
//! election timeouts. One member, or a cluster of several where a test
//! needs to lose some. Members are stopped by PID; everything is killed on
//! drop.
//!
//! Include with `#[path = "common/etcd.rs"] mod etcd;` (not part of
//! `common/mod.rs`, so other test binaries do not compile it).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a cluster may take to elect its first leader.
const START_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);
/// etcd's Raft timing for tests: fast elections, still far above loopback
/// latency on a loaded 2-core machine.
const HEARTBEAT_MS: u32 = 50;
const ELECTION_MS: u32 = 500;

/// The `etcd` binary; a clear failure when the package is missing.
pub fn etcd_bin() -> PathBuf {
    let path = std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    assert!(
        path.exists(),
        "{} not found: install Debian's etcd-server (apt-get install etcd-server) or set ETCD_BIN",
        path.display()
    );
    path
}

pub struct EtcdMember {
    pub name: String,
    pub client_url: String,
    client_port: u16,
    peer_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running etcd cluster.
pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
    dir: tempfile::TempDir,
    /// `--initial-cluster` and its token, for restarts.
    initial: String,
    token: String,
}

impl EtcdMember {
    /// Starts this member on its data directory (a restart when it exists:
    /// etcd then ignores the initial-cluster flags), logging to its log.
    fn spawn(&mut self, initial: &str, token: &str) -> Result<(), String> {
        let bin = etcd_bin();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("etcd log");
        let child = Command::new(&bin)
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args(["--initial-cluster", initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", token])
            .args(["--heartbeat-interval", &HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ELECTION_MS.to_string()])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// The client address (`127.0.0.1:port`).
    pub fn client_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster has a leader. Ports
    /// are found by binding port 0; another process may grab one before
    /// etcd binds it, so a start whose member exits is retried.
    pub fn start(n: usize) -> EtcdCluster {
        let mut last = String::new();
        for _ in 0..3 {
            match EtcdCluster::try_start(n) {
                Ok(cluster) => return cluster,
                Err(e) => last = e,
            }
        }
        panic!("etcd did not start: {last}");
    }

    fn try_start(n: usize) -> Result<EtcdCluster, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = free_ports(2 * n);
        let mut members: Vec<EtcdMember> = (0..n)
            .map(|i| EtcdMember {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", ports[2 * i]),
                client_port: ports[2 * i],
                peer_url: format!("http://127.0.0.1:{}", ports[2 * i + 1]),
                data_dir: dir.path().join(format!("m{i}")),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
            })
            .collect();
        let initial: Vec<String> = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect();
        let initial = initial.join(",");
        let token = format!("kvstore-test-{}-{}", std::process::id(), ports[0]);
        for m in &mut members {
            m.spawn(&initial, &token)?;
        }
        let mut cluster = EtcdCluster {
            members,
            dir,
            initial,
            token,
        };
        let end = Instant::now() + START_DEADLINE;
        loop {
            if (0..n).all(|i| cluster.healthy(i)) {
                return Ok(cluster);
            }
            for m in &mut cluster.members {
                if let Some(Ok(Some(status))) = m.child.as_mut().map(Child::try_wait) {
                    let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                    return Err(format!("{} exited with {status}: {}", m.name, tail(&log)));
                }
            }
            if Instant::now() > end {
                return Err(format!(
                    "no healthy cluster of {n} after {START_DEADLINE:?}"
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Every running member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Whether member `i` answers `/health` with a leader in its cluster.
    pub fn healthy(&self, i: usize) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.members[i].client_port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains("\"health\":\"true\"")
    }

    /// SIGKILL to member `i`, by PID, and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
            let _ = kill(pid, Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data directory, after [`kill`]
    /// (same ports, same identity: it rejoins its cluster).
    ///
    /// [`kill`]: EtcdCluster::kill
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "kill member {i} first");
        let (initial, token) = (self.initial.clone(), self.token.clone());
        self.members[i]
            .spawn(&initial, &token)
            .unwrap_or_else(|e| panic!("restart of etcd member {i}: {e}"));
    }

    /// The index of the member that is etcd's Raft leader now.
    pub async fn leader(&self) -> usize {
        let end = Instant::now() + START_DEADLINE;
        loop {
            for (i, m) in self.members.iter().enumerate() {
                if m.child.is_none() {
                    continue;
                }
                let Ok(mut c) = etcd_client::Client::connect([m.client_url.as_str()], None).await
                else {
                    continue;
                };
                if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), c.status()).await {
                    let me = s.header().map(|h| h.member_id());
                    if me == Some(s.leader()) {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < end, "no etcd leader found");
            tokio::time::sleep(POLL).await;
        }
    }

    /// The value of `key` now (`None`: absent), read through the first
    /// running member; for tests that check what a node published.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let endpoints: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client_url.clone())
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let read = async {
                let mut c = etcd_client::Client::connect(endpoints, None).await?;
                let resp = c.get(key, None).await?;
                Ok::<_, etcd_client::Error>(resp.kvs().first().map(|kv| kv.value().to_vec()))
            };
            tokio::time::timeout(Duration::from_secs(5), read)
                .await
                .expect("etcd answered within 5 s")
                .expect("etcd get")
        })
    }

    /// The last lines of member `i`'s log, for a failing assertion.
    pub fn log_tail(&self, i: usize) -> String {
        tail(&std::fs::read_to_string(&self.members[i].log).unwrap_or_default())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// `n` distinct loopback ports that were free a moment ago.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
