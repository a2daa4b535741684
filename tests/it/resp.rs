//! The RESP listener (`--resp-listen`) against clients nobody here wrote:
//! `redis-cli` (Debian `redis-tools`) and redis-py (PyPI `redis`, in the
//! repository's virtualenv `.venv/`, driving `tests/resp/client.py`).
//! `make deps` installs both; a missing tool fails the test with that hint,
//! it never skips.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{resp_addr, wait_for, Server, START_DEADLINE};

fn start_with_resp(extra: &[&str]) -> (Server, SocketAddr) {
    let mut args = vec!["--resp-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    let addr = resp_addr(&server);
    (server, addr)
}

/// Runs redis-cli against `addr`; panics (never skips) when it is missing.
fn redis_cli(addr: SocketAddr, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot run redis-cli ({e}): run `make deps` (it installs Debian's redis-tools)")
    });
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(bytes).expect("write redis-cli stdin");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().expect("wait redis-cli").is_some() {
            return child.wait_with_output().expect("redis-cli output");
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("redis-cli {args:?} did not finish in 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// redis-cli's stdout, trimmed; errors are printed on stdout too.
fn cli(addr: SocketAddr, args: &[&str]) -> String {
    let out = redis_cli(addr, args, None);
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("Could not connect"),
        "redis-cli {args:?}: {err}"
    );
    text
}

/// Runs `tests/resp/client.py` with the virtualenv's python (where
/// redis-py is) and asserts it succeeded.
fn python_client(addr: SocketAddr, scenario: &[&str]) {
    let script = common::repo_root().join("tests/resp/client.py");
    let out = Command::new(common::venv_bin("python"))
        .arg(script)
        .args([&addr.ip().to_string(), &addr.port().to_string()])
        .args(scenario)
        .output()
        .unwrap_or_else(|e| panic!("cannot run .venv/bin/python ({e})"));
    assert!(
        out.status.success(),
        "redis-py scenario {scenario:?} failed ({}); `make deps` installs redis-py into .venv/ if it is missing:\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn redis_py_runs_the_command_set_against_a_master() {
    let (_server, addr) = start_with_resp(&[]);
    python_client(addr, &["master"]);
}

#[test]
fn no_resp_line_without_the_flag() {
    let server = Server::start(&[]);
    let ports = server.data_dir().parent().unwrap().join("ports");
    let text = std::fs::read_to_string(ports).unwrap();
    assert!(!text.contains("resp="), "{text}");
}

#[test]
fn redis_cli_set_get_mset_info_errors_and_binary_values() {
    let (server, addr) = start_with_resp(&[]);
    assert_eq!(cli(addr, &["PING"]), "PONG");
    assert_eq!(cli(addr, &["SET", "greeting", "hello world"]), "OK");
    assert_eq!(cli(addr, &["GET", "greeting"]), "hello world");
    assert_eq!(cli(addr, &["MSET", "a", "1", "b", "2"]), "OK");
    assert_eq!(cli(addr, &["MGET", "a", "nope", "b"]), "1\n\n2");
    assert_eq!(cli(addr, &["DEL", "a", "nope"]), "1");
    assert_eq!(cli(addr, &["EXISTS", "a", "b"]), "1");
    assert_eq!(cli(addr, &["SET", "b", "3", "NX"]), "");
    assert_eq!(cli(addr, &["SET", "b", "3", "XX"]), "OK");
    assert_eq!(cli(addr, &["DBSIZE"]), "2");

    // Every byte value through `-x` (last argument from stdin) and back raw.
    let blob: Vec<u8> = (0..=255u8).collect();
    let out = redis_cli(addr, &["-x", "SET", "blob"], Some(&blob));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    let out = redis_cli(addr, &["--raw", "GET", "blob"], None);
    assert_eq!(out.stdout, [&blob[..], b"\n"].concat());

    let unknown = cli(addr, &["FROBNICATE", "x"]);
    assert!(
        unknown.starts_with("ERR unknown command 'FROBNICATE'"),
        "{unknown}"
    );
    let arity = cli(addr, &["GET"]);
    assert_eq!(arity, "ERR wrong number of arguments for 'get' command");
    let ttl = cli(addr, &["SET", "k", "v", "EX", "10"]);
    assert!(ttl.starts_with("ERR SET EX is not supported"), "{ttl}");
    assert!(cli(addr, &["SELECT", "3"]).starts_with("ERR DB index is out of range"));

    let info = cli(addr, &["INFO"]);
    for field in [
        "role:master",
        "connected_slaves:0",
        "master_repl_offset:",
        "aof_enabled:1",
        "total_commands_processed:",
        "db0:keys=3,",
    ] {
        assert!(info.contains(field), "INFO lacks {field}:\n{info}");
    }
    let config = cli(addr, &["CONFIG", "GET", "appendfsync"]);
    assert_eq!(config, "appendfsync\nalways");

    // The same commands are counted in the request metrics.
    let scrape = common::scrape(server.http_addr);
    let resp_get = scrape.samples.iter().find(|s| {
        s.metric == "kvstore_requests_total"
            && s.labels.get("op") == Some("resp_get")
            && s.labels.get("outcome") == Some("ok")
    });
    assert!(
        resp_get.is_some(),
        "no kvstore_requests_total{{op=resp_get}}"
    );
}

#[test]
fn redis_cli_pipe_mode_takes_a_thousand_pipelined_writes() {
    let (_server, addr) = start_with_resp(&[]);
    let mut input = Vec::new();
    for i in 0..1000 {
        input.extend(kvstore::resp::parse::encode_request(&[
            b"SET",
            format!("k{i}").as_bytes(),
            format!("v{i}").as_bytes(),
        ]));
    }
    let out = redis_cli(addr, &["--pipe"], Some(&input));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("errors: 0, replies: 1000"), "{text}");
    assert_eq!(cli(addr, &["DBSIZE"]), "1000");
    assert_eq!(cli(addr, &["GET", "k999"]), "v999");
}

#[test]
fn a_replica_refuses_writes_with_readonly_naming_its_master() {
    let replica = Server::start_unready(&[
        "--resp-listen",
        "127.0.0.1:0",
        "--role",
        "replica",
        "--master-addr",
        "127.0.0.1:1",
    ]);
    let addr = resp_addr(&replica);
    // The replica has no master yet; its RESP port still answers reads.
    let refused = wait_for(START_DEADLINE, "the replica's RESP port", || {
        let text = cli(addr, &["SET", "k", "v"]);
        (!text.is_empty()).then_some(text)
    });
    assert_eq!(
        refused,
        "READONLY You can't write against a read only replica. master is 127.0.0.1:1"
    );
    python_client(addr, &["replica", "127.0.0.1:1"]);
    let info = cli(addr, &["INFO", "replication"]);
    assert!(info.contains("master_link_status:down"), "{info}");
}

#[test]
fn master_info_lists_its_replica_and_the_replica_serves_what_was_set() {
    let (master, maddr) = start_with_resp(&[]);
    let master_bin = master.addr.to_string();
    let replica = Server::start(&[
        "--resp-listen",
        "127.0.0.1:0",
        "--role",
        "replica",
        "--master-addr",
        &master_bin,
    ]);
    let raddr = resp_addr(&replica);
    assert_eq!(cli(maddr, &["SET", "replicated", "yes"]), "OK");
    wait_for(START_DEADLINE, "the value on the replica", || {
        (cli(raddr, &["GET", "replicated"]) == "yes").then_some(())
    });
    let info = wait_for(START_DEADLINE, "connected_slaves:1", || {
        let info = cli(maddr, &["INFO", "replication"]);
        info.contains("connected_slaves:1").then_some(info)
    });
    assert!(info.contains("slave0:ip=127.0.0.1,port="), "{info}");
    let rinfo = cli(raddr, &["INFO", "replication"]);
    assert!(rinfo.contains("role:slave"), "{rinfo}");
    assert!(rinfo.contains("master_link_status:up"), "{rinfo}");
    assert!(
        rinfo.contains(&format!("master_port:{}", master.addr.port())),
        "{rinfo}"
    );
}

#[test]
fn an_oversized_bulk_length_is_refused_before_the_data_and_closes() {
    let (_server, addr) = start_with_resp(&[]);
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // 2^40 bytes announced: refused at once, nothing allocated or awaited.
    s.write_all(b"*2\r\n$3\r\nGET\r\n$1099511627776\r\n")
        .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("read until closed");
    assert_eq!(answer, b"-ERR Protocol error: invalid bulk length\r\n");
}

#[test]
fn a_request_left_incomplete_times_out_and_closes() {
    let (_server, addr) = start_with_resp(&["--frame-timeout-secs", "1"]);
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"*2\r\n$3\r\nGET\r\n").unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("read until closed");
    assert_eq!(
        answer,
        b"-ERR Protocol error: request not completed in time\r\n"
    );
}
