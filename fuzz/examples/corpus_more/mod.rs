//! Seeds for `frame_decode`, `hint_decode`, `segment_recovery` and
//! `engine_model`, each built with the real encoder (or, for
//! `engine_model`, a fixed pseudo-random generator, since `arbitrary` reads
//! any bytes as a sequence of operations). Overwrites the files it names.

use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use kvstore::engine::hint::{self, HintEntry};
use kvstore::engine::record::{self, Kind};
use kvstore::protocol::replication::{SyncRequest, ToMaster, ToReplica};
use kvstore::protocol::{
    Auth, BatchOp, CompactionSummary, ErrorCode, ExpireCondition, Expiry, Hello, HelloOk, KeyTtl,
    Limits, NewMaster, Request, Response, Role,
};

pub fn write_all() {
    write("frame_decode", frame_seeds());
    write("hint_decode", hint_seeds());
    write("segment_recovery", segment_seeds());
    write("engine_model", model_seeds());
}

fn write(target: &str, seeds: Vec<(String, Vec<u8>)>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).expect("create the corpus directory");
    for (name, bytes) in &seeds {
        fs::write(dir.join(name), bytes).expect("write a seed");
    }
    println!("wrote {} seeds to {}", seeds.len(), dir.display());
}

fn frame_seeds() -> Vec<(String, Vec<u8>)> {
    let k = || Bytes::from_static(b"user:42");
    let requests = vec![
        Request::Hello(Hello {
            version: 1,
            auth: Auth::None,
            client_name: "cli".into(),
        }),
        Request::Hello(Hello {
            version: 1,
            auth: Auth::Token(Bytes::from_static(b"s3cret")),
            client_name: String::new(),
        }),
        Request::Ping,
        Request::Get { key: k() },
        Request::Put {
            key: k(),
            value: Bytes::from_static(b"{\"name\":\"ada\"}"),
        },
        Request::Delete { key: k() },
        Request::Exists { key: k() },
        Request::Batch(vec![
            BatchOp::Put {
                key: k(),
                value: Bytes::from_static(b"1"),
            },
            BatchOp::Delete {
                key: Bytes::from_static(b"b"),
            },
        ]),
        Request::Compact,
        Request::Stats,
        Request::Promote,
        Request::Replicate {
            master: "127.0.0.1:7000".into(),
        },
        Request::ReplSync(sync()),
    ];
    let responses = vec![
        Response::Ok,
        Response::HelloOk(HelloOk {
            version: 1,
            role: Role::Replica,
            limits: Limits::default(),
            server: "kvstore 0.1.0".into(),
        }),
        Response::Pong,
        Response::Value(Bytes::from_static(b"v")),
        Response::NotFound,
        Response::Deleted { existed: true },
        Response::Exists(false),
        Response::Compacted(CompactionSummary {
            horizon: 4096,
            bytes_before: 10,
            bytes_after: 5,
            keys_kept: 2,
        }),
        Response::Stats("{\"keys\":1}".into()),
        Response::Redirect {
            master: "127.0.0.1:7000".into(),
        },
        Response::error(ErrorCode::STALE_MASTER, "epoch 9 is newer"),
    ];
    let to_master = vec![
        ToMaster::Sync(sync()),
        ToMaster::Ack {
            written_end: 90,
            durable_end: 77,
        },
    ];
    let to_replica = vec![
        ToReplica::Truncate { epoch: 2, to: 100 },
        ToReplica::FullResync {
            epoch: 2,
            start: 0,
            end: 4096,
            files: 2,
        },
        ToReplica::File {
            name: "merged-00000000000000000000-0000.dat".into(),
            len: 64,
        },
        ToReplica::FileData {
            bytes: Bytes::from_static(b"KVSTMRG\0"),
        },
        ToReplica::Stream {
            epoch: 2,
            from: 4096,
        },
        ToReplica::Chunk {
            segment_base: 0,
            offset: 4096,
            master_end: 4200,
            bytes: Bytes::from_static(&[7; 40]),
        },
        ToReplica::Heartbeat {
            master_end: 4200,
            unix_ms: 1_700_000_000_000,
        },
    ];
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for r in &requests {
        frames.push(enc(|b| r.encode(b)));
    }
    for r in &responses {
        frames.push(enc(|b| r.encode(b)));
    }
    for m in &to_master {
        frames.push(enc(|b| m.encode(b)));
    }
    for m in &to_replica {
        frames.push(enc(|b| m.encode(b)));
    }
    let mut out: Vec<(String, Vec<u8>)> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| (format!("message-{i:02}"), f.clone()))
        .collect();
    out.push(("all-messages".into(), frames.concat()));
    // Malformed: a PUT whose key length runs past the frame, a batch cut
    // short, an unknown opcode, a frame of length zero.
    let put = &frames[4];
    let mut long_key = put.clone();
    long_key[5] = 0xff;
    out.push(("put-key-past-frame".into(), long_key));
    let batch = &frames[7];
    let mut short_batch = batch[..batch.len() - 3].to_vec();
    let body = (short_batch.len() - 4) as u32;
    short_batch[..4].copy_from_slice(&body.to_le_bytes());
    out.push(("batch-truncated".into(), short_batch));
    out.push(("unknown-opcode".into(), vec![2, 0, 0, 0, 0x7e, 0]));
    out.push(("empty-frame".into(), vec![0, 0, 0, 0]));
    out.extend(expiry_seeds());
    out.extend(switchover_seeds());
    out
}

/// Planned switchover's request and answer, named apart so that the
/// seeds above keep their names.
fn switchover_seeds() -> Vec<(String, Vec<u8>)> {
    let frames = vec![
        enc(|b| {
            Request::Switchover {
                to: Some("kvstore-2".into()),
            }
            .encode(b)
        }),
        enc(|b| Request::Switchover { to: None }.encode(b)),
        enc(|b| {
            Response::Switchover(NewMaster {
                node_id: "kvstore-2".into(),
                addr: "kvstore-2.kvstore-headless:5555".into(),
                epoch: 7,
            })
            .encode(b)
        }),
        enc(|b| {
            Response::error(ErrorCode::SWITCHOVER_FAILED, "no replica to hand over to").encode(b)
        }),
    ];
    let mut out: Vec<(String, Vec<u8>)> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| (format!("switchover-{i:02}"), f.clone()))
        .collect();
    // Malformed: a node id whose length runs past the frame.
    let mut long_id = frames[0].clone();
    long_id[5] = 0xff;
    out.push(("switchover-id-past-frame".into(), long_id));
    out
}

/// Protocol version 2's expiry messages, named apart so that the
/// `message-NN` seeds above keep their names.
fn expiry_seeds() -> Vec<(String, Vec<u8>)> {
    let k = || Bytes::from_static(b"session:7");
    let v = || Bytes::from_static(b"token");
    let frames = vec![
        enc(|b| {
            Request::PutExpiring {
                key: k(),
                value: v(),
                expiry: Expiry::In(60_000),
            }
            .encode(b)
        }),
        enc(|b| {
            Request::Batch(vec![
                BatchOp::PutExpiring {
                    key: k(),
                    value: v(),
                    expiry: Expiry::At(1_700_000_060_000),
                },
                BatchOp::Delete { key: k() },
            ])
            .encode(b)
        }),
        enc(|b| {
            Request::Expire {
                key: k(),
                expiry: Expiry::At(1_700_000_060_000),
                only_if: ExpireCondition {
                    has_expiry: true,
                    later: true,
                    ..ExpireCondition::default()
                },
            }
            .encode(b)
        }),
        enc(|b| Request::Persist { key: k() }.encode(b)),
        enc(|b| Request::Ttl { key: k() }.encode(b)),
        enc(|b| Response::Applied(true).encode(b)),
        enc(|b| {
            Response::Ttl(KeyTtl::Expires {
                at: 1_700_000_060_000,
                left_ms: 59_000,
            })
            .encode(b)
        }),
        enc(|b| Response::Ttl(KeyTtl::Never).encode(b)),
    ];
    let mut out: Vec<(String, Vec<u8>)> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| (format!("expiry-{i:02}"), f.clone()))
        .collect();
    // Malformed: an expiry kind of 3, a condition bit out of range.
    let mut bad_kind = frames[0].clone();
    let at = bad_kind.len() - 9;
    bad_kind[at] = 3;
    out.push(("expiry-bad-kind".into(), bad_kind));
    let mut bad_bits = frames[2].clone();
    let last = bad_bits.len() - 1;
    bad_bits[last] = 0x10;
    out.push(("expiry-bad-condition".into(), bad_bits));
    out
}

fn sync() -> SyncRequest {
    SyncRequest {
        replica_id: "r1".into(),
        advertise: "127.0.0.1:7001".into(),
        epoch: 3,
        end: 1 << 20,
        full: false,
        format: 2,
        dir_id: String::new(),
    }
}

fn enc(f: impl FnOnce(&mut BytesMut) -> Result<(), kvstore::protocol::Error>) -> Vec<u8> {
    let mut b = BytesMut::new();
    f(&mut b).expect("seed encodes");
    b.to_vec()
}

fn hint_seeds() -> Vec<(String, Vec<u8>)> {
    let entries = [
        HintEntry {
            kind: Kind::Put,
            pos: 32,
            len: 40,
            hash: 0x1234_5678_9abc_def0,
            expires_at: Some(1_700_000_060_000),
        },
        HintEntry {
            kind: Kind::Delete,
            pos: 72,
            len: 20,
            hash: 7,
            expires_at: None,
        },
    ];
    let with_len = |data_len: u64, h: Vec<u8>| [&data_len.to_le_bytes()[..], &h].concat();
    let good = hint::encode(92, &entries);
    let mut flipped = good.clone();
    flipped[30] ^= 0x10;
    let seeds = vec![
        ("empty", with_len(32, hint::encode(32, &[]))),
        ("two-entries", with_len(92, good.clone())),
        ("wrong-data-len", with_len(93, good.clone())),
        ("bit-flip", with_len(92, flipped)),
        ("truncated", with_len(92, good[..good.len() - 5].to_vec())),
    ];
    for (name, bytes) in &seeds {
        let ok = bytes.len() >= 8
            && hint::decode(
                &bytes[8..],
                u64::from_le_bytes(bytes[..8].try_into().unwrap()),
            )
            .is_ok();
        assert_eq!(
            ok,
            matches!(*name, "empty" | "two-entries"),
            "hint seed {name}"
        );
    }
    seeds.into_iter().map(|(n, b)| (n.to_string(), b)).collect()
}

fn segment_seeds() -> Vec<(String, Vec<u8>)> {
    let rec = |kind, in_batch, key: &[u8], value: &[u8]| {
        let mut out = Vec::new();
        record::encode(&mut out, kind, in_batch, 1, key, value);
        out
    };
    let commit = |count| {
        let mut out = Vec::new();
        record::encode_commit(&mut out, 1, count);
        out
    };
    let put = rec(Kind::Put, false, b"k1", b"tail-value");
    let del = rec(Kind::Delete, false, b"k0", b"");
    let bput = rec(Kind::Put, true, b"k2", b"in-batch");
    let mut flipped = put.clone();
    flipped[20] ^= 1;
    let seeds: Vec<(&str, u8, Vec<u8>)> = vec![
        ("no-tail", 9, vec![]),
        ("valid-records", 4, [&put[..], &del].concat()),
        (
            "valid-batch",
            6,
            [&bput[..], &put.clone()[..0], &commit(1)].concat(),
        ),
        ("torn-record", 7, put[..put.len() - 4].to_vec()),
        ("torn-batch", 3, [&bput[..], &commit(1)[..5]].concat()),
        ("garbage", 12, vec![0xa5; 64]),
        ("zeros", 2, vec![0; 100]),
        ("flip-then-valid", 5, [&flipped[..], &put].concat()),
        ("flip-at-end", 5, [&put[..], &flipped].concat()),
        ("commit-count-wrong", 8, [&bput[..], &commit(2)].concat()),
        ("put-inside-batch", 1, [&bput[..], &put].concat()),
    ];
    seeds
        .into_iter()
        .map(|(name, n, tail)| (name.to_string(), [&[n][..], &tail].concat()))
        .collect()
}

fn model_seeds() -> Vec<(String, Vec<u8>)> {
    // xorshift64: fixed, so regenerating gives the same files.
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    [16usize, 64, 256, 1024, 4096]
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let bytes = (0..len).map(|_| (next() >> 24) as u8).collect();
            (format!("random-{i}-{len}"), bytes)
        })
        .collect()
}
