//! Helpers for replication tests: start masters and replicas, read the
//! `replication` section of `stats`, write and check key ranges with
//! pipelining, wait for convergence, compare segment files, and a
//! fault-injecting TCP proxy.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kvstore::client::{BlockingClient, ClientOptions};
use kvstore::protocol::{Request, Response};
use serde_json::Value;

use super::{connect_client, wait_for, Server, NET_DEADLINE};

/// How long replicas may take to catch up in a test.
pub const CONVERGE_DEADLINE: Duration = Duration::from_secs(40);
/// Requests per pipelined round trip when loading keys.
const PIPELINE: usize = 500;

/// Starts a master with `extra` flags.
pub fn master(extra: &[&str]) -> Server {
    let mut args = vec!["--role", "master"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Starts a replica of `master` with `extra` flags; waits until ready
/// (connected and caught up within the lag bound).
pub fn replica(master: SocketAddr, extra: &[&str]) -> Server {
    let m = master.to_string();
    let mut args = vec!["--role", "replica", "--master-addr", m.as_str()];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// The flags that make a node a replica of `master`.
pub fn replica_args(master: SocketAddr) -> Vec<String> {
    vec![
        "--role".into(),
        "replica".into(),
        "--master-addr".into(),
        master.to_string(),
    ]
}

/// The whole `stats` document.
pub fn stats(addr: SocketAddr) -> serde_json::Map<String, Value> {
    connect_client(addr).stats().expect("stats")
}

/// The `replication` section of `stats`.
pub fn repl(addr: SocketAddr) -> Value {
    stats(addr)
        .get("replication")
        .cloned()
        .expect("a replication section in stats")
}

/// One number of the `replication` section.
pub fn rstat(addr: SocketAddr, key: &str) -> u64 {
    repl(addr)
        .get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("replication.{key} is not a number"))
}

/// The key and value of item `i` of a named range.
pub fn key(prefix: &str, i: usize) -> Bytes {
    Bytes::from(format!("{prefix}-{i:08}"))
}

pub fn value(prefix: &str, i: usize, len: usize) -> Bytes {
    let mut v = format!("{prefix}:{i}:").into_bytes();
    v.resize(len.max(v.len()), b'x' + (i % 3) as u8);
    Bytes::from(v)
}

/// Puts `range` of `prefix` with values of `len` bytes through `client`,
/// pipelined; returns how many were acknowledged (all or an error).
pub fn put_range(
    client: &mut BlockingClient,
    prefix: &str,
    range: std::ops::Range<usize>,
    len: usize,
) -> Result<usize, kvstore::client::Error> {
    let mut done = 0;
    let items: Vec<usize> = range.collect();
    for chunk in items.chunks(PIPELINE) {
        let puts: Vec<Request> = chunk
            .iter()
            .map(|&i| Request::Put {
                key: key(prefix, i),
                value: value(prefix, i, len),
            })
            .collect();
        let answers = client.pipeline(&puts)?;
        assert!(
            answers.iter().all(|a| *a == Response::Ok),
            "a put was refused: {:?}",
            answers.iter().find(|a| **a != Response::Ok)
        );
        done += chunk.len();
    }
    Ok(done)
}

/// Reads `keys` from `addr` (pipelined, no redirects needed for reads).
pub fn get_all(addr: SocketAddr, keys: &[Bytes]) -> Vec<Response> {
    let mut client = connect_client(addr);
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(PIPELINE) {
        let gets: Vec<Request> = chunk
            .iter()
            .map(|k| Request::Get { key: k.clone() })
            .collect();
        out.extend(client.pipeline(&gets).expect("pipelined gets"));
    }
    out
}

/// Asserts every node of `others` answers exactly like `reference` for `keys`.
pub fn assert_same_contents(reference: SocketAddr, others: &[SocketAddr], keys: &[Bytes]) {
    let expected = get_all(reference, keys);
    for &node in others {
        let got = get_all(node, keys);
        for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
            assert_eq!(
                e,
                g,
                "{node} differs from {reference} at key {:?}",
                keys.get(i)
            );
        }
    }
    let count = |a| stats(a).get("keys").and_then(Value::as_u64);
    let keys_ref = count(reference);
    for &node in others {
        assert_eq!(count(node), keys_ref, "{node} holds a different key count");
    }
}

/// Waits until every replica's log ends where the master's does (and the
/// master stopped moving for that instant). Returns that offset.
pub fn wait_converged(master: SocketAddr, replicas: &[SocketAddr]) -> u64 {
    wait_for(CONVERGE_DEADLINE, "the replicas to converge", || {
        let end = rstat(master, "end_offset");
        let all = replicas
            .iter()
            .all(|&r| rstat(r, "end_offset") == end && rstat(r, "durable_offset") == end);
        (all && rstat(master, "end_offset") == end).then_some(end)
    })
}

/// A client that reports REDIRECT instead of following it.
pub fn no_redirect_client(addr: SocketAddr) -> BlockingClient {
    let options = ClientOptions {
        connect_timeout: NET_DEADLINE,
        request_timeout: NET_DEADLINE,
        client_name: "test".into(),
        follow_redirects: false,
        ..ClientOptions::default()
    };
    BlockingClient::connect(addr.to_string(), options).expect("connect")
}

/// `(base offset, bytes)` of every `.seg` file in `dir` at or above `from`.
pub fn segments_from(dir: &Path, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read the data directory") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Some(base) = name
            .strip_suffix(".seg")
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if base >= from {
            out.push((base, std::fs::read(&path).expect("read a segment")));
        }
    }
    out.sort_by_key(|(base, _)| *base);
    out
}

/// Sends `signal` to a running node (SIGSTOP/SIGCONT). After SIGSTOP,
/// waits until every thread is actually stopped (state `T` in /proc), so
/// nothing the test does next can still reach a running process.
pub fn signal(server: &Server, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.pid()).expect("pid"));
    nix::sys::signal::kill(pid, signal).expect("signal");
    if signal != nix::sys::signal::Signal::SIGSTOP {
        return;
    }
    let tasks = format!("/proc/{}/task", server.pid());
    wait_for(NET_DEADLINE, "the node to stop", || {
        let entries = std::fs::read_dir(&tasks).ok()?;
        let all_stopped = entries.filter_map(Result::ok).all(|t| {
            std::fs::read_to_string(t.path().join("stat"))
                .ok()
                .and_then(|st| {
                    st.rsplit_once(')')
                        .map(|(_, rest)| rest.trim_start().starts_with('T'))
                })
                .unwrap_or(false)
        });
        all_stopped.then_some(())
    });
}

/// A TCP proxy on loopback in front of `target`. On the first connection
/// only, it flips the byte at position `flip_at` of the target→client
/// direction, once ([`FlipProxy::start`]); or it slows that direction down
/// ([`FlipProxy::slow`]). Counts connections.
pub struct FlipProxy {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub flipped: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl FlipProxy {
    pub fn start(target: SocketAddr, flip_at: u64) -> FlipProxy {
        FlipProxy::build(target, Some(flip_at), None)
    }

    /// A proxy that forwards target→client at about `bytes_per_sec`.
    pub fn slow(target: SocketAddr, bytes_per_sec: u64) -> FlipProxy {
        FlipProxy::build(target, None, Some(bytes_per_sec))
    }

    fn build(target: SocketAddr, flip_at: Option<u64>, rate: Option<u64>) -> FlipProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let flipped = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (conns, flip, halt) = (
            Arc::clone(&connections),
            Arc::clone(&flipped),
            Arc::clone(&stop),
        );
        std::thread::spawn(move || {
            // Bounded: at most 100 connections, until told to stop.
            while !halt.load(Ordering::Relaxed) && conns.load(Ordering::Relaxed) < 100 {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                let n = conns.fetch_add(1, Ordering::Relaxed);
                let Ok(upstream) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let (c2, u2) = match (client.try_clone(), upstream.try_clone()) {
                    (Ok(c), Ok(u)) => (c, u),
                    _ => continue,
                };
                std::thread::spawn(move || pump(client, upstream, None, None));
                let flip = flip_at.filter(|_| n == 0).map(|at| (at, Arc::clone(&flip)));
                std::thread::spawn(move || pump(u2, c2, flip, rate));
            }
        });
        FlipProxy {
            addr,
            connections,
            flipped,
            stop,
        }
    }
}

impl Drop for FlipProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies `from` to `to` until either side closes, flipping one byte at
/// the given stream position if asked.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    flip: Option<(u64, Arc<AtomicBool>)>,
    rate: Option<u64>,
) {
    let seen = AtomicU64::new(0);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let start = seen.fetch_add(n as u64, Ordering::Relaxed);
        if let Some((at, done)) = &flip {
            if *at >= start && *at < start + n as u64 && !done.swap(true, Ordering::Relaxed) {
                let i = usize::try_from(*at - start).expect("index");
                buf[i] ^= 0x5a;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some(rate) = rate {
            std::thread::sleep(Duration::from_micros(n as u64 * 1_000_000 / rate.max(1)));
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}
