//! Automatic failover: the node's role taken from a coordinator
//! (`--coordinator etcd|kubernetes`, docs/FAILOVER.md) instead of
//! `--role`.
//!
//! Every node starts as a candidate replica of nobody. The HA loop
//! ([`run`]) then, over and over:
//! - follows the holder the coordinator shows (its advertised address),
//!   never below the holder's epoch (the follower refuses a master whose
//!   epoch is below it);
//! - when nobody holds leadership, campaigns, unless this node cut a tail
//!   off its log that it has not fetched again from a master
//!   (`Engine::may_campaign`: it says so once in its log and in its
//!   published member state, and waits). It stops following first (so its
//!   newest local epoch is final). In sync mode only a member of the
//!   published in-sync set may win (`CampaignRule::InSyncOnly`); in async
//!   mode the most advanced live candidate campaigns at once and the
//!   others give it `--campaign-grace-ms` first ([`members`]). In sync
//!   mode a node listed in the set with another data directory than the
//!   one it runs on (emptied, restored) does not campaign either: it says
//!   so once in its log and in its published member state, follows the
//!   elected master like a new replica, and is listed again with its new
//!   directory once it has caught up. A won
//!   term's epoch, issued by the coordinator as `max(stored, local) + 1`,
//!   is written to EPOCHS before the first write, and only then does the
//!   node take writes. No node picks an epoch itself;
//! - as master ([`lead`]), renews every TTL/3 and, in sync mode, keeps the
//!   in-sync set published; the term ends on `NotLeader` or when the fence
//!   deadline passes, and the node goes back to being a candidate
//!   (resigning first, so another may campaign at once).
//!
//! Every node publishes its member state (role, epoch, log end, whether it
//! may campaign) every TTL/3 and whenever its role changes.
//!
//! The loop's timing does not make the node safe: the write path does.
//! Before appending a write and again before each OK it checks the term's
//! fence ([`Ha::may_write`], one clock read and one atomic load); past
//! the deadline a new write is refused ([`Ha::refusal`]) and a write
//! already appended gets `FATE_UNKNOWN`, never OK. In sync mode the OK
//! also waits until every member of the published in-sync set has the
//! write (`replication::in_sync`).

mod lead;
mod members;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tracing::{debug, info, warn};

use super::Node;
use crate::coordinator::{
    self, Backend, Campaign, CampaignRule, Coordinator, DataDir, Fence, Holder, HolderWatch, Member,
};
use crate::protocol::{ErrorCode, Response};
use crate::replication::Mode;

/// The failover rules' own settings (docs/CONFIGURATION.md).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Sync mode: a member of the in-sync set whose durable end stays
    /// behind the master's end of this long ago is dropped from the set
    /// (`--in-sync-max-lag-ms`, default 2 s).
    pub in_sync_max_lag: Duration,
    /// Async mode: how long a candidate that is not the most advanced one
    /// waits for it to take the vacant seat (`--campaign-grace-ms`,
    /// default 1 s).
    pub campaign_grace: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            in_sync_max_lag: Duration::from_secs(2),
            campaign_grace: Duration::from_secs(1),
        }
    }
}

/// The node's coordinator session and what the write path needs of it.
pub struct Ha {
    coordinator: Box<dyn Coordinator>,
    node_id: String,
    /// The data directory this node runs on (`DIR_ID`).
    dir: Option<DataDir>,
    /// Where this node takes clients (its published member address).
    addr: String,
    policy: Policy,
    /// How often a candidate looks again without a watch event, how long
    /// it waits after a failed request, how often member state is
    /// published: a third of the TTL.
    period: Duration,
    /// The current term's fence while this node is the master.
    fence: Mutex<Option<Fence>>,
    /// The holder as last seen, for REDIRECT once this node is fenced.
    holder: Mutex<Option<Holder>>,
    /// Said once per episode, not on every round.
    told_blocked: AtomicBool,
    told_not_in_sync: AtomicBool,
    /// Sync mode: why this node, listed in the in-sync set with another
    /// data directory, must not campaign (`None`: it is not). Set from the
    /// cluster record and from a campaign the coordinator refused.
    other_dir: Mutex<Option<String>>,
}

impl Ha {
    /// Opens the coordinator session of `settings` (its advertised address
    /// is where this node takes clients).
    pub async fn connect(
        settings: &coordinator::Settings,
        policy: Policy,
    ) -> coordinator::Result<Ha> {
        let period = settings.timing()?.ttl / 3;
        let coordinator = coordinator::connect(settings).await?;
        Ok(Ha {
            coordinator,
            node_id: settings.node_id.clone(),
            dir: settings.data_dir.clone(),
            addr: settings.advertise_addr.clone(),
            policy,
            period,
            fence: Mutex::new(None),
            holder: Mutex::new(None),
            told_blocked: AtomicBool::new(false),
            told_not_in_sync: AtomicBool::new(false),
            other_dir: Mutex::new(None),
        })
    }

    pub fn backend(&self) -> Backend {
        self.coordinator.backend()
    }

    /// This node's id in the coordinator.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// This node as a member of the in-sync set: its node id and the data
    /// directory it runs on.
    fn own_member(&self) -> Member {
        Member::new(&self.node_id, self.dir.as_ref().map(|d| d.id.clone()))
    }

    /// Sync mode: records whether the coordinator's record (or a refused
    /// campaign) shows this node listed with another data directory;
    /// says so once in the log when it starts.
    fn set_other_dir(&self, why: Option<String>) {
        let mut other = self.other_dir.lock();
        if let (Some(why), None) = (&why, other.as_ref()) {
            warn!("not campaigning for leadership: {why}; following the elected master as a new replica until it lists this directory (FAILOVER.md, \"Data-directory identity\")");
        }
        *other = why;
    }

    /// Sync mode: reads the cluster record and updates whether this node
    /// is listed with another data directory.
    async fn check_dir(&self) {
        match self.coordinator.cluster().await {
            Ok(Some(record)) => match record.admits(&self.node_id, self.dir.as_ref()) {
                Err(e @ coordinator::Error::OtherDirectory { .. }) => {
                    self.set_other_dir(Some(e.to_string()))
                }
                _ => self.set_other_dir(None),
            },
            Ok(None) => self.set_other_dir(None),
            Err(e) => debug!("cannot read the cluster record: {e}"),
        }
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
    let publisher = tokio::spawn(members::publish_loop(Arc::clone(&node), Arc::clone(&ha)));
    let mut watch: Option<HolderWatch> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            () = candidate(&node, &ha, &mut watch) => {}
        }
    }
    publisher.abort();
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
async fn candidate(node: &Arc<Node>, ha: &Arc<Ha>, watch: &mut Option<HolderWatch>) {
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
            if blocked(node, ha).is_none() {
                if let Some(lost_to) = vacant(node, ha).await {
                    if let Some(holder) = lost_to {
                        follow(node, ha, holder).await;
                    }
                } else {
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

/// The seat is vacant and this node may campaign: stops following,
/// campaigns under the mode's rule and leads a won term. `None`: come
/// straight back (a term ended, or a race to retry); `Some(holder)`: lost
/// to `holder` (`None` inside: nobody took it yet, wait for a change).
async fn vacant(node: &Arc<Node>, ha: &Arc<Ha>) -> Option<Option<Holder>> {
    // Stop following first: the local epoch must not move between the
    // campaign and the first write of the term.
    node.replication.stand_by().await;
    let rule = match node.replication.settings.mode {
        Mode::Sync => CampaignRule::InSyncOnly,
        Mode::Async => {
            if !members::my_turn(node, ha).await {
                return Some(None);
            }
            CampaignRule::Anyone
        }
    };
    let local = node.engine.current_epoch();
    match ha.coordinator.campaign(local, rule).await {
        Ok(Campaign::Won(term)) => {
            ha.told_not_in_sync.store(false, Ordering::Relaxed);
            lead::lead(node, ha, term).await;
            None
        }
        Ok(Campaign::Lost(Some(holder))) => Some(Some(holder)),
        // It changed hands while we looked: look again at once.
        Ok(Campaign::Lost(None)) => None,
        Err(e @ coordinator::Error::OtherDirectory { .. }) => {
            ha.set_other_dir(Some(e.to_string()));
            Some(None)
        }
        Err(coordinator::Error::NotInSync { .. }) => {
            if !ha.told_not_in_sync.swap(true, Ordering::Relaxed) {
                info!(
                    node = %ha.node_id,
                    "not campaigning: this node is not in the published in-sync set, so it may lack acknowledged writes; waiting for a member to be elected"
                );
            }
            Some(None)
        }
        Err(e) => {
            warn!("campaign failed: {e}");
            tokio::time::sleep(ha.period).await;
            None
        }
    }
}

/// Why this node must not campaign now (a tail it cut and has not fetched
/// again from a master, or, in sync mode, listed in the in-sync set with
/// another data directory), said once in the log per episode.
fn blocked(node: &Node, ha: &Ha) -> Option<String> {
    if let Some(why) = ha.other_dir.lock().clone() {
        return Some(why);
    }
    match node.engine.may_campaign() {
        Ok(()) => {
            ha.told_blocked.store(false, Ordering::Relaxed);
            None
        }
        Err(cut) => {
            let why = format!(
                "this node cut {} bytes ({} records, {}) off its log at offset {} in epoch {} and has not fetched that part of the log again from a master",
                cut.bytes,
                cut.records,
                cut.cause.name(),
                cut.offset,
                cut.epoch
            );
            if !ha.told_blocked.swap(true, Ordering::Relaxed) {
                warn!("not campaigning for leadership: {why} (RELIABILITY.md, \"Cut tails\")");
            }
            Some(why)
        }
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
    ha.told_not_in_sync.store(false, Ordering::Relaxed);
    node.replication.set_epoch_floor(holder.epoch);
    if node.replication.following().await.as_deref() != Some(holder.addr.as_str()) {
        info!(master = %holder.addr, node = %holder.node_id, epoch = holder.epoch, "following the elected master");
        node.replication.replicate(holder.addr).await;
    }
}
