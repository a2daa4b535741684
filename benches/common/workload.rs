//! The engine benchmark workload, one copy shared by two programs through
//! `#[path]`: `benches/engine.rs` (kvstore alone, `make bench-engine`) and
//! `benches/compare` (kvstore beside sled, redb and fjall,
//! `make bench-compare`). Keeping one copy means the figures in
//! `docs/BENCHMARKS.md` from both programs measure the same thing.
//!
//! A store takes part through the [`Db`] trait. The workload, for 16-byte
//! keys and 100-byte values:
//!
//! 1. `N` puts of distinct keys in random order, no fsync;
//! 2. `N` gets of random existing keys on 1 thread, twice (the first pass
//!    is reported apart: it pays first-touch costs), where the store can
//!    ready a run of reads (kvstore) the same lookups as pipelines of 16
//!    readied first, then the same `N` split over 2 threads;
//! 3. close (each store makes its data durable the way it does at close),
//!    then the bytes in the directory;
//! 4. reopen: open + the first get, timed, three times;
//! 5. in a fresh directory, puts that are durable when they return: one
//!    writer, and 64 writers on 64 threads, alternating in 4 rounds; where
//!    the store has puts that wait without blocking a thread (kvstore: the
//!    path the node's connections write by), in the same rounds one such
//!    writer and 64, as tasks on two threads. Each phase is bounded by an
//!    operation count and a time cap, so a store without group commit
//!    still ends in reasonable time; its rate is over the operations it
//!    did.
//!
//! Every get is checked (the value length); after the load, a sample of keys
//! is read back and compared byte for byte, untimed.
//!
//! Settings come from the environment: `BENCH_N` (default 1,000,000),
//! `BENCH_SYNC_OPS_1` (20,000), `BENCH_SYNC_OPS_64` (200,000),
//! `BENCH_SYNC_SECS` (time cap per synced phase, default 20),
//! `BENCH_DIR` (where the data goes; default `bench-data` beside the
//! executable, on the build disk, because `/tmp` may be a tmpfs whose fsync
//! costs nothing).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use super::report::*;

pub const KEY_LEN: usize = 16;
pub const VALUE_LEN: usize = 100;
/// Concurrent writers in the second synced phase.
pub const WRITERS: usize = 64;
/// Reopens after the load.
pub const REOPENS: usize = 3;
/// Rounds the two synced phases alternate in.
pub const SYNC_ROUNDS: usize = 4;
/// Threads of the second get phase.
pub const GET_THREADS: usize = 2;
/// Keys per warmed run of gets ([`Db::get_warmed`]): a pipeline of 16.
pub const GET_RUN: usize = 16;
/// Threads the task writers run on, each a current-thread runtime, as
/// the node's connection threads are.
pub const TASK_THREADS: usize = 2;

/// A put that waits without blocking a thread: durable when it ends.
pub type AsyncPut<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

pub type Key = [u8; KEY_LEN];

/// What the workload needs from a store. Each method panics on error: a
/// benchmark that hits one has nothing meaningful left to report.
pub trait Db: Send + Sync + Sized {
    /// Opens (creating if needed) a store in `dir`. With `synced`, every
    /// `put` is durable when it returns; without, no put waits for a fsync.
    fn open(dir: &Path, synced: bool) -> Self;
    fn put(&self, key: &[u8], value: &[u8]);
    /// Looks every key up and returns the total bytes of the values found.
    /// One call per thread per phase, so a store may set up what it reuses
    /// across lookups (a read transaction, say) once.
    fn get_many(&self, keys: &[Key]) -> u64;
    /// [`Db::get_many`] as a node answers pipelined GETs, where the store
    /// has a way to ready a run of reads before it runs them (kvstore:
    /// `Engine::warm_for_reads`): in runs of [`GET_RUN`] keys, each run
    /// warmed first.
    fn get_warmed(&self, _keys: &[Key]) -> Option<u64> {
        None
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    /// Makes everything durable and releases the directory.
    fn close(self);
    /// Bytes of the in-memory index per key, where the store reports it.
    fn keydir_bytes_per_key(&self) -> Option<f64> {
        None
    }
    /// fsyncs issued so far, where the store counts them.
    fn fsyncs(&self) -> Option<u64> {
        None
    }
    /// With `synced`, a put that is durable when the returned future ends
    /// and waits without blocking a thread, where the store has one. Like
    /// every future, it does nothing until polled.
    fn put_async<'a>(&'a self, _key: &'a [u8], _value: &'a [u8]) -> Option<AsyncPut<'a>> {
        None
    }
    /// Removes from a closed store in `dir` what only a clean close leaves
    /// for the next open (kvstore: the active segment's hint), so that the
    /// next open works as after a crash. Returns whether there was any.
    fn forget_clean_close(_dir: &Path) -> bool {
        false
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub n: usize,
    pub sync_ops_1: u64,
    pub sync_ops_64: u64,
    pub sync_cap: Duration,
    pub dir: PathBuf,
}

impl Config {
    pub fn from_env() -> Config {
        fn num(name: &str, default: u64) -> u64 {
            match std::env::var(name) {
                Ok(s) => s
                    .replace('_', "")
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={s:?} is not a whole number")),
                Err(_) => default,
            }
        }
        let dir = match std::env::var_os("BENCH_DIR") {
            Some(d) => PathBuf::from(d),
            None => std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|p| p.join("bench-data")))
                .unwrap_or_else(|| PathBuf::from("bench-data")),
        };
        Config {
            n: usize::try_from(num("BENCH_N", 1_000_000)).expect("BENCH_N fits usize"),
            sync_ops_1: num("BENCH_SYNC_OPS_1", 20_000),
            sync_ops_64: num("BENCH_SYNC_OPS_64", 200_000),
            sync_cap: Duration::from_secs(num("BENCH_SYNC_SECS", 20)),
            dir,
        }
    }
}

/// splitmix64: a fast, well-mixed, seedable generator, so every store sees
/// the same keys in the same order without a `rand` dependency.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Key `i` of the stream `seed`: 128 random bits, so distinct in practice and
/// in random order when written for i = 0, 1, 2, ...
pub fn key(seed: u64, i: u64) -> Key {
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&mix(seed ^ mix(i)).to_le_bytes());
    k[8..].copy_from_slice(&mix(!seed ^ mix(i.wrapping_add(1))).to_le_bytes());
    k
}

/// Values are windows into a pool of random bytes: incompressible (so a
/// store that compresses gains nothing it would not gain on real data) and
/// nearly free to produce inside the timed loop. The pool is small enough
/// to stay in a core's L2 cache, so copying a value costs what copying a
/// freshly received request would, not a trip to memory.
pub struct Values {
    pool: Vec<u8>,
}

const POOL_LEN: usize = 256 << 10;

impl Values {
    pub fn new() -> Values {
        let mut pool = Vec::with_capacity(POOL_LEN + 8);
        let mut i = 0u64;
        while pool.len() < POOL_LEN {
            pool.extend_from_slice(&mix(0xdead_beef ^ i).to_le_bytes());
            i += 1;
        }
        Values { pool }
    }

    pub fn get(&self, i: u64) -> &[u8] {
        // The pool is far smaller than 2^32, so the offset fits any usize.
        let off = (mix(i ^ 0x5eed) % (POOL_LEN - VALUE_LEN) as u64) as usize;
        &self.pool[off..off + VALUE_LEN]
    }
}

const LOAD_SEED: u64 = 1;
const SYNC_SEED: u64 = 2;
const LOOKUP_SEED: u64 = 3;

/// Runs the whole workload against `D` and returns its figures. Progress
/// goes to stderr.
pub fn run<D: Db>(name: &str, cfg: &Config) -> Results {
    let mut out = Results::new();
    progress(name, &format!("start; {}", load_average()));
    let root = cfg.dir.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let load_dir = root.join("load");
    let sync_dir = root.join("synced");
    std::fs::create_dir_all(&load_dir).expect("create the bench directory");
    std::fs::create_dir_all(&sync_dir).expect("create the bench directory");
    let values = Values::new();
    let n = cfg.n as u64;
    let keys: Vec<Key> = (0..n).map(|i| key(LOAD_SEED, i)).collect();
    let lookups: Vec<Key> = (0..n)
        .map(|i| keys[(mix(LOOKUP_SEED ^ mix(i)) % n) as usize])
        .collect();

    // 1. Load.
    let db = D::open(&load_dir, false);
    let ((), secs, sched) = timed(|| {
        for (i, k) in keys.iter().enumerate() {
            db.put(k, values.get(i as u64));
        }
    });
    progress(
        name,
        &format!("{n} puts, no fsync: {}", describe(secs, sched)),
    );
    out.push((PUTS_NEVER.id, n as f64 / secs));
    if let Some((cpu, _)) = sched {
        out.push((PUTS_NEVER_CPU.id, n as f64 / cpu));
    }
    verify_sample(&db, &keys, &values);

    // 2. Gets: a first pass, which also pays whatever a store does on first
    // touch (page faults on a memory map, filling a cache), then the pass
    // that counts, then the same lookups split over threads.
    let t = Instant::now();
    let got = db.get_many(&lookups);
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(got, n * VALUE_LEN as u64, "{name}: a get missed a key");
    progress(
        name,
        &format!("{n} gets, 1 thread, first pass: {secs:.2} s"),
    );
    out.push((GETS_1T_FIRST.id, n as f64 / secs));

    let (got, secs, sched) = timed(|| db.get_many(&lookups));
    assert_eq!(got, n * VALUE_LEN as u64, "{name}: a get missed a key");
    progress(
        name,
        &format!("{n} gets, 1 thread: {}", describe(secs, sched)),
    );
    if let Some((cpu, _)) = sched {
        out.push((GETS_1T_CPU.id, n as f64 / cpu));
    }
    out.push((GETS_1T.id, n as f64 / secs));

    if let (Some(got), secs, _) = timed(|| db.get_warmed(&lookups)) {
        assert_eq!(got, n * VALUE_LEN as u64, "{name}: a get missed a key");
        progress(
            name,
            &format!("{n} gets, 1 thread, warmed runs of {GET_RUN}: {secs:.2} s"),
        );
        out.push((GETS_1T_WARMED.id, n as f64 / secs));
    }

    let chunk = lookups.len().div_ceil(GET_THREADS).max(1);
    let t = Instant::now();
    let got: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = lookups
            .chunks(chunk)
            .map(|part| s.spawn(|| db.get_many(part)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("get thread"))
            .sum()
    });
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(got, n * VALUE_LEN as u64, "{name}: a get missed a key");
    progress(
        name,
        &format!("{n} gets, {GET_THREADS} threads: {secs:.2} s"),
    );
    out.push((GETS_2T.id, n as f64 / secs));

    // 3. At rest.
    if let Some(b) = db.keydir_bytes_per_key() {
        out.push((KEYDIR_PER_KEY.id, b));
    }
    db.close();
    let (bytes, allocated) = dir_bytes(&load_dir);
    out.push((DISK_BYTES.id, bytes as f64));
    out.push((DISK_ALLOC.id, allocated as f64));
    out.push((DISK_PER_KEY.id, bytes as f64 / n.max(1) as f64));

    // 4. Reopen, three times: the first shows what a restart after the load
    // costs (a store may do one-off work there), the best of the three is
    // the figure least skewed by other work on the machine.
    let probe = keys[(n / 2) as usize];
    let (mut times, mut cpus) = (Vec::new(), Vec::new());
    for round in 0..REOPENS {
        let ((db, first), secs, sched) = timed(|| {
            let db = D::open(&load_dir, false);
            let first = db.get(&probe);
            (db, first)
        });
        times.push(secs);
        if let Some((cpu, _)) = sched {
            cpus.push(cpu);
        }
        assert_eq!(
            first.as_deref(),
            Some(values.get(n / 2)),
            "{name}: wrong value after reopen"
        );
        if round == 0 {
            verify_sample(&db, &keys, &values);
        }
        db.close();
    }
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    progress(
        name,
        &format!("reopen + first get: {times:.3?} s (CPU {cpus:.3?} s)"),
    );
    // 4b. Once more as after a crash, where a store keeps something only a
    // clean close writes.
    if D::forget_clean_close(&load_dir) {
        let ((db, first), secs, _) = timed(|| {
            let db = D::open(&load_dir, false);
            let first = db.get(&probe);
            (db, first)
        });
        assert_eq!(
            first.as_deref(),
            Some(values.get(n / 2)),
            "{name}: wrong value"
        );
        db.close();
        progress(
            name,
            &format!("reopen + first get, as after a crash: {secs:.3} s"),
        );
        out.push((REOPEN_UNCLEAN.id, secs));
    }
    out.push((REOPEN.id, times[0]));
    out.push((REOPEN_BEST.id, best));
    if let Some(cpu) = cpus.iter().copied().reduce(f64::min) {
        out.push((REOPEN_CPU.id, cpu));
    }
    let _ = std::fs::remove_dir_all(&load_dir);

    // 5. Synced puts. A shared disk's fsync rate drifts by several times
    // within minutes, so the two phases alternate in short rounds and each
    // adds up its rounds: drift then weighs on both alike, and the ratio of
    // the two rates means something.
    let db = D::open(&sync_dir, true);
    let next = AtomicU64::new(0);
    let round_cap = cfg.sync_cap / SYNC_ROUNDS as u32;
    let (mut one, mut many) = (Tally::default(), Tally::default());
    // The disk's own limit for one writer, in the same rounds: a bare
    // append of 128 bytes (about one record) and fdatasync, in a file
    // beside the store's directory on the same file system; and the same
    // writes over blocks written and fsynced beforehand, whose fdatasync
    // need not write the file's size or block map.
    let bare_path = root.join("bare.log");
    let over_path = root.join("bare-over.log");
    let (mut bare, mut over) = (Tally::default(), Tally::default());
    let (mut one_task, mut many_tasks) = (Tally::default(), Tally::default());
    let tasks = db.put_async(&[], &[]).is_some();
    // A round's share of `ops` key numbers, from the next one unused.
    let share = |ops: u64| {
        let start = next.load(Ordering::Relaxed);
        Quota::new(&next, start + ops / SYNC_ROUNDS as u64, round_cap)
    };
    for _ in 0..SYNC_ROUNDS {
        one.add(synced(&db, &values, share(cfg.sync_ops_1), 1));
        let quota = cfg.sync_ops_1 / SYNC_ROUNDS as u64;
        bare.add(bare_appends(&bare_path, quota, round_cap));
        over.add(bare_overwrites(&over_path, quota, round_cap));
        many.add_counting_fsyncs(&db, || {
            synced(&db, &values, share(cfg.sync_ops_64), WRITERS)
        });
        if tasks {
            one_task.add(synced_tasks(&db, &values, share(cfg.sync_ops_1), 1));
            many_tasks.add_counting_fsyncs(&db, || {
                synced_tasks(&db, &values, share(cfg.sync_ops_64), WRITERS)
            });
        }
    }
    progress(
        name,
        &format!("{} synced puts, 1 writer: {:.2} s", one.ops, one.secs),
    );
    progress(
        name,
        &format!(
            "{} synced puts, {WRITERS} writers: {:.2} s",
            many.ops, many.secs
        ),
    );
    progress(
        name,
        &format!(
            "{} bare 128 B appends + fdatasync: {:.2} s",
            bare.ops, bare.secs
        ),
    );
    progress(
        name,
        &format!(
            "{} bare 128 B overwrites + fdatasync: {:.2} s",
            over.ops, over.secs
        ),
    );
    let _ = std::fs::remove_file(&bare_path);
    let _ = std::fs::remove_file(&over_path);
    out.push((SYNCED_1W.id, one.rate()));
    out.push((BARE_SYNC_1W.id, bare.rate()));
    out.push((SYNCED_VS_BARE.id, one.rate() / bare.rate()));
    out.push((BARE_OVERWRITE_1W.id, over.rate()));
    out.push((SYNCED_VS_OVERWRITE.id, one.rate() / over.rate()));
    out.push((SYNCED_1W_OPS.id, one.ops as f64));
    out.push((SYNCED_64W.id, many.rate()));
    out.push((SYNCED_64W_OPS.id, many.ops as f64));
    out.push((SYNCED_SCALE.id, many.rate() / one.rate()));
    if let Some(per) = many.per_fsync() {
        out.push((PUTS_PER_FSYNC_64W.id, per));
    }
    if tasks {
        progress(
            name,
            &format!(
                "{} synced puts, 1 task: {:.2} s",
                one_task.ops, one_task.secs
            ),
        );
        progress(
            name,
            &format!(
                "{} synced puts, {WRITERS} tasks on {TASK_THREADS} threads: {:.2} s",
                many_tasks.ops, many_tasks.secs
            ),
        );
        out.push((SYNCED_1T.id, one_task.rate()));
        out.push((SYNCED_64T.id, many_tasks.rate()));
        out.push((SYNCED_SCALE_T.id, many_tasks.rate() / one_task.rate()));
        if let Some(per) = many_tasks.per_fsync() {
            out.push((PUTS_PER_FSYNC_64T.id, per));
        }
    }
    db.close();
    let _ = std::fs::remove_dir_all(&root);
    progress(name, &format!("done; {}", load_average()));
    out
}

/// Nanoseconds this process's live threads have run on a CPU and waited
/// for one (Linux schedstat). On a shared machine the wait says how much
/// other work took from a phase; the run time gives a rate per CPU-second
/// that the other work skews far less than the wall-clock rate. Threads
/// that exit during a phase drop out, so it is taken only around phases
/// whose threads outlive them.
fn sched_ns() -> Option<(u64, u64)> {
    let mut total = (0u64, 0u64);
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
        if let (Some(Some(run)), Some(Some(wait))) = (fields.next(), fields.next()) {
            total.0 += run;
            total.1 += wait;
        }
    }
    Some(total)
}

/// Runs `f`, returning its result, wall seconds, and the CPU seconds and
/// run-queue wait seconds of the whole process meanwhile.
fn timed<R>(f: impl FnOnce() -> R) -> (R, f64, Option<(f64, f64)>) {
    let before = sched_ns();
    let t = Instant::now();
    let r = f();
    let secs = t.elapsed().as_secs_f64();
    // The kernel brings a running thread's counters up to date only at
    // scheduler ticks and switches (every few milliseconds), so a phase too
    // short to measure reports nothing rather than a wild rate.
    let sched = match (before, sched_ns()) {
        (Some(b), Some(a)) => Some((
            a.0.saturating_sub(b.0) as f64 / 1e9,
            a.1.saturating_sub(b.1) as f64 / 1e9,
        )),
        _ => None,
    }
    .filter(|&(cpu, _)| cpu >= 0.05);
    (r, secs, sched)
}

fn describe(secs: f64, sched: Option<(f64, f64)>) -> String {
    match sched {
        Some((cpu, wait)) => {
            format!("{secs:.2} s (CPU {cpu:.2} s, waited for a CPU {wait:.2} s)")
        }
        None => format!("{secs:.2} s"),
    }
}

/// The machine's load average, printed beside the figures: on a shared
/// machine it says how much the other work on it may have skewed them.
fn load_average() -> String {
    match std::fs::read_to_string("/proc/loadavg") {
        Ok(s) => format!(
            "load average {}",
            s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        ),
        Err(_) => "load average unknown".to_string(),
    }
}

/// Appends 128-byte records to `path`, each followed by fdatasync, one at
/// a time, until `quota` or `cap`; returns (appends, seconds).
fn bare_appends(path: &Path, quota: u64, cap: Duration) -> (u64, f64) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the bare append file");
    let record = [0x5au8; 128];
    let started = Instant::now();
    let mut ops = 0;
    while ops < quota && started.elapsed() < cap {
        file.write_all(&record).expect("append");
        file.sync_data().expect("fdatasync");
        ops += 1;
    }
    (ops, started.elapsed().as_secs_f64())
}

/// Like [`bare_appends`], over a file of `quota` records' worth of zeros
/// written and fsynced first (not timed): what one writer gets from the
/// disk when no fdatasync has to write the file's size or block map.
fn bare_overwrites(path: &Path, quota: u64, cap: Duration) -> (u64, f64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .expect("open the bare overwrite file");
    let zeros = vec![0u8; 1 << 20];
    let len = quota * 128;
    let mut at = 0;
    while at < len {
        let n = (len - at).min(zeros.len() as u64);
        file.write_all_at(&zeros[..n as usize], at)
            .expect("pre-write");
        at += n;
    }
    file.sync_all().expect("fsync the pre-written file");
    let record = [0x5au8; 128];
    let started = Instant::now();
    let mut ops = 0;
    while ops < quota && started.elapsed() < cap {
        file.write_all_at(&record, ops * 128).expect("overwrite");
        file.sync_data().expect("fdatasync");
        ops += 1;
    }
    (ops, started.elapsed().as_secs_f64())
}

/// Key numbers for a synced phase, taken from `next` until it reaches
/// `end` or `cap` has passed since the phase began; `done` counts the puts
/// made.
struct Quota<'a> {
    next: &'a AtomicU64,
    end: u64,
    cap: Duration,
    done: AtomicU64,
}

impl Quota<'_> {
    fn new(next: &AtomicU64, end: u64, cap: Duration) -> Quota<'_> {
        Quota {
            next,
            end,
            cap,
            done: AtomicU64::new(0),
        }
    }

    fn take(&self, began: Instant) -> Option<u64> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.end && began.elapsed() <= self.cap).then_some(i)
    }

    fn count(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `body(thread, quota)` on `threads` threads started together.
    /// Returns (puts made, seconds from the start until the last thread
    /// was done).
    fn run(self, threads: usize, body: impl Fn(usize, &Self) + Sync) -> (u64, f64) {
        let barrier = Barrier::new(threads + 1);
        let t = std::thread::scope(|s| {
            for thread in 0..threads {
                let (barrier, body, quota) = (&barrier, &body, &self);
                s.spawn(move || {
                    barrier.wait();
                    body(thread, quota);
                });
            }
            barrier.wait();
            // The scope joins the threads before it returns, so this clock
            // runs from the moment they start until the last one is done.
            Instant::now()
        });
        (self.done.into_inner(), t.elapsed().as_secs_f64())
    }
}

/// Synced puts from `writers` threads that take key numbers from
/// `quota`. Returns (ops, seconds).
fn synced<D: Db>(db: &D, values: &Values, quota: Quota, writers: usize) -> (u64, f64) {
    quota.run(writers, |_, quota| {
        let began = Instant::now();
        while let Some(i) = quota.take(began) {
            db.put(&key(SYNC_SEED, i), values.get(i));
            quota.count();
        }
    })
}

/// [`synced`] with `writers` tasks instead of threads ([`Db::put_async`]),
/// dealt over [`TASK_THREADS`] threads that each run a current-thread
/// runtime.
fn synced_tasks<D: Db>(db: &D, values: &Values, quota: Quota, writers: usize) -> (u64, f64) {
    quota.run(TASK_THREADS, |thread, quota| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime for the task writers");
        let began = Instant::now();
        let mine = writers / TASK_THREADS + usize::from(thread < writers % TASK_THREADS);
        let writer = || async {
            while let Some(i) = quota.take(began) {
                let k = key(SYNC_SEED, i);
                db.put_async(&k, values.get(i))
                    .expect("the store has async puts")
                    .await;
                quota.count();
            }
        };
        runtime.block_on(futures_util::future::join_all((0..mine).map(|_| writer())));
    })
}

/// One kind of synced phase, added up over the rounds: puts made,
/// seconds, and the store's fsyncs during them (`None` once the store
/// did not count them).
struct Tally {
    ops: u64,
    secs: f64,
    fsyncs: Option<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            ops: 0,
            secs: 0.0,
            fsyncs: Some(0),
        }
    }
}

impl Tally {
    fn add(&mut self, (ops, secs): (u64, f64)) {
        self.ops += ops;
        self.secs += secs;
    }

    /// [`Tally::add`] for a phase whose fsyncs are counted too.
    fn add_counting_fsyncs<D: Db>(&mut self, db: &D, phase: impl FnOnce() -> (u64, f64)) {
        let before = db.fsyncs();
        self.add(phase());
        let during = db.fsyncs().zip(before).map(|(a, b)| a.saturating_sub(b));
        self.fsyncs = self.fsyncs.zip(during).map(|(sum, d)| sum + d);
    }

    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }

    fn per_fsync(&self) -> Option<f64> {
        Some(self.ops as f64 / self.fsyncs?.max(1) as f64)
    }
}

fn verify_sample<D: Db>(db: &D, keys: &[Key], values: &Values) {
    let n = keys.len() as u64;
    for j in 0..1000u64.min(n) {
        let i = mix(j ^ 0xc0ffee) % n;
        let got = db.get(&keys[i as usize]);
        assert_eq!(
            got.as_deref(),
            Some(values.get(i)),
            "wrong value for key #{i}"
        );
    }
}

/// Bytes of the regular files under `dir`, recursively: (their lengths,
/// the blocks allocated to them). The two differ for preallocated or sparse
/// files.
pub fn dir_bytes(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut len, mut allocated) = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            let (l, a) = dir_bytes(&entry.path());
            len += l;
            allocated += a;
        } else if meta.is_file() {
            len += meta.len();
            allocated += meta.blocks() * 512;
        }
    }
    (len, allocated)
}

fn progress(name: &str, what: &str) {
    eprintln!("[{name}] {what}");
}
