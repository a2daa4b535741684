//! A real node through the client library: round-trips, concurrency, large
//! values, atomic batches across SIGKILL, and data surviving restarts.

use crate::common;

use std::collections::BTreeSet;

use bytes::Bytes;
use common::{connect_client, metric, wait_for, Server, START_DEADLINE};
use kvstore::client::{Client, ClientOptions};
use kvstore::protocol::{BatchOp, Request, Response};
use rand::{Rng, SeedableRng};

#[test]
fn put_get_delete_exists_round_trip() {
    let server = Server::start(&[]);
    let mut c = server.client();
    assert_eq!(c.get(b"k").unwrap(), None);
    assert!(!c.exists(b"k").unwrap());
    c.put(b"k", b"v1").unwrap();
    assert_eq!(c.get(b"k").unwrap().as_deref(), Some(&b"v1"[..]));
    c.put(b"k", b"v2").unwrap();
    assert_eq!(c.get(b"k").unwrap().as_deref(), Some(&b"v2"[..]));
    assert!(c.exists(b"k").unwrap());
    // Empty values and binary keys are values like any other.
    c.put(b"\x00\xff", b"").unwrap();
    assert_eq!(c.get(b"\x00\xff").unwrap().as_deref(), Some(&b""[..]));
    assert!(c.delete(b"k").unwrap());
    assert!(!c.delete(b"k").unwrap());
    assert_eq!(c.get(b"k").unwrap(), None);

    c.batch(vec![
        BatchOp::Put {
            key: Bytes::from_static(b"a"),
            value: Bytes::from_static(b"1"),
        },
        BatchOp::Put {
            key: Bytes::from_static(b"b"),
            value: Bytes::from_static(b"2"),
        },
        BatchOp::Delete {
            key: Bytes::from_static(b"a"),
        },
    ])
    .unwrap();
    assert_eq!(c.get(b"a").unwrap(), None);
    assert_eq!(c.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));

    let stats = c.stats().unwrap();
    assert!(
        stats.get("keys").and_then(|v| v.as_u64()).is_some(),
        "{stats:?}"
    );
    c.compact().unwrap();
    assert_eq!(c.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
    c.ping().unwrap();
    let info = c.server_info().expect("hello answered");
    assert_eq!(info.version, kvstore::protocol::PROTOCOL_VERSION);
}

#[test]
fn two_hundred_concurrent_clients() {
    let server = Server::start(&[]);
    let addr = server.addr.to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let clients = 200;
    let per_client = 25;
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..clients {
            let addr = addr.clone();
            tasks.spawn(async move {
                let mut client = Client::connect(addr, ClientOptions::default())
                    .await
                    .expect("connect");
                for i in 0..per_client {
                    let key = format!("c{c}-k{i}");
                    let value = format!("v{c}-{i}");
                    client
                        .put(key.as_bytes(), value.as_bytes())
                        .await
                        .expect("put");
                    let got = client.get(key.as_bytes()).await.expect("get");
                    assert_eq!(got.as_deref(), Some(value.as_bytes()));
                }
            });
        }
        let mut done = 0;
        while let Some(joined) = tasks.join_next().await {
            joined.expect("client task");
            done += 1;
        }
        assert_eq!(done, clients);
    });
    let mut c = server.client();
    for client in [0, 99, 199] {
        let got = c
            .get(format!("c{client}-k{}", per_client - 1).as_bytes())
            .unwrap();
        assert_eq!(
            got,
            Some(Bytes::from(format!("v{client}-{}", per_client - 1)))
        );
    }
}

#[test]
fn a_sixteen_mib_value_round_trips() {
    let server = Server::start(&[]);
    let mut c = server.client();
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let mut value = vec![0u8; 16 * 1024 * 1024];
    rng.fill(&mut value[..]);
    c.put(b"big", &value).unwrap();
    let got = c.get(b"big").unwrap().expect("present");
    assert_eq!(got.len(), value.len());
    assert!(got[..] == value[..], "16 MiB value differs");
    // The connection is still fine for small requests afterwards.
    c.put(b"small", b"s").unwrap();
    assert_eq!(c.get(b"small").unwrap().as_deref(), Some(&b"s"[..]));
}

/// The binary protocol's pipelined GETs are gathered into runs and
/// readied together, and each still reads what the requests before it in
/// the pipeline wrote, and no later write (as over RESP).
#[test]
fn pipelined_gets_among_writes_read_what_the_requests_before_them_wrote() {
    let server = Server::start(&["--durability", "never"]);
    let mut c = server.client();
    let put = |k: &str, v: &str| Request::Put {
        key: Bytes::from(k.to_string()),
        value: Bytes::from(v.to_string()),
    };
    let get = |k: &str| Request::Get {
        key: Bytes::from(k.to_string()),
    };
    let value = |v: &str| Response::Value(Bytes::from(v.to_string()));
    let mut ops = vec![put("a", "1"), get("a"), get("a"), put("a", "2"), get("a")];
    let mut expected = vec![
        Response::Ok,
        value("1"),
        value("1"),
        Response::Ok,
        value("2"),
    ];
    ops.push(Request::Delete {
        key: Bytes::from_static(b"a"),
    });
    expected.push(Response::Deleted { existed: true });
    ops.extend([get("a"), get("missing")]);
    expected.extend([Response::NotFound, Response::NotFound]);
    for i in 0..100 {
        ops.push(put(&format!("k{i}"), &format!("v{i}")));
        expected.push(Response::Ok);
    }
    for i in (0..100).rev() {
        ops.push(get(&format!("k{i}")));
        expected.push(value(&format!("v{i}")));
    }
    ops.extend([put("k0", "last"), get("k0")]);
    expected.extend([Response::Ok, value("last")]);
    assert_eq!(c.pipeline(&ops).unwrap(), expected);
}

fn write_keys(server: &Server, n: usize) {
    let mut c = server.client();
    let puts: Vec<Request> = (0..n)
        .map(|i| Request::Put {
            key: Bytes::from(format!("durable-{i}")),
            value: Bytes::from(format!("value-{i}")),
        })
        .collect();
    let answers = c.pipeline(&puts).unwrap();
    assert!(answers.iter().all(|a| *a == Response::Ok));
    assert!(c.delete(b"durable-0").unwrap());
}

fn check_keys(server: &Server, n: usize) {
    let mut c = server.client();
    let gets: Vec<Request> = (0..n)
        .map(|i| Request::Get {
            key: Bytes::from(format!("durable-{i}")),
        })
        .collect();
    let answers = c.pipeline(&gets).unwrap();
    assert_eq!(answers[0], Response::NotFound, "the delete survived");
    for (i, answer) in answers.iter().enumerate().skip(1) {
        assert_eq!(
            *answer,
            Response::Value(Bytes::from(format!("value-{i}"))),
            "key {i}"
        );
    }
}

#[test]
fn data_survives_sigterm_and_restart() {
    let mut server = Server::start(&["--durability", "always"]);
    write_keys(&server, 2000);
    let status = server.sigterm();
    assert!(status.success(), "SIGTERM exit: {status}");
    server.restart();
    check_keys(&server, 2000);
}

#[test]
fn acknowledged_writes_survive_sigkill_and_restart() {
    let mut server = Server::start(&["--durability", "always"]);
    write_keys(&server, 2000);
    server.sigkill();
    server.restart();
    check_keys(&server, 2000);
}

/// Batches of `BATCH_KEYS` puts, each key holding its batch number, are
/// written continuously until the node is killed mid-stream. After the
/// restart every batch is complete or absent, and every acknowledged
/// batch is complete.
#[test]
fn a_batch_interrupted_by_sigkill_is_all_or_nothing() {
    const BATCH_KEYS: usize = 50;
    let mut server = Server::start(&["--durability", "always"]);
    let addr = server.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut c = connect_client(addr);
            let value = vec![b'v'; 8 * 1024];
            let mut acked = BTreeSet::new();
            let mut sent = 0usize;
            // Bounded: a few thousand batches at most, well past the kill.
            for batch in 0..5000usize {
                let ops: Vec<Request> = (0..4)
                    .map(|j| {
                        let b = batch * 4 + j;
                        Request::Batch(
                            (0..BATCH_KEYS)
                                .map(|k| BatchOp::Put {
                                    key: Bytes::from(format!("batch-{b}-{k}")),
                                    value: Bytes::from(
                                        [format!("{b}:").as_bytes(), &value].concat(),
                                    ),
                                })
                                .collect(),
                        )
                    })
                    .collect();
                sent = batch * 4 + 4;
                match c.pipeline(&ops) {
                    Ok(answers) => {
                        for (j, a) in answers.iter().enumerate() {
                            if *a == Response::Ok {
                                acked.insert(batch * 4 + j);
                            }
                        }
                    }
                    Err(_) => break,
                }
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
            }
            (acked, sent)
        })
    };
    // Kill once some batches are durable, while more are being written.
    let mut probe = server.client();
    wait_for(START_DEADLINE, "20 batches to be written", || {
        probe.exists(b"batch-20-0").unwrap_or(false).then_some(())
    });
    server.sigkill();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, sent) = writer.join().expect("writer thread");
    assert!(
        !acked.is_empty(),
        "no batch was acknowledged before the kill"
    );

    server.restart();
    let mut c = server.client();
    let mut complete = 0;
    for b in 0..sent {
        let gets: Vec<Request> = (0..BATCH_KEYS)
            .map(|k| Request::Get {
                key: Bytes::from(format!("batch-{b}-{k}")),
            })
            .collect();
        let answers = c.pipeline(&gets).unwrap();
        let present = answers
            .iter()
            .filter(
                |a| matches!(a, Response::Value(v) if v.starts_with(format!("{b}:").as_bytes())),
            )
            .count();
        assert!(
            present == 0 || present == BATCH_KEYS,
            "batch {b} is torn: {present} of {BATCH_KEYS} keys after SIGKILL"
        );
        if acked.contains(&b) {
            assert_eq!(present, BATCH_KEYS, "acknowledged batch {b} lost");
        }
        if present == BATCH_KEYS {
            complete += 1;
        }
    }
    eprintln!(
        "sent {sent} batches, {} acknowledged, {complete} complete after restart",
        acked.len()
    );
    assert!(complete >= acked.len());
}

#[test]
fn the_client_reconnects_after_the_server_closes_an_idle_connection() {
    let server = Server::start(&["--idle-timeout-secs", "1"]);
    let mut c = server.client();
    c.put(b"k", b"v").unwrap();
    wait_for(START_DEADLINE, "the idle connection to be closed", || {
        (metric(server.http_addr, "kvstore_connections_active") == 0.0).then_some(())
    });
    // The next write and read transparently reconnect.
    c.put(b"k2", b"v2").unwrap();
    assert_eq!(c.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}
