//! The connection slots of one front end, so that nobody can hoard them:
//! at most `max_connections` connections at once, of which at most
//! `max_unauthenticated` have not completed their handshake (an accepted
//! HELLO with authentication on, a first request without).
//!
//! Admission policy, when a new connection arrives:
//! 1. if the handshake quota is full, the connection that has been in its
//!    handshake the longest is closed (`reason="unauthenticated"`): it is
//!    the nearest to its handshake timeout anyway;
//! 2. then, if every slot is taken, the connection idle the longest (no
//!    byte received for the longest time) is closed (`reason="slots_full"`);
//! 3. the new connection is admitted.
//!
//! Each closing is counted in `kvstore_connections_evicted_total`. A
//! closed connection gets a `TOO_MANY_CONNECTIONS` error (RESP: `-ERR`)
//! and ends at its next wait (a read, a write, its TLS handshake). Those
//! still ending count against the limit; when [`MAX_EVICTING`] are, the
//! new connection waits (the accept loop with it) until one has ended, so
//! the number of open sockets stays within the limit plus that margin. A
//! connection handed over to replication or backup is never chosen; when
//! every slot holds one, a new connection is refused.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::flag::Flag;
use crate::metrics::{Eviction, Metrics};

/// Connections closed to make room that may still be ending at once;
/// past it new connections are refused.
pub const MAX_EVICTING: usize = 64;

/// The slots of one front end.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    max_unauthenticated: usize,
    clock: Instant,
    next_id: AtomicU64,
    live: Mutex<Vec<Arc<Slot>>>,
    /// Signalled each time a slot is freed.
    freed: Notify,
}

/// What [`Slots::admit`] decided.
#[derive(Debug)]
pub enum Admission {
    Admitted(Taken),
    /// [`MAX_EVICTING`] connections are still ending: wait for
    /// [`Slots::freed`] and try again.
    Busy,
    /// Every slot holds a replication or backup stream.
    Full,
}

/// One admitted connection's place.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    clock: Instant,
    opened_ms: u64,
    /// Milliseconds since `clock` of the last byte received; `u64::MAX`
    /// for a connection that is never chosen (handed over).
    active_ms: AtomicU64,
    handshaken: AtomicBool,
    evicted: Flag,
}

impl Slot {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Bytes arrived: the connection is not idle.
    pub fn touch(&self) {
        if self.active_ms.load(Relaxed) != u64::MAX {
            self.active_ms.store(self.now_ms(), Relaxed);
        }
    }

    /// The handshake is complete: the connection leaves the quota.
    pub fn handshake_done(&self) {
        self.handshaken.store(true, Relaxed);
    }

    pub fn is_handshaken(&self) -> bool {
        self.handshaken.load(Relaxed)
    }

    /// The connection stops being request/answer (replication, backup):
    /// it is never chosen to make room.
    pub fn pin(&self) {
        self.handshake_done();
        self.active_ms.store(u64::MAX, Relaxed);
    }

    /// Resolves once this connection was chosen to make room (at once
    /// if it already was).
    pub fn evicted(&self) -> impl Future<Output = ()> + Send + '_ {
        self.evicted.raised()
    }

    fn is_evicted(&self) -> bool {
        self.evicted.is_raised()
    }

    fn evict(&self) {
        self.evicted.raise();
    }
}

/// A taken slot; freed on drop.
#[derive(Debug)]
pub struct Taken {
    slots: Arc<Slots>,
    slot: Arc<Slot>,
}

impl std::ops::Deref for Taken {
    type Target = Slot;
    fn deref(&self) -> &Slot {
        &self.slot
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        let id = self.slot.id;
        self.slots.live.lock().retain(|s| s.id != id);
        self.slots.freed.notify_one();
    }
}

impl Slots {
    /// `max_unauthenticated` is capped at `max`.
    pub fn new(max: usize, max_unauthenticated: usize) -> Slots {
        Slots {
            max,
            max_unauthenticated: max_unauthenticated.min(max),
            clock: Instant::now(),
            next_id: AtomicU64::new(0),
            live: Mutex::new(Vec::new()),
            freed: Notify::new(),
        }
    }

    /// Resolves when a slot has been freed (perhaps before this call).
    pub async fn freed(&self) {
        self.freed.notified().await;
    }

    /// Admits a new connection by the policy above.
    pub fn admit(self: &Arc<Self>, metrics: &Metrics) -> Admission {
        let mut live = self.live.lock();
        let mut evicting = live.iter().filter(|s| s.is_evicted()).count();
        let waiting = |s: &&Arc<Slot>| !s.is_evicted() && !s.is_handshaken();
        if live.iter().filter(waiting).count() >= self.max_unauthenticated {
            if evicting >= MAX_EVICTING {
                return Admission::Busy;
            }
            if let Some(oldest) = live.iter().filter(waiting).min_by_key(|s| s.opened_ms) {
                oldest.evict();
                evicting += 1;
                metrics.connection_evicted(Eviction::Unauthenticated);
            }
        }
        let open = |s: &&Arc<Slot>| !s.is_evicted();
        if live.iter().filter(open).count() >= self.max {
            if evicting >= MAX_EVICTING {
                return Admission::Busy;
            }
            let idlest = live
                .iter()
                .filter(open)
                .min_by_key(|s| s.active_ms.load(Relaxed));
            match idlest {
                // Every slot holds a replication or backup stream.
                Some(s) if s.active_ms.load(Relaxed) == u64::MAX => return Admission::Full,
                Some(s) => {
                    s.evict();
                    metrics.connection_evicted(Eviction::SlotsFull);
                }
                None => return Admission::Full,
            }
        }
        let now = u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let slot = Arc::new(Slot {
            id: self.next_id.fetch_add(1, Relaxed),
            clock: self.clock,
            opened_ms: now,
            active_ms: AtomicU64::new(now),
            handshaken: AtomicBool::new(false),
            evicted: Flag::default(),
        });
        live.push(Arc::clone(&slot));
        Admission::Admitted(Taken {
            slots: Arc::clone(self),
            slot,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(slots: &Arc<Slots>, metrics: &Metrics) -> Taken {
        match slots.admit(metrics) {
            Admission::Admitted(taken) => taken,
            other => panic!("not admitted: {other:?}"),
        }
    }

    #[test]
    fn the_oldest_waiting_then_the_idlest_make_room() {
        let metrics = Metrics::new();
        let slots = Arc::new(Slots::new(3, 2));
        let a = admitted(&slots, &metrics);
        let b = admitted(&slots, &metrics);
        // The handshake quota (2) is full: the oldest waiting one goes.
        let c = admitted(&slots, &metrics);
        assert!(a.is_evicted() && !b.is_evicted());
        drop(a);
        b.handshake_done();
        c.handshake_done();
        std::thread::sleep(std::time::Duration::from_millis(5));
        c.touch();
        let d = admitted(&slots, &metrics);
        assert!(!b.is_evicted() && !c.is_evicted());
        // All three slots taken: b has been idle the longest.
        d.handshake_done();
        d.touch();
        let _e = admitted(&slots, &metrics);
        assert!(b.is_evicted() && !c.is_evicted() && !d.is_evicted());
        // A pinned connection is never chosen: with every slot pinned, a
        // new connection is refused.
        drop(b);
        for s in [&c, &d, &_e] {
            s.pin();
        }
        assert!(matches!(slots.admit(&metrics), Admission::Full));
    }
}
