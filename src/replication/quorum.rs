//! Sync mode's waiting room: writes wait here until enough replicas have
//! them durably.
//!
//! A write waits for the log offset it ends at. The master keeps one
//! number, the **replicated end**: the highest offset that at least
//! `min_acks` replicas acknowledged as durable (the `min_acks`-th highest
//! durable end among connected replicas). Waiters are kept ordered by
//! offset, so an acknowledgement that moves the replicated end wakes
//! exactly the writes it completes — not every waiting write, which at
//! hundreds of pipelined writes and a thousand acknowledgements a second
//! costs more CPU than the writes themselves.
//!
//! With a coordinator the replicated end comes from the in-sync set
//! instead (`in_sync.rs`): every member must have the write.
//!
//! Invariant: every waiter's offset is above `replicated` (a write at or
//! below it never waits).

use std::collections::BTreeMap;

use parking_lot::Mutex;
use tokio::sync::oneshot;

#[derive(Default)]
struct State {
    replicated: u64,
    waiting: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
}

#[derive(Default)]
pub(crate) struct Quorum {
    state: Mutex<State>,
}

impl Quorum {
    /// `None` when the log up to `end` is already replicated; otherwise a
    /// receiver that completes once it is.
    pub fn wait(&self, end: u64) -> Option<oneshot::Receiver<()>> {
        let mut st = self.state.lock();
        if end <= st.replicated {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        st.waiting.entry(end).or_default().push(tx);
        Some(rx)
    }

    /// Sets the replicated end from the replicas' durable ends and wakes
    /// the writes it completes. It may go down (a replica left): writes
    /// already woken stay acknowledged, as they were replicated then.
    pub fn update(&self, durable_ends: impl Iterator<Item = u64>, min_acks: usize) {
        let mut ends: Vec<u64> = durable_ends.collect();
        let replicated = if min_acks == 0 {
            u64::MAX
        } else if ends.len() < min_acks {
            0
        } else {
            ends.sort_unstable_by(|a, b| b.cmp(a));
            ends[min_acks - 1]
        };
        self.set(replicated);
    }

    /// Sets the replicated end as a rule computed it (the in-sync set's:
    /// the lowest durable end among its members) and wakes the writes it
    /// completes; like [`Quorum::update`] it may go down.
    pub fn set(&self, replicated: u64) {
        let done = {
            let mut st = self.state.lock();
            st.replicated = replicated;
            let rest = st.waiting.split_off(&replicated.saturating_add(1));
            std::mem::replace(&mut st.waiting, rest)
        };
        for tx in done.into_values().flatten() {
            // A waiter that timed out dropped its receiver: nothing to do.
            let _ = tx.send(());
        }
    }

    /// Forgets waiters that gave up (timed out), so that writes refused
    /// while no replica advances do not pile up.
    pub fn prune(&self) {
        let mut st = self.state.lock();
        st.waiting.retain(|_, txs| {
            txs.retain(|tx| !tx.is_closed());
            !txs.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_wakes_exactly_the_writes_it_completes() {
        let q = Quorum::default();
        let mut a = q.wait(100).expect("waits");
        let mut b = q.wait(200).expect("waits");
        // Two replicas, min_acks 2: the second-highest durable end counts.
        q.update([150, 300].into_iter(), 2);
        assert_eq!(a.try_recv(), Ok(()));
        assert!(b.try_recv().is_err(), "200 is on one replica only");
        assert!(q.wait(150).is_none(), "at or below the replicated end");
        q.update([250, 300].into_iter(), 2);
        assert_eq!(b.try_recv(), Ok(()));
        // Too few replicas: nothing counts as replicated.
        q.update([900].into_iter(), 2);
        assert!(q.wait(1).is_some());
    }

    #[test]
    fn pruning_drops_only_abandoned_waiters() {
        let q = Quorum::default();
        let gone = q.wait(10).expect("waits");
        let mut kept = q.wait(10).expect("waits");
        drop(gone);
        q.prune();
        assert_eq!(q.state.lock().waiting.get(&10).map(Vec::len), Some(1));
        q.update([10].into_iter(), 1);
        assert_eq!(kept.try_recv(), Ok(()));
        assert!(q.state.lock().waiting.is_empty());
    }
}
