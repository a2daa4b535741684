//! The hints a replica writes for the segments it receives without reading
//! them back: gathered as shipped records are verified and appended (a
//! partial catch-up), or read from a full resync's files on their way to
//! the disk. Either way they must be the very hints a scan of the same
//! bytes writes, across a reopen and after a truncation rolled back part
//! of a segment, and damaged or incomplete bytes must get none.

use std::fs;
use std::path::Path;

use kvstore::engine::recovery::ScanStream;
use kvstore::engine::{hint, Engine, WriteOp};

use crate::common;

fn open_replica(dir: &Path) -> Engine {
    let engine = Engine::open(dir, common::small_segment_options()).unwrap();
    engine.set_auto_roll(false);
    engine
}

/// Puts (some with expiry), deletes and batches, the same for the same
/// `range` on any engine.
fn write(engine: &Engine, range: std::ops::Range<u32>) {
    for i in range {
        let key = format!("k{}", i % 37);
        let value = vec![i as u8; (i as usize * 7) % 300];
        if i % 11 == 0 {
            engine
                .put_expiring(key.as_bytes(), &value, 4_000_000_000_000)
                .unwrap();
        } else {
            engine.put(key.as_bytes(), &value).unwrap();
        }
        if i % 40 == 0 {
            engine.delete(format!("k{}", i % 7).as_bytes()).unwrap();
        }
        if i % 25 == 0 {
            let keys: Vec<Vec<u8>> = (0..4).map(|j| format!("b{j}").into_bytes()).collect();
            let batch: Vec<WriteOp> = keys.iter().map(|k| WriteOp::Put(k, &value)).collect();
            engine.write_batch(&batch).unwrap();
        }
    }
}

/// Every file of `dir` whose name ends with `suffix`, sorted by name.
fn files(dir: &Path, suffix: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .map(|n| (n.clone(), fs::read(dir.join(&n)).unwrap()))
        .collect();
    out.sort();
    out
}

#[test]
fn a_replicas_gathered_hints_are_the_ones_a_scan_writes() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let opts = common::small_segment_options;
    let a = Engine::open(dirs[0].path(), opts()).unwrap();
    let b = Engine::open(dirs[1].path(), opts()).unwrap();
    // Two masters with the same log up to `common`.
    write(&a, 0..150);
    write(&b, 0..150);
    let common = a.log_end();
    assert_eq!(common, b.log_end());
    let replica = open_replica(dirs[2].path());
    common::ship(&a, &replica, 97);
    // Reopened mid-segment: the active segment's entries come from open.
    drop(replica);
    let replica = open_replica(dirs[2].path());
    // `a` goes on alone; the replica takes its tail, then finds it
    // diverged and cuts back to `common`, inside a segment it had entries
    // of, and follows `b` from there.
    write(&a, 1000..1010);
    common::ship(&a, &replica, 131);
    replica.truncate_log(common).unwrap();
    write(&b, 150..600);
    common::ship(&b, &replica, 61);
    assert!(b.stats().segments > 5, "{} segments", b.stats().segments);
    drop((a, b, replica));
    let want = files(dirs[1].path(), ".hint");
    let got = files(dirs[2].path(), ".hint");
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|h| h.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want));
    for ((name, want), (_, got)) in want.iter().zip(&got) {
        assert!(want == got, "hint {name} differs from the scanned one");
    }
}

#[test]
fn a_received_file_scanned_in_pieces_gets_the_hint_a_scan_writes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), common::small_segment_options()).unwrap();
    write(&engine, 0..400);
    drop(engine);
    let segments = files(dir.path(), ".seg");
    assert!(segments.len() > 5);
    let feed = |bytes: &[u8], pieces: &[usize]| {
        let mut scan = ScanStream::default();
        let mut at = 0;
        for &n in pieces.iter().cycle() {
            if at == bytes.len() {
                break;
            }
            let end = (at + n).min(bytes.len());
            scan.feed(&bytes[at..end]);
            at = end;
        }
        scan.finish(bytes.len() as u64)
    };
    for (name, bytes) in &segments {
        let hint_name = name.replace(".seg", ".hint");
        let hint = fs::read(dir.path().join(&hint_name)).unwrap();
        let want = hint::decode_any(&hint).unwrap().entries;
        for pieces in [&[1usize, 3, 40][..], &[7, 97], &[4096], &[1 << 20]] {
            let got = feed(bytes, pieces).unwrap();
            assert_eq!(got, want, "{name} in pieces of {pieces:?}");
        }
        if bytes.len() <= 64 {
            continue;
        }
        // A damaged byte, a missing tail: no hint.
        let mut damaged = bytes.clone();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 0x40;
        assert!(feed(&damaged, &[97]).is_err(), "{name} damaged at {mid}");
        let cut = &bytes[..bytes.len() - 1];
        assert!(feed(cut, &[97]).is_err(), "{name} cut");
    }
}
