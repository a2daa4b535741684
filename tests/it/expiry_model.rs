//! Model test of key expiry: random puts (with and without expiry),
//! conditional sets, EXPIRE (every NX/XX/GT/LT combination), PERSIST,
//! deletes, batches, clock advances, sweeps, compactions, reopens and
//! crashes, on an engine whose clock is a [`ManualClock`], checked against
//! a `BTreeMap` of (value, expiry) after every step: every key's value and
//! every key's TTL answer, and after a sweep the key count and the expiry
//! index too.
//!
//! A crash is a copy of the data directory taken while the engine is open
//! (under `Durability::Always` every acknowledged write is on disk, and no
//! background work runs: compaction and the sweep are driven by the test),
//! opened in place of the original, which is then closed and dropped.

use std::collections::BTreeMap;
use std::time::Duration;

use kvstore::engine::{
    Conditional, Durability, Engine, ExpireIf, ExpiryPolicy, KeyExpiry, ManualClock, Options,
    SetExpiry, SetWhen, WriteOp,
};
use proptest::prelude::*;

use crate::common::{copy_data_dir, small_segment_options};

const KEYS: u8 = 16;
/// Where the clock starts: late 2023, ms since the Unix epoch.
const START_MS: u64 = 1_700_000_000_000;
/// Expiries are drawn up to this far ahead, so keys expire within a run.
const MAX_TTL_MS: u64 = 3_000;

/// A batch's put: the value, and its expiry in ms from now, if any.
type BatchPut = (Vec<u8>, Option<u64>);

#[derive(Debug, Clone)]
enum Op {
    Put(u8, Vec<u8>),
    /// Expires this many ms from now; 0 expires it at once (a delete).
    PutExpiring(u8, Vec<u8>, u64),
    /// `SET` with its options: when (always, NX, XX), the expiry
    /// (none, keep, in ms), and whether to answer the previous value.
    Set {
        key: u8,
        value: Vec<u8>,
        when: SetWhen,
        expiry: Option<Option<u64>>,
        get: bool,
    },
    /// EXPIRE at now + this many ms (negative: in the past), with
    /// conditions as NX/XX/GT/LT bits.
    Expire(u8, i64, u8),
    Persist(u8),
    Delete(u8),
    Get(u8),
    /// Puts (with an optional expiry in ms) and deletes, atomically.
    Batch(Vec<(u8, Option<BatchPut>)>),
    Advance(u64),
    /// Moves the clock to the last millisecond of its second, so every key
    /// whose expiry passed is due for the sweep, and runs one.
    Sweep,
    Compact,
    Reopen,
    Crash,
}

fn key(k: u8) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

fn op() -> impl Strategy<Value = Op> {
    let k = || 0..KEYS;
    let value = || prop::collection::vec(any::<u8>(), 0..200);
    let ttl = || prop_oneof![1 => Just(0u64), 8 => 1..MAX_TTL_MS];
    let when = prop_oneof![
        Just(SetWhen::Always),
        Just(SetWhen::Absent),
        Just(SetWhen::Present)
    ];
    let set_expiry = prop_oneof![
        Just(None),
        Just(Some(None)),
        (1..MAX_TTL_MS).prop_map(|ms| Some(Some(ms)))
    ];
    let batch_item = (k(), prop::option::of((value(), prop::option::of(ttl()))));
    prop_oneof![
        4 => (k(), value()).prop_map(|(k, v)| Op::Put(k, v)),
        5 => (k(), value(), ttl()).prop_map(|(k, v, t)| Op::PutExpiring(k, v, t)),
        3 => (k(), value(), when, set_expiry, any::<bool>()).prop_map(
            |(key, value, when, expiry, get)| Op::Set { key, value, when, expiry, get }
        ),
        4 => (k(), -1_000i64..MAX_TTL_MS as i64, 0u8..16).prop_map(|(k, at, c)| Op::Expire(k, at, c)),
        2 => k().prop_map(Op::Persist),
        2 => k().prop_map(Op::Delete),
        3 => k().prop_map(Op::Get),
        1 => prop::collection::vec(batch_item, 1..5).prop_map(Op::Batch),
        4 => (0..2_500u64).prop_map(Op::Advance),
        1 => Just(Op::Sweep),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

fn options(clock: &ManualClock) -> Options {
    Options {
        durability: Durability::Always,
        // A master's engine, whose sweep the test runs by hand.
        expiry: ExpiryPolicy {
            active: true,
            sweep_every: None,
            ..ExpiryPolicy::default()
        },
        clock: clock.clock(),
        ..small_segment_options()
    }
}

/// A key's value and expiry (ms since the Unix epoch).
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    value: Vec<u8>,
    expires_at: Option<u64>,
}

/// What the engine must show: the newest write of every key, expired or
/// not (an expired key reads as absent but holds its place until the
/// sweep deletes it).
#[derive(Default)]
struct Model {
    keys: BTreeMap<Vec<u8>, Entry>,
}

impl Model {
    fn live(&self, key: &[u8], now: u64) -> Option<&Entry> {
        self.keys
            .get(key)
            .filter(|e| e.expires_at.is_none_or(|at| at > now))
    }

    /// A write of `value` expiring at `at`: an expiry already past is a
    /// delete, as the engine logs it.
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>, at: Option<u64>, now: u64) {
        match at {
            Some(at) if at <= now => self.keys.remove(&key),
            expires_at => self.keys.insert(key, Entry { value, expires_at }),
        };
    }

    fn expiry(&self, key: &[u8], now: u64) -> KeyExpiry {
        match self.live(key, now) {
            None => KeyExpiry::Absent,
            Some(Entry {
                expires_at: None, ..
            }) => KeyExpiry::Never,
            Some(Entry {
                expires_at: Some(at),
                ..
            }) => KeyExpiry::At(*at),
        }
    }

    fn live_count(&self, now: u64) -> (u64, u64) {
        let live: Vec<&Entry> = self
            .keys
            .values()
            .filter(|e| e.expires_at.is_none_or(|at| at > now))
            .collect();
        let with_expiry = live.iter().filter(|e| e.expires_at.is_some()).count();
        (live.len() as u64, with_expiry as u64)
    }

    /// Redis's EXPIRE conditions, written out independently of the engine.
    fn expire_holds(current: Option<u64>, new: u64, bits: u8) -> bool {
        let nx = bits & 1 != 0;
        let xx = bits & 2 != 0;
        let gt = bits & 4 != 0;
        let lt = bits & 8 != 0;
        let never = u64::MAX; // no expiry counts as expiring never
        let cur = current.unwrap_or(never);
        (!nx || current.is_none())
            && (!xx || current.is_some())
            && (!gt || (current.is_some() && new > cur))
            && (!lt || new < cur)
    }
}

fn condition(bits: u8) -> ExpireIf {
    ExpireIf {
        no_expiry: bits & 1 != 0,
        has_expiry: bits & 2 != 0,
        later: bits & 4 != 0,
        sooner: bits & 8 != 0,
    }
}

fn check_all(engine: &Engine, model: &Model, now: u64, after: &Op) {
    for k in 0..KEYS {
        let key = key(k);
        assert_eq!(
            engine.get(&key).unwrap(),
            model.live(&key, now).map(|e| e.value.clone()),
            "value of key {k} after {after:?}"
        );
        assert_eq!(
            engine.expiry(&key).unwrap(),
            model.expiry(&key, now),
            "expiry of key {k} after {after:?}"
        );
    }
}

/// After a sweep with every expired key due: the index holds exactly the
/// live keys, and the expiry index exactly those with an expiry.
fn check_swept(engine: &Engine, model: &Model, now: u64) {
    let stats = engine.stats();
    let (live, with_expiry) = model.live_count(now);
    assert_eq!(stats.keys, live, "keys after a sweep");
    assert_eq!(stats.expiry_due, 0, "keys still due after a sweep");
    assert_eq!(
        stats.keys_with_expiry, with_expiry,
        "expiry index after a sweep"
    );
}

fn run(ops: Vec<Op>) {
    let clock = ManualClock::new(START_MS);
    let mut dir = tempfile::tempdir().unwrap();
    let mut engine = Engine::open(dir.path(), options(&clock)).unwrap();
    let mut model = Model::default();
    for op in &ops {
        let now = clock.now_ms();
        match op {
            Op::Put(k, v) => {
                engine.put(&key(*k), v).unwrap();
                model.put(key(*k), v.clone(), None, now);
            }
            Op::PutExpiring(k, v, ttl) => {
                engine.put_expiring(&key(*k), v, now + ttl).unwrap();
                model.put(key(*k), v.clone(), Some(now + ttl), now);
            }
            Op::Set {
                key: k,
                value,
                when,
                expiry,
                get,
            } => {
                let set_expiry = match expiry {
                    None => SetExpiry::Clear,
                    Some(None) => SetExpiry::Keep,
                    Some(Some(ms)) => SetExpiry::At(now + ms),
                };
                let decided = engine
                    .decide(&Conditional::Set {
                        key: &key(*k),
                        value,
                        expiry: set_expiry,
                        when: *when,
                        get: *get,
                    })
                    .unwrap();
                let current = model.live(&key(*k), now).cloned();
                let applies = match when {
                    SetWhen::Always => true,
                    SetWhen::Absent => current.is_none(),
                    SetWhen::Present => current.is_some(),
                };
                assert_eq!(decided.applied, applies, "{op:?}");
                let previous = current.as_ref().map(|c| c.value.clone());
                assert_eq!(decided.previous, previous.filter(|_| *get), "{op:?}");
                if applies {
                    let at = match set_expiry {
                        SetExpiry::Clear => None,
                        SetExpiry::At(at) => Some(at),
                        SetExpiry::Keep => current.and_then(|c| c.expires_at),
                    };
                    model.put(key(*k), value.clone(), at, now);
                }
            }
            Op::Expire(k, offset, bits) => {
                let at = now.saturating_add_signed(*offset);
                let decided = engine
                    .decide(&Conditional::Expire {
                        key: &key(*k),
                        at,
                        only_if: condition(*bits),
                    })
                    .unwrap();
                let current = model.live(&key(*k), now).cloned();
                let applies = current
                    .as_ref()
                    .is_some_and(|c| Model::expire_holds(c.expires_at, at, *bits));
                assert_eq!(decided.applied, applies, "{op:?} on {current:?}");
                if let Some(c) = current.filter(|_| applies) {
                    model.put(key(*k), c.value, Some(at), now);
                }
            }
            Op::Persist(k) => {
                let decided = engine
                    .decide(&Conditional::Persist { key: &key(*k) })
                    .unwrap();
                let current = model.live(&key(*k), now).cloned();
                let applies = current.as_ref().is_some_and(|c| c.expires_at.is_some());
                assert_eq!(decided.applied, applies, "{op:?} on {current:?}");
                if let Some(c) = current.filter(|_| applies) {
                    model.put(key(*k), c.value, None, now);
                }
            }
            Op::Delete(k) => {
                engine.delete(&key(*k)).unwrap();
                model.keys.remove(&key(*k));
            }
            Op::Get(k) => assert_eq!(
                engine.get(&key(*k)).unwrap(),
                model.live(&key(*k), now).map(|e| e.value.clone())
            ),
            Op::Batch(items) => {
                let keys: Vec<Vec<u8>> = items.iter().map(|(k, _)| key(*k)).collect();
                let ops: Vec<WriteOp> = keys
                    .iter()
                    .zip(items)
                    .map(|(k, (_, item))| match item {
                        None => WriteOp::Delete(k),
                        Some((v, None)) => WriteOp::Put(k, v),
                        Some((v, Some(ttl))) => WriteOp::PutExpiring(k, v, now + ttl),
                    })
                    .collect();
                engine.write_batch(&ops).unwrap();
                for (k, item) in items {
                    match item {
                        None => {
                            model.keys.remove(&key(*k));
                        }
                        Some((v, ttl)) => model.put(key(*k), v.clone(), ttl.map(|t| now + t), now),
                    }
                }
            }
            Op::Advance(ms) => clock.advance(Duration::from_millis(*ms)),
            Op::Sweep => {
                clock.set((now / 1_000 + 1) * 1_000 - 1);
                engine.expire_due().unwrap();
                let now = clock.now_ms();
                model
                    .keys
                    .retain(|_, e| e.expires_at.is_none_or(|at| at > now));
                check_swept(&engine, &model, now);
            }
            Op::Compact => {
                engine.compact().unwrap();
            }
            Op::Reopen => {
                engine.close().unwrap();
                engine = Engine::open(dir.path(), options(&clock)).unwrap();
            }
            Op::Crash => {
                let image = copy_data_dir(dir.path());
                engine.close().unwrap();
                dir = image;
                engine = Engine::open(dir.path(), options(&clock)).unwrap();
            }
        }
        check_all(&engine, &model, clock.now_ms(), op);
    }
    engine.close().unwrap();
    let report = kvstore::engine::verify::verify_dir(dir.path()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let engine = Engine::open(dir.path(), options(&clock)).unwrap();
    check_all(&engine, &model, clock.now_ms(), &Op::Reopen);
    // Everything expires in the end, and the sweep deletes exactly that.
    clock.advance(Duration::from_millis(MAX_TTL_MS + 1_000));
    engine.expire_due().unwrap();
    let now = clock.now_ms();
    model
        .keys
        .retain(|_, e| e.expires_at.is_none_or(|at| at > now));
    check_all(&engine, &model, now, &Op::Sweep);
    check_swept(&engine, &model, now);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn expiry_matches_a_model_map_on_a_manual_clock(ops in prop::collection::vec(op(), 1..150)) {
        run(ops);
    }
}

/// The background sweep deleting keys while writers keep adding keys that
/// expire (the system clock, real threads): once every expiry has passed
/// and been swept, the index holds exactly the keys without expiry.
#[test]
fn the_sweep_under_concurrent_writes_leaves_exactly_the_keys_without_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        segment_max_bytes: 64 * 1024,
        expiry: ExpiryPolicy {
            active: true,
            ..ExpiryPolicy::default()
        },
        ..Options::default()
    };
    let engine = Engine::open(dir.path(), options).unwrap();
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 1_500;
    let last_expiry = std::sync::atomic::AtomicU64::new(0);
    // Puts whose expiry may have passed before they were appended (a
    // writer descheduled that long, on a loaded machine): those are
    // logged as deletes, not swept.
    let late = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let engine = &engine;
            let last_expiry = &last_expiry;
            let late = &late;
            s.spawn(move || {
                for i in 0..PER_WRITER {
                    let key = format!("w{w}-{i}").into_bytes();
                    if i % 4 == 3 {
                        engine.put(&key, b"keep").unwrap();
                    } else {
                        let at = engine.now_ms() + 50 + (i as u64 * 37) % 400;
                        engine.put_expiring(&key, b"ttl", at).unwrap();
                        if engine.now_ms() >= at {
                            late.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        last_expiry.fetch_max(at, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let keep = (WRITERS * PER_WRITER / 4) as u64;
    let last = last_expiry.load(std::sync::atomic::Ordering::Relaxed);
    // The sweep's last deletes may still be on their way to the index
    // (appended, not yet durable): poll until it settles.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = engine.stats();
        let settled = engine.now_ms() > last
            && s.keys_with_expiry == 0
            && s.expiry_due == 0
            && s.durable_end == s.log_end;
        if settled && s.keys == keep {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{keep} keys without expiry expected: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each expiring key deleted once: by the sweep, unless it was late.
    let expired = engine.stats().expired_keys;
    let late = late.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (keep * 3 - late..=keep * 3).contains(&expired),
        "{expired} keys swept, {late} puts late, of {}",
        keep * 3
    );
}
