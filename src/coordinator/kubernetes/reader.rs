//! Reading Leases, and judging their liveness from this process's own
//! observations (see the module header of `kubernetes`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::Api;

use super::{BACKEND, EPOCH, HOLDER_ADDR, IN_SYNC, SUCCESSOR};
use crate::coordinator::{
    bounded, decode, BootInstant, ClusterRecord, Error, Holder, Result, Successor,
};

/// Reads Leases and judges their liveness from this process's own
/// observations; shared with the holder watch's task.
#[derive(Clone)]
pub(super) struct Reader {
    pub leases: Api<Lease>,
    pub cluster: String,
    pub default_ttl_secs: i32,
    pub timeout: Duration,
    /// Per Lease name: the `resourceVersion` last seen and when it was
    /// first seen with that value.
    pub seen: Arc<parking_lot::Mutex<HashMap<String, (String, BootInstant)>>>,
}

/// What the cluster Lease says.
pub(super) struct View {
    pub holder: Option<Holder>,
    pub stored_epoch: u32,
    pub in_sync: Option<ClusterRecord>,
    /// The successor the last holder named, until the next election.
    pub successor: Option<Successor>,
    /// Whether the holder is live as this process observed it.
    pub live: bool,
}

impl Reader {
    pub fn member_name(&self, node_id: &str) -> String {
        format!("{}-member-{node_id}", self.cluster)
    }

    pub fn new_lease(&self, name: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec::default()),
        }
    }

    pub async fn get(&self, name: &str) -> Result<Option<Lease>> {
        bounded(
            BACKEND,
            "get Lease",
            self.timeout,
            self.leases.get_opt(name),
        )
        .await
    }

    pub async fn create(&self, lease: &Lease) -> Result<Lease> {
        let pp = PostParams::default();
        bounded(
            BACKEND,
            "create Lease",
            self.timeout,
            self.leases.create(&pp, lease),
        )
        .await
    }

    /// An update conditional on `lease.metadata.resourceVersion`.
    pub async fn replace(&self, lease: &Lease) -> Result<Lease> {
        let name = lease.metadata.name.clone().unwrap_or_default();
        let pp = PostParams::default();
        bounded(
            BACKEND,
            "update Lease",
            self.timeout,
            self.leases.replace(&name, &pp, lease),
        )
        .await
    }

    /// Records an observation of `lease`: the first time a
    /// `resourceVersion` is seen starts its clock.
    pub fn saw(&self, lease: &Lease) -> BootInstant {
        let name = lease.metadata.name.clone().unwrap_or_default();
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let mut seen = self.seen.lock();
        let entry = seen
            .entry(name)
            .or_insert_with(|| (rv.clone(), BootInstant::now()));
        if entry.0 != rv {
            *entry = (rv, BootInstant::now());
        }
        entry.1
    }

    /// Live: its holder is set and its `resourceVersion` changed less than
    /// `leaseDurationSeconds` ago on this process's clock.
    pub fn is_live(&self, lease: &Lease) -> bool {
        let held = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            .is_some_and(|h| !h.is_empty());
        held && BootInstant::now() < self.expires_at(lease)
    }

    /// When `lease` runs out on this process's clock: when this process
    /// first saw its `resourceVersion`, plus `leaseDurationSeconds`.
    pub fn expires_at(&self, lease: &Lease) -> BootInstant {
        let since = self.saw(lease);
        let secs = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .unwrap_or(self.default_ttl_secs);
        since.saturating_add(Duration::from_secs(u64::from(secs.max(0).unsigned_abs())))
    }

    pub fn view(&self, lease: &Lease) -> Result<View> {
        let name = lease.metadata.name.clone().unwrap_or_default();
        let notes = lease.metadata.annotations.as_ref();
        let note = |key: &str| notes.and_then(|a| a.get(key));
        let stored_epoch = match note(EPOCH) {
            Some(v) => v.parse().map_err(|_| Error::Corrupt {
                key: format!("Lease {name} annotation {EPOCH}"),
                reason: format!("not an epoch: {v:?}"),
            })?,
            None => 0,
        };
        let in_sync = note(IN_SYNC)
            .map(|v| decode(&format!("Lease {name} annotation {IN_SYNC}"), v.as_bytes()))
            .transpose()?;
        let successor = note(SUCCESSOR)
            .map(|v| {
                decode(
                    &format!("Lease {name} annotation {SUCCESSOR}"),
                    v.as_bytes(),
                )
            })
            .transpose()?;
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty())
            .map(|node_id| Holder {
                node_id,
                addr: note(HOLDER_ADDR).cloned().unwrap_or_default(),
                epoch: stored_epoch,
            });
        Ok(View {
            holder,
            stored_epoch,
            in_sync,
            successor,
            live: self.is_live(lease),
        })
    }

    /// The holder, if live as observed here.
    pub async fn holder(&self) -> Result<Option<Holder>> {
        match self.get(&self.cluster).await? {
            Some(lease) => {
                let view = self.view(&lease)?;
                Ok(view.holder.filter(|_| view.live))
            }
            None => Ok(None),
        }
    }
}

impl View {
    pub fn vacant() -> View {
        View {
            holder: None,
            stored_epoch: 0,
            in_sync: None,
            successor: None,
            live: false,
        }
    }
}
