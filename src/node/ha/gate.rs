//! The master's write gate: lets a planned switchover stop new writes
//! and know when the last one already admitted has reached the log.
//!
//! Invariants:
//! - A client write enters the gate before it appends and leaves it once
//!   the append returned (its OK is decided later, by the fence alone: a
//!   write admitted before the pause may still be acknowledged).
//! - [`Gate::pause`] then [`Gate::drained`]: once `drained` is true, every
//!   write admitted is in the log and no other is admitted until
//!   [`Gate::resume`]. Both sides use sequentially consistent atomics, so
//!   a write either sees the pause or is counted in flight (the pattern of
//!   Dekker's algorithm); never neither.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

#[derive(Debug, Default)]
pub(crate) struct Gate {
    paused: AtomicBool,
    in_flight: AtomicUsize,
}

/// One admitted write; leaves the gate when dropped.
#[derive(Debug)]
pub struct Admitted<'a> {
    gate: &'a Gate,
}

impl Gate {
    /// Admits a write unless the gate is paused.
    pub fn enter(&self) -> Option<Admitted<'_>> {
        self.in_flight.fetch_add(1, SeqCst);
        if self.paused.load(SeqCst) {
            self.in_flight.fetch_sub(1, SeqCst);
            return None;
        }
        Some(Admitted { gate: self })
    }

    /// Admits no more writes.
    pub fn pause(&self) {
        self.paused.store(true, SeqCst);
    }

    /// Admits writes again.
    pub fn resume(&self) {
        self.paused.store(false, SeqCst);
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(SeqCst)
    }

    /// Paused, and every admitted write has left.
    pub fn drained(&self) -> bool {
        self.is_paused() && self.in_flight.load(SeqCst) == 0
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.gate.in_flight.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paused_gate_admits_nothing_and_drains_once_admitted_writes_leave() {
        let gate = Gate::default();
        let first = gate.enter().expect("open gate admits");
        gate.pause();
        assert!(gate.enter().is_none(), "paused gate admitted a write");
        assert!(!gate.drained(), "a write is still in flight");
        drop(first);
        assert!(gate.drained());
        gate.resume();
        assert!(!gate.drained());
        assert!(gate.enter().is_some());
    }
}
