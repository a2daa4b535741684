//! Malformed and hostile input not covered by tests/it/protocol.rs: wrong
//! lengths inside a payload, truncated batches, an oversized value,
//! replication messages from a client that is not a replica, a replica
//! with a future epoch, and 1,000 clients that declare huge frames and
//! stall. Every case checks the exact answer (an ERROR with the expected
//! code, and a closed connection exactly when that code closes it) and
//! that the server keeps serving others.

use crate::common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{assert_serves, raw_connect, Answer, Raw, Server};
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

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[test]
fn a_thousand_stalled_huge_frames_keep_memory_bounded() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
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
