//! The threads that serve client connections: one single-threaded tokio
//! runtime per thread, each connection on one of them at a time.
//!
//! A work-stealing runtime lets any worker run any connection, and pays
//! for it on every request: a socket's readiness wakes a worker that may
//! not be the one holding the task, and a task made runnable wakes an idle
//! worker to come and steal it. With one request in flight per connection
//! most of those wake-ups find nothing to do, and each park and wake is a
//! context switch. Here a connection's bytes are read, executed and
//! answered by the thread whose `epoll` reported them; the threads share
//! nothing per request but the engine.
//!
//! **Where a connection goes.** A new connection goes to the least busy
//! thread already serving that is not saturated, else to an idle
//! thread, else to the thread with the fewest connections: one thread
//! fills before the next. The balancing ([`balance`]) moves connections
//! between threads as their load changes.
//!
//! A connection leaves its thread only between requests, with nothing
//! read or written pending ([`Seat::departure`]): the socket is taken out
//! of one thread's `epoll` and put into the other's, two system calls,
//! and the connection's state goes with it. TLS connections (the session
//! state is tied to its stream) and connections handed over to a
//! replication or backup stream stay where they are; so does a
//! connection that stalls its thread (a read that faults in a cold page
//! of a segment), delaying the others on that thread until the next
//! round moves them; the engine's long work (compaction, the fsyncs of
//! the `interval` policy and of pipelining or mixed loads) runs on threads
//! of its own. Under `always`, a thread that has served only writes since
//! its last group commit runs the next one itself when it runs out of
//! work (`engine::park`): its connections wait for that fsync, as they
//! would for the flusher's.
//!
//! The rest of the node (the replica's link to its master, the HTTP
//! server, the coordinator loop, this balancing) runs on the process's
//! multi-threaded runtime.

pub mod balance;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use parking_lot::Mutex;
use tokio::runtime::{Builder, Handle};
use tokio::sync::{oneshot, Notify};

use crate::engine::park;
use crate::metrics::IoThreads;

pub use balance::Move;
use balance::{Round, SPILL_AT};

/// Busy shares are kept in thousandths, for atomics.
const MILLE: f64 = 1000.0;

/// The connection threads of one node.
pub struct Workers {
    shared: Arc<Shared>,
    threads: Vec<Thread>,
    /// What the last round saw.
    last: Mutex<Round>,
}

struct Thread {
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<()>>,
}

/// What seats and the balancing share.
struct Shared {
    workers: Vec<Worker>,
    /// Connections opened and closed so far (not moves).
    churn: AtomicU64,
    /// Connections moved from one thread to another so far.
    moves: AtomicU64,
    /// Told of every new connection, to end an idle wait between rounds.
    arrived: Notify,
}

struct Worker {
    handle: Handle,
    /// The thread's schedstat file, once the thread has said its id.
    schedstat: Arc<OnceLock<PathBuf>>,
    /// Connections on this thread now.
    load: AtomicUsize,
    /// Its share of the last round spent running tasks, in thousandths.
    busy: AtomicU32,
    /// The standing order to move connections away: the thread to move
    /// to in the high half, how many are still to go in the low half.
    order: AtomicU64,
}

/// Where the kernel keeps a thread's time on a CPU:
/// `/proc/self/task/<tid>/schedstat`, whose first field is the
/// nanoseconds the thread has run.
fn on_cpu(schedstat: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(schedstat).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// A connection's place on a thread, counted until it is dropped.
pub struct Seat {
    shared: Arc<Shared>,
    index: usize,
    /// Given up for a seat on another thread: the connection goes on.
    moved: bool,
}

impl std::fmt::Debug for Seat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seat").field("thread", &self.index).finish()
    }
}

impl Seat {
    fn take(shared: &Arc<Shared>, index: usize) -> Seat {
        shared.workers[index].load.fetch_add(1, Ordering::Relaxed);
        Seat {
            shared: Arc::clone(shared),
            index,
            moved: false,
        }
    }

    /// The runtime of the seat's thread.
    pub fn handle(&self) -> &Handle {
        &self.shared.workers[self.index].handle
    }

    /// The seat's thread, numbered from 0.
    pub fn thread(&self) -> usize {
        self.index
    }

    /// Where this connection should go, if its thread has been asked to
    /// give connections away: takes one of those departures. Called
    /// between requests; one atomic load when there is nothing to do.
    pub fn departure(&self) -> Option<usize> {
        let order = &self.shared.workers[self.index].order;
        let mut current = order.load(Ordering::Relaxed);
        while current & u64::from(u32::MAX) != 0 {
            match order.compare_exchange_weak(
                current,
                current - 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some((current >> 32) as usize),
                Err(now) => current = now,
            }
        }
        None
    }

    /// A seat on thread `to` in place of this one.
    pub fn move_to(mut self, to: usize) -> Seat {
        self.moved = true;
        self.shared.moves.fetch_add(1, Ordering::Relaxed);
        Seat::take(&self.shared, to.min(self.shared.workers.len() - 1))
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.shared.workers[self.index]
            .load
            .fetch_sub(1, Ordering::Relaxed);
        if !self.moved {
            self.shared.churn.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Workers {
    /// Starts `count` threads (at least one), each running its own
    /// runtime until the pool is dropped.
    pub fn start(count: usize) -> io::Result<Self> {
        let mut workers = Vec::with_capacity(count.max(1));
        let mut threads = Vec::with_capacity(count.max(1));
        for i in 0..count.max(1) {
            let runtime = Builder::new_current_thread()
                .enable_all()
                .on_thread_park(park::before_park)
                .thread_name(format!("kvstore-io-{i}"))
                .build()?;
            let schedstat = Arc::new(OnceLock::new());
            let path = Arc::clone(&schedstat);
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let join = std::thread::Builder::new()
                .name(format!("kvstore-io-{i}"))
                .spawn(move || {
                    // Durable writes commit as the thread runs out of work.
                    park::enable_on_this_thread();
                    let tid = rustix::thread::gettid().as_raw_nonzero();
                    let _ = path.set(PathBuf::from(format!("/proc/self/task/{tid}/schedstat")));
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    // Connections are drained or aborted by their accept
                    // loops before the pool stops; a command's blocking
                    // work (a compaction) finishes on its own.
                    runtime.shutdown_background();
                })?;
            workers.push(Worker {
                handle,
                schedstat,
                load: AtomicUsize::new(0),
                busy: AtomicU32::new(0),
                order: AtomicU64::new(0),
            });
            threads.push(Thread {
                stop: Some(stop),
                join: Some(join),
            });
        }
        let last = Mutex::new(Round::new(workers.len()));
        Ok(Self {
            shared: Arc::new(Shared {
                workers,
                churn: AtomicU64::new(0),
                moves: AtomicU64::new(0),
                arrived: Notify::new(),
            }),
            threads,
            last,
        })
    }

    /// A seat for a new connection (module docs): the least busy thread
    /// already serving that is not saturated, else an idle thread, else
    /// the one with the fewest connections.
    pub fn pick(&self) -> Seat {
        let workers = &self.shared.workers;
        let busy = |i: usize| workers[i].busy.load(Ordering::Relaxed);
        let load = |i: usize| workers[i].load.load(Ordering::Relaxed);
        let spill = (SPILL_AT * MILLE) as u32;
        let index = (0..workers.len())
            .filter(|&i| load(i) > 0 && busy(i) < spill)
            .min_by_key(|&i| (busy(i), load(i)))
            .or_else(|| (0..workers.len()).find(|&i| load(i) == 0))
            .or_else(|| (0..workers.len()).min_by_key(|&i| load(i)))
            .unwrap_or(0);
        self.shared.churn.fetch_add(1, Ordering::Relaxed);
        self.shared.arrived.notify_one();
        Seat::take(&self.shared, index)
    }

    /// Each thread's connections now.
    pub fn loads(&self) -> Vec<usize> {
        self.shared.loads()
    }

    /// The threads as `/metrics` shows them: each one's connections and
    /// share of the last round on a CPU (measured only where there is
    /// something to balance: two threads or more), and the moves so far.
    pub fn figures(&self) -> IoThreads {
        self.shared.figures()
    }

    /// [`Workers::figures`] for `/metrics` to read at each scrape. It
    /// holds the counts, not the pool: a scrape never keeps the threads
    /// running, nor becomes the last owner that stops them.
    pub fn figures_source(&self) -> impl Fn() -> IoThreads + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || shared.figures()
    }
}

impl Shared {
    fn loads(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|w| w.load.load(Ordering::Relaxed))
            .collect()
    }

    fn figures(&self) -> IoThreads {
        let workers = &self.workers;
        IoThreads {
            connections: self.loads().into_iter().map(|n| n as u64).collect(),
            busy: (workers.len() > 1).then(|| {
                workers
                    .iter()
                    .map(|w| f64::from(w.busy.load(Ordering::Relaxed)) / MILLE)
                    .collect()
            }),
            moves: self.moves.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for thread in &mut self.threads {
            if let Some(stop) = thread.stop.take() {
                let _ = stop.send(());
            }
        }
        for thread in &mut self.threads {
            // Never join itself: the last owner may be a task on a worker.
            if let Some(join) = thread.join.take() {
                if join.thread().id() != std::thread::current().id() {
                    let _ = join.join();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn new_connections_fill_one_thread_until_it_is_saturated() {
        let pool = Workers::start(3).unwrap();
        let mut seats: Vec<Seat> = (0..4).map(|_| pool.pick()).collect();
        assert_eq!(pool.loads(), vec![4, 0, 0]);
        // Thread 0 saturated: the next goes to an idle thread, and the
        // one after that to the thread now serving that is not.
        pool.shared.workers[0].busy.store(950, Ordering::Relaxed);
        seats.push(pool.pick());
        seats.push(pool.pick());
        assert_eq!(pool.loads(), vec![4, 2, 0]);
        // All saturated: the fewest connections.
        for w in &pool.shared.workers {
            w.busy.store(1000, Ordering::Relaxed);
        }
        seats.push(pool.pick());
        assert_eq!(pool.loads(), vec![4, 2, 1]);
        // Closed connections leave their thread.
        seats.retain(|s| s.thread() != 1);
        assert_eq!(pool.loads(), vec![4, 0, 1]);
    }

    #[test]
    fn a_single_thread_shows_no_busy_ratio() {
        let pool = Workers::start(1).unwrap();
        let _seat = pool.pick();
        let shown = IoThreads {
            connections: vec![1],
            busy: None,
            moves: 0,
        };
        assert_eq!(pool.figures(), shown);
    }

    #[test]
    fn a_threads_time_on_a_cpu_is_read_from_the_kernel() {
        let pool = Workers::start(1).unwrap();
        let worker = &pool.shared.workers[0];
        // The thread names its file as it starts.
        let deadline = Instant::now() + Duration::from_secs(10);
        let path = loop {
            if let Some(path) = worker.schedstat.get() {
                break path.clone();
            }
            assert!(Instant::now() < deadline, "the thread never started");
            std::thread::yield_now();
        };
        let before = on_cpu(&path).expect("schedstat readable");
        // A task that runs for a while on the thread: its time shows.
        let spin = worker.handle.spawn(async {
            let until = Instant::now() + Duration::from_millis(30);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        });
        Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(spin)
            .unwrap();
        let after = on_cpu(&path).unwrap();
        assert!(after > before, "{before} -> {after}");
        assert_eq!(
            on_cpu(std::path::Path::new("/proc/self/task/0/schedstat")),
            None
        );
    }

    #[test]
    fn a_connection_runs_on_its_thread_until_the_pool_stops() {
        let pool = Workers::start(2).unwrap();
        let seat = pool.pick();
        let handle = seat.handle().clone();
        let here = Builder::new_current_thread().build().unwrap();
        let name = || std::thread::current().name().map(str::to_owned);
        let ran_on = here.block_on(handle.spawn(async move { name() })).unwrap();
        assert_eq!(ran_on.as_deref(), Some("kvstore-io-0"));
        drop(seat);
        drop(pool);
        // The thread is gone: what is handed to it now is never run.
        let late = here.block_on(handle.spawn(async move { name() }));
        assert!(late.unwrap_err().is_cancelled());
    }
}
