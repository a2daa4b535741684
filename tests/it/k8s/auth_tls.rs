//! Auth and TLS as deployed: the deployment refuses what it must (plaintext,
//! foreign CAs, missing, wrong or under-privileged tokens), its certificate
//! has the names clients use, a placeholder Secret is refused, and the
//! token, certificate and CA rotations of docs/SECURITY.md work step by step
//! (edit the Secret, the kubelet syncs, `kill -HUP 1` in each pod).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{http_get, wait_for};
use crate::k8s::cluster::{Cluster, DEADLINE, PODS};
use crate::k8s::manifests;
use crate::k8s::{stderr, stdout};
use nix::sys::signal::Signal;

const AUTH: &str = "KVSTORE_AUTH_TOKEN_FILE";
const CA: &str = "KVSTORE_TLS_CA";
const NAME: &str = "KVSTORE_TLS_SERVER_NAME";

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
    let master_svc = manifests::load("service-master.yaml");
    let svc = manifests::s(&master_svc["metadata"]["name"], "name");
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
    let example = manifests::load("secret.example.yaml");
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
