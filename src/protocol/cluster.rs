//! The CLUSTER_STATUS document: the coordinator's view of the cluster as
//! the answering node sees it, sent as JSON in CLUSTER_STATUS_ANSWER.
//!
//! The field names are a contract (docs/PROTOCOL.md lists them; scripts
//! read `kvstore cluster status --json`): add fields, never rename or
//! retype one. A reader ignores fields it does not know and takes a
//! missing optional field as absent, so old and new nodes and clients mix.

use serde::{Deserialize, Serialize};

/// What CLUSTER_STATUS answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The backend: `"etcd"`, `"kubernetes"`, or `"none"` (roles set by
    /// hand: no holder, lease or in-sync set; `members` lists only the
    /// answering node).
    pub coordinator: String,
    /// The answering node's id (with `none`: its replica id).
    pub node_id: String,
    /// `"sync"` or `"async"`: the answering node's replication mode.
    pub mode: String,
    /// Who holds leadership as the coordinator shows it now; `null` while
    /// the seat is vacant (or, on the Lease API, expired as this node
    /// observed it).
    #[serde(default)]
    pub holder: Option<Holder>,
    /// The holder's lease as the answering node sees it; `null` when no
    /// holder is known and this node holds no term.
    #[serde(default)]
    pub lease: Option<Lease>,
    /// Sync mode: the published in-sync set; `null` before any was
    /// published (and in async mode, where none is).
    #[serde(default)]
    pub in_sync: Option<InSync>,
    /// The live members, sorted by node id.
    #[serde(default)]
    pub members: Vec<Member>,
    /// What could not be read from the coordinator; the fields it would
    /// have filled are `null` (or `members` holds only this node).
    #[serde(default)]
    pub errors: Vec<String>,
}

/// The holder. Its fields are those of the coordinator's own record on
/// purpose, but it is a type of its own: the wire document is a contract
/// that must not change when the coordinator's storage does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub node_id: String,
    /// The client address it advertises (where REDIRECT points).
    pub addr: String,
    /// The epoch the coordinator issued with its term.
    pub epoch: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Whether the answering node holds the term itself, with its fence
    /// deadline not passed (it may acknowledge writes).
    pub held_here: bool,
    /// Milliseconds left, on the answering node's monotonic clock: its own
    /// fence deadline when `held_here` (renewals move it forward); else
    /// when the holder's lease runs out as this node can tell (Kubernetes:
    /// from when this node saw the Lease last change; etcd: the TTL etcd
    /// reports, whole seconds). `null`: unknown.
    #[serde(default)]
    pub remaining_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InSync {
    /// The epoch of the master that published the set.
    pub epoch: u32,
    /// Its members' node ids, the master included.
    pub node_ids: Vec<String>,
}

/// One live member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node_id: String,
    pub addr: String,
    /// `"master"` or `"replica"`, as it published.
    pub role: String,
    /// The newest epoch in its data directory.
    pub epoch: u32,
    /// Its log's end offset.
    pub log_end: u64,
    /// Bytes it is behind the holder's log end (0 at or past it); `null`
    /// when the holder's end is not known (no live holder).
    #[serde(default)]
    pub lag_bytes: Option<u64>,
    /// Whether the published in-sync set lists it; `null` without a set.
    #[serde(default)]
    pub in_sync: Option<bool>,
    /// Why it may not campaign, if it may not.
    #[serde(default)]
    pub blocked: Option<String>,
}

impl ClusterStatus {
    /// The document as sent.
    pub fn to_json(&self) -> String {
        // Plain strings and integers: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}
