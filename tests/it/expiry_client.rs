//! Key expiry through the binary protocol (version 2: PUT_EXPIRING,
//! EXPIRE, PERSIST, TTL, the batch's put with expiry), the Rust client and
//! the `kvstore` CLI, against real nodes: Redis's semantics, the refusals
//! (request errors that leave the connection open), a replica redirecting
//! the writes and answering TTL, and a version 1 client served as before.

use std::time::Duration;

use bytes::Bytes;
use kvstore::client::Error;
use kvstore::protocol::{
    opcode, BatchOp, ErrorCode, ExpireCondition, Expiry, Hello, KeyTtl, Request, Response,
    PROTOCOL_VERSION,
};

use crate::common::replication::{master, replica, wait_converged};
use crate::common::{cli, raw_connect, request_bytes, wait_for, Answer, Server, START_DEADLINE};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const NONE: ExpireCondition = ExpireCondition {
    no_expiry: false,
    has_expiry: false,
    later: false,
    sooner: false,
};
const NX: ExpireCondition = ExpireCondition {
    no_expiry: true,
    ..NONE
};
const XX: ExpireCondition = ExpireCondition {
    has_expiry: true,
    ..NONE
};
const GT: ExpireCondition = ExpireCondition {
    later: true,
    ..NONE
};
const LT: ExpireCondition = ExpireCondition {
    sooner: true,
    ..NONE
};

/// The ms left of an expiring key; panics on another answer.
fn left_ms(ttl: KeyTtl) -> u64 {
    match ttl {
        KeyTtl::Expires { left_ms, .. } => left_ms,
        other => panic!("expected an expiry, got {other:?}"),
    }
}

fn assert_request_error(result: Result<impl std::fmt::Debug, Error>, want: ErrorCode) {
    match result {
        Err(Error::Server { code, message }) => {
            assert_eq!(code, want, "{message}");
            assert!(!message.is_empty());
        }
        other => panic!("expected a {want} error, got {other:?}"),
    }
}

#[test]
fn expiry_requests_follow_redis_semantics() {
    let server = Server::start(&[]);
    let mut c = server.client();
    assert_eq!(
        c.server_info().expect("hello answered").version,
        PROTOCOL_VERSION
    );

    assert_eq!(c.ttl(b"k").unwrap(), KeyTtl::Absent);
    c.put(b"k", b"v").unwrap();
    assert_eq!(c.ttl(b"k").unwrap(), KeyTtl::Never);
    // A key without expiry counts as expiring never: GT and XX fail.
    assert!(!c.expire_with(b"k", Expiry::In(60_000), GT).unwrap());
    assert!(!c.expire_with(b"k", Expiry::In(60_000), XX).unwrap());
    assert!(c.expire_with(b"k", Expiry::In(60_000), NX).unwrap());
    let left = left_ms(c.ttl(b"k").unwrap());
    assert!((50_000..=60_000).contains(&left), "{left} ms left");
    assert!(!c.expire_with(b"k", Expiry::In(60_000), NX).unwrap());
    assert!(!c.expire_with(b"k", Expiry::In(120_000), LT).unwrap());
    assert!(c.expire_with(b"k", Expiry::In(120_000), GT).unwrap());
    assert!(left_ms(c.ttl(b"k").unwrap()) > 60_000);
    // TTL gives the absolute time too, on the server's clock.
    let at = 4_000_000_000_000;
    assert!(c.expire_with(b"k", Expiry::At(at), XX).unwrap());
    match c.ttl(b"k").unwrap() {
        KeyTtl::Expires { at: got, .. } => assert_eq!(got, at),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    assert!(c.persist(b"k").unwrap());
    assert!(!c.persist(b"k").unwrap());
    assert_eq!(c.ttl(b"k").unwrap(), KeyTtl::Never);

    // PUT_EXPIRING replaces the expiry; a plain PUT clears it.
    c.put_with_ttl(b"k", b"v2", Duration::from_secs(60))
        .unwrap();
    assert!(left_ms(c.ttl(b"k").unwrap()) <= 60_000);
    c.put(b"k", b"v3").unwrap();
    assert_eq!(c.ttl(b"k").unwrap(), KeyTtl::Never);
    // An expiry already past deletes: EXPIRE 0, PUT at a past time.
    assert!(c.expire(b"k", Duration::ZERO).unwrap());
    assert_eq!(c.get(b"k").unwrap(), None);
    assert_eq!(c.ttl(b"k").unwrap(), KeyTtl::Absent);
    assert!(!c.expire(b"k", Duration::from_secs(10)).unwrap());
    assert!(!c.persist(b"k").unwrap());
    c.put_with_expiry(b"past", b"x", Expiry::At(1)).unwrap();
    assert!(!c.exists(b"past").unwrap());

    // A batch mixes puts with and without expiry, atomically.
    c.batch(vec![
        BatchOp::PutExpiring {
            key: Bytes::from_static(b"b1"),
            value: Bytes::from_static(b"1"),
            expiry: Expiry::In(60_000),
        },
        BatchOp::Put {
            key: Bytes::from_static(b"b2"),
            value: Bytes::from_static(b"2"),
        },
        BatchOp::PutExpiring {
            key: Bytes::from_static(b"b3"),
            value: Bytes::from_static(b"3"),
            expiry: Expiry::At(1),
        },
    ])
    .unwrap();
    assert!(left_ms(c.ttl(b"b1").unwrap()) <= 60_000);
    assert_eq!(c.ttl(b"b2").unwrap(), KeyTtl::Never);
    assert_eq!(c.ttl(b"b3").unwrap(), KeyTtl::Absent);

    // A key reads absent once its time has come.
    c.put_with_ttl(b"short", b"s", Duration::from_millis(300))
        .unwrap();
    wait_for(START_DEADLINE, "the key to expire", || {
        (c.get(b"short").unwrap().is_none()).then_some(())
    });
    assert!(!c.exists(b"short").unwrap());
    assert_eq!(c.ttl(b"short").unwrap(), KeyTtl::Absent);
}

#[test]
fn bad_expiries_are_request_errors_and_a_bad_kind_a_malformed_frame() {
    let server = Server::start(&[]);
    let mut c = server.client();
    c.put(b"k", b"v").unwrap();
    assert_request_error(
        c.put_with_expiry(b"z", b"v", Expiry::In(0)),
        ErrorCode::MALFORMED_REQUEST,
    );
    assert_request_error(
        c.put_with_expiry(b"z", b"v", Expiry::At(u64::MAX)),
        ErrorCode::MALFORMED_REQUEST,
    );
    assert_request_error(
        c.put_with_ttl(b"z", b"v", Duration::from_secs(u64::MAX)),
        ErrorCode::MALFORMED_REQUEST,
    );
    let nx_gt = ExpireCondition { later: true, ..NX };
    assert_request_error(
        c.expire_with(b"k", Expiry::In(1_000), nx_gt),
        ErrorCode::MALFORMED_REQUEST,
    );
    let gt_lt = ExpireCondition { sooner: true, ..GT };
    assert_request_error(
        c.expire_with(b"k", Expiry::In(1_000), gt_lt),
        ErrorCode::MALFORMED_REQUEST,
    );
    // A refused batch applies nothing.
    assert_request_error(
        c.batch(vec![
            BatchOp::Put {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"changed"),
            },
            BatchOp::PutExpiring {
                key: Bytes::from_static(b"z"),
                value: Bytes::from_static(b"v"),
                expiry: Expiry::In(0),
            },
        ]),
        ErrorCode::MALFORMED_REQUEST,
    );
    // The connection stayed usable, and nothing was written.
    assert_eq!(c.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(c.ttl(b"k").unwrap(), KeyTtl::Never);
    assert!(!c.exists(b"z").unwrap());

    // An expiry kind other than 1 or 2 is a malformed frame: answered,
    // then the connection closes.
    let mut frame = request_bytes(&Request::PutExpiring {
        key: Bytes::from_static(b"z"),
        value: Bytes::from_static(b"v"),
        expiry: Expiry::In(5),
    });
    let kind_at = frame.len() - 9;
    frame[kind_at] = 3;
    let mut raw = raw_connect(server.addr);
    raw.send(&frame).unwrap();
    match raw.answer() {
        Answer::Frame(Response::Error { code, message }) => {
            assert_eq!(code, ErrorCode::MALFORMED_FRAME, "{message}");
            assert!(message.contains("expiry kind"), "{message}");
        }
        other => panic!("expected MALFORMED_FRAME, got {other:?}"),
    }
    assert!(matches!(raw.answer(), Answer::Closed));
}

#[test]
fn a_version_1_client_is_answered_in_version_1() {
    let server = Server::start(&[]);
    let mut raw = raw_connect(server.addr);
    let hello = Request::Hello(Hello {
        version: 1,
        auth: kvstore::protocol::Auth::None,
        client_name: "old".into(),
    });
    raw.send(&request_bytes(&hello)).unwrap();
    match raw.answer() {
        Answer::Frame(Response::HelloOk(ok)) => assert_eq!(ok.version, 1),
        other => panic!("expected HELLO_OK, got {other:?}"),
    }
    // Its requests and their answers are byte for byte those of version
    // 1, and a key another client gave an expiry reads as any other.
    server
        .client()
        .put_with_ttl(b"k", b"v", Duration::from_secs(60))
        .unwrap();
    raw.send(&request_bytes(&Request::Get {
        key: Bytes::from_static(b"k"),
    }))
    .unwrap();
    match raw.frame() {
        Some(frame) => {
            assert_eq!(frame.opcode, opcode::VALUE);
            assert_eq!(&frame.payload[..], &[1, 0, 0, 0, b'v']);
        }
        None => panic!("closed"),
    }
}

#[test]
fn a_replica_redirects_expiry_writes_and_answers_ttl() {
    let m = master(&[]);
    let r = replica(m.addr, &[]);
    // Through the replica: the client follows REDIRECT to the master.
    let mut c = r.client();
    c.put_with_ttl(b"k", b"v", Duration::from_secs(60)).unwrap();
    c.put(b"p", b"v").unwrap();
    assert!(c.persist(b"nothing").is_ok());
    let mut on_master = m.client();
    assert!(on_master.expire_with(b"p", Expiry::In(90_000), NX).unwrap());
    wait_converged(m.addr, &[r.addr]);
    // TTL is a read: the replica answers it from its own copy.
    let mut on_replica = crate::common::replication::no_redirect_client(r.addr);
    let ttl = on_replica.ttl(b"k").unwrap();
    let master_ttl = on_master.ttl(b"k").unwrap();
    match (ttl, master_ttl) {
        (KeyTtl::Expires { at, .. }, KeyTtl::Expires { at: m_at, .. }) => assert_eq!(at, m_at),
        other => panic!("{other:?}"),
    }
    assert!(left_ms(on_replica.ttl(b"p").unwrap()) > 60_000);
    // Without following, each write is a REDIRECT naming the master.
    for result in [
        on_replica.put_with_ttl(b"x", b"v", Duration::from_secs(1)),
        on_replica.expire(b"k", Duration::from_secs(1)).map(|_| ()),
        on_replica.persist(b"k").map(|_| ()),
    ] {
        match result {
            Err(Error::Redirected { master, .. }) => assert_eq!(master, m.addr.to_string()),
            other => panic!("expected a redirect, got {other:?}"),
        }
    }
}

#[test]
fn cli_put_ttl_expire_persist() {
    let server = Server::start(&[]);
    let a = server.addr;
    let ok = |args: &[&str]| {
        let out = cli(a, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out).trim().to_string()
    };
    let fails = |args: &[&str], code: i32| {
        let out = cli(a, args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert_eq!(
            stderr(&out).lines().count(),
            1,
            "one line: {}",
            stderr(&out)
        );
        stderr(&out)
    };

    assert_eq!(ok(&["put", "k", "v", "--ttl", "60s"]), "OK");
    let shown = ok(&["ttl", "k"]);
    assert!(shown.contains("s left, expires at 20"), "{shown}");
    let ms: i64 = ok(&["ttl", "k", "--ms"]).parse().unwrap();
    assert!((50_000..=60_000).contains(&ms), "{ms}");
    assert_eq!(ok(&["persist", "k"]), "OK");
    assert_eq!(ok(&["ttl", "k"]), "no expiry");
    assert_eq!(ok(&["ttl", "k", "--ms"]), "-1");
    assert_eq!(ok(&["persist", "k"]), "no expiry");
    assert!(fails(&["expire", "k", "5m", "--gt"], 1).contains("expiry not set"));
    assert_eq!(ok(&["expire", "k", "5m"]), "OK");
    fails(&["expire", "k", "10m", "--lt"], 1);
    assert_eq!(ok(&["expire", "k", "90", "--lt"]), "OK");
    let ms: i64 = ok(&["ttl", "k", "--ms"]).parse().unwrap();
    assert!((80_000..=90_000).contains(&ms), "plain seconds: {ms}");
    assert_eq!(ok(&["expire", "k", "0"]), "OK");
    assert!(fails(&["read", "k"], 1).contains("key not found"));

    // An absent key.
    assert!(fails(&["ttl", "absent"], 1).contains("key not found: absent"));
    assert_eq!(ok(&["ttl", "absent", "--ms"]), "-2");
    assert!(fails(&["persist", "absent"], 1).contains("key not found"));
    fails(&["expire", "absent", "5s"], 1);

    // Bad durations and options: one line, before anything is sent.
    for bad in ["1.5s", "-5", "5 m", "10x", "1h30m"] {
        let flag = format!("--ttl={bad}");
        let err = fails(&["put", "k", "v", flag.as_str()], 2);
        assert!(err.contains("--ttl"), "{bad:?}: {err}");
        assert!(err.contains("500ms, 30s, 5m"), "{bad:?}: {err}");
    }
    assert!(fails(&["put", "k", "v", "--ttl", "0"], 1).contains("at least 1ms"));
    // Conflicting conditions: clap's usage error.
    let out = cli(a, &["expire", "k", "5s", "--nx", "--gt"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );
    assert!(!cli(a, &["exists", "k"]).status.success());

    // A short TTL expires in real time.
    assert_eq!(ok(&["put", "short", "v", "--ttl", "300ms"]), "OK");
    wait_for(START_DEADLINE, "the key to expire", || {
        (!cli(a, &["read", "short"]).status.success()).then_some(())
    });
}

#[test]
fn dump_shows_each_records_expiry() {
    let mut server = Server::start(&[]);
    let out = cli(server.addr, &["put", "session", "v", "--ttl", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(server.addr, &["put", "plain", "v"]);
    assert!(out.status.success(), "{}", stderr(&out));
    server.sigterm();
    let dir = server.data_dir();
    let out = std::process::Command::new(crate::common::kvstore_bin())
        .args(["dump", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("run kvstore dump");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.contains(&format!("key=\"{key}\"")))
            .unwrap_or_else(|| panic!("no record of {key}:\n{text}"))
            .to_string()
    };
    let session = line("session");
    assert!(
        session.contains(" expires=") && session.contains("Z)"),
        "{session}"
    );
    assert!(!line("plain").contains("expires="), "{}", line("plain"));
}
