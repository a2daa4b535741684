//! The node's memory budget for client bytes: the requests being read and
//! the answers waiting to be sent, on every connection of both client
//! ports (binary and RESP), counted in one total
//! (`--max-client-memory-bytes`, like Redis's `maxmemory-clients`).
//!
//! Invariants:
//! - bytes are reserved before the buffer that will hold them is
//!   allocated ([`Lease::cover`]); a reservation that would take the total
//!   past the budget is refused, nothing is allocated, and the caller
//!   refuses the request or answer that needed it with a clear error;
//! - each connection's first [`FREE_BYTES`] are not charged: a small
//!   request or answer always fits, so when the budget is spent by a few
//!   large consumers, they are the ones refused and every other client
//!   goes on. The connection limit bounds what this leaves uncounted;
//! - when a connection is refused, the connection holding the most (if
//!   it holds more than the refused one) is closed too ([`Lease::cut`]
//!   resolves for it): the largest consumer gives its bytes back, so a
//!   few connections cannot keep everyone else's large requests out;
//! - a [`Lease`] gives back what it holds when it is dropped, so however a
//!   connection or an answer under construction ends, its bytes return to
//!   the budget;
//! - the total is one atomic counter, never above the limit: many
//!   connections reserving at once cannot overshoot it together.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::flag::Flag;
use parking_lot::Mutex;

/// Default budget: 1 GiB.
pub const DEFAULT_BUDGET_BYTES: u64 = 1 << 30;
/// Bytes of each connection's buffers that are not charged.
pub const FREE_BYTES: u64 = 32 * 1024;

/// A reservation did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the node's memory for client requests and answers is spent ({used} of {limit} bytes \
     in use, {asked} more needed); retry later (--max-client-memory-bytes)"
)]
pub struct Exhausted {
    pub asked: u64,
    pub used: u64,
    pub limit: u64,
}

/// The shared budget.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: AtomicU64,
    next_id: AtomicU64,
    /// Every connection's lease, to find the largest.
    holders: Mutex<Vec<Arc<Holder>>>,
}

/// A connection's lease as the budget sees it.
#[derive(Debug)]
struct Holder {
    id: u64,
    held: AtomicU64,
    cut: Flag,
}

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget {
            limit,
            used: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            holders: Mutex::new(Vec::new()),
        }
    }

    /// `refused` was refused: the connection holding the most, if it
    /// holds more than `refused`, is told to close.
    fn cut_largest(&self, refused: &Holder) {
        let holders = self.holders.lock();
        let largest = holders
            .iter()
            .filter(|h| h.id != refused.id && !h.cut.is_raised())
            .max_by_key(|h| h.held.load(Ordering::Relaxed));
        if let Some(largest) = largest {
            if largest.held.load(Ordering::Relaxed) > refused.held.load(Ordering::Relaxed) {
                largest.cut.raise();
            }
        }
    }

    /// The configured total, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `n` more bytes if the total stays within the limit.
    fn take(&self, n: u64) -> Result<(), Exhausted> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .map(|_| ())
            .map_err(|used| Exhausted {
                asked: n,
                used,
                limit: self.limit,
            })
    }

    /// Takes `n` bytes whether or not they fit: for bytes that are already
    /// allocated, so that the figure stays true.
    fn force(&self, n: u64) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    fn give(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// What one holder has reserved: a connection's buffers, or an answer
/// being built (MGET's values).
#[derive(Debug)]
pub struct Lease {
    budget: Arc<Budget>,
    /// A connection's lease is registered, so that it can be closed when
    /// it is the largest.
    holder: Option<Arc<Holder>>,
    /// Bytes the lease covers, free ones included.
    covered: u64,
    /// Bytes of `covered` charged to the budget.
    charged: u64,
    free: u64,
}

impl Lease {
    /// A connection's lease: its first [`FREE_BYTES`] are not charged,
    /// and it may be told to close ([`Lease::cut`]).
    pub fn connection(budget: &Arc<Budget>) -> Lease {
        let holder = Arc::new(Holder {
            id: budget.next_id.fetch_add(1, Ordering::Relaxed),
            held: AtomicU64::new(0),
            cut: Flag::default(),
        });
        budget.holders.lock().push(Arc::clone(&holder));
        let mut lease = Lease::with_free(budget, FREE_BYTES);
        lease.holder = Some(holder);
        lease
    }

    /// A lease where every byte counts (an answer being built).
    pub fn answer(budget: &Arc<Budget>) -> Lease {
        Lease::with_free(budget, 0)
    }

    fn with_free(budget: &Arc<Budget>, free: u64) -> Lease {
        Lease {
            budget: Arc::clone(budget),
            holder: None,
            covered: 0,
            charged: 0,
            free,
        }
    }

    /// Bytes the lease covers now.
    pub fn covered(&self) -> u64 {
        self.covered
    }

    /// Makes the lease cover `bytes` in all: a growth is reserved first
    /// (refused, and nothing changed, if it does not fit), a shrink is
    /// given back.
    pub fn cover(&mut self, bytes: usize) -> Result<(), Exhausted> {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        let want = bytes.saturating_sub(self.free);
        if want > self.charged {
            if let Err(exhausted) = self.budget.take(want - self.charged) {
                if let Some(holder) = &self.holder {
                    self.budget.cut_largest(holder);
                }
                return Err(exhausted);
            }
        } else {
            self.budget.give(self.charged - want);
        }
        self.charged = want;
        self.covered = bytes;
        if let Some(holder) = &self.holder {
            holder.held.store(bytes, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Resolves once this connection was chosen to close because it held
    /// the most when another was refused (at once if it already was);
    /// never for a lease that is not a connection's.
    pub async fn cut(&self) {
        match &self.holder {
            Some(holder) => holder.cut.raised().await,
            None => std::future::pending().await,
        }
    }

    /// Covers `n` more bytes, if they fit.
    pub fn add(&mut self, n: usize) -> Result<(), Exhausted> {
        let n = usize::try_from(self.covered)
            .unwrap_or(usize::MAX)
            .saturating_add(n);
        self.cover(n)
    }

    /// Covers `bytes` in all even past the limit: for a buffer that has
    /// already grown (the estimate of an answer's size was short).
    pub fn cover_allocated(&mut self, bytes: usize) {
        if self.cover(bytes).is_err() {
            let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
            let want = bytes.saturating_sub(self.free);
            self.budget.force(want.saturating_sub(self.charged));
            self.charged = want.max(self.charged);
            self.covered = bytes;
            if let Some(holder) = &self.holder {
                holder.held.store(bytes, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.budget.give(self.charged);
        if let Some(holder) = &self.holder {
            self.budget.holders.lock().retain(|h| h.id != holder.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_limit_and_come_back_on_drop() {
        let budget = Arc::new(Budget::new(100_000));
        let mut a = Lease::connection(&budget);
        // The free part costs nothing.
        a.cover(FREE_BYTES as usize).unwrap();
        assert_eq!(budget.used(), 0);
        a.cover(FREE_BYTES as usize + 60_000).unwrap();
        assert_eq!(budget.used(), 60_000);
        let mut b = Lease::answer(&budget);
        let refused = b.cover(50_000).unwrap_err();
        assert_eq!((refused.asked, refused.used), (50_000, 60_000));
        assert_eq!(b.covered(), 0, "a refused reservation changes nothing");
        b.add(40_000).unwrap();
        assert_eq!(budget.used(), 100_000);
        assert!(b.add(1).is_err());
        // Shrinking gives back; dropping gives back the rest.
        a.cover(0).unwrap();
        assert_eq!(budget.used(), 40_000);
        drop(b);
        assert_eq!(budget.used(), 0);
        // Bytes already allocated are counted even past the limit.
        let mut c = Lease::answer(&budget);
        c.cover_allocated(150_000);
        assert_eq!(budget.used(), 150_000);
        assert!(Lease::answer(&budget).add(1).is_err());
        drop(c);
        drop(a);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_refusal_closes_the_largest_connection() {
        let budget = Arc::new(Budget::new(100_000));
        let free = FREE_BYTES as usize;
        let mut big = Lease::connection(&budget);
        big.cover(free + 70_000).unwrap();
        let mut small = Lease::connection(&budget);
        small.cover(free + 20_000).unwrap();
        let mut asking = Lease::connection(&budget);
        assert!(asking.cover(free + 20_000).is_err());
        // The largest is told, at once; the others are not.
        tokio::time::timeout(std::time::Duration::from_secs(5), big.cut())
            .await
            .expect("the largest is cut");
        let not_cut = tokio::time::timeout(std::time::Duration::from_millis(10), small.cut());
        assert!(not_cut.await.is_err());
        // A refused lease that holds the most closes nobody.
        drop(big);
        let mut larger = Lease::connection(&budget);
        larger.cover(free + 70_000).unwrap();
        assert!(larger.cover(free + 90_000).is_err());
        let not_cut = tokio::time::timeout(std::time::Duration::from_millis(10), small.cut());
        assert!(not_cut.await.is_err());
    }
}
