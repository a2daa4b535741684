//! Group commit at park: under `always`, a connection thread writes and
//! fsyncs its own rounds when it runs out of work, the way a
//! single-threaded server commits once per pass of its event loop.
//!
//! Without it, every durable write on a connection thread wakes the
//! flusher thread, which starts a round with whatever is buffered at that
//! moment (often one write: the rest of a burst of requests is still being
//! read), and its publish wakes each waiting task from outside the
//! connection's runtime (a system call per task). A thread that has taken
//! rounds at park ([`enable_on_this_thread`]) instead leaves the flusher
//! asleep: its writes wait until every request it has read is appended,
//! then the runtime's park hook ([`before_park`]) writes and fsyncs them
//! as one round on the thread itself, and the tasks it makes durable are
//! woken on their own thread. Requests that arrive during the fsync gather
//! in the sockets and make the next round. Other work of the thread would
//! wait for the fsync meanwhile, as in Redis under `appendfsync always`:
//! a thread that has served a read since its last round hands the round
//! to the flusher at park instead, so that reads beside durable writes are
//! not held up by them.
//!
//! A round past [`ROUND_AT_PARK_MAX`] bytes goes to the flusher at once,
//! as does a round that cannot be taken at park (another thread's or the
//! flusher's round is under way, the log is poisoned or closing). A
//! thread that never runs out of work would never park: a task waiting on
//! a deferred round hands it to the flusher after [`PARK_WAIT_LIMIT`]
//! (in the engine's `wait_durable_async`), so a busy thread delays a durable
//! write by at most that.

use std::cell::{Cell, RefCell};
use std::ptr;
use std::sync::Weak;
use std::time::Duration;

use super::Inner;

/// How long a write waits for its thread to park before its round goes
/// to the flusher.
pub const PARK_WAIT_LIMIT: Duration = Duration::from_millis(1);

/// Buffered bytes past which a write wakes the flusher after all. A round
/// this large is a pipelining load: a thread that ran it itself would
/// spend the fsync idle and the keydir updates on its own CPU, while the
/// next requests are already arriving; the flusher overlaps both with the
/// thread's reading them. Fifty clients sending one 100-byte `SET` each
/// make rounds of about 6 KiB; at a pipeline of 16, about 50 KiB.
pub const ROUND_AT_PARK_MAX: usize = 32 * 1024;

thread_local! {
    /// `None` on threads that do not take rounds at park; else the engine
    /// whose round waits for this thread to park, if any.
    static DEFERRED: RefCell<Option<Option<Weak<Inner>>>> = const { RefCell::new(None) };
    /// Whether this thread served a read since its last deferred round.
    static READ_SINCE_ROUND: Cell<bool> = const { Cell::new(false) };
}

/// Makes the `always` rounds of writes from async tasks on this thread
/// wait for the thread to park. For a thread that runs one current-thread
/// tokio runtime, with its timer enabled and [`before_park`] as its
/// `on_thread_park` hook; nothing else may block this thread's writes'
/// tasks (a blocking wait on a deferred write takes the round itself).
pub fn enable_on_this_thread() {
    DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(None);
        }
    });
}

/// The runtime's `on_thread_park` hook: writes and fsyncs the round
/// this thread deferred, or hands it to the flusher if the thread has
/// served reads since its last round.
pub fn before_park() {
    let pending = DEFERRED.with(|d| d.borrow_mut().as_mut().and_then(Option::take));
    if let Some(inner) = pending.and_then(|weak| weak.upgrade()) {
        if READ_SINCE_ROUND.replace(false) {
            inner.writer.kick();
        } else {
            inner.round_at_park();
        }
    }
}

/// Notes that this thread served a read: its next round goes to the
/// flusher, so that reads arriving during the fsync are not held up.
pub(super) fn note_read() {
    READ_SINCE_ROUND.set(true);
}

/// Whether this thread takes `inner`'s round at park: then the flusher
/// is not woken for what was just appended.
pub(super) fn defer(inner: &Inner) -> bool {
    DEFERRED.with(|d| match d.borrow_mut().as_mut() {
        None => false,
        Some(pending @ None) => {
            *pending = Some(inner.me.clone());
            true
        }
        // One round per thread: another engine's write (two engines in
        // one process) wakes its flusher as usual.
        Some(pending) => names(pending, inner),
    })
}

/// Whether a thread's deferred round is `inner`'s.
fn names(pending: &Option<Weak<Inner>>, inner: &Inner) -> bool {
    pending
        .as_ref()
        .is_some_and(|weak| ptr::eq(weak.as_ptr(), inner))
}

/// Whether a round of `inner` waits for this thread to park.
pub(super) fn deferred(inner: &Inner) -> bool {
    DEFERRED.with(|d| d.borrow().as_ref().is_some_and(|p| names(p, inner)))
}

/// Drops this thread's deferred round of `inner`, if any (someone else
/// takes it): returns whether there was one.
pub(super) fn take(inner: &Inner) -> bool {
    DEFERRED.with(|d| match d.borrow_mut().as_mut() {
        Some(pending) if names(pending, inner) => {
            *pending = None;
            true
        }
        _ => false,
    })
}

/// Hands a deferred round of `inner` to the flusher instead.
pub(super) fn hand_over(inner: &Inner) {
    if take(inner) {
        if let Some(faults) = &inner.options.faults {
            faults.count_hand_over();
        }
        inner.writer.kick();
    }
}
