//! The Kubernetes manifests, run locally: the StatefulSet's, ConfigMap's
//! and backup CronJob's own commands, environment, volumes and probes
//! against real `kvstore` processes (tests/k8s/cluster.rs says how). A
//! manifest change that breaks a command, an env var, a probe or a mounted
//! credential fails here.
//!
//! Auth and TLS run as deployed: the Secret comes from the real
//! `k8s/gen-secrets.sh` (its certificate also names the loopback addresses
//! the pod DNS names become), CLI calls carry the pod's token and CA as
//! `kubectl exec` would, and the rotations of docs/SECURITY.md are played
//! step by step (tests/k8s/auth_tls.rs). The guide's failover scenarios
//! 1-3 (docs/KUBERNETES.md) run here too.

mod auth_tls;
mod cluster;
use crate::common;
mod manifests;
mod secrets;

use std::path::PathBuf;
use std::process::{Command, Output};

use cluster::{Cluster, PODS};
use common::kvstore_bin;
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
    let root = c.root.path().join("backup-job").join("backup");
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
