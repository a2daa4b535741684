//! Replication without consensus (docs/REPLICATION.md): a master serves its log
//! bytes by offset; replicas pull them, verify them, append them to their
//! own segments of the same name and acknowledge their durable end.
//!
//! This module owns the node's role and what each role tracks:
//! - as master: the connected replicas and their acknowledged offsets:
//!   the written end (lag reporting, the compaction floor) and the durable
//!   end (what sync mode counts);
//! - as replica: the follower task and the state of its link.
//!
//! Roles change live: [`Replication::promote`] makes a replica master in a
//! new epoch; [`Replication::replicate`] points a node at a (new) master.
//!
//! Sync mode counts acknowledgements by one of two rules: without a
//! coordinator, `min_acks` replicas must have a write durably (the
//! `min_acks`-th highest durable end); with one, every member of the
//! published in-sync set must (`in_sync.rs`, Kafka's rule), which the HA
//! loop keeps up through [`Replication::review_in_sync`].
//! Epochs fence stale masters: a replica never follows a master whose
//! epoch is below its own, and a replica whose log diverged from its
//! master's is told where to cut it (see `docs/REPLICATION.md`).

mod in_sync;
pub mod master;
mod quorum;
pub mod replica;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

use crate::coordinator::Member;
use crate::engine::{self, Engine};
use crate::lifecycle::Health;
use crate::protocol;
use in_sync::InSync;
pub use in_sync::Review as InSyncReview;
use quorum::Quorum;

/// Why a replication link ended.
#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(#[from] protocol::Error),
    #[error("storage: {0}")]
    Engine(#[from] engine::Error),
    #[error("the peer closed the connection mid-frame")]
    Closed,
    #[error("nothing received for {0:?}")]
    Timeout(Duration),
    #[error("the master refused: {code}: {message}")]
    Refused {
        code: protocol::ErrorCode,
        message: String,
    },
    #[error("master at epoch {master} is behind this node's epoch {ours}: refusing to follow a stale master")]
    StaleMaster { master: u32, ours: u32 },
    #[error("unexpected message: {0}")]
    Unexpected(String),
}

impl From<protocol::stream::StreamError> for ReplError {
    fn from(e: protocol::stream::StreamError) -> Self {
        use protocol::stream::StreamError;
        match e {
            StreamError::Io(e) => ReplError::Io(e),
            StreamError::Protocol(e) => ReplError::Protocol(e),
            StreamError::Closed => ReplError::Closed,
            StreamError::Timeout(after) => ReplError::Timeout(after),
        }
    }
}

/// How the master acknowledges writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// After its own durability policy.
    Async,
    /// Only once `min_acks` replicas have the write durably.
    Sync,
}

/// Replication settings, validated by the configuration layer.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    /// Replicas that must hold a write before a sync-mode ack. Default 1.
    pub min_acks: usize,
    /// How long a sync-mode write waits for acks. Default 5 s.
    pub sync_timeout: Duration,
    /// Sealed log a master keeps for connected replicas beyond what they
    /// acknowledged, at most. Default 1 GiB.
    pub retention_bytes: u64,
    /// A replica is ready while connected and at most this far behind.
    /// Default 64 MiB.
    pub max_ready_lag_bytes: u64,
    /// This node's name towards its master.
    pub replica_id: String,
    /// Where clients reach this node (announced to the master).
    pub advertise: String,
    /// How often a master tells idle replicas it is alive. Default 1 s.
    pub heartbeat: Duration,
    /// TLS and the token this node uses toward its master.
    pub security: Arc<crate::security::Security>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: Mode::Async,
            min_acks: 1,
            sync_timeout: Duration::from_secs(5),
            retention_bytes: 1 << 30,
            max_ready_lag_bytes: 64 << 20,
            replica_id: String::new(),
            advertise: String::new(),
            heartbeat: Duration::from_secs(1),
            security: Arc::new(crate::security::Security::disabled()),
        }
    }
}

/// The node's role as the rest of the server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleView {
    Master,
    Replica { master: String },
}

enum RoleState {
    Master,
    /// A replica of nobody yet: with a coordinator, until one is elected.
    Standby,
    Replica {
        master: String,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    },
}

/// A replica as its master sees it.
#[derive(Debug, Clone)]
struct ReplicaLink {
    advertise: String,
    /// The data-directory id its stream named (`None`: not sent).
    dir_id: Option<String>,
    /// The replica's acknowledged written end: what it holds and serves.
    acked: u64,
    /// The replica's acknowledged durable (fsynced) end; at most `acked`.
    durable: u64,
    /// When the replica last acknowledged everything the master had.
    caught_up_at: Instant,
    session: u64,
}

/// The replica side's view of its link to the master.
#[derive(Debug, Clone, Default)]
struct LinkStatus {
    connected: bool,
    master_end: u64,
    caught_up_at: Option<Instant>,
    last_error: Option<String>,
    /// The master refused this replica because its log runs past a tail
    /// the master cut (ErrorCode::TAIL_CUT): why, until a stream starts.
    cut_conflict: Option<String>,
}

/// One replica in `stats`.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStats {
    pub id: String,
    pub advertise: String,
    /// End of what the replica acknowledged as written (it holds and
    /// serves everything below).
    pub acked_offset: u64,
    /// End of what the replica acknowledged as fsynced: what sync mode
    /// counts.
    pub durable_offset: u64,
    pub lag_bytes: u64,
    pub lag_seconds: f64,
}

/// The `replication` section of `stats`.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicationStats {
    pub role: &'static str,
    /// Where clients and other nodes reach this node.
    pub advertise: String,
    pub epoch: u32,
    pub mode: Mode,
    pub min_acks: usize,
    /// The master this node follows (replicas only).
    pub master: Option<String>,
    pub end_offset: u64,
    pub durable_offset: u64,
    pub connected_replicas: usize,
    pub replicas: Vec<ReplicaStats>,
    /// Replica side: whether the link to the master is streaming.
    pub link_up: bool,
    pub lag_bytes: u64,
    pub lag_seconds: f64,
    /// Sync mode with a coordinator, on the master: the in-sync set as
    /// published (node ids, the master included).
    pub in_sync: Option<Vec<String>>,
    pub last_error: Option<String>,
    /// Replica side: the master refused to stream because this replica's
    /// log runs past a tail the master cut off its own log; this replica
    /// may hold writes the master lost and keeps them (RELIABILITY.md,
    /// "Cut tails"). Cleared once a stream starts.
    pub cut_conflict: Option<String>,
    /// Full resyncs served (master) or performed (replica).
    pub full_resyncs: u64,
    /// Partial resyncs (resume from an offset) served or performed.
    pub partial_resyncs: u64,
    /// Raw log bytes sent to replicas (master) or received (replica).
    pub log_bytes_shipped: u64,
    /// Times this node went from replica to master while running.
    pub elections: u64,
    /// REPL_CHUNK frames sent (master) or received (replica).
    pub log_chunks: u64,
    /// REPL_ACK frames received (master) or sent (replica).
    pub acks: u64,
    /// Replica side: times its master told it to cut its log back (bytes
    /// it had that the master does not: in async mode, writes an old
    /// master acknowledged and lost at a failover).
    pub truncations: u64,
    /// The bytes those cuts removed.
    pub truncated_bytes: u64,
}

pub struct Replication {
    pub(crate) engine: Engine,
    pub(crate) settings: Settings,
    health: Arc<Health>,
    role: tokio::sync::Mutex<RoleState>,
    role_tx: watch::Sender<RoleView>,
    replicas: Mutex<BTreeMap<String, ReplicaLink>>,
    /// Sync-mode writes waiting for replicas' durable acknowledgements.
    quorum: Quorum,
    /// Sync mode with a coordinator, while master: the in-sync set (else
    /// the `min_acks` count rule). Taken before `replicas` and `quorum`
    /// when more than one is held.
    in_sync: Mutex<Option<InSync>>,
    link: Mutex<LinkStatus>,
    sessions: AtomicU64,
    pub(crate) full_resyncs: AtomicU64,
    pub(crate) partial_resyncs: AtomicU64,
    pub(crate) bytes_shipped: AtomicU64,
    /// Replica-to-master changes of this process (promotion; later also
    /// each election the coordinator lets this node win).
    elections: AtomicU64,
    pub(crate) chunks: AtomicU64,
    pub(crate) acks: AtomicU64,
    pub(crate) truncations: AtomicU64,
    pub(crate) truncated_bytes: AtomicU64,
    /// Held by the follower while it changes the local log (append,
    /// truncate, install); taken by role changes once the follower
    /// stopped, so no change lands after them.
    pub(crate) applying: Arc<tokio::sync::Mutex<()>>,
    /// With a coordinator: the epoch it last showed a master in. The
    /// follower refuses a master whose epoch is below it.
    epoch_floor: AtomicU32,
}

/// Milliseconds since the Unix epoch, for heartbeats.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Replication {
    /// Starts in `role`: a master begins a new epoch (so a restarted
    /// master's log is told apart from what it wrote before), a replica
    /// starts following.
    pub async fn start(
        engine: Engine,
        settings: Settings,
        health: Arc<Health>,
        role: RoleView,
    ) -> Result<Arc<Replication>, engine::Error> {
        let (role_tx, _) = watch::channel(RoleView::Master);
        let repl = Arc::new(Replication {
            engine,
            settings,
            health,
            role: tokio::sync::Mutex::new(RoleState::Master),
            role_tx,
            replicas: Mutex::new(BTreeMap::new()),
            quorum: Quorum::default(),
            in_sync: Mutex::new(None),
            link: Mutex::new(LinkStatus::default()),
            sessions: AtomicU64::new(0),
            full_resyncs: AtomicU64::new(0),
            partial_resyncs: AtomicU64::new(0),
            bytes_shipped: AtomicU64::new(0),
            elections: AtomicU64::new(0),
            chunks: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            truncations: AtomicU64::new(0),
            truncated_bytes: AtomicU64::new(0),
            applying: Arc::new(tokio::sync::Mutex::new(())),
            epoch_floor: AtomicU32::new(0),
        });
        match role {
            RoleView::Master => {
                repl.become_master(None).await?;
            }
            RoleView::Replica { master } if master.is_empty() => repl.stand_by().await,
            RoleView::Replica { master } => repl.replicate(master).await,
        }
        Ok(repl)
    }

    pub fn role(&self) -> RoleView {
        self.role_tx.borrow().clone()
    }

    pub fn is_master(&self) -> bool {
        matches!(*self.role_tx.borrow(), RoleView::Master)
    }

    pub(crate) fn watch_role(&self) -> watch::Receiver<RoleView> {
        self.role_tx.subscribe()
    }

    /// Begins `epoch` (`None`: one above the newest local epoch) in EPOCHS,
    /// then takes writes.
    async fn become_master(&self, epoch: Option<u32>) -> Result<u32, engine::Error> {
        let engine = self.engine.clone();
        let epoch = tokio::task::spawn_blocking(move || {
            let epoch =
                match epoch {
                    Some(epoch) => epoch,
                    None => engine.current_epoch().checked_add(1).ok_or(
                        engine::Error::InvalidOption {
                            name: "epoch",
                            reason: "epochs exhausted".into(),
                        },
                    )?,
                };
            engine.begin_epoch(epoch)?;
            engine.set_auto_roll(true);
            // The master decides expiry: it deletes every key that is due,
            // however long ago (docs/REPLICATION.md § 6a).
            engine.set_expiring(true);
            Ok::<_, engine::Error>(epoch)
        })
        .await
        .map_err(|e| {
            engine::Error::io(
                "start a new epoch in",
                self.engine.dir(),
                std::io::Error::other(e),
            )
        })??;
        self.health.set_replication_ready(true);
        self.role_tx.send_replace(RoleView::Master);
        tracing::info!(epoch, "acting as MASTER");
        Ok(epoch)
    }

    /// Makes this node master in a new epoch; a no-op for a master.
    /// Returns the epoch it now leads.
    pub async fn promote(&self) -> Result<u32, engine::Error> {
        self.promote_in(None).await
    }

    /// Makes this node master in `epoch`, the one a coordinator issued
    /// (`None`: one above the newest local epoch, manual mode). It is
    /// written to EPOCHS before the first write; a master is left as it is.
    pub async fn promote_in(&self, epoch: Option<u32>) -> Result<u32, engine::Error> {
        let mut role = self.role.lock().await;
        if let RoleState::Master = *role {
            return Ok(self.engine.current_epoch());
        }
        let previous = std::mem::replace(&mut *role, RoleState::Standby);
        if let RoleState::Replica { stop, task, master } = previous {
            let _ = stop.send(true);
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::warn!(%master, "follower task did not stop in 5 s");
            }
        }
        self.link.lock().connected = false;
        let _quiet = self.applying.lock().await;
        let epoch = self.become_master(epoch).await?;
        *role = RoleState::Master;
        self.elections.fetch_add(1, Relaxed);
        Ok(epoch)
    }

    /// With a coordinator: stops following and takes no writes until a
    /// master is elected (a candidate, or a master whose term ended).
    pub async fn stand_by(&self) {
        let mut role = self.role.lock().await;
        self.leave_role(&mut role, String::new()).await;
        self.link.lock().connected = false;
        *role = RoleState::Standby;
    }

    /// Stops the follower if any, waits until it changed the log for the
    /// last time, and shows the node as a replica of `master` (empty:
    /// nobody yet); a master's streams to replicas end.
    async fn leave_role(&self, role: &mut RoleState, master: String) {
        // First: from here on this node appends only its master's bytes
        // (the expiry sweep is the master's alone, docs/REPLICATION.md § 6a).
        let engine = self.engine.clone();
        let _ = tokio::task::spawn_blocking(move || engine.set_expiring(false)).await;
        if let RoleState::Replica { stop, task, .. } = std::mem::replace(role, RoleState::Standby) {
            let _ = stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        drop(self.applying.lock().await);
        self.engine.set_auto_roll(false);
        self.health.set_replication_ready(false);
        self.replicas.lock().clear();
        *self.in_sync.lock() = None;
        self.engine.set_compaction_floor(None);
        self.role_tx.send_replace(RoleView::Replica { master });
    }

    /// Which master this node follows (`None`: master, or standing by).
    pub async fn following(&self) -> Option<String> {
        match &*self.role.lock().await {
            RoleState::Replica { master, .. } => Some(master.clone()),
            RoleState::Master | RoleState::Standby => None,
        }
    }

    /// With a coordinator: never follow a master below `epoch`.
    pub fn set_epoch_floor(&self, epoch: u32) {
        self.epoch_floor.fetch_max(epoch, Relaxed);
    }

    /// The lowest epoch a master may have for this node to follow it.
    pub(crate) fn epoch_floor(&self) -> u32 {
        self.epoch_floor.load(Relaxed)
    }

    /// Follows `master` from now on (repointing a replica, or demoting a
    /// master: its streams to replicas end).
    pub async fn replicate(self: &Arc<Self>, master: String) {
        let mut role = self.role.lock().await;
        self.leave_role(&mut role, master.clone()).await;
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(replica::follow(Arc::clone(self), master.clone(), stop_rx));
        tracing::info!(%master, "following master {master}");
        *role = RoleState::Replica { master, stop, task };
    }

    /// Stops the follower (at shutdown).
    pub async fn stop(&self) {
        let mut role = self.role.lock().await;
        if let RoleState::Replica { stop, task, .. } =
            std::mem::replace(&mut *role, RoleState::Master)
        {
            let _ = stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    // ---- master side -------------------------------------------------

    /// Registers a streaming replica that holds the log up to `acked`; the
    /// returned id unregisters it. Nothing of it counts as durable until
    /// its first acknowledgement says so.
    pub(crate) fn register(&self, replica: &Member, advertise: &str, acked: u64) -> u64 {
        let session = self.sessions.fetch_add(1, Relaxed);
        if let Some(in_sync) = self.in_sync.lock().as_mut() {
            in_sync.connected(replica);
        }
        self.replicas.lock().insert(
            replica.node_id.clone(),
            ReplicaLink {
                advertise: advertise.to_string(),
                dir_id: replica.dir_id.clone(),
                acked,
                durable: 0,
                caught_up_at: Instant::now(),
                session,
            },
        );
        self.update_floor();
        session
    }

    pub(crate) fn unregister(&self, id: &str, session: u64) {
        let mut replicas = self.replicas.lock();
        if replicas.get(id).is_some_and(|r| r.session == session) {
            replicas.remove(id);
        }
        drop(replicas);
        self.update_floor();
        self.update_quorum();
    }

    /// A replica's REPL_ACK: it has the log written up to `written_end`
    /// and fsynced up to `durable_end`, in the data directory its stream
    /// named.
    pub(crate) fn record_ack(&self, replica: &Member, written_end: u64, durable_end: u64) {
        self.acks.fetch_add(1, Relaxed);
        if let Some(in_sync) = self.in_sync.lock().as_mut() {
            in_sync.ack(replica, durable_end);
        }
        let end = self.engine.log_end();
        if let Some(r) = self.replicas.lock().get_mut(&replica.node_id) {
            r.acked = r.acked.max(written_end);
            r.durable = r.durable.max(durable_end);
            if r.acked >= end {
                r.caught_up_at = Instant::now();
            }
        }
        self.update_floor();
        self.update_quorum();
    }

    /// Sync mode: recomputes the replicated end, waking the writes it
    /// completes: from the in-sync set with a coordinator (under its lock,
    /// so that a member joining and a write being acknowledged are
    /// ordered), else from the connected replicas' durable ends.
    fn update_quorum(&self) {
        if self.settings.mode != Mode::Sync {
            return;
        }
        let mut in_sync = self.in_sync.lock();
        if let Some(state) = in_sync.as_mut() {
            self.quorum.set(state.replicated(self.settings.min_acks));
            return;
        }
        drop(in_sync);
        let durable: Vec<u64> = self.replicas.lock().values().map(|r| r.durable).collect();
        self.quorum
            .update(durable.into_iter(), self.settings.min_acks);
    }

    /// Keeps compaction off the log connected replicas still need, within
    /// the retention bound.
    fn update_floor(&self) {
        let lowest = self.replicas.lock().values().map(|r| r.acked).min();
        let floor = lowest.map(|acked| {
            acked.max(
                self.engine
                    .log_end()
                    .saturating_sub(self.settings.retention_bytes),
            )
        });
        self.engine.set_compaction_floor(floor);
    }

    /// The durable end the replica `id` last acknowledged, while it is
    /// connected (`None`: not connected to this master).
    pub fn durable_of(&self, id: &str) -> Option<u64> {
        self.replicas.lock().get(id).map(|r| r.durable)
    }

    /// Every connected replica's id and acknowledged durable end.
    pub fn durable_ends(&self) -> Vec<(String, u64)> {
        self.replicas
            .lock()
            .iter()
            .map(|(id, r)| (id.clone(), r.durable))
            .collect()
    }

    /// How many replicas hold the log up to `end`: `(written, durable)`.
    fn acked_count(&self, end: u64) -> (usize, usize) {
        let replicas = self.replicas.lock();
        let written = replicas.values().filter(|r| r.acked >= end).count();
        let durable = replicas.values().filter(|r| r.durable >= end).count();
        (written, durable)
    }

    /// Sync mode: refuses a write up front when too few replicas are
    /// connected (or, with a coordinator, in the published in-sync set) to
    /// ever acknowledge it.
    pub fn check_sync_ready(&self) -> Result<(), String> {
        if self.settings.mode != Mode::Sync {
            return Ok(());
        }
        if let Some(state) = self.in_sync.lock().as_ref() {
            let members = state.replicas();
            if members < self.settings.min_acks {
                return Err(format!(
                    "sync replication needs {} replica(s) in the in-sync set, it has {members} ({});                      a replica joins once it has caught up; the write was not applied",
                    self.settings.min_acks,
                    state
                        .members()
                        .iter()
                        .map(Member::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            return Ok(());
        }
        let connected = self.replicas.lock().len();
        if connected < self.settings.min_acks {
            return Err(format!(
                "sync replication needs {} replica(s) to acknowledge writes, {connected} connected; the write was not applied",
                self.settings.min_acks
            ));
        }
        Ok(())
    }

    /// Sync mode: waits until `min_acks` replicas have the log up to `end`
    /// durably (fsynced: their acknowledged durable end, whatever their
    /// durability policy).
    pub async fn wait_replicated(&self, end: u64) -> Result<(), String> {
        if self.settings.mode != Mode::Sync {
            return Ok(());
        }
        let Some(replicated) = self.quorum.wait(end) else {
            return Ok(());
        };
        if let Ok(Ok(())) = tokio::time::timeout(self.settings.sync_timeout, replicated).await {
            return Ok(());
        }
        self.quorum.prune();
        if let Some(state) = self.in_sync.lock().as_ref() {
            return Err(format!(
                "the write is durable on the master but not yet on every member of the in-sync set within {:?} (missing: {}); \
                 a member that lags longer than the in-sync lag bound is dropped from the set first; \
                 its replication outcome is unknown (it is not rolled back)",
                self.settings.sync_timeout,
                state.missing(end).join(", ")
            ));
        }
        let (written, durable) = self.acked_count(end);
        let not_synced = if written > durable {
            format!(
                " ({} more received it but had not fsynced it: a replica under --durability never or a long interval acknowledges durability late)",
                written - durable
            )
        } else {
            String::new()
        };
        Err(format!(
            "the write is durable on the master but only {durable} of {} required replica(s) acknowledged it as durable within {:?}{not_synced}; its replication outcome is unknown (it is not rolled back)",
            self.settings.min_acks, self.settings.sync_timeout
        ))
    }

    // ---- the in-sync set (sync mode with a coordinator) -------------

    /// Starts the term's in-sync rule from `members`, the set the cluster
    /// record lists (this node, `own`, may be among them). Call before
    /// [`Replication::promote_in`], so no write of the term is counted by
    /// the other rule; a change of role ends it. A no-op in async mode.
    pub fn begin_in_sync(&self, own: &Member, members: Vec<Member>, max_lag: Duration) {
        if self.settings.mode != Mode::Sync {
            return;
        }
        let start_end = self.engine.end();
        *self.in_sync.lock() = Some(InSync::new(own, members, start_end, max_lag));
        self.update_quorum();
    }

    /// Looks at the members' progress now: replicas that caught up start
    /// counting as members at once (stricter), and the set to publish is
    /// returned when one lags or one joins. `None`: nothing to publish, or
    /// no in-sync rule in force.
    pub fn review_in_sync(&self) -> Option<InSyncReview> {
        let mut in_sync = self.in_sync.lock();
        let state = in_sync.as_mut()?;
        let connected: Vec<Member> = self
            .replicas
            .lock()
            .iter()
            .map(|(id, r)| Member::new(id.clone(), r.dir_id.clone()))
            .collect();
        let review = state.review(Instant::now(), self.engine.log_end(), &connected);
        self.quorum.set(state.replicated(self.settings.min_acks));
        review
    }

    /// The coordinator now shows `set` (a CAS went through): members it
    /// dropped are no longer waited for, those it added count.
    pub fn published_in_sync(&self, set: &[Member]) {
        let mut in_sync = self.in_sync.lock();
        if let Some(state) = in_sync.as_mut() {
            state.published(set);
            self.quorum.set(state.replicated(self.settings.min_acks));
        }
    }

    /// The master leaves for good (SIGTERM with a switchover): the
    /// in-sync set it publishes next omits it, so the next master does not
    /// wait for it. A no-op without the in-sync rule.
    pub fn leave_in_sync(&self) {
        if let Some(state) = self.in_sync.lock().as_mut() {
            state.leave();
        }
    }

    /// Whether the published in-sync set still lists this master (false
    /// without the in-sync rule).
    pub fn in_sync_lists_self(&self) -> bool {
        self.in_sync.lock().as_ref().is_some_and(InSync::lists_self)
    }

    // ---- replica side ------------------------------------------------

    pub(crate) fn set_link(&self, connected: bool, error: Option<String>) {
        let mut link = self.link.lock();
        link.connected = connected;
        if connected {
            link.cut_conflict = None;
        }
        if error.is_some() {
            link.last_error = error;
        }
        if !connected {
            self.health.set_replication_ready(false);
        }
    }

    /// The master refused this replica with TAIL_CUT (`message` says why).
    pub(crate) fn set_cut_conflict(&self, message: String) {
        self.link.lock().cut_conflict = Some(message);
    }

    /// After each chunk or heartbeat: the master's end and ours.
    pub(crate) fn observe_master(&self, master_end: u64, local_end: u64) {
        let mut link = self.link.lock();
        link.connected = true;
        link.master_end = master_end;
        if local_end >= master_end {
            link.caught_up_at = Some(Instant::now());
        }
        let lag = master_end.saturating_sub(local_end);
        self.health
            .set_replication_ready(lag <= self.settings.max_ready_lag_bytes);
    }

    pub fn stats(&self) -> ReplicationStats {
        let end = self.engine.end();
        let durable = self.engine.log_end();
        let role = self.role();
        let now = Instant::now();
        let replicas: Vec<ReplicaStats> = self
            .replicas
            .lock()
            .iter()
            .map(|(id, r)| ReplicaStats {
                id: id.clone(),
                advertise: r.advertise.clone(),
                acked_offset: r.acked,
                durable_offset: r.durable,
                lag_bytes: durable.saturating_sub(r.acked),
                lag_seconds: if r.acked >= durable {
                    0.0
                } else {
                    now.duration_since(r.caught_up_at).as_secs_f64()
                },
            })
            .collect();
        let link = self.link.lock().clone();
        let is_replica = matches!(role, RoleView::Replica { .. });
        let lag_bytes = if is_replica {
            link.master_end.saturating_sub(end)
        } else {
            0
        };
        ReplicationStats {
            role: if is_replica { "replica" } else { "master" },
            advertise: self.settings.advertise.clone(),
            epoch: self.engine.current_epoch(),
            mode: self.settings.mode,
            min_acks: self.settings.min_acks,
            master: match role {
                RoleView::Replica { master } if !master.is_empty() => Some(master),
                RoleView::Replica { .. } | RoleView::Master => None,
            },
            end_offset: end,
            durable_offset: durable,
            connected_replicas: replicas.len(),
            replicas,
            link_up: is_replica && link.connected,
            lag_bytes,
            lag_seconds: match (is_replica, lag_bytes, link.caught_up_at) {
                (false, _, _) | (true, 0, _) => 0.0,
                (true, _, Some(at)) => now.duration_since(at).as_secs_f64(),
                (true, _, None) => f64::INFINITY.min(1e9),
            },
            in_sync: self
                .in_sync
                .lock()
                .as_ref()
                .map(|s| s.members().into_iter().map(|m| m.node_id).collect()),
            last_error: link.last_error,
            cut_conflict: link.cut_conflict,
            full_resyncs: self.full_resyncs.load(Relaxed),
            partial_resyncs: self.partial_resyncs.load(Relaxed),
            log_bytes_shipped: self.bytes_shipped.load(Relaxed),
            elections: self.elections.load(Relaxed),
            log_chunks: self.chunks.load(Relaxed),
            acks: self.acks.load(Relaxed),
            truncations: self.truncations.load(Relaxed),
            truncated_bytes: self.truncated_bytes.load(Relaxed),
        }
    }
}
