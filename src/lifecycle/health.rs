//! Liveness and readiness state, read by `/healthz` and `/readyz`.
//!
//! Ready means: the engine is open (index loaded), the node is not
//! shutting down, and every registered extra condition holds. Replication
//! registers "replica connected to its master" here through
//! [`Health::set_replication_ready`].

use std::sync::atomic::{AtomicBool, Ordering};

/// Readiness flags; all start "not ready" except replication, which only a
/// replica turns off.
#[derive(Debug)]
pub struct Health {
    engine_open: AtomicBool,
    stopping: AtomicBool,
    replication_ready: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            engine_open: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            replication_ready: AtomicBool::new(true),
        }
    }
}

impl Health {
    /// The engine finished opening.
    pub fn set_engine_open(&self) {
        self.engine_open.store(true, Ordering::Release);
    }

    /// Shutdown started: stop advertising readiness so load balancers drain.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// For a replica: whether it is connected to its master and following.
    pub fn set_replication_ready(&self, ready: bool) {
        self.replication_ready.store(ready, Ordering::Release);
    }

    /// `Ok(())` when ready, else why not (one short line for `/readyz`).
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.stopping.load(Ordering::Acquire) {
            Err("shutting down")
        } else if !self.engine_open.load(Ordering::Acquire) {
            Err("engine opening")
        } else if !self.replication_ready.load(Ordering::Acquire) {
            Err("replica not connected to its master")
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_open_following_and_not_stopping() {
        let h = Health::default();
        assert_eq!(h.readiness(), Err("engine opening"));
        h.set_engine_open();
        assert_eq!(h.readiness(), Ok(()));
        h.set_replication_ready(false);
        assert_eq!(h.readiness(), Err("replica not connected to its master"));
        h.set_replication_ready(true);
        h.set_stopping();
        assert_eq!(h.readiness(), Err("shutting down"));
    }
}
