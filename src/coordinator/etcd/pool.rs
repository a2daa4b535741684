//! The etcd clients of a session, one per endpoint.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::Client;

use crate::coordinator::{bounded, Result};

/// The backend's name in errors.
pub(super) const BACKEND: &str = "etcd";

/// One client per endpoint, and the one in use. etcd's members are
/// interchangeable (linearizable reads and writes go through the Raft
/// leader whichever member is asked), so any failed request moves the
/// next ones to the next endpoint: a dead member costs one failed request,
/// not one in every few (which a load-balanced channel over all endpoints
/// would keep sending to it).
pub(super) struct Pool {
    pub clients: Vec<Client>,
    pub current: AtomicUsize,
    pub timeout: Duration,
}

impl Pool {
    /// The client in use, and its index for [`Pool::rotate`].
    pub fn pick(&self) -> (usize, Client) {
        let at = self.current.load(Ordering::Acquire) % self.clients.len();
        (at, self.clients[at].clone())
    }

    /// Moves on from endpoint `at`, unless another request already did.
    pub fn rotate(&self, at: usize) {
        let next = (at + 1) % self.clients.len();
        let _ = self
            .current
            .compare_exchange(at, next, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Runs one request on the client picked as `at`, bounded in time;
    /// a failure moves later requests to the next endpoint.
    pub async fn request<T>(
        &self,
        at: usize,
        what: &'static str,
        fut: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        let result = bounded(BACKEND, what, self.timeout, fut).await;
        if result.is_err() {
            self.rotate(at);
        }
        result
    }
}
