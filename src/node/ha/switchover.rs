//! Planned switchover (`kvstore switchover`, and SIGTERM of a master): the
//! master hands its seat to a caught-up replica instead of letting the
//! cluster wait out a lease (docs/FAILOVER.md, "Planned switchover").
//!
//! The steps, on the master, inside its term (run by the HA loop's
//! [`super::lead`] while it keeps renewing the lease):
//! 1. choose the successor: the named node, or the most caught-up one;
//!    either way a replica connected to this master, live in the
//!    coordinator, free to campaign and, in sync mode, a member of the
//!    published in-sync set;
//! 2. pause the write gate ([`super::gate`]): new writes get the refusal
//!    of a node that may not write (REDIRECT or READ_ONLY), never an OK
//!    that could be lost; writes already admitted reach the log and keep
//!    their normal acknowledgement; the expiry sweep stops appending;
//! 3. wait until the successor acknowledged the whole log as durable,
//!    at most `--switchover-timeout-ms`: past it, writes resume, the
//!    master keeps its term, and the caller hears why. A master never
//!    resigns with its successor behind;
//! 4. resign in favour of the successor ([`Coordinator::resign_to`]): one
//!    atomic update valid only while this node still holds the lease in
//!    its epoch frees the seat and names the successor; the fence was
//!    revoked before it, so nothing is acknowledged from here on;
//! 5. the HA loop goes back to being a candidate, lets the successor take
//!    the seat first ([`successor_turn`]) and follows it.
//!
//! The successor then campaigns at once by the normal rules and gets its
//! epoch from the coordinator as any winner does. Every other candidate
//! gives it one lease TTL, on its own monotonic clock, before campaigning
//! itself, so a successor that dies does not stall the cluster.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{info, warn};

use super::members::Seat;
use super::{Ha, Node};
use crate::coordinator::{Holder, Leadership, Successor};

/// A switchover asked of the HA loop.
pub(super) struct Handover {
    pub to: Option<String>,
    /// The master is stopping (SIGTERM): in sync mode it also takes itself
    /// out of the in-sync set before resigning.
    pub leaving: bool,
    pub reply: oneshot::Sender<Result<Named, SwitchoverError>>,
}

/// The seat was freed with `node_id` named as successor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub node_id: String,
    /// Its client address as it published it.
    pub addr: String,
    /// The epoch of the term handed over.
    pub epoch: u32,
}

/// Why a switchover did not happen, or did not finish. Unless it says
/// otherwise, the master still holds its term and takes writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwitchoverError {
    #[error("a switchover is already under way on this master")]
    Busy,
    #[error("no replica to hand over to: {why}")]
    NoEligible { why: String },
    #[error("cannot hand over to {node:?}: {why}")]
    NotEligible { node: String, why: String },
    #[error(
        "{node} did not catch up within the switchover timeout of {after:?} (it has the log durably up to offset {durable}, the master's end is {end}); writes resumed and this node stays the master"
    )]
    CatchUpTimedOut {
        node: String,
        durable: u64,
        end: u64,
        after: Duration,
    },
    #[error("cannot read the cluster from the coordinator ({0}); nothing was changed")]
    Coordinator(String),
    #[error("this node's term ended during the switchover ({why}); the cluster elects a master by the usual rules")]
    TermEnded { why: String },
    #[error("the switchover did not finish within {0:?}; this node's log says how it ended")]
    NoAnswer(Duration),
    #[error(
        "handed over to {node} (epoch {epoch} ended), but no new master was seen within {after:?}; the cluster elects one by the usual rules"
    )]
    NoNewMaster {
        node: String,
        epoch: u32,
        after: Duration,
    },
}

/// Asks the HA loop of this master to hand over to `to` (or the most
/// caught-up eligible replica); returns once the seat is freed with the
/// successor named, or why not.
pub async fn hand_over(
    ha: &Ha,
    to: Option<String>,
    leaving: bool,
) -> Result<Named, SwitchoverError> {
    if ha.switching.swap(true, Ordering::AcqRel) {
        return Err(SwitchoverError::Busy);
    }
    let _done = Switching(ha);
    let (reply, answer) = oneshot::channel();
    ha.handovers
        .try_send(Handover { to, leaving, reply })
        .map_err(|_| SwitchoverError::Busy)?;
    // The loop bounds each step; this only keeps a caller from waiting
    // forever on a loop that is stuck on the coordinator.
    let bound = ha.policy.switchover_timeout + ha.successor_wait;
    match tokio::time::timeout(bound, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(SwitchoverError::TermEnded {
            why: "the term ended before the switchover started".into(),
        }),
        Err(_) => Err(SwitchoverError::NoAnswer(bound)),
    }
}

/// Clears [`Ha::switching`] when the asking caller is done.
struct Switching<'a>(&'a Ha);

impl Drop for Switching<'_> {
    fn drop(&mut self) {
        self.0.switching.store(false, Ordering::Release);
    }
}

/// After [`hand_over`]: the master the cluster elected next (normally the
/// successor, with the coordinator's next epoch), waited for at most the
/// successor's turn plus the switchover timeout.
pub async fn new_master(ha: &Ha, named: &Named) -> Result<Holder, SwitchoverError> {
    let bound = ha.successor_wait + ha.policy.switchover_timeout;
    let started = Instant::now();
    while started.elapsed() < bound {
        if let Ok(Some(holder)) = ha.coordinator.holder().await {
            if holder.epoch > named.epoch {
                return Ok(holder);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(SwitchoverError::NoNewMaster {
        node: named.node_id.clone(),
        epoch: named.epoch,
        after: bound,
    })
}

/// Runs one handover inside `term` (steps 1–4 of the module header).
/// `Ok`: the seat is freed and the successor named; the term is over.
pub(super) async fn run(
    node: &Arc<Node>,
    ha: &Ha,
    term: &Leadership,
    to: Option<String>,
    leaving: bool,
) -> Result<Named, SwitchoverError> {
    let (successor, addr) = choose(node, ha, to.as_deref()).await?;
    info!(%successor, epoch = term.epoch(), "switchover: writes paused until {successor} has the whole log");
    ha.gate.pause();
    let engine = node.engine.clone();
    let _ = tokio::task::spawn_blocking(move || engine.set_expiring(false)).await;
    if leaving {
        // Stays out even if the switchover fails: the node stops anyway.
        node.replication.leave_in_sync();
    }
    if let Err(e) = catch_up(node, ha, term, &successor, leaving).await {
        warn!("switchover to {successor} abandoned: {e}");
        resume(node, ha).await;
        return Err(e);
    }
    match ha.coordinator.resign_to(&successor).await {
        Ok(()) => {
            info!(%successor, epoch = term.epoch(), "switchover: resigned in favour of {successor}, which has the whole log");
            Ok(Named {
                node_id: successor,
                addr,
                epoch: term.epoch(),
            })
        }
        Err(e) => {
            warn!("switchover to {successor}: resigning failed ({e}); the term is over here either way");
            Err(SwitchoverError::TermEnded {
                why: format!("resigning in favour of {successor} failed: {e}"),
            })
        }
    }
}

/// SIGTERM of a master: hands the seat to the most caught-up eligible
/// replica before the node stops, within the switchover timeout; without
/// one (or if it fails) the shutdown resigns as before.
pub async fn before_shutdown(node: &Node, ha: &Ha) {
    if !node.replication.is_master() || !ha.may_write() {
        return;
    }
    match hand_over(ha, None, true).await {
        Ok(named) => {
            info!(successor = %named.node_id, "handed the seat over before shutting down")
        }
        Err(SwitchoverError::NoEligible { why }) => {
            info!("no replica to hand the seat over to before shutting down ({why}); resigning")
        }
        Err(e) => warn!("could not hand the seat over before shutting down ({e}); resigning"),
    }
}

/// Writes and the expiry sweep resume (a switchover that did not happen).
async fn resume(node: &Node, ha: &Ha) {
    if node.replication.is_master() {
        let engine = node.engine.clone();
        let _ = tokio::task::spawn_blocking(move || engine.set_expiring(true)).await;
    }
    ha.gate.resume();
}

/// Step 3: every admitted write in the log, then the successor durable up
/// to the log's end (and, for a `leaving` master, the in-sync set
/// published without it), within the switchover timeout and the term.
async fn catch_up(
    node: &Node,
    ha: &Ha,
    term: &Leadership,
    successor: &str,
    leaving: bool,
) -> Result<(), SwitchoverError> {
    const POLL: Duration = Duration::from_millis(2);
    let bound = ha.policy.switchover_timeout;
    let started = Instant::now();
    loop {
        let drained = ha.gate.drained();
        let end = node.engine.end();
        let durable = node.replication.durable_of(successor).unwrap_or(0);
        let unlisted = !leaving || !node.replication.in_sync_lists_self();
        if drained && durable >= end && unlisted {
            return Ok(());
        }
        if !term.is_valid_now() {
            return Err(SwitchoverError::TermEnded {
                why: "the lease could not be renewed".into(),
            });
        }
        if started.elapsed() >= bound {
            return Err(SwitchoverError::CatchUpTimedOut {
                node: successor.to_string(),
                durable,
                end,
                after: bound,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Step 1: the successor's node id and client address.
async fn choose(
    node: &Node,
    ha: &Ha,
    to: Option<&str>,
) -> Result<(String, String), SwitchoverError> {
    if to == Some(ha.node_id.as_str()) {
        return Err(SwitchoverError::NotEligible {
            node: ha.node_id.clone(),
            why: "it is this node, the master already".into(),
        });
    }
    let seat = Seat::read(node, ha)
        .await
        .map_err(|e| SwitchoverError::Coordinator(e.to_string()))?;
    let connected = node.replication.durable_ends();
    let why_not = |id: &str| -> Option<String> {
        if !connected.iter().any(|(c, _)| c == id) {
            return Some("it is not connected to this master as a replica".into());
        }
        seat.why_not(id)
    };
    let addr_of = |id: &str| seat.addr_of(id);
    if let Some(to) = to {
        return match why_not(to) {
            None => Ok((to.to_string(), addr_of(to))),
            Some(why) => Err(SwitchoverError::NotEligible {
                node: to.to_string(),
                why,
            }),
        };
    }
    // The most caught-up eligible replica; ties to the smallest node id.
    let best = connected
        .iter()
        .filter(|(id, _)| *id != ha.node_id && why_not(id).is_none())
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)));
    match best {
        Some((id, _)) => Ok((id.clone(), addr_of(id))),
        None if connected.is_empty() => Err(SwitchoverError::NoEligible {
            why: "no replica is connected to this master".into(),
        }),
        None => Err(SwitchoverError::NoEligible {
            why: connected
                .iter()
                .filter_map(|(id, _)| why_not(id).map(|why| format!("{id}: {why}")))
                .collect::<Vec<_>>()
                .join("; "),
        }),
    }
}

/// Whether a candidate that found the seat vacant may campaign now, given
/// the successor the last holder named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Turn {
    /// Nobody named, or the named one had its time: the normal rules.
    Anyone,
    /// This node was named: campaign at once.
    Mine,
    /// Another node was named: wait at most this long, then look again.
    Wait(Duration),
}

/// The successor-first rule: a node named by the last holder gets
/// `ha.successor_wait` (a lease TTL), counted on this node's monotonic
/// clock from when it first saw the name, to take the seat.
pub(super) fn successor_turn(ha: &Ha, named: Option<Successor>) -> Turn {
    let mut seen = ha.successor_seen.lock();
    let Some(named) = named else {
        *seen = None;
        return Turn::Anyone;
    };
    if named.node_id == ha.node_id {
        *seen = None;
        return Turn::Mine;
    }
    let since = match &mut *seen {
        Some((s, at, _)) if *s == named => *at,
        _ => {
            info!(successor = %named.node_id, epoch = named.epoch, wait = ?ha.successor_wait, "the last master handed the seat to {}; letting it take the seat first", named.node_id);
            let now = Instant::now();
            *seen = Some((named.clone(), now, false));
            now
        }
    };
    let left = ha.successor_wait.saturating_sub(since.elapsed());
    if !left.is_zero() {
        return Turn::Wait(left);
    }
    if let Some((_, _, told)) = &mut *seen {
        if !*told {
            *told = true;
            warn!(successor = %named.node_id, "the named successor did not take the seat within {:?}; campaigning by the usual rules", ha.successor_wait);
        }
    }
    Turn::Anyone
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_whether_the_master_kept_its_term() {
        let e = SwitchoverError::CatchUpTimedOut {
            node: "n2".into(),
            durable: 10,
            end: 20,
            after: Duration::from_secs(5),
        };
        let text = e.to_string();
        assert!(
            text.contains("n2") && text.contains("stays the master"),
            "{text}"
        );
        let e = SwitchoverError::NotEligible {
            node: "n9".into(),
            why: "it is not connected to this master as a replica".into(),
        };
        assert!(e.to_string().contains("\"n9\""), "{e}");
    }
}
