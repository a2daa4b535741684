//! Shared helpers for integration tests: start a real `kvstore serve` on
//! port 0, find its addresses through the port file, poll with deadlines,
//! stop it with a signal.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

#[cfg(any(feature = "etcd", feature = "kubernetes"))]
pub mod dir_identity;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod failover;
pub mod host;
#[cfg(feature = "kubernetes")]
pub mod kube_standin;
pub mod markdown;
pub mod monitoring;
pub mod replication;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a node may take to start or stop in a test.
pub const START_DEADLINE: Duration = Duration::from_secs(20);
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// Poll period while waiting for something.
const POLL: Duration = Duration::from_millis(10);

/// The binary under test.
pub fn kvstore_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kvstore")
}

/// The repository's root directory.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `python3 scripts/SCRIPT ARGS...` from the repository: whether it
/// succeeded, and its stdout then stderr.
pub fn run_python_script<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) -> (bool, String) {
    let out = Command::new("python3")
        .arg(repo_root().join("scripts").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run python3 scripts/{script}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A program of the repository's virtualenv, `.venv/bin/NAME`, which
/// `make deps` (scripts/setup.sh) fills. Panics with that hint when it is
/// missing: a test never skips for want of a tool.
pub fn venv_bin(name: &str) -> PathBuf {
    let path = repo_root().join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} not found: run `make deps` (scripts/setup.sh installs the Python tools into .venv/)",
        path.display()
    );
    path
}

/// Polls `f` until it returns `Some`, or panics with `what` after `deadline`.
pub fn wait_for<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// A running `kvstore serve` child process. Killed on drop.
pub struct Server {
    child: Option<Child>,
    /// Keeps the data directory, port file and log alive for the test.
    dir: tempfile::TempDir,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// What `--listen` is given: port 0 at first, the same port after
    /// [`Server::restart_same_port`].
    listen: String,
    /// Whether (re)starts wait for `/readyz`.
    wait_ready: bool,
    /// A data directory given by the test instead of `<dir>/data`.
    data_override: Option<PathBuf>,
    /// Client address (from the port file).
    pub addr: SocketAddr,
    /// HTTP address (from the port file).
    pub http_addr: SocketAddr,
    restarts: u32,
}

impl Server {
    /// Starts a node on port 0 with a fresh data directory and `extra`
    /// flags, and waits until `/readyz` says ready.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_with_env(extra, &[])
    }

    /// Starts a node without waiting for `/readyz` (a replica whose master
    /// is not there never gets ready); waits for the port file only.
    pub fn start_unready(extra: &[&str]) -> Server {
        Server::build(extra, &[], false)
    }

    /// Like [`Server::start`], with extra environment variables.
    pub fn start_with_env(extra: &[&str], envs: &[(&str, &str)]) -> Server {
        Server::build(extra, envs, true)
    }

    fn build(extra: &[&str], envs: &[(&str, &str)], wait_ready: bool) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = Server {
            child: None,
            dir,
            args: extra.iter().map(|s| s.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            listen: "127.0.0.1:0".into(),
            addr: "127.0.0.1:0".parse().expect("addr"),
            http_addr: "127.0.0.1:0".parse().expect("addr"),
            restarts: 0,
            wait_ready,
            data_override: None,
        };
        server.spawn();
        server
    }

    /// Starts a node on an existing data directory (e.g. a restored
    /// backup); waits for `/readyz` when `wait_ready`.
    pub fn start_on(data_dir: &Path, extra: &[&str], wait_ready: bool) -> Server {
        let mut server = Server {
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            args: extra.iter().map(|s| s.to_string()).collect(),
            envs: Vec::new(),
            listen: "127.0.0.1:0".into(),
            addr: "127.0.0.1:0".parse().expect("addr"),
            http_addr: "127.0.0.1:0".parse().expect("addr"),
            restarts: 0,
            wait_ready,
            data_override: Some(data_dir.to_path_buf()),
        };
        server.spawn();
        server
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        match &self.data_override {
            Some(dir) => dir.clone(),
            None => self.dir.path().join("data"),
        }
    }

    fn port_file(&self) -> PathBuf {
        self.dir.path().join("ports")
    }

    fn log_file(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("server-{}.log", self.restarts))
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.port_file());
        let log = std::fs::File::create(self.log_file()).expect("log file");
        let mut cmd = Command::new(kvstore_bin());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args([
                "--listen",
                &self.listen,
                "--http-listen",
                "127.0.0.1:0",
                "--port-file",
            ])
            .arg(self.port_file())
            .args(&self.args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn kvstore serve"));
        let ports = self.port_file();
        let (addr, http) = wait_for(START_DEADLINE, "the port file", || {
            self.assert_running();
            read_port_file(&ports)
        });
        self.addr = addr;
        self.http_addr = http;
        if !self.wait_ready {
            return;
        }
        wait_for(START_DEADLINE, "/readyz to answer 200", || {
            self.assert_running();
            matches!(http_get(self.http_addr, "/readyz"), Ok((200, _))).then_some(())
        });
    }

    /// Panics with the server's log if it has exited.
    fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("server not started");
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "kvstore serve exited early ({status}); log:\n{}",
                self.logs()
            );
        }
    }

    /// Everything the current process logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` and waits (bounded) for the exit status.
    pub fn stop_with(&mut self, signal: Signal) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
        kill(pid, signal).expect("signal the server");
        wait_for(STOP_DEADLINE, "the server to exit", || {
            child.try_wait().expect("wait")
        })
    }

    /// SIGTERM and wait: the graceful path.
    pub fn sigterm(&mut self) -> ExitStatus {
        self.stop_with(Signal::SIGTERM)
    }

    /// SIGKILL and wait: a crash.
    pub fn sigkill(&mut self) {
        self.stop_with(Signal::SIGKILL);
    }

    /// Starts the node again on the same data directory, flags and client
    /// port (so replicas pointing at it find it again).
    pub fn restart_same_port(&mut self) {
        self.listen = self.addr.to_string();
        self.restart();
    }

    /// Replaces the extra flags used by the next (re)start.
    pub fn set_args(&mut self, extra: &[&str]) {
        self.args = extra.iter().map(|s| s.to_string()).collect();
    }

    /// Starts the node again on the same data directory and flags (new
    /// ports). Call after [`Server::sigterm`] or [`Server::sigkill`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server before restarting it");
        self.restarts += 1;
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Parses a port file: `(listen, http)`, `None` while absent or incomplete.
/// Engine options for in-process tests: 4 KiB segments, so a few hundred
/// writes span several, and no background compaction (tests compact when
/// they mean to).
/// An engine opened with `options` and fault hooks the test holds.
pub fn faulty_engine(
    dir: &Path,
    options: kvstore::engine::Options,
) -> (
    kvstore::engine::Engine,
    std::sync::Arc<kvstore::engine::Faults>,
) {
    let faults = std::sync::Arc::new(kvstore::engine::Faults::default());
    let engine = kvstore::engine::Engine::open(
        dir,
        kvstore::engine::Options {
            faults: Some(faults.clone()),
            ..options
        },
    )
    .unwrap();
    (engine, faults)
}

pub fn small_segment_options() -> kvstore::engine::Options {
    use kvstore::engine::{CompactionPolicy, Options};
    Options {
        segment_max_bytes: 4096,
        compaction: CompactionPolicy {
            check_every: None,
            ..CompactionPolicy::default()
        },
        ..Options::default()
    }
}

/// Copies the master's log to the replica (engines in process) in chunks of
/// `chunk` bytes, carrying partial records over like a replication client
/// does; returns the bytes shipped.
pub fn ship(
    master: &kvstore::engine::Engine,
    replica: &kvstore::engine::Engine,
    chunk: usize,
) -> u64 {
    let mut shipped = 0;
    let mut carry: Vec<u8> = Vec::new();
    let mut carry_base = 0;
    for _ in 0..100_000 {
        let from = replica.stats().log_end + carry.len() as u64;
        if from == master.log_end() {
            assert!(carry.is_empty());
            return shipped;
        }
        let c = master.read_log(from, chunk).unwrap();
        assert!(!c.bytes.is_empty());
        shipped += c.bytes.len() as u64;
        if carry.is_empty() {
            carry_base = c.segment_base;
        }
        assert_eq!(carry_base, c.segment_base, "a record never spans segments");
        carry.extend_from_slice(&c.bytes);
        let taken = replica.append_log(carry_base, &carry).unwrap();
        carry.drain(..taken);
    }
    panic!("shipping did not converge");
}

/// Copies every regular file of a data directory into a fresh one: the
/// directory as a crash would leave it. A file that disappears between
/// the listing and its copy (an open engine's background work renaming or
/// removing a temporary or hint file) is left out, as a crash a moment
/// later would have left it out.
pub fn copy_data_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().expect("create a directory for the copy");
    for entry in std::fs::read_dir(from).expect("list the data directory") {
        let entry = entry.expect("read a directory entry");
        let is_file = match entry.file_type() {
            Ok(t) => t.is_file(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => panic!("file type of {}: {e}", entry.path().display()),
        };
        if !is_file {
            continue;
        }
        match std::fs::copy(entry.path(), to.path().join(entry.file_name())) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("copy {}: {e}", entry.path().display()),
        }
    }
    to
}

/// The node's own reader of its port file (`listen`, `http`).
pub fn read_port_file(path: &Path) -> Option<(SocketAddr, SocketAddr)> {
    kvstore::server::port_file::read(path)
}

/// A minimal HTTP/1.1 GET (`Connection: close`): `(status, body)`.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP response");
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

/// Runs `kvstore` with `args` and `envs`, expecting it to exit on its own
/// within `deadline`: `(status, stderr)`.
pub fn run_to_exit(
    args: &[&str],
    envs: &[(&str, &str)],
    deadline: Duration,
) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let err_path = dir.path().join("stderr");
    let mut cmd = Command::new(kvstore_bin());
    cmd.args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).expect("stderr file"));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn kvstore");
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kvstore {args:?} did not exit within {deadline:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(POLL);
    };
    (
        status,
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

/// Scrapes `/metrics` and parses it as Prometheus text (panics if it is not).
pub fn scrape(http_addr: SocketAddr) -> prometheus_parse::Scrape {
    let (status, body) = http_get(http_addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines)
        .unwrap_or_else(|e| panic!("/metrics is not Prometheus text ({e}):\n{body}"))
}

/// The value of an unlabelled counter or gauge, e.g.
/// `kvstore_connections_active`.
pub fn metric(http_addr: SocketAddr, name: &str) -> f64 {
    use prometheus_parse::Value;
    let scrape = scrape(http_addr);
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .unwrap_or_else(|| panic!("no metric {name}"));
    match sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("{name} is not a number: {other:?}"),
    }
}

/// The sum of the samples of `name` whose `label` is `value`, e.g.
/// `kvstore_memory_refusals_total{kind="request"}`; 0 if there is none.
pub fn labelled_metric(http_addr: SocketAddr, name: &str, label: &str, value: &str) -> f64 {
    use prometheus_parse::Value;
    scrape(http_addr)
        .samples
        .iter()
        .filter(|s| s.metric == name && s.labels.get(label) == Some(value))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// Whether the server has closed `s` (EOF or reset), reading and
/// discarding any answer before it; never blocks.
pub fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    let _ = s.set_nonblocking(false);
    closed
}

// ---------------------------------------------------------------------------
// Wire-protocol helpers (client library, raw frames, CLI).
// ---------------------------------------------------------------------------

use kvstore::client::{BlockingClient, ClientOptions};
use kvstore::protocol::{Frame, Limits, Request, Response};

/// How long a test waits for any single network answer.
pub const NET_DEADLINE: Duration = Duration::from_secs(20);

impl Server {
    /// A connected blocking client.
    pub fn client(&self) -> BlockingClient {
        connect_client(self.addr)
    }
}

/// A blocking client to `addr`, with test-sized timeouts.
pub fn connect_client(addr: SocketAddr) -> BlockingClient {
    let options = ClientOptions {
        connect_timeout: NET_DEADLINE,
        request_timeout: NET_DEADLINE,
        client_name: "test".into(),
        ..ClientOptions::default()
    };
    BlockingClient::connect(addr.to_string(), options).expect("connect to the server")
}

/// Asserts that a brand-new client is served: put, get, delete.
pub fn assert_serves(addr: SocketAddr) {
    let mut client = connect_client(addr);
    let key = format!("probe-{}", std::process::id());
    client.put(key.as_bytes(), b"alive").expect("probe put");
    let value = client.get(key.as_bytes()).expect("probe get");
    assert_eq!(value.as_deref(), Some(&b"alive"[..]));
    client.delete(key.as_bytes()).expect("probe delete");
}

/// The bytes of one request frame, for sending by hand.
pub fn request_bytes(request: &Request) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    request.encode(&mut buf).expect("encode");
    buf.to_vec()
}

/// A raw TCP connection with bounded reads and writes, for sending bytes
/// by hand and reading response frames.
pub struct Raw {
    pub stream: TcpStream,
    buf: bytes::BytesMut,
}

/// Opens a [`Raw`] connection.
pub fn raw_connect(addr: SocketAddr) -> Raw {
    Raw::over(TcpStream::connect_timeout(&addr, NET_DEADLINE).expect("connect"))
}

impl Raw {
    /// A [`Raw`] connection over an already connected `stream`, with
    /// bounded reads and writes.
    pub fn over(stream: TcpStream) -> Raw {
        stream
            .set_read_timeout(Some(NET_DEADLINE))
            .expect("timeout");
        stream
            .set_write_timeout(Some(NET_DEADLINE))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Raw {
            stream,
            buf: bytes::BytesMut::new(),
        }
    }
}

/// What a raw connection got back.
#[derive(Debug)]
pub enum Answer {
    Frame(Response),
    /// The server closed the connection (EOF or reset).
    Closed,
}

impl Raw {
    /// Sends bytes; errors (the server may already have closed) are returned.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Closes our sending side (the server sees EOF).
    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }

    /// Reads one response frame, or reports that the server closed. Panics
    /// on a read timeout: the server must answer or close, never hang.
    pub fn answer(&mut self) -> Answer {
        match self.frame() {
            Some(frame) => Answer::Frame(
                Response::decode(frame, &Limits::default()).expect("server responses decode"),
            ),
            None => Answer::Closed,
        }
    }

    /// Reads one frame, undecoded (a stream such as BACKUP's sends frames
    /// that are not responses); `None` when the server closed. Panics on a
    /// read timeout.
    pub fn frame(&mut self) -> Option<Frame> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            if let Some(frame) =
                Frame::parse(&mut self.buf, u32::MAX).expect("server frames are valid")
            {
                return Some(frame);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    ) =>
                {
                    return None
                }
                Err(e) => panic!("reading from the server: {e} (it neither answered nor closed)"),
            }
        }
    }

    /// Reads until the server closes the connection; panics if it does not
    /// within the read timeout. Returns the error codes seen on the way.
    pub fn until_closed(&mut self) -> Vec<kvstore::protocol::ErrorCode> {
        let mut codes = Vec::new();
        for _ in 0..100_000 {
            match self.answer() {
                Answer::Closed => return codes,
                Answer::Frame(Response::Error { code, .. }) => codes.push(code),
                Answer::Frame(_) => {}
            }
        }
        panic!("the server kept answering instead of closing");
    }
}

/// The `resp=` address from the server's port file.
pub fn resp_addr(server: &Server) -> SocketAddr {
    let ports = server
        .data_dir()
        .parent()
        .expect("data dir has a parent")
        .join("ports");
    let text = std::fs::read_to_string(&ports).expect("read the port file");
    text.lines()
        .find_map(|l| l.strip_prefix("resp="))
        .unwrap_or_else(|| panic!("no resp= line in the port file:\n{text}"))
        .trim()
        .parse()
        .expect("resp= is host:port")
}

/// Runs the `kvstore` CLI against `addr`; returns the full output.
pub fn cli(addr: SocketAddr, args: &[&str]) -> std::process::Output {
    cli_with_stdin(addr, args, None)
}

/// Like [`cli`], feeding `stdin` to the process.
pub fn cli_with_stdin(
    addr: SocketAddr,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> std::process::Output {
    let mut cmd = Command::new(kvstore_bin());
    cmd.args(args)
        .arg("--addr")
        .arg(addr.to_string())
        .env_remove("KVSTORE_ADDR")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    run_cli(cmd, stdin)
}

/// Spawns a prepared CLI command, feeds stdin, waits (bounded). Output is
/// collected by a helper thread so a large stdout cannot block the child.
pub fn run_cli(mut cmd: Command, stdin: Option<&[u8]>) -> std::process::Output {
    let mut child = cmd.spawn().expect("spawn kvstore");
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input).expect("write stdin");
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(NET_DEADLINE) {
        Ok(output) => output.expect("collect CLI output"),
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            panic!("kvstore CLI did not exit within {NET_DEADLINE:?}");
        }
    }
}
