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
mod manifests;
mod secrets;

use std::path::PathBuf;
use std::process::{Command, Output};

use std::collections::BTreeMap;

use cluster::{Cluster, PODS};
use common::kvstore_bin;
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
fn init_container_resolves_every_pods_role() {
    let mut c = Cluster::new();
    for master in 0..2u32 {
        c.config.insert("MASTER_ORDINAL".into(), master.to_string());
        for n in 0..PODS {
            let out = c.run_init(n);
            assert!(out.status.success(), "{}", stderr(&out));
            let expected = if n == master {
                format!("{}: role MASTER", c.pod_name(n))
            } else {
                format!(
                    "{}: role REPLICA of {}:{}",
                    c.pod_name(n),
                    c.ip(master),
                    c.client_port()
                )
            };
            assert_eq!(stdout(&out), expected, "MASTER_ORDINAL={master}");
        }
    }
    // A bad ConfigMap stops the pod in its init container, naming the setting.
    c.config.insert("MASTER_ORDINAL".into(), "one".into());
    let out = c.run_init(1);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("MASTER_ORDINAL"));
}

#[test]
fn probes_quick_start_and_the_backup_cronjob() {
    let mut c = Cluster::new();
    c.start_all();
    c.wait_all_ready();
    assert!(c.logs(0).contains("Starting as MASTER"), "{}", c.logs(0));
    assert!(c.logs(1).contains("Starting as REPLICA"), "{}", c.logs(1));
    // Quick start: kubectl exec kvstore-0 -- kvstore put testkey testvalue
    c.put(0, "testkey", "testvalue");
    c.wait_value(0, "testkey", "testvalue");
    c.wait_value(2, "testkey", "testvalue");
    // A write sent to a replica is redirected to the master (over TLS to
    // the master's advertised name, with the same token).
    c.put(1, "via-replica", "ok");
    c.wait_value(0, "via-replica", "ok");

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
    let replicas: Vec<String> = (1..PODS)
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
    let master = format!("{}:{}", c.ip(0), c.client_port());
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

#[test]
fn scenario_1_master_pod_crashes_and_comes_back_as_master() {
    let mut c = Cluster::new();
    c.start_all();
    c.wait_all_ready();
    c.put(0, "before", "crash");
    c.wait_value(1, "before", "crash");
    c.stop(0, Signal::SIGKILL);
    // The kubelet restarts the container on the same volume.
    c.start(0);
    c.wait_all_ready();
    assert!(c.logs(0).contains("Starting as MASTER"));
    c.wait_value(0, "before", "crash");
    c.put(0, "after", "restart");
    c.wait_value(1, "after", "restart");
    c.wait_value(2, "after", "restart");
}

#[test]
fn scenario_2_replica_pod_crashes_and_resumes() {
    let mut c = Cluster::new();
    c.start_all();
    c.wait_all_ready();
    c.put(0, "k1", "v1");
    c.wait_value(2, "k1", "v1");
    let full_before = c.stats(2)["replication"]["full_resyncs"].as_u64();
    c.stop(2, Signal::SIGKILL);
    c.put(0, "k2", "while-down");
    c.start(2);
    c.wait_probes(2);
    c.wait_value(2, "k2", "while-down");
    let repl = c.stats(2)["replication"].clone();
    assert_eq!(repl["full_resyncs"].as_u64(), Some(0), "{repl}");
    assert!(full_before <= Some(1));
    assert!(repl["partial_resyncs"].as_u64() >= Some(1), "{repl}");
}

#[test]
fn scenario_3_manual_promotion_through_master_ordinal() {
    let mut c = Cluster::new();
    c.start_all();
    c.wait_all_ready();
    c.put(0, "era", "zero");
    for n in 1..PODS {
        c.wait_value(n, "era", "zero");
    }
    // Edit the ConfigMap (MASTER_ORDINAL 0 -> 1), delete every pod.
    c.config.insert("MASTER_ORDINAL".into(), "1".into());
    for n in 0..PODS {
        c.stop(n, Signal::SIGTERM);
    }
    c.start_all();
    c.wait_all_ready();
    assert!(c.logs(1).contains("Starting as MASTER"), "{}", c.logs(1));
    assert!(c.logs(0).contains("Starting as REPLICA"), "{}", c.logs(0));
    assert_eq!(c.stats(1)["replication"]["role"], "master");
    c.wait_value(1, "era", "zero");
    // The old master is a replica now: a write there reaches kvstore-1.
    c.put(0, "era", "one");
    c.wait_value(1, "era", "one");
    c.wait_value(2, "era", "one");
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
    let master: u32 = c.config["MASTER_ORDINAL"].parse().expect("MASTER_ORDINAL");
    let claim = format!(
        "{}-{}",
        s(&template["metadata"]["name"], "template name"),
        c.pod_name(master)
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

    // Every pod and every data volume is lost.
    for n in 0..PODS {
        c.stop(n, Signal::SIGKILL);
        let data = c.pvc_dir(&format!("data-{}", c.pod_name(n)));
        std::fs::remove_dir_all(&data).expect("lose the volume");
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

    // kubectl scale statefulset kvstore --replicas=3: the master opens the
    // restored volume, the replicas take a full resync onto new ones.
    c.start_all();
    c.wait_all_ready();
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
