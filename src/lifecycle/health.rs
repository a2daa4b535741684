//! Liveness and readiness state, read by `/healthz` and `/readyz`.
//!
//! Ready means: the engine is open (index loaded) and takes writes (it is
//! not poisoned), the node is not shutting down, and every registered
//! extra condition holds. Replication registers "replica connected to its
//! master" here through [`Health::set_replication_ready`].
//!
//! Live means: the process can still do its job or get back to it on its
//! own. Only an engine that refuses writes until a restart makes it fail:
//! a poison that clears by itself (a full disk that gets room again)
//! leaves the node live, so the kubelet does not restart a node that can
//! still serve reads and is recovering.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// Whether the storage engine takes writes, as `/readyz` and `/healthz`
/// see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EngineWrites {
    Taken = 0,
    /// Poisoned by a failed write or fsync; it resumes on its own once the
    /// disk takes writes again.
    RefusedForNow = 1,
    /// Poisoned by something only a restart clears.
    RefusedUntilRestart = 2,
}

/// Readiness flags; all start "not ready" except replication, which only a
/// replica turns off.
#[derive(Debug)]
pub struct Health {
    engine_open: AtomicBool,
    engine_writes: AtomicU8,
    stopping: AtomicBool,
    replication_ready: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            engine_open: AtomicBool::new(false),
            engine_writes: AtomicU8::new(EngineWrites::Taken as u8),
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

    /// Whether the engine takes writes now.
    pub fn set_engine_writes(&self, writes: EngineWrites) {
        self.engine_writes.store(writes as u8, Ordering::Release);
    }

    fn engine_writes(&self) -> u8 {
        self.engine_writes.load(Ordering::Acquire)
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
        } else if self.engine_writes() != EngineWrites::Taken as u8 {
            Err("the storage engine refuses writes (poisoned: a write or fsync failed)")
        } else if !self.replication_ready.load(Ordering::Acquire) {
            Err("replica not connected to its master")
        } else {
            Ok(())
        }
    }

    /// `Ok(())` while the process can serve or recover on its own, else
    /// why not (one short line for `/healthz`).
    pub fn liveness(&self) -> Result<(), &'static str> {
        if self.engine_writes() == EngineWrites::RefusedUntilRestart as u8 {
            Err("the storage engine refuses writes until a restart")
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

    #[test]
    fn a_poisoned_engine_is_not_ready_and_live_unless_only_a_restart_helps() {
        let h = Health::default();
        h.set_engine_open();
        assert_eq!((h.readiness(), h.liveness()), (Ok(()), Ok(())));
        h.set_engine_writes(EngineWrites::RefusedForNow);
        assert!(h.readiness().is_err());
        assert_eq!(h.liveness(), Ok(()));
        h.set_engine_writes(EngineWrites::RefusedUntilRestart);
        assert!(h.readiness().is_err());
        assert!(h.liveness().is_err());
        h.set_engine_writes(EngineWrites::Taken);
        assert_eq!((h.readiness(), h.liveness()), (Ok(()), Ok(())));
    }
}
