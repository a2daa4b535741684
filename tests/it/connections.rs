//! Connection slots: at `--max-connections` the connection idle the
//! longest is closed to admit a new one, and at `--max-unauthenticated`
//! the oldest still in its handshake; a connection that does not complete
//! its handshake in time is closed; floods of 2,000 idle, half-header and
//! unauthenticated connections (and of half-sent HTTP requests) never keep
//! a normal client out. Each flood test prints its figures (`slots: ...`).
//! Connections are dealt out to every `--io-threads` thread.

use crate::common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{connect_client, metric, wait_for, Server, START_DEADLINE};
use kvstore::client::{BlockingClient, ClientOptions};
use kvstore::protocol::Request;

#[test]
fn over_the_limit_the_connection_idle_the_longest_makes_room() {
    let server = Server::start(&["--max-connections", "2"]);
    let http = server.http_addr;
    let until = |what: &str, name: &str, want: f64| {
        wait_for(START_DEADLINE, what, || {
            (metric(http, name) == want).then_some(())
        });
    };
    // Two clients past their handshake (HELLO); the first is then idle
    // longer than the second, which is used a little later.
    let mut first = connect_client(server.addr);
    let mut second = connect_client(server.addr);
    std::thread::sleep(Duration::from_millis(20));
    second.put(b"k", b"v").expect("second put");
    until("two accepted", "kvstore_connections_active", 2.0);

    // A third is admitted by closing the first.
    let mut third = connect_client(server.addr);
    third.put(b"k", b"3").expect("third put");
    // (A PUT: reads reconnect on their own.)
    assert!(
        first.put(b"k", b"1").is_err(),
        "the idle-longest connection was not closed"
    );
    assert_eq!(
        second.get(b"k").expect("second get").as_deref(),
        Some(&b"3"[..])
    );
    until("one closed", "kvstore_connections_active", 2.0);
    assert_eq!(evicted(http, "slots_full"), 1.0);
    assert_eq!(evicted(http, "unauthenticated"), 0.0);
    assert_eq!(metric(http, "kvstore_connections_rejected_total"), 0.0);
}

#[test]
fn over_the_handshake_quota_the_oldest_waiting_makes_room() {
    let server = Server::start(&["--max-unauthenticated", "2"]);
    // Two connections that never send anything, then a third.
    let a = TcpStream::connect(server.addr).expect("a");
    let _b = TcpStream::connect(server.addr).expect("b");
    wait_for(START_DEADLINE, "two accepted", || {
        (metric(server.http_addr, "kvstore_connections_active") == 2.0).then_some(())
    });
    let _c = TcpStream::connect(server.addr).expect("c");
    // `a` gets TOO_MANY_CONNECTIONS and is closed.
    a.set_read_timeout(Some(common::NET_DEADLINE))
        .expect("timeout");
    let mut raw = common::Raw::over(a);
    assert_eq!(
        raw.until_closed(),
        vec![kvstore::protocol::ErrorCode::TOO_MANY_CONNECTIONS]
    );
    assert_eq!(evicted(server.http_addr, "unauthenticated"), 1.0);
    // A client that completes its handshake is not counted in the quota.
    common::assert_serves(server.addr);
}

// ---------------------------------------------------------------------------
// Floods: 2,000 hostile connections of one kind, then a normal client.
// ---------------------------------------------------------------------------

/// Hostile connections per flood.
const FLOOD: usize = 2000;
/// A normal client's PUT and read must be done within this, flood or not.
const SERVED_WITHIN: Duration = Duration::from_secs(10);

/// Raises this process's open-files limit to its hard limit; `false` (and
/// the reason printed) when it stays below what a flood needs.
fn enough_files() -> bool {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let need = (FLOOD as u64) * 2 + 512;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        eprintln!("SKIPPED: cannot read RLIMIT_NOFILE");
        return false;
    };
    if soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(0, |(s, _)| s);
    if soft < need {
        eprintln!(
            "SKIPPED: RLIMIT_NOFILE is {soft} (hard {hard}); a flood of {FLOOD} needs {need}"
        );
        return false;
    }
    true
}

/// Opens `FLOOD` connections to `addr`, each sent `first` (maybe nothing),
/// never read. Connections the server closes meanwhile are kept too.
fn flood(addr: SocketAddr, first: &[u8]) -> Vec<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut conns = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        assert!(
            Instant::now() < deadline,
            "opening the flood took over 60 s"
        );
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
        if !first.is_empty() {
            // The server may already have closed it to admit a newer one.
            let _ = s.write_all(first);
        }
        conns.push(s);
    }
    conns
}

/// A normal client's PUT and GET, timed; panics past [`SERVED_WITHIN`].
fn served(addr: SocketAddr, token: Option<&str>, what: &str) -> Duration {
    let started = Instant::now();
    let options = ClientOptions {
        connect_timeout: SERVED_WITHIN,
        request_timeout: SERVED_WITHIN,
        client_name: "normal".into(),
        credential: token.map(|t| Bytes::from(t.to_string())),
        ..ClientOptions::default()
    };
    let mut client = BlockingClient::connect(addr.to_string(), options)
        .unwrap_or_else(|e| panic!("{what}: a normal client could not connect: {e}"));
    client
        .put(b"normal", b"served")
        .unwrap_or_else(|e| panic!("{what}: PUT failed: {e}"));
    let value = client
        .get(b"normal")
        .unwrap_or_else(|e| panic!("{what}: GET failed: {e}"));
    assert_eq!(value.as_deref(), Some(&b"served"[..]), "{what}");
    let took = started.elapsed();
    assert!(took < SERVED_WITHIN, "{what}: served in {took:?}");
    took
}

/// `kvstore_connections_evicted_total{reason=...}`.
fn evicted(http: SocketAddr, reason: &str) -> f64 {
    common::labelled_metric(http, "kvstore_connections_evicted_total", "reason", reason)
}

fn flood_then_serve(kind: &str, args: &[&str], first: &[u8], token: Option<&str>) {
    if !enough_files() {
        return;
    }
    let server = Server::start(args);
    let started = Instant::now();
    let conns = flood(server.addr, first);
    let opened = started.elapsed();
    let took = served(server.addr, token, kind);
    let (waiting, full) = (
        evicted(server.http_addr, "unauthenticated"),
        evicted(server.http_addr, "slots_full"),
    );
    eprintln!(
        "slots: {FLOOD} {kind} connections opened in {opened:?}; a normal client's PUT and GET took {took:?}; \
         evicted: {waiting} in their handshake, {full} idle the longest"
    );
    // The flood was bounded by closing its connections, not by refusing
    // the client.
    assert!(waiting + full > 0.0, "{kind}: nothing was evicted");
    drop(conns);
}

#[test]
fn two_thousand_idle_connections_do_not_keep_a_client_out() {
    flood_then_serve("idle", &[], &[], None);
}

#[test]
fn two_thousand_half_headers_do_not_keep_a_client_out() {
    // Two bytes of a four-byte length prefix.
    flood_then_serve("half-header", &[], &[0x10, 0x00], None);
}

#[test]
fn two_thousand_unauthenticated_connections_do_not_keep_a_client_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "normal-token\n").expect("token file");
    let tokens = tokens.to_str().expect("utf-8").to_string();
    // PING is allowed before HELLO: each stays unauthenticated.
    let ping = common::request_bytes(&Request::Ping);
    flood_then_serve(
        "unauthenticated",
        &["--auth-token-file", &tokens],
        &ping,
        Some("normal-token"),
    );
}

#[test]
fn handshake_timeout_closes_who_does_not_authenticate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "good\n").expect("token file");
    let tokens = tokens.to_str().expect("utf-8");
    let server = Server::start(&["--auth-token-file", tokens, "--handshake-timeout-secs", "1"]);
    let started = Instant::now();
    let mut silent = TcpStream::connect(server.addr).expect("connect");
    let mut pinging = common::raw_connect(server.addr);
    pinging
        .send(&common::request_bytes(&Request::Ping))
        .expect("ping");
    let options = ClientOptions {
        credential: Some(Bytes::from_static(b"good")),
        ..ClientOptions::default()
    };
    let mut authenticated =
        BlockingClient::connect(server.addr.to_string(), options).expect("authenticated client");
    wait_for(START_DEADLINE, "the silent connection to be closed", || {
        common::closed_by_server(&mut silent).then_some(())
    });
    let closed_after = started.elapsed();
    assert!(matches!(
        pinging.answer(),
        common::Answer::Frame(kvstore::protocol::Response::Pong)
    ));
    let codes = pinging.until_closed();
    assert_eq!(
        codes,
        vec![kvstore::protocol::ErrorCode::FRAME_TIMEOUT],
        "the handshake timeout's answer"
    );
    // Past its own handshake deadline, the authenticated one is served.
    authenticated
        .put(b"k", b"v")
        .expect("put after the handshake timeout");
    assert_eq!(
        metric(server.http_addr, "kvstore_handshake_timeouts_total"),
        2.0
    );
    eprintln!("slots: an unauthenticated connection was closed {closed_after:?} after it opened (--handshake-timeout-secs 1)");
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed too early: {closed_after:?}"
    );
}

#[test]
fn http_floods_are_bounded_and_idle_ones_closed() {
    if !enough_files() {
        return;
    }
    let server = Server::start(&[
        "--http-max-connections",
        "32",
        "--http-header-timeout-secs",
        "2",
    ]);
    let started = Instant::now();
    let mut conns = flood(server.http_addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
    let opened = started.elapsed();
    // A probe gets through at once.
    let probe = Instant::now();
    let (status, _) = common::http_get(server.http_addr, "/healthz").expect("GET /healthz");
    let probe = probe.elapsed();
    assert_eq!(status, 200);
    // Every idle one is closed: over the limit at once, the rest at the
    // header timeout.
    let all_closed = wait_for(
        Duration::from_secs(20),
        "every idle HTTP connection to be closed",
        || {
            conns.retain_mut(|s| !common::closed_by_server(s));
            conns.is_empty().then(|| started.elapsed())
        },
    );
    let evicted = metric(server.http_addr, "kvstore_http_connections_evicted_total");
    eprintln!(
        "slots: {FLOOD} half-sent HTTP requests opened in {opened:?}; /healthz answered in {probe:?}; \
         all closed {all_closed:?} after the first; {evicted} evicted at the limit of 32"
    );
    assert!(evicted >= (FLOOD - 32) as f64, "only {evicted} evicted");
}

/// Run time (ns) of each of the node's connection threads, by name.
fn io_thread_run_ns(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut threads = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc tasks") {
        let path = task.expect("task").path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        let name = name.trim().to_string();
        if !name.starts_with("kvstore-io-") {
            continue;
        }
        let schedstat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        let ns: u64 = schedstat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        *threads.entry(name).or_insert(0) += ns;
    }
    threads
}

#[test]
fn light_clients_gather_on_one_io_thread() {
    let server = Server::start(&["--io-threads", "3", "--durability", "never"]);
    let before = io_thread_run_ns(server.pid());
    let names: Vec<&String> = before.keys().collect();
    assert_eq!(
        names,
        ["kvstore-io-0", "kvstore-io-1", "kvstore-io-2"],
        "--io-threads 3 starts three connection threads"
    );
    // Six clients at once, each waiting for every answer: far from
    // saturating one thread, so they all join the first. Each puts and
    // reads back its own keys.
    let mut clients: Vec<BlockingClient> = (0..6).map(|_| connect_client(server.addr)).collect();
    for round in 0..200 {
        for (i, client) in clients.iter_mut().enumerate() {
            let key = format!("c{i}-{round}");
            client.put(key.as_bytes(), b"v").expect("put");
            let read = client.get(key.as_bytes()).expect("get");
            assert_eq!(read.as_deref(), Some(&b"v"[..]));
        }
    }
    // `/metrics` shows the same picture: six on thread 0, none moved.
    let on = |thread: &str| {
        common::labelled_metric(
            server.http_addr,
            "kvstore_io_thread_connections",
            "thread",
            thread,
        )
    };
    assert_eq!([on("0"), on("1"), on("2")], [6.0, 0.0, 0.0]);
    assert_eq!(
        metric(server.http_addr, "kvstore_io_thread_moves_total"),
        0.0
    );
    let busy: Vec<f64> = common::scrape(server.http_addr)
        .samples
        .into_iter()
        .filter(|s| s.metric == "kvstore_io_thread_busy_ratio")
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) => v,
            other => panic!("busy ratio is not a gauge: {other:?}"),
        })
        .collect();
    assert_eq!(busy.len(), 3, "a busy ratio per thread: {busy:?}");
    assert!(busy.iter().all(|b| (0.0..=1.0).contains(b)), "{busy:?}");
    let after = io_thread_run_ns(server.pid());
    for (name, ran) in &after {
        let was = before.get(name).copied().unwrap_or(0);
        if name == "kvstore-io-0" {
            assert!(
                *ran > was,
                "{name} served the clients ({was} ns → {ran} ns)"
            );
        } else {
            assert_eq!(*ran, was, "{name} ran while one thread could serve all six");
        }
    }
    drop(clients);
    common::wait_for(common::START_DEADLINE, "thread 0 empty", || {
        (on("0") == 0.0).then_some(())
    });
}
