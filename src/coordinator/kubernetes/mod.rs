//! The Kubernetes backend (`--coordinator kubernetes`): a
//! `coordination.k8s.io/v1` Lease per cluster, updated with optimistic
//! concurrency on `resourceVersion` (a 409 means someone else moved first).
//!
//! Objects, in the pod's namespace (docs/FAILOVER.md, "Kubernetes"):
//! - Lease `<cluster>`: `spec.holderIdentity` (the node id, empty when
//!   vacant), `spec.leaseDurationSeconds` (the holder's TTL), `renewTime`
//!   and `acquireTime` (informational only), and the annotations
//!   `kvstore.io/epoch` (the epoch counter), `kvstore.io/holder-addr`,
//!   `kvstore.io/in-sync` (the [`ClusterRecord`] as JSON) and, after a
//!   planned switchover until the next election, `kvstore.io/successor`
//!   (the [`Successor`] as JSON).
//! - Lease `<cluster>-member-<node id>` per member, labelled
//!   `kvstore.io/cluster=<cluster>` and `kvstore.io/record=member`, its
//!   [`MemberState`] as JSON in `kvstore.io/member`.
//! - With `--kube-pod-selector`, the pods' `kvstore.io/role` labels, which
//!   the master keeps pointing at itself ([`pods`]).
//!
//! Invariants:
//! - Taking leadership is one update of the Lease, conditional on the
//!   `resourceVersion` read, that sets the holder and the epoch
//!   annotation to `max(stored, local) + 1`. `leaseTransitions` is kept up
//!   for other tools and never read.
//! - Expiry is judged by each candidate from when IT saw the Lease's
//!   `resourceVersion` last change, on its own `CLOCK_BOOTTIME`, plus
//!   `leaseDurationSeconds`; never by comparing `renewTime` with a wall
//!   clock (clock offset between nodes would break fencing). A Lease first
//!   seen counts as just renewed.
//! - The in-sync set lives in the same Lease, so writing it is conditional
//!   on the holder and epoch that the same `resourceVersion` shows; so
//!   does the successor, which the update that frees the seat names and
//!   the update that next takes it removes. A campaign's in-sync check
//!   (node id and data directory, [`ClusterRecord::admits`]) holds when
//!   the seat is taken: the update that takes it is conditional on the
//!   `resourceVersion` it was read at.
//! - Every request is bounded by the request timeout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client, Config};
use tokio::sync::{watch, Mutex};

use crate::security::tls::load_certs;

mod pods;
mod reader;

pub use pods::{PodLabels, ROLE_EPOCH, ROLE_LABEL};
use reader::{Reader, View};

use super::term::{Slot, Terms};
use super::{
    bounded, check_publisher, decode, encode, next_epoch, Backend, BootInstant, Campaign,
    CampaignRule, ClusterRecord, Coordinator, Error, Fence, Holder, HolderLease, HolderWatch,
    Leadership, MemberState, Result, Settings, Successor, Timing,
};
use super::{DataDir, Member};

const BACKEND: &str = "Kubernetes API";
const EPOCH: &str = "kvstore.io/epoch";
const HOLDER_ADDR: &str = "kvstore.io/holder-addr";
const IN_SYNC: &str = "kvstore.io/in-sync";
const SUCCESSOR: &str = "kvstore.io/successor";
const MEMBER: &str = "kvstore.io/member";
const CLUSTER_LABEL: &str = "kvstore.io/cluster";
const RECORD_LABEL: &str = "kvstore.io/record";

/// One node's session with the Lease API.
pub struct Kubernetes {
    reader: Reader,
    node_id: String,
    addr: String,
    /// The data directory presented when campaigning in sync mode.
    dir: Option<DataDir>,
    timing: Timing,
    /// The current term; the lock serialises every write of the Lease
    /// (campaign, renew, resign, in-sync), so this session never races
    /// itself on `resourceVersion`.
    /// The Lease as this term last wrote it (its `resourceVersion` is the
    /// precondition of the next write).
    terms: Terms<Lease>,
    /// Serialises this node's member Lease writes.
    member: Mutex<()>,
}

impl Kubernetes {
    /// Opens the session: the API client of [`client`].
    pub async fn connect(settings: &Settings) -> Result<Kubernetes> {
        let timing = settings.timing()?;
        let (client, namespace) = client(settings, &timing)?;
        let default_ttl_secs = i32::try_from(timing.ttl_secs()).map_err(|_| Error::Setting {
            setting: "--lease-ttl-ms",
            reason: "too large for leaseDurationSeconds".into(),
        })?;
        Ok(Kubernetes {
            reader: Reader {
                leases: Api::namespaced(client, &namespace),
                cluster: settings.cluster.clone(),
                default_ttl_secs,
                timeout: timing.request_timeout,
                seen: Arc::default(),
            },
            node_id: settings.node_id.clone(),
            addr: settings.advertise_addr.clone(),
            dir: settings.data_dir.clone(),
            timing,
            terms: Terms::new(),
            member: Mutex::new(()),
        })
    }

    fn is_me(&self, view: &View, epoch: u32) -> bool {
        view.holder
            .as_ref()
            .is_some_and(|h| h.node_id == self.node_id && h.epoch == epoch)
    }

    /// The cluster Lease with this node as holder in `epoch`.
    fn claimed(&self, base: Lease, epoch: u32) -> Lease {
        let now = MicroTime(Timestamp::now());
        let mut lease = base;
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.node_id.as_str()) {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.holder_identity = Some(self.node_id.clone());
        spec.lease_duration_seconds = Some(self.reader.default_ttl_secs);
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        let notes = lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
        notes.insert(EPOCH.into(), epoch.to_string());
        notes.insert(HOLDER_ADDR.into(), self.addr.clone());
        // A successor named by the last holder has had its turn.
        notes.remove(SUCCESSOR);
        lease
    }

    /// One attempt at taking the seat. `Ok(None)`: lost a race on
    /// `resourceVersion`; read again.
    async fn try_campaign(
        &self,
        slot: &mut Slot<Lease>,
        local_epoch: u32,
        rule: CampaignRule,
    ) -> Result<Option<Campaign>> {
        let read = self.reader.get(&self.reader.cluster).await?;
        let (base, view) = match read {
            Some(lease) => {
                let view = self.reader.view(&lease)?;
                (lease, view)
            }
            None => (self.reader.new_lease(&self.reader.cluster), View::vacant()),
        };
        if view.live {
            return Ok(Some(Campaign::Lost(view.holder)));
        }
        if rule == CampaignRule::InSyncOnly {
            if let Some(record) = &view.in_sync {
                // Holds when the seat is taken: the update below is
                // conditional on the resourceVersion this was read at.
                record.admits(&self.node_id, self.dir.as_ref())?;
            }
        }
        let epoch = next_epoch(view.stored_epoch, local_epoch)?;
        let exists = base.metadata.resource_version.is_some();
        let claim = self.claimed(base, epoch);
        let send = BootInstant::now();
        let written = if exists {
            self.reader.replace(&claim).await
        } else {
            self.reader.create(&claim).await
        };
        let lease = match written {
            Ok(lease) => lease,
            Err(e) if is_conflict(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        self.reader.saw(&lease);
        let ttl = Duration::from_secs(u64::from(self.reader.default_ttl_secs.unsigned_abs()));
        let leadership = Leadership {
            holder: Holder {
                node_id: self.node_id.clone(),
                addr: self.addr.clone(),
                epoch,
            },
            ttl,
            margin: self.timing.margin,
            fence: Fence::new(send, ttl, self.timing.margin),
        };
        self.terms.begin(slot, leadership.clone(), lease);
        Ok(Some(Campaign::Won(leadership)))
    }

    /// Writes `change` applied to the term's Lease. On a 409, re-reads: if
    /// the Lease still shows this term, retries on the new version;
    /// otherwise the term is over. Returns the send time of the write that
    /// went through.
    async fn write_term(
        &self,
        slot: &mut Slot<Lease>,
        change: impl Fn(&mut Lease),
    ) -> Result<BootInstant> {
        for _ in 0..3 {
            let Some(term) = slot.as_mut() else {
                return Err(Error::NotLeader { epoch: None });
            };
            let epoch = term.leadership.epoch();
            let mut lease = term.at.clone();
            change(&mut lease);
            let send = BootInstant::now();
            match self.reader.replace(&lease).await {
                Ok(written) => {
                    self.reader.saw(&written);
                    term.at = written;
                    return Ok(send);
                }
                Err(e) if is_conflict(&e) || is_not_found(&e) => {
                    let current = self.reader.get(&self.reader.cluster).await?;
                    match current {
                        Some(now) if self.is_me(&self.reader.view(&now)?, epoch) => term.at = now,
                        _ => return Err(self.terms.lose(slot)),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict)
    }
}

#[async_trait]
impl Coordinator for Kubernetes {
    fn backend(&self) -> Backend {
        Backend::Kubernetes
    }

    async fn campaign(&self, local_epoch: u32, rule: CampaignRule) -> Result<Campaign> {
        let mut slot = self.terms.lock().await;
        if let Ok(leadership) = self.terms.still_held(&mut slot) {
            return Ok(Campaign::Won(leadership));
        }
        for _ in 0..3 {
            if let Some(outcome) = self.try_campaign(&mut slot, local_epoch, rule).await? {
                return Ok(outcome);
            }
        }
        Ok(Campaign::Lost(self.holder().await?))
    }

    async fn renew(&self) -> Result<()> {
        let mut slot = self.terms.lock().await;
        let send = self
            .write_term(&mut slot, |lease| {
                if let Some(spec) = lease.spec.as_mut() {
                    spec.renew_time = Some(MicroTime(Timestamp::now()));
                }
            })
            .await?;
        if let Some(term) = slot.as_ref() {
            let l = &term.leadership;
            l.fence.extend(send, l.ttl, l.margin);
        }
        Ok(())
    }

    async fn resign(&self) -> Result<()> {
        let mut slot = self.terms.lock().await;
        let Some(term) = slot.as_ref() else {
            return Ok(());
        };
        term.leadership.fence.revoke();
        let released = self
            .write_term(&mut slot, |lease| {
                if let Some(spec) = lease.spec.as_mut() {
                    spec.holder_identity = None;
                    spec.renew_time = Some(MicroTime(Timestamp::now()));
                }
            })
            .await;
        let _ = self.terms.lose(&mut slot);
        match released {
            // Someone else already holds it: nothing left to give up.
            Ok(_) | Err(Error::NotLeader { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn resign_to(&self, successor: &str) -> Result<()> {
        let mut slot = self.terms.lock().await;
        let Some(term) = slot.as_ref() else {
            return Err(Error::NotLeader { epoch: None });
        };
        term.leadership.fence.revoke();
        let named = encode(&Successor {
            node_id: successor.to_string(),
            epoch: term.leadership.epoch(),
        });
        let released = self
            .write_term(&mut slot, |lease| {
                if let Some(spec) = lease.spec.as_mut() {
                    spec.holder_identity = None;
                    spec.renew_time = Some(MicroTime(Timestamp::now()));
                }
                let notes = lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
                notes.insert(SUCCESSOR.into(), named.clone());
            })
            .await;
        let _ = self.terms.lose(&mut slot);
        released.map(|_| ())
    }

    async fn successor(&self) -> Result<Option<Successor>> {
        match self.reader.get(&self.reader.cluster).await? {
            Some(lease) => self.reader.view(&lease).map(|v| v.successor),
            None => Ok(None),
        }
    }

    fn leadership(&self) -> Option<Leadership> {
        self.terms.current()
    }

    async fn holder(&self) -> Result<Option<Holder>> {
        self.reader.holder().await
    }

    async fn watch_holder(&self) -> Result<HolderWatch> {
        let (tx, rx) = watch::channel(self.reader.holder().await?);
        let reader = self.reader.clone();
        // client-go polls every 2 s with its 15 s lease; the same ratio.
        let every = self.timing.ttl * 2 / 15;
        let task = async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = tx.closed() => return,
                }
                match reader.holder().await {
                    Ok(holder) => {
                        tx.send_if_modified(|v| {
                            let changed = *v != holder;
                            *v = holder;
                            changed
                        });
                    }
                    Err(e) => tracing::debug!(error = %e, "Lease holder poll failed"),
                }
            }
        };
        Ok(HolderWatch::spawned(rx, tokio::spawn(task)))
    }

    async fn cluster(&self) -> Result<Option<ClusterRecord>> {
        match self.reader.get(&self.reader.cluster).await? {
            Some(lease) => Ok(self.reader.view(&lease)?.in_sync),
            None => Ok(None),
        }
    }

    async fn cas_cluster(
        &self,
        expected: Option<&ClusterRecord>,
        in_sync: Vec<Member>,
    ) -> Result<ClusterRecord> {
        let mut slot = self.terms.lock().await;
        let Some(term) = slot.as_mut() else {
            return Err(Error::NotLeader { epoch: None });
        };
        let epoch = term.leadership.epoch();
        // Read fresh: the record must be compared as the API shows it now,
        // under the resourceVersion the write will be conditional on.
        let current = match self.reader.get(&self.reader.cluster).await? {
            Some(lease) => lease,
            None => return Err(self.terms.lose(&mut slot)),
        };
        let view = self.reader.view(&current)?;
        if !self.is_me(&view, epoch) {
            return Err(self.terms.lose(&mut slot));
        }
        if view.in_sync.as_ref() != expected {
            return Err(Error::Conflict);
        }
        term.at = current;
        let record = ClusterRecord::new(epoch, &in_sync);
        let value = encode(&record);
        let written = self
            .write_term(&mut slot, |lease| {
                let notes = lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
                notes.insert(IN_SYNC.into(), value.clone());
            })
            .await;
        written.map(|_| record)
    }

    async fn publish(&self, state: &MemberState) -> Result<()> {
        check_publisher(state, &self.node_id)?;
        let _serial = self.member.lock().await;
        let name = self.reader.member_name(&self.node_id);
        let existing = self.reader.get(&name).await?;
        let exists = existing.is_some();
        let mut lease = existing.unwrap_or_else(|| self.reader.new_lease(&name));
        let labels = lease.metadata.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(CLUSTER_LABEL.into(), self.reader.cluster.clone());
        labels.insert(RECORD_LABEL.into(), "member".into());
        let notes = lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
        notes.insert(MEMBER.into(), encode(state));
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(self.node_id.clone());
        spec.lease_duration_seconds = Some(self.reader.default_ttl_secs);
        // Changes on every publish, so the resourceVersion moves and
        // observers see the member alive.
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        let written = if exists {
            self.reader.replace(&lease).await?
        } else {
            self.reader.create(&lease).await?
        };
        self.reader.saw(&written);
        Ok(())
    }

    async fn members(&self) -> Result<Vec<MemberState>> {
        let selector = format!(
            "{CLUSTER_LABEL}={},{RECORD_LABEL}=member",
            self.reader.cluster
        );
        let params = ListParams::default().labels(&selector);
        let list = bounded(
            BACKEND,
            "list members",
            self.reader.timeout,
            self.reader.leases.list(&params),
        )
        .await?;
        let mut members = Vec::new();
        for lease in &list.items {
            if !self.reader.is_live(lease) {
                continue;
            }
            let name = lease.metadata.name.clone().unwrap_or_default();
            let note = lease
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(MEMBER));
            match note.map(|n| decode::<MemberState>(&name, n.as_bytes())) {
                Some(Ok(state)) => members.push(state),
                Some(Err(e)) => tracing::warn!(error = %e, "skipping a member record"),
                None => tracing::warn!(lease = %name, "member Lease without {MEMBER}"),
            }
        }
        members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(members)
    }

    /// The live holder and when its Lease runs out as this process
    /// observed it (the judgement a campaign makes).
    async fn holder_lease(&self) -> Result<Option<HolderLease>> {
        let Some(lease) = self.reader.get(&self.reader.cluster).await? else {
            return Ok(None);
        };
        let view = self.reader.view(&lease)?;
        let expires_in = self
            .reader
            .expires_at(&lease)
            .saturating_duration_since(BootInstant::now());
        Ok(view.holder.filter(|_| view.live).map(|holder| HolderLease {
            holder,
            expires_in: Some(expires_in),
        }))
    }
}

/// The API client and namespace `settings` name:
/// `settings.kubernetes.api_url` and `token` when given (tests, the
/// stand-in), otherwise the pod's service account. Every request is
/// bounded by the request timeout, and never retried here.
fn client(settings: &Settings, timing: &Timing) -> Result<(Client, String)> {
    let k = &settings.kubernetes;
    let mut config = match &k.api_url {
        Some(url) => Config::new(url.parse().map_err(|e| Error::Setting {
            setting: "Kubernetes API URL",
            reason: format!("{url:?}: {e}"),
        })?),
        None => Config::incluster().map_err(|e| Error::Setting {
            setting: "--coordinator kubernetes",
            reason: format!("no in-cluster configuration (service account): {e}"),
        })?,
    };
    if let Some(token) = &k.token {
        config.auth_info.token = Some(token.clone().into());
    }
    if let Some(ca) = &k.ca_file {
        let what = "Kubernetes API CA file";
        let certs = load_certs(what, ca).map_err(|e| Error::Setting {
            setting: what,
            reason: e.to_string(),
        })?;
        config.root_cert = Some(certs.iter().map(|c| c.to_vec()).collect());
    }
    // This layer retries on its own schedule, and bounds every request.
    config.default_retry = false;
    config.connect_timeout = Some(timing.request_timeout);
    config.read_timeout = Some(timing.request_timeout);
    config.write_timeout = Some(timing.request_timeout);
    let namespace = k
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((Client::try_from(config)?, namespace))
}

/// The pods' role labels (`--kube-pod-selector`), through the same API
/// client settings as the Lease.
pub async fn pod_labels(settings: &Settings) -> Result<PodLabels> {
    let timing = settings.timing()?;
    let k = &settings.kubernetes;
    let (Some(pod), Some(selector)) = (&k.pod_name, &k.pod_selector) else {
        return Err(Error::Setting {
            setting: "--kube-pod-selector",
            reason: "needs this pod's name (--pod-name, or HOSTNAME)".into(),
        });
    };
    let (client, namespace) = client(settings, &timing)?;
    Ok(PodLabels::new(
        Api::namespaced(client, &namespace),
        pod.clone(),
        selector.clone(),
        timing.request_timeout,
    ))
}

fn is_conflict(e: &Error) -> bool {
    matches!(e, Error::Kube(kube::Error::Api(s)) if s.code == 409)
}

fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Kube(kube::Error::Api(s)) if s.code == 404)
}
