//! The raw-log calls replication is built on: reading bytes by offset,
//! appending shipped bytes (verified record by record, batches atomic,
//! group-committed when appended without waiting), truncating, and the
//! byte-identity of the copied log.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvstore::engine::{Engine, Error, Faults, Options, WriteOp, RAW_BUFFER_MAX};

use crate::common;

fn open_replica(dir: &Path) -> Engine {
    let engine = Engine::open(dir, common::small_segment_options()).unwrap();
    engine.set_auto_roll(false);
    engine
}

/// A replica's engine whose I/O a test can hold or fail.
fn open_faulty_replica(dir: &Path, options: Options) -> (Engine, Arc<Faults>) {
    let (engine, faults) = common::faulty_engine(dir, options);
    engine.set_auto_roll(false);
    (engine, faults)
}

fn segment_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg"))
        .map(|n| (n.clone(), fs::read(dir.join(&n)).unwrap()))
        .collect();
    out.sort();
    out
}

#[test]
fn shipped_bytes_rebuild_an_identical_log() {
    let (mdir, rdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = Engine::open(mdir.path(), common::small_segment_options()).unwrap();
    let replica = open_replica(rdir.path());
    for i in 0..500u32 {
        master
            .put(
                format!("k{}", i % 60).as_bytes(),
                &i.to_le_bytes().repeat(i as usize % 13),
            )
            .unwrap();
        if i % 50 == 0 {
            master.delete(format!("k{}", i % 7).as_bytes()).unwrap();
            let keys: Vec<Vec<u8>> = (0..5).map(|j| format!("b{j}").into_bytes()).collect();
            let value = vec![i as u8; 40];
            let batch: Vec<WriteOp> = keys.iter().map(|k| WriteOp::Put(k, &value)).collect();
            master.write_batch(&batch).unwrap();
        }
    }
    // Odd chunk sizes split records and batches everywhere.
    let shipped = common::ship(&master, &replica, 97);
    assert_eq!(shipped, master.log_end());
    assert_eq!(replica.stats().log_end, master.log_end());
    for k in (0..60)
        .map(|i| format!("k{i}"))
        .chain((0..5).map(|j| format!("b{j}")))
    {
        assert_eq!(
            replica.get(k.as_bytes()).unwrap(),
            master.get(k.as_bytes()).unwrap(),
            "{k}"
        );
    }
    assert_eq!(replica.stats().keys, master.stats().keys);
    master.flush().unwrap();
    replica.flush().unwrap();
    assert!(segment_files(mdir.path()).len() > 3);
    assert_eq!(segment_files(mdir.path()), segment_files(rdir.path()));
    // The replica survives a reopen with the same contents.
    drop(replica);
    let replica = open_replica(rdir.path());
    assert_eq!(replica.stats().log_end, master.log_end());
    assert_eq!(replica.get(b"b4").unwrap(), master.get(b"b4").unwrap());
}

#[test]
fn a_batch_is_invisible_until_its_commit_record_arrives() {
    let (mdir, rdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = Engine::open(mdir.path(), common::small_segment_options()).unwrap();
    let replica = open_replica(rdir.path());
    master.put(b"before", b"1").unwrap();
    let batch = [WriteOp::Put(b"a", b"A"), WriteOp::Put(b"b", b"B")];
    master.write_batch(&batch).unwrap();
    let all = master.read_log(0, 1 << 20).unwrap();
    // Everything but the commit record (17-byte header + 4-byte count).
    let cut = all.bytes.len() - 21;
    assert_eq!(replica.append_log(0, &all.bytes[..cut]).unwrap(), cut);
    assert_eq!(replica.get(b"before").unwrap(), Some(b"1".to_vec()));
    assert_eq!(
        replica.get(b"a").unwrap(),
        None,
        "batch member visible before commit"
    );
    // A crash here: recovery drops the open batch.
    drop(replica);
    let reopened = open_replica(rdir.path());
    assert_eq!(reopened.get(b"a").unwrap(), None);
    let end = reopened.stats().log_end;
    let rest = master.read_log(end, 1 << 20).unwrap();
    reopened.append_log(rest.segment_base, &rest.bytes).unwrap();
    assert_eq!(reopened.get(b"a").unwrap(), Some(b"A".to_vec()));
    assert_eq!(reopened.get(b"b").unwrap(), Some(b"B".to_vec()));
}

#[test]
fn damaged_shipped_bytes_are_refused_and_nothing_is_applied() {
    let (mdir, rdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = Engine::open(mdir.path(), common::small_segment_options()).unwrap();
    let replica = open_replica(rdir.path());
    master.put(b"k", b"value").unwrap();
    let mut bytes = master.read_log(0, 1 << 20).unwrap().bytes.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    match replica.append_log(0, &bytes) {
        Err(Error::BadLogBytes { offset, .. }) => assert_eq!(offset, 0),
        other => panic!("expected BadLogBytes, got {other:?}"),
    }
    assert_eq!(replica.stats().log_end, 0);
    assert_eq!(replica.get(b"k").unwrap(), None);
    // A segment that does not continue the log is refused too.
    assert!(matches!(
        replica.append_log(4096, &[]),
        Err(Error::BadLogBytes { .. })
    ));
}

#[test]
fn truncation_restores_the_older_values() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), common::small_segment_options()).unwrap();
    for i in 0..100u32 {
        engine
            .put(format!("k{}", i % 10).as_bytes(), &i.to_le_bytes())
            .unwrap();
    }
    let cut = engine.log_end();
    // Writes past the cut: overwrites, deletes, new keys, across segments.
    for i in 100..400u32 {
        engine
            .put(format!("k{}", i % 13).as_bytes(), &[7; 50])
            .unwrap();
        engine.delete(b"k3").unwrap();
    }
    assert!(engine.stats().segments > 2);
    engine.truncate_log(cut).unwrap();
    assert_eq!(engine.log_end(), cut);
    for k in 0..10u32 {
        let expected = (90 + k).to_le_bytes().to_vec();
        assert_eq!(
            engine.get(format!("k{k}").as_bytes()).unwrap(),
            Some(expected),
            "k{k}"
        );
    }
    assert_eq!(engine.get(b"k11").unwrap(), None);
    // Writing goes on from the cut, and all of it survives a reopen.
    engine.put(b"after", b"cut").unwrap();
    drop(engine);
    let engine = Engine::open(dir.path(), common::small_segment_options()).unwrap();
    assert_eq!(engine.get(b"after").unwrap(), Some(b"cut".to_vec()));
    assert_eq!(
        engine.get(b"k9").unwrap(),
        Some(99u32.to_le_bytes().to_vec())
    );
    assert!(matches!(
        engine.truncate_log(u64::MAX),
        Err(Error::BeyondEnd { .. })
    ));
}

#[test]
fn offsets_below_the_merged_horizon_are_reported_as_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), common::small_segment_options()).unwrap();
    for i in 0..200u32 {
        engine
            .put(format!("k{}", i % 10).as_bytes(), &[1; 60])
            .unwrap();
    }
    let report = engine.compact().unwrap();
    assert!(report.horizon > 0);
    assert_eq!(engine.log_start(), report.horizon);
    match engine.read_log(0, 100) {
        Err(Error::Compacted { offset: 0, start }) => assert_eq!(start, report.horizon),
        other => panic!("expected Compacted, got {other:?}"),
    }
    let tail = engine.read_log(report.horizon, 100).unwrap();
    assert!(tail.bytes.is_empty(), "nothing written after the seal yet");
    assert!(matches!(
        engine.read_log(u64::MAX, 1),
        Err(Error::BeyondEnd { .. })
    ));
}

#[test]
fn chunks_appended_while_an_fsync_runs_share_the_next_one() {
    let (mdir, rdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let big = Options {
        segment_max_bytes: 1 << 20,
        ..common::small_segment_options()
    };
    let master = Engine::open(mdir.path(), big.clone()).unwrap();
    for i in 0..200u32 {
        master.put(format!("k{i}").as_bytes(), &[3; 100]).unwrap();
    }
    let log = master.read_log(0, 1 << 20).unwrap();
    assert_eq!(log.offset + log.bytes.len() as u64, master.log_end());
    let (replica, faults) = open_faulty_replica(rdir.path(), big);
    let fsyncs_before = replica.stats().fsyncs;
    // 40 chunks that split records anywhere. The first starts an fsync,
    // held at the gate; the other 39 are appended while it is held and
    // must all share the next one.
    let pieces: Vec<&[u8]> = log.bytes.chunks(log.bytes.len().div_ceil(40)).collect();
    assert_eq!(pieces.len(), 40);
    faults.hold_syncs(true);
    let mut carry = Vec::new();
    let mut end = 0;
    for (i, piece) in pieces.iter().enumerate() {
        carry.extend_from_slice(piece);
        let appended = replica.append_log_deferred(0, &carry).unwrap();
        carry.drain(..appended.taken);
        end = appended.end;
        if i == 0 {
            assert!(
                faults.wait_until(Duration::from_secs(10), |f| f.syncs_held() == 1),
                "the first chunk's fsync never started"
            );
        }
    }
    assert!(carry.is_empty());
    assert_eq!(end, master.log_end());
    faults.hold_syncs(false);
    let mut progress = replica.subscribe();
    let deadline = Instant::now() + Duration::from_secs(30);
    while progress.borrow_and_update().durable < end {
        assert!(
            Instant::now() < deadline,
            "the appended chunks never became durable"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let fsyncs = replica.stats().fsyncs - fsyncs_before;
    // One fsync per append (the old behaviour) would be 40.
    assert_eq!(fsyncs, 2, "{fsyncs} fsyncs for 40 chunks");
    assert_eq!(replica.get(b"k199").unwrap(), Some(vec![3; 100]));
    assert_eq!(replica.stats().keys, 200);
}

/// A replica receiving log bytes faster than its disk takes them waits
/// once a round is under way and the next already holds
/// [`RAW_BUFFER_MAX`] bytes, instead of buffering without bound: the
/// round after a held fsync holds at most that much and one more chunk.
#[test]
fn shipped_bytes_wait_for_the_disk_once_the_buffer_is_full() {
    let (mdir, rdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let big = Options {
        segment_max_bytes: 64 << 20,
        ..common::small_segment_options()
    };
    let master = Engine::open(mdir.path(), big.clone()).unwrap();
    // 12.8 MiB of log: more than one buffer's worth behind the first round.
    for i in 0..200u32 {
        master
            .put(format!("k{i}").as_bytes(), &[7; 64 << 10])
            .unwrap();
    }
    let log = all_log_bytes(&master);
    let (replica, faults) = open_faulty_replica(rdir.path(), big);
    let replica = Arc::new(replica);
    const CHUNK: usize = 1 << 20;
    faults.hold_syncs(true);
    // Released before the engines close, also when an assertion fails
    // (a close waits for the held fsync).
    let _release = ReleaseSyncs(faults.clone());
    // The first round holds the first chunk alone, in its fsync; then the
    // appender, with more than a buffer's worth to go, waits for it
    // instead of buffering the rest.
    let first_chunk = replica.append_log_deferred(0, &log[..CHUNK]).unwrap().taken;
    assert!(
        faults.wait_until(Duration::from_secs(10), |f| f.syncs_held() == 1),
        "the first round's fsync never started"
    );
    let appender = {
        let (replica, log) = (replica.clone(), log.clone());
        std::thread::spawn(move || {
            let mut at = first_chunk;
            while at < log.len() {
                let to = (at + CHUNK).min(log.len());
                at += replica.append_log_deferred(0, &log[at..to]).unwrap().taken;
            }
        })
    };
    assert!(
        faults.wait_until(Duration::from_secs(10), |f| f.full_buffer_waits() == 1),
        "the appender never waited for the held round"
    );
    assert!(
        !appender.is_finished(),
        "all appended while the round was held"
    );
    // Let the first round end: the next takes what was buffered meanwhile
    // and is held in turn.
    let segment = rdir.path().join("00000000000000000000.seg");
    let first = fs::metadata(&segment).unwrap().len();
    faults.let_one_sync_pass();
    let second_round_held = faults.wait_until(Duration::from_secs(10), |f| {
        f.syncs_held() == 1 && fs::metadata(&segment).map(|m| m.len()).unwrap_or(0) > first
    });
    assert!(second_round_held, "the second round's fsync never started");
    let second = fs::metadata(&segment).unwrap().len() - first;
    assert!(
        second <= (RAW_BUFFER_MAX + CHUNK) as u64,
        "the second round wrote {second} bytes: everything appended while the first \
         was held, without bound"
    );
    faults.hold_syncs(false);
    appender.join().unwrap();
    let end = master.log_end();
    let mut progress = replica.subscribe();
    let deadline = Instant::now() + Duration::from_secs(30);
    while progress.borrow_and_update().durable < end {
        assert!(Instant::now() < deadline, "the log never became durable");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        all_log_bytes(&replica) == log,
        "the replica's log differs from the master's"
    );
}

/// A replica writes shipped chunks from the buffers they arrived in
/// (`append_log_held`): the engine holds views of them, not copies, until
/// its round writes them; a record of its own encoded while they wait
/// follows them in the log; and the log it writes is the master's, byte
/// for byte.
#[test]
fn held_chunks_are_written_from_their_own_buffers_and_keep_their_order() {
    let (mdir, rdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let one_segment = Options {
        segment_max_bytes: 8 << 20,
        ..common::small_segment_options()
    };
    let master = Engine::open(mdir.path(), one_segment.clone()).unwrap();
    for i in 0..3000u32 {
        let value = i.to_le_bytes().repeat(1 + i as usize % 397);
        master
            .put(format!("k{}", i % 120).as_bytes(), &value)
            .unwrap();
    }
    let log = bytes::Bytes::from(all_log_bytes(&master));
    assert!(log.len() > 1 << 20 && (log.len() as u64) < one_segment.segment_max_bytes);
    let (replica, faults) = open_faulty_replica(rdir.path(), one_segment);
    let replica = Arc::new(replica);
    // The first chunk's round is held in its fsync; the others wait in the
    // writer's buffer meanwhile, as views of `log`.
    faults.hold_syncs(true);
    let _release = ReleaseSyncs(faults.clone());
    let mut at = 0;
    let mut carry = Vec::new();
    let mut chunks = Vec::new();
    // Chunks of about 100 KB, past the size below which they are copied,
    // and a short last one, which is.
    let short_last = log.len() - 3000;
    let cuts = (0..short_last)
        .step_by(100_003)
        .skip(1)
        .chain([short_last, log.len()]);
    for (i, cut) in cuts.enumerate() {
        // As the replica's stream does: the record a chunk boundary cut
        // is made whole in a copy, the rest is appended as it arrived.
        // Each in an allocation of its own, as frames arrive in theirs.
        let chunk = bytes::Bytes::copy_from_slice(&log[at..cut]);
        at = cut;
        let mut chunk_at = 0;
        if !carry.is_empty() {
            let missing = record_len(&carry, &chunk) - carry.len();
            let missing = missing.min(chunk.len());
            carry.extend_from_slice(&chunk[..missing]);
            chunk_at = missing;
            let taken = replica.append_log_deferred(0, &carry).unwrap().taken;
            carry.drain(..taken);
            if !carry.is_empty() {
                carry.extend_from_slice(&chunk[chunk_at..]);
                continue;
            }
        }
        let rest = chunk.slice(chunk_at..);
        let taken = replica.append_log_held(0, &rest).unwrap().taken;
        carry.extend_from_slice(&rest[taken..]);
        chunks.push(rest);
        if i == 0 {
            assert!(
                faults.wait_until(Duration::from_secs(10), |f| f.syncs_held() == 1),
                "the first chunk's fsync never started"
            );
        }
    }
    assert!(carry.is_empty());
    // Held, not copied: every large chunk still shares its allocation with
    // the engine's buffer (the first with the round in its fsync); the
    // short last one was copied.
    let (last, large) = chunks.split_last().unwrap();
    assert!(last.len() < 64 << 10, "{}", last.len());
    assert!(large.len() > 5);
    for (i, chunk) in large.iter().enumerate() {
        assert!(chunk.len() >= 64 << 10, "chunk {i}: {}", chunk.len());
        assert!(!chunk.is_unique(), "chunk {i} was copied or let go");
    }
    assert!(last.is_unique(), "the short chunk is held");
    // A write of the replica's own while the chunks wait: after them.
    let own = {
        let replica = replica.clone();
        std::thread::spawn(move || replica.put(b"own", b"after the shipped log").unwrap())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while replica.stats().log_end == log.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "the replica's own write was never appended"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    faults.hold_syncs(false);
    own.join().unwrap();
    for (i, chunk) in chunks.iter().enumerate() {
        assert!(chunk.is_unique(), "chunk {i} is still held once written");
    }
    let written = all_log_bytes(&replica);
    assert_eq!(&written[..log.len()], &log[..], "the shipped log differs");
    assert!(written.len() > log.len());
    drop(replica);
    let replica = open_replica(rdir.path());
    for k in (0..120).map(|i| format!("k{i}")) {
        assert_eq!(
            replica.get(k.as_bytes()).unwrap(),
            master.get(k.as_bytes()).unwrap(),
            "{k}"
        );
    }
    assert_eq!(
        replica.get(b"own").unwrap().as_deref(),
        Some(&b"after the shipped log"[..])
    );
}

/// The length of the record `head` starts (its header complete in
/// `head` followed by `next`).
fn record_len(head: &[u8], next: &[u8]) -> usize {
    let mut joined = head.to_vec();
    joined.extend_from_slice(&next[..next.len().min(64)]);
    kvstore::engine::record::decode_header(&joined)
        .unwrap()
        .expect("a whole header")
        .record_len()
}

/// Every byte of `engine`'s log, read by offset.
fn all_log_bytes(engine: &Engine) -> Vec<u8> {
    let mut log = Vec::new();
    while (log.len() as u64) < engine.log_end() {
        log.extend_from_slice(&engine.read_log(log.len() as u64, 1 << 20).unwrap().bytes);
    }
    log
}

/// Lets held fsyncs through when dropped.
struct ReleaseSyncs(Arc<Faults>);

impl Drop for ReleaseSyncs {
    fn drop(&mut self) {
        self.0.hold_syncs(false);
    }
}
