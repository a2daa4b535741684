//! Routing on Kubernetes (`--kube-pod-selector`): the master labels its own
//! pod `kvstore.io/role=master` and every other pod the selector matches
//! `kvstore.io/role=replica`, so a Service that selects
//! `kvstore.io/role: master` follows the elected master
//! (docs/KUBERNETES.md, "Routing").
//!
//! Invariants:
//! - Labels only move forward in epochs. Each label is written together
//!   with the writer's epoch (annotation `kvstore.io/role-epoch`) by a JSON
//!   merge patch conditional on the pod's `resourceVersion` (a 409: read
//!   the pod again and decide again), and a pod whose annotation shows a
//!   newer epoch is left alone. So a late patch of an old master cannot
//!   undo a new master's labels, whatever order they arrive in.
//! - The master relabels EVERY other pod, not only its own: a dead or
//!   partitioned old master cannot take its own label off.
//! - The caller writes only while it holds a term of that epoch; a failure
//!   is returned, for the caller to log and retry: labels never hold up a
//!   write.

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::Api;
use serde_json::{json, Map, Value};

use super::{is_conflict, BACKEND};
use crate::coordinator::{bounded, Error, Result, Routing};

/// The label the master Service selects: `master` or `replica`.
pub const ROLE_LABEL: &str = "kvstore.io/role";
/// The epoch of the term that wrote [`ROLE_LABEL`].
pub const ROLE_EPOCH: &str = "kvstore.io/role-epoch";

/// Attempts at one pod's patch when its `resourceVersion` keeps moving.
const ATTEMPTS: usize = 3;

/// The pods' role labels, written by the master.
pub struct PodLabels {
    pods: Api<Pod>,
    /// This node's pod.
    pod_name: String,
    /// Finds every kvstore pod (the StatefulSet's selector).
    selector: String,
    timeout: Duration,
}

impl PodLabels {
    pub(super) fn new(
        pods: Api<Pod>,
        pod_name: String,
        selector: String,
        timeout: Duration,
    ) -> PodLabels {
        PodLabels {
            pods,
            pod_name,
            selector,
            timeout,
        }
    }

    /// Labels `pod` with `role` in `epoch`, unless it already shows that or
    /// a newer epoch. Returns whether it wrote.
    async fn label(&self, mut pod: Pod, role: &str, epoch: u32) -> Result<bool> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        for _ in 0..ATTEMPTS {
            let current = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(ROLE_LABEL))
                .map(String::as_str);
            let written_in = labelled_epoch(&pod);
            if written_in > epoch || (written_in == epoch && current == Some(role)) {
                return Ok(false);
            }
            let mut meta = Map::new();
            if let Some(rv) = &pod.metadata.resource_version {
                // A precondition, as in an update.
                meta.insert("resourceVersion".into(), json!(rv));
            }
            meta.insert("labels".into(), json!({ ROLE_LABEL: role }));
            meta.insert(
                "annotations".into(),
                json!({ ROLE_EPOCH: epoch.to_string() }),
            );
            let patch = Patch::Merge(json!({ "metadata": Value::Object(meta) }));
            let params = PatchParams::default();
            let written = bounded(
                BACKEND,
                "patch pod labels",
                self.timeout,
                self.pods.patch(&name, &params, &patch),
            )
            .await;
            match written {
                Ok(_) => return Ok(true),
                Err(e) if is_conflict(&e) => {
                    let again = bounded(BACKEND, "get pod", self.timeout, self.pods.get_opt(&name));
                    match again.await? {
                        Some(now) => pod = now,
                        // Gone: its replacement is labelled on a later round.
                        None => return Ok(false),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Label {
            pod: name,
            reason: format!("its resourceVersion changed {ATTEMPTS} times in a row"),
        })
    }
}

/// The epoch of the term that last labelled `pod` (0: none, or a value
/// kvstore did not write).
fn labelled_epoch(pod: &Pod) -> u32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ROLE_EPOCH))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[async_trait]
impl Routing for PodLabels {
    async fn mark_master(&self, epoch: u32) -> Result<usize> {
        let params = ListParams::default().labels(&self.selector);
        let list = bounded(BACKEND, "list pods", self.timeout, self.pods.list(&params)).await?;
        let mut pods = list.items;
        let mine = |p: &Pod| p.metadata.name.as_deref() == Some(self.pod_name.as_str());
        if !pods.iter().any(mine) {
            return Err(Error::Label {
                pod: self.pod_name.clone(),
                reason: format!(
                    "no pod of that name matches the selector {:?} (--kube-pod-selector)",
                    self.selector
                ),
            });
        }
        // Its own pod first: the master Service gains the new master
        // before it loses the old one.
        pods.sort_by_key(|p| !mine(p));
        let mut changed = 0;
        let mut failed = None;
        for pod in pods {
            let role = if mine(&pod) { "master" } else { "replica" };
            // One pod that cannot be labelled does not stop the others.
            match self.label(pod, role, epoch).await {
                Ok(wrote) => changed += usize::from(wrote),
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(changed),
        }
    }
}
