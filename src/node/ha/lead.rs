//! One term as the master: begin the coordinator-issued epoch, renew the
//! lease, keep the in-sync set published (sync mode), and step down when
//! the term ends.
//!
//! Invariants:
//! - In sync mode the in-sync rule is in force before the role says
//!   master: the term starts from the previous cluster record's set (each
//!   of its members holds every write acknowledged so far), rewritten with
//!   this node in it, so no write of the term is counted any other way.
//! - Every change of the set is a CAS valid only while this node holds the
//!   lease in its epoch. A member is waited for until the CAS that drops it
//!   went through; a joining member counts toward `--min-acks` only once
//!   the CAS that adds it went through (`replication::in_sync`).
//! - A master whose engine was poisoned (a failed write or fsync) releases
//!   its lease as soon as another member can take over
//!   ([`super::release`]). One that recovered while no other could goes on
//!   taking writes only while it still holds its lease in the same epoch;
//!   otherwise it steps down and rejoins as a replica. The write path's
//!   fence check enforces the first half on every write.
//! - The tasks beside the term (the in-sync keeper, the poison watch, the
//!   routing marks) end with it.
//! - A planned switchover ([`super::switchover`]) runs beside the renewals,
//!   never instead of them: the lease is kept while the successor catches
//!   up. The write gate is open at the start and at the end of every term.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::switchover::{self, Handover, SwitchoverError};
use super::{release, routes, Ha, Node};
use crate::coordinator::{self, ClusterRecord, Leadership, Member};
use crate::replication::{InSyncReview as Review, Mode};

/// How often the master looks at its engine's health while it leads.
const HEALTH_EVERY: Duration = Duration::from_millis(100);
/// The longest time between two reviews of the in-sync set.
const REVIEW_AT_MOST: Duration = Duration::from_millis(100);

/// Acts as the master for `term`: its epoch goes to EPOCHS first, then
/// writes are taken; renews every TTL/3 until the term ends, then stops
/// acknowledging and resigns.
pub(super) async fn lead(node: &Arc<Node>, ha: &Arc<Ha>, term: Leadership) {
    let epoch = term.epoch();
    *ha.holder.lock() = Some(term.holder.clone());
    ha.gate.resume();
    let sync = node.replication.settings.mode == Mode::Sync;
    let record = if sync {
        match start_in_sync(node, ha).await {
            Ok(record) => Some(record),
            Err(e) => {
                return give_up(
                    node,
                    ha,
                    epoch,
                    &format!("cannot publish the in-sync set ({e})"),
                )
                .await
            }
        }
    } else {
        None
    };
    // The fence is in place before the role says master, so no write is
    // taken outside the term.
    *ha.fence.lock() = Some(term.fence.clone());
    if let Err(e) = node.replication.promote_in(Some(epoch)).await {
        return give_up(node, ha, epoch, &format!("cannot begin the epoch ({e})")).await;
    }
    info!(epoch, ttl = ?term.ttl, in_sync = ?record.as_ref().map(|r| &r.in_sync), "elected master");
    let mut beside = JoinSet::new();
    if let Some(record) = record {
        beside.spawn(keep_in_sync(Arc::clone(node), Arc::clone(ha), record));
    }
    beside.spawn(release::when_poisoned(
        Arc::clone(node),
        Arc::clone(ha),
        epoch,
    ));
    if let Some(routing) = &ha.routing {
        beside.spawn(routes::keep_marked(
            Arc::clone(ha),
            Arc::clone(routing),
            epoch,
        ));
    }
    let ended = hold(node, ha, &term, &mut beside).await;
    beside.abort_all();
    match ended {
        Ended::Lost(why) => warn!(
            epoch,
            "leadership lost ({why}): no more writes are acknowledged; rejoining as a replica"
        ),
        Ended::HandedOver(to) => {
            info!(epoch, successor = %to, "handed the seat over; rejoining as a replica")
        }
    }
    *ha.fence.lock() = None;
    ha.gate.resume();
    if let Err(e) = ha.coordinator.resign().await {
        debug!("resign after losing the term: {e}");
    }
    node.replication.stand_by().await;
}

/// Elected, but the term cannot start: resign and stand by a period.
async fn give_up(node: &Arc<Node>, ha: &Ha, epoch: u32, why: &str) {
    warn!(epoch, "elected, but {why}; resigning");
    *ha.fence.lock() = None;
    let _ = ha.coordinator.resign().await;
    node.replication.stand_by().await;
    tokio::time::sleep(ha.period).await;
}

/// How a term ended.
enum Ended {
    Lost(&'static str),
    /// A planned switchover resigned in favour of this node id.
    HandedOver(String),
}

/// Renews the term until it ends, or a task beside it ends it, and runs
/// the switchovers asked of it meanwhile; returns how it ended.
async fn hold(
    node: &Arc<Node>,
    ha: &Ha,
    term: &Leadership,
    beside: &mut JoinSet<&'static str>,
) -> Ended {
    let mut queue = ha.handover_queue.lock().await;
    // Asked before this term began: the asker meant another state.
    refuse_waiting(&mut queue);
    let ended = holding(node, ha, term, beside, &mut queue).await;
    refuse_waiting(&mut queue);
    ended
}

/// Answers the switchovers queued but not taken: the term they were asked
/// of is over.
fn refuse_waiting(queue: &mut tokio::sync::mpsc::Receiver<Handover>) {
    while let Ok(asked) = queue.try_recv() {
        let _ = asked.reply.send(Err(SwitchoverError::TermEnded {
            why: "the master's term changed before the switchover started".into(),
        }));
    }
}

async fn holding(
    node: &Arc<Node>,
    ha: &Ha,
    term: &Leadership,
    beside: &mut JoinSet<&'static str>,
    queue: &mut tokio::sync::mpsc::Receiver<Handover>,
) -> Ended {
    let epoch = term.epoch();
    let mut handover = None;
    let mut renewal = Box::pin(renew_after(ha, term.renew_every()));
    let progress = node.engine.subscribe();
    let mut health = tokio::time::interval(HEALTH_EVERY);
    let (mut poisoned, mut resumes) = {
        let p = progress.borrow();
        (p.poisoned, p.resumes)
    };
    // Why the term is over, once it is. A running switchover is never
    // cut short (its resignation could be left half done): the term ends
    // when it has finished. The write path's fence check needs no loop.
    let mut over: Option<&'static str> = None;
    loop {
        if let Some(why) = over.filter(|_| handover.is_none()) {
            return Ended::Lost(why);
        }
        let kept = async {
            match beside.join_next().await {
                Some(Ok(why)) => why,
                Some(Err(_)) => "a task of the term failed",
                None => std::future::pending().await,
            }
        };
        let idle = handover.is_none();
        let handing = async {
            match handover.as_mut() {
                Some(running) => running.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = &mut renewal => {
                match result {
                    Ok(()) => {}
                    Err(coordinator::Error::NotLeader { .. }) => {
                        over = Some("the coordinator shows the term over");
                    }
                    // The deadline stays where it was and runs out by
                    // itself unless a later renewal gets through.
                    Err(e) => warn!(epoch, "lease renewal failed: {e}"),
                }
                renewal = Box::pin(renew_after(ha, term.renew_every()));
            }
            // A running switchover watches the fence itself.
            () = tokio::time::sleep(term.fence.remaining()), if idle => {
                if !term.fence.is_valid_now() {
                    over = Some("the fence deadline passed before a renewal got through");
                }
            }
            why = kept => over = Some(why),
            Some(asked) = queue.recv(), if idle && over.is_none() => {
                let Handover { to, leaving, reply } = asked;
                handover = Some(Box::pin(async move {
                    let outcome = switchover::run(node, ha, term, to, leaving).await;
                    let handed = outcome.as_ref().ok().map(|named| named.node_id.clone());
                    let _ = reply.send(outcome);
                    handed
                }));
            }
            handed = handing => {
                handover = None;
                if let Some(to) = handed {
                    return Ended::HandedOver(to);
                }
            }
            _ = health.tick() => {
                let (now_poisoned, now_resumes) = {
                    let p = progress.borrow();
                    (p.poisoned, p.resumes)
                };
                if now_poisoned && !poisoned {
                    warn!(epoch, "the storage engine refuses writes (poisoned)");
                }
                if now_resumes != resumes && !now_poisoned {
                    if !term.fence.is_valid_now() || node.engine.current_epoch() != epoch {
                        over = Some("the storage engine recovered after the term ended");
                    } else {
                        info!(epoch, "the storage engine recovered while this node still holds its lease in the same epoch: taking writes again");
                    }
                }
                (poisoned, resumes) = (now_poisoned, now_resumes);
            }
        }
    }
}

async fn renew_after(ha: &Ha, every: Duration) -> coordinator::Result<()> {
    tokio::time::sleep(every).await;
    ha.coordinator.renew().await
}

/// The term's first cluster record: the previous record's members (each
/// holds every write acknowledged so far) with this node listed, written
/// with this term's epoch. The in-sync rule is in force once it returns.
async fn start_in_sync(node: &Node, ha: &Ha) -> coordinator::Result<ClusterRecord> {
    let previous = ha.coordinator.cluster().await?;
    let own = ha.own_member();
    // Listed with the directory it runs on: the campaign admitted it, so
    // an entry of its own was that directory, or unknown and adopted.
    let mut set: Vec<Member> = previous
        .as_ref()
        .map(ClusterRecord::members)
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.node_id != own.node_id)
        .collect();
    set.push(own.clone());
    set.sort();
    let record = ha.coordinator.cas_cluster(previous.as_ref(), set).await?;
    node.replication
        .begin_in_sync(&own, record.members(), ha.policy.in_sync_max_lag);
    Ok(record)
}

/// Says what a published in-sync review changed (`new` is the record
/// as the coordinator holds it now).
fn log_in_sync_change(review: &Review, new: &ClusterRecord, max_lag: Duration) {
    let lagging: Vec<&Member> = review
        .dropped
        .iter()
        .filter(|m| !review.replaced.contains(m))
        .collect();
    if !lagging.is_empty() {
        warn!(dropped = ?lagging, in_sync = ?new.in_sync, ?max_lag, "dropped lagging members from the in-sync set");
    }
    if !review.replaced.is_empty() {
        info!(replaced = ?review.replaced, dirs = ?new.dirs, "nodes back on another data directory are listed with it now, their old entries dropped");
    }
    if !review.added.is_empty() {
        info!(added = ?review.added, in_sync = ?new.in_sync, "caught-up replicas joined the in-sync set");
    }
}

/// Keeps the in-sync set published while the term lasts: drops members
/// that lag, adds replicas that caught up, each change one CAS. Returns
/// only when the coordinator shows the term over.
async fn keep_in_sync(node: Arc<Node>, ha: Arc<Ha>, mut record: ClusterRecord) -> &'static str {
    // Often enough that a caught-up replica joins soon after an election
    // (writes are refused until the set has --min-acks replicas), and a
    // lagging member is dropped within a quarter of the bound past it.
    let every = (ha.policy.in_sync_max_lag / 4).clamp(Duration::from_millis(20), REVIEW_AT_MOST);
    loop {
        tokio::time::sleep(every).await;
        let Some(review) = node.replication.review_in_sync() else {
            continue;
        };
        match ha
            .coordinator
            .cas_cluster(Some(&record), review.set.clone())
            .await
        {
            Ok(new) => {
                log_in_sync_change(&review, &new, ha.policy.in_sync_max_lag);
                node.replication.published_in_sync(&new.members());
                record = new;
            }
            Err(coordinator::Error::NotLeader { .. }) => {
                return "the coordinator refused the in-sync set: the term is over"
            }
            Err(coordinator::Error::Conflict) => {
                // A CAS whose answer was lost may have gone through: take
                // the record as it is and decide again.
                match ha.coordinator.cluster().await {
                    Ok(Some(now)) if now.epoch == record.epoch => {
                        if now.members() == review.set {
                            log_in_sync_change(&review, &now, ha.policy.in_sync_max_lag);
                            node.replication.published_in_sync(&review.set);
                        } else {
                            info!(in_sync = ?now.in_sync, "the in-sync set changed under a CAS that lost its answer; deciding again");
                        }
                        record = now;
                    }
                    Ok(other) => {
                        warn!(record = ?other, "the cluster record moved under this term; stepping down");
                        return "the cluster record was rewritten by another term";
                    }
                    Err(e) => warn!("cannot read the cluster record: {e}"),
                }
            }
            Err(e) => warn!("cannot publish the in-sync set ({e}); retrying"),
        }
    }
}
