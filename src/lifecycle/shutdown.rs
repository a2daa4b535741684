//! The shutdown signal shared by every task of a server.
//!
//! [`ShutdownTrigger::trigger`] is called once (on SIGTERM/SIGINT, or by a
//! test); every clone of [`Shutdown`] then sees it. Connection tasks select
//! on [`Shutdown::wait`] between requests so that a request in flight is
//! answered before the connection closes.

use tokio::sync::watch;

/// Fires the shutdown. Dropping it without triggering counts as triggering,
/// so a server whose owner went away stops instead of hanging.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// Observes the shutdown. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// Creates a connected trigger and observer.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    /// Starts the shutdown; idempotent.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }
}

impl Shutdown {
    /// True once the shutdown has started.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow() || self.rx.has_changed().is_err()
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
