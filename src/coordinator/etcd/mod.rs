//! The etcd backend (`--coordinator etcd`).
//!
//! Keys, under `/<cluster>/` (docs/FAILOVER.md, "etcd"):
//! - `leader`: the [`Holder`] as JSON, bound to the holder's etcd lease, so
//!   etcd deletes it when the lease expires.
//! - `epoch`: the epoch counter, decimal. Never bound to a lease: it
//!   outlives every holder.
//! - `in-sync`: the [`ClusterRecord`] as JSON. Never bound to a lease.
//! - `members/<node id>`: each member's [`MemberState`] as JSON, bound to
//!   that member's own lease.
//! - `successor`: the [`Successor`] a resigning holder named (planned
//!   switchover). Never bound to a lease; deleted by the Txn that next
//!   takes leadership.
//!
//! Invariants:
//! - Taking leadership is one Txn: `leader` absent AND `epoch` unchanged
//!   since it was read (its mod_revision) [AND `in-sync` unchanged, for
//!   [`CampaignRule::InSyncOnly`]] → put `leader` with the new lease and
//!   `epoch = max(stored, local) + 1`. A term is named by its lease and the
//!   Txn's revision (the `leader` key's create_revision). The in-sync rule
//!   (node id and data directory, [`ClusterRecord::admits`]) is checked on
//!   the record as read, and the Txn goes through only if `in-sync` is
//!   still that record.
//! - A renewal is a lease keep-alive whose send time is read before the
//!   request leaves, then a read that the `leader` key is still this term's;
//!   only then does the fence move, by the TTL etcd reported.
//! - Writing `in-sync` is one Txn comparing the `leader` key's lease and
//!   create_revision, the `epoch` value and `in-sync`'s mod_revision.
//! - Resigning in favour of a successor is one Txn comparing the `leader`
//!   key's lease and create_revision → delete `leader`, put `successor`.
//! - Every request is bounded by the request timeout: a hung etcd never
//!   hangs a renewal past the deadline.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, Txn, TxnOp,
};
use tokio::sync::{watch, Mutex};

mod follower;
mod keys;
mod pool;

use follower::Follower;
use keys::{first_kvs, granted, parse_epoch, Keys};
use pool::{Pool, BACKEND};

use super::term::{Slot, Terms};
use super::{
    bounded, check_publisher, decode, encode, next_epoch, Backend, BootInstant, Campaign,
    CampaignRule, ClusterRecord, Coordinator, Error, Fence, Holder, HolderLease, HolderWatch,
    Leadership, MemberState, Result, Settings, Successor, Timing,
};
use super::{DataDir, Member};

/// One node's session with etcd.
pub struct Etcd {
    pool: Arc<Pool>,
    keys: Keys,
    node_id: String,
    addr: String,
    /// The data directory presented when campaigning in sync mode.
    dir: Option<DataDir>,
    timing: Timing,
    /// The current term; its lock serialises campaign, renew and resign.
    terms: Terms<EtcdTerm>,
    /// The lease this node's `members/` key is bound to.
    member: Mutex<Option<KeptLease>>,
}

/// Names a term at etcd: the `leader` key's lease and create_revision.
struct EtcdTerm {
    lease: KeptLease,
    revision: i64,
}

/// An etcd lease and its keep-alive stream (opened on first use).
struct KeptLease {
    id: i64,
    stream: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
}

impl Etcd {
    /// Connects to `settings.etcd_endpoints` (connections are made lazily;
    /// an unreachable etcd shows up as errors from the operations).
    pub async fn connect(settings: &Settings) -> Result<Etcd> {
        let timing = settings.timing()?;
        if settings.etcd_endpoints.is_empty() {
            return Err(Error::Setting {
                setting: "--etcd-endpoints",
                reason: "at least one endpoint is needed with --coordinator etcd".into(),
            });
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(timing.request_timeout)
            // HTTP/2 pings find a dead connection under a long-lived stream.
            .with_keep_alive(timing.request_timeout, timing.request_timeout)
            .with_keep_alive_while_idle(true)
            // A member cut off from the etcd majority refuses at once.
            .with_require_leader(true);
        let mut clients = Vec::new();
        for endpoint in &settings.etcd_endpoints {
            let connect = Client::connect([endpoint], Some(options.clone()));
            clients.push(bounded(BACKEND, "connect", timing.request_timeout, connect).await?);
        }
        Ok(Etcd {
            pool: Arc::new(Pool {
                clients,
                current: AtomicUsize::new(0),
                timeout: timing.request_timeout,
            }),
            keys: Keys::new(&settings.cluster),
            node_id: settings.node_id.clone(),
            addr: settings.advertise_addr.clone(),
            dir: settings.data_dir.clone(),
            timing,
            terms: Terms::new(),
            member: Mutex::new(None),
        })
    }

    /// Grants a lease of the configured TTL; returns it with the TTL etcd
    /// granted (at least the TTL asked; etcd has a minimum).
    async fn grant(&self) -> Result<(KeptLease, Duration)> {
        let (at, mut c) = self.pool.pick();
        let grant = self
            .pool
            .request(
                at,
                "lease grant",
                c.lease_grant(self.timing.ttl_secs(), None),
            )
            .await?;
        let ttl = granted(grant.ttl())?;
        Ok((
            KeptLease {
                id: grant.id(),
                stream: None,
            },
            ttl,
        ))
    }

    /// Best effort: an unrevoked lease expires by itself after its TTL.
    async fn revoke(&self, lease: i64) {
        let (at, mut c) = self.pool.pick();
        if let Err(e) = self
            .pool
            .request(at, "lease revoke", c.lease_revoke(lease))
            .await
        {
            tracing::debug!(lease, error = %e, "etcd lease left to expire");
        }
    }

    /// One keep-alive round trip; the TTL etcd reports (`None`: the lease
    /// is gone). On any error the stream is dropped, so that a late answer
    /// to this request can never be taken for the answer to the next.
    async fn keep_alive(&self, lease: &mut KeptLease) -> Result<Option<Duration>> {
        let (at, mut c) = self.pool.pick();
        let id = lease.id;
        let stream = &mut lease.stream;
        let result = self
            .pool
            .request(at, "lease keep-alive", async {
                if stream.is_none() {
                    *stream = Some(c.lease_keep_alive(id).await?);
                }
                let Some((keeper, answers)) = stream.as_mut() else {
                    return Ok(None);
                };
                keeper.keep_alive().await?;
                Ok::<_, etcd_client::Error>(answers.message().await?.map(|a| a.ttl()))
            })
            .await;
        match result {
            Ok(Some(ttl)) if ttl > 0 => Ok(Some(granted(ttl)?)),
            Ok(_) => {
                lease.stream = None;
                Ok(None)
            }
            Err(e) => {
                lease.stream = None;
                Err(e)
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let (at, mut c) = self.pool.pick();
        let resp = self.pool.request(at, "get", c.get(key, None)).await?;
        Ok(resp.kvs().first().cloned())
    }

    async fn read_holder(&self) -> Result<Option<Holder>> {
        self.get(&self.keys.leader)
            .await?
            .map(|kv| decode(&self.keys.leader, kv.value()))
            .transpose()
    }

    /// Whether `kv` is the `leader` key of the term (lease, revision).
    fn is_term(kv: Option<&KeyValue>, lease: i64, revision: i64) -> bool {
        kv.is_some_and(|kv| kv.lease() == lease && kv.create_revision() == revision)
    }

    /// One attempt at taking leadership with a fresh lease. `Ok(None)`: lost
    /// a race on `epoch` or `in-sync` with the seat still vacant; try again.
    async fn try_campaign(
        &self,
        slot: &mut Slot<EtcdTerm>,
        local_epoch: u32,
        rule: CampaignRule,
    ) -> Result<Option<Campaign>> {
        // Read before anything else so a taken seat costs no lease.
        let snapshot = Txn::new().and_then([
            TxnOp::get(self.keys.leader.as_str(), None),
            TxnOp::get(self.keys.epoch.as_str(), None),
            TxnOp::get(self.keys.in_sync.as_str(), None),
        ]);
        let (at, mut c) = self.pool.pick();
        let read = self
            .pool
            .request(at, "read leadership", c.txn(snapshot))
            .await?;
        let [leader, epoch, in_sync] = first_kvs::<3>(read.op_responses());
        if let Some(kv) = leader {
            return Ok(Some(Campaign::Lost(Some(decode(
                &self.keys.leader,
                kv.value(),
            )?))));
        }
        let stored = match &epoch {
            Some(kv) => parse_epoch(&self.keys.epoch, kv.value())?,
            None => 0,
        };
        let mut compares = vec![
            Compare::version(self.keys.leader.as_str(), CompareOp::Equal, 0),
            Compare::mod_revision(
                self.keys.epoch.as_str(),
                CompareOp::Equal,
                epoch.as_ref().map_or(0, KeyValue::mod_revision),
            ),
        ];
        if rule == CampaignRule::InSyncOnly {
            if let Some(kv) = &in_sync {
                let record: ClusterRecord = decode(&self.keys.in_sync, kv.value())?;
                // Holds when the seat is taken: the Txn below compares
                // `in-sync`'s mod_revision with this read.
                record.admits(&self.node_id, self.dir.as_ref())?;
            }
            compares.push(Compare::mod_revision(
                self.keys.in_sync.as_str(),
                CompareOp::Equal,
                in_sync.as_ref().map_or(0, KeyValue::mod_revision),
            ));
        }
        let new_epoch = next_epoch(stored, local_epoch)?;
        let holder = Holder {
            node_id: self.node_id.clone(),
            addr: self.addr.clone(),
            epoch: new_epoch,
        };

        // The fence counts from before the lease exists at etcd.
        let send = BootInstant::now();
        let (lease, ttl) = self.grant().await?;
        let take = Txn::new()
            .when(compares)
            .and_then([
                TxnOp::put(
                    self.keys.leader.as_str(),
                    encode(&holder),
                    Some(PutOptions::new().with_lease(lease.id)),
                ),
                TxnOp::put(self.keys.epoch.as_str(), new_epoch.to_string(), None),
                // A successor named by the last holder has had its turn.
                TxnOp::delete(self.keys.successor.as_str(), None),
            ])
            .or_else([TxnOp::get(self.keys.leader.as_str(), None)]);
        let (at, mut c) = self.pool.pick();
        let taken = match self.pool.request(at, "take leadership", c.txn(take)).await {
            Ok(taken) => taken,
            Err(e) => {
                // Unknown outcome: if it went through, the key dies with
                // the lease.
                self.revoke(lease.id).await;
                return Err(e);
            }
        };
        if !taken.succeeded() {
            self.revoke(lease.id).await;
            let [leader] = first_kvs::<1>(taken.op_responses());
            return match leader {
                Some(kv) => Ok(Some(Campaign::Lost(Some(decode(
                    &self.keys.leader,
                    kv.value(),
                )?)))),
                None => Ok(None),
            };
        }
        let revision = taken.header().map_or(0, |h| h.revision());
        let leadership = Leadership {
            holder,
            ttl,
            margin: self.timing.margin,
            fence: Fence::new(send, ttl, self.timing.margin),
        };
        self.terms
            .begin(slot, leadership.clone(), EtcdTerm { lease, revision });
        Ok(Some(Campaign::Won(leadership)))
    }
}

#[async_trait]
impl Coordinator for Etcd {
    fn backend(&self) -> Backend {
        Backend::Etcd
    }

    async fn campaign(&self, local_epoch: u32, rule: CampaignRule) -> Result<Campaign> {
        let mut slot = self.terms.lock().await;
        match self.terms.still_held(&mut slot) {
            Ok(leadership) => return Ok(Campaign::Won(leadership)),
            // Ran out of time without a renewal: start over cleanly.
            Err(Some(old)) => self.revoke(old.lease.id).await,
            Err(None) => {}
        }
        // Races on `epoch` or `in-sync` with nobody holding the seat are
        // rare (two candidates at once); a few attempts settle them.
        for _ in 0..3 {
            if let Some(outcome) = self.try_campaign(&mut slot, local_epoch, rule).await? {
                return Ok(outcome);
            }
        }
        Ok(Campaign::Lost(None))
    }

    async fn renew(&self) -> Result<()> {
        let mut slot = self.terms.lock().await;
        let Some(term) = slot.as_mut() else {
            return Err(Error::NotLeader { epoch: None });
        };
        let (id, revision) = (term.at.lease.id, term.at.revision);
        let send = BootInstant::now();
        let kept = self.keep_alive(&mut term.at.lease).await;
        // Whatever the keep-alive said, etcd's word on the key decides
        // whether the term is over; a failed read leaves the fence alone.
        let leader = self.get(&self.keys.leader).await;
        match (kept, leader) {
            (_, Ok(kv)) if !Self::is_term(kv.as_ref(), id, revision) => {
                Err(self.terms.lose(&mut slot))
            }
            (Ok(None), _) => Err(self.terms.lose(&mut slot)),
            (Ok(Some(ttl)), Ok(_)) => {
                term.leadership.fence.extend(send, ttl, self.timing.margin);
                Ok(())
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }

    async fn resign(&self) -> Result<()> {
        let mut slot = self.terms.lock().await;
        let Some(term) = slot.as_ref() else {
            return Ok(());
        };
        let (id, revision) = (term.at.lease.id, term.at.revision);
        let _ = self.terms.lose(&mut slot);
        let release = Txn::new()
            .when([
                Compare::lease(self.keys.leader.as_str(), CompareOp::Equal, id),
                Compare::create_revision(self.keys.leader.as_str(), CompareOp::Equal, revision),
            ])
            .and_then([TxnOp::delete(self.keys.leader.as_str(), None)]);
        let (at, mut c) = self.pool.pick();
        self.pool.request(at, "resign", c.txn(release)).await?;
        self.revoke(id).await;
        Ok(())
    }

    async fn resign_to(&self, successor: &str) -> Result<()> {
        let mut slot = self.terms.lock().await;
        let Some(term) = slot.as_ref() else {
            return Err(Error::NotLeader { epoch: None });
        };
        let (id, revision, epoch) = (term.at.lease.id, term.at.revision, term.leadership.epoch());
        let _ = self.terms.lose(&mut slot);
        let named = Successor {
            node_id: successor.to_string(),
            epoch,
        };
        let hand_over = Txn::new()
            .when([
                Compare::lease(self.keys.leader.as_str(), CompareOp::Equal, id),
                Compare::create_revision(self.keys.leader.as_str(), CompareOp::Equal, revision),
            ])
            .and_then([
                TxnOp::delete(self.keys.leader.as_str(), None),
                TxnOp::put(self.keys.successor.as_str(), encode(&named), None),
            ]);
        let (at, mut c) = self.pool.pick();
        let done = self
            .pool
            .request(at, "resign to a successor", c.txn(hand_over))
            .await;
        // Whatever happened, the lease goes: an unknown outcome then
        // leaves the seat vacant rather than held for a TTL.
        self.revoke(id).await;
        if done?.succeeded() {
            Ok(())
        } else {
            Err(Error::NotLeader { epoch: Some(epoch) })
        }
    }

    async fn successor(&self) -> Result<Option<Successor>> {
        self.get(&self.keys.successor)
            .await?
            .map(|kv| decode(&self.keys.successor, kv.value()))
            .transpose()
    }

    fn leadership(&self) -> Option<Leadership> {
        self.terms.current()
    }

    async fn holder(&self) -> Result<Option<Holder>> {
        self.read_holder().await
    }

    async fn watch_holder(&self) -> Result<HolderWatch> {
        let (tx, rx) = watch::channel(self.read_holder().await?);
        let follower = Follower {
            pool: self.pool.clone(),
            key: self.keys.leader.clone(),
        };
        Ok(HolderWatch::spawned(rx, tokio::spawn(follower.run(tx))))
    }

    async fn cluster(&self) -> Result<Option<ClusterRecord>> {
        self.get(&self.keys.in_sync)
            .await?
            .map(|kv| decode(&self.keys.in_sync, kv.value()))
            .transpose()
    }

    async fn cas_cluster(
        &self,
        expected: Option<&ClusterRecord>,
        in_sync: Vec<Member>,
    ) -> Result<ClusterRecord> {
        let (id, revision, epoch, fence) = match self.terms.lock().await.as_ref() {
            Some(t) => (
                t.at.lease.id,
                t.at.revision,
                t.leadership.epoch(),
                t.leadership.fence.clone(),
            ),
            None => return Err(Error::NotLeader { epoch: None }),
        };
        let current = self.get(&self.keys.in_sync).await?;
        let record: Option<ClusterRecord> = current
            .as_ref()
            .map(|kv| decode(&self.keys.in_sync, kv.value()))
            .transpose()?;
        if record.as_ref() != expected {
            return Err(Error::Conflict);
        }
        let new = ClusterRecord::new(epoch, &in_sync);
        let cas = Txn::new()
            .when([
                Compare::lease(self.keys.leader.as_str(), CompareOp::Equal, id),
                Compare::create_revision(self.keys.leader.as_str(), CompareOp::Equal, revision),
                Compare::value(
                    self.keys.epoch.as_str(),
                    CompareOp::Equal,
                    epoch.to_string(),
                ),
                Compare::mod_revision(
                    self.keys.in_sync.as_str(),
                    CompareOp::Equal,
                    current.as_ref().map_or(0, KeyValue::mod_revision),
                ),
            ])
            .and_then([TxnOp::put(self.keys.in_sync.as_str(), encode(&new), None)])
            .or_else([TxnOp::get(self.keys.leader.as_str(), None)]);
        let (at, mut c) = self.pool.pick();
        let done = self
            .pool
            .request(at, "write in-sync set", c.txn(cas))
            .await?;
        if done.succeeded() {
            return Ok(new);
        }
        let [leader] = first_kvs::<1>(done.op_responses());
        if Self::is_term(leader.as_ref(), id, revision) {
            return Err(Error::Conflict);
        }
        // etcd shows the term over: stop acting on it at once.
        fence.revoke();
        let mut slot = self.terms.lock().await;
        if slot.as_ref().is_some_and(|t| t.at.revision == revision) {
            let _ = self.terms.lose(&mut slot);
        }
        Err(Error::NotLeader { epoch: Some(epoch) })
    }

    async fn publish(&self, state: &MemberState) -> Result<()> {
        check_publisher(state, &self.node_id)?;
        let mut slot = self.member.lock().await;
        // A lease that etcd no longer knows (expired while this node was
        // silent) fails to reopen its stream: any failure means a new one.
        let alive = match slot.as_mut() {
            Some(lease) => matches!(self.keep_alive(lease).await, Ok(Some(_))),
            None => false,
        };
        if !alive {
            *slot = Some(self.grant().await?.0);
        }
        let Some(lease) = slot.as_ref() else {
            return Ok(());
        };
        let key = format!("{}{}", self.keys.members, self.node_id);
        let (at, mut c) = self.pool.pick();
        let put = c.put(
            key,
            encode(state),
            Some(PutOptions::new().with_lease(lease.id)),
        );
        if let Err(e) = self.pool.request(at, "publish member", put).await {
            // The lease may have expired in between: start a new one next time.
            *slot = None;
            return Err(e);
        }
        Ok(())
    }

    async fn members(&self) -> Result<Vec<MemberState>> {
        let (at, mut c) = self.pool.pick();
        let opts = GetOptions::new().with_prefix();
        let resp = self
            .pool
            .request(
                at,
                "list members",
                c.get(self.keys.members.as_str(), Some(opts)),
            )
            .await?;
        let mut members: Vec<MemberState> = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                decode(&key, kv.value())
                    .map_err(|e| tracing::warn!(error = %e, "skipping a member record"))
                    .ok()
            })
            .collect();
        members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(members)
    }

    /// The `leader` key and what etcd says its lease has left (whole
    /// seconds; the lease ends in under that + 1 s).
    async fn holder_lease(&self) -> Result<Option<HolderLease>> {
        let Some(kv) = self.get(&self.keys.leader).await? else {
            return Ok(None);
        };
        let holder: Holder = decode(&self.keys.leader, kv.value())?;
        let (at, mut c) = self.pool.pick();
        let left = self
            .pool
            .request(
                at,
                "lease time-to-live",
                c.lease_time_to_live(kv.lease(), None),
            )
            .await?;
        // -1: the lease expired (or was revoked) since the key was read.
        let expires_in = Some(Duration::from_secs(u64::try_from(left.ttl()).unwrap_or(0)));
        Ok(Some(HolderLease { holder, expires_in }))
    }
}
