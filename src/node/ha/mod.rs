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
//!   (resigning first, so another may campaign at once). A master whose
//!   engine refuses writes (poisoned) releases its term when another
//!   member can take over ([`release`]); a poisoned node does not
//!   campaign;
//! - as master, keeps the routing that sends clients to it up to date (on
//!   Kubernetes the pods' role labels, [`routes`]), beside the term: a
//!   failure there is logged and retried and never holds up a write.
//!
//! Every node publishes its member state (role, epoch, log end, whether it
//! may campaign) every TTL/3 and whenever its role changes.
//!
//! Planned switchover ([`switchover`]): the master pauses new writes, lets
//! the chosen replica catch up to its end, and resigns naming it as
//! successor; a candidate that finds the seat vacant with another node
//! named lets it take the seat first, for at most a lease TTL on its own
//! monotonic clock.
//!
//! The loop's timing does not make the node safe: the write path does.
//! Before appending a write and again before each OK it checks the term's
//! fence ([`Ha::may_write`], one clock read and one atomic load); past
//! the deadline a new write is refused ([`Ha::refusal`]) and a write
//! already appended gets `FATE_UNKNOWN`, never OK. In sync mode the OK
//! also waits until every member of the published in-sync set has the
//! write (`replication::in_sync`).

mod gate;
mod lead;
mod members;
mod release;
mod routes;
mod status;
pub mod switchover;

pub use status::cluster_status;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::Node;
use crate::coordinator::{
    self, Backend, Campaign, CampaignRule, Coordinator, DataDir, Fence, Holder, HolderWatch,
    Member, Routing, Successor,
};
use crate::protocol::{ErrorCode, Response};
use crate::replication::Mode;
pub use gate::Admitted;
use switchover::{Handover, Turn};

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
    /// Planned switchover: how long the master waits, writes paused, for
    /// its successor to catch up before it gives up and resumes
    /// (`--switchover-timeout-ms`, default 5 s).
    pub switchover_timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            in_sync_max_lag: Duration::from_secs(2),
            campaign_grace: Duration::from_secs(1),
            switchover_timeout: Duration::from_secs(5),
        }
    }
}

/// The node's coordinator session and what the write path needs of it.
pub struct Ha {
    coordinator: Box<dyn Coordinator>,
    /// What sends clients to the master from outside (pod labels).
    routing: Option<Arc<dyn Routing>>,
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
    /// Stops new writes during a planned switchover.
    gate: gate::Gate,
    /// Switchovers asked of the HA loop; it takes them while it leads.
    handovers: mpsc::Sender<Handover>,
    handover_queue: tokio::sync::Mutex<mpsc::Receiver<Handover>>,
    /// A caller is waiting for a switchover.
    switching: AtomicBool,
    /// How long a candidate lets a named successor take the seat first:
    /// the lease TTL.
    successor_wait: Duration,
    /// The successor this candidate is letting go first, since when, and
    /// whether it said that the wait ran out.
    successor_seen: Mutex<Option<(Successor, Instant, bool)>>,
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
        let ttl = settings.timing()?.ttl;
        let period = ttl / 3;
        let coordinator = coordinator::connect(settings).await?;
        let routing = coordinator::routing(settings).await?.map(Arc::from);
        let (handovers, queue) = mpsc::channel(1);
        Ok(Ha {
            coordinator,
            routing,
            node_id: settings.node_id.clone(),
            dir: settings.data_dir.clone(),
            addr: settings.advertise_addr.clone(),
            policy,
            period,
            fence: Mutex::new(None),
            holder: Mutex::new(None),
            told_blocked: AtomicBool::new(false),
            told_not_in_sync: AtomicBool::new(false),
            gate: gate::Gate::default(),
            handovers,
            handover_queue: tokio::sync::Mutex::new(queue),
            switching: AtomicBool::new(false),
            successor_wait: ttl,
            successor_seen: Mutex::new(None),
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

    /// Admits a client write to be appended: this node holds a term whose
    /// fence holds and no switchover paused writes. The write stays
    /// admitted (a switchover waits for it) until the guard is dropped,
    /// once the append returned.
    pub fn admit(&self) -> Option<Admitted<'_>> {
        let admitted = self.gate.enter()?;
        self.may_write().then_some(admitted)
    }

    /// The answer to a write this node may not take: REDIRECT to another
    /// holder the coordinator showed, else READ_ONLY ("not the master", or
    /// a switchover under way).
    pub fn refusal(&self) -> Response {
        match self.holder.lock().as_ref() {
            Some(h) if h.node_id != self.node_id && !h.addr.is_empty() => Response::Redirect {
                master: h.addr.clone(),
            },
            _ if self.gate.is_paused() => Response::error(
                ErrorCode::READ_ONLY,
                "a switchover is under way: this master takes no new writes while its successor catches up; retry shortly (the new master takes them)",
            ),
            _ => not_the_master(),
        }
    }

    /// Whether this node holds a term at the coordinator (it may be the
    /// one to ask for a switchover).
    pub fn leads(&self) -> bool {
        self.coordinator.leadership().is_some()
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
    let mut look_again = ha.period;
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
                let named = match ha.coordinator.successor().await {
                    Ok(named) => named,
                    Err(e) => {
                        debug!(
                            "cannot read the named successor ({e}); campaigning by the usual rules"
                        );
                        None
                    }
                };
                match switchover::successor_turn(ha, named) {
                    Turn::Wait(left) => look_again = left.min(ha.period),
                    turn => match vacant(node, ha, turn == Turn::Mine).await {
                        Some(Some(holder)) => follow(node, ha, holder).await,
                        Some(None) => {}
                        None => return,
                    },
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
        () = tokio::time::sleep(look_again) => {}
    }
}

/// The seat is vacant and this node may campaign: stops following,
/// campaigns under the mode's rule and leads a won term. `named`: the
/// last master handed the seat to this node, which then campaigns without
/// async mode's grace. `None`: come straight back (a term ended, or a race
/// to retry); `Some(holder)`: lost to `holder` (`None` inside: nobody took
/// it yet, wait for a change).
async fn vacant(node: &Arc<Node>, ha: &Arc<Ha>, named: bool) -> Option<Option<Holder>> {
    // Stop following first: the local epoch must not move between the
    // campaign and the first write of the term.
    node.replication.stand_by().await;
    let rule = match node.replication.settings.mode {
        Mode::Sync => CampaignRule::InSyncOnly,
        Mode::Async => {
            if !named && !members::my_turn(node, ha).await {
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

/// Why this node must not campaign now: its engine refuses writes (the
/// lead loop said so when it released its term), in sync mode it is
/// listed in the in-sync set with another data directory, or a tail it
/// cut and has not fetched again from a master (said once in the log per
/// episode).
fn blocked(node: &Node, ha: &Ha) -> Option<String> {
    if let Some(poison) = node.engine.poison() {
        return Some(format!(
            "its storage engine refuses writes ({})",
            poison.reason
        ));
    }
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
