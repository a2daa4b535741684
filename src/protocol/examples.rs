//! Generates the worked hex examples of `docs/PROTOCOL.md` from the real
//! encoder and checks that the document shows exactly these bytes, so the
//! page cannot drift from the code. Run with
//! `KVSTORE_PRINT_PROTOCOL_EXAMPLES=1 cargo test protocol::examples -- --nocapture`
//! to print them.

use bytes::{Bytes, BytesMut};

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
        "HELLO version 2",
        Request::Hello(Hello {
            version: PROTOCOL_VERSION,
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
    req(
        "PUT_EXPIRING",
        Request::PutExpiring {
            key: key(),
            value: Bytes::from_static(b"hello"),
            expiry: Expiry::In(60_000),
        },
    );
    req(
        "BATCH with expiry",
        Request::Batch(vec![
            BatchOp::PutExpiring {
                key: key(),
                value: Bytes::from_static(b"v"),
                expiry: Expiry::At(1_700_000_060_000),
            },
            BatchOp::Delete {
                key: Bytes::from_static(b"k2"),
            },
        ]),
    );
    req(
        "EXPIRE",
        Request::Expire {
            key: key(),
            expiry: Expiry::In(30_000),
            only_if: ExpireCondition {
                later: true,
                ..ExpireCondition::default()
            },
        },
    );
    req("PERSIST", Request::Persist { key: key() });
    req("TTL", Request::Ttl { key: key() });
    req("COMPACT", Request::Compact);
    req("STATS", Request::Stats);
    req("CLUSTER_STATUS", Request::ClusterStatus);
    req("BACKUP", Request::Backup);
    req("PROMOTE", Request::Promote);
    req(
        "REPLICATE",
        Request::Replicate {
            master: "h:1".into(),
        },
    );
    req(
        "SWITCHOVER",
        Request::Switchover {
            to: Some("n2".into()),
        },
    );
    req("SWITCHOVER to any", Request::Switchover { to: None });
    req(
        "REPL_SYNC",
        Request::ReplSync(replication::SyncRequest {
            replica_id: "r1".into(),
            advertise: "h:2".into(),
            epoch: 3,
            end: 4096,
            full: false,
            format: 2,
            dir_id: String::new(),
        }),
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
        "CLUSTER_STATUS_ANSWER",
        Response::ClusterStatus("{\"coordinator\":\"none\"}".into()),
    );
    resp(
        "ERROR",
        Response::error(ErrorCode::KEY_TOO_LARGE, "key too large"),
    );
    resp("APPLIED", Response::Applied(true));
    resp(
        "TTL_ANSWER",
        Response::Ttl(KeyTtl::Expires {
            at: 1_700_000_060_000,
            left_ms: 59_873,
        }),
    );
    resp("TTL_ANSWER absent", Response::Ttl(KeyTtl::Absent));
    resp(
        "SWITCHOVER_ANSWER",
        Response::Switchover(NewMaster {
            node_id: "n2".into(),
            addr: "h:2".into(),
            epoch: 7,
        }),
    );
    resp(
        "REDIRECT",
        Response::Redirect {
            master: "h:1".into(),
        },
    );
    repl_examples(&mut out);
    out
}

/// The replication stream messages (`replication::ToMaster`/`ToReplica`).
fn repl_examples(out: &mut Vec<(&'static str, BytesMut)>) {
    use replication::{ToMaster, ToReplica};
    let mut buf = BytesMut::new();
    ToMaster::Ack {
        written_end: 12288,
        durable_end: 8192,
    }
    .encode(&mut buf)
    .expect("example encodes");
    out.push(("REPL_ACK", buf));
    let to_replica = [
        ("REPL_TRUNCATE", ToReplica::Truncate { epoch: 2, to: 1000 }),
        (
            "REPL_FULL",
            ToReplica::FullResync {
                epoch: 3,
                start: 4096,
                end: 9000,
                files: 2,
            },
        ),
        (
            "REPL_FILE",
            ToReplica::File {
                name: "00000000000000004096.seg".into(),
                len: 77,
            },
        ),
        (
            "REPL_FILE_DATA",
            ToReplica::FileData {
                bytes: Bytes::from_static(b"abc"),
            },
        ),
        (
            "REPL_STREAM",
            ToReplica::Stream {
                epoch: 3,
                from: 9000,
            },
        ),
        (
            "REPL_CHUNK",
            ToReplica::Chunk {
                segment_base: 4096,
                offset: 9000,
                master_end: 9003,
                bytes: Bytes::from_static(&[1, 2, 3]),
            },
        ),
        (
            "REPL_HEARTBEAT",
            ToReplica::Heartbeat {
                master_end: 9003,
                unix_ms: 1_700_000_000_000,
            },
        ),
    ];
    for (name, msg) in to_replica {
        let mut buf = BytesMut::new();
        msg.encode(&mut buf).expect("example encodes");
        out.push((name, buf));
    }
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
