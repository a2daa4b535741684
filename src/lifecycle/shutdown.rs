//! The shutdown signal shared by every task of a server.
//!
//! [`ShutdownTrigger::trigger`] is called once (on SIGTERM/SIGINT, or by a
//! test); every clone of [`Shutdown`] then sees it. Connection tasks select
//! on [`Shutdown::wait`] between requests so that a request in flight is
//! answered before the connection closes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// Fires the shutdown. Dropping it without triggering counts as triggering,
/// so a server whose owner went away stops instead of hanging.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
    fired: Arc<AtomicBool>,
}

/// Observes the shutdown. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
    /// The same news as `rx`, for [`Shutdown::is_triggered`], which a
    /// connection asks on every request: one load instead of the watch's
    /// lock.
    fired: Arc<AtomicBool>,
}

/// Creates a connected trigger and observer.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    let fired = Arc::new(AtomicBool::new(false));
    (
        ShutdownTrigger {
            tx,
            fired: fired.clone(),
        },
        Shutdown { rx, fired },
    )
}

impl ShutdownTrigger {
    /// Starts the shutdown; idempotent.
    pub fn trigger(&self) {
        self.fired.store(true, Ordering::Release);
        self.tx.send_replace(true);
    }
}

impl Drop for ShutdownTrigger {
    fn drop(&mut self) {
        self.fired.store(true, Ordering::Release);
    }
}

impl Shutdown {
    /// True once the shutdown has started.
    pub fn is_triggered(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Resolves once the shutdown has started. Cancel-safe: use it in
    /// `tokio::select!`.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means the trigger was dropped: treat it as a shutdown.
        let _ = rx.wait_for(|stopping| *stopping).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trigger_reaches_every_clone() {
        let (trigger, shutdown) = channel();
        let other = shutdown.clone();
        assert!(!other.is_triggered());
        trigger.trigger();
        other.wait().await;
        assert!(shutdown.is_triggered());
    }

    #[tokio::test]
    async fn dropped_trigger_counts_as_shutdown() {
        let (trigger, shutdown) = channel();
        drop(trigger);
        shutdown.wait().await;
        assert!(shutdown.is_triggered());
    }
}
