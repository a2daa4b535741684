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
//! step by step. The guide's failover scenarios 1-3 (docs/KUBERNETES.md)
//! run here too.

#[path = "k8s/cluster.rs"]
mod cluster;
mod common;
#[path = "k8s/secrets.rs"]
mod secrets;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cluster::{Cluster, DEADLINE, PODS};
use common::{http_get, kvstore_bin, wait_for};
use nix::sys::signal::Signal;
use serde_json::Value as Json;

const AUTH: &str = "KVSTORE_AUTH_TOKEN_FILE";
const CA: &str = "KVSTORE_TLS_CA";
const NAME: &str = "KVSTORE_TLS_SERVER_NAME";

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

/// A file of the operator's, outside every pod.
fn file(c: &Cluster, name: &str, contents: &[u8]) -> PathBuf {
    let path = c.root.path().join("operator").join(name);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, contents).expect("write");
    path
}

/// A new token, made as docs/SECURITY.md says: `openssl rand -hex 32`.
fn new_token() -> String {
    let out = Command::new("openssl")
        .args(["rand", "-hex", "32"])
        .output()
        .expect("openssl");
    assert!(out.status.success());
    stdout(&out)
}

/// First line of a token file.
fn first_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Asserts the CLI call failed with an error containing `word`.
fn assert_refused(out: &Output, word: &str, what: &str) {
    let err = stderr(out);
    assert!(
        !out.status.success() && err.contains(word),
        "{what}: expected a failure with {word:?}, got {} / {err}",
        out.status
    );
}

const RELOADED: &str = "SIGHUP: reloaded tokens and certificates";
const RELOAD_FAILED: &str = "SIGHUP: reload failed, keeping the previous";

/// `kvstore-n -- sh -c 'kill -HUP 1'`, then waits for the pod to log
/// `expect` once more than before.
fn reload(c: &Cluster, n: u32, expect: &str) {
    let before = c.logs(n).matches(expect).count();
    c.hup(n);
    wait_for(DEADLINE, &format!("pod {n} to log {expect:?}"), || {
        (c.logs(n).matches(expect).count() > before).then_some(())
    });
}

/// `kubectl apply` of the edited Secret, the kubelet's sync, then
/// `kubectl exec kvstore-N -- sh -c 'kill -HUP 1'` on every pod.
fn apply_and_reload(c: &Cluster) {
    c.sync_secrets();
    for n in 0..PODS {
        reload(c, n, RELOADED);
    }
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
fn the_deployment_requires_tls_and_the_right_credential() {
    let mut c = Cluster::new();
    c.start_all();
    c.wait_all_ready();
    c.put(0, "k", "v");
    c.wait_value(2, "k", "v");

    // Plaintext to the TLS client port fails fast and says why.
    let out = c.exec_with(0, &[(CA, None)], &["read", "k"]);
    assert_refused(&out, "TLS_REQUIRED", "plaintext client");
    // A CA of another deployment does not verify the pods' certificate.
    let other = c.root.path().join("other-deployment");
    c.secret.generate_more(&other, None);
    let out = c.exec_with(0, &[(CA, Some(&other.join("ca.crt")))], &["read", "k"]);
    assert_refused(&out, "invalid peer certificate", "foreign CA");
    // The test reaches pods by IP; in the cluster, clients verify the
    // names the manifests and the guide use. The certificate has them all.
    let master_svc = cluster::load("service-master.yaml");
    let svc = cluster::s(&master_svc["metadata"]["name"], "name");
    let ns = &c.m.namespace;
    let mut names = vec![
        format!("{svc}.{ns}.svc.cluster.local"),
        format!("{svc}.{ns}.svc"),
        format!("{svc}.{ns}"),
        svc.to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ];
    for n in 0..PODS {
        names.push(format!("{}.{}", c.pod_name(n), c.dns_suffix()));
        names.push(format!("{}.{}", c.pod_name(n), c.m.headless));
    }
    for name in &names {
        let out = c.exec_with(0, &[(NAME, Some(Path::new(name)))], &["read", "k"]);
        assert!(out.status.success(), "as {name}: {}", stderr(&out));
    }
    let elsewhere = format!(
        "{}.{}.elsewhere.svc.cluster.local",
        c.pod_name(0),
        c.m.headless
    );
    let out = c.exec_with(0, &[(NAME, Some(Path::new(&elsewhere)))], &["read", "k"]);
    assert_refused(
        &out,
        "certificate not valid for name",
        "another namespace's name",
    );
    // No token, a wrong token.
    let out = c.exec_with(0, &[(AUTH, None)], &["read", "k"]);
    assert_refused(&out, "AUTH_REQUIRED", "no token");
    let wrong = file(&c, "wrong", new_token().as_bytes());
    let out = c.exec_with(0, &[(AUTH, Some(&wrong))], &["read", "k"]);
    assert_refused(&out, "AUTH_FAILED", "wrong token");
    // The read-only token reads and cannot write.
    let ro = c.secret.path("readonly-token");
    let out = c.exec_with(2, &[(AUTH, Some(&ro))], &["read", "k"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "v");
    let out = c.exec_with(0, &[(AUTH, Some(&ro))], &["put", "k", "w"]);
    assert_refused(&out, "PERMISSION_DENIED", "read-only put");
    // The client token (the pods' default) cannot take a backup (the raw
    // log), nor promote a replica.
    let to = c.root.path().join("operator").join("backup");
    let from = format!("{}:{}", c.ip(1), c.client_port());
    let out = c.exec(
        1,
        &[
            "backup",
            "--from",
            &from,
            "--to",
            to.to_str().expect("utf-8"),
        ],
    );
    assert_refused(&out, "PERMISSION_DENIED", "backup with the client token");
    let out = c.exec(2, &["promote"]);
    assert_refused(&out, "PERMISSION_DENIED", "promote with the client token");
    assert_eq!(c.stats(2)["replication"]["role"], "replica");
    // What the admin token is for still works, and the HTTP port stays
    // plaintext and open: the failures above are counted there.
    let admin = c.secret.path("admin-token");
    let out = c.exec_with(1, &[(AUTH, Some(&admin))], &["read", "k"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let metrics = format!("{}:9555", c.ip(0)).parse().expect("addr");
    let (code, body) = http_get(metrics, "/metrics").expect("scrape /metrics");
    assert_eq!(code, 200);
    for reason in ["bad_token", "missing_token", "permission_denied"] {
        let line = format!("kvstore_auth_failures_total{{reason=\"{reason}\"}} ");
        let count: f64 = body
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in /metrics"));
        assert!(count >= 1.0, "{line}{count}");
    }
}

#[test]
fn token_rotation_as_documented() {
    let mut c = Cluster::new();
    c.start_all();
    c.wait_all_ready();
    c.put(0, "k", "v0");
    let old = first_line(&c.secret.get("client-token"));
    let new = new_token();
    let old_file = file(&c, "old-client", old.as_bytes());
    let new_file = file(&c, "new-client", new.as_bytes());

    // 1. New token on the first line, the old one kept: both accepted.
    c.secret
        .set("client-token", format!("{new}\n{old}\n").as_bytes());
    apply_and_reload(&c);
    wait_for(DEADLINE, "the new client token to be accepted", || {
        let out = c.exec_with(0, &[(AUTH, Some(&new_file))], &["put", "k", "v1"]);
        out.status.success().then_some(())
    });
    let out = c.exec_with(0, &[(AUTH, Some(&old_file))], &["read", "k"]);
    assert!(
        out.status.success(),
        "old token in the window: {}",
        stderr(&out)
    );
    // The pods' CLI sends the first line (the new token), also through a
    // redirect from a replica.
    c.put(1, "k", "v2");
    c.wait_value(2, "k", "v2");

    // 2. Old token removed: refused on every pod.
    c.secret.set("client-token", format!("{new}\n").as_bytes());
    apply_and_reload(&c);
    for n in 0..PODS {
        wait_for(
            DEADLINE,
            &format!("pod {n} to refuse the old token"),
            || {
                let out = c.exec_with(n, &[(AUTH, Some(&old_file))], &["read", "k"]);
                (!out.status.success()).then_some(())
            },
        );
        let out = c.exec_with(n, &[(AUTH, Some(&old_file))], &["read", "k"]);
        assert_refused(&out, "AUTH_FAILED", "old token after rotation");
    }
    c.put(0, "k", "v3");

    // The admin token the same way; a replica presents the first line to
    // its master, so a replica (re)connecting in the window uses the new one.
    let old_admin = first_line(&c.secret.get("admin-token"));
    let new_admin = new_token();
    let old_admin_file = file(&c, "old-admin", old_admin.as_bytes());
    c.secret.set(
        "admin-token",
        format!("{new_admin}\n{old_admin}\n").as_bytes(),
    );
    apply_and_reload(&c);
    c.stop(2, Signal::SIGKILL);
    c.start(2);
    c.wait_probes(2);
    c.secret
        .set("admin-token", format!("{new_admin}\n").as_bytes());
    apply_and_reload(&c);
    wait_for(DEADLINE, "the master to refuse the old admin token", || {
        let out = c.exec_with(0, &[(AUTH, Some(&old_admin_file))], &["read", "k"]);
        (!out.status.success()).then_some(())
    });
    c.stop(1, Signal::SIGKILL);
    c.start(1);
    c.wait_probes(1);
    c.put(0, "k", "v4");
    c.wait_value(1, "k", "v4");
    c.wait_value(2, "k", "v4");
    // The CronJob's next run mounts the new admin token.
    let out = c.run_backup_job("backup-after-rotation");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn certificate_and_ca_rotation_as_documented() {
    let mut c = Cluster::new();
    c.start_all();
    c.wait_all_ready();
    c.put(0, "k", "v0");
    let old_ca = c.secret.get("ca.crt");
    let old_ca_file = file(&c, "old-ca.crt", &old_ca);

    // Renewal from the same CA (gen-secrets.sh --ca): clients see no change.
    let renew = c.root.path().join("renewed");
    c.secret.generate_more(&renew, Some(&c.secret.ca_dir));
    for key in ["tls.crt", "tls.key"] {
        c.secret.set(key, &read(&renew.join(key)));
    }
    apply_and_reload(&c);
    c.put(0, "k", "v1");
    c.wait_value(2, "k", "v1");

    // A new CA. 1. ca.crt = old CA + new CA, everywhere.
    let next = c.root.path().join("next-ca");
    c.secret.generate_more(&next, None);
    let new_ca_file = next.join("ca.crt");
    let mut bundle = old_ca.clone();
    bundle.extend_from_slice(&read(&new_ca_file));
    c.secret.set("ca.crt", &bundle);
    apply_and_reload(&c);
    // 2. The server certificate signed by the new CA.
    for key in ["tls.crt", "tls.key"] {
        c.secret.set(key, &read(&next.join(key)));
    }
    apply_and_reload(&c);
    for n in 0..PODS {
        wait_for(
            DEADLINE,
            &format!("pod {n} to serve the new certificate"),
            || {
                let out = c.exec_with(n, &[(CA, Some(&new_ca_file))], &["read", "k"]);
                out.status.success().then_some(())
            },
        );
        let out = c.exec_with(n, &[(CA, Some(&old_ca_file))], &["read", "k"]);
        assert_refused(&out, "invalid peer certificate", "old CA only");
    }
    // Replication verifies the new certificate against the bundle.
    c.stop(1, Signal::SIGKILL);
    c.start(1);
    c.wait_probes(1);
    c.put(2, "k", "v2");
    c.wait_value(1, "k", "v2");

    // A broken Secret changes nothing: the reload fails and says so.
    let good_key = c.secret.get("tls.key");
    c.secret.set("tls.key", b"not a key\n");
    c.sync_secrets();
    reload(&c, 0, RELOAD_FAILED);
    c.put(0, "k", "still-served");
    c.secret.set("tls.key", &good_key);

    // 3. The old CA removed.
    c.secret.set("ca.crt", &read(&new_ca_file));
    apply_and_reload(&c);
    c.stop(2, Signal::SIGKILL);
    c.start(2);
    c.wait_probes(2);
    c.put(0, "k", "v3");
    c.wait_value(2, "k", "v3");
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_example_secret_is_refused_at_start() {
    let mut c = Cluster::new();
    let example = cluster::load("secret.example.yaml");
    for (k, v) in example["stringData"].as_mapping().expect("stringData") {
        let value = v.as_str().expect("placeholder");
        c.secret
            .set(k.as_str().expect("key"), format!("{value}\n").as_bytes());
    }
    c.start(0);
    let status = c.wait_exit(0);
    assert!(!status.success(), "a pod started with the example Secret");
    assert!(c.logs(0).contains("--tls-cert"), "{}", c.logs(0));
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
