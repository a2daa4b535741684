//! The clock that fencing is measured on: `CLOCK_BOOTTIME`.
//!
//! Invariants:
//! - Never wall-clock time: a step of the system clock (NTP, an operator)
//!   must not extend or shorten a lease.
//! - Counts time while the machine is suspended (unlike `CLOCK_MONOTONIC`),
//!   because the coordinator's own clock keeps running while this machine
//!   sleeps: a lease that expired meanwhile must look expired on waking.
//! - Only compared on the machine that read it; never sent to another node.

use std::time::Duration;

use rustix::time::{clock_gettime, ClockId};

/// A point on this machine's `CLOCK_BOOTTIME`, in nanoseconds since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BootInstant(u64);

impl BootInstant {
    /// Boot itself: earlier than any reading, so a deadline there has passed.
    pub const ZERO: BootInstant = BootInstant(0);

    /// Reads the clock (a vDSO call on Linux: cheap enough for every write).
    pub fn now() -> BootInstant {
        let t = clock_gettime(ClockId::Boottime);
        // The kernel never returns a negative boot time; clamp rather than
        // trust a cast.
        let secs = u64::try_from(t.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
        BootInstant(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
    }

    /// Nanoseconds since boot (for an atomic).
    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// The instant `nanos` nanoseconds after boot.
    pub fn from_nanos(nanos: u64) -> BootInstant {
        BootInstant(nanos)
    }

    /// `self + d`, saturating at the end of time.
    pub fn saturating_add(self, d: Duration) -> BootInstant {
        BootInstant(self.0.saturating_add(duration_nanos(d)))
    }

    /// `self - d`, saturating at boot.
    pub fn saturating_sub(self, d: Duration) -> BootInstant {
        BootInstant(self.0.saturating_sub(duration_nanos(d)))
    }

    /// How long after `earlier` this instant is (zero if it is not later).
    pub fn saturating_duration_since(self, earlier: BootInstant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Time since this instant (zero if it lies in the future).
    pub fn elapsed(self) -> Duration {
        BootInstant::now().saturating_duration_since(self)
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_backwards_and_follows_real_time() {
        let a = BootInstant::now();
        std::thread::sleep(Duration::from_millis(20));
        let b = BootInstant::now();
        assert!(b >= a);
        let gap = b.saturating_duration_since(a);
        assert!(gap >= Duration::from_millis(20), "{gap:?}");
        assert!(a > BootInstant::ZERO);
    }

    #[test]
    fn arithmetic_saturates() {
        let t = BootInstant::from_nanos(5);
        assert_eq!(t.saturating_sub(Duration::from_secs(1)), BootInstant::ZERO);
        assert_eq!(
            BootInstant::from_nanos(u64::MAX).saturating_add(Duration::from_secs(1)),
            BootInstant::from_nanos(u64::MAX)
        );
        assert_eq!(
            t.saturating_add(Duration::from_nanos(10))
                .saturating_duration_since(t),
            Duration::from_nanos(10)
        );
        assert_eq!(
            t.saturating_duration_since(t.saturating_add(Duration::from_secs(1))),
            Duration::ZERO
        );
    }
}
