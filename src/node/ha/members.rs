//! Member state: what each node publishes about itself (role, newest
//! epoch, log end, whether it may campaign), and the async-mode rule that
//! the most advanced live candidate takes a vacant seat.
//!
//! Invariants:
//! - A node publishes every TTL/3 and at once whenever its role changes;
//!   a candidate also publishes right after it stopped following for a
//!   campaign, so its log end is final when others compare.
//! - Async mode: a candidate compares itself with the live members that
//!   are candidates too (role replica, not blocked) by (epoch, log end),
//!   ties to the smallest node id (`coordinator::most_advanced`). The most
//!   advanced one campaigns at once; any other waits `--campaign-grace-ms`
//!   for it to take the seat, then campaigns itself (the most advanced one
//!   may be stopped or unable to), so the rule costs at most the grace.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info};

use super::{blocked, Ha, Node};
use crate::coordinator::{self, MemberState, Role};
use crate::replication::Mode;

/// This node's state now.
pub(super) fn state(node: &Node, ha: &Ha) -> MemberState {
    MemberState {
        node_id: ha.node_id.clone(),
        addr: ha.addr.clone(),
        role: if node.replication.is_master() {
            Role::Master
        } else {
            Role::Replica
        },
        epoch: node.engine.current_epoch(),
        log_end: node.engine.end(),
        blocked: blocked(node, ha),
    }
}

/// Publishes this node's state now.
pub(super) async fn publish(node: &Node, ha: &Ha) {
    if let Err(e) = ha.coordinator.publish(&state(node, ha)).await {
        debug!("cannot publish member state: {e}");
    }
}

/// Publishes every TTL/3 and on each change of role, until aborted. In
/// sync mode it first looks whether the in-sync set lists this node with
/// another data directory, so that the state says so.
pub(super) async fn publish_loop(node: Arc<Node>, ha: Arc<Ha>) {
    let mut role = node.replication.watch_role();
    loop {
        // A master wrote the record itself, listing its own directory.
        if node.replication.settings.mode == Mode::Sync && !node.replication.is_master() {
            ha.check_dir().await;
        }
        publish(&node, &ha).await;
        tokio::select! {
            changed = role.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(ha.period) => {}
        }
    }
}

/// Async mode, the seat vacant and this node standing by: whether to
/// campaign now. `false`: another candidate is more advanced and took the
/// seat within the grace (the caller follows it).
pub(super) async fn my_turn(node: &Node, ha: &Ha) -> bool {
    publish(node, ha).await;
    let grace = ha.policy.campaign_grace;
    // Others that saw the seat go vacant publish their final ends now too.
    tokio::time::sleep(settle(grace)).await;
    let members = match ha.coordinator.members().await {
        Ok(members) => members,
        Err(e) => {
            debug!("cannot list members ({e}); campaigning");
            return true;
        }
    };
    let me = state(node, ha);
    let Some(best) = ahead_of(&me, &members) else {
        return true;
    };
    info!(
        ahead = %best.node_id,
        epoch = best.epoch,
        log_end = best.log_end,
        my_epoch = me.epoch,
        my_log_end = me.log_end,
        ?grace,
        "a more advanced candidate should take the seat; waiting for it"
    );
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(settle(grace)).await;
        if let Ok(Some(_)) = ha.coordinator.holder().await {
            return false;
        }
    }
    info!(ahead = %best.node_id, "it did not take the seat within the grace; campaigning");
    true
}

/// A fifth of the grace, between 10 ms and 250 ms.
fn settle(grace: Duration) -> Duration {
    (grace / 5).clamp(Duration::from_millis(10), Duration::from_millis(250))
}

/// The most advanced live candidate, if it is not `me` and is strictly
/// ahead of it (or level with a smaller id).
fn ahead_of(me: &MemberState, members: &[MemberState]) -> Option<MemberState> {
    let mut candidates: Vec<MemberState> = members
        .iter()
        .filter(|m| m.role == Role::Replica && m.blocked.is_none() && m.node_id != me.node_id)
        .cloned()
        .collect();
    candidates.push(me.clone());
    let best = coordinator::most_advanced(&candidates)?;
    (best.node_id != me.node_id).then(|| best.clone())
}

/// What the coordinator shows about who could take this master's seat:
/// the live members' states and, in sync mode, the published in-sync set.
/// One rule for a planned switchover and for a poisoned master's release.
pub(super) struct Seat {
    members: Vec<MemberState>,
    in_sync: Option<Vec<String>>,
}

impl Seat {
    pub(super) async fn read(node: &Node, ha: &Ha) -> coordinator::Result<Seat> {
        let members = ha.coordinator.members().await?;
        let in_sync = match node.replication.settings.mode {
            Mode::Sync => ha.coordinator.cluster().await?.map(|record| record.in_sync),
            Mode::Async => None,
        };
        Ok(Seat { members, in_sync })
    }

    /// The live members' states, sorted by node id.
    pub(super) fn members(&self) -> &[MemberState] {
        &self.members
    }

    /// The client address member `id` publishes (empty when it has none).
    pub(super) fn addr_of(&self, id: &str) -> String {
        self.member(id).map(|m| m.addr.clone()).unwrap_or_default()
    }

    fn member(&self, id: &str) -> Option<&MemberState> {
        self.members.iter().find(|m| m.node_id == id)
    }

    /// Why member `id` may not take the seat (`None`: it may): it must
    /// have a live member state, may campaign, and in sync mode be in the
    /// in-sync set.
    pub(super) fn why_not(&self, id: &str) -> Option<String> {
        let Some(member) = self.member(id) else {
            return Some("it has no live member state in the coordinator".into());
        };
        if let Some(blocked) = &member.blocked {
            return Some(format!("it may not campaign: {blocked}"));
        }
        match &self.in_sync {
            Some(set) if !set.iter().any(|m| m == id) => Some(format!(
                "it is not in the in-sync set ({}), so it may lack acknowledged writes",
                set.join(", ")
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, role: Role, epoch: u32, log_end: u64) -> MemberState {
        MemberState {
            node_id: id.into(),
            addr: format!("{id}:5555"),
            role,
            epoch,
            log_end,
            blocked: None,
        }
    }

    #[test]
    fn only_live_unblocked_candidates_are_ahead() {
        let me = member("b", Role::Replica, 2, 100);
        // The dead master's record lingers for a TTL: it is no candidate.
        let old_master = member("a", Role::Master, 2, 500);
        assert_eq!(ahead_of(&me, &[old_master.clone(), me.clone()]), None);
        let further = member("c", Role::Replica, 2, 200);
        assert_eq!(
            ahead_of(&me, &[old_master, further.clone()]).map(|m| m.node_id),
            Some("c".into())
        );
        let blocked = MemberState {
            blocked: Some("cut".into()),
            ..further
        };
        assert_eq!(ahead_of(&me, &[blocked]), None);
        // My own published state may be stale: the fresh one counts.
        let stale_me = member("b", Role::Replica, 2, 10);
        let behind = member("c", Role::Replica, 2, 50);
        assert_eq!(ahead_of(&me, &[stale_me, behind]), None);
        // Level: the smaller id goes first.
        let level = member("a", Role::Replica, 2, 100);
        assert_eq!(ahead_of(&me, &[level]).map(|m| m.node_id), Some("a".into()));
    }
}
