//! Key expiry across real master and replica processes
//! (docs/REPLICATION.md § 6a): only the master deletes expired keys, by
//! appending deletes that replicas apply; replicas hide expired keys but
//! never delete on their own; a promoted replica takes the deletes over;
//! a replica too old to read expiring records is refused.
//!
//! Most tests write their keys into the master's data directory with the
//! engine before the master starts, with expiries a few seconds ahead on
//! the system clock. The promotion test writes them through a client
//! (PUT_EXPIRING) while it runs, and promotes the replica under that load.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kvstore::client::BlockingClient;
use kvstore::engine::clock::system_now_ms;
use kvstore::engine::{Engine, Options};
use kvstore::protocol::replication::SyncRequest;
use kvstore::protocol::{Auth, ErrorCode, Expiry, Hello, Request, Response};
use serde_json::Value;

use crate::common::replication::{
    assert_same_contents, get_all, key, master, no_redirect_client, repl, replica, segments_from,
    stats, value, wait_converged, CONVERGE_DEADLINE,
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

fn keys_of(addr: SocketAddr) -> u64 {
    stats(addr)
        .get("keys")
        .and_then(Value::as_u64)
        .expect("stats.keys")
}

fn number(addr: SocketAddr, name: &str) -> u64 {
    stats(addr)
        .get(name)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("stats.{name} is not a number"))
}

/// How many of the `ttl-*` keys `addr` serves.
fn ttl_keys_served(addr: SocketAddr) -> usize {
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
        (system_now_ms() > at).then_some(())
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
        dir_id: String::new(),
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

/// One write of the load in [`promoting_the_replica_midway_under_ttl_write_load_keeps_expiry_going`].
#[derive(Debug, Clone)]
struct Written {
    key: Bytes,
    value: Bytes,
    /// The expiry sent (ms since the Unix epoch), `None` for a key
    /// without.
    at: Option<u64>,
    /// Whether the write was acknowledged, and by which node.
    acked_by: Option<SocketAddr>,
}

/// Most writes the load makes, and how long it may run.
const LOAD_WRITES: usize = 50_000;
const LOAD_DEADLINE: Duration = Duration::from_secs(90);

/// Writes unique keys through whichever node `target` names, one at a
/// time: three in four expire 300 to 1,800 ms after they are sent, the
/// fourth has no expiry. Stops at `stop`, after [`LOAD_WRITES`] or after
/// [`LOAD_DEADLINE`]. A failed write is recorded unacknowledged and the
/// connection reopened.
fn ttl_load(
    target: Arc<Mutex<SocketAddr>>,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Written>>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let started = Instant::now();
        let mut client: Option<(SocketAddr, BlockingClient)> = None;
        for i in 0..LOAD_WRITES {
            if stop.load(Ordering::Acquire) || started.elapsed() > LOAD_DEADLINE {
                break;
            }
            let addr = *target.lock().expect("target lock");
            if client.as_ref().is_none_or(|(a, _)| *a != addr) {
                client = Some((addr, no_redirect_client(addr)));
            }
            let (_, c) = client.as_mut().expect("connected");
            let expiring = i % 4 != 3;
            let prefix = if expiring { "load-ttl" } else { "load-keep" };
            let (key, value) = (key(prefix, i), value(prefix, i, 32));
            let at = expiring.then(|| system_now_ms() + 300 + (i as u64 * 37) % 1_500);
            let result = match at {
                Some(at) => c.put_with_expiry(&key, &value, Expiry::At(at)),
                None => c.put(&key, &value),
            };
            let acked_by = result.is_ok().then_some(addr);
            log.lock().expect("log lock").push(Written {
                key,
                value,
                at,
                acked_by,
            });
            if result.is_err() {
                client = None;
                // The old master refuses at once once its replica left:
                // do not spin on it while the test switches the target.
                thread::sleep(Duration::from_millis(20));
            }
        }
    })
}

fn acked_by(log: &Mutex<Vec<Written>>, node: SocketAddr) -> usize {
    log.lock()
        .expect("log lock")
        .iter()
        .filter(|w| w.acked_by == Some(node))
        .count()
}

#[test]
fn promoting_the_replica_midway_under_ttl_write_load_keeps_expiry_going() {
    // Sync mode: every acknowledged write is on the replica, so the
    // promoted replica must hold every one that has not expired.
    let m = master(&["--replication-mode", "sync", "--sync-timeout-ms", "1000"]);
    let r = replica(m.addr, &[]);
    wait_converged(m.addr, &[r.addr]);

    let target = Arc::new(Mutex::new(m.addr));
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let writer = ttl_load(target.clone(), stop.clone(), log.clone());

    // Under load, the master's sweep deletes keys as they expire.
    wait_for(
        CONVERGE_DEADLINE,
        "the master to expire keys under load",
        || (number(m.addr, "expired_keys") >= 20).then_some(()),
    );
    // The replica serves none of the keys whose expiry passed, by the
    // time carried in their records, whether the master's delete has
    // reached it or not.
    let sample: Vec<Written> = log
        .lock()
        .expect("log lock")
        .iter()
        .filter(|w| w.acked_by.is_some() && w.at.is_some())
        .cloned()
        .collect();
    let before = system_now_ms();
    let keys: Vec<Bytes> = sample.iter().map(|w| w.key.clone()).collect();
    for (w, answer) in sample.iter().zip(get_all(r.addr, &keys)) {
        if w.at.is_some_and(|at| at <= before) {
            assert_eq!(
                answer,
                Response::NotFound,
                "the replica served expired {w:?}"
            );
        }
    }
    // ... and deletes none itself: every delete it holds is the master's.
    assert_eq!(stats(r.addr)["expiring"], Value::Bool(false));
    assert_eq!(number(r.addr, "expired_keys"), 0);

    // Promote the replica while the master still takes writes.
    let out = cli(r.addr, &["promote"]);
    assert!(out.status.success(), "{out:?}");
    wait_for(
        START_DEADLINE,
        "the promoted replica to expire keys",
        || {
            let s = stats(r.addr);
            (s["role"] == "master" && s["expiring"] == Value::Bool(true)).then_some(())
        },
    );
    // The load moves to the new master, as a client would.
    *target.lock().expect("target lock") = r.addr;
    wait_for(
        CONVERGE_DEADLINE,
        "writes acknowledged by the new master",
        || (acked_by(&log, r.addr) >= 200).then_some(()),
    );
    stop.store(true, Ordering::Release);
    writer.join().expect("the load thread");
    drop(m);

    let log = log.lock().expect("log lock").clone();
    // Nothing unexpired is lost, and nothing expired is served: each key
    // read on the new master is present exactly while its expiry has not
    // passed (a write never acknowledged may be absent, or present).
    let keys: Vec<Bytes> = log.iter().map(|w| w.key.clone()).collect();
    let before = system_now_ms();
    let answers = get_all(r.addr, &keys);
    let after = system_now_ms();
    for (w, answer) in log.iter().zip(&answers) {
        match answer {
            Response::Value(v) => {
                assert_eq!(v, &w.value, "{w:?}");
                assert!(
                    w.at.is_none_or(|at| at > before),
                    "the new master served an expired key: {w:?}"
                );
            }
            Response::NotFound => assert!(
                w.acked_by.is_none() || w.at.is_some_and(|at| at <= after),
                "an acknowledged, unexpired key was lost: {w:?}"
            ),
            other => panic!("GET {w:?} answered {other:?}"),
        }
    }

    // The new master's sweep deletes every key as it expires: once all
    // have, the index holds exactly the keys without expiry.
    let last = log
        .iter()
        .filter_map(|w| w.at)
        .max()
        .expect("expiring writes");
    wait_past(last);
    wait_for(
        CONVERGE_DEADLINE,
        "the new master to delete every expired key",
        || {
            let s = stats(r.addr);
            let n = |name: &str| s.get(name).and_then(Value::as_u64);
            (n("keys_with_expiry") == Some(0) && n("expiry_due") == Some(0)).then_some(())
        },
    );
    assert!(
        number(r.addr, "expired_keys") > 0,
        "the promoted replica's own sweep deleted nothing"
    );
    let keep: Vec<Bytes> = log
        .iter()
        .filter(|w| w.at.is_none())
        .map(|w| w.key.clone())
        .collect();
    let present = get_all(r.addr, &keep)
        .iter()
        .filter(|a| matches!(a, Response::Value(_)))
        .count();
    // The sweep's last deletes may still be on their way to the index.
    wait_for(
        CONVERGE_DEADLINE,
        "the index to hold the keys without expiry",
        || (keys_of(r.addr) == present as u64).then_some(()),
    );
    let acked_keep = log
        .iter()
        .filter(|w| w.at.is_none() && w.acked_by.is_some())
        .count();
    assert!(
        present >= acked_keep,
        "{present} of {acked_keep} acknowledged keys"
    );
}
