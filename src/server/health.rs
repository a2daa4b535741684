//! Liveness and readiness state, read by `/healthz` and `/readyz`.
//!
//! Ready means: the engine is open (index loaded), the node is not
//! shutting down, and every registered extra condition holds. Replication
//! registers "replica connected to its master" here later through
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
