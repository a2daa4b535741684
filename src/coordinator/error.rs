//! Errors of the coordinator layer. Each variant says what an operator or
//! the node's role loop needs to act on; none is matched by its text.

use std::time::Duration;

/// What went wrong talking to, or reading from, the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This node does not hold leadership (never had it, resigned, or the
    /// coordinator shows another holder or term). Stop acting as master.
    #[error("this node does not hold leadership{}", match .epoch { Some(e) => format!(" in epoch {e}"), None => String::new() })]
    NotLeader { epoch: Option<u32> },

    /// A compare-and-set of the cluster record found another value than the
    /// one it was given: read it again.
    #[error("the cluster record changed since it was read")]
    Conflict,

    /// Only members of the published in-sync set may campaign.
    #[error("node {node_id} is not in the published in-sync set")]
    NotInSync { node_id: String },

    /// The node is listed in the in-sync set, but with another data
    /// directory than the one it runs on now (emptied, replaced or
    /// restored since): this directory may lack acknowledged writes.
    #[error(
        "node {node_id} is listed in the in-sync set with data directory {}, but runs on data directory {current}: this directory may lack acknowledged writes",
        listed.as_deref().unwrap_or("unknown (a record from a version before directory ids; only a directory that held data before it had an id matches it)")
    )]
    OtherDirectory {
        node_id: String,
        listed: Option<String>,
        current: String,
    },

    /// The coordinator did not answer in time; the outcome is unknown.
    #[error("{backend} did not answer within {after:?} ({what})")]
    Timeout {
        backend: &'static str,
        what: &'static str,
        after: Duration,
    },

    /// A record in the coordinator that kvstore cannot read.
    #[error("unreadable coordinator record {key}: {reason}")]
    Corrupt { key: String, reason: String },

    /// `max(stored, local) + 1` does not fit an epoch.
    #[error("epochs are exhausted (stored {stored}, local {local})")]
    EpochExhausted { stored: u32, local: u32 },

    /// A setting the backend cannot use.
    #[error("coordinator setting {setting}: {reason}")]
    Setting {
        setting: &'static str,
        reason: String,
    },

    /// A routing mark (a pod's role label) that could not be written.
    #[error("cannot label pod {pod}: {reason}")]
    Label { pod: String, reason: String },

    /// `--coordinator none`: roles are set by hand, there is no leadership
    /// to take or record to write.
    #[error("no coordinator (--coordinator none): roles are set by hand")]
    Manual,

    /// The binary was built without the backend's cargo feature.
    #[error(
        "this kvstore was built without the {backend} coordinator (cargo feature `{backend}`)"
    )]
    NotBuilt { backend: &'static str },

    #[cfg(feature = "etcd")]
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),

    #[cfg(feature = "kubernetes")]
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
