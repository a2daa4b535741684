//! Cut tails are never silent: a tail cut off the log is recorded in the
//! epoch history, counted in `stats` and `/metrics`, keeps the node from
//! campaigning until it has fetched the log past the cut from a master, and
//! a replica whose log runs past a tail its master cut is refused with an
//! alert instead of being told to truncate (docs/RELIABILITY.md, "Cut
//! tails").

use crate::common;
use crate::recovery::append;

use std::fs;
use std::path::{Path, PathBuf};

use common::replication::*;
use common::{metric, wait_for, START_DEADLINE};
use kvstore::engine::{CutCause, Engine, Options};

/// The segment files of `dir`, oldest first.
pub(crate) fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs
}

pub(crate) fn active_segment(dir: &Path) -> PathBuf {
    segments(dir).pop().expect("a segment exists")
}

/// A torn write: the first bytes of a record header, nothing after.
pub(crate) const TORN: &[u8] = &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77];

/// Ships everything `from` has past `to`'s end into `to`.
pub(crate) fn replicate(from: &Engine, to: &Engine) {
    while to.end() < from.log_end() {
        let chunk = from.read_log(to.end(), 1 << 20).unwrap();
        let taken = to.append_log(chunk.segment_base, &chunk.bytes).unwrap();
        assert!(taken > 0, "no progress replicating at {}", to.end());
    }
}

#[test]
fn a_node_that_cut_a_tail_may_campaign_only_once_it_refetched_past_it() {
    let (mdir, rdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = Engine::open(mdir.path(), Options::default()).unwrap();
    master.begin_epoch(1).unwrap();
    for i in 0..20u32 {
        master.put(&i.to_le_bytes(), b"value").unwrap();
    }
    let replica = Engine::open(rdir.path(), Options::default()).unwrap();
    replica.set_auto_roll(false);
    replicate(&master, &replica);
    assert_eq!(replica.may_campaign(), Ok(()), "no cut yet");
    let end = replica.end();
    replica.close().unwrap();

    append(&active_segment(rdir.path()), TORN);
    let replica = Engine::open(rdir.path(), Options::default()).unwrap();
    let cuts = replica.tail_cuts();
    assert_eq!(cuts.len(), 1, "{cuts:?}");
    let cut = cuts[0];
    assert_eq!(
        (cut.offset, cut.bytes, cut.records, cut.epoch, cut.cause),
        (end, TORN.len() as u64, 1, 1, CutCause::TornTail)
    );
    assert!(!cut.pending && !cut.refetched, "{cut:?}");
    assert_eq!(replica.may_campaign(), Err(cut));
    let s = replica.stats();
    assert_eq!(
        (s.tail_cuts, s.tail_cut_bytes, s.tail_cut_records),
        (1, TORN.len() as u64, 1)
    );
    assert_eq!(s.unrefetched_cut, Some(end));
    replica.close().unwrap();

    // The record survives a restart, and nothing else is cut.
    let replica = Engine::open(rdir.path(), Options::default()).unwrap();
    assert_eq!(replica.tail_cuts(), vec![cut]);
    assert!(replica.may_campaign().is_err());
    replica.set_auto_roll(false);

    // Reaching the master's end again (nothing new) fetches nothing ...
    replicate(&master, &replica);
    assert!(
        replica.may_campaign().is_err(),
        "nothing fetched past the cut"
    );
    // ... the first byte fetched past the cut lifts the rule, durably.
    master.put(b"after", b"the cut").unwrap();
    replicate(&master, &replica);
    assert_eq!(replica.may_campaign(), Ok(()));
    assert!(replica.tail_cuts()[0].refetched);
    replica.close().unwrap();
    let replica = Engine::open(rdir.path(), Options::default()).unwrap();
    assert_eq!(replica.may_campaign(), Ok(()));
    assert_eq!(replica.stats().unrefetched_cut, None);
    assert_eq!(replica.stats().tail_cuts, 1, "the cut stays in the history");
    assert_eq!(
        replica.get(b"after").unwrap().as_deref(),
        Some(&b"the cut"[..])
    );
}

#[test]
fn a_replica_past_its_masters_cut_alerts_and_keeps_its_bytes() {
    let mut m = master(&[]);
    let r = replica(m.addr, &[]);
    let mut c = m.client();
    put_range(&mut c, "k", 0..50, 30).unwrap();
    drop(c);
    wait_converged(m.addr, &[r.addr]);
    let last = key("k", 49);

    // The master's last record, acknowledged and replicated, is damaged on
    // its disk: to the master it looks like a torn write.
    assert!(m.sigterm().success());
    let seg = active_segment(&m.data_dir());
    let mut bytes = fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x01;
    fs::write(&seg, bytes).unwrap();
    m.restart_same_port();
    assert!(
        m.client().get(&last).unwrap().is_none(),
        "the master cut it"
    );
    assert_eq!(stats(m.addr)["tail_cuts"], 1);
    assert_eq!(stats(m.addr)["tail_cut_records"], 1);
    assert_eq!(metric(m.http_addr, "kvstore_engine_tail_cuts_total"), 1.0);
    assert!(m.logs().contains("cut a torn tail"), "{}", m.logs());

    // The replica is refused, alerts, and keeps what it has.
    let conflict = wait_for(START_DEADLINE, "the replica to report the cut", || {
        repl(r.addr)["cut_conflict"].as_str().map(str::to_owned)
    });
    assert!(conflict.contains("cut"), "{conflict}");
    assert_eq!(metric(r.http_addr, "kvstore_replication_cut_conflict"), 1.0);
    assert!(
        r.logs()
            .contains("ALERT: this replica holds log bytes past a tail the master cut"),
        "{}",
        r.logs()
    );
    assert!(
        r.client().get(&last).unwrap().is_some(),
        "the replica still holds the write the master lost"
    );
    assert_eq!(rstat(m.addr, "connected_replicas"), 0);
}

#[test]
fn a_replica_that_cut_a_tail_reports_it_until_it_refetched_past_it() {
    let m = master(&[]);
    let mut r = replica(m.addr, &[]);
    put_range(&mut m.client(), "k", 0..50, 30).unwrap();
    wait_converged(m.addr, &[r.addr]);
    assert_eq!(metric(r.http_addr, "kvstore_engine_campaign_blocked"), 0.0);

    assert!(r.sigterm().success());
    append(&active_segment(&r.data_dir()), TORN);
    r.restart();
    assert_eq!(metric(r.http_addr, "kvstore_engine_campaign_blocked"), 1.0);
    assert_eq!(
        metric(r.http_addr, "kvstore_engine_tail_cut_bytes_total"),
        TORN.len() as f64
    );
    assert!(stats(r.addr)["unrefetched_cut"].is_u64());
    // The master has nothing new: the replica resumes at its end, fetches
    // nothing, and stays blocked.
    wait_converged(m.addr, &[r.addr]);
    assert_eq!(metric(r.http_addr, "kvstore_engine_campaign_blocked"), 1.0);

    put_range(&mut m.client(), "more", 0..5, 30).unwrap();
    wait_for(START_DEADLINE, "the replica to fetch past its cut", || {
        (metric(r.http_addr, "kvstore_engine_campaign_blocked") == 0.0).then_some(())
    });
    assert!(stats(r.addr)["unrefetched_cut"].is_null());
    assert_eq!(stats(r.addr)["tail_cuts"], 1);
}
