//! The holder's fence: until when it may still act as the master.
//!
//! Invariants:
//! - `deadline = send time of the last successful renewal (read BEFORE the
//!   request left) + the TTL the coordinator actually granted − margin`, on
//!   [`BootInstant`]. The coordinator starts its own expiry no earlier than
//!   it receives the request, so this node stops acting before anyone else
//!   can be handed leadership (docs/FAILOVER.md, "The timing rule").
//! - A deadline only moves forward while the term lasts; once the term is
//!   revoked (lost, resigned) it is at most "now" and never moves again.
//! - Checking it is one clock read and one atomic load: the node calls
//!   [`Fence::is_valid_now`] before appending a write and before each OK.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::clock::BootInstant;
use super::Holder;

/// A cheap, clonable view of one term's deadline. Every clone sees the
/// renewals and the revocation.
#[derive(Debug, Clone)]
pub struct Fence {
    inner: Arc<FenceState>,
}

#[derive(Debug)]
struct FenceState {
    /// Nanoseconds since boot ([`BootInstant`]); 0 = never valid.
    deadline: AtomicU64,
    revoked: AtomicBool,
}

impl Fence {
    /// A fence valid until `send + ttl − margin`.
    pub fn new(send: BootInstant, ttl: Duration, margin: Duration) -> Fence {
        let fence = Fence {
            inner: Arc::new(FenceState {
                deadline: AtomicU64::new(0),
                revoked: AtomicBool::new(false),
            }),
        };
        fence.extend(send, ttl, margin);
        fence
    }

    /// True while this term may still append and acknowledge writes.
    pub fn is_valid_now(&self) -> bool {
        BootInstant::now() < self.deadline()
    }

    /// The instant past which this node must not act as the master.
    pub fn deadline(&self) -> BootInstant {
        BootInstant::from_nanos(self.inner.deadline.load(Ordering::Acquire))
    }

    /// Time left before the deadline (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.deadline()
            .saturating_duration_since(BootInstant::now())
    }

    /// Whether the term was ended (lost or resigned), as opposed to merely
    /// running out of time before a renewal got through.
    pub fn is_revoked(&self) -> bool {
        self.inner.revoked.load(Ordering::Acquire)
    }

    /// Records a successful renewal whose request left at `send`. Backends
    /// call this under the lock that serialises their renewals.
    pub(crate) fn extend(&self, send: BootInstant, ttl: Duration, margin: Duration) {
        if self.is_revoked() {
            return;
        }
        let new = send.saturating_add(ttl).saturating_sub(margin).as_nanos();
        self.inner.deadline.fetch_max(new, Ordering::AcqRel);
    }

    /// Ends the term now: the deadline becomes at most the present.
    #[cfg_attr(not(any(feature = "etcd", feature = "kubernetes")), allow(dead_code))]
    pub(crate) fn revoke(&self) {
        self.inner.revoked.store(true, Ordering::Release);
        self.inner
            .deadline
            .fetch_min(BootInstant::now().as_nanos(), Ordering::AcqRel);
    }
}

/// One term of leadership won by [`super::Coordinator::campaign`].
#[derive(Debug, Clone)]
pub struct Leadership {
    /// This node, its advertised address and the epoch the coordinator
    /// issued for the term.
    pub holder: Holder,
    /// The TTL the coordinator granted (may be longer than asked: etcd
    /// rounds to whole seconds and has a minimum).
    pub ttl: Duration,
    /// Subtracted from every deadline (docs/FAILOVER.md).
    pub margin: Duration,
    pub fence: Fence,
}

impl Leadership {
    /// The epoch to write to EPOCHS before the first write of the term.
    pub fn epoch(&self) -> u32 {
        self.holder.epoch
    }

    /// How often to renew: a third of the granted TTL, so two renewals in a
    /// row may fail before the deadline passes.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// See [`Fence::is_valid_now`].
    pub fn is_valid_now(&self) -> bool {
        self.fence.is_valid_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_send_plus_ttl_minus_margin() {
        let send = BootInstant::now();
        let fence = Fence::new(send, Duration::from_secs(5), Duration::from_millis(500));
        assert_eq!(
            fence.deadline(),
            send.saturating_add(Duration::from_millis(4500))
        );
        assert!(fence.is_valid_now());
        assert!(fence.remaining() <= Duration::from_millis(4500));
    }

    #[test]
    fn an_old_send_time_does_not_pull_the_deadline_back() {
        let send = BootInstant::now();
        let fence = Fence::new(send, Duration::from_secs(5), Duration::ZERO);
        let before = fence.deadline();
        fence.extend(
            send.saturating_sub(Duration::from_secs(3)),
            Duration::from_secs(5),
            Duration::ZERO,
        );
        assert_eq!(fence.deadline(), before);
        fence.extend(
            send.saturating_add(Duration::from_secs(1)),
            Duration::from_secs(5),
            Duration::ZERO,
        );
        assert_eq!(
            fence.deadline(),
            before.saturating_add(Duration::from_secs(1))
        );
    }

    #[test]
    fn a_margin_larger_than_the_ttl_is_never_valid() {
        let fence = Fence::new(
            BootInstant::now(),
            Duration::from_secs(1),
            Duration::from_secs(2),
        );
        assert!(!fence.is_valid_now());
    }

    #[test]
    fn revoked_is_past_and_stays_past() {
        let fence = Fence::new(BootInstant::now(), Duration::from_secs(60), Duration::ZERO);
        let clone = fence.clone();
        fence.revoke();
        assert!(!clone.is_valid_now());
        assert!(clone.is_revoked());
        assert!(clone.deadline() <= BootInstant::now());
        fence.extend(BootInstant::now(), Duration::from_secs(60), Duration::ZERO);
        assert!(
            !clone.is_valid_now(),
            "a renewal after revocation must not revive the term"
        );
    }
}
