//! The wall clock that key expiry is measured on.
//!
//! Expiry times are absolute: milliseconds since the Unix epoch, stored in
//! the record and shipped to replicas as they are, so every node compares
//! them with its own wall clock (see docs/REPLICATION.md on clock skew).
//! The engine reads the clock through a [`Clock`] handle in its options:
//! the system clock in production, a [`ManualClock`] that a test moves by
//! hand, so that tests of expiry never sleep.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the engine reads the time. Cheap to clone.
#[derive(Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system's wall clock (`CLOCK_REALTIME`): the default.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// Milliseconds since the Unix epoch. A system clock set before 1970
    /// reads as 0.
    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            Some(ms) => ms.load(Ordering::Acquire),
            None => system_now_ms(),
        }
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.manual {
            Some(ms) => write!(f, "Clock::Manual({} ms)", ms.load(Ordering::Acquire)),
            None => f.write_str("Clock::System"),
        }
    }
}

/// The system wall clock in milliseconds since the Unix epoch.
pub fn system_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A clock that only moves when told to, for tests.
#[derive(Debug, Clone)]
pub struct ManualClock {
    ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock {
            ms: Arc::new(AtomicU64::new(start_ms)),
        }
    }

    /// The handle to put in the engine's options.
    pub fn clock(&self) -> Clock {
        Clock {
            manual: Some(self.ms.clone()),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::Acquire)
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |ms| {
                Some(ms.saturating_add(by))
            })
            .expect("the update never declines");
    }

    /// Sets the clock to `ms` (also backwards, to test a clock step).
    pub fn set(&self, ms: u64) {
        self.ms.store(ms, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let manual = ManualClock::new(1_000);
        let clock = manual.clock();
        assert_eq!(clock.now_ms(), 1_000);
        manual.advance(Duration::from_millis(250));
        assert_eq!(clock.clone().now_ms(), 1_250);
        manual.set(7);
        assert_eq!(clock.now_ms(), 7);
        manual.set(u64::MAX - 1);
        manual.advance(Duration::from_secs(1));
        assert_eq!(clock.now_ms(), u64::MAX);
    }

    #[test]
    fn the_system_clock_is_after_2020() {
        assert!(Clock::system().now_ms() > 1_577_836_800_000);
    }
}
