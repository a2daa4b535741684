//! Generates the worked hex examples of `docs/PROTOCOL.md` from the real
//! encoder and checks that the document shows exactly these bytes, so the
//! page cannot drift from the code. Run with
//! `KVSTORE_PRINT_PROTOCOL_EXAMPLES=1 cargo test protocol::examples -- --nocapture`
//! to print them.

use bytes::{Bytes, BytesMut};

use super::replication::ToReplica;
use super::*;

/// Every message of the protocol with one example instance.
fn examples() -> Vec<(&'static str, BytesMut)> {
    let key = || Bytes::from_static(b"k1");
    let mut out = Vec::new();
    let mut req = |name: &'static str, r: Request| {
        let mut buf = BytesMut::new();
        r.encode(&mut buf).expect("example encodes");
        out.push((name, buf));
    };
    req(
        "HELLO",
        Request::Hello(Hello {
            version: 1,
            auth: Auth::None,
            client_name: "cli".into(),
        }),
    );
    req(
        "HELLO with token",
        Request::Hello(Hello {
            version: 1,
            auth: Auth::Token(Bytes::from_static(b"s3")),
            client_name: String::new(),
        }),
    );
    req("PING", Request::Ping);
    req("GET", Request::Get { key: key() });
    req(
        "PUT",
        Request::Put {
            key: key(),
            value: Bytes::from_static(b"hello"),
        },
    );
    req("DELETE", Request::Delete { key: key() });
    req("EXISTS", Request::Exists { key: key() });
    req(
        "BATCH",
        Request::Batch(vec![
            BatchOp::Put {
                key: key(),
                value: Bytes::from_static(b"v"),
            },
            BatchOp::Delete {
                key: Bytes::from_static(b"k2"),
            },
        ]),
    );
    req("COMPACT", Request::Compact);
    req("STATS", Request::Stats);
    req("BACKUP", Request::Backup);
    let mut stream = |name: &'static str, m: ToReplica| {
        let mut buf = BytesMut::new();
        m.encode(&mut buf).expect("example encodes");
        out.push((name, buf));
    };
    stream(
        "REPL_FULL",
        ToReplica::FullResync {
            epoch: 1,
            start: 0,
            end: 4096,
            files: 2,
        },
    );
    stream(
        "REPL_FILE",
        ToReplica::File {
            name: "EPOCHS".into(),
            len: 3,
        },
    );
    stream(
        "REPL_FILE_DATA",
        ToReplica::FileData {
            bytes: Bytes::from_static(b"abc"),
        },
    );
    stream(
        "REPL_STREAM",
        ToReplica::Stream {
            epoch: 1,
            from: 4096,
        },
    );
    let mut resp = |name: &'static str, r: Response| {
        let mut buf = BytesMut::new();
        r.encode(&mut buf).expect("example encodes");
        out.push((name, buf));
    };
    resp("OK", Response::Ok);
    resp(
        "HELLO_OK",
        Response::HelloOk(HelloOk {
            version: 1,
            role: Role::Master,
            limits: Limits {
                max_frame_bytes: 1 << 20,
                max_key_bytes: 1024,
                max_value_bytes: 1 << 19,
                max_batch_ops: 100,
            },
            server: "kv".into(),
        }),
    );
    resp("PONG", Response::Pong);
    resp("VALUE", Response::Value(Bytes::from_static(b"hello")));
    resp("NOT_FOUND", Response::NotFound);
    resp("DELETED", Response::Deleted { existed: true });
    resp("EXISTS_ANSWER", Response::Exists(false));
    resp(
        "COMPACTED",
        Response::Compacted(CompactionSummary {
            horizon: 4096,
            bytes_before: 8192,
            bytes_after: 1024,
            keys_kept: 3,
        }),
    );
    resp("STATS_ANSWER", Response::Stats("{\"keys\":2}".into()));
    resp(
        "ERROR",
        Response::error(ErrorCode::KEY_TOO_LARGE, "key too large"),
    );
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn protocol_doc_shows_the_real_bytes() {
    let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(doc_path).expect("docs/PROTOCOL.md exists");
    let doc = normalize(&doc);
    let print = std::env::var_os("KVSTORE_PRINT_PROTOCOL_EXAMPLES").is_some();
    let mut missing = Vec::new();
    for (name, bytes) in examples() {
        let hex = hex(&bytes);
        if print {
            println!("{name}:\n{hex}\n");
        }
        if !doc.contains(&normalize(&hex)) {
            missing.push(format!("{name}: {hex}"));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/PROTOCOL.md lacks these encodings:\n{}",
        missing.join("\n")
    );
}
