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

/// Every expiry command through redis-cli, with Redis's answers, and the
/// error replies for bad arguments.
#[test]
fn redis_cli_expiry_commands_follow_redis() {
    let (_server, addr) = start_with_resp(&[]);
    let int = |args: &[&str]| -> i64 {
        let out = cli(addr, args);
        out.parse()
            .unwrap_or_else(|_| panic!("{args:?} answered {out:?}, not an integer"))
    };
    // SET with a relative expiry; TTL rounds, PTTL is exact, EXPIRETIME
    // is absolute.
    assert_eq!(cli(addr, &["SET", "s", "v1", "EX", "100"]), "OK");
    assert!((99..=100).contains(&int(&["TTL", "s"])));
    assert!((90_000..=100_000).contains(&int(&["PTTL", "s"])));
    let now_s = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    assert!((now_s + 95..=now_s + 101).contains(&int(&["EXPIRETIME", "s"])));
    assert!(int(&["PEXPIRETIME", "s"]) > now_s * 1000);
    // KEEPTTL keeps it, a plain SET clears it.
    assert_eq!(cli(addr, &["SET", "s", "v2", "KEEPTTL"]), "OK");
    assert!(int(&["TTL", "s"]) > 0);
    assert_eq!(cli(addr, &["GET", "s"]), "v2");
    assert_eq!(cli(addr, &["SET", "s", "v3"]), "OK");
    assert_eq!(int(&["TTL", "s"]), -1);
    assert_eq!(int(&["TTL", "nope"]), -2);
    assert_eq!(int(&["PTTL", "nope"]), -2);
    assert_eq!(int(&["EXPIRETIME", "s"]), -1);

    // EXPIRE and its conditions; no expiry counts as infinite for GT/LT.
    assert_eq!(int(&["EXPIRE", "s", "50", "GT"]), 0);
    assert_eq!(int(&["EXPIRE", "s", "50", "XX"]), 0);
    assert_eq!(int(&["EXPIRE", "s", "50", "NX"]), 1);
    assert_eq!(int(&["EXPIRE", "s", "60", "NX"]), 0);
    assert_eq!(int(&["EXPIRE", "s", "40", "GT"]), 0);
    assert_eq!(int(&["EXPIRE", "s", "70", "GT"]), 1);
    assert_eq!(int(&["EXPIRE", "s", "80", "LT"]), 0);
    assert_eq!(int(&["PEXPIRE", "s", "30000", "LT"]), 1);
    assert!((25..=30).contains(&int(&["TTL", "s"])));
    assert_eq!(int(&["EXPIREAT", "s", &(now_s + 500).to_string()]), 1);
    assert!((495..=500).contains(&int(&["TTL", "s"])));
    assert_eq!(int(&["EXPIRE", "nope", "10"]), 0);
    assert_eq!(int(&["PERSIST", "s"]), 1);
    assert_eq!(int(&["PERSIST", "s"]), 0);
    assert_eq!(int(&["TTL", "s"]), -1);
    assert_eq!(cli(addr, &["GET", "s"]), "v3");
    // A time in the past deletes the key.
    assert_eq!(int(&["PEXPIREAT", "s", "1"]), 1);
    assert_eq!(int(&["EXISTS", "s"]), 0);
    assert_eq!(cli(addr, &["SET", "n", "v"]), "OK");
    assert_eq!(int(&["EXPIRE", "n", "-1"]), 1);
    assert_eq!(cli(addr, &["GET", "n"]), "");

    // SET's conditions and GET, decided in the writer.
    assert_eq!(cli(addr, &["SET", "g", "old"]), "OK");
    assert_eq!(cli(addr, &["SET", "g", "new", "GET"]), "old");
    assert_eq!(cli(addr, &["SET", "g", "x", "NX"]), "");
    assert_eq!(cli(addr, &["SET", "g2", "first", "NX", "GET"]), "");
    assert_eq!(cli(addr, &["GET", "g2"]), "first");
    assert_eq!(cli(addr, &["SET", "g3", "x", "XX", "PX", "5000"]), "");
    assert_eq!(int(&["EXISTS", "g3"]), 0);
    assert_eq!(cli(addr, &["SET", "g", "y", "XX", "PX", "50000"]), "OK");
    assert!((40_000..=50_000).contains(&int(&["PTTL", "g"])));
    assert_eq!(
        cli(
            addr,
            &["SET", "g", "z", "PXAT", &((now_s + 100) * 1000).to_string()]
        ),
        "OK"
    );
    assert!((95..=101).contains(&int(&["TTL", "g"])));
    assert_eq!(cli(addr, &["SETEX", "se", "100", "v"]), "OK");
    assert!((99..=100).contains(&int(&["TTL", "se"])));
    assert_eq!(cli(addr, &["PSETEX", "pe", "100000", "v"]), "OK");
    assert!((90_000..=100_000).contains(&int(&["PTTL", "pe"])));

    // A short expiry: the key reads as absent (GET, EXISTS, MGET) once it
    // passes.
    assert_eq!(cli(addr, &["SET", "short", "v", "PX", "200"]), "OK");
    wait_for(START_DEADLINE, "the short key to expire", || {
        (cli(addr, &["EXISTS", "short"]) == "0").then_some(())
    });
    assert_eq!(cli(addr, &["GET", "short"]), "");
    assert_eq!(cli(addr, &["MGET", "se", "short", "se"]), "v\n\nv");
    assert_eq!(int(&["TTL", "short"]), -2);

    // Bad arguments get Redis's errors.
    let not_int = "ERR value is not an integer or out of range";
    for (args, expected) in [
        (&["SET", "k", "v", "EX", "abc"][..], not_int),
        (&["SET", "k", "v", "EX", "1.5"], not_int),
        (&["SET", "k", "v", "EX", "99999999999999999999"], not_int),
        (
            &["SET", "k", "v", "EX", "0"],
            "ERR invalid expire time in 'set' command",
        ),
        (
            &["SET", "k", "v", "PX", "-5"],
            "ERR invalid expire time in 'set' command",
        ),
        (
            &["SET", "k", "v", "EX", "9223372036854775807"],
            "ERR invalid expire time in 'set' command",
        ),
        (
            &["SET", "k", "v", "EX", "10", "PX", "10"],
            "ERR syntax error",
        ),
        (
            &["SET", "k", "v", "EX", "10", "KEEPTTL"],
            "ERR syntax error",
        ),
        (&["SET", "k", "v", "NX", "XX"], "ERR syntax error"),
        (&["SET", "k", "v", "EX"], "ERR syntax error"),
        (
            &["SETEX", "k", "0", "v"],
            "ERR invalid expire time in 'setex' command",
        ),
        (
            &["PSETEX", "k", "-1", "v"],
            "ERR invalid expire time in 'psetex' command",
        ),
        (&["SETEX", "k", "x", "v"], not_int),
        (&["EXPIRE", "k", "abc"], not_int),
        (
            &["EXPIRE", "k", "9223372036854775807"],
            "ERR invalid expire time in 'expire' command",
        ),
        (
            &["EXPIRE", "k", "10", "NX", "XX"],
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ),
        (
            &["EXPIRE", "k", "10", "GT", "LT"],
            "ERR GT and LT options at the same time are not compatible",
        ),
        (&["EXPIRE", "k", "10", "FOO"], "ERR Unsupported option FOO"),
        (&["TTL"], "ERR wrong number of arguments for 'ttl' command"),
        (
            &["PERSIST", "a", "b"],
            "ERR wrong number of arguments for 'persist' command",
        ),
    ] {
        assert_eq!(cli(addr, args), expected, "{args:?}");
    }
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

/// One pipeline of writes in one TCP write, so the server runs them
/// together: overwrites of keys written before it and within it, MSET and
/// multi-key DEL, and malformed writes among them, under each durability
/// policy. Every answer and the final values are Redis's (a DEL of several
/// keys counts one an MSET just before it in the pipeline set, also under
/// `always`, where that write reaches the index only once durable).
#[test]
fn a_pipelined_run_of_writes_answers_and_stores_as_one_by_one() {
    for durability in ["never", "interval", "always"] {
        let (_server, addr) = start_with_resp(&["--durability", durability]);
        assert_eq!(cli(addr, &["MSET", "old1", "x", "old2", "y"]), "OK");
        let requests: &[&[&[u8]]] = &[
            &[b"SET", b"old1", b"a"],
            &[b"SET", b"new", b"b"],
            &[b"SET", b"new", b"c"],
            &[b"SET"],
            &[b"MSET", b"m1", b"1", b"old2", b"2"],
            &[b"MSET", b"odd"],
            &[b"DEL", b"m1", b"gone", b"m1"],
            &[b"DEL"],
            &[b"DEL", b"new"],
            &[b"SET", b"new", b"d"],
        ];
        let expected: &[u8] = b"+OK\r\n+OK\r\n+OK\r\n\
            -ERR wrong number of arguments for 'set' command\r\n\
            +OK\r\n\
            -ERR wrong number of arguments for 'mset' command\r\n\
            :1\r\n\
            -ERR wrong number of arguments for 'del' command\r\n\
            :1\r\n+OK\r\n";
        let mut s = send_pipeline(addr, requests);
        let mut answers = vec![0u8; expected.len()];
        s.read_exact(&mut answers).expect("every answer");
        assert_eq!(
            String::from_utf8_lossy(&answers),
            String::from_utf8_lossy(expected),
            "{durability}"
        );
        for (key, value) in [("old1", "a"), ("old2", "2"), ("new", "d"), ("m1", "")] {
            assert_eq!(cli(addr, &["GET", key]), value, "{durability} {key}");
        }
        assert_eq!(cli(addr, &["DBSIZE"]), "3", "{durability}");
    }
}

/// A pipeline's GETs are gathered into runs and readied together before
/// they run, but each still reads what the requests before it in the
/// pipeline wrote, and no later write: GETs between SETs and DELs of the
/// same key, malformed GETs among them, and a run longer than the loop
/// gathers at once (100 GETs), under each durability policy.
#[test]
fn pipelined_gets_among_writes_read_what_the_requests_before_them_wrote() {
    let bulk = |v: &str| format!("${}\r\n{v}\r\n", v.len());
    for durability in ["never", "always"] {
        let (_server, addr) = start_with_resp(&["--durability", durability]);
        assert_eq!(cli(addr, &["SET", "a", "0"]), "OK");
        let mut requests: Vec<Vec<String>> = Vec::new();
        let mut expected = String::new();
        let mut ask = |args: &[&str], answer: String| {
            requests.push(args.iter().map(|a| a.to_string()).collect());
            expected.push_str(&answer);
        };
        ask(&["GET", "a"], bulk("0"));
        ask(&["SET", "a", "1"], "+OK\r\n".into());
        ask(&["GET", "a"], bulk("1"));
        ask(&["GET", "a"], bulk("1"));
        ask(&["SET", "a", "2"], "+OK\r\n".into());
        ask(&["GET", "a"], bulk("2"));
        ask(&["GET", "missing"], "$-1\r\n".into());
        ask(
            &["GET"],
            "-ERR wrong number of arguments for 'get' command\r\n".into(),
        );
        ask(&["GET", "a"], bulk("2"));
        ask(&["DEL", "a"], ":1\r\n".into());
        ask(&["GET", "a"], "$-1\r\n".into());
        for i in 0..100 {
            ask(
                &["SET", &format!("k{i}"), &format!("v{i}")],
                "+OK\r\n".into(),
            );
        }
        for i in (0..100).rev() {
            ask(&["GET", &format!("k{i}")], bulk(&format!("v{i}")));
        }
        ask(&["SET", "k0", "last"], "+OK\r\n".into());
        ask(&["GET", "k0"], bulk("last"));
        let mut s = send_pipeline(addr, &requests);
        let mut answers = vec![0u8; expected.len()];
        s.read_exact(&mut answers).expect("every answer");
        assert_eq!(String::from_utf8_lossy(&answers), expected, "{durability}");
    }
}

/// Connects and sends `requests` (each a command and its arguments) in
/// one TCP write; the connection, to read the answers from.
fn send_pipeline<R, A>(addr: SocketAddr, requests: &[R]) -> TcpStream
where
    R: AsRef<[A]>,
    A: AsRef<[u8]>,
{
    let mut input = Vec::new();
    for args in requests {
        let args: Vec<&[u8]> = args.as_ref().iter().map(AsRef::as_ref).collect();
        input.extend(kvstore::resp::parse::encode_request(&args));
    }
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&input).unwrap();
    s
}

/// Sends `requests` in one TCP write and reads one single-line answer
/// (`+`, `-` or `:`) for each.
fn pipeline(addr: SocketAddr, requests: &[Vec<Vec<u8>>]) -> Vec<String> {
    let s = send_pipeline(addr, requests);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(s));
    (0..requests.len())
        .map(|i| match lines.next() {
            Some(Ok(line)) => line,
            other => panic!("answer {i} of {}: {other:?}", requests.len()),
        })
        .collect()
}

fn total_commands(addr: SocketAddr) -> u64 {
    let info = cli(addr, &["INFO", "stats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no total_commands_processed in {info}"))
}

/// Consecutive plain SETs of a pipeline go to the engine as one append;
/// each is still answered, counted and stored as if sent alone: a SET
/// whose key is over the engine's limit among them is refused alone, a
/// SET with options among them is decided in its place, and a later SET
/// of a key in the same group wins.
#[test]
fn pipelined_plain_sets_are_answered_counted_and_stored_one_by_one() {
    for durability in ["never", "always"] {
        let (_server, addr) = start_with_resp(&["--durability", durability]);
        let set = |k: &[u8], v: &[u8]| vec![b"SET".to_vec(), k.to_vec(), v.to_vec()];
        let long_key = vec![b'k'; kvstore::engine::MAX_KEY_LEN + 1];
        let mut requests = vec![set(b"a", b"1"), set(b"b", b"1")];
        requests.push(set(&long_key, b"v"));
        requests.push(set(b"a", b"2"));
        requests.push(vec![
            b"SET".to_vec(),
            b"b".to_vec(),
            b"nx".to_vec(),
            b"NX".to_vec(),
        ]);
        requests.extend((0..40).map(|i| set(format!("k{i}").as_bytes(), b"x")));
        requests.push(set(b"a", b"3"));
        let before = total_commands(addr);
        let answers = pipeline(addr, &requests);
        for (i, answer) in answers.iter().enumerate() {
            match i {
                2 => assert!(
                    answer.starts_with("-") && answer.contains("key of 65537 bytes"),
                    "{durability}: {answer}"
                ),
                4 => assert_eq!(answer, "$-1", "{durability}: SET NX of an existing key"),
                _ => assert_eq!(answer, "+OK", "{durability}: answer {i}"),
            }
        }
        // The pipeline's commands and the INFO that reads the count.
        assert_eq!(
            total_commands(addr) - before,
            requests.len() as u64 + 1,
            "{durability}"
        );
        assert_eq!(cli(addr, &["GET", "a"]), "3", "{durability}");
        assert_eq!(cli(addr, &["GET", "b"]), "1", "{durability}");
        assert_eq!(cli(addr, &["DBSIZE"]), "42", "{durability}");
    }
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
    // Pipelined SETs, appended together on a master, are refused each.
    let sets: Vec<Vec<Vec<u8>>> = (0..3)
        .map(|i| vec![b"SET".to_vec(), format!("k{i}").into_bytes(), b"v".to_vec()])
        .collect();
    for answer in pipeline(addr, &sets) {
        assert_eq!(
            answer,
            "-READONLY You can't write against a read only replica. master is 127.0.0.1:1"
        );
    }
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
