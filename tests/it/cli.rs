//! The client commands of the `kvstore` binary against a real node:
//! output, exit codes, `--addr` placement and `KVSTORE_ADDR`.

use crate::common;

use std::process::{Command, Stdio};

use common::{cli, cli_with_stdin, kvstore_bin, run_cli, Server};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn put_read_get_delete_exists() {
    let server = Server::start(&[]);
    let a = server.addr;
    let out = cli(a, &["put", "testkey", "testvalue"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = cli(a, &["read", "testkey"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"testvalue", "raw bytes, no newline");
    let out = cli(a, &["get", "testkey"]);
    assert_eq!(out.stdout, b"testvalue");

    let out = cli(a, &["exists", "testkey"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), "true");

    let out = cli(a, &["delete", "testkey"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = cli(a, &["read", "testkey"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).lines().count(),
        1,
        "one line: {}",
        stderr(&out)
    );

    let out = cli(a, &["exists", "testkey"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out).trim(), "false");
}

#[test]
fn values_from_stdin_and_file_keep_every_byte() {
    let server = Server::start(&[]);
    let a = server.addr;
    let binary: Vec<u8> = (0..=255u8).chain(b"\n\r\0end".iter().copied()).collect();
    let out = cli_with_stdin(a, &["put", "from-stdin"], Some(&binary));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cli(a, &["read", "from-stdin"]).stdout, binary);

    let out = cli_with_stdin(a, &["put", "dash", "-"], Some(b"dash value"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cli(a, &["read", "dash"]).stdout, b"dash value");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("value.bin");
    std::fs::write(&path, &binary).unwrap();
    let out = cli(a, &["put", "from-file", "--file", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cli(a, &["read", "from-file"]).stdout, binary);
}

#[test]
fn addr_before_or_after_the_subcommand_and_from_the_environment() {
    let server = Server::start(&[]);
    let addr = server.addr.to_string();

    let mut cmd = Command::new(kvstore_bin());
    cmd.args(["--addr", &addr, "put", "k", "before"])
        .env_remove("KVSTORE_ADDR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    assert!(run_cli(cmd, None).status.success());

    let mut cmd = Command::new(kvstore_bin());
    cmd.args(["read", "k"])
        .env("KVSTORE_ADDR", &addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run_cli(cmd, None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"before");
}

#[test]
fn unreachable_node_is_one_clear_line_and_exit_1() {
    // A port that was just free: nothing listens there.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let out = cli(addr, &["read", "k"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cannot connect"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn stats_ping_and_compact() {
    let server = Server::start(&[]);
    let a = server.addr;
    assert!(cli(a, &["put", "k", "v"]).status.success());

    let out = cli(a, &["stats"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["keys", "1"]),
        "{table}"
    );

    let out = cli(a, &["stats", "--json"]);
    assert!(out.status.success());
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stats --json is JSON");
    assert_eq!(json["keys"], 1);

    let out = cli(a, &["ping"]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("PONG"));

    let out = cli(a, &["compact"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(cli(a, &["read", "k"]).stdout, b"v");
}

#[test]
fn bench_reports_throughput_and_percentiles() {
    let server = Server::start(&[]);
    let out = cli(
        server.addr,
        &[
            "bench", "-c", "4", "-n", "2000", "-d", "100", "-r", "1000", "-P", "8", "-t", "put,get",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "====== PUT ======",
        "====== GET ======",
        "requests per second",
        "p99.9",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    for line in text.lines().filter(|l| l.contains("errors")) {
        assert!(line.trim_start().starts_with("0 errors"), "{text}");
    }
}

#[test]
fn compact_with_data_dir_works_offline() {
    let mut server = Server::start(&[]);
    for i in 0..3 {
        let value = format!("v{i}");
        assert!(cli(server.addr, &["put", "k", &value]).status.success());
    }
    assert!(server.sigterm().success());
    let dir = server.data_dir();
    let mut cmd = Command::new(kvstore_bin());
    cmd.args(["compact", "--data-dir", dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run_cli(cmd, None);
    assert!(out.status.success(), "{}", stderr(&out));
    server.restart();
    assert_eq!(cli(server.addr, &["read", "k"]).stdout, b"v2");
}

/// On a terminal, `read` ends the value with a newline (the prompt starts
/// on its own line); piped, it writes the bytes exactly. The terminal is a
/// real pseudo-terminal made by util-linux `script`.
#[test]
fn read_adds_a_newline_on_a_terminal_only() {
    let server = Server::start(&[]);
    let a = server.addr;
    assert!(cli(a, &["put", "k", "value"]).status.success());
    assert!(cli(a, &["put", "nl", "line\n"]).status.success());
    assert_eq!(cli(a, &["read", "k"]).stdout, b"value", "piped: raw bytes");

    let on_terminal = |key: &str| {
        let line = format!("{} --addr {a} read {key}", kvstore_bin());
        let mut cmd = Command::new("script");
        cmd.args(["-q", "-e", "-c", &line, "/dev/null"])
            .env_remove("KVSTORE_ADDR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = run_cli(cmd, None);
        assert!(out.status.success(), "script: {}", stderr(&out));
        // The terminal turns "\n" into "\r\n".
        stdout(&out)
    };
    assert_eq!(on_terminal("k"), "value\r\n");
    assert_eq!(on_terminal("nl"), "line\r\n", "no second newline");
}

#[test]
fn a_malformed_addr_is_one_line_naming_host_port() {
    for bad in ["nohost", "127.0.0.1", ":5555", "host:port", "host:70000"] {
        let mut cmd = Command::new(kvstore_bin());
        cmd.args(["--addr", bad, "read", "k"])
            .env_remove("KVSTORE_ADDR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = run_cli(cmd, None);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("--addr") && err.contains("HOST:PORT"),
            "{bad}: {err}"
        );
    }
    // The same check for addresses given to other flags.
    let mut cmd = Command::new(kvstore_bin());
    cmd.args(["failover", "--nodes", "127.0.0.1:1,nohost"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let err = stderr(&run_cli(cmd, None));
    assert!(
        err.contains("--nodes") && err.contains("HOST:PORT"),
        "{err}"
    );
}

#[test]
fn serve_refuses_a_data_dir_that_is_a_file_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let (status, err) = common::run_to_exit(
        &[
            "serve",
            "--data-dir",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ],
        &[],
        common::START_DEADLINE,
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line, nothing started: {err}");
    assert!(
        err.contains("--data-dir") && err.contains("is not a directory"),
        "{err}"
    );
}

/// Client commands show the global flags under their own heading, and the
/// client's meaning of `--auth-token-file`; `serve` shows its own.
#[test]
fn help_groups_global_options_and_tells_each_side_its_meaning() {
    let help = |args: &[&str]| {
        let mut cmd = Command::new(kvstore_bin());
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let out = run_cli(cmd, None);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    for command in ["bench", "put", "read", "stats", "promote"] {
        let text = help(&[command, "--help"]);
        let (own, global) = text
            .split_once("Global options:")
            .unwrap_or_else(|| panic!("{command} --help has no Global options heading:\n{text}"));
        for flag in [
            "--addr",
            "--auth-token-file",
            "--tls-ca",
            "--tls-server-name",
        ] {
            assert!(
                !own.contains(flag),
                "{command}: {flag} among its own options:\n{text}"
            );
            assert!(
                global.contains(flag),
                "{command}: {flag} not under Global options:\n{text}"
            );
        }
        assert!(
            !text.contains("`serve`") && !text.contains("accepted as a client"),
            "{command} --help describes serve:\n{text}"
        );
    }
    let serve = help(&["serve", "--help"]);
    let own = serve.split("Global options:").next().unwrap_or_default();
    assert!(
        own.contains("--auth-token-file") && own.contains("accepted as a client"),
        "{serve}"
    );
}
