//! Key expiry across real master and replica processes
//! (docs/REPLICATION.md § 6a): only the master deletes expired keys, by
//! appending deletes that replicas apply; replicas hide expired keys but
//! never delete on their own; a promoted replica takes the deletes over;
//! a replica too old to read expiring records is refused.
//!
//! The keys are written into the master's data directory by the engine
//! before the master starts, with expiries a few seconds ahead on the
//! system clock, so the test needs no client command for expiry.

use std::path::Path;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kvstore::engine::{Engine, Options};
use kvstore::protocol::replication::SyncRequest;
use kvstore::protocol::{Auth, ErrorCode, Hello, Request, Response};
use serde_json::Value;

use crate::common::replication::{
    assert_same_contents, get_all, key, master, repl, replica, segments_from, stats, value,
    wait_converged,
};
use crate::common::{cli, raw_connect, wait_for, Answer, Server, START_DEADLINE};

/// Keys written with an expiry, and as many without.
const KEYS: usize = 50;

/// Writes `KEYS` keys `ttl-*` expiring `ttl` from now and `KEYS` keys
/// `keep-*` without expiry into a new data directory; returns the expiry
/// (ms since the Unix epoch).
fn seed(dir: &Path, ttl: Duration) -> u64 {
    let engine = Engine::open(dir, Options::default()).expect("open the seed directory");
    let at = engine.now_ms() + u64::try_from(ttl.as_millis()).expect("ttl");
    for i in 0..KEYS {
        engine
            .put_expiring(&key("ttl", i), &value("ttl", i, 40), at)
            .expect("put with expiry");
        engine
            .put(&key("keep", i), &value("keep", i, 40))
            .expect("put");
    }
    engine.close().expect("close the seed directory");
    at
}

fn all_keys() -> Vec<Bytes> {
    (0..KEYS)
        .flat_map(|i| [key("ttl", i), key("keep", i)])
        .collect()
}

fn keys_of(addr: std::net::SocketAddr) -> u64 {
    stats(addr)
        .get("keys")
        .and_then(Value::as_u64)
        .expect("stats.keys")
}

fn number(addr: std::net::SocketAddr, name: &str) -> u64 {
    stats(addr)
        .get(name)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("stats.{name} is not a number"))
}

/// How many of the `ttl-*` keys `addr` serves.
fn ttl_keys_served(addr: std::net::SocketAddr) -> usize {
    let keys: Vec<Bytes> = (0..KEYS).map(|i| key("ttl", i)).collect();
    get_all(addr, &keys)
        .iter()
        .filter(|r| matches!(r, Response::Value(_)))
        .count()
}

/// Waits until the system clock has passed `at` (ms since the Unix
/// epoch), polling.
fn wait_past(at: u64) {
    wait_for(START_DEADLINE, "the expiry time to pass", || {
        (kvstore::engine::clock::system_now_ms() > at).then_some(())
    });
}

#[test]
fn the_master_deletes_expired_keys_and_replicas_apply_its_deletes() {
    let seeded = tempfile::tempdir().unwrap();
    let data = seeded.path().join("data");
    let at = seed(&data, Duration::from_secs(4));
    let m = Server::start_on(&data, &["--role", "master"], true);
    let r = replica(m.addr, &[]);
    wait_converged(m.addr, &[r.addr]);

    wait_past(at);
    // Expired keys read as absent on both at once, deleted or not.
    assert_eq!(ttl_keys_served(m.addr), 0);
    assert_eq!(ttl_keys_served(r.addr), 0);
    // The master's sweep deletes them; the replica applies its deletes.
    wait_for(
        START_DEADLINE,
        "the master to delete the expired keys",
        || (keys_of(m.addr) == KEYS as u64).then_some(()),
    );
    assert_eq!(number(m.addr, "expired_keys"), KEYS as u64);
    let end = wait_converged(m.addr, &[r.addr]);
    assert_eq!(keys_of(r.addr), KEYS as u64);
    assert_same_contents(m.addr, &[r.addr], &all_keys());
    // The replica deleted nothing itself: its log is the master's, byte
    // for byte, deletes included.
    assert_eq!(number(r.addr, "expired_keys"), 0);
    assert_eq!(
        segments_from(&r.data_dir(), 0).last().map(|s| s.1.len()),
        segments_from(&m.data_dir(), 0).last().map(|s| s.1.len()),
        "active segments differ in length at end {end}"
    );
}

#[test]
fn a_replica_hides_expired_keys_never_deletes_them_and_takes_over_when_promoted() {
    let seeded = tempfile::tempdir().unwrap();
    let data = seeded.path().join("data");
    let at = seed(&data, Duration::from_secs(5));
    let mut m = Server::start_on(&data, &["--role", "master"], true);
    let r = replica(m.addr, &[]);
    let end = wait_converged(m.addr, &[r.addr]);
    assert_eq!(ttl_keys_served(r.addr), KEYS);
    // The master goes before the keys expire: no delete reaches the
    // replica.
    m.sigkill();

    wait_past(at);
    assert_eq!(ttl_keys_served(r.addr), 0, "expired keys must read absent");
    // Hidden, not deleted: the replica's index and log are unchanged.
    assert_eq!(keys_of(r.addr), 2 * KEYS as u64);
    assert_eq!(number(r.addr, "log_end"), end);
    assert_eq!(number(r.addr, "expired_keys"), 0);

    let out = cli(r.addr, &["promote"]);
    assert!(out.status.success(), "{out:?}");
    wait_for(START_DEADLINE, "the promoted replica to be master", || {
        (repl(r.addr)["role"] == "master").then_some(())
    });
    wait_for(
        START_DEADLINE,
        "the new master to delete the expired keys",
        || (keys_of(r.addr) == KEYS as u64).then_some(()),
    );
    assert_eq!(number(r.addr, "expired_keys"), KEYS as u64);
    assert!(
        number(r.addr, "log_end") > end,
        "the deletes are in its log"
    );
    let keep: Vec<Bytes> = (0..KEYS).map(|i| key("keep", i)).collect();
    assert!(get_all(r.addr, &keep)
        .iter()
        .all(|a| matches!(a, Response::Value(_))));
}

/// A REPL_SYNC frame as a replica built before format 2 sends it: without
/// the trailing format field.
fn old_repl_sync() -> Vec<u8> {
    let mut buf = BytesMut::new();
    Request::ReplSync(SyncRequest {
        replica_id: "old-replica".into(),
        advertise: String::new(),
        epoch: 0,
        end: 0,
        full: false,
        format: 0,
    })
    .encode(&mut buf)
    .expect("encode");
    // Drop the format field and fix the length prefix.
    buf.truncate(buf.len() - 4);
    let len = u32::try_from(buf.len() - 4).expect("len");
    let mut out = BytesMut::new();
    out.put_u32_le(len);
    out.extend_from_slice(&buf[4..]);
    out.to_vec()
}

#[test]
fn a_replica_that_cannot_read_expiring_records_is_refused_clearly() {
    let m = master(&[]);
    let mut raw = raw_connect(m.addr);
    let mut hello = BytesMut::new();
    Request::Hello(Hello {
        version: 1,
        auth: Auth::None,
        client_name: "old-replica".into(),
    })
    .encode(&mut hello)
    .expect("encode");
    raw.send(&hello).expect("send");
    assert!(matches!(raw.answer(), Answer::Frame(Response::HelloOk(_))));
    raw.send(&old_repl_sync()).expect("send");
    match raw.answer() {
        Answer::Frame(Response::Error { code, message }) => {
            assert_eq!(code, ErrorCode::UNSUPPORTED_VERSION, "{message}");
            assert!(
                message.contains("upgrade the replicas before the master"),
                "{message}"
            );
        }
        other => panic!("an old replica's REPL_SYNC answered {other:?}"),
    }
    // A current replica is served.
    let r = replica(m.addr, &[]);
    wait_converged(m.addr, &[r.addr]);
}
