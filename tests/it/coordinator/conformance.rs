//! The coordinator's rules, written once against the trait and run against
//! every backend ([`conformance_tests!`] instantiates them per backend).
//! Each test attacks one rule of src/coordinator/mod.rs.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use kvstore::coordinator::{
    most_advanced, Backend, BootInstant, Campaign, CampaignRule, ClusterRecord, Coordinator,
    DataDir, Error, Holder, HolderWatch, Leadership, Member, MemberState, Role, Settings,
    Successor,
};

/// Test timing: short enough for quick tests, far above loopback latency
/// on a busy 2-core machine.
pub const TTL: Duration = Duration::from_secs(2);
pub const MARGIN: Duration = Duration::from_millis(300);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Upper bound for anything that waits on a lease to run out.
pub const EXPIRY_DEADLINE: Duration = Duration::from_secs(15);

/// A backend to run the rules against.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A new session (as a new process would open) for node `id`.
    async fn session(&self, id: &str) -> Box<dyn Coordinator>;
    /// As [`Harness::session`], for a node running on data directory `dir`.
    async fn session_on(&self, id: &str, dir: DataDir) -> Box<dyn Coordinator>;
    /// Deletes every record of the cluster: etcd's key prefix, the Lease
    /// objects.
    async fn wipe(&self);
}

/// Settings with the test timing.
pub fn settings(backend: Backend, id: &str) -> Settings {
    let mut s = Settings::new(backend, id, format!("{id}.test:5555"));
    s.lease_ttl = Some(TTL);
    s.margin = Some(MARGIN);
    s.request_timeout = Some(REQUEST_TIMEOUT);
    s
}

/// A poll loop with a deadline: `next` panics with `what` once past it.
pub struct Poll {
    end: Instant,
    what: String,
}

impl Poll {
    pub fn new(within: Duration, what: impl Into<String>) -> Poll {
        Poll {
            end: Instant::now() + within,
            what: what.into(),
        }
    }

    pub async fn next(&self) {
        assert!(
            Instant::now() < self.end,
            "timed out waiting for {}",
            self.what
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn win(c: &dyn Coordinator, local_epoch: u32) -> Leadership {
    match c.campaign(local_epoch, CampaignRule::Anyone).await {
        Ok(Campaign::Won(l)) => l,
        other => panic!("expected to win the seat, got {other:?}"),
    }
}

/// Campaigns until it wins (the seat frees when a lease runs out).
pub async fn win_eventually(c: &dyn Coordinator, local_epoch: u32, what: &str) -> Leadership {
    let poll = Poll::new(EXPIRY_DEADLINE, what);
    loop {
        match c.campaign(local_epoch, CampaignRule::Anyone).await {
            Ok(Campaign::Won(l)) => return l,
            Ok(Campaign::Lost(_)) | Err(Error::Timeout { .. }) => {}
            Err(e) => panic!("{what}: {e}"),
        }
        poll.next().await;
    }
}

fn holder_of(l: &Leadership) -> Option<Holder> {
    Some(l.holder.clone())
}

pub async fn wait_for_holder(w: &mut HolderWatch, expected: Option<Holder>, what: &str) {
    let end = tokio::time::Instant::now() + EXPIRY_DEADLINE;
    while w.current() != expected {
        match tokio::time::timeout_at(end, w.changed()).await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("{what}: the watch ended"),
            Err(_) => panic!("{what}: still {:?}, expected {expected:?}", w.current()),
        }
    }
}

/// Several candidates at once: exactly one wins, the others see it.
pub async fn one_of_several_candidates_wins(h: &dyn Harness) {
    let mut sessions = Vec::new();
    for i in 0..5 {
        sessions.push(h.session(&format!("n{i}")).await);
    }
    let outcomes = futures_util::future::join_all(
        sessions.iter().map(|s| s.campaign(0, CampaignRule::Anyone)),
    )
    .await;
    let winners: Vec<&Leadership> = outcomes
        .iter()
        .filter_map(|o| match o {
            Ok(Campaign::Won(l)) => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let winner = winners[0];
    assert_eq!(winner.epoch(), 1);
    for o in &outcomes {
        match o {
            Ok(Campaign::Won(_)) | Ok(Campaign::Lost(None)) => {}
            Ok(Campaign::Lost(Some(h))) => assert_eq!(h, &winner.holder),
            Err(e) => panic!("a candidate failed: {e}"),
        }
    }
    for s in &sessions {
        assert_eq!(s.holder().await.unwrap(), holder_of(winner));
    }
    let holding = sessions.iter().filter(|s| s.leadership().is_some()).count();
    assert_eq!(holding, 1);
}

/// `epoch = max(stored, local) + 1`, and a wiped coordinator cannot take
/// epochs backwards past the candidate's local epoch.
pub async fn epoch_is_one_above_stored_and_local(h: &dyn Harness) {
    let a = h.session("a").await;
    assert_eq!(win(&*a, 2).await.epoch(), 3, "stored 0, local 2");
    a.resign().await.unwrap();
    let b = h.session("b").await;
    assert_eq!(win(&*b, 7).await.epoch(), 8, "stored 3, local 7");
    b.resign().await.unwrap();
    let c = h.session("c").await;
    assert_eq!(win(&*c, 0).await.epoch(), 9, "stored 8, local 0");
    c.resign().await.unwrap();
    h.wipe().await;
    let d = h.session("d").await;
    assert_eq!(win(&*d, 9).await.epoch(), 10, "wiped, local 9");
}

/// A holder that stops renewing: its fence passes before anyone else is
/// handed the seat, the next holder's epoch is higher, and its own renewal
/// then fails with the deadline in the past.
pub async fn silent_holder_is_fenced_before_it_is_replaced(h: &dyn Harness) {
    let a = h.session("a").await;
    let la = win(&*a, 0).await;
    assert!(la.is_valid_now());
    assert!(
        la.ttl >= TTL,
        "granted {:?} below the {TTL:?} asked",
        la.ttl
    );
    let b = h.session("b").await;
    let lb = win_eventually(&*b, 0, "b to win after a stops renewing").await;
    let won_at = BootInstant::now();
    assert!(
        la.fence.deadline() <= won_at,
        "a's fence ({:?}) outlived b's win ({won_at:?})",
        la.fence.deadline()
    );
    assert!(!la.is_valid_now());
    assert_eq!(lb.epoch(), la.epoch() + 1);
    match a.renew().await {
        Err(Error::NotLeader { .. }) => {}
        other => panic!("renew after losing: {other:?}"),
    }
    assert!(la.fence.is_revoked());
    assert!(la.fence.deadline() <= BootInstant::now());
    assert!(a.leadership().is_none());
    assert_eq!(b.holder().await.unwrap(), holder_of(&lb));
}

/// A holder that renews keeps the seat for many TTLs.
pub async fn renewing_holder_keeps_the_seat(h: &dyn Harness) {
    let a = h.session("a").await;
    let la = win(&*a, 0).await;
    let b = h.session("b").await;
    let end = Instant::now() + 3 * TTL;
    while Instant::now() < end {
        a.renew().await.expect("renew");
        assert!(la.is_valid_now());
        assert!(la.fence.remaining() > la.renew_every());
        match b.campaign(0, CampaignRule::Anyone).await {
            Ok(Campaign::Lost(Some(holder))) => assert_eq!(holder, la.holder),
            other => panic!("b campaigned against a renewing holder: {other:?}"),
        }
        // Pacing, as the node's renew loop does; nothing is waited for.
        tokio::time::sleep(la.renew_every()).await;
    }
    assert!(la.is_valid_now());
}

/// Resigning revokes the fence first and frees the seat at once; campaign
/// again from the same session returns the same term.
pub async fn resign_frees_the_seat_at_once(h: &dyn Harness) {
    let a = h.session("a").await;
    let la = win(&*a, 4).await;
    match a.campaign(0, CampaignRule::Anyone).await {
        Ok(Campaign::Won(again)) => assert_eq!(again.holder, la.holder),
        other => panic!("second campaign of a holder: {other:?}"),
    }
    a.resign().await.unwrap();
    assert!(!la.is_valid_now());
    assert!(a.leadership().is_none());
    let b = h.session("b").await;
    let lb = win(&*b, 0).await;
    assert_eq!(lb.epoch(), la.epoch() + 1);
    a.resign()
        .await
        .expect("resigning without the seat is not an error");
    assert_eq!(a.holder().await.unwrap(), holder_of(&lb));
}

/// Resigning in favour of a successor frees the seat and names it in one
/// update, only from the current term; the next term removes the name.
pub async fn resign_to_names_the_successor_until_the_next_term(h: &dyn Harness) {
    let a = h.session("a").await;
    let la = win(&*a, 0).await;
    assert_eq!(a.successor().await.unwrap(), None);
    a.resign_to("b").await.unwrap();
    assert!(!la.is_valid_now(), "the fence is revoked first");
    assert!(a.leadership().is_none());
    assert_eq!(a.holder().await.unwrap(), None, "the seat is free at once");
    let b = h.session("b").await;
    let named = Successor {
        node_id: "b".into(),
        epoch: la.epoch(),
    };
    assert_eq!(b.successor().await.unwrap(), Some(named.clone()));
    match a.resign_to("c").await {
        Err(Error::NotLeader { .. }) => {}
        other => panic!("resign_to without a term: {other:?}"),
    }
    assert_eq!(b.successor().await.unwrap(), Some(named), "nothing renamed");
    let lb = win(&*b, 0).await;
    assert_eq!(lb.epoch(), la.epoch() + 1);
    assert_eq!(
        b.successor().await.unwrap(),
        None,
        "taking the seat removes the name"
    );
}

/// A new session with the same node id (a restarted process) does not
/// inherit the seat: it waits like anyone else.
pub async fn same_node_id_does_not_inherit(h: &dyn Harness) {
    let first = h.session("a").await;
    let l1 = win(&*first, 0).await;
    let second = h.session("a").await;
    match second.campaign(0, CampaignRule::Anyone).await {
        Ok(Campaign::Lost(Some(holder))) => assert_eq!(holder, l1.holder),
        other => panic!("a second session took a live seat: {other:?}"),
    }
    let l2 = win_eventually(
        &*second,
        0,
        "the second session after the first's lease ran out",
    )
    .await;
    assert!(l1.fence.deadline() <= BootInstant::now());
    assert_eq!(l2.epoch(), l1.epoch() + 1);
}

/// The in-sync set is written only by the holder of the current epoch.
pub async fn in_sync_cas_needs_the_current_term(h: &dyn Harness) {
    let a = h.session("a").await;
    let b = h.session("b").await;
    let la = win(&*a, 0).await;
    assert_eq!(a.cluster().await.unwrap(), None);
    let ab = vec![Member::new("a", Some("da".into())), Member::new("b", None)];
    let r1 = a.cas_cluster(None, ab.clone()).await.unwrap();
    assert_eq!(
        r1,
        ClusterRecord {
            epoch: la.epoch(),
            in_sync: vec!["a".to_string(), "b".to_string()],
            dirs: [("a".to_string(), "da".to_string())].into(),
        }
    );
    assert_eq!(r1.members(), ab);
    assert_eq!(b.cluster().await.unwrap(), Some(r1.clone()));
    match b.cas_cluster(Some(&r1), vec![member("b")]).await {
        Err(Error::NotLeader { .. }) => {}
        other => panic!("a non-holder wrote the in-sync set: {other:?}"),
    }
    match a.cas_cluster(None, vec![member("a")]).await {
        Err(Error::Conflict) => {}
        other => panic!("a stale expected record was accepted: {other:?}"),
    }
    // a stops renewing; once b holds a newer epoch, a's session still has
    // its old term locally, and the coordinator must refuse it.
    let lb = win_eventually(&*b, 0, "b to replace a").await;
    match a.cas_cluster(Some(&r1), vec![member("a")]).await {
        Err(Error::NotLeader { .. }) => {}
        other => panic!("the holder of an old epoch wrote the in-sync set: {other:?}"),
    }
    assert!(!la.is_valid_now());
    assert_eq!(a.cluster().await.unwrap(), Some(r1.clone()));
    let r2 = b.cas_cluster(Some(&r1), vec![member("b")]).await.unwrap();
    assert_eq!(r2.epoch, lb.epoch());
    assert_eq!(a.cluster().await.unwrap(), Some(r2));
}

/// With [`CampaignRule::InSyncOnly`], only members of the published set
/// may take the seat (anyone while no set was ever published).
pub async fn only_in_sync_members_may_campaign(h: &dyn Harness) {
    let a = h.session("a").await;
    match a.campaign(0, CampaignRule::InSyncOnly).await {
        Ok(Campaign::Won(_)) => {}
        other => panic!("no record yet, anyone may campaign: {other:?}"),
    }
    a.cas_cluster(None, vec![member("a"), member("b")])
        .await
        .unwrap();
    a.resign().await.unwrap();
    let c = h.session("c").await;
    match c.campaign(0, CampaignRule::InSyncOnly).await {
        Err(Error::NotInSync { node_id }) => assert_eq!(node_id, "c"),
        other => panic!("a node outside the in-sync set campaigned: {other:?}"),
    }
    assert_eq!(c.holder().await.unwrap(), None);
    let b = h.session("b").await;
    match b.campaign(0, CampaignRule::InSyncOnly).await {
        Ok(Campaign::Won(l)) => assert_eq!(l.epoch(), 2),
        other => panic!("an in-sync member could not campaign: {other:?}"),
    }
}

/// A member of the in-sync set, its directory unknown.
fn member(id: &str) -> Member {
    Member::new(id, None)
}

fn dir(id: &str, predates_ids: bool) -> DataDir {
    DataDir {
        id: id.into(),
        predates_ids,
    }
}

/// With [`CampaignRule::InSyncOnly`], a listed node may take the seat only
/// on the data directory listed for it; a member listed without one (a
/// record from before directory ids) only on a directory that held data
/// before it had an id.
pub async fn only_the_listed_data_directory_may_campaign(h: &dyn Harness) {
    let a = h.session_on("a", dir("da", false)).await;
    win(&*a, 0).await;
    a.cas_cluster(
        None,
        vec![
            Member::new("a", Some("da".into())),
            Member::new("b", Some("db".into())),
            member("c"),
        ],
    )
    .await
    .unwrap();
    a.resign().await.unwrap();
    // b, restarted on an emptied directory: listed, but not this directory.
    let emptied = h.session_on("b", dir("db-new", false)).await;
    match emptied.campaign(0, CampaignRule::InSyncOnly).await {
        Err(Error::OtherDirectory {
            node_id,
            listed,
            current,
        }) => assert_eq!(
            (node_id.as_str(), listed.as_deref(), current.as_str()),
            ("b", Some("db"), "db-new")
        ),
        other => panic!("a listed node on another directory campaigned: {other:?}"),
    }
    // c is listed without a directory: a new directory is not it.
    let new_c = h.session_on("c", dir("dc", false)).await;
    assert!(matches!(
        new_c.campaign(0, CampaignRule::InSyncOnly).await,
        Err(Error::OtherDirectory { listed: None, .. })
    ));
    assert_eq!(emptied.holder().await.unwrap(), None);
    drop((emptied, new_c));
    let old_c = h.session_on("c", dir("dc-old", true)).await;
    match old_c.campaign(0, CampaignRule::InSyncOnly).await {
        Ok(Campaign::Won(_)) => {}
        other => panic!("a directory from before ids could not stand for its entry: {other:?}"),
    }
    old_c.resign().await.unwrap();
    let b = h.session_on("b", dir("db", false)).await;
    match b.campaign(0, CampaignRule::InSyncOnly).await {
        Ok(Campaign::Won(_)) => {}
        other => panic!("the listed directory could not campaign: {other:?}"),
    }
}

/// The holder watch follows wins, resignations and expiries.
pub async fn watch_reports_holder_changes(h: &dyn Harness) {
    let observer = h.session("o").await;
    let mut w = observer.watch_holder().await.unwrap();
    assert_eq!(w.current(), None);
    let a = h.session("a").await;
    let la = win(&*a, 0).await;
    wait_for_holder(&mut w, holder_of(&la), "a's win").await;
    a.resign().await.unwrap();
    wait_for_holder(&mut w, None, "a's resignation").await;
    let b = h.session("b").await;
    let lb = win(&*b, 0).await;
    wait_for_holder(&mut w, holder_of(&lb), "b's win").await;
    // b goes silent: the watch shows the seat free once its lease is over.
    wait_for_holder(&mut w, None, "b's lease running out").await;
    assert!(lb.fence.deadline() <= BootInstant::now());
}

fn state(id: &str, role: Role, epoch: u32, log_end: u64) -> MemberState {
    MemberState {
        node_id: id.into(),
        addr: format!("{id}.test:5555"),
        role,
        epoch,
        log_end,
        blocked: None,
    }
}

/// Published member states are listed while their node keeps publishing
/// and disappear about a TTL after it stops.
pub async fn members_are_bound_to_liveness(h: &dyn Harness) {
    let a = h.session("a").await;
    let b = h.session("b").await;
    let observer = h.session("o").await;
    let sa = state("a", Role::Master, 3, 100);
    let sb = state("b", Role::Replica, 3, 250);
    a.publish(&sa).await.unwrap();
    b.publish(&sb).await.unwrap();
    assert_eq!(
        observer.members().await.unwrap(),
        vec![sa.clone(), sb.clone()]
    );
    let members = observer.members().await.unwrap();
    assert_eq!(most_advanced(&members), Some(&sb));
    // A newer state replaces the old one.
    let sa2 = state("a", Role::Master, 3, 300);
    a.publish(&sa2).await.unwrap();
    assert_eq!(
        observer.members().await.unwrap(),
        vec![sa2.clone(), sb.clone()]
    );
    match a.publish(&state("x", Role::Replica, 0, 0)).await {
        Err(Error::Setting { .. }) => {}
        other => panic!("published for another node id: {other:?}"),
    }
    // b keeps publishing, a goes silent.
    let poll = Poll::new(EXPIRY_DEADLINE, "a to drop out of the members");
    let mut last_publish = Instant::now();
    loop {
        if last_publish.elapsed() >= TTL / 3 {
            b.publish(&sb).await.unwrap();
            last_publish = Instant::now();
        }
        if observer.members().await.unwrap() == vec![sb.clone()] {
            break;
        }
        poll.next().await;
    }
    // a publishes again: back in the list.
    a.publish(&sa2).await.unwrap();
    let poll = Poll::new(EXPIRY_DEADLINE, "a to come back");
    while observer.members().await.unwrap() != vec![sa2.clone(), sb.clone()] {
        poll.next().await;
    }
}

/// Instantiates every conformance test for one backend. `$harness` is an
/// expression that builds a fresh [`Harness`] (a new server per test).
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@each $harness;
            one_of_several_candidates_wins,
            epoch_is_one_above_stored_and_local,
            silent_holder_is_fenced_before_it_is_replaced,
            renewing_holder_keeps_the_seat,
            resign_frees_the_seat_at_once,
            resign_to_names_the_successor_until_the_next_term,
            same_node_id_does_not_inherit,
            in_sync_cas_needs_the_current_term,
            only_in_sync_members_may_campaign,
            only_the_listed_data_directory_may_campaign,
            watch_reports_holder_changes,
            members_are_bound_to_liveness,
        );
    };
    (@each $harness:expr; $($name:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let harness = $harness;
                $crate::coordinator::conformance::$name(&harness).await;
            }
        )*
    };
}
