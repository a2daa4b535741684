//! Automatic failover: the node's role taken from a coordinator
//! (`--coordinator etcd|kubernetes`, docs/FAILOVER.md) instead of
//! `--role`.
//!
//! Every node starts as a candidate replica of nobody. The HA loop
//! ([`run`]) then, over and over:
//! - follows the holder the coordinator shows (its advertised address),
//!   never below the holder's epoch (the follower refuses a master whose
//!   epoch is below it);
//! - when nobody holds leadership, stops following (so its newest local
//!   epoch is final) and campaigns with that epoch; a won term's epoch,
//!   issued by the coordinator as `max(stored, local) + 1`, is written to
//!   EPOCHS before the first write, and only then does the node take
//!   writes. No node picks an epoch itself;
//! - as master, renews every TTL/3; the term ends on `NotLeader` or when
//!   the fence deadline passes, and the node goes back to being a
//!   candidate (resigning first, so another may campaign at once).
//!
//! The loop's timing does not make the node safe: the write path does.
//! Before appending a write and again before each OK it checks the term's
//! fence ([`Ha::may_write`], one clock read and one atomic load); past
//! the deadline a new write is refused ([`Ha::refusal`]) and a write
//! already appended gets `FATE_UNKNOWN`, never OK.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tracing::{debug, info, warn};

use super::Node;
use crate::coordinator::{
    self, Backend, Campaign, CampaignRule, Coordinator, Fence, Holder, HolderWatch, Leadership,
};
use crate::protocol::{ErrorCode, Response};

/// The node's coordinator session and what the write path needs of it.
pub struct Ha {
    coordinator: Box<dyn Coordinator>,
    node_id: String,
    /// How often a candidate looks again without a watch event, and how
    /// long it waits after a failed request: a third of the TTL.
    period: Duration,
    /// The current term's fence while this node is the master.
    fence: Mutex<Option<Fence>>,
    /// The holder as last seen, for REDIRECT once this node is fenced.
    holder: Mutex<Option<Holder>>,
}

impl Ha {
    /// Opens the coordinator session of `settings` (its advertised address
    /// is where this node takes clients).
    pub async fn connect(settings: &coordinator::Settings) -> coordinator::Result<Ha> {
        let period = settings.timing()?.ttl / 3;
        let coordinator = coordinator::connect(settings).await?;
        Ok(Ha {
            coordinator,
            node_id: settings.node_id.clone(),
            period,
            fence: Mutex::new(None),
            holder: Mutex::new(None),
        })
    }

    pub fn backend(&self) -> Backend {
        self.coordinator.backend()
    }

    /// True while this node holds a term whose fence deadline has not
    /// passed: it may append a write and send an OK.
    pub fn may_write(&self) -> bool {
        self.fence.lock().as_ref().is_some_and(Fence::is_valid_now)
    }

    /// The answer to a write this node may not take: REDIRECT to another
    /// holder the coordinator showed, else READ_ONLY ("not the master").
    pub fn refusal(&self) -> Response {
        match self.holder.lock().as_ref() {
            Some(h) if h.node_id != self.node_id && !h.addr.is_empty() => Response::Redirect {
                master: h.addr.clone(),
            },
            _ => not_the_master(),
        }
    }
}

/// The documented "not the master" error: no master is known to this node
/// (none elected yet, or its own term just ended).
pub fn not_the_master() -> Response {
    Response::error(
        ErrorCode::READ_ONLY,
        "this node is not the master and knows no master yet (an election is under way); retry shortly",
    )
}

/// Runs the HA loop until the node shuts down; a master resigns then, so
/// another node can take over at once.
pub async fn run(node: Arc<Node>, ha: Arc<Ha>) {
    let shutdown = node.shutdown.wait();
    tokio::pin!(shutdown);
    let mut watch: Option<HolderWatch> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            () = candidate(&node, &ha, &mut watch) => {}
        }
    }
    *ha.fence.lock() = None;
    if ha.coordinator.leadership().is_some() {
        match ha.coordinator.resign().await {
            Ok(()) => info!("resigned leadership for the shutdown"),
            Err(e) => {
                warn!("could not resign leadership at shutdown ({e}); it expires with its lease")
            }
        }
    }
}

/// One round as a candidate: follow the holder, or campaign when there is
/// none (and lead while the won term lasts), then wait for a change.
async fn candidate(node: &Arc<Node>, ha: &Ha, watch: &mut Option<HolderWatch>) {
    if watch.is_none() {
        match ha.coordinator.watch_holder().await {
            Ok(w) => *watch = Some(w),
            Err(e) => debug!("cannot watch the leader ({e}); polling"),
        }
    }
    match ha.coordinator.holder().await {
        Err(e) => {
            warn!("cannot read the leader from the coordinator: {e}");
            tokio::time::sleep(ha.period).await;
            return;
        }
        Ok(Some(holder)) => follow(node, ha, holder).await,
        Ok(None) => {
            *ha.holder.lock() = None;
            // Stop following first: the local epoch must not move between
            // the campaign and the first write of the term.
            node.replication.stand_by().await;
            let local = node.engine.current_epoch();
            match ha.coordinator.campaign(local, CampaignRule::Anyone).await {
                Ok(Campaign::Won(term)) => return lead(node, ha, term).await,
                Ok(Campaign::Lost(Some(holder))) => follow(node, ha, holder).await,
                Ok(Campaign::Lost(None)) => return,
                Err(e) => {
                    warn!("campaign failed: {e}");
                    tokio::time::sleep(ha.period).await;
                    return;
                }
            }
        }
    }
    // Wait for the holder to change, or look again after a period.
    let changed = async {
        match watch.as_mut() {
            Some(w) => {
                if w.changed().await.is_none() {
                    *watch = None;
                }
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = changed => {}
        () = tokio::time::sleep(ha.period) => {}
    }
}

/// Follows `holder`: never a master below its epoch.
async fn follow(node: &Arc<Node>, ha: &Ha, holder: Holder) {
    *ha.holder.lock() = Some(holder.clone());
    if holder.node_id == ha.node_id {
        // A term of an earlier process with this node id: wait for it to
        // expire like any other candidate.
        return;
    }
    node.replication.set_epoch_floor(holder.epoch);
    if node.replication.following().await.as_deref() != Some(holder.addr.as_str()) {
        info!(master = %holder.addr, node = %holder.node_id, epoch = holder.epoch, "following the elected master");
        node.replication.replicate(holder.addr).await;
    }
}

/// Acts as the master for `term`: its epoch goes to EPOCHS first, then
/// writes are taken; renews every TTL/3 until the term ends, then stops
/// acknowledging and resigns.
async fn lead(node: &Arc<Node>, ha: &Ha, term: Leadership) {
    let epoch = term.epoch();
    *ha.holder.lock() = Some(term.holder.clone());
    // The fence is in place before the role says master, so no write is
    // taken outside the term.
    *ha.fence.lock() = Some(term.fence.clone());
    if let Err(e) = node.replication.promote_in(Some(epoch)).await {
        warn!(
            epoch,
            "elected, but cannot begin the epoch ({e}); resigning"
        );
        *ha.fence.lock() = None;
        let _ = ha.coordinator.resign().await;
        node.replication.stand_by().await;
        tokio::time::sleep(ha.period).await;
        return;
    }
    info!(epoch, ttl = ?term.ttl, "elected master");
    let why = loop {
        let renewal = async {
            tokio::time::sleep(term.renew_every()).await;
            ha.coordinator.renew().await
        };
        tokio::select! {
            result = renewal => match result {
                Ok(()) => {}
                Err(coordinator::Error::NotLeader { .. }) => break "the coordinator shows the term over",
                // The deadline stays where it was and runs out by itself
                // unless a later renewal gets through.
                Err(e) => warn!(epoch, "lease renewal failed: {e}"),
            },
            () = tokio::time::sleep(term.fence.remaining()) => {
                if !term.fence.is_valid_now() {
                    break "the fence deadline passed before a renewal got through";
                }
            }
        }
    };
    warn!(
        epoch,
        "leadership lost ({why}): no more writes are acknowledged; rejoining as a replica"
    );
    *ha.fence.lock() = None;
    if let Err(e) = ha.coordinator.resign().await {
        debug!("resign after losing the term: {e}");
    }
    node.replication.stand_by().await;
}
