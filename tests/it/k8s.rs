//! The Kubernetes manifests, run locally: the StatefulSet's, ConfigMap's
//! and backup CronJob's own commands, environment, volumes and probes
//! against real `kvstore` processes (tests/it/k8s/cluster.rs says how). A
//! manifest change that breaks a command, an env var, a probe or a mounted
//! credential fails here.
//!
//! Auth and TLS run as deployed: the Secret comes from the real
//! `k8s/gen-secrets.sh` (its certificate also names the loopback addresses
//! the pod DNS names become), CLI calls carry the pod's token and CA as
//! `kubectl exec` would, and the rotations of docs/SECURITY.md are played
//! step by step (tests/it/k8s/auth_tls.rs). The guide's failover scenarios
//! 1-3 (docs/KUBERNETES.md) run here too, and its restore procedure:
//! the CronJob's backup (through the headless Service's name, answered by
//! a DNS stand-in), then k8s/restore-job.example.yaml's own command.

mod auth_tls;
mod cluster;
use crate::common;
use common::wait_for;
mod manifests;
mod secrets;

use std::path::PathBuf;
use std::process::{Command, Output};

use std::collections::BTreeMap;

use cluster::{Cluster, PODS};
use common::kvstore_bin;
use kvstore::coordinator::kubernetes::{ROLE_EPOCH, ROLE_LABEL};
use manifests::{load, load_all, s};
use nix::sys::signal::Signal;
use serde_json::Value as Json;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

#[test]
fn init_container_checks_the_configuration_of_every_pod() {
    let mut c = Cluster::new();
    for n in 0..PODS {
        let out = c.run_init(n);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            stdout(&out),
            format!(
                "{}: role CANDIDATE (the kubernetes coordinator elects the master)",
                c.pod_name(n)
            )
        );
    }
    // A bad ConfigMap stops the pod in its init container, naming the setting.
    c.config
        .insert("KVSTORE_KUBE_POD_SELECTOR".into(), "kvstore".into());
    let out = c.run_init(1);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("KVSTORE_KUBE_POD_SELECTOR"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn probes_quick_start_and_the_backup_cronjob() {
    let mut c = Cluster::new();
    c.start_all();
    c.wait_all_ready();
    let master = c.wait_master();
    for n in 0..PODS {
        assert!(
            c.logs(n).contains("Starting as a CANDIDATE"),
            "{}",
            c.logs(n)
        );
    }
    let replica = (master + 1) % PODS;
    // Quick start: kubectl exec kvstore-0 -- kvstore put testkey testvalue
    c.put(0, "testkey", "testvalue");
    c.wait_value(master, "testkey", "testvalue");
    c.wait_value(replica, "testkey", "testvalue");
    // A write sent to a replica is redirected to the master (over TLS to
    // the master's advertised name, with the same token).
    c.put(replica, "via-replica", "ok");
    c.wait_value(master, "via-replica", "ok");

    // The CronJob's command, with its volumes (the admin token and the CA).
    let out = c.run_backup_job("backup-job");
    assert!(
        out.status.success(),
        "the CronJob's backup failed: {}",
        stderr(&out)
    );
    let root = c.pvc_dir("kvstore-backup");
    let backups: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("backup volume")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("MANIFEST.json").is_file())
        .collect();
    assert_eq!(backups.len(), 1, "{}", stdout(&out));
    let manifest: Json =
        serde_json::from_slice(&std::fs::read(backups[0].join("MANIFEST.json")).expect("read"))
            .expect("json");
    assert_eq!(
        manifest["source_role"], "replica",
        "the CronJob should back up a replica"
    );
    // It found the pods through the headless Service's name (the DNS
    // stand-in of Cluster::run_job) and names the one it used by the
    // address that pod advertises.
    let source = manifest["source"].as_str().unwrap_or("");
    let replicas: Vec<String> = (0..PODS)
        .filter(|n| *n != master)
        .map(|n| format!("{}:{}", c.ip(n), c.client_port()))
        .collect();
    assert!(
        replicas.iter().any(|r| r == source),
        "{source} not in {replicas:?}"
    );

    // Restore it and start a replica on it: it resumes from the backup,
    // pulling from the master over TLS with the admin token.
    let data = c.root.path().join("restored");
    let out = Command::new(kvstore_bin())
        .args(["restore", "--from"])
        .arg(&backups[0])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("restore");
    assert!(out.status.success(), "{}", stderr(&out));
    let master = format!("{}:{}", c.ip(master), c.client_port());
    let ca = c.secret.path("ca.crt");
    let admin = c.secret.path("admin-token");
    let node = common::Server::start_on(
        &data,
        &[
            "--role",
            "replica",
            "--master-addr",
            &master,
            "--tls-ca",
            ca.to_str().expect("utf-8"),
            "--admin-token-file",
            admin.to_str().expect("utf-8"),
        ],
        true,
    );
    let out = common::cli(
        node.addr,
        &[
            "--auth-token-file",
            admin.to_str().expect("utf-8"),
            "read",
            "testkey",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "testvalue");
}

/// A write through the master Service as a client in the cluster makes
/// it: kube-proxy's pick among [`Cluster::endpoints`], no redirect
/// followed, so only the master itself can answer OK.
fn put_through_master_service(c: &Cluster, key: &str, value: &str) -> u32 {
    wait_for(
        cluster::ELECTION,
        "a write through the master Service",
        || {
            let [(n, addr)] = c.endpoints("service-master.yaml")[..] else {
                return None;
            };
            let mut client = c.client_at(addr, false)?;
            client.put(key.as_bytes(), value.as_bytes()).ok()?;
            Some(n)
        },
    )
}

/// Every pod's role label: the master's says master, every other replica.
fn assert_labels(c: &Cluster, master: u32) {
    wait_for(
        cluster::ELECTION,
        "the role labels to follow the master",
        || {
            (0..PODS)
                .all(|n| {
                    let want = if n == master { "master" } else { "replica" };
                    c.pod_label(n, ROLE_LABEL).as_deref() == Some(want)
                })
                .then_some(())
        },
    );
}

#[test]
fn scenario_1_the_master_pod_crashes_a_replica_takes_over_and_the_labels_move() {
    let mut c = Cluster::new();
    c.start_all();
    c.wait_all_ready();
    let old = c.wait_master();
    assert_labels(&c, old);
    assert_eq!(put_through_master_service(&c, "before", "crash"), old);
    for n in 0..PODS {
        c.wait_value(n, "before", "crash");
    }
    let epoch = c.pod_object(old)["metadata"]["annotations"][ROLE_EPOCH].clone();

    c.stop(old, Signal::SIGKILL);
    // A replica wins the Lease and relabels every pod, the dead one too
    // (it cannot take its own label off).
    let new = wait_for(cluster::ELECTION, "a new master", || {
        let n = (0..PODS)
            .filter(|n| *n != old)
            .find(|n| c.pod_label(*n, ROLE_LABEL).as_deref() == Some("master"))?;
        (c.pod_label(old, ROLE_LABEL).as_deref() == Some("replica")).then_some(n)
    });
    assert_ne!(
        c.pod_object(new)["metadata"]["annotations"][ROLE_EPOCH],
        epoch,
        "the labels carry the new term's epoch"
    );
    // A client that resolves the master Service now reaches the new master.
    assert_eq!(put_through_master_service(&c, "after", "failover"), new);
    c.wait_value(new, "before", "crash");

    // The kubelet restarts the container on the same volume: it rejoins
    // as a replica of the new master, and its label stays replica.
    c.start(old);
    c.wait_all_ready();
    assert_eq!(c.wait_master(), new);
    c.wait_value(old, "after", "failover");
    assert_labels(&c, new);
}

#[test]
fn scenario_2_replica_pod_crashes_and_resumes() {
    let mut c = Cluster::new();
    c.start_all();
    c.wait_all_ready();
    let master = c.wait_master();
    let replica = (master + 1) % PODS;
    c.put(master, "k1", "v1");
    c.wait_value(replica, "k1", "v1");
    let full_before = c.stats(replica)["replication"]["full_resyncs"].as_u64();
    c.stop(replica, Signal::SIGKILL);
    c.put(master, "k2", "while-down");
    c.start(replica);
    c.wait_probes(replica);
    c.wait_value(replica, "k2", "while-down");
    let repl = c.stats(replica)["replication"].clone();
    assert_eq!(repl["full_resyncs"].as_u64(), Some(0), "{repl}");
    assert!(full_before <= Some(1));
    assert!(repl["partial_resyncs"].as_u64() >= Some(1), "{repl}");
    assert_eq!(c.wait_master(), master, "a replica's restart moves nothing");
}

#[test]
fn scenario_3_deleting_the_master_pod_moves_the_master() {
    let mut c = Cluster::new();
    c.start_all();
    c.wait_all_ready();
    let old = c.wait_master();
    put_through_master_service(&c, "era", "one");
    for n in 0..PODS {
        c.wait_value(n, "era", "one");
    }
    // kubectl delete pod: SIGTERM; it resigns (hands over) and exits 0.
    c.stop(old, Signal::SIGTERM);
    let new = put_through_master_service(&c, "era", "two");
    assert_ne!(new, old);
    assert_labels(&c, new);
    // The StatefulSet makes the pod again: a new object, without the
    // label, which the master gives it.
    c.recreate_pod(old);
    c.start(old);
    c.wait_all_ready();
    assert_labels(&c, new);
    c.wait_value(old, "era", "two");
}

/// Restore as docs/KUBERNETES.md tells it, every volume lost: the
/// CronJob's backup, then k8s/restore-job.example.yaml (its claim, then its
/// Job's own command), then the StatefulSet back up. Every key is as it was
/// at the backup, on every pod.
#[test]
fn the_restore_job_brings_back_the_cronjobs_backup_after_every_volume_is_lost() {
    let mut c = Cluster::new();
    let objects = load_all("restore-job.example.yaml");
    let object = |kind: &str| {
        objects
            .iter()
            .find(|o| o["kind"].as_str() == Some(kind))
            .unwrap_or_else(|| panic!("no {kind} in restore-job.example.yaml"))
    };
    let (pvc, job) = (object("PersistentVolumeClaim"), object("Job"));
    // The claim is the one the StatefulSet makes for the master pod, so it
    // adopts it when scaled up.
    let sts = load("statefulset.yaml");
    let template = &sts["spec"]["volumeClaimTemplates"][0];
    // The pod that starts alone on the restored volume.
    let first = 0;
    let claim = format!(
        "{}-{}",
        s(&template["metadata"]["name"], "template name"),
        c.pod_name(first)
    );
    assert_eq!(s(&pvc["metadata"]["name"], "claim name"), claim);
    assert_eq!(
        pvc["metadata"]["namespace"].as_str(),
        Some(c.m.namespace.as_str())
    );
    assert_eq!(pvc["metadata"]["labels"], template["metadata"]["labels"]);
    assert_eq!(pvc["spec"], template["spec"]);
    let spec = &job["spec"]["template"]["spec"];
    let claims = |spec: &serde_yaml::Value| -> Vec<String> {
        spec["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
            .map(str::to_string)
            .collect()
    };
    let backup_claims = claims(&c.m.backup_pod);
    assert_eq!(backup_claims.len(), 1, "{backup_claims:?}");
    let mut want = vec![claim.clone(), backup_claims[0].clone()];
    want.sort();
    let mut got = claims(spec);
    got.sort();
    assert_eq!(got, want, "the Job mounts the new claim and the backups");

    c.start_all();
    c.wait_all_ready();
    let master = c.wait_master();
    let mut expected: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut client = c.client(master);
    for i in 0..200 {
        let (k, v) = (format!("key-{i:03}"), format!("value-{i}"));
        client.put(k.as_bytes(), v.as_bytes()).expect("put");
        expected.insert(k, Some(v));
    }
    for i in (0..200).step_by(10) {
        let (k, v) = (format!("key-{i:03}"), format!("overwritten-{i}"));
        client.put(k.as_bytes(), v.as_bytes()).expect("overwrite");
        expected.insert(k, Some(v));
    }
    for i in (5..200).step_by(20) {
        let k = format!("key-{i:03}");
        client.delete(k.as_bytes()).expect("delete");
        expected.insert(k, None);
    }
    client.put(b"marker", b"before-backup").expect("put");
    expected.insert("marker".into(), Some("before-backup".into()));
    drop(client);
    // The CronJob backs up whichever replica answers first: both have it all.
    for n in (0..PODS).filter(|n| *n != master) {
        c.wait_value(n, "marker", "before-backup");
    }
    let out = c.run_backup_job("backup-job");
    assert!(out.status.success(), "the CronJob failed: {}", stderr(&out));
    c.put(master, "after-backup", "not in the backup");
    expected.insert("after-backup".into(), None);

    // Every pod and every data volume is lost; the procedure deletes the
    // Leases too (the restored log is the truth now).
    for n in 0..PODS {
        c.stop(n, Signal::SIGKILL);
        let data = c.pvc_dir(&format!("data-{}", c.pod_name(n)));
        std::fs::remove_dir_all(&data).expect("lose the volume");
    }
    let leases = format!(
        "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
        c.m.namespace
    );
    let mut names = vec!["kvstore".to_string()];
    names.extend((0..PODS).map(|n| format!("kvstore-member-{}", c.pod_name(n))));
    for name in names {
        let (code, body) = c.api.request(
            axum::http::Method::DELETE,
            &format!("{leases}/{name}"),
            Json::Null,
        );
        assert!(code.is_success(), "delete Lease {name}: {code} {body}");
    }
    // kubectl apply -f k8s/restore-job.example.yaml: the empty claim, then
    // the Job's own command on it.
    std::fs::create_dir_all(c.pvc_dir(&claim)).expect("the new claim");
    let out = c.run_job(spec, "restore", "restore-job");
    assert!(
        out.status.success(),
        "the restore Job failed: {}",
        stderr(&out)
    );
    let backups = c.pvc_dir(&backup_claims[0]);
    assert!(
        stdout(&out).contains(&backups.display().to_string()),
        "the Job should say which backup it restored: {}",
        stdout(&out)
    );

    // kubectl scale statefulset kvstore --replicas=1: kvstore-0 alone on
    // the restored volume is elected; then --replicas=3: the others take a
    // full resync onto new volumes.
    for n in 0..PODS {
        c.recreate_pod(n);
    }
    c.start(first);
    c.wait_probes(first);
    assert_eq!(c.wait_master(), first);
    for n in (0..PODS).filter(|n| *n != first) {
        c.start(n);
    }
    c.wait_all_ready();
    let master = c.wait_master();
    for n in 0..PODS {
        c.wait_value(n, "marker", "before-backup");
        let mut client = c.client(n);
        for (k, v) in &expected {
            let got = client.get(k.as_bytes()).expect("get");
            assert_eq!(
                got.as_deref(),
                v.as_ref().map(|v| v.as_bytes()),
                "{k} on pod {n}"
            );
        }
    }
    c.put(master, "after-restore", "ok");
    for n in 0..PODS {
        c.wait_value(n, "after-restore", "ok");
    }
}
