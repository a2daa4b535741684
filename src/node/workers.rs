//! The threads that serve client connections: one single-threaded tokio
//! runtime per thread, each connection pinned to one of them from accept
//! to close.
//!
//! A work-stealing runtime lets any worker run any connection, and pays
//! for it on every request: a socket's readiness wakes a worker that may
//! not be the one holding the task, and a task made runnable wakes an idle
//! worker to come and steal it. With one request in flight per connection
//! most of those wake-ups find nothing to do, and each park and wake is a
//! context switch. Pinned, a connection's bytes are read, executed and
//! answered by the thread whose `epoll` reported them; the threads share
//! nothing per request but the engine.
//!
//! The price: nothing moves a connection off a busy thread. A request
//! that stalls its thread (a read that faults in a cold page of a
//! segment, a replica's stream reading old segments) delays the other
//! connections on that thread, where a work-stealing runtime would have
//! run them elsewhere; the engine's long work (fsync, compaction) runs on
//! threads of its own.
//!
//! A connection handed over to a replication or backup stream stays on
//! its thread, so its socket's readiness still wakes no other. The rest
//! of the node (the replica's link to its master, the HTTP server, the
//! coordinator loop) runs on the process's multi-threaded runtime.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// The connection threads of one node.
pub struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    handle: Handle,
    /// Connections on this thread now.
    load: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// A connection's place on a worker, counted until it is dropped.
#[derive(Debug)]
pub struct Seat {
    load: Arc<AtomicUsize>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.load.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `count` threads (at least one), each running its own
    /// runtime until the pool is dropped.
    pub fn start(count: usize) -> io::Result<Self> {
        let mut workers = Vec::with_capacity(count.max(1));
        for i in 0..count.max(1) {
            let runtime = Builder::new_current_thread()
                .enable_all()
                .thread_name(format!("kvstore-io-{i}"))
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("kvstore-io-{i}"))
                .spawn(move || {
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
                load: Arc::new(AtomicUsize::new(0)),
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Self { workers })
    }

    /// The runtime of the thread with the fewest connections, and the
    /// seat that counts the new one there until it is dropped.
    pub fn pick(&self) -> (&Handle, Seat) {
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.load.load(Ordering::Relaxed))
            .expect("a pool has at least one thread");
        worker.load.fetch_add(1, Ordering::Relaxed);
        let seat = Seat {
            load: Arc::clone(&worker.load),
        };
        (&worker.handle, seat)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            if let Some(stop) = worker.stop.take() {
                let _ = stop.send(());
            }
        }
        for worker in &mut self.workers {
            // Never join itself: the last owner may be a task on a worker.
            if let Some(thread) = worker.thread.take() {
                if thread.thread().id() != std::thread::current().id() {
                    let _ = thread.join();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loads(pool: &Workers) -> Vec<usize> {
        pool.workers
            .iter()
            .map(|w| w.load.load(Ordering::Relaxed))
            .collect()
    }

    #[test]
    fn a_new_connection_goes_to_the_thread_with_the_fewest() {
        let pool = Workers::start(3).unwrap();
        let mut seats: Vec<Seat> = (0..6).map(|_| pool.pick().1).collect();
        assert_eq!(loads(&pool), vec![2, 2, 2]);
        // The two connections of the second thread close: the next two go
        // there.
        seats.retain(|s| !Arc::ptr_eq(&s.load, &pool.workers[1].load));
        assert_eq!(loads(&pool), vec![2, 0, 2]);
        seats.push(pool.pick().1);
        seats.push(pool.pick().1);
        assert_eq!(loads(&pool), vec![2, 2, 2]);
    }

    #[test]
    fn a_connection_runs_on_its_thread_until_the_pool_stops() {
        let pool = Workers::start(2).unwrap();
        let (handle, _seat) = pool.pick();
        let handle = handle.clone();
        let here = Builder::new_current_thread().build().unwrap();
        let name = || std::thread::current().name().map(str::to_owned);
        let ran_on = here.block_on(handle.spawn(async move { name() })).unwrap();
        assert_eq!(ran_on.as_deref(), Some("kvstore-io-0"));
        drop(pool);
        // The thread is gone: what is handed to it now is never run.
        let late = here.block_on(handle.spawn(async move { name() }));
        assert!(late.unwrap_err().is_cancelled());
    }
}
