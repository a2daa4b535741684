//! CLUSTER_STATUS (`kvstore cluster status`): the coordinator's view of
//! the cluster as this node sees it, for operators and scripts. Nothing is
//! decided on it.
//!
//! Invariants:
//! - The holder (with its lease), the in-sync set and the members are read
//!   from the coordinator at once, each read bounded by the request timeout
//!   (TTL/3): the answer never waits longer than one of them. A read that
//!   fails is named in `errors` and leaves its part empty; the answer is
//!   still sent.
//! - `lease.held_here` and its `remaining_ms` come from this node's own
//!   fence, the same check the write path makes; for another holder,
//!   from the backend's [`Coordinator::holder_lease`].
//! - This node's own entry in `members` is its state now, not as last
//!   published; on the master, a connected replica's log end is the end
//!   it acknowledged (newer than what it published up to TTL/3 ago); on a
//!   replica streaming from the holder, the holder's end is at least the
//!   one its stream last reported. Other figures are as each member last
//!   published them.
//!
//! [`Coordinator::holder_lease`]: crate::coordinator::Coordinator::holder_lease

use std::time::Duration;

use super::{members, Ha, Node};
use crate::coordinator::{self, Fence, MemberState, Role};
use crate::protocol::cluster::{ClusterStatus, Holder, InSync, Lease, Member};
use crate::replication::Mode;

/// The status document this node answers CLUSTER_STATUS with.
pub async fn cluster_status(node: &Node) -> ClusterStatus {
    match &node.ha {
        Some(ha) => ha.status(node).await,
        None => without_coordinator(node),
    }
}

impl Ha {
    async fn status(&self, node: &Node) -> ClusterStatus {
        let (holder, record, live) = tokio::join!(
            self.coordinator.holder_lease(),
            self.coordinator.cluster(),
            self.coordinator.members(),
        );
        let mut errors = Vec::new();
        let mut failed = |what: &str, e: coordinator::Error| {
            errors.push(format!("cannot read {what} from the coordinator: {e}"));
        };
        let holder = holder.unwrap_or_else(|e| {
            failed("the holder", e);
            None
        });
        let record = record.unwrap_or_else(|e| {
            failed("the in-sync set", e);
            None
        });
        let live = live.unwrap_or_else(|e| {
            failed("the members", e);
            Vec::new()
        });

        let fence: Option<Fence> = self.fence.lock().clone();
        let held_here = fence.as_ref().is_some_and(Fence::is_valid_now);
        let lease = match (&fence, &holder) {
            (Some(fence), _) if held_here => Some(Lease {
                held_here: true,
                remaining_ms: Some(millis(fence.remaining())),
            }),
            (_, Some(h)) => Some(Lease {
                held_here: false,
                remaining_ms: h.expires_in.map(millis),
            }),
            _ => None,
        };
        let mut holder = holder.map(|h| h.holder);
        if holder.is_none() && held_here {
            // The coordinator could not be read, but this node's term is
            // still within its fence: it is the holder.
            holder = self.coordinator.leadership().map(|l| l.holder);
        }

        let members = self.member_rows(node, live, holder.as_ref(), record.as_ref());
        ClusterStatus {
            coordinator: self.backend().name().to_string(),
            node_id: self.node_id.clone(),
            mode: mode_name(node).to_string(),
            holder: holder.map(|h| Holder {
                node_id: h.node_id,
                addr: h.addr,
                epoch: h.epoch,
            }),
            lease,
            in_sync: record.map(|r| InSync {
                epoch: r.epoch,
                node_ids: r.in_sync,
            }),
            members,
            errors,
        }
    }

    /// The live members with this node's state now, fresher replica ends
    /// on the master, and each one's lag behind the holder.
    fn member_rows(
        &self,
        node: &Node,
        mut live: Vec<MemberState>,
        holder: Option<&coordinator::Holder>,
        record: Option<&coordinator::ClusterRecord>,
    ) -> Vec<Member> {
        let me = members::state(node, self);
        live.retain(|m| m.node_id != me.node_id);
        live.push(me);
        let repl = node.replication.stats();
        if node.replication.is_master() {
            for replica in repl.replicas {
                if let Some(m) = live.iter_mut().find(|m| m.node_id == replica.id) {
                    m.log_end = replica.acked_offset;
                }
            }
        } else if let Some(h) =
            holder.filter(|h| repl.link_up && repl.master.as_ref() == Some(&h.addr))
        {
            // A replica streaming from the holder knows its end from the
            // last chunk or heartbeat, newer than its publish.
            let master_end = repl.end_offset.saturating_add(repl.lag_bytes);
            if let Some(m) = live.iter_mut().find(|m| m.node_id == h.node_id) {
                m.log_end = m.log_end.max(master_end);
            }
        }
        live.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let holder_end = holder.and_then(|h| {
            live.iter()
                .find(|m| m.node_id == h.node_id)
                .map(|m| m.log_end)
        });
        live.into_iter()
            .map(|m| Member {
                lag_bytes: holder_end.map(|end| end.saturating_sub(m.log_end)),
                in_sync: record.map(|r| r.in_sync.contains(&m.node_id)),
                node_id: m.node_id,
                addr: m.addr,
                role: role_name(m.role).to_string(),
                epoch: m.epoch,
                log_end: m.log_end,
                blocked: m.blocked,
            })
            .collect()
    }
}

/// `--coordinator none`: no holder, lease or in-sync set; this node alone
/// in `members`, named by its replica id (its advertised address).
fn without_coordinator(node: &Node) -> ClusterStatus {
    let settings = &node.replication.settings;
    let role = if node.replication.is_master() {
        Role::Master
    } else {
        Role::Replica
    };
    ClusterStatus {
        coordinator: coordinator::Backend::None.name().to_string(),
        node_id: settings.replica_id.clone(),
        mode: mode_name(node).to_string(),
        holder: None,
        lease: None,
        in_sync: None,
        members: vec![Member {
            node_id: settings.replica_id.clone(),
            addr: settings.advertise.clone(),
            role: role_name(role).to_string(),
            epoch: node.engine.current_epoch(),
            log_end: node.engine.end(),
            lag_bytes: None,
            in_sync: None,
            blocked: None,
        }],
        errors: Vec::new(),
    }
}

fn mode_name(node: &Node) -> &'static str {
    match node.replication.settings.mode {
        Mode::Sync => "sync",
        Mode::Async => "async",
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Master => "master",
        Role::Replica => "replica",
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
