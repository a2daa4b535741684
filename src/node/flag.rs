//! [`Flag`]: a signal one task waits for, raised once by anyone.

use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use futures_util::task::AtomicWaker;

/// Raised once, never lowered; one task waits for it (a connection, for
/// its eviction or its cut). Waiting stores the task's waker with an
/// atomic swap, with no lock and no waiter list to join and leave, so a
/// connection can wait for it beside every read at no cost worth naming.
#[derive(Debug, Default)]
pub struct Flag {
    raised: AtomicBool,
    waiter: AtomicWaker,
}

impl Flag {
    /// Raises the flag and wakes its waiter, if one is waiting.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waiter.wake();
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Resolves once the flag is raised (at once if it already is). Only
    /// the last task to wait is woken: a flag has one waiter.
    pub fn raised(&self) -> impl Future<Output = ()> + Send + '_ {
        poll_fn(move |cx| {
            if self.is_raised() {
                return Poll::Ready(());
            }
            self.waiter.register(cx.waker());
            // Checked again: a raise between the check and the
            // registration woke nobody.
            if self.is_raised() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_waiter_wakes_when_the_flag_is_raised_and_later_waits_end_at_once() {
        let flag = Arc::new(Flag::default());
        let waiting = tokio::spawn({
            let flag = Arc::clone(&flag);
            async move { flag.raised().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        flag.raise();
        tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("the waiter wakes")
            .unwrap();
        assert!(flag.is_raised());
        flag.raised().await;
    }
}
