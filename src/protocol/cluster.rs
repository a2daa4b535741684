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

/// A document with every part filled: n1's view of n0 holding epoch 3.
#[cfg(test)]
pub(crate) fn example() -> ClusterStatus {
    ClusterStatus {
        coordinator: "etcd".into(),
        node_id: "n1".into(),
        mode: "sync".into(),
        holder: Some(Holder {
            node_id: "n0".into(),
            addr: "10.0.0.2:5555".into(),
            epoch: 3,
        }),
        lease: Some(Lease {
            held_here: false,
            remaining_ms: Some(4000),
        }),
        in_sync: Some(InSync {
            epoch: 3,
            node_ids: vec!["n0".into(), "n1".into()],
        }),
        members: vec![Member {
            node_id: "n0".into(),
            addr: "10.0.0.2:5555".into(),
            role: "master".into(),
            epoch: 3,
            log_end: 10,
            lag_bytes: Some(0),
            in_sync: Some(true),
            blocked: None,
        }],
        errors: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> ClusterStatus {
        ClusterStatus {
            errors: vec!["x".into()],
            ..example()
        }
    }

    /// Every field the document carries is in PROTOCOL.md's table, named
    /// as a path (`lease.held_here`, `members[].lag_bytes`), so a field
    /// cannot be added or renamed without the page.
    #[test]
    fn every_field_is_documented() {
        let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md");
        let doc = std::fs::read_to_string(doc_path).expect("docs/PROTOCOL.md exists");
        let start = doc
            .find("### CLUSTER_STATUS_ANSWER")
            .expect("a CLUSTER_STATUS_ANSWER section");
        let section = &doc[start..];
        let section = &section[..section[4..].find("\n### ").map_or(section.len(), |i| i + 4)];
        let value = serde_json::to_value(full()).expect("serialises");
        let mut paths = Vec::new();
        collect("", &value, &mut paths);
        let missing: Vec<&String> = paths
            .iter()
            .filter(|p| !section.contains(&format!("`{p}`")))
            .collect();
        assert!(missing.is_empty(), "not in PROTOCOL.md: {missing:?}");
    }

    /// The paths of every field of `value`: `a`, `a.b`, `a[].c`.
    fn collect(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
        let Some(map) = value.as_object() else {
            return;
        };
        for (k, v) in map {
            let path = format!("{prefix}{k}");
            out.push(path.clone());
            collect(&format!("{path}."), v, out);
            if let Some(first) = v.as_array().and_then(|a| a.first()) {
                collect(&format!("{path}[]."), first, out);
            }
        }
    }

    #[test]
    fn a_document_from_an_older_node_without_newer_fields_reads() {
        let old = r#"{"coordinator":"none","node_id":"h:1","mode":"async","members":[]}"#;
        let status: ClusterStatus = serde_json::from_str(old).expect("reads");
        assert!(status.holder.is_none() && status.errors.is_empty());
        let back: ClusterStatus = serde_json::from_str(&full().to_json()).expect("roundtrips");
        assert_eq!(back, full());
    }
}
