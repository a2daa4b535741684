//! Backups: `kvstore backup` against live nodes (under writes and
//! compaction), hard links between backups, retention, `kvstore restore`
//! refusing damaged or incomplete backups, a full backup disk, a restored
//! replica resuming replication from the backup's end offset, and the
//! node's record of its last committed backup (`LAST_BACKUP`, the
//! `kvstore_backup_last_success_timestamp_seconds` gauge).

use crate::common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::host::Tmpfs;
use common::{connect_client, kvstore_bin, run_cli, wait_for, Server, START_DEADLINE};
use kvstore::engine::dir_id::{DirId, Origin};
use serde_json::Value;

const SEGMENT: &str = "65536";
const KEYS: u64 = 200;

fn kvstore(args: &[&str]) -> Output {
    let mut cmd = Command::new(kvstore_bin());
    cmd.args(args)
        .env_remove("KVSTORE_ADDR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    run_cli(cmd, None)
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn backup(from: &str, to: &Path, extra: &[&str]) -> Output {
    let to = to.to_str().expect("utf-8 path");
    let mut args = vec!["backup", "--from", from, "--to", to];
    args.extend_from_slice(extra);
    kvstore(&args)
}

fn backup_ok(from: &str, to: &Path, extra: &[&str]) -> PathBuf {
    let out = backup(from, to, extra);
    assert!(out.status.success(), "backup failed: {}", text(&out));
    newest_backup(to)
}

fn restore(from: &Path, data: &Path) -> Output {
    kvstore(&[
        "restore",
        "--from",
        from.to_str().expect("utf-8"),
        "--data-dir",
        data.to_str().expect("utf-8"),
    ])
}

/// Complete backups (with a manifest) under `root`, oldest first.
fn complete_backups(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)
        .expect("list backups")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("MANIFEST.json").is_file())
        .collect();
    v.sort();
    v
}

fn newest_backup(root: &Path) -> PathBuf {
    complete_backups(root)
        .pop()
        .expect("a complete backup exists")
}

fn manifest(dir: &Path) -> Value {
    let bytes = std::fs::read(dir.join("MANIFEST.json")).expect("read manifest");
    serde_json::from_slice(&bytes).expect("manifest is JSON")
}

fn files(m: &Value) -> Vec<(String, u64, u64)> {
    m["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().expect("name").to_string(),
                f["len"].as_u64().expect("len"),
                f["crc32"].as_u64().expect("crc32"),
            )
        })
        .collect()
}

/// Writes `n` values: sequence numbers `from..from+n` to key `seq % KEYS`.
fn write_seq(addr: std::net::SocketAddr, from: u64, n: u64) {
    let mut c = connect_client(addr);
    for seq in from..from + n {
        let key = format!("k{:03}", seq % KEYS);
        c.put(
            key.as_bytes(),
            format!("{seq:08}-{}", "x".repeat(200)).as_bytes(),
        )
        .expect("put");
    }
}

/// Reads every key of the sequence workload: key → seq.
fn read_state(addr: std::net::SocketAddr) -> BTreeMap<u64, u64> {
    let mut c = connect_client(addr);
    let mut state = BTreeMap::new();
    for k in 0..KEYS {
        if let Some(v) = c.get(format!("k{k:03}").as_bytes()).expect("get") {
            let seq: u64 = std::str::from_utf8(v.get(..8).expect("value prefix"))
                .expect("utf-8")
                .parse()
                .expect("seq");
            state.insert(k, seq);
        }
    }
    state
}

/// The state after the writes `0..=n`, `n + 1` of them.
fn state_after(n: u64) -> BTreeMap<u64, u64> {
    let mut s = BTreeMap::new();
    for seq in n.saturating_sub(KEYS - 1)..=n {
        s.insert(seq % KEYS, seq);
    }
    s
}

fn wait_caught_up(replica: &Server, master: &Server) {
    wait_for(START_DEADLINE, "the replica to catch up", || {
        let m = connect_client(master.addr).stats().ok()?;
        let r = connect_client(replica.addr).stats().ok()?;
        let end = |s: &serde_json::Map<String, Value>| s["replication"]["end_offset"].as_u64();
        (end(&m)? == end(&r)?).then_some(())
    });
}

#[test]
fn backup_under_writes_and_compaction_restores_a_state_that_existed() {
    let master = Server::start(&["--segment-max-bytes", SEGMENT]);
    let master_addr = master.addr.to_string();
    let replica = Server::start(&[
        "--segment-max-bytes",
        SEGMENT,
        "--role",
        "replica",
        "--master-addr",
        &master_addr,
    ]);
    write_seq(master.addr, 0, 2000);
    wait_caught_up(&replica, &master);

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(1999));
    let writer = {
        let (stop, acked, addr) = (stop.clone(), acked.clone(), master.addr);
        std::thread::spawn(move || {
            let mut seq = 2000;
            let end = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::SeqCst) && Instant::now() < end && seq < 200_000 {
                write_seq(addr, seq, 50);
                seq += 50;
                acked.store(seq - 1, Ordering::SeqCst);
            }
        })
    };
    let compactor = {
        let (stop, addrs) = (stop.clone(), [replica.addr, master.addr]);
        std::thread::spawn(move || {
            let mut runs = 0u32;
            let end = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::SeqCst) && Instant::now() < end && runs < 10_000 {
                for a in addrs {
                    connect_client(a).compact().expect("compact");
                }
                runs += 1;
            }
            runs
        })
    };
    let root = tempfile::tempdir().expect("tempdir");
    // (backup, the newest write acknowledged before it started: a master's
    // backup must hold it; a replica's holds a prefix of the master's log).
    let mut checked: Vec<(PathBuf, Option<u64>)> = Vec::new();
    for _ in 0..3 {
        let from = format!("{},{}", replica.addr, master.addr);
        let dir = backup_ok(&from, root.path(), &[]);
        let m = manifest(&dir);
        assert_eq!(
            m["source"].as_str(),
            Some(replica.addr.to_string().as_str())
        );
        assert_eq!(m["source_role"].as_str(), Some("replica"));
        checked.push((dir, None));
        let before = acked.load(Ordering::SeqCst);
        let dir = backup_ok(&master_addr, root.path(), &[]);
        checked.push((dir, Some(before)));
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
    let compactions = compactor.join().expect("compactor");
    assert!(compactions > 0, "no compaction ran during the backups");

    for (i, (dir, floor)) in checked.iter().enumerate() {
        let data = root.path().join(format!("restored-{i}"));
        let out = restore(dir, &data);
        assert!(out.status.success(), "restore failed: {}", text(&out));
        let node = Server::start_on(&data, &[], true);
        let state = read_state(node.addr);
        let n = *state.values().max().expect("restored keys");
        assert_eq!(
            state,
            state_after(n),
            "backup {} does not restore to a state that existed",
            dir.display()
        );
        if let Some(floor) = floor {
            assert!(
                n >= *floor,
                "backup {} lacks write {floor}, acknowledged before it began (has {n})",
                dir.display()
            );
        }
    }
}

#[test]
fn a_second_backup_links_unchanged_files_and_retention_keeps_n() {
    let master = Server::start(&["--segment-max-bytes", SEGMENT]);
    let addr = master.addr.to_string();
    write_seq(master.addr, 0, 1500);
    let root = tempfile::tempdir().expect("tempdir");
    let first = backup_ok(&addr, root.path(), &[]);
    write_seq(master.addr, 1500, 1500);
    // A new second for the directory name is not needed (suffixes), but
    // the names must sort in creation order.
    let second = backup_ok(&addr, root.path(), &[]);
    assert!(first < second);
    let (m1, m2) = (manifest(&first), manifest(&second));
    let old: BTreeMap<String, (u64, u64)> = files(&m1)
        .into_iter()
        .map(|(n, l, c)| (n, (l, c)))
        .collect();
    let mut linked = 0;
    let mut copied = 0;
    for (name, len, crc) in files(&m2) {
        let meta2 = std::fs::metadata(second.join(&name)).expect("file in backup 2");
        assert_eq!(meta2.len(), len, "{name}");
        // Data files (segments, merged files) are linked when unchanged;
        // the small MERGED and EPOCHS are always copied.
        let data_file = name.ends_with(".seg") || name.ends_with(".dat");
        match old.get(&name) {
            Some(&(l, c)) if data_file && l == len && c == crc => {
                let meta1 = std::fs::metadata(first.join(&name)).expect("file in backup 1");
                assert_eq!(
                    meta1.ino(),
                    meta2.ino(),
                    "{name} was copied again, not linked"
                );
                assert_eq!(meta2.nlink(), 2, "{name}");
                linked += 1;
            }
            _ => {
                assert_eq!(
                    meta2.nlink(),
                    1,
                    "{name} is new or changed: a copy of its own"
                );
                copied += 1;
            }
        }
    }
    assert!(
        linked >= 3,
        "expected sealed segments to be linked, got {linked}"
    );
    assert!(
        copied >= 2,
        "expected new segments to be copied, got {copied}"
    );
    let linked_flags = m2["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter(|f| f["linked"] == Value::Bool(true))
        .count();
    assert_eq!(linked_flags, linked);

    // Retention: a third and fourth backup with --keep 2 leave two, and
    // the oldest kept ones still restore (their links survive removal).
    backup_ok(&addr, root.path(), &["--keep", "2"]);
    let fourth = backup_ok(&addr, root.path(), &["--keep", "2"]);
    let left = complete_backups(root.path());
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!first.exists() && !second.exists());
    let data = root.path().join("restored");
    let out = restore(&fourth, &data);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn restore_refuses_damaged_incomplete_or_occupied_targets() {
    let master = Server::start(&["--segment-max-bytes", SEGMENT]);
    write_seq(master.addr, 0, 800);
    let root = tempfile::tempdir().expect("tempdir");
    let good = backup_ok(&master.addr.to_string(), root.path(), &[]);
    let biggest = files(&manifest(&good))
        .into_iter()
        .filter(|(n, _, _)| n.ends_with(".seg"))
        .max_by_key(|(_, l, _)| *l)
        .expect("a segment");

    // Truncated by one byte.
    let truncated = root.path().join("truncated");
    copy_dir(&good, &truncated);
    let victim = truncated.join(&biggest.0);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&victim)
        .expect("open");
    f.set_len(biggest.1 - 1).expect("truncate");
    let data = root.path().join("data-1");
    let out = restore(&truncated, &data);
    assert!(
        !out.status.success(),
        "a truncated backup restored: {}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&biggest.0) && err.contains("truncated"),
        "{err}"
    );
    assert!(!data.exists(), "a refused restore left files behind");

    // Same length, one byte flipped.
    let flipped = root.path().join("flipped");
    copy_dir(&good, &flipped);
    let victim = flipped.join(&biggest.0);
    let mut bytes = std::fs::read(&victim).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&victim, &bytes).expect("write");
    let out = restore(&flipped, &data);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum"),
        "{}",
        text(&out)
    );

    // No manifest: an incomplete backup.
    let incomplete = root.path().join("incomplete");
    copy_dir(&good, &incomplete);
    std::fs::remove_file(incomplete.join("MANIFEST.json")).expect("rm manifest");
    let out = restore(&incomplete, &data);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("incomplete"),
        "{}",
        text(&out)
    );

    // A data directory that is not empty.
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("something"), b"x").expect("write");
    let out = restore(&good, &data);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        text(&out)
    );

    // The intact backup restores and serves every key.
    let data = root.path().join("data-ok");
    let out = restore(&good, &data);
    assert!(out.status.success(), "{}", text(&out));
    let node = Server::start_on(&data, &[], true);
    assert_eq!(read_state(node.addr), state_after(799));
}

/// The identity of `dir` (`DIR_ID`, docs/FORMAT.md).
fn dir_id(dir: &Path) -> DirId {
    DirId::load(dir)
        .expect("read DIR_ID")
        .expect("the data directory has a DIR_ID")
}

#[test]
fn a_directory_keeps_its_identity_and_a_restored_one_gets_a_new_one() {
    let mut node = Server::start(&[]);
    write_seq(node.addr, 0, 100);
    let own = dir_id(&node.data_dir());
    assert_eq!(own.origin(), Origin::Created);
    node.sigterm();
    node.restart();
    assert_eq!(dir_id(&node.data_dir()), own, "kept across a restart");
    let root = tempfile::tempdir().expect("tempdir");
    let backup = backup_ok(&node.addr.to_string(), root.path(), &[]);
    assert!(
        DirId::load(&backup).expect("read").is_none(),
        "a backup must not carry the source's identity"
    );

    let data = root.path().join("restored");
    let out = restore(&backup, &data);
    assert!(out.status.success(), "{}", text(&out));
    let restored = dir_id(&data);
    assert_eq!(restored.origin(), Origin::Restored);
    assert_ne!(restored, own, "a restored directory is another copy");
    // The node started on it keeps the restored identity.
    let mut from_backup = Server::start_on(&data, &[], true);
    assert_eq!(read_state(from_backup.addr), state_after(99));
    from_backup.sigterm();
    assert_eq!(dir_id(&data), restored);
    assert_eq!(dir_id(&node.data_dir()), own);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("list").flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

#[test]
fn a_full_backup_disk_fails_loudly_and_leaves_no_manifest() {
    let master = Server::start(&["--segment-max-bytes", SEGMENT]);
    write_seq(master.addr, 0, 3000); // about 700 KB of log
    let Some(disk) = Tmpfs::mount("256k") else {
        return;
    };
    let out = backup(&master.addr.to_string(), disk.path(), &["--keep", "3"]);
    assert!(
        !out.status.success(),
        "a backup onto a full disk succeeded: {}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("backup failed") && err.contains("No space left"),
        "{err}"
    );
    // A failed backup is not a successful one for the node either.
    assert_eq!(last_backup_metric(&master), 0.0);
    assert!(!master.data_dir().join("LAST_BACKUP").exists());
    let mut stack = vec![disk.path().to_path_buf()];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("list").flatten() {
            seen += 1;
            assert!(seen < 10_000);
            let name = e.file_name();
            assert!(
                !name.to_string_lossy().starts_with("MANIFEST"),
                "a failed backup left {}",
                e.path().display()
            );
            if e.path().is_dir() {
                stack.push(e.path());
            }
        }
    }
    // With room, the same backup succeeds.
    let roomy = tempfile::tempdir().expect("tempdir");
    backup_ok(&master.addr.to_string(), roomy.path(), &[]);
    assert!(last_backup_metric(&master) > 0.0);
}

fn last_backup_metric(node: &Server) -> f64 {
    common::metric(
        node.http_addr,
        "kvstore_backup_last_success_timestamp_seconds",
    )
}

fn unix_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Asks `node` for BACKUP on a raw connection, reads the whole snapshot
/// stream and closes without confirming it, as a client that failed to
/// write its manifest would; returns once the node has logged it.
fn abandon_a_backup(node: &Server) {
    read_a_snapshot_unconfirmed(node);
    wait_for(
        START_DEADLINE,
        "the node to see the abandoned backup",
        || {
            node.logs()
                .contains("closed without confirming")
                .then_some(())
        },
    );
}

fn read_a_snapshot_unconfirmed(node: &Server) {
    use kvstore::protocol::replication::ToReplica;
    use kvstore::protocol::Frame;
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(node.addr).expect("connect");
    sock.set_read_timeout(Some(common::NET_DEADLINE))
        .expect("timeout");
    sock.write_all(&[1, 0, 0, 0, 0x60]).expect("send BACKUP");
    let mut buf = bytes::BytesMut::new();
    let mut chunk = vec![0u8; 64 * 1024];
    for _ in 0..1_000_000 {
        if let Some(frame) = Frame::parse(&mut buf, u32::MAX).expect("frames") {
            if let Ok(Some(ToReplica::Stream { .. })) = ToReplica::decode(frame) {
                return; // the whole snapshot: drop the connection now
            }
            continue;
        }
        let n = sock.read(&mut chunk).expect("read the snapshot");
        assert!(n > 0, "the node closed before the end of the snapshot");
        buf.extend_from_slice(&chunk[..n]);
    }
    panic!("the snapshot stream never ended");
}

#[test]
fn the_node_records_a_backup_its_client_committed_and_keeps_it_across_restarts() {
    let mut node = Server::start(&["--segment-max-bytes", SEGMENT]);
    write_seq(node.addr, 0, 300);
    assert_eq!(last_backup_metric(&node), 0.0, "no backup yet");

    // A stream read to its end but never confirmed is not a backup.
    abandon_a_backup(&node);
    assert_eq!(last_backup_metric(&node), 0.0);

    let root = tempfile::tempdir().expect("tempdir");
    let before = unix_secs();
    let dir = backup_ok(&node.addr.to_string(), root.path(), &[]);
    let after = unix_secs();
    // `kvstore backup` returns once the node has recorded it.
    let recorded = last_backup_metric(&node);
    assert!(
        before - 0.001 <= recorded && recorded <= after + 0.001,
        "{before} <= {recorded} <= {after}"
    );
    let last: Value = serde_json::from_slice(
        &std::fs::read(node.data_dir().join("LAST_BACKUP")).expect("LAST_BACKUP"),
    )
    .expect("JSON");
    assert_eq!(last["end"], manifest(&dir)["end"], "{last}");

    // The time survives a restart, and an abandoned stream after a real
    // backup leaves it as it was.
    node.sigterm();
    node.restart();
    assert_eq!(last_backup_metric(&node), recorded);
    abandon_a_backup(&node);
    assert_eq!(last_backup_metric(&node), recorded);
}

#[test]
fn a_restored_replica_resumes_from_the_backup_end_offset() {
    let master = Server::start(&["--segment-max-bytes", SEGMENT]);
    let addr = master.addr.to_string();
    write_seq(master.addr, 0, 1000);
    let root = tempfile::tempdir().expect("tempdir");
    let dir = backup_ok(&addr, root.path(), &[]);
    let end = manifest(&dir)["end"].as_u64().expect("end");
    assert!(end > 0);
    write_seq(master.addr, 1000, 500);

    let data = root.path().join("restored");
    let out = restore(&dir, &data);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("log end {end}")));
    let replica = Server::start_on(&data, &["--role", "replica", "--master-addr", &addr], true);
    wait_caught_up(&replica, &master);
    // Caught up by offset; every write visible shortly after (a replica
    // indexes records once they are durable).
    let expected = state_after(1499);
    wait_for(START_DEADLINE, "the replica to show every write", || {
        (read_state(replica.addr) == expected).then_some(())
    });
    let stats = connect_client(replica.addr).stats().expect("stats");
    let repl = &stats["replication"];
    assert_eq!(repl["full_resyncs"].as_u64(), Some(0), "{repl}");
    assert!(repl["partial_resyncs"].as_u64() >= Some(1), "{repl}");
    assert!(
        replica.logs().contains(&format!("from={end}"))
            || replica.logs().contains(&end.to_string()),
        "the replica did not resume from {end}:\n{}",
        replica.logs()
    );
}

#[test]
fn restore_from_a_backup_root_takes_the_newest_complete_backup() {
    let master = Server::start(&["--segment-max-bytes", SEGMENT]);
    let addr = master.addr.to_string();
    write_seq(master.addr, 0, 300);
    let root = tempfile::tempdir().expect("tempdir");
    backup_ok(&addr, root.path(), &[]);
    write_seq(master.addr, 300, 300);
    let newest = backup_ok(&addr, root.path(), &[]);
    // An incomplete backup named later than every complete one (a run
    // that failed) is not a candidate.
    std::fs::create_dir(root.path().join("99991231T235959Z")).expect("mkdir");

    let data = tempfile::tempdir().expect("tempdir");
    let data = data.path().join("data");
    let out = restore(root.path(), &data);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&newest.display().to_string()),
        "{}",
        text(&out)
    );
    let node = Server::start_on(&data, &[], true);
    assert_eq!(read_state(node.addr), state_after(599));

    // A root with no complete backup is refused, naming it.
    let empty = tempfile::tempdir().expect("tempdir");
    let out = restore(empty.path(), &empty.path().join("data"));
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("incomplete backup"),
        "{}",
        text(&out)
    );
}

/// docs/PROTOCOL.md, BACKUP: sent behind other requests in a pipeline it
/// is answered MALFORMED_REQUEST, and the connection goes on.
#[test]
fn backup_pipelined_behind_other_requests_is_refused() {
    use common::Answer;
    use kvstore::protocol::{ErrorCode, Request, Response};
    let node = Server::start(&[]);
    write_seq(node.addr, 0, 10);
    let mut raw = common::raw_connect(node.addr);
    // One write: the node reads both requests at once.
    raw.send(
        &[
            common::request_bytes(&Request::Ping),
            common::request_bytes(&Request::Backup),
        ]
        .concat(),
    )
    .expect("send");
    assert!(matches!(raw.answer(), Answer::Frame(Response::Pong)));
    match raw.answer() {
        Answer::Frame(Response::Error { code, message }) => {
            assert_eq!(code, ErrorCode::MALFORMED_REQUEST, "{message}")
        }
        other => panic!("expected MALFORMED_REQUEST for BACKUP, got {other:?}"),
    }
    raw.send(&common::request_bytes(&Request::Ping))
        .expect("send");
    assert!(matches!(raw.answer(), Answer::Frame(Response::Pong)));
}

/// docs/PROTOCOL.md, BACKUP: a request sent after BACKUP is not run: once
/// the snapshot is out it is answered MALFORMED_REQUEST (not dropped in
/// silence), then the connection closes and no backup is recorded.
#[test]
fn a_request_after_backup_is_refused_not_dropped() {
    use kvstore::protocol::{ErrorCode, Limits, Request, Response};
    let node = Server::start(&[]);
    write_seq(node.addr, 0, 10);
    let mut raw = common::raw_connect(node.addr);
    // One write: the PUT is read together with BACKUP.
    let key = b"after-backup".to_vec();
    let put = Request::Put {
        key: key.clone().into(),
        value: b"must not be stored".to_vec().into(),
    };
    raw.send(
        &[
            common::request_bytes(&Request::Backup),
            common::request_bytes(&put),
        ]
        .concat(),
    )
    .expect("send");
    let mut refused = None;
    // The snapshot of a few records is a handful of frames.
    for _ in 0..10_000 {
        let Some(frame) = raw.frame() else { break };
        if let Ok(Response::Error { code, message }) = Response::decode(frame, &Limits::default()) {
            refused = Some((code, message));
            break;
        }
    }
    match refused {
        Some((code, message)) => assert_eq!(code, ErrorCode::MALFORMED_REQUEST, "{message}"),
        None => panic!("the request after BACKUP was dropped without an answer"),
    }
    assert!(
        raw.frame().is_none(),
        "the connection closes after the refusal"
    );
    let mut client = connect_client(node.addr);
    assert_eq!(client.get(&key).expect("get"), None, "the PUT was not run");
    assert_eq!(last_backup_metric(&node), 0.0, "no backup recorded");
}
