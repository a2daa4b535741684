//! Sync mode with a coordinator: Kafka's in-sync rule, as the master keeps
//! it (docs/REPLICATION.md, "The in-sync set").
//!
//! The set lives in the coordinator's cluster record; the HA loop writes it
//! there (a CAS valid only while the master holds its lease in its epoch).
//! This module keeps what the master acts on:
//! - `published`: the replicas of the set as last written to the
//!   coordinator (the master lists itself there too, but never waits for
//!   itself);
//! - `adding`: replicas on their way in. They count in "every member has
//!   it" at once (stricter is always safe) but toward `--min-acks` only
//!   once the CAS that adds them went through;
//! - a member on its way out (of `published` or of `adding`) is waited for
//!   until the CAS that drops it went through: nothing is acknowledged
//!   without it before that, and a CAS whose answer was lost cannot leave
//!   the coordinator listing a member the master no longer waits for;
//! - the master lists itself (so that it may win again after a restart)
//!   until it leaves for good ([`InSync::leave`], at SIGTERM): the next
//!   set it publishes omits it, so the next master does not wait for a
//!   node that is gone. Dropping a member is always safe.
//!
//! A member is a node id AND the data directory it runs on ([`Member`]):
//! a replica's acknowledgements count for the directory its stream named
//! in REPL_SYNC. A node that comes back on another directory (emptied,
//! restored) is a new replica: it catches up and is added with its new
//! directory, replacing its old entry in the same CAS; until then the old
//! entry is waited for like any member that stopped acknowledging.
//!
//! Invariants:
//! - The replicated end (what may be acknowledged) is 0 while `published`
//!   holds fewer than `min_acks` replicas, else the lowest durable end among
//!   `published ∪ adding`. So every acknowledged write is durable on every
//!   member of the published set.
//! - A replica joins `adding` only once its durable end reaches `floor`:
//!   the log end at the start of the term (it holds every write
//!   acknowledged in earlier terms) and every replicated end of this term.
//!   It is moved there under the same lock that computes the replicated
//!   end, so no write can be acknowledged in between that it lacks.
//! - A member **lags** when its durable end is below the master's end as
//!   it was `max_lag` ago (sampled at each review): some write older than
//!   `max_lag` is not durable on it. A member that is disconnected keeps
//!   its last durable end and lags as soon as the log grows past it for
//!   that long.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::coordinator::Member;

/// The master's in-sync state for one term.
#[derive(Debug)]
pub(crate) struct InSync {
    /// The master itself: listed in the set, never waited for.
    own: Member,
    /// Replicas only: no entry with the master's node id.
    published: BTreeSet<Member>,
    adding: BTreeSet<Member>,
    /// Each replica's durable end as it last acknowledged it (kept while it
    /// is disconnected; 0 until its first acknowledgement).
    durable: BTreeMap<Member, u64>,
    /// Every write that may have been acknowledged ends at or below this.
    floor: u64,
    /// The master's end over the last `max_lag` (and one sample older).
    samples: VecDeque<(Instant, u64)>,
    max_lag: Duration,
    /// Whether the master lists itself in the sets it proposes.
    listed: bool,
    /// Whether the set as last published lists the master.
    listed_published: bool,
}

/// A change to publish: the whole new set, and what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    /// The master and its replicas, sorted: what to write to the
    /// coordinator.
    pub set: Vec<Member>,
    /// Lagging members, and old entries of nodes added on another data
    /// directory.
    pub dropped: Vec<Member>,
    /// Of `dropped`: the old entries of nodes added on another directory.
    pub replaced: Vec<Member>,
    pub added: Vec<Member>,
}

impl InSync {
    /// The state at the start of a term: `members` as the cluster record
    /// lists them (the master itself may be among them), `start_end` the
    /// local log's end before the term's first write.
    pub fn new(
        own: &Member,
        members: impl IntoIterator<Item = Member>,
        start_end: u64,
        max_lag: Duration,
    ) -> InSync {
        let members: Vec<Member> = members.into_iter().collect();
        InSync {
            own: own.clone(),
            listed: true,
            listed_published: members.iter().any(|m| m.node_id == own.node_id),
            published: members
                .into_iter()
                .filter(|m| m.node_id != own.node_id)
                .collect(),
            adding: BTreeSet::new(),
            durable: BTreeMap::new(),
            floor: start_end,
            samples: VecDeque::new(),
            max_lag,
        }
    }

    /// The highest end that may be acknowledged now (see the module
    /// invariants). The caller hands it to the waiting room while it still
    /// holds the lock this state is under.
    pub fn replicated(&mut self, min_acks: usize) -> u64 {
        if self.published.len() < min_acks {
            return 0;
        }
        let lowest = self
            .published
            .iter()
            .chain(&self.adding)
            .map(|m| self.durable.get(m).copied().unwrap_or(0))
            .min()
            .unwrap_or(0);
        self.floor = self.floor.max(lowest);
        lowest
    }

    /// A replica acknowledged `durable` as fsynced.
    pub fn ack(&mut self, member: &Member, durable: u64) {
        let d = self.durable.entry(member.clone()).or_insert(0);
        *d = (*d).max(durable);
    }

    /// A replica (re)connected: nothing of it counts until it acknowledges
    /// (its log may have been cut back to the master's).
    pub fn connected(&mut self, member: &Member) {
        self.durable.insert(member.clone(), 0);
    }

    /// Samples the master's `end` at `now`, moves caught-up `connected`
    /// replicas into `adding`, and returns the set to publish when members
    /// lag or replicas are on their way in. The caller recomputes the
    /// replicated end under the same lock.
    pub fn review(&mut self, now: Instant, end: u64, connected: &[Member]) -> Option<Review> {
        self.samples.push_back((now, end));
        let cutoff = now.checked_sub(self.max_lag);
        // Keep the newest sample at or before the cutoff, and all after it.
        while self.samples.len() > 1
            && cutoff.is_some_and(|c| self.samples.get(1).is_some_and(|(t, _)| *t <= c))
        {
            self.samples.pop_front();
        }
        let behind = match (cutoff, self.samples.front()) {
            (Some(c), Some((t, e))) if *t <= c => *e,
            _ => 0,
        };
        let durable = |m: &Member| self.durable.get(m).copied().unwrap_or(0);
        let added: Vec<Member> = connected
            .iter()
            .filter(|m| m.node_id != self.own.node_id)
            .filter(|m| !self.published.contains(*m) && !self.adding.contains(*m))
            .filter(|m| durable(m) >= self.floor.max(behind) && self.durable.contains_key(*m))
            .cloned()
            .collect();
        self.adding.extend(added.iter().cloned());
        // A node on its way in on another directory (the one its stream
        // named, at most one per node id) replaces its old entry: the
        // record has one directory per node.
        let replaced = |m: &Member| {
            connected
                .iter()
                .any(|c| c.node_id == m.node_id && c.dir_id != m.dir_id && self.adding.contains(c))
        };
        let dropped: Vec<Member> = self
            .published
            .iter()
            .chain(&self.adding)
            .filter(|m| durable(m) < behind || replaced(m))
            .cloned()
            .collect();
        let replaced: Vec<Member> = dropped.iter().filter(|m| replaced(m)).cloned().collect();
        if dropped.is_empty() && self.adding.is_empty() && self.listed == self.listed_published {
            return None;
        }
        let mut set: BTreeSet<Member> = self
            .published
            .iter()
            .chain(&self.adding)
            .filter(|m| !dropped.contains(m))
            .cloned()
            .collect();
        if self.listed {
            set.insert(self.own.clone());
        }
        Some(Review {
            set: set.into_iter().collect(),
            added: self
                .adding
                .iter()
                .filter(|m| !dropped.contains(m))
                .cloned()
                .collect(),
            dropped,
            replaced,
        })
    }

    /// The coordinator now shows `set`: its replicas count toward
    /// `--min-acks`, and a member it no longer lists is no longer waited
    /// for. Only this shrinks what is waited for, so a CAS whose outcome
    /// is unknown never leaves the coordinator listing a member the master
    /// does not wait for.
    pub fn published(&mut self, set: &[Member]) {
        self.listed_published = set.iter().any(|m| m.node_id == self.own.node_id);
        self.published = set
            .iter()
            .filter(|m| m.node_id != self.own.node_id)
            .cloned()
            .collect();
        let published = &self.published;
        self.adding
            .retain(|m| set.contains(m) && !published.contains(m));
    }

    /// The published set (the master included while it lists itself),
    /// sorted.
    pub fn members(&self) -> Vec<Member> {
        let mut set: BTreeSet<Member> = self.published.clone();
        if self.listed_published {
            set.insert(self.own.clone());
        }
        set.into_iter().collect()
    }

    /// The master leaves for good: the sets it proposes from now on omit
    /// it (the next review proposes one).
    pub fn leave(&mut self) {
        self.listed = false;
    }

    /// Whether the set as last published lists the master.
    pub fn lists_self(&self) -> bool {
        self.listed_published
    }

    /// Published members whose durable end is below `end`, for an error
    /// message.
    pub fn missing(&self, end: u64) -> Vec<String> {
        self.published
            .iter()
            .chain(&self.adding)
            .filter(|m| self.durable.get(*m).copied().unwrap_or(0) < end)
            .map(Member::to_string)
            .collect()
    }

    /// Replicas of the published set (the master not counted).
    pub fn replicas(&self) -> usize {
        self.published.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: Duration = Duration::from_secs(2);

    /// Members on directory `d-<node id>`.
    fn ids(list: &[&str]) -> Vec<Member> {
        list.iter().map(|s| m(s)).collect()
    }

    fn m(id: &str) -> Member {
        Member::new(id, Some(format!("d-{id}")))
    }

    #[test]
    fn every_published_member_must_have_it_and_min_acks_count_the_published_only() {
        let mut s = InSync::new(&m("m"), ids(&["m", "r1", "r2"]), 0, LAG);
        s.ack(&m("r1"), 500);
        s.ack(&m("r2"), 100);
        assert_eq!(s.replicated(1), 100, "the slowest member decides");
        assert_eq!(s.replicated(3), 0, "two replicas published, three needed");
        assert_eq!(s.members(), ids(&["m", "r1", "r2"]));
    }

    #[test]
    fn a_lagging_member_is_proposed_for_dropping_but_waited_for_until_published() {
        let t0 = Instant::now();
        let mut s = InSync::new(&m("m"), ids(&["m", "r1", "r2"]), 0, LAG);
        s.ack(&m("r1"), 100);
        s.ack(&m("r2"), 100);
        let connected = ids(&["r1", "r2"]);
        assert_eq!(s.review(t0, 100, &connected), None);
        // A write to 200: r1 has it, r2 does not, for longer than LAG.
        s.ack(&m("r1"), 200);
        assert_eq!(s.review(t0 + Duration::from_secs(1), 200, &connected), None);
        let review = s
            .review(t0 + Duration::from_secs(4), 200, &connected)
            .expect("r2 lags");
        assert_eq!(review.dropped, ids(&["r2"]));
        assert_eq!(review.set, ids(&["m", "r1"]));
        assert_eq!(s.replicated(1), 100, "still waited for until the CAS");
        s.published(&review.set);
        assert_eq!(s.replicated(1), 200);
    }

    #[test]
    fn a_replica_joins_once_it_has_everything_acknowledged_and_counts_once_published() {
        let t0 = Instant::now();
        let mut s = InSync::new(&m("m"), ids(&["m"]), 300, LAG);
        assert_eq!(s.replicated(1), 0, "no replica in the set");
        s.connected(&m("r1"));
        s.ack(&m("r1"), 299);
        assert_eq!(
            s.review(t0, 400, &ids(&["r1"])),
            None,
            "below the term's start end: it may lack an acknowledged write"
        );
        s.ack(&m("r1"), 400);
        let review = s.review(t0, 400, &ids(&["r1"])).expect("r1 joins");
        assert_eq!(review.added, ids(&["r1"]));
        assert_eq!(review.set, ids(&["m", "r1"]));
        assert_eq!(s.replicated(1), 0, "not published yet: does not count");
        s.published(&review.set);
        assert_eq!(s.replicated(1), 400);
        assert_eq!(s.review(t0, 400, &ids(&["r1"])), None);
    }

    #[test]
    fn a_member_whose_add_may_have_been_published_is_waited_for_until_a_cas_drops_it() {
        let t0 = Instant::now();
        let mut s = InSync::new(&m("m"), ids(&["m", "r1"]), 0, LAG);
        s.ack(&m("r1"), 100);
        s.connected(&m("r2"));
        s.ack(&m("r2"), 100);
        let review = s.review(t0, 100, &ids(&["r1", "r2"])).expect("r2 joins");
        assert_eq!(review.added, ids(&["r2"]));
        // The CAS's answer is lost: etcd may list r2 now. r2 then lags.
        s.ack(&m("r1"), 300);
        assert!(s
            .review(t0 + Duration::from_secs(1), 300, &ids(&["r1", "r2"]))
            .is_some());
        let review = s
            .review(t0 + Duration::from_secs(4), 300, &ids(&["r1", "r2"]))
            .expect("r2 lags");
        assert_eq!(review.dropped, ids(&["r2"]));
        assert_eq!(review.set, ids(&["m", "r1"]));
        assert_eq!(s.replicated(1), 100, "r2 is still waited for");
        s.published(&review.set);
        assert_eq!(s.replicated(1), 300);
        assert_eq!(s.members(), ids(&["m", "r1"]));
    }

    #[test]
    fn a_leaving_master_proposes_a_set_without_itself_once() {
        let t0 = Instant::now();
        let mut s = InSync::new(&m("m"), ids(&["m", "r1"]), 0, LAG);
        s.ack(&m("r1"), 10);
        assert_eq!(s.review(t0, 10, &ids(&["r1"])), None);
        s.leave();
        assert!(s.lists_self(), "not published yet");
        let review = s.review(t0, 10, &ids(&["r1"])).expect("a set without m");
        assert_eq!(review.set, ids(&["r1"]));
        assert!(review.dropped.is_empty() && review.added.is_empty());
        s.published(&review.set);
        assert!(!s.lists_self());
        assert_eq!(s.members(), ids(&["r1"]));
        assert_eq!(s.replicated(1), 10, "r1 still counts");
        assert_eq!(s.review(t0, 10, &ids(&["r1"])), None);
    }

    #[test]
    fn a_disconnected_member_lags_once_the_log_grew_past_it_for_max_lag() {
        let t0 = Instant::now();
        let mut s = InSync::new(&m("m"), ids(&["m", "r1", "r2"]), 50, LAG);
        s.ack(&m("r1"), 50);
        // r2 never connects in this term.
        assert_eq!(s.review(t0, 50, &ids(&["r1"])), None);
        let review = s
            .review(t0 + Duration::from_secs(3), 50, &ids(&["r1"]))
            .expect("r2 lags");
        assert_eq!(review.dropped, ids(&["r2"]));
    }

    #[test]
    fn a_node_back_on_another_directory_is_a_new_replica_that_replaces_its_entry() {
        let t0 = Instant::now();
        let mut s = InSync::new(&m("m"), ids(&["m", "r1"]), 100, LAG);
        s.ack(&m("r1"), 100);
        assert_eq!(s.replicated(1), 100);
        // r1 comes back on an emptied directory: its acknowledgements are
        // the new directory's, not the listed member's.
        let fresh = Member::new("r1", Some("d-new".into()));
        s.connected(&fresh);
        s.ack(&fresh, 50);
        assert_eq!(
            s.review(t0, 200, std::slice::from_ref(&fresh)),
            None,
            "not caught up"
        );
        s.ack(&fresh, 200);
        assert_eq!(
            s.replicated(1),
            100,
            "the listed directory is still waited for"
        );
        let review = s
            .review(t0, 200, std::slice::from_ref(&fresh))
            .expect("joins");
        assert_eq!(review.added, vec![fresh.clone()]);
        assert_eq!(review.dropped, ids(&["r1"]), "its old entry goes");
        assert_eq!(review.replaced, ids(&["r1"]));
        assert_eq!(review.set, vec![m("m"), fresh.clone()]);
        assert_eq!(s.replicated(1), 100, "until the CAS went through");
        s.published(&review.set);
        assert_eq!(s.replicated(1), 200);
        assert_eq!(s.members(), vec![m("m"), fresh]);
    }
}
