//! A session's current term, shared by the backends: the [`Leadership`]
//! handed out, the backend's own name for the term at the coordinator, and
//! a copy of the Leadership for the synchronous
//! [`super::Coordinator::leadership`].
//!
//! Invariant: whenever a term leaves the slot because it is over, its
//! fence is revoked first ([`Terms::lose`]).

use tokio::sync::{Mutex, MutexGuard};

use super::{Error, Leadership};

/// One term: what every backend hands out, plus the backend's `T`.
pub(crate) struct Term<T> {
    pub leadership: Leadership,
    pub at: T,
}

pub(crate) type Slot<T> = Option<Term<T>>;

pub(crate) struct Terms<T> {
    /// Serialises the session's writes of leadership.
    slot: Mutex<Slot<T>>,
    current: parking_lot::Mutex<Option<Leadership>>,
}

impl<T> Terms<T> {
    pub fn new() -> Terms<T> {
        Terms {
            slot: Mutex::new(None),
            current: parking_lot::Mutex::new(None),
        }
    }

    pub async fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        self.slot.lock().await
    }

    pub fn current(&self) -> Option<Leadership> {
        self.current.lock().clone()
    }

    /// Starts a term.
    pub fn begin(&self, slot: &mut Slot<T>, leadership: Leadership, at: T) {
        *self.current.lock() = Some(leadership.clone());
        *slot = Some(Term { leadership, at });
    }

    /// Ends the term (fence first) and says so as an error.
    pub fn lose(&self, slot: &mut Slot<T>) -> Error {
        let epoch = slot.as_ref().map(|t| t.leadership.epoch());
        if let Some(term) = slot.take() {
            term.leadership.fence.revoke();
        }
        *self.current.lock() = None;
        Error::NotLeader { epoch }
    }

    /// Campaign's first step. `Ok`: this session still holds a term whose
    /// fence holds. `Err`: it holds none; a term that ran out of time was
    /// ended, and its `T` is handed back for cleaning up.
    pub fn still_held(&self, slot: &mut Slot<T>) -> Result<Leadership, Option<T>> {
        if let Some(term) = slot.as_ref() {
            if term.leadership.is_valid_now() {
                return Ok(term.leadership.clone());
            }
        }
        let old = slot.take();
        if let Some(term) = &old {
            term.leadership.fence.revoke();
        }
        *self.current.lock() = None;
        Err(old.map(|t| t.at))
    }
}
