//! `kvstore serve` configuration as a user meets it: bad values fail at
//! start naming the setting, environment variables work and lose to flags,
//! SIGTERM and SIGINT stop a node with exit code 0 within a bound.

use crate::common;

use std::time::{Duration, Instant};

use common::{http_get, run_to_exit, wait_for, Server, START_DEADLINE};
use nix::sys::signal::Signal;

const EXIT_DEADLINE: Duration = Duration::from_secs(10);
/// Local ports so that a value accepted by mistake never binds 5555/9555.
const LOCAL: [&str; 4] = ["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];

#[test]
fn each_invalid_flag_fails_at_start_naming_the_setting() {
    let cases: &[(&str, &str)] = &[
        ("--data-dir", ""),
        ("--listen", "not-an-address"),
        ("--http-listen", "127.0.0.1:99999"),
        ("--durability", "sometimes"),
        ("--fsync-interval-ms", "0"),
        ("--segment-max-bytes", "lots"),
        ("--role", "leader"),
        ("--master-addr", "no-port"),
        ("--replication-mode", "semi-sync"),
        ("--replication-enabled", "perhaps"),
        ("--master-ordinal", "first"),
        ("--max-connections", "0"),
        ("--max-frame-bytes", "5000000000"),
        ("--idle-timeout-secs", "-1"),
        ("--frame-timeout-secs", "0"),
        ("--shutdown-timeout-secs", "forever"),
        ("--log-format", "yaml"),
        ("--port-file", ""),
    ];
    for (flag, value) in cases {
        let mut args = vec!["serve"];
        // Settings that only matter for a replica are checked as one.
        match *flag {
            "--master-addr" => args.extend(["--role", "replica"]),
            "--master-ordinal" => args.extend(["--role", "auto", "--master-addr", "m:5555"]),
            _ => {}
        }
        let flag_eq = format!("{flag}={value}");
        args.push(&flag_eq);
        if !matches!(*flag, "--listen" | "--http-listen") {
            args.extend(LOCAL);
        }
        let (status, stderr) = run_to_exit(&args, &[], EXIT_DEADLINE);
        assert_eq!(status.code(), Some(2), "{flag_eq}: {stderr}");
        let env = format!("KVSTORE_{}", flag[2..].to_uppercase().replace('-', "_"));
        assert!(
            stderr.contains(flag) && stderr.contains(&env),
            "{flag_eq}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "one line, no dump: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
}

#[test]
fn invalid_environment_values_fail_naming_the_variable() {
    let cases: &[(&str, &str)] = &[
        ("KVSTORE_DURABILITY", "often"),
        ("KVSTORE_MAX_CONNECTIONS", "many"),
        ("KVSTORE_LOG_FORMAT", "xml"),
        ("REPLICATION_MODE", "eventually"),
        ("REPLICATION_ENABLED", "kinda"),
    ];
    for (var, value) in cases {
        let mut args = vec!["serve"];
        args.extend(LOCAL);
        let (status, stderr) = run_to_exit(&args, &[(var, value)], EXIT_DEADLINE);
        assert_eq!(status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(stderr.contains(var), "{var}={value}: {stderr}");
    }
    let (status, stderr) = run_to_exit(
        &["serve", "--role", "auto"],
        &[("MASTER_ORDINAL", "x")],
        EXIT_DEADLINE,
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("MASTER_ORDINAL"), "{stderr}");
}

#[test]
fn a_replica_starts_without_its_master_and_says_whom_it_follows() {
    // Nothing listens on port 1: the replica must still start, log its
    // role, and keep retrying rather than exit.
    let mut server = Server::start_unready(&["--role", "replica", "--master-addr", "127.0.0.1:1"]);
    wait_for(START_DEADLINE, "the role line", || {
        server
            .logs()
            .contains("Starting as REPLICA of 127.0.0.1:1")
            .then_some(())
    });
    let (code, body) = http_get(server.http_addr, "/readyz").expect("readyz");
    assert_eq!(
        code, 503,
        "a replica without its master is not ready: {body}"
    );
    assert_eq!(server.sigterm().code(), Some(0));
}

#[test]
fn environment_variables_configure_a_node_and_flags_win() {
    let server = Server::start_with_env(
        &["--log-format", "json"],
        &[
            ("KVSTORE_LOG_FORMAT", "text"),
            ("KVSTORE_DURABILITY", "never"),
            ("KVSTORE_MAX_CONNECTIONS", "3"),
        ],
    );
    // The flag won over KVSTORE_LOG_FORMAT: every log line is JSON.
    let logs = server.logs();
    let start = logs
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .find(|v| v["fields"]["message"] == "Starting as MASTER");
    assert!(start.is_some(), "no JSON start line in:\n{logs}");
    assert!(server.data_dir().is_dir(), "data dir created");
}

#[test]
fn data_dir_and_ports_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-env");
    let ports = dir.path().join("ports");
    let mut child = std::process::Command::new(common::kvstore_bin())
        .arg("serve")
        .env("KVSTORE_DATA_DIR", &data)
        .env("KVSTORE_LISTEN", "127.0.0.1:0")
        .env("KVSTORE_HTTP_LISTEN", "127.0.0.1:0")
        .env("KVSTORE_PORT_FILE", &ports)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (_, http) = common::wait_for(common::START_DEADLINE, "port file", || {
        common::read_port_file(&ports)
    });
    common::wait_for(common::START_DEADLINE, "ready", || {
        matches!(common::http_get(http, "/readyz"), Ok((200, _))).then_some(())
    });
    assert!(data.is_dir());
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    let status = common::wait_for(common::STOP_DEADLINE, "exit", || child.try_wait().unwrap());
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigterm_and_sigint_exit_zero_within_a_bound() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut server = Server::start(&[]);
        // An open client connection must not hold the exit up.
        let _conn = std::net::TcpStream::connect(server.addr).unwrap();
        let t = Instant::now();
        let status = server.stop_with(signal);
        assert_eq!(status.code(), Some(0), "{signal}: {}", server.logs());
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{signal} took {:?}",
            t.elapsed()
        );
        let logs = server.logs();
        assert!(logs.contains("Starting as MASTER"), "{logs}");
        assert!(logs.contains("engine flushed and closed"), "{logs}");
    }
}

#[test]
fn a_port_in_use_fails_naming_the_setting() {
    let server = Server::start(&[]);
    let addr = server.addr.to_string();
    let (status, stderr) = run_to_exit(
        &["serve", "--listen", &addr, "--http-listen", "127.0.0.1:0"],
        &[],
        EXIT_DEADLINE,
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--listen") && stderr.contains(&addr),
        "{stderr}"
    );
}

#[test]
fn a_locked_data_dir_fails_with_a_clear_error() {
    let server = Server::start(&[]);
    let dir = server.data_dir();
    let dir = dir.to_str().unwrap();
    let mut args = vec!["serve", "--data-dir", dir];
    args.extend(LOCAL);
    let (status, stderr) = run_to_exit(&args, &[], EXIT_DEADLINE);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("locked") && stderr.contains(dir),
        "{stderr}"
    );
}

/// The signal handlers are installed before the listeners are bound, so
/// even a SIGTERM sent the instant the port file appears takes the graceful
/// path. (The window this guards is microseconds wide; the test repeats to
/// give it a chance.)
#[test]
fn sigterm_right_after_the_port_file_appears_is_graceful() {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let ports = dir.path().join("ports");
        let mut child = std::process::Command::new(common::kvstore_bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(LOCAL)
            .arg("--port-file")
            .arg(&ports)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        common::wait_for(common::START_DEADLINE, "port file", || {
            common::read_port_file(&ports)
        });
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
        let status = common::wait_for(common::STOP_DEADLINE, "exit", || child.try_wait().unwrap());
        assert_eq!(status.code(), Some(0), "{status}");
    }
}
