//! The etcd backend against real etcd: the conformance rules on a
//! one-member cluster, and what only etcd has: losing members of a
//! three-member cluster.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::{Client, DeleteOptions};
use kvstore::coordinator::{connect, Backend, CampaignRule, Coordinator, DataDir, Error, Settings};

use crate::common::etcd::EtcdCluster;
use crate::coordinator::conformance::{settings, win, Harness, Poll, EXPIRY_DEADLINE, TTL};

pub struct EtcdHarness {
    pub cluster: EtcdCluster,
}

impl EtcdHarness {
    pub fn start(members: usize) -> EtcdHarness {
        EtcdHarness {
            cluster: EtcdCluster::start(members),
        }
    }

    fn settings(&self, id: &str) -> Settings {
        let mut s = settings(Backend::Etcd, id);
        s.etcd_endpoints = self.cluster.endpoints();
        s
    }

    async fn client(&self) -> Client {
        Client::connect(self.cluster.endpoints(), None)
            .await
            .expect("etcd client")
    }
}

#[async_trait]
impl Harness for EtcdHarness {
    async fn session(&self, id: &str) -> Box<dyn Coordinator> {
        connect(&self.settings(id)).await.expect("connect to etcd")
    }

    async fn session_on(&self, id: &str, dir: DataDir) -> Box<dyn Coordinator> {
        let mut s = self.settings(id);
        s.data_dir = Some(dir);
        connect(&s).await.expect("connect to etcd")
    }

    async fn wipe(&self) {
        let mut c = self.client().await;
        let opts = DeleteOptions::new().with_prefix();
        c.delete("/kvstore/", Some(opts))
            .await
            .expect("delete prefix");
    }
}

crate::conformance_tests!(EtcdHarness::start(1));

/// One of three etcd members dies (not etcd's leader): etcd keeps its
/// majority, so renewals go on and the fence never lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_of_three_members_keeps_the_holder() {
    let mut h = EtcdHarness::start(3);
    let leader = h.cluster.leader().await;
    let victim = (leader + 1) % 3;
    // The victim's endpoint first: the session is talking to it when it dies.
    let mut s = h.settings("a");
    s.etcd_endpoints.rotate_left(victim);
    let a = connect(&s).await.unwrap();
    let la = win(&*a, 0).await;
    h.cluster.kill(victim);
    let end = Instant::now() + 3 * TTL;
    let mut failures = Vec::new();
    while Instant::now() < end {
        if let Err(e) = a.renew().await {
            // The connection to the dead member breaks once; the next
            // renewal goes to a live one.
            failures.push(e.to_string());
        }
        assert!(
            la.is_valid_now(),
            "fence lapsed; renewal errors: {failures:?}"
        );
        tokio::time::sleep(la.renew_every()).await;
    }
    assert!(failures.len() <= 1, "renewals kept failing: {failures:?}");
    assert_eq!(a.holder().await.unwrap(), Some(la.holder.clone()));
}

/// Two of three members die: etcd has no majority, renewals fail, and the
/// holder's deadline passes on its own clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_two_of_three_members_fences_the_holder() {
    let mut h = EtcdHarness::start(3);
    let a = h.session("a").await;
    let la = win(&*a, 0).await;
    a.renew().await.unwrap();
    h.cluster.kill(0);
    h.cluster.kill(1);
    let killed_at = Instant::now();
    let poll = Poll::new(
        EXPIRY_DEADLINE,
        "the fence to lapse without an etcd majority",
    );
    while la.is_valid_now() {
        let _ = a.renew().await;
        poll.next().await;
    }
    // The fence lapses within a TTL of the last renewal that got through.
    assert!(killed_at.elapsed() <= la.ttl + Duration::from_secs(1));
    for _ in 0..2 {
        assert!(a.renew().await.is_err(), "renewed without an etcd majority");
        assert!(!la.is_valid_now());
    }
}

/// An unreadable record in etcd is a clear error naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_records_are_clear_errors() {
    let h = EtcdHarness::start(1);
    let mut c = h.client().await;
    c.put("/kvstore/epoch", "seven", None).await.unwrap();
    let a = h.session("a").await;
    match a.campaign(0, CampaignRule::Anyone).await {
        Err(Error::Corrupt { key, .. }) => assert_eq!(key, "/kvstore/epoch"),
        other => panic!("campaign over an unreadable epoch: {other:?}"),
    }
    c.put("/kvstore/leader", "{not json", None).await.unwrap();
    assert!(matches!(a.holder().await, Err(Error::Corrupt { .. })));
    c.put("/kvstore/in-sync", "[]", None).await.unwrap();
    assert!(matches!(a.cluster().await, Err(Error::Corrupt { .. })));
}

/// No etcd at the address: every operation fails within the request
/// timeout instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_etcd_is_an_error_not_a_hang() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s = settings(Backend::Etcd, "a");
    s.etcd_endpoints = vec![format!("http://127.0.0.1:{port}")];
    let started = Instant::now();
    let outcome = match connect(&s).await {
        Ok(a) => a.campaign(0, CampaignRule::Anyone).await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(outcome.is_err(), "campaigned against nothing");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

/// `--etcd-endpoints` may not be empty.
#[tokio::test]
async fn no_endpoints_is_a_setting_error() {
    let s = settings(Backend::Etcd, "a");
    match connect(&s).await {
        Err(Error::Setting { setting, .. }) => assert_eq!(setting, "--etcd-endpoints"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("connected without endpoints"),
    }
}
