//! The Kubernetes Lease backend against the API STAND-IN
//! (tests/it/common/kube_standin.rs; no API server can run here): the
//! conformance rules, how expiry is judged, and the stand-in's own
//! semantics, checked through the same client (kube) the backend uses.

use std::time::Instant;

use async_trait::async_trait;
use axum::http::Method;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Config};
use kvstore::coordinator::{
    connect, Backend, Campaign, CampaignRule, Coordinator, DataDir, Error, KubernetesSettings,
    Settings,
};
use serde_json::{json, Value};

use crate::common::kube_standin::KubeStandIn;
use crate::coordinator::conformance::{settings, win, win_eventually, Harness, TTL};

const NS: &str = "kvstore-test";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/kvstore-test/leases";

pub struct KubeHarness {
    pub standin: KubeStandIn,
}

impl KubeHarness {
    pub fn start() -> KubeHarness {
        KubeHarness {
            standin: KubeStandIn::start(),
        }
    }

    fn settings(&self, id: &str) -> Settings {
        let mut s = settings(Backend::Kubernetes, id);
        s.kubernetes = KubernetesSettings {
            namespace: Some(NS.into()),
            api_url: Some(self.standin.url.clone()),
            token: Some(self.standin.token.clone()),
            ca_file: self.standin.ca_file.clone(),
            ..KubernetesSettings::default()
        };
        s
    }

    fn client(&self, token: &str) -> Client {
        let mut config = Config::new(self.standin.url.parse().expect("url"));
        config.auth_info.token = Some(token.to_string().into());
        config.default_namespace = NS.into();
        Client::try_from(config).expect("kube client")
    }

    /// A Lease `kvstore` held by `ghost`, as another (dead or live) node
    /// would have left it.
    fn seed_ghost(&self, renew_time: &str, epoch: u32) -> Value {
        let (code, lease) = self
            .standin
            .request(Method::POST, LEASES, ghost(renew_time, epoch));
        assert_eq!(code, 201, "{lease}");
        lease
    }
}

fn ghost(renew_time: &str, epoch: u32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": "kvstore",
            "annotations": { "kvstore.io/epoch": epoch.to_string(), "kvstore.io/holder-addr": "ghost:5555" }
        },
        "spec": {
            "holderIdentity": "ghost",
            "leaseDurationSeconds": TTL.as_secs(),
            "leaseTransitions": 100,
            "acquireTime": renew_time,
            "renewTime": renew_time
        }
    })
}

#[async_trait]
impl Harness for KubeHarness {
    async fn session(&self, id: &str) -> Box<dyn Coordinator> {
        connect(&self.settings(id))
            .await
            .expect("connect to the stand-in")
    }

    async fn session_on(&self, id: &str, dir: DataDir) -> Box<dyn Coordinator> {
        let mut s = self.settings(id);
        s.data_dir = Some(dir);
        connect(&s).await.expect("connect to the stand-in")
    }

    async fn wipe(&self) {
        let (code, list) = self.standin.request(Method::GET, LEASES, Value::Null);
        assert_eq!(code, 200);
        for item in list["items"].as_array().into_iter().flatten() {
            let name = item["metadata"]["name"].as_str().expect("name");
            let (code, _) =
                self.standin
                    .request(Method::DELETE, &format!("{LEASES}/{name}"), Value::Null);
            assert_eq!(code, 200);
        }
    }
}

crate::conformance_tests!(KubeHarness::start());

/// A held Lease is taken over only a full TTL after THIS candidate first
/// saw its current version, whatever `renewTime` says: one from the year
/// 2000 does not make it expired, one from 2100 does not keep it alive.
/// The epoch comes from the annotation, never `leaseTransitions` (100).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_timed_from_this_candidates_own_observation() {
    for renew_time in ["2000-01-01T00:00:00.000000Z", "2100-01-01T00:00:00.000000Z"] {
        let h = KubeHarness::start();
        h.seed_ghost(renew_time, 5);
        let b = h.session("b").await;
        let first_look = Instant::now();
        match b.campaign(0, CampaignRule::Anyone).await {
            Ok(Campaign::Lost(Some(holder))) => assert_eq!(holder.node_id, "ghost"),
            other => panic!("took a lease it had never seen unchanged for a TTL: {other:?}"),
        }
        let lb = win_eventually(&*b, 0, "the ghost's lease to run out").await;
        assert!(
            first_look.elapsed() >= TTL,
            "renewTime {renew_time}: taken after {:?}",
            first_look.elapsed()
        );
        assert_eq!(lb.epoch(), 6);
        let stored = h.standin.object("leases", NS, "kvstore").expect("lease");
        assert_eq!(stored["spec"]["holderIdentity"], "b");
        assert_eq!(stored["metadata"]["annotations"]["kvstore.io/epoch"], "6");
    }
}

/// A Lease whose version keeps changing stays held, even with a
/// `renewTime` long past; once the changes stop, it runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_keeps_changing_is_not_taken() {
    let h = KubeHarness::start();
    h.seed_ghost("2000-01-01T00:00:00.000000Z", 3);
    let b = h.session("b").await;
    let end = Instant::now() + 3 * TTL;
    let mut beat = 0u32;
    while Instant::now() < end {
        // The ghost renews: a write that changes the object.
        beat += 1;
        let patch = json!({ "metadata": { "annotations": { "beat": beat.to_string() } } });
        let (code, _) = h
            .standin
            .request(Method::PATCH, &format!("{LEASES}/kvstore"), patch);
        assert_eq!(code, 200);
        match b.campaign(0, CampaignRule::Anyone).await {
            Ok(Campaign::Lost(Some(holder))) => assert_eq!(holder.node_id, "ghost"),
            other => panic!("took a lease that was being renewed: {other:?}"),
        }
        tokio::time::sleep(TTL / 4).await;
    }
    let lb = win_eventually(&*b, 0, "the ghost to stop renewing").await;
    assert_eq!(lb.epoch(), 4);
}

/// An unreadable annotation is a clear error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_annotations_are_clear_errors() {
    let h = KubeHarness::start();
    let mut lease = ghost("2000-01-01T00:00:00.000000Z", 1);
    lease["metadata"]["annotations"]["kvstore.io/epoch"] = json!("seven");
    let (code, _) = h.standin.request(Method::POST, LEASES, lease);
    assert_eq!(code, 201);
    let a = h.session("a").await;
    match a.campaign(0, CampaignRule::Anyone).await {
        Err(Error::Corrupt { key, .. }) => assert!(key.contains("kvstore.io/epoch"), "{key}"),
        other => panic!("campaign over an unreadable epoch: {other:?}"),
    }
}

/// Over TLS, as in a pod: kube with rustls (ring) verifies the API
/// server's certificate against the given CA, and refuses one it cannot
/// verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_api_over_tls() {
    let h = KubeHarness {
        standin: KubeStandIn::start_tls(),
    };
    let a = h.session("a").await;
    let la = win(&*a, 0).await;
    a.renew().await.unwrap();
    assert!(la.is_valid_now());
    let b = h.session("b").await;
    assert_eq!(b.holder().await.unwrap(), Some(la.holder.clone()));
    // A CA that did not sign the server's certificate: refused.
    let other = KubeStandIn::start_tls();
    let mut s = h.settings("c");
    s.kubernetes.ca_file = other.ca_file.clone();
    let c = connect(&s).await.expect("connect (lazily)");
    match c.holder().await {
        Err(Error::Kube(_)) => {}
        other => panic!("trusted a certificate from another CA: {other:?}"),
    }
    // A CA file that is not there: a setting error at connect.
    let mut s = h.settings("e");
    s.kubernetes.ca_file = Some("/nonexistent/ca.pem".into());
    assert!(matches!(connect(&s).await, Err(Error::Setting { .. })));
    // Plain HTTP to the TLS port is no way around it either.
    let mut s = h.settings("d");
    s.kubernetes.api_url = Some(h.standin.url.replacen("https", "http", 1));
    let d = connect(&s).await.expect("connect (lazily)");
    assert!(d.holder().await.is_err());
}

/// Without an API URL and outside a pod: a setting error, not a panic.
#[tokio::test]
async fn no_in_cluster_configuration_is_a_setting_error() {
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return; // inside a pod the in-cluster configuration exists
    }
    match connect(&settings(Backend::Kubernetes, "a")).await {
        Err(Error::Setting { .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("connected with no API server"),
    }
}

fn api_code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(status) => status.code,
        other => panic!("not an API error: {other}"),
    }
}

fn lease(name: &str, labels: Value) -> Lease {
    serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": { "name": name, "labels": labels },
        "spec": { "holderIdentity": "x", "leaseDurationSeconds": 5 }
    }))
    .expect("lease")
}

/// The stand-in keeps the API server's semantics that the backend relies
/// on, seen through kube: versions, 409 on a stale update, 404, 401,
/// no-op updates, label selectors, validation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standin_keeps_the_api_semantics() {
    let h = KubeHarness::start();
    let leases: Api<Lease> = Api::namespaced(h.client(&h.standin.token), NS);
    let pp = PostParams::default();
    assert_eq!(api_code(leases.get("a").await.unwrap_err()), 404);
    assert!(leases.get_opt("a").await.unwrap().is_none());

    let a1 = leases
        .create(&pp, &lease("a", json!({"app": "kv"})))
        .await
        .unwrap();
    let rv1 = a1.metadata.resource_version.clone().expect("rv");
    assert!(a1.metadata.uid.is_some() && a1.metadata.creation_timestamp.is_some());
    assert_eq!(
        api_code(
            leases
                .create(&pp, &lease("a", json!({})))
                .await
                .unwrap_err()
        ),
        409
    );

    // An update on the version read succeeds and moves the version.
    let mut change = a1.clone();
    change.spec.as_mut().unwrap().holder_identity = Some("y".into());
    let a2 = leases.replace("a", &pp, &change).await.unwrap();
    let rv2 = a2.metadata.resource_version.clone().expect("rv");
    assert_ne!(rv1, rv2);
    // The same update again, on the old version: 409.
    assert_eq!(
        api_code(leases.replace("a", &pp, &change).await.unwrap_err()),
        409
    );
    // An update that changes nothing keeps the version.
    let a3 = leases.replace("a", &pp, &a2).await.unwrap();
    assert_eq!(a3.metadata.resource_version, Some(rv2.clone()));
    assert_eq!(a3, a2);
    // A PUT of a missing object is 404 (Leases are not created on update).
    let mut missing = a2.clone();
    missing.metadata.name = Some("b".into());
    assert_eq!(
        api_code(leases.replace("b", &pp, &missing).await.unwrap_err()),
        404
    );
    // Validation: a non-positive duration is refused.
    let mut bad = a2.clone();
    bad.spec.as_mut().unwrap().lease_duration_seconds = Some(0);
    assert_eq!(
        api_code(leases.replace("a", &pp, &bad).await.unwrap_err()),
        422
    );

    leases
        .create(&pp, &lease("m", json!({"app": "kv", "role": "member"})))
        .await
        .unwrap();
    leases
        .create(&pp, &lease("o", json!({"app": "other"})))
        .await
        .unwrap();
    let names = |l: kube::core::ObjectList<Lease>| -> Vec<String> {
        l.items
            .into_iter()
            .filter_map(|i| i.metadata.name)
            .collect()
    };
    let kv = leases
        .list(&ListParams::default().labels("app=kv"))
        .await
        .unwrap();
    assert_eq!(names(kv), ["a", "m"]);
    let both = leases
        .list(&ListParams::default().labels("app=kv,role=member"))
        .await
        .unwrap();
    assert_eq!(names(both), ["m"]);
    assert_eq!(
        names(leases.list(&ListParams::default()).await.unwrap()),
        ["a", "m", "o"]
    );

    // A wrong token is refused.
    let intruder: Api<Lease> = Api::namespaced(h.client("wrong"), NS);
    assert_eq!(api_code(intruder.get("a").await.unwrap_err()), 401);
}

/// Pods' labels can be patched (what the manifest tests will do), and
/// patch kinds the stand-in does not implement are refused, not faked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standin_patches_pod_labels() {
    let h = KubeHarness::start();
    let pods: Api<Pod> = Api::namespaced(h.client(&h.standin.token), NS);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "kvstore-0", "labels": { "app": "kvstore" } },
        "spec": { "containers": [{ "name": "kvstore", "image": "kvstore:test" }] }
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    let pp = PatchParams::default();
    let merge = json!({ "metadata": { "labels": { "kvstore.io/role": "master" } } });
    let patched = pods
        .patch("kvstore-0", &pp, &Patch::Merge(&merge))
        .await
        .unwrap();
    let labels = patched.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("kvstore.io/role").map(String::as_str),
        Some("master")
    );
    assert_eq!(labels.get("app").map(String::as_str), Some("kvstore"));
    assert_ne!(
        patched.metadata.resource_version,
        created.metadata.resource_version
    );
    let strategic = json!({ "metadata": { "labels": { "kvstore.io/role": "replica" } } });
    let p2 = pods
        .patch("kvstore-0", &pp, &Patch::Strategic(&strategic))
        .await
        .unwrap();
    assert_eq!(
        p2.metadata.labels.unwrap_or_default()["kvstore.io/role"],
        "replica"
    );
    let remove = json!({ "metadata": { "labels": { "kvstore.io/role": null } } });
    let p3 = pods
        .patch("kvstore-0", &pp, &Patch::Merge(&remove))
        .await
        .unwrap();
    assert!(!p3
        .metadata
        .labels
        .unwrap_or_default()
        .contains_key("kvstore.io/role"));
    // A strategic patch with a list would merge by key on the API server;
    // the stand-in refuses it rather than merge it wrongly.
    let with_list =
        json!({ "spec": { "containers": [{ "name": "kvstore", "image": "kvstore:new" }] } });
    let refused = pods
        .patch("kvstore-0", &pp, &Patch::Strategic(&with_list))
        .await;
    assert_eq!(api_code(refused.unwrap_err()), 415);
    assert_eq!(
        api_code(
            pods.patch("nope", &pp, &Patch::Merge(&merge))
                .await
                .unwrap_err()
        ),
        404
    );
}

/// The master's pod labels (`--kube-pod-selector`): its own pod master,
/// every other matching pod replica, stamped with its epoch; a pod
/// labelled in a newer epoch is never relabelled by an older term, and a
/// merge patch on a stale `resourceVersion` is refused (409) and retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_labels_follow_the_newest_term_only() {
    use kvstore::coordinator::kubernetes::{pod_labels, ROLE_EPOCH, ROLE_LABEL};
    use kvstore::coordinator::Routing;
    let h = KubeHarness::start();
    let pods: Api<Pod> = Api::namespaced(h.client(&h.standin.token), NS);
    for (name, app) in [
        ("kvstore-0", "kvstore"),
        ("kvstore-1", "kvstore"),
        ("other", "web"),
    ] {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": name, "labels": { "app": app } },
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let labels_of = |pod: &str| {
        let obj = h.standin.object("pods", NS, pod).expect("pod");
        let label = obj["metadata"]["labels"][ROLE_LABEL]
            .as_str()
            .map(str::to_string);
        let epoch = obj["metadata"]["annotations"][ROLE_EPOCH]
            .as_str()
            .map(str::to_string);
        (label, epoch)
    };
    let as_pod = |pod: &str| {
        let mut s = h.settings(pod);
        s.kubernetes.pod_name = Some(pod.into());
        s.kubernetes.pod_selector = Some("app=kvstore".into());
        s
    };
    let one = pod_labels(&as_pod("kvstore-1")).await.unwrap();
    assert_eq!(one.mark_master(5).await.unwrap(), 2);
    let some = |l: &str, e: &str| (Some(l.to_string()), Some(e.to_string()));
    assert_eq!(labels_of("kvstore-1"), some("master", "5"));
    assert_eq!(labels_of("kvstore-0"), some("replica", "5"));
    assert_eq!(labels_of("other"), (None, None), "outside the selector");
    // Nothing to change: no write.
    assert_eq!(one.mark_master(5).await.unwrap(), 0);
    // An old master's late round (epoch 4) changes nothing.
    let zero = pod_labels(&as_pod("kvstore-0")).await.unwrap();
    assert_eq!(zero.mark_master(4).await.unwrap(), 0);
    assert_eq!(labels_of("kvstore-1"), some("master", "5"));
    // A newer term moves them.
    assert_eq!(zero.mark_master(6).await.unwrap(), 2);
    assert_eq!(labels_of("kvstore-0"), some("master", "6"));
    assert_eq!(labels_of("kvstore-1"), some("replica", "6"));
    // A merge patch with a stale resourceVersion is a conflict, as an
    // update is: what makes the check-then-write above safe.
    let stale = json!({ "metadata": { "resourceVersion": "1", "labels": { ROLE_LABEL: "x" } } });
    let refused = pods
        .patch("kvstore-0", &PatchParams::default(), &Patch::Merge(&stale))
        .await;
    assert_eq!(api_code(refused.unwrap_err()), 409);
    // A pod name the selector does not match is an error naming it.
    let lost = pod_labels(&as_pod("other")).await.unwrap();
    match lost.mark_master(7).await {
        Err(Error::Label { pod, .. }) => assert_eq!(pod, "other"),
        other => panic!("{other:?}"),
    }
}
