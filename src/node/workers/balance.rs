//! The balancing of the connection threads ([`super`]): which thread
//! serves which connections as their load changes.
//!
//! **Fill one thread before the next.** Every thread that serves some
//! connections sleeps and wakes on its own: two threads each serving
//! half of the clients sleep in `epoll_wait` and are woken for their
//! sockets about twice as often per request as one thread serving them
//! all, and that is where most of a request's cost goes when each client
//! waits for every answer. So connections gather on as few threads as
//! their load needs. [`Workers::rebalance`], run every
//! [`BALANCE_EVERY`], reads each thread's time on a CPU (the kernel's
//! `schedstat`) and the node's work so far (bytes received), and [`plan`]
//! picks at most one move:
//! - a thread on a CPU [`SPILL_AT`] of a round or more gives connections
//!   to the least busy thread, in proportion to the difference (half of
//!   them to an idle thread);
//! - two threads serving connections whose shares add up to at most
//!   [`PACK_AT`] (one thread would do), for [`PACK_AFTER`] rounds
//!   running, become one: the less busy gives all its connections to the
//!   other.
//!
//! Neither sign says for certain that a move pays. A thread saturated by
//! clients that each wait for their answer, on CPUs the node shares with
//! those clients, is no faster for a second thread: the CPU it would use
//! is the clients', and the requests only cost more wake-ups. Threads can
//! look light while they wait on the engine's writer. So every move is a
//! trial ([`Trial`]): after [`SETTLE`] rounds for its connections to go,
//! the node's rate of work over [`MEASURE`] rounds is compared with the
//! rate before it. A spill stays if the rate rose by [`GAIN`], a pack if
//! it did not fall by as much; otherwise the move is undone and no move
//! of that kind is tried for a while (from [`MIN_BACKOFF`], doubling up
//! to [`MAX_BACKOFF`]; a spill again at once when the rate grows by half,
//! a pack when it falls by a third: a load it may pay under. An idle
//! spell does not re-arm a spill: clients that each wait for their answer
//! saturate the thread that serves them, and a second thread only costs
//! them more wake-ups, burst after burst).
//!
//! While no client sends anything, rounds come further apart (doubling
//! up to [`IDLE_EVERY`]); a new connection brings them back at once.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{on_cpu, Workers, MILLE};

/// How often [`Workers::rebalance`] looks at the threads' load.
pub const BALANCE_EVERY: Duration = Duration::from_millis(20);

/// The longest wait between rounds: while no client sends anything the
/// wait doubles from [`BALANCE_EVERY`] up to this, so an idle node does
/// not wake 50 times a second; a new connection, or a round that sees
/// work, brings it back to [`BALANCE_EVERY`].
pub const IDLE_EVERY: Duration = Duration::from_millis(320);

/// The share of a round a thread spends running its connections from
/// which it gives some of them away.
pub const SPILL_AT: f64 = 0.95;

/// Two threads whose shares of a round add up to at most this become one.
/// Below [`SPILL_AT`] by a margin, so that the thread they become is not
/// saturated at once (it does less work per request than the two did).
pub const PACK_AT: f64 = 0.85;

/// A spill is judged over this many rounds once its connections have had
/// [`SETTLE`] rounds to move: the node's rate of work over them against
/// the rate over as many rounds before it.
pub const MEASURE: usize = 5;
/// Rounds a spill's connections get to move before it is judged.
pub const SETTLE: usize = 2;
/// How much a spill must raise the node's rate of work to stay. One
/// thread more is no gain when what limits the rate is not this node's
/// threads (clients that wait for every answer, on CPUs the node shares
/// with them): there it only adds wake-ups, and the spill is undone.
pub const GAIN: f64 = 1.05;
/// The wait before the next spill after one that did not pay, doubled
/// after each such spill up to [`MAX_BACKOFF`]; back to the start once a
/// spill pays or the rate of work changes by half.
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(16);

/// Rounds in a row that must find two threads light enough for one
/// before they become one: a short lull (a stall on the engine, the
/// moment between two bursts) does not undo a spread the load needs.
pub const PACK_AFTER: usize = 10;

/// One round of the balancing, for the next.
pub(super) struct Round {
    at: Instant,
    /// Each thread's nanoseconds on a CPU then, where it could be read.
    on_cpu: Vec<Option<u64>>,
    /// Rounds in a row whose plan was to pack.
    light: usize,
    /// The node's work counter at the last rounds, newest last.
    work: VecDeque<(Instant, u64)>,
    /// A move being judged.
    trial: Option<Trial>,
    /// When the next spill, and the next pack, may be tried.
    backoffs: [Backoff; 2],
}

/// How long after a move of one kind that did not pay the next may be
/// tried.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    wait: Duration,
    until: Instant,
    /// The rate of work the failed move was judged against.
    failed_rate: f64,
}

/// A move on trial: a spill is kept if the node's rate of work rose by
/// [`GAIN`] over the rounds after it, a pack if it fell by less; else it
/// is undone.
#[derive(Debug, Clone, Copy)]
struct Trial {
    moved: Move,
    /// The rate of work before it (bytes a second).
    before: f64,
    rounds: usize,
    /// `Shared::churn` when it started: a trial during which clients
    /// came or went compares two different loads, and decides nothing.
    churn: u64,
}

impl Backoff {
    /// Lets the next move of its kind be tried at once, and after a
    /// failure waited for from [`MIN_BACKOFF`] again.
    fn reset(&mut self, now: Instant) {
        if self.wait > MIN_BACKOFF {
            self.wait = MIN_BACKOFF;
            self.until = now;
        }
    }
}

impl Round {
    /// Bytes a second over the last `rounds` rounds, if that many were
    /// seen.
    fn rate(&self, rounds: usize) -> Option<f64> {
        let (at, work) = *self.work.back()?;
        let (then, before) = *self.work.get(self.work.len().checked_sub(rounds + 1)?)?;
        let secs = at.saturating_duration_since(then).as_secs_f64();
        (secs > 0.0).then(|| work.saturating_sub(before) as f64 / secs)
    }
}

impl Round {
    /// Before the first round of a pool of `threads`.
    pub(super) fn new(threads: usize) -> Round {
        Round {
            at: Instant::now(),
            on_cpu: vec![None; threads],
            light: 0,
            work: VecDeque::new(),
            trial: None,
            backoffs: [Backoff {
                wait: MIN_BACKOFF,
                until: Instant::now(),
                failed_rate: 0.0,
            }; 2],
        }
    }
}

/// A move of connections between threads, as [`plan`] decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    pub from: usize,
    pub to: usize,
    pub count: usize,
    /// Two threads becoming one (else: a saturated one spilling).
    pub pack: bool,
}

/// The one move (if any) that a round makes, from each thread's busy
/// share of the round and its connections (module docs).
pub fn plan(busy: &[f64], conns: &[usize]) -> Option<Move> {
    let n = busy.len().min(conns.len());
    // Compared in twentieths, so that threads within a few percent of
    // each other tie and the lower-numbered one keeps its connections.
    let level = |i: usize| (busy[i] * 20.0).round() as i64;
    let least_busy = |except: usize, serving: bool| {
        (0..n)
            .filter(|&j| j != except && (!serving || conns[j] > 0))
            .min_by_key(|&j| (level(j), j))
    };
    // Spill: the busiest thread, if saturated, shares with the least busy.
    let busiest = (0..n)
        .filter(|&i| conns[i] > 1)
        .max_by_key(|&i| (level(i), std::cmp::Reverse(i)));
    if let Some(from) = busiest.filter(|&i| busy[i] >= SPILL_AT) {
        let to = least_busy(from, false).filter(|&j| busy[j] < SPILL_AT)?;
        let share = (busy[from] - busy[to]) / (2.0 * busy[from]);
        // Nothing for a gap too small to move one connection over.
        let count = ((conns[from] as f64 * share).round() as usize).min(conns[from] - 1);
        return (count > 0).then_some(Move {
            from,
            to,
            count,
            pack: false,
        });
    }
    // Pack: the least busy thread serving gives everything to the least
    // busy other one serving, if one thread would do for both.
    let from = (0..n)
        .filter(|&i| conns[i] > 0)
        .min_by_key(|&i| (level(i), std::cmp::Reverse(i)))?;
    let to = least_busy(from, true)?;
    (busy[from] + busy[to] <= PACK_AT).then_some(Move {
        from,
        to,
        count: conns[from],
        pack: true,
    })
}

impl Workers {
    /// One round of the balancing (module docs): measures each thread's
    /// share of the time since the last round spent on a CPU, and leaves
    /// the move [`plan`] decides (if any) as the order its connections
    /// take up.
    pub fn rebalance(&self, work: u64) -> Option<Move> {
        let on_cpu = self
            .shared
            .workers
            .iter()
            .map(|w| w.schedstat.get().and_then(|p| on_cpu(p)))
            .collect();
        self.round(Instant::now(), on_cpu, work)
    }

    /// [`Workers::rebalance`] on its measures: at `now`, each thread's
    /// nanoseconds on a CPU (`None` where they could not be read).
    fn round(&self, now: Instant, on_cpu: Vec<Option<u64>>, work: u64) -> Option<Move> {
        let workers = &self.shared.workers;
        let mut last = self.last.lock();
        let last = &mut *last;
        let elapsed = now.saturating_duration_since(last.at).as_nanos() as f64;
        let shares: Option<Vec<f64>> = on_cpu
            .iter()
            .zip(&last.on_cpu)
            .map(|(ran, before)| {
                let ran = ran.as_ref()?.checked_sub(*before.as_ref()?)?;
                (elapsed > 0.0).then(|| (ran as f64 / elapsed).min(1.0))
            })
            .collect();
        last.at = now;
        last.on_cpu = on_cpu;
        last.work.push_back((now, work));
        while last.work.len() > 2 * MEASURE + 1 {
            last.work.pop_front();
        }
        // A single round's shares: a spill that a noisy round set off is
        // judged, and undone, like any other that does not pay.
        let busy = shares.inspect(|busy| {
            for (w, b) in workers.iter().zip(busy) {
                w.busy.store((b * MILLE) as u32, Ordering::Relaxed);
            }
        });
        if let Some(trial) = last.trial.as_mut() {
            // The move's order stands while its connections go.
            trial.rounds += 1;
            let trial = *trial;
            if trial.rounds < SETTLE + MEASURE {
                return None;
            }
            last.trial = None;
            let after = last.rate(MEASURE).unwrap_or(0.0);
            let moved = trial.moved;
            let churned = self.shared.churn.load(Ordering::Relaxed) != trial.churn;
            let kept = churned
                || if moved.pack {
                    after * GAIN >= trial.before
                } else {
                    after >= trial.before * GAIN
                };
            tracing::trace!(
                ?moved,
                before = trial.before,
                after,
                churned,
                kept,
                "move judged"
            );
            let backoff = &mut last.backoffs[usize::from(moved.pack)];
            if kept {
                backoff.wait = MIN_BACKOFF;
            } else {
                // Undone: the connections it moved go back.
                backoff.until = now + backoff.wait;
                backoff.wait = (backoff.wait * 2).min(MAX_BACKOFF);
                backoff.failed_rate = trial.before;
                let undo = Move {
                    from: moved.to,
                    to: moved.from,
                    count: moved.count.min(self.loads()[moved.to]),
                    pack: !moved.pack,
                };
                if undo.count == 0 {
                    return None;
                }
                self.order(undo);
                return Some(undo);
            }
        }
        // A new round replaces what the last one ordered.
        for w in workers {
            w.order.store(0, Ordering::Relaxed);
        }
        let Some(busy) = busy else {
            // Not every thread could be read: no move on a guess.
            last.light = 0;
            return None;
        };
        let rate = last.rate(MEASURE);
        if let Some(rate) = rate {
            // Another load, that a move which failed may pay under: a
            // spill under a heavier one (a lighter one, or an idle spell
            // between two bursts, needs a second thread even less), a
            // pack under a lighter one.
            let [spill, pack] = &mut last.backoffs;
            if rate > spill.failed_rate * 1.5 {
                spill.reset(now);
            }
            if rate < pack.failed_rate / 1.5 {
                pack.reset(now);
            }
        }
        let planned = plan(&busy, &self.loads());
        last.light = match planned {
            Some(m) if m.pack => last.light + 1,
            _ => 0,
        };
        // A pack once the threads have stayed light; either kind only
        // with a rate to judge it by, and not while its backoff runs.
        let moved = planned
            .filter(|m| !m.pack || last.light >= PACK_AFTER)
            .filter(|m| now >= last.backoffs[usize::from(m.pack)].until)?;
        let before = rate?;
        last.trial = Some(Trial {
            moved,
            before,
            rounds: 0,
            churn: self.shared.churn.load(Ordering::Relaxed),
        });
        self.order(moved);
        tracing::trace!(?busy, ?moved, "connection threads rebalanced");
        Some(moved)
    }

    /// Leaves `moved` as the order its thread's connections take up.
    pub(crate) fn order(&self, moved: Move) {
        let order = ((moved.to as u64) << 32) | moved.count.min(u32::MAX as usize) as u64;
        self.shared.workers[moved.from]
            .order
            .store(order, Ordering::Relaxed);
    }

    /// Rebalances the pool every [`BALANCE_EVERY`] until it is dropped,
    /// less often while idle ([`next_wait`]), `work` counting the node's
    /// work so far (bytes received from clients). A pool of one thread
    /// has nothing to balance.
    pub async fn balance(pool: Weak<Workers>, work: impl Fn() -> u64) {
        // What new connections notify; holding it keeps no thread running.
        let shared = match pool.upgrade() {
            Some(pool) if pool.shared.workers.len() > 1 => Arc::clone(&pool.shared),
            _ => return,
        };
        let mut wait = BALANCE_EVERY;
        let mut seen = None;
        loop {
            // A connection that arrives during a long wait ends it, once
            // a round's length has passed: the round then measures the
            // idle time, and the next, one round later, the new load. No
            // round measures less than [`BALANCE_EVERY`].
            let started = tokio::time::Instant::now();
            let mut deadline = started + wait;
            let mut arrived = false;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => break,
                    () = shared.arrived.notified() => {
                        arrived = true;
                        let soonest = (started + BALANCE_EVERY).max(tokio::time::Instant::now());
                        deadline = deadline.min(soonest);
                    }
                }
            }
            let Some(pool) = pool.upgrade() else { return };
            let done = work();
            wait = next_wait(wait, seen != Some(done), arrived);
            seen = Some(done);
            pool.rebalance(done);
        }
    }
}

/// The wait before the next round after one that waited `wait`: back to
/// [`BALANCE_EVERY`] when the node `worked` since the round before or a
/// connection `arrived`, else twice as long, up to [`IDLE_EVERY`].
fn next_wait(wait: Duration, worked: bool, arrived: bool) -> Duration {
    if worked || arrived {
        BALANCE_EVERY
    } else {
        (wait * 2).min(IDLE_EVERY)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::super::Seat;
    use super::*;
    use crate::metrics::IoThreads;

    fn spill(from: usize, to: usize, count: usize) -> Option<Move> {
        Some(Move {
            from,
            to,
            count,
            pack: false,
        })
    }

    fn pack(from: usize, to: usize, count: usize) -> Option<Move> {
        Some(Move {
            from,
            to,
            count,
            pack: true,
        })
    }

    #[test]
    fn a_saturated_thread_gives_half_its_connections_to_an_idle_one() {
        let moved = plan(&[1.0, 0.0], &[50, 0]);
        assert_eq!(moved, spill(0, 1, 25));
        // To a thread already serving some: in proportion to the gap.
        let moved = plan(&[0.95, 0.55], &[40, 20]);
        assert_eq!(moved, spill(0, 1, 8));
        // The busiest of three gives to the least busy.
        let moved = plan(&[0.3, 1.0, 0.0], &[4, 10, 0]);
        assert_eq!(moved, spill(1, 2, 5));
    }

    #[test]
    fn nothing_moves_where_it_would_not_help() {
        // Every thread saturated; one connection cannot be split.
        assert_eq!(plan(&[1.0, 0.95], &[25, 25]), None);
        assert_eq!(plan(&[1.0, 0.0], &[1, 0]), None);
        // Between the bounds: neither saturated nor light enough for one.
        assert_eq!(plan(&[0.9, 0.0], &[50, 0]), None);
        assert_eq!(plan(&[0.45, 0.45], &[25, 25]), None);
        // A gap too small to move a connection over.
        assert_eq!(plan(&[0.96, 0.94], &[25, 25]), None);
        // Nothing to serve.
        assert_eq!(plan(&[0.0, 0.0], &[0, 0]), None);
        assert_eq!(plan(&[], &[]), None);
    }

    #[test]
    fn two_light_threads_become_one() {
        // The higher-numbered of two equally light threads empties.
        assert_eq!(plan(&[0.2, 0.2], &[3, 5]), pack(1, 0, 5));
        // Of three, the lightest joins the next lightest.
        assert_eq!(plan(&[0.5, 0.1, 0.3], &[9, 2, 4]), pack(1, 2, 2));
        // Idle connections gather too.
        assert_eq!(plan(&[0.0, 0.0], &[1, 1]), pack(1, 0, 1));
    }

    #[test]
    fn rounds_come_further_apart_while_idle_and_close_up_on_work() {
        let mut wait = BALANCE_EVERY;
        let mut waits = Vec::new();
        for _ in 0..6 {
            wait = next_wait(wait, false, false);
            waits.push(wait.as_millis());
        }
        assert_eq!(waits, [40, 80, 160, 320, 320, 320]);
        assert_eq!(next_wait(IDLE_EVERY, true, false), BALANCE_EVERY);
        assert_eq!(next_wait(IDLE_EVERY, false, true), BALANCE_EVERY);
    }

    /// The balancing of a two-thread pool on a paused clock, with work
    /// that grows while `busy` is set: how many rounds it ran.
    struct Balancing {
        pool: Arc<Workers>,
        rounds: Arc<AtomicUsize>,
        busy: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Balancing {
        fn start() -> Balancing {
            let pool = Arc::new(Workers::start(2).unwrap());
            let rounds = Arc::new(AtomicUsize::new(0));
            let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (counted, working) = (Arc::clone(&rounds), Arc::clone(&busy));
            tokio::spawn(Workers::balance(Arc::downgrade(&pool), move || {
                let round = counted.fetch_add(1, Ordering::Relaxed) as u64;
                // Bytes received so far: growing only while busy.
                if working.load(Ordering::Relaxed) {
                    round
                } else {
                    0
                }
            }));
            Balancing { pool, rounds, busy }
        }

        async fn rounds_in(&self, time: Duration) -> usize {
            let before = self.rounds.load(Ordering::Relaxed);
            tokio::time::sleep(time).await;
            self.rounds.load(Ordering::Relaxed) - before
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_node_balances_rarely_and_a_new_connection_or_work_wakes_it() {
        let balancing = Balancing::start();
        // Idle: rounds at 20, 40, 80, 160, 320, 640, 960 ms, then every
        // 320 ms.
        assert_eq!(balancing.rounds_in(Duration::from_millis(1000)).await, 7);
        assert_eq!(balancing.rounds_in(Duration::from_millis(1280)).await, 4);
        // A connection 40 ms into a 320 ms wait: a round at once, and
        // the next 20 ms later (then idle again: 40 ms after that).
        tokio::time::sleep(Duration::from_millis(40)).await;
        let _seat = balancing.pool.pick();
        assert_eq!(balancing.rounds_in(Duration::from_millis(1)).await, 1);
        assert_eq!(balancing.rounds_in(Duration::from_millis(20)).await, 1);
        // Work: every 20 ms.
        balancing.busy.store(true, Ordering::Relaxed);
        assert!(balancing.rounds_in(Duration::from_millis(200)).await >= 9);
    }

    /// Feeds `pool` `count` rounds, `BALANCE_EVERY` apart, in which each
    /// thread ran the given share of the time and the node did `work`
    /// bytes of work; the moves ordered, with the round they came in.
    fn rounds(pool: &Workers, shares: &[f64], work: u64, count: usize) -> Vec<(usize, Move)> {
        let step = BALANCE_EVERY.as_nanos() as f64;
        let (mut at, baseline, mut done) = {
            let last = pool.last.lock();
            (
                last.at,
                last.on_cpu.clone(),
                last.work.back().map_or(0, |w| w.1),
            )
        };
        let mut ran: Vec<u64> = baseline.iter().map(|r| r.unwrap_or(0)).collect();
        if baseline.iter().any(Option::is_none) {
            pool.round(at, ran.iter().map(|&r| Some(r)).collect(), done);
        }
        let mut moves = Vec::new();
        for k in 0..count {
            at += BALANCE_EVERY;
            for (r, share) in ran.iter_mut().zip(shares) {
                *r += (share * step) as u64;
            }
            done += work;
            let on_cpu = ran.iter().map(|&r| Some(r)).collect();
            if let Some(m) = pool.round(at, on_cpu, done) {
                moves.push((k, m));
            }
        }
        moves
    }

    /// Each seat takes up its thread's order, as its connection would at
    /// its next pause between requests: the departures, and the seats
    /// where they are now.
    fn depart(seats: Vec<Seat>) -> (Vec<Option<usize>>, Vec<Seat>) {
        seats
            .into_iter()
            .map(|seat| match seat.departure() {
                Some(to) => (Some(to), seat.move_to(to)),
                None => (None, seat),
            })
            .unzip()
    }

    /// The rounds in one backoff.
    fn rounds_in(backoff: Duration) -> usize {
        (backoff.as_nanos() / BALANCE_EVERY.as_nanos()) as usize
    }

    /// A pool of two threads, four connections on the first, saturated
    /// until it spills half of them to the second; the seats, moved.
    fn spilled() -> (Workers, Vec<Seat>) {
        let pool = Workers::start(2).unwrap();
        let seats: Vec<Seat> = (0..4).map(|_| pool.pick()).collect();
        assert!(seats.iter().all(|s| s.thread() == 0));
        // Below saturation, nothing moves.
        assert_eq!(rounds(&pool, &[0.9, 0.0], 1000, MEASURE), vec![]);
        // A saturated round: half go to the idle thread.
        let moves = rounds(&pool, &[1.0, 0.0], 1000, 1);
        assert_eq!(moves, vec![(0, spill(0, 1, 2).unwrap())]);
        let (departures, seats) = depart(seats);
        assert_eq!(departures, vec![Some(1), Some(1), None, None]);
        assert_eq!(pool.loads(), vec![2, 2]);
        // What `/metrics` shows: the last round's shares, the moves.
        let shown = IoThreads {
            connections: vec![2, 2],
            busy: Some(vec![1.0, 0.0]),
            moves: 2,
        };
        assert_eq!(pool.figures(), shown);
        (pool, seats)
    }

    #[test]
    fn a_spill_that_raises_the_rate_of_work_stays() {
        let (pool, _seats) = spilled();
        // Twice the work with both threads busy: judged and kept.
        assert_eq!(
            rounds(&pool, &[0.9, 0.9], 2000, SETTLE + MEASURE + 20),
            vec![]
        );
        assert_eq!(pool.loads(), vec![2, 2]);
        // Both threads saturated: nowhere to spill to.
        assert_eq!(rounds(&pool, &[1.0, 1.0], 2000, 20), vec![]);
    }

    #[test]
    fn a_spill_judged_while_clients_come_or_go_stays() {
        let (pool, mut seats) = spilled();
        // A client leaves during the trial: the load before and after are
        // not the same load, so the same work decides nothing.
        drop(seats.pop());
        let moves = rounds(&pool, &[0.9, 0.6], 1000, SETTLE + MEASURE + 5);
        assert_eq!(moves, vec![]);
        assert_eq!(pool.loads(), vec![1, 2]);
    }

    #[test]
    fn a_spill_that_does_not_raise_the_rate_of_work_is_undone_and_retried_later() {
        let (pool, seats) = spilled();
        // The same work as before the spill: undone after the judging.
        let moves = rounds(&pool, &[0.9, 0.6], 1000, SETTLE + MEASURE);
        assert_eq!(moves, vec![(SETTLE + MEASURE - 1, pack(1, 0, 2).unwrap())]);
        let departures: Vec<_> = seats.iter().map(Seat::departure).collect();
        assert_eq!(departures, vec![Some(0), Some(0), None, None]);
        drop(seats);
        let _seats: Vec<Seat> = (0..4).map(|_| Seat::take(&pool.shared, 0)).collect();
        // Saturated again: no spill until the backoff has passed, then
        // one more trial, and after each that fails (and is undone, with
        // nobody moved: no order) the backoff doubles.
        let trial = SETTLE + MEASURE;
        let total = 3 * trial + rounds_in(MIN_BACKOFF * (1 + 2 + 4)) + 10;
        let moves = rounds(&pool, &[1.0, 0.0], 1000, total);
        assert!(moves.iter().all(|(_, m)| !m.pack), "{moves:?}");
        let spills: Vec<usize> = moves.iter().map(|(at, _)| *at).collect();
        assert_eq!(spills.len(), 3, "{spills:?}");
        for (k, gap) in spills.windows(2).map(|w| w[1] - w[0]).enumerate() {
            let expected = trial + rounds_in(MIN_BACKOFF * 2u32.pow(k as u32 + 1));
            assert!(
                gap.abs_diff(expected) <= 1,
                "gap {k}: {gap}, not {expected}: {spills:?}"
            );
        }
        // An idle spell, then the same load again (the gap between two
        // bursts of the same clients): the backoff still runs.
        let idle = rounds(&pool, &[0.0, 0.0], 0, 2 * MEASURE);
        assert_eq!(idle, vec![]);
        let moves = rounds(&pool, &[1.0, 0.0], 1000, rounds_in(MIN_BACKOFF * 2));
        assert_eq!(moves, vec![], "the idle spell re-armed the spill");
        // A load much heavier than the one that failed is tried at once.
        let moves = rounds(&pool, &[1.0, 0.0], 3000, MEASURE + 2);
        assert!(moves.iter().any(|(_, m)| !m.pack), "{moves:?}");
    }

    /// A pool of two threads, one connection on the first and two on the
    /// second, light until the second is ordered to join the first; the
    /// seats, moved.
    fn packed() -> (Workers, Vec<Seat>) {
        let pool = Workers::start(2).unwrap();
        let seats = vec![
            Seat::take(&pool.shared, 0),
            Seat::take(&pool.shared, 1),
            Seat::take(&pool.shared, 1),
        ];
        assert_eq!(rounds(&pool, &[0.3, 0.2], 1000, PACK_AFTER - 2), vec![]);
        // One busier round starts the count again.
        assert_eq!(rounds(&pool, &[0.6, 0.5], 1000, 1), vec![]);
        assert_eq!(rounds(&pool, &[0.3, 0.2], 1000, PACK_AFTER - 1), vec![]);
        let moves = rounds(&pool, &[0.3, 0.2], 1000, 1);
        assert_eq!(moves, vec![(0, pack(1, 0, 2).unwrap())]);
        // Two departures from thread 1, none from thread 0.
        let (departures, seats) = depart(seats);
        assert_eq!(departures, vec![None, Some(0), Some(0)]);
        assert_eq!(pool.loads(), vec![3, 0]);
        (pool, seats)
    }

    #[test]
    fn light_threads_are_ordered_together_once_they_stay_light() {
        let (pool, seats) = packed();
        // The same work on one thread: kept.
        let moves = rounds(&pool, &[0.5, 0.0], 1000, SETTLE + MEASURE + 20);
        assert_eq!(moves, vec![]);
        assert!(seats.iter().all(|s| s.departure().is_none()));
    }

    /// [`packed`], then a rate of work that falls: the pack is undone
    /// (two connections go back to the second thread); the seats, moved.
    fn pack_undone() -> (Workers, Vec<Seat>) {
        let (pool, seats) = packed();
        let moves = rounds(&pool, &[0.7, 0.0], 800, SETTLE + MEASURE);
        assert_eq!(moves, vec![(SETTLE + MEASURE - 1, spill(0, 1, 2).unwrap())]);
        let (departures, seats) = depart(seats);
        assert_eq!(departures.iter().filter(|d| **d == Some(1)).count(), 2);
        assert_eq!(pool.loads(), vec![1, 2]);
        (pool, seats)
    }

    #[test]
    fn a_pack_that_lowers_the_rate_of_work_is_undone() {
        let (pool, _seats) = pack_undone();
        // Light again, but no pack until its backoff has passed.
        let wait = rounds_in(MIN_BACKOFF);
        let moves = rounds(&pool, &[0.3, 0.2], 800, wait + 1);
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert!(moves[0].0 + 2 >= wait && moves[0].1.pack, "{moves:?}");
    }

    #[test]
    fn a_failed_pack_is_tried_again_at_once_under_a_much_lighter_load_only() {
        let (pool, _seats) = pack_undone();
        // Its backoff runs (1 s): twice the work, on threads
        // light enough to pack, does not end it.
        let heavier = rounds(&pool, &[0.4, 0.4], 1600, rounds_in(MIN_BACKOFF) - 5);
        assert_eq!(heavier, vec![], "a heavier load re-armed the pack");
        // A third of the work: tried as soon as the rate shows it.
        let moves = rounds(&pool, &[0.2, 0.1], 250, MEASURE + 1);
        assert!(moves.first().is_some_and(|(_, m)| m.pack), "{moves:?}");
    }

    #[test]
    fn a_round_without_every_thread_measured_moves_nothing() {
        let pool = Workers::start(2).unwrap();
        let _seats: Vec<Seat> = (0..2).map(|_| Seat::take(&pool.shared, 1)).collect();
        let _other = Seat::take(&pool.shared, 0);
        let start = pool.last.lock().at;
        for k in 1..10u32 {
            let at = start + BALANCE_EVERY * k;
            assert_eq!(pool.round(at, vec![Some(0), None], 0), None);
        }
    }
}
