//! Feeds a holder watch from etcd: a watch on the `leader` key where every
//! event, and every [`WATCH_RESYNC`], triggers a fresh read; the value sent
//! is always what a read returns, and no event is parsed.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::WatchOptions;
use tokio::sync::watch;

use super::pool::Pool;
use crate::coordinator::{decode, Holder, Result};

/// How often a holder watch re-reads the key even without an event, in
/// case a watch stream hangs without breaking.
const WATCH_RESYNC: Duration = Duration::from_secs(5);

/// Feeds one [`crate::coordinator::HolderWatch`] until its receiver is
/// dropped.
pub(super) struct Follower {
    pub pool: Arc<Pool>,
    pub key: String,
}

impl Follower {
    pub async fn run(self, tx: watch::Sender<Option<Holder>>) {
        let backoff = self.pool.timeout.min(Duration::from_secs(1));
        while !tx.is_closed() {
            if let Err(e) = self.follow(&tx).await {
                tracing::debug!(error = %e, "etcd holder watch restarting");
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = tx.closed() => return,
            }
        }
    }

    /// Reads the key, publishes it, returns its revision.
    async fn refresh(&self, tx: &watch::Sender<Option<Holder>>) -> Result<i64> {
        let (at, mut c) = self.pool.pick();
        let resp = self
            .pool
            .request(at, "get", c.get(self.key.as_str(), None))
            .await?;
        let holder = match resp.kvs().first() {
            Some(kv) => Some(decode::<Holder>(&self.key, kv.value())?),
            None => None,
        };
        tx.send_if_modified(|v| {
            let changed = *v != holder;
            *v = holder;
            changed
        });
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    async fn follow(&self, tx: &watch::Sender<Option<Holder>>) -> Result<()> {
        let revision = self.refresh(tx).await?;
        let opts = WatchOptions::new().with_start_revision(revision.saturating_add(1));
        let (at, mut c) = self.pool.pick();
        let watch = c.watch(self.key.as_str(), Some(opts));
        let mut stream = self.pool.request(at, "watch", watch).await?;
        loop {
            tokio::select! {
                message = stream.message() => match message? {
                    Some(resp) if resp.canceled() => return Ok(()),
                    Some(resp) if resp.events().is_empty() => {}
                    Some(_) => { self.refresh(tx).await?; }
                    None => return Ok(()),
                },
                _ = tokio::time::sleep(WATCH_RESYNC) => { self.refresh(tx).await?; }
                _ = tx.closed() => return Ok(()),
            }
        }
    }
}
