//! Snapshots (backup, full resync), installing one, and the epoch history.

use std::fs;
use std::path::Path;

use kvstore::engine::{Engine, EpochStart, Snapshot};

use crate::common;

fn write_snapshot(snap: &Snapshot, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for f in &snap.files {
        let mut bytes = Vec::new();
        let mut offset = 0;
        loop {
            let chunk = f.read(offset, 1000).unwrap();
            if chunk.is_empty() {
                break;
            }
            offset += chunk.len() as u64;
            bytes.extend_from_slice(&chunk);
        }
        assert_eq!(bytes.len() as u64, f.len, "{}", f.name);
        fs::write(to.join(&f.name), bytes).unwrap();
    }
}

#[test]
fn a_snapshot_restores_the_state_it_was_taken_at() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), common::small_segment_options()).unwrap();
    for i in 0..300u32 {
        engine
            .put(
                format!("k{}", i % 40).as_bytes(),
                &i.to_le_bytes().repeat(8),
            )
            .unwrap();
    }
    engine.compact().unwrap();
    for i in 300..400u32 {
        engine
            .put(
                format!("k{}", i % 40).as_bytes(),
                &i.to_le_bytes().repeat(8),
            )
            .unwrap();
    }
    let snap = engine.snapshot().unwrap();
    let expected: Vec<_> = (0..40)
        .map(|k| engine.get(format!("k{k}").as_bytes()).unwrap())
        .collect();
    // Writes and a compaction after the snapshot change nothing in it.
    for i in 400..600u32 {
        engine
            .put(format!("k{}", i % 40).as_bytes(), b"later")
            .unwrap();
    }
    engine.compact().unwrap();
    let restored = tempfile::tempdir().unwrap();
    write_snapshot(&snap, restored.path());
    let copy = Engine::open(restored.path(), common::small_segment_options()).unwrap();
    for (k, want) in expected.iter().enumerate() {
        assert_eq!(&copy.get(format!("k{k}").as_bytes()).unwrap(), want, "k{k}");
    }
    assert_eq!(copy.stats().log_end, snap.end);
}

#[test]
fn an_installed_snapshot_then_the_tail_rebuilds_a_replica() {
    let (mdir, rdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = Engine::open(mdir.path(), common::small_segment_options()).unwrap();
    master.begin_epoch(1).unwrap();
    for i in 0..300u32 {
        master
            .put(format!("k{}", i % 50).as_bytes(), &[i as u8; 30])
            .unwrap();
    }
    master.compact().unwrap();
    master.begin_epoch(2).unwrap();
    for i in 0..100u32 {
        master.put(format!("n{i}").as_bytes(), b"v").unwrap();
    }
    let replica = Engine::open(rdir.path(), common::small_segment_options()).unwrap();
    replica.set_auto_roll(false);
    replica
        .put(b"stale", b"local data the resync replaces")
        .unwrap();
    let snap = master.snapshot().unwrap();
    let staged = rdir.path().join("staged");
    write_snapshot(&snap, &staged);
    replica.install_snapshot(&staged).unwrap();
    assert_eq!(replica.get(b"stale").unwrap(), None);
    assert_eq!(replica.stats().log_end, snap.end);
    assert_eq!(replica.log_start(), master.log_start());
    assert_eq!(replica.epoch_history(), master.epoch_history());
    // Then the tail, by offset.
    for i in 0..100u32 {
        master.put(format!("t{i}").as_bytes(), b"tail").unwrap();
    }
    while replica.stats().log_end < master.log_end() {
        let c = master.read_log(replica.stats().log_end, 1 << 20).unwrap();
        replica.append_log(c.segment_base, &c.bytes).unwrap();
    }
    for k in (0..50)
        .map(|i| format!("k{i}"))
        .chain((0..100).map(|i| format!("t{i}")))
    {
        assert_eq!(
            replica.get(k.as_bytes()).unwrap(),
            master.get(k.as_bytes()).unwrap(),
            "{k}"
        );
    }
    drop(replica);
    let replica = Engine::open(rdir.path(), common::small_segment_options()).unwrap();
    assert_eq!(replica.stats().keys, master.stats().keys);
}

#[test]
fn the_epoch_history_follows_the_log() {
    let (mdir, rdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = Engine::open(mdir.path(), common::small_segment_options()).unwrap();
    master.begin_epoch(3).unwrap();
    master.put(b"a", b"1").unwrap();
    let e3_end = master.log_end();
    assert!(master.begin_epoch(3).is_err(), "epochs only grow");
    master.begin_epoch(5).unwrap();
    master.put(b"b", b"2").unwrap();
    assert_eq!(
        master.epoch_history(),
        vec![
            EpochStart { epoch: 3, start: 0 },
            EpochStart {
                epoch: 5,
                start: e3_end
            }
        ]
    );
    assert_eq!(master.epoch_end(4), Some((3, e3_end)));
    assert_eq!(master.epoch_end(5), Some((5, master.log_end())));
    assert_eq!(master.epoch_end(2), None);
    // A replica learns the epochs from the records it is shipped.
    let replica = Engine::open(rdir.path(), common::small_segment_options()).unwrap();
    replica.set_auto_roll(false);
    let c = master.read_log(0, 1 << 20).unwrap();
    replica.append_log(c.segment_base, &c.bytes).unwrap();
    assert_eq!(replica.epoch_history(), master.epoch_history());
    assert_eq!(replica.current_epoch(), 5);
    // Truncating below epoch 5's start forgets it, durably.
    replica.truncate_log(e3_end).unwrap();
    assert_eq!(
        replica.epoch_history(),
        vec![EpochStart { epoch: 3, start: 0 }]
    );
    drop(replica);
    let replica = Engine::open(rdir.path(), common::small_segment_options()).unwrap();
    assert_eq!(replica.current_epoch(), 3);
    assert_eq!(replica.get(b"b").unwrap(), None);
    assert_eq!(replica.get(b"a").unwrap(), Some(b"1".to_vec()));
}
