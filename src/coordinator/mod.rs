//! Leadership and fencing epochs borrowed from a store built for consensus
//! (etcd, or the Kubernetes Lease API), the way Patroni runs Postgres:
//! kvstore runs no consensus protocol of its own.
//!
//! Invariants every backend keeps (docs/FAILOVER.md states them for
//! operators; `tests/it/coordinator.rs` attacks each one on every backend):
//! - **Epochs only grow and only the coordinator hands them out.** Taking
//!   leadership is ONE atomic update that sets the holder and
//!   `epoch = max(stored counter, candidate's newest local epoch) + 1`
//!   ([`next_epoch`]). A deleted record or a data directory with a higher
//!   local epoch can never make an epoch go backwards.
//! - **Self-fencing on a monotonic clock.** A term's [`Fence`] deadline is
//!   the send time of its last successful renewal + the granted TTL − a
//!   margin, on `CLOCK_BOOTTIME` ([`BootInstant`]). Renew at least every
//!   [`Leadership::renew_every`] (TTL/3).
//! - **Only the holder writes the cluster record**, and only while the
//!   coordinator still shows it holding leadership in its epoch: the check
//!   and the write are one atomic update in the coordinator.
//! - A new [`Coordinator`] never inherits leadership from an earlier process
//!   with the same node id: it waits for that term to expire like any
//!   other candidate.
//! - **A successor is named only by the holder, as it gives the seat up**
//!   ([`Coordinator::resign_to`]): freeing the seat and naming the
//!   successor are one atomic update, valid only while the coordinator
//!   still shows this session holding leadership in its epoch. The next
//!   update that takes leadership, whoever makes it, removes the name.
//! - **The in-sync set names data directories, not just nodes**: each
//!   member is a node id and the id of the data directory the master
//!   counted its acknowledgements from ([`Member`]). A candidate whose
//!   current directory is not the listed one may not campaign
//!   ([`ClusterRecord::admits`]), checked in the same atomic update that
//!   takes the seat, so a node restarted on an emptied or restored
//!   directory never wins with a log that lacks acknowledged writes.
//!
//! This layer knows nothing of the node, the engine or any front end: the
//! node passes its newest local epoch in and writes the issued epoch to its
//! EPOCHS file before its first write of the term.

mod clock;
mod error;
mod fence;
mod none;
mod settings;
#[cfg(any(feature = "etcd", feature = "kubernetes"))]
mod term;

#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use clock::BootInstant;
pub use error::{Error, Result};
pub use fence::{Fence, Leadership};
pub use none::Manual;
pub use settings::{validate_name, Backend, KubernetesSettings, Settings, Timing};

/// One node's coordinator session: at most one term of leadership at a
/// time, and this node's published member state.
///
/// Object safe, so the backend is chosen at run time: `Box<dyn Coordinator>`
/// from [`connect`].
#[async_trait]
pub trait Coordinator: Send + Sync {
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// Takes leadership if nobody holds it, in one atomic update that also
    /// issues `max(stored epoch, local_epoch) + 1`. `local_epoch` is the
    /// newest epoch in this node's data directory. Returns the current term
    /// unchanged when this session already holds one.
    async fn campaign(&self, local_epoch: u32, rule: CampaignRule) -> Result<Campaign>;

    /// Renews the current term and moves its fence deadline forward. On
    /// [`Error::NotLeader`] the term is over and its fence revoked; on any
    /// other error the deadline is left as it was, and runs out by itself.
    async fn renew(&self) -> Result<()>;

    /// Gives leadership up (the fence is revoked first, then the
    /// coordinator is told). Others may campaign at once. Not holding
    /// leadership is not an error.
    async fn resign(&self) -> Result<()>;

    /// Planned switchover: gives leadership up in favour of `successor`
    /// (a node id). Like [`Coordinator::resign`] the fence is revoked
    /// first; then ONE atomic update, valid only while the coordinator
    /// still shows this session holding leadership in its epoch, frees
    /// the seat and names the successor ([`Successor`], with this term's
    /// epoch). [`Error::NotLeader`] when the term was already over (nothing
    /// named). On any other error the outcome is unknown: the term is over
    /// here either way, and the seat frees itself when the lease expires.
    async fn resign_to(&self, successor: &str) -> Result<()>;

    /// The successor the last holder named when it resigned, if no term
    /// was taken since (taking leadership removes the name).
    async fn successor(&self) -> Result<Option<Successor>>;

    /// The current term, if this session holds one.
    fn leadership(&self) -> Option<Leadership>;

    /// The holder as the coordinator shows it now (`None`: vacant, or on
    /// the Lease API expired as this node observed it).
    async fn holder(&self) -> Result<Option<Holder>>;

    /// Follows the holder: the value changes whenever the holder or its
    /// epoch does. Stops when dropped.
    async fn watch_holder(&self) -> Result<HolderWatch>;

    /// The cluster record (the in-sync set), if one was ever written.
    async fn cluster(&self) -> Result<Option<ClusterRecord>>;

    /// Replaces the in-sync set if the record is still `expected` AND this
    /// session holds leadership in its epoch at the coordinator; the new
    /// record carries this term's epoch. [`Error::Conflict`] when the
    /// record moved, [`Error::NotLeader`] when the term is over.
    async fn cas_cluster(
        &self,
        expected: Option<&ClusterRecord>,
        in_sync: Vec<Member>,
    ) -> Result<ClusterRecord>;

    /// Publishes this node's state, bound to its liveness: it disappears
    /// from [`Coordinator::members`] about a TTL after the node stops
    /// publishing. Publish at least every TTL/3.
    async fn publish(&self, state: &MemberState) -> Result<()>;

    /// The live members' published states, sorted by node id.
    async fn members(&self) -> Result<Vec<MemberState>>;

    /// The holder as [`Coordinator::holder`] shows it, with how long its
    /// lease has left as this node can tell now ([`HolderLease`]). Only
    /// `cluster status` reads it: nothing is decided on it.
    async fn holder_lease(&self) -> Result<Option<HolderLease>> {
        let holder = self.holder().await?;
        Ok(holder.map(|holder| HolderLease {
            holder,
            expires_in: None,
        }))
    }
}

/// The holder and how long its lease has left, as this node can tell: on
/// the Lease API from this node's own observation of the Lease's last
/// change (the same judgement a candidate makes before campaigning); on
/// etcd the remaining TTL of the holder's etcd lease as etcd reports it, in
/// whole seconds. `expires_in` is `None` when the backend cannot tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderLease {
    pub holder: Holder,
    pub expires_in: Option<Duration>,
}

/// Routing that follows the master, for what sends clients to kvstore
/// from outside it: on Kubernetes, the pods' role labels that the master
/// Service selects ([`routing`]).
#[async_trait]
pub trait Routing: Send + Sync {
    /// Marks this node as the master of `epoch` and every other member as
    /// a replica; returns how many marks changed. The caller holds a term
    /// of `epoch` whose fence holds. A mark written in a newer epoch is
    /// never overwritten, so a late write of an old master cannot undo a
    /// new one's.
    async fn mark_master(&self, epoch: u32) -> Result<usize>;
}

/// The routing `settings` ask for: the pods' role labels on the
/// Kubernetes backend with a pod selector; `None` otherwise.
pub async fn routing(settings: &Settings) -> Result<Option<Box<dyn Routing>>> {
    if settings.backend != Backend::Kubernetes || settings.kubernetes.pod_selector.is_none() {
        return Ok(None);
    }
    #[cfg(feature = "kubernetes")]
    return Ok(Some(Box::new(kubernetes::pod_labels(settings).await?)));
    #[cfg(not(feature = "kubernetes"))]
    return Err(Error::NotBuilt {
        backend: "kubernetes",
    });
}

/// Who holds leadership, and in which epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub node_id: String,
    /// The client address it advertises (where REDIRECT points).
    pub addr: String,
    pub epoch: u32,
}

/// The cluster record: the in-sync set of sync mode, as last published by
/// the holder of `epoch`.
///
/// JSON `{"epoch","in_sync":[node ids],"dirs":{node id: directory id}}`.
/// `dirs` was added with data-directory ids: a record written before has
/// none, and a member without an entry has an unknown directory (see
/// [`ClusterRecord::admits`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub epoch: u32,
    pub in_sync: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dirs: BTreeMap<String, String>,
}

impl ClusterRecord {
    /// The record of `epoch` listing `members` (one entry per node id; a
    /// later duplicate wins).
    pub fn new(epoch: u32, members: &[Member]) -> ClusterRecord {
        let mut in_sync: Vec<String> = Vec::with_capacity(members.len());
        let mut dirs = BTreeMap::new();
        for m in members {
            if !in_sync.contains(&m.node_id) {
                in_sync.push(m.node_id.clone());
            }
            match &m.dir_id {
                Some(d) => dirs.insert(m.node_id.clone(), d.clone()),
                None => dirs.remove(&m.node_id),
            };
        }
        ClusterRecord {
            epoch,
            in_sync,
            dirs,
        }
    }

    /// The members the record lists, in its order.
    pub fn members(&self) -> Vec<Member> {
        self.in_sync
            .iter()
            .map(|node_id| Member {
                node_id: node_id.clone(),
                dir_id: self.dirs.get(node_id).cloned(),
            })
            .collect()
    }

    /// Whether node `node_id`, running on `dir`, may campaign under this
    /// record (sync mode): it must be listed, and on the directory listed
    /// for it. A member listed without a directory id (a record from a
    /// version before directory ids) stands only for a directory that held
    /// data before it had an id ([`DataDir::predates_ids`]): an emptied,
    /// new or restored directory never matches it. `dir` `None` (a session
    /// that runs on no data directory: tools, tests of the node-id rule)
    /// checks the node id alone.
    pub fn admits(&self, node_id: &str, dir: Option<&DataDir>) -> Result<()> {
        if !self.in_sync.iter().any(|m| m == node_id) {
            return Err(Error::NotInSync {
                node_id: node_id.to_string(),
            });
        }
        let Some(dir) = dir else {
            return Ok(());
        };
        let listed = self.dirs.get(node_id);
        let same = match listed {
            Some(listed) => *listed == dir.id,
            None => dir.predates_ids,
        };
        if same {
            return Ok(());
        }
        Err(Error::OtherDirectory {
            node_id: node_id.to_string(),
            listed: listed.cloned(),
            current: dir.id.clone(),
        })
    }
}

/// A member of the in-sync set: a node, and the data directory it ran on
/// when the master counted its acknowledgements (`None`: unknown, a replica
/// or a record from a version before directory ids).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    pub node_id: String,
    pub dir_id: Option<String>,
}

impl Member {
    pub fn new(node_id: impl Into<String>, dir_id: Option<String>) -> Member {
        Member {
            node_id: node_id.into(),
            dir_id,
        }
    }
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.dir_id {
            Some(d) => write!(f, "{} (directory {d})", self.node_id),
            None => write!(f, "{} (directory unknown)", self.node_id),
        }
    }
}

/// The data directory a node runs on, as its campaigns present it
/// (`DIR_ID`, docs/FORMAT.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    /// 32 lowercase hex digits.
    pub id: String,
    /// The directory held data before it had an id (a version before
    /// directory ids wrote it): it may be the one an older record lists
    /// without an id.
    pub predates_ids: bool,
}

/// The node a resigning holder handed the seat to (planned switchover):
/// other candidates let it take the seat first, for a bounded time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Successor {
    pub node_id: String,
    /// The epoch of the term that named it.
    pub epoch: u32,
}

/// One member's published state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberState {
    pub node_id: String,
    pub addr: String,
    pub role: Role,
    /// The newest epoch in its data directory.
    pub epoch: u32,
    /// Its log's end offset.
    pub log_end: u64,
    /// Why it does not campaign for leadership now (a tail it cut and has
    /// not fetched again from a master); `None`: it may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Replica,
}

/// Who may campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignRule {
    /// Any node (async mode).
    Anyone,
    /// Only a node listed in the cluster record's in-sync set, or any node
    /// while no record exists (sync mode). Checked in the same atomic
    /// update that takes leadership.
    InSyncOnly,
}

/// The outcome of [`Coordinator::campaign`].
#[derive(Debug, Clone)]
pub enum Campaign {
    Won(Leadership),
    /// Someone else holds it (`None`: it changed hands while we looked;
    /// campaign again).
    Lost(Option<Holder>),
}

/// The member that should campaign in async mode: the newest epoch, then
/// the longest log; ties go to the smallest node id so that every node
/// picks the same one.
pub fn most_advanced(members: &[MemberState]) -> Option<&MemberState> {
    members.iter().max_by(|a, b| {
        (a.epoch, a.log_end)
            .cmp(&(b.epoch, b.log_end))
            .then_with(|| b.node_id.cmp(&a.node_id))
    })
}

/// The epoch a campaign issues: one above both the coordinator's counter
/// and the candidate's newest local epoch.
pub fn next_epoch(stored: u32, local: u32) -> Result<u32> {
    stored
        .max(local)
        .checked_add(1)
        .ok_or(Error::EpochExhausted { stored, local })
}

/// Opens the backend `settings` name.
pub async fn connect(settings: &Settings) -> Result<Box<dyn Coordinator>> {
    match settings.backend {
        Backend::None => Ok(Box::new(Manual::new())),
        Backend::Etcd => {
            settings.validate_names()?;
            #[cfg(feature = "etcd")]
            return Ok(Box::new(etcd::Etcd::connect(settings).await?));
            #[cfg(not(feature = "etcd"))]
            return Err(Error::NotBuilt { backend: "etcd" });
        }
        Backend::Kubernetes => {
            settings.validate_names()?;
            #[cfg(feature = "kubernetes")]
            return Ok(Box::new(kubernetes::Kubernetes::connect(settings).await?));
            #[cfg(not(feature = "kubernetes"))]
            return Err(Error::NotBuilt {
                backend: "kubernetes",
            });
        }
    }
}

/// Follows the holder (see [`Coordinator::watch_holder`]). The task that
/// feeds it ends when this is dropped.
pub struct HolderWatch {
    rx: watch::Receiver<Option<Holder>>,
    /// Keeps a fixed watch's sender alive (no task behind it).
    _tx: Option<watch::Sender<Option<Holder>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl HolderWatch {
    /// A watch fed by `task` through the sender of `rx`.
    #[cfg_attr(not(any(feature = "etcd", feature = "kubernetes")), allow(dead_code))]
    pub(crate) fn spawned(
        rx: watch::Receiver<Option<Holder>>,
        task: tokio::task::JoinHandle<()>,
    ) -> HolderWatch {
        HolderWatch {
            rx,
            _tx: None,
            task: Some(task),
        }
    }

    /// A watch whose value never changes.
    pub(crate) fn fixed(value: Option<Holder>) -> HolderWatch {
        let (tx, rx) = watch::channel(value);
        HolderWatch {
            rx,
            _tx: Some(tx),
            task: None,
        }
    }

    /// The latest value seen.
    pub fn current(&self) -> Option<Holder> {
        self.rx.borrow().clone()
    }

    /// Waits for the next change and returns the new value. `None` from the
    /// outer option means the watch ended (only when its task failed for
    /// good, which the task logs).
    pub async fn changed(&mut self) -> Option<Option<Holder>> {
        self.rx.changed().await.ok()?;
        Some(self.rx.borrow_and_update().clone())
    }
}

impl Drop for HolderWatch {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A session publishes only its own node's state.
#[cfg_attr(not(any(feature = "etcd", feature = "kubernetes")), allow(dead_code))]
pub(crate) fn check_publisher(state: &MemberState, node_id: &str) -> Result<()> {
    if state.node_id == node_id {
        return Ok(());
    }
    Err(Error::Setting {
        setting: "--node-id",
        reason: format!("publishing {:?} from node {:?}", state.node_id, node_id),
    })
}

/// A record as stored in the coordinator (JSON).
#[cfg_attr(not(any(feature = "etcd", feature = "kubernetes")), allow(dead_code))]
pub(crate) fn encode<T: Serialize>(record: &T) -> String {
    // Serialising these plain structs cannot fail.
    serde_json::to_string(record).unwrap_or_default()
}

/// A record read from the coordinator; `key` names it in the error.
#[cfg_attr(not(any(feature = "etcd", feature = "kubernetes")), allow(dead_code))]
pub(crate) fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// Bounds one request to the coordinator by `after`.
#[cfg_attr(not(any(feature = "etcd", feature = "kubernetes")), allow(dead_code))]
pub(crate) async fn bounded<T, E>(
    backend: &'static str,
    what: &'static str,
    after: Duration,
    request: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> Result<T>
where
    Error: From<E>,
{
    match tokio::time::timeout(after, request).await {
        Ok(result) => result.map_err(Error::from),
        Err(_) => Err(Error::Timeout {
            backend,
            what,
            after,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, epoch: u32, log_end: u64) -> MemberState {
        MemberState {
            node_id: id.into(),
            addr: format!("{id}:5555"),
            role: Role::Replica,
            epoch,
            log_end,
            blocked: None,
        }
    }

    #[test]
    fn a_record_names_directories_and_reads_older_records_as_unknown() {
        let old: ClusterRecord = decode("k", br#"{"epoch":3,"in_sync":["a","b"]}"#).unwrap();
        assert!(old.dirs.is_empty());
        assert_eq!(
            old.members(),
            vec![Member::new("a", None), Member::new("b", None)]
        );
        let dir = |id: &str, predates_ids| DataDir {
            id: id.into(),
            predates_ids,
        };
        // An older record's member: only a directory from before ids.
        assert!(old.admits("a", Some(&dir("x", true))).is_ok());
        assert!(matches!(
            old.admits("a", Some(&dir("x", false))),
            Err(Error::OtherDirectory { listed: None, .. })
        ));
        assert!(matches!(
            old.admits("c", Some(&dir("x", true))),
            Err(Error::NotInSync { .. })
        ));
        assert!(old.admits("a", None).is_ok(), "no directory: node id only");

        let new = ClusterRecord::new(
            4,
            &[Member::new("a", Some("da".into())), Member::new("b", None)],
        );
        let json = encode(&new);
        assert_eq!(json, r#"{"epoch":4,"in_sync":["a","b"],"dirs":{"a":"da"}}"#);
        assert_eq!(decode::<ClusterRecord>("k", json.as_bytes()).unwrap(), new);
        assert!(new.admits("a", Some(&dir("da", false))).is_ok());
        // The listed directory is the only one: even one from before ids
        // does not stand for another.
        assert!(matches!(
            new.admits("a", Some(&dir("other", true))),
            Err(Error::OtherDirectory { .. })
        ));
        assert!(new.admits("b", Some(&dir("db", true))).is_ok());
    }

    #[test]
    fn next_epoch_is_one_above_the_larger() {
        assert_eq!(next_epoch(3, 7).unwrap(), 8);
        assert_eq!(next_epoch(8, 3).unwrap(), 9);
        assert_eq!(next_epoch(0, 0).unwrap(), 1);
        assert!(matches!(
            next_epoch(u32::MAX, 1),
            Err(Error::EpochExhausted { .. })
        ));
    }

    #[test]
    fn most_advanced_prefers_epoch_then_end_then_smallest_id() {
        let ms = [
            member("c", 2, 10),
            member("a", 3, 5),
            member("b", 3, 5),
            member("d", 3, 4),
        ];
        assert_eq!(most_advanced(&ms).unwrap().node_id, "a");
        let ms = [member("a", 2, 100), member("b", 3, 1)];
        assert_eq!(most_advanced(&ms).unwrap().node_id, "b");
        assert!(most_advanced(&[]).is_none());
    }
}
