//! Malformed and hostile input not covered by tests/it/protocol.rs: wrong
//! lengths inside a payload, truncated batches, an oversized value,
//! replication messages from a client that is not a replica, a replica
//! with a future epoch, and 1,000 clients that declare huge frames and
//! stall. Every case checks the exact answer (an ERROR with the expected
//! code, and a closed connection exactly when that code closes it) and
//! that the server keeps serving others.
//!
//! The memory attacks run against a node with a small client memory
//! budget (64 MiB): half-sent large requests on many connections of both
//! ports, and RESP MGETs of a 4 MiB key whose answers are never read. The
//! node's VmRSS must stay within the budget plus a fixed margin, and a
//! normal client's PUT and read must complete within a deadline. Each
//! prints its figures (`memory: ...`).

use crate::common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::host::{raise_fd_limit, rss_kib};
use common::{assert_serves, raw_connect, resp_addr, wait_for, Answer, Raw, Server};
use kvstore::protocol::replication::SyncRequest;
use kvstore::protocol::{Auth, BatchOp, ErrorCode, Hello, Request, Response};

fn encode(request: &Request) -> Vec<u8> {
    let mut buf = BytesMut::new();
    request.encode(&mut buf).expect("encode");
    buf.to_vec()
}

/// A frame with `opcode` and `payload`, length prefix computed.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len() + 1).expect("small frame");
    [&len.to_le_bytes()[..], &[opcode], payload].concat()
}

/// Expects an ERROR whose code is one of `codes`; then checks the
/// connection is closed if and only if that code closes connections.
fn expect_refused(s: &mut Raw, codes: &[ErrorCode], what: &str) {
    let code = match s.answer() {
        Answer::Frame(Response::Error { code, message }) => {
            assert!(codes.contains(&code), "{what}: got {code}: {message}");
            assert!(!message.is_empty(), "{what}: empty error message");
            code
        }
        other => panic!("{what}: expected an ERROR, got {other:?}"),
    };
    if code.closes_connection() {
        assert!(
            matches!(s.answer(), Answer::Closed),
            "{what}: not closed after {code}"
        );
    } else {
        s.send(&encode(&Request::Ping)).expect("ping");
        assert!(
            matches!(s.answer(), Answer::Frame(Response::Pong)),
            "{what}: connection unusable after {code}"
        );
    }
}

const MALFORMED: &[ErrorCode] = &[ErrorCode::MALFORMED_FRAME, ErrorCode::MALFORMED_REQUEST];

#[test]
fn wrong_lengths_inside_payloads_are_refused() {
    let server = Server::start(&[]);
    let put = encode(&Request::Put {
        key: Bytes::from_static(b"key"),
        value: Bytes::from_static(b"value"),
    });
    let payload = &put[5..];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // Key length says 255 bytes; the frame holds 3 and a value.
        ("key length past the frame", {
            let mut p = payload.to_vec();
            p[0] = 0xff;
            frame(0x04, &p)
        }),
        // Value length one more than the bytes present.
        ("value length past the frame", {
            let mut p = payload.to_vec();
            p[7] += 1;
            frame(0x04, &p)
        }),
        (
            "trailing bytes after the value",
            frame(0x04, &[payload, b"junk"].concat()),
        ),
        ("GET with half a length field", frame(0x03, &[3, 0])),
        ("PING with a payload", frame(0x02, b"x")),
        ("DELETE with no payload", frame(0x05, &[])),
    ];
    for (what, bytes) in cases {
        let mut s = raw_connect(server.addr);
        s.send(&bytes).expect("send");
        expect_refused(&mut s, MALFORMED, what);
    }
    // A frame of length zero has no opcode: a framing error.
    let mut s = raw_connect(server.addr);
    s.send(&[0, 0, 0, 0]).expect("send");
    expect_refused(&mut s, &[ErrorCode::MALFORMED_FRAME], "empty frame");
    assert_serves(server.addr);
}

#[test]
fn truncated_batches_are_refused_and_apply_nothing() {
    let server = Server::start(&[]);
    let ops: Vec<BatchOp> = (0..3)
        .map(|i| BatchOp::Put {
            key: Bytes::from(format!("tb-{i}")),
            value: Bytes::from_static(b"v"),
        })
        .collect();
    let whole = encode(&Request::Batch(ops));
    let payload = &whole[5..];
    // Cut inside the last op, cut after the first op, count over the ops
    // present, and an unknown op kind.
    let mut count_over = payload.to_vec();
    count_over[0] = 4;
    let mut bad_kind = payload.to_vec();
    bad_kind[4] = 0x09;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "cut inside the last op",
            payload[..payload.len() - 2].to_vec(),
        ),
        (
            "cut after the first op",
            payload[..4 + 1 + 4 + 4 + 4 + 1].to_vec(),
        ),
        ("count larger than the ops present", count_over),
        ("unknown op kind", bad_kind),
    ];
    for (what, p) in cases {
        let mut s = raw_connect(server.addr);
        s.send(&frame(0x07, &p)).expect("send");
        expect_refused(&mut s, MALFORMED, what);
    }
    let mut client = server.client();
    for i in 0..3 {
        let key = format!("tb-{i}");
        assert_eq!(
            client.get(key.as_bytes()).expect("get"),
            None,
            "{key} applied"
        );
    }
}

#[test]
fn a_value_over_the_limit_is_refused_and_the_connection_survives() {
    let server = Server::start(&[]);
    let mut s = raw_connect(server.addr);
    let value = vec![b'v'; kvstore::engine::MAX_VALUE_LEN + 1];
    s.send(&encode(&Request::Put {
        key: Bytes::from_static(b"big"),
        value: Bytes::from(value),
    }))
    .expect("send");
    expect_refused(&mut s, &[ErrorCode::VALUE_TOO_LARGE], "value over 64 MiB");
    assert_eq!(server.client().get(b"big").expect("get"), None);
}

#[test]
fn replication_messages_from_a_plain_client_are_refused() {
    let server = Server::start(&[]);
    // REPL_ACK and the master-to-replica opcodes, unsolicited.
    let mut ack = Vec::new();
    ack.extend_from_slice(&123u64.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("REPL_ACK", frame(0x41, &ack)),
        ("REPL_HEARTBEAT", frame(0xC6, &[0; 16])),
        ("REPL_CHUNK", frame(0xC4, &[0; 20])),
    ];
    for (what, bytes) in cases {
        let mut s = raw_connect(server.addr);
        s.send(&bytes).expect("send");
        expect_refused(
            &mut s,
            &[ErrorCode::UNKNOWN_OPCODE, ErrorCode::MALFORMED_REQUEST],
            what,
        );
    }
    assert_serves(server.addr);
}

#[test]
fn a_replica_with_a_future_epoch_gets_stale_master() {
    let server = Server::start(&[]);
    let mut s = raw_connect(server.addr);
    s.send(&encode(&Request::Hello(Hello {
        version: 1,
        auth: Auth::None,
        client_name: "fake-replica".into(),
    })))
    .expect("send");
    assert!(matches!(s.answer(), Answer::Frame(Response::HelloOk(_))));
    s.send(&encode(&Request::ReplSync(SyncRequest {
        replica_id: "from-the-future".into(),
        advertise: String::new(),
        epoch: 1_000_000,
        end: 0,
        full: false,
        format: 2,
        dir_id: String::new(),
    })))
    .expect("send");
    match s.answer() {
        Answer::Frame(Response::Error { code, message }) => {
            assert_eq!(code, ErrorCode::STALE_MASTER, "{message}");
            assert!(
                message.contains("1000000"),
                "message does not name the epoch: {message}"
            );
        }
        other => panic!("expected STALE_MASTER, got {other:?}"),
    }
    assert!(matches!(s.answer(), Answer::Closed), "stream not closed");
    assert_serves(server.addr);
}

#[test]
fn a_thousand_stalled_huge_frames_keep_memory_bounded() {
    raise_fd_limit();
    let server = Server::start(&[]);
    let before = rss_kib(server.pid());
    // Each declares a 64 MiB PUT (legal under the default frame limit),
    // sends its first bytes and stalls. 1,000 × 64 MiB would be 64 GiB.
    let declared: u32 = 64 * 1024 * 1024;
    let mut head = declared.to_le_bytes().to_vec();
    head.extend_from_slice(&[0x04, 3, 0, 0, 0, b'k', b'e', b'y']);
    let mut conns = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let mut s = raw_connect(server.addr);
        s.send(&head).expect("send a frame head");
        conns.push(s);
    }
    // Let the server read what it was sent.
    std::thread::sleep(Duration::from_millis(1500));
    assert_serves(server.addr);
    let during = rss_kib(server.pid());
    eprintln!("hostile: RSS {before} KiB before, {during} KiB with 1,000 stalled 64 MiB frames");
    assert!(
        during < before + 256 * 1024,
        "server RSS grew from {before} KiB to {during} KiB"
    );
    drop(conns);
    assert_serves(server.addr);
}

// ---------------------------------------------------------------------------
// The client memory budget.
// ---------------------------------------------------------------------------

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

/// The budget the memory tests give the node.
const BUDGET: u64 = 64 << 20;
/// What RSS may grow by besides the budget: each connection's uncharged
/// first 32 KiB, an answer being copied into its buffer on each runtime
/// thread, and the allocator's own slack.
const MARGIN: u64 = 48 << 20;
/// A normal client's PUT and read must complete within this.
const SERVED_WITHIN: Duration = Duration::from_secs(10);

fn budget_server(extra: &[&str]) -> Server {
    let budget = BUDGET.to_string();
    let mut args = vec![
        "--max-client-memory-bytes",
        budget.as_str(),
        "--resp-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// A normal client's PUT and GET on the binary port, timed.
fn normal_client_served(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let mut client = common::connect_client(addr);
    client.put(b"normal", b"served").expect("normal PUT");
    let value = client.get(b"normal").expect("normal GET");
    assert_eq!(value.as_deref(), Some(&b"served"[..]));
    let took = started.elapsed();
    assert!(took < SERVED_WITHIN, "a normal client took {took:?}");
    took
}

/// `kvstore_memory_refusals_total{kind=...}`.
fn refusals(http: SocketAddr, kind: &str) -> f64 {
    common::labelled_metric(http, "kvstore_memory_refusals_total", "kind", kind)
}

/// RSS (KiB) grew from `before` to `peak` by at most the budget and the
/// margin.
fn assert_within_budget(before: u64, peak: u64) {
    assert!(
        peak * 1024 <= before * 1024 + BUDGET + MARGIN,
        "RSS grew from {before} KiB to {peak} KiB, past the budget of {} MiB + {} MiB",
        BUDGET >> 20,
        MARGIN >> 20
    );
}

/// Sends `bytes` on a new connection to `addr` and waits until the server
/// has read them all (its received-bytes counter says so) or has closed
/// the connection. The connection is returned open, never read.
fn send_and_settle(server: &Server, addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let http = server.http_addr;
    let received = || common::metric(http, "kvstore_network_received_bytes_total");
    let before = received();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_write_timeout(Some(common::NET_DEADLINE))
        .expect("timeout");
    // The server may refuse and close mid-way: the write then fails.
    let sent = s.write_all(bytes).is_ok();
    let want = before + bytes.len() as f64;
    wait_for(
        common::NET_DEADLINE,
        "the server to read or refuse a request",
        || (!sent || received() >= want || common::closed_by_server(&mut s)).then_some(()),
    );
    s
}

#[test]
fn half_sent_large_requests_on_many_connections_stay_within_the_budget() {
    let server = budget_server(&[]);
    let resp = resp_addr(&server);
    let pid = server.pid();
    let before = rss_kib(pid);
    // 16 connections a port each send half of a 16 MiB request and stall:
    // 256 MiB held across the two ports if nothing bounded it.
    const CONNS: usize = 16;
    const VALUE: usize = 16 << 20;
    let half = vec![b'v'; VALUE / 2];
    let frame_len = u32::try_from(1 + 4 + 3 + 4 + VALUE).expect("fits");
    let mut binary_head = frame_len.to_le_bytes().to_vec();
    binary_head.extend_from_slice(&[0x04, 3, 0, 0, 0, b'k', b'e', b'y']);
    binary_head.extend_from_slice(&u32::try_from(VALUE).expect("fits").to_le_bytes());
    let resp_head = format!("*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n${VALUE}\r\n").into_bytes();
    let started = Instant::now();
    let mut peak = before;
    let mut held = Vec::new();
    for (addr, head) in [(server.addr, &binary_head), (resp, &resp_head)] {
        let request = [&head[..], &half[..]].concat();
        for _ in 0..CONNS {
            held.push(send_and_settle(&server, addr, &request));
            peak = peak.max(rss_kib(pid));
        }
    }
    let took = normal_client_served(server.addr);
    // A large request of a normal client gets through too: a refusal
    // closes the connection holding the most, so a retry finds room.
    let large = vec![b'n'; 4 << 20];
    let large_started = Instant::now();
    wait_for(SERVED_WITHIN, "a normal client's 4 MiB PUT", || {
        common::connect_client(server.addr)
            .put(b"normal-large", &large)
            .ok()
    });
    let large_took = large_started.elapsed();
    peak = peak.max(rss_kib(pid));
    let refused = refusals(server.http_addr, "request");
    let largest = refusals(server.http_addr, "largest_closed");
    let closed = held
        .iter_mut()
        .map(common::closed_by_server)
        .filter(|&closed| closed)
        .count();
    eprintln!(
        "memory: {} half-sent 16 MiB requests ({} MiB sent in {:?}): RSS {} MiB before, peak {} MiB \
         (budget {} MiB); {refused} refused, {largest} closed as the largest, {closed} closed in all; \
         a normal client served in {took:?}, its 4 MiB PUT in {large_took:?}",
        2 * CONNS,
        (2 * CONNS * VALUE / 2) >> 20,
        started.elapsed(),
        before >> 10,
        peak >> 10,
        BUDGET >> 20,
    );
    assert!(refused >= 1.0, "the budget never refused anything");
    assert!(largest >= 1.0, "no largest consumer was closed");
    assert_within_budget(before, peak);
    drop(held);
}

/// Sends RESP `args` on `s`.
fn resp_send(s: &mut TcpStream, args: &[&[u8]]) {
    s.write_all(&kvstore::resp::parse::encode_request(args))
        .expect("send a RESP request");
}

#[test]
fn mgets_never_read_stay_within_the_budget() {
    // Answers up to 16 MiB: MGET of the 4 MiB key ×3 is allowed, ×300 is
    // over the bound.
    let server = budget_server(&["--max-frame-bytes", "16777216"]);
    let resp = resp_addr(&server);
    let pid = server.pid();
    let value = vec![b'm'; 4 << 20];
    let mut setter = TcpStream::connect(resp).expect("connect");
    setter
        .set_read_timeout(Some(common::NET_DEADLINE))
        .expect("timeout");
    resp_send(&mut setter, &[b"SET", b"big", &value]);
    let mut ok = [0u8; 5];
    setter.read_exact(&mut ok).expect("+OK");
    assert_eq!(&ok, b"+OK\r\n");
    let before = rss_kib(pid);
    let started = Instant::now();
    // One connection asks for the key 300 times (a 1.2 GB answer), eight
    // others pipeline four MGETs of it ×3 (12 MiB each, 384 MiB in all);
    // none reads a byte.
    let mut conns = Vec::new();
    let mut huge = TcpStream::connect(resp).expect("connect");
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(std::iter::repeat_n(&b"big"[..], 300));
    resp_send(&mut huge, &args);
    conns.push(huge);
    for _ in 0..8 {
        let mut s = TcpStream::connect(resp).expect("connect");
        for _ in 0..4 {
            resp_send(&mut s, &[b"MGET", b"big", b"big", b"big"]);
        }
        conns.push(s);
    }
    // Wait until every connection has had its first MGET run (answered
    // into its buffer, or refused).
    let http = server.http_addr;
    let mut peak = before;
    wait_for(
        Duration::from_secs(30),
        "every connection's first MGET",
        || {
            peak = peak.max(rss_kib(pid));
            (common::labelled_metric(http, "kvstore_requests_total", "op", "resp_mget") >= 9.0)
                .then_some(())
        },
    );
    let took = normal_client_served(server.addr);
    // And a normal Redis client of the same port.
    let mut normal = TcpStream::connect(resp).expect("connect");
    normal
        .set_read_timeout(Some(SERVED_WITHIN))
        .expect("timeout");
    resp_send(&mut normal, &[b"GET", b"normal"]);
    let mut answer = [0u8; 12];
    normal.read_exact(&mut answer).expect("a RESP GET answered");
    assert_eq!(&answer, b"$6\r\nserved\r\n");
    peak = peak.max(rss_kib(pid));
    let multi_key = refusals(http, "multi_key");
    let answers = refusals(http, "answer");
    eprintln!(
        "memory: MGET of a 4 MiB key ×300 and 8×4 MGETs ×3, never read: RSS {} MiB before, peak {} MiB \
         (budget {} MiB) after {:?}; {multi_key} MGETs refused, {answers} answers refused; \
         a normal client served in {took:?}",
        before >> 10,
        peak >> 10,
        BUDGET >> 20,
        started.elapsed(),
    );
    assert!(multi_key >= 1.0, "the MGET ×300 was not refused");
    assert_within_budget(before, peak);
    drop(conns);
}
