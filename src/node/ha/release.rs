//! A master whose storage engine refuses writes (poisoned: a failed write
//! or fsync, a full disk) releases its term when another member can take
//! over, so writes move to a replica instead of waiting for the disk.
//!
//! Invariants:
//! - It releases only for a member that may win: live, a replica, not
//!   blocked from campaigning, and in sync mode in the published in-sync
//!   set (it holds every acknowledged write). With none, the master keeps
//!   its term and takes writes again once its engine resumes on its own
//!   (the lead loop's rule), rather than leave the cluster with no master.
//! - After the release the node does not campaign while poisoned
//!   (`blocked`), and rejoins as a replica of the new master.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::members::Seat;
use super::{Ha, Node};
use crate::coordinator::Role;

/// How often it looks at the engine: one atomic read.
const POLL: Duration = Duration::from_millis(100);

/// Returns (ending the term) once the engine is poisoned and another
/// member can take over.
pub(super) async fn when_poisoned(node: Arc<Node>, ha: Arc<Ha>, epoch: u32) -> &'static str {
    let progress = node.engine.subscribe();
    let mut told = false;
    loop {
        if !progress.borrow().poisoned {
            told = false;
            tokio::time::sleep(POLL).await;
            continue;
        }
        if let Some(successor) = successor(&node, &ha).await {
            warn!(epoch, %successor, "the storage engine refuses writes (poisoned): releasing the lease so a replica takes over");
            return "the storage engine refuses writes (poisoned)";
        }
        if !told {
            warn!(epoch, "the storage engine refuses writes (poisoned) and no other member can take over: keeping the lease while the engine probes the disk");
            told = true;
        }
        tokio::time::sleep(ha.period).await;
    }
}

/// A member that may win the seat if this node releases it.
async fn successor(node: &Node, ha: &Ha) -> Option<String> {
    let seat = match Seat::read(node, ha).await {
        Ok(seat) => seat,
        Err(e) => {
            debug!("cannot read the members and the in-sync set: {e}");
            return None;
        }
    };
    seat.members()
        .iter()
        .find(|m| {
            m.node_id != ha.node_id && m.role == Role::Replica && seat.why_not(&m.node_id).is_none()
        })
        .map(|m| m.node_id.clone())
}
