//! A local stand-in for the cluster, driven by the manifests themselves:
//! reads `k8s/statefulset.yaml`, `k8s/configmap.yaml` and
//! `k8s/cronjob-backup.yaml` and runs *their* commands with *their*
//! environment (envFrom the ConfigMap, `$(VAR)` expansion, `HOSTNAME` = pod
//! name) against real `kvstore` processes, and polls *their* probe paths
//! and ports.
//!
//! A "pod" is a process with its own loopback address, 127.0.T.(10+N) for
//! ordinal N, listening on the manifests' own ports (5555, 9555). The pod
//! DNS names of the headless service are rewritten to those addresses, and
//! volume mount paths to directories of the test: nothing else is changed.
//! A PersistentVolumeClaim is one directory per claim name, shared by every
//! pod that mounts it (the StatefulSet's `data` template is claim
//! `data-kvstore-N`), so a Job sees the pods' volumes as on a cluster.
//! Secret volumes are filled the kubelet's way from the Secret that
//! `k8s/gen-secrets.sh` made ([`crate::k8s::secrets`]), so auth and TLS run as
//! deployed. Invariant: every path in a command or env value lies inside a
//! volume mount of its container (the rest is the image's read-only root).
//!
//! The cluster DNS name of the headless Service itself, which resolves to
//! every pod, is answered by a stand-in for the Jobs that use it: see
//! [`Cluster::run_job`].
//!
//! The Kubernetes API is the STAND-IN of `common/kube_standin.rs` (over
//! TLS, with its own CA): the nodes run the ConfigMap's `kubernetes`
//! coordinator against it. It holds the Pod objects the StatefulSet
//! controller would make (the template's labels, the pod-name label, the
//! pod's address), which the master labels. A pod whose spec mounts its
//! service account token gets the stand-in's token, CA and namespace as
//! files, as the kubelet projects them; the in-cluster discovery itself
//! (`KUBERNETES_SERVICE_HOST`, the fixed path
//! `/var/run/secrets/kubernetes.io/serviceaccount`) cannot point here, so
//! the "kubelet" adds `KVSTORE_KUBE_API_URL`, `_TOKEN_FILE`, `_CA_FILE`
//! and `_NAMESPACE` naming them, which is what a node outside a cluster
//! sets. A Service is resolved as kube-proxy does: the pods its selector
//! matches whose readiness probe answers 200 ([`Cluster::endpoints`]).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::kube_standin::KubeStandIn;
use crate::common::{http_get, kvstore_bin, run_cli, wait_for};
use crate::k8s::manifests::{expand, manifests, s, seq, Manifests};
use crate::k8s::secrets::Secret;
use kvstore::client::{BlockingClient, ClientOptions};
use kvstore::security::{Connector, TlsFiles};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value as Json;
use serde_yaml::Value;

pub const DEADLINE: Duration = Duration::from_secs(30);
/// An election on a loaded 2-core machine: the lease (2 s here), the
/// poll, the campaign grace, the updates.
pub const ELECTION: Duration = Duration::from_secs(40);
pub const PODS: u32 = 3;

/// A local stand-in for the cluster: loopback addresses and directories.
pub struct Cluster {
    pub m: Manifests,
    /// Third byte of the pods' 127.0.T.x addresses.
    pub t: u8,
    pub root: tempfile::TempDir,
    /// The live ConfigMap (tests edit it).
    pub config: BTreeMap<String, String>,
    /// The live Secret `kvstore-secrets` (tests edit it for rotations).
    pub secret: Secret,
    /// The Kubernetes API stand-in.
    pub api: KubeStandIn,
    pods: Vec<Option<Child>>,
    restarts: u32,
}

impl Cluster {
    pub fn new() -> Cluster {
        let m = manifests();
        let t = free_subnet(&m);
        let config = m.config.clone();
        let root = tempfile::tempdir().expect("tempdir");
        // The certificate must also name the addresses the pod DNS names
        // are rewritten to.
        let ips: Vec<String> = (0..PODS)
            .map(|n| format!("IP:127.0.{t}.{}", 10 + n))
            .collect();
        let secret = Secret::generate(root.path(), &m.namespace, &ips.join(","));
        let mut config = config;
        // The live ConfigMap with a short lease (the shortest kvstore
        // grants), so that an election in a test takes seconds, not 15.
        config.insert("KVSTORE_LEASE_TTL_MS".into(), "2000".into());
        let c = Cluster {
            m,
            t,
            root,
            config,
            secret,
            api: KubeStandIn::start_tls(),
            pods: (0..PODS).map(|_| None).collect(),
            restarts: 0,
        };
        for n in 0..PODS {
            c.create_pod(n);
        }
        c
    }

    /// The StatefulSet controller creating Pod `n` in the API: the
    /// template's labels, the pod-name label, its address.
    pub fn create_pod(&self, n: u32) {
        let sts = crate::k8s::manifests::load("statefulset.yaml");
        let mut labels: Json = serde_json::to_value(&sts["spec"]["template"]["metadata"]["labels"])
            .expect("template labels");
        labels["statefulset.kubernetes.io/pod-name"] = Json::String(self.pod_name(n));
        let ns = &self.m.namespace;
        let (code, body) = self.api.request(
            axum::http::Method::POST,
            &format!("/api/v1/namespaces/{ns}/pods"),
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": { "name": self.pod_name(n), "labels": labels },
                "status": { "podIP": self.ip(n) },
            }),
        );
        assert!(code.is_success(), "create pod {n}: {code} {body}");
    }

    /// The StatefulSet controller replacing Pod `n` after `kubectl delete
    /// pod` or a scale-down and up: a new object, without the role label.
    pub fn recreate_pod(&self, n: u32) {
        let ns = &self.m.namespace;
        let (code, body) = self.api.request(
            axum::http::Method::DELETE,
            &format!("/api/v1/namespaces/{ns}/pods/{}", self.pod_name(n)),
            Json::Null,
        );
        assert!(code.is_success(), "delete pod {n}: {code} {body}");
        self.create_pod(n);
    }

    /// The Pod object of pod `n` in the API.
    pub fn pod_object(&self, n: u32) -> Json {
        self.api
            .object("pods", &self.m.namespace, &self.pod_name(n))
            .unwrap_or_else(|| panic!("no Pod {}", self.pod_name(n)))
    }

    /// The label `key` of pod `n`'s object.
    pub fn pod_label(&self, n: u32, key: &str) -> Option<String> {
        self.pod_object(n)["metadata"]["labels"][key]
            .as_str()
            .map(str::to_string)
    }

    /// What kube-proxy routes Service `file` (a k8s/ manifest) to: the
    /// pods whose labels its selector matches and whose readiness probe
    /// answers 200, as (ordinal, address of its target port).
    pub fn endpoints(&self, file: &str) -> Vec<(u32, SocketAddr)> {
        let svc = crate::k8s::manifests::load(file);
        let selector = svc["spec"]["selector"]
            .as_mapping()
            .expect("selector")
            .clone();
        let target = &svc["spec"]["ports"][0]["targetPort"];
        let main = self.main_container();
        let port = self.port(&main, target);
        let (_, path, http) = self
            .probes()
            .into_iter()
            .find(|(kind, _, _)| kind == "readinessProbe")
            .expect("a readiness probe");
        (0..PODS)
            .filter(|n| {
                let labels = &self.pod_object(*n)["metadata"]["labels"];
                selector
                    .iter()
                    .all(|(k, v)| labels[s(k, "label")].as_str() == v.as_str())
            })
            .filter(|n| {
                let probe: SocketAddr = format!("{}:{http}", self.ip(*n)).parse().expect("addr");
                matches!(http_get(probe, &path), Ok((200, _)))
            })
            .map(|n| (n, format!("{}:{port}", self.ip(n)).parse().expect("addr")))
            .collect()
    }

    /// Waits until the master Service routes to exactly one pod and that
    /// pod is the master; returns its ordinal.
    pub fn wait_master(&self) -> u32 {
        wait_for(
            ELECTION,
            "the master Service to route to the master",
            || {
                let [(n, _)] = self.endpoints("service-master.yaml")[..] else {
                    return None;
                };
                let out = self.exec(n, &["stats", "--json"]);
                let stats: Json = serde_json::from_slice(&out.stdout).ok()?;
                (stats["replication"]["role"] == "master").then_some(n)
            },
        )
    }

    /// The "kubelet" projecting the service account token for a pod with
    /// template `spec` run by `owner`: the settings that name the API and
    /// the files (see the module header). Empty when the spec mounts no
    /// token.
    fn service_account_env(&self, spec: &Value, owner: &str) -> Vec<(String, String)> {
        if spec["automountServiceAccountToken"] != Value::Bool(true) {
            return Vec::new();
        }
        assert!(
            spec["serviceAccountName"].as_str().is_some(),
            "a pod that mounts a token runs as a named ServiceAccount"
        );
        let dir = self.root.path().join(owner).join("serviceaccount");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("token"), &self.api.token).expect("token");
        std::fs::write(dir.join("namespace"), &self.m.namespace).expect("namespace");
        let ca = self.api.ca_file.as_ref().expect("TLS stand-in");
        std::fs::copy(ca, dir.join("ca.crt")).expect("ca.crt");
        let file = |name: &str| dir.join(name).display().to_string();
        vec![
            ("KVSTORE_KUBE_API_URL".into(), self.api.url.clone()),
            ("KVSTORE_KUBE_TOKEN_FILE".into(), file("token")),
            ("KVSTORE_KUBE_CA_FILE".into(), file("ca.crt")),
            ("KVSTORE_KUBE_NAMESPACE".into(), self.m.namespace.clone()),
        ]
    }

    pub fn pod_name(&self, n: u32) -> String {
        format!("{}-{n}", self.m.sts_name)
    }

    pub fn ip(&self, n: u32) -> String {
        format!("127.0.{}.{}", self.t, 10 + n)
    }

    pub fn dns_suffix(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.m.headless, self.m.namespace)
    }

    /// Pod DNS names become loopback addresses; `{ordinal}` stays for
    /// kvstore to fill in (127.0.T.1{ordinal} is 127.0.T.(10+ordinal)).
    pub fn localize(&self, value: &str, pod: u32, mounts: &BTreeMap<String, PathBuf>) -> String {
        let mut v = value.to_string();
        let suffix = self.dns_suffix();
        v = v.replace(
            &format!("{}-{{ordinal}}.{suffix}", self.m.sts_name),
            &format!("127.0.{}.1{{ordinal}}", self.t),
        );
        for n in 0..PODS {
            v = v.replace(&format!("{}.{suffix}", self.pod_name(n)), &self.ip(n));
        }
        // A pod binds its own address.
        v = v.replace("0.0.0.0:", &format!("{}:", self.ip(pod)));
        for (mount, dir) in mounts {
            if v == *mount || v.starts_with(&format!("{mount}/")) {
                v = v.replacen(mount.as_str(), dir.to_str().expect("utf-8"), 1);
            }
        }
        // A path outside every volume would be the container's read-only
        // root filesystem, and here the host's: refuse it.
        assert!(
            !v.starts_with('/') || v.starts_with(self.root.path().to_str().expect("utf-8")),
            "{value:?} is a path outside the container's volume mounts"
        );
        v
    }

    pub fn port(&self, container: &Value, port: &Value) -> u16 {
        if let Some(n) = port.as_u64() {
            return u16::try_from(n).expect("port");
        }
        let name = s(port, "probe port");
        let p = seq(&container["ports"], "ports")
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no container port named {name}"));
        u16::try_from(p["containerPort"].as_u64().expect("containerPort")).expect("port")
    }

    /// The directory of PersistentVolumeClaim `claim`.
    pub fn pvc_dir(&self, claim: &str) -> PathBuf {
        self.root.path().join("pvc").join(claim)
    }

    /// Where volume `name` of the pod template `spec` lives for the pod
    /// `owner`: a claim's directory for a PersistentVolumeClaim (a
    /// volumeClaimTemplate's claim is `<template>-<pod>`), the owner's own
    /// directory for any other volume.
    pub fn volume_dir(&self, spec: &Value, name: &str, owner: &str) -> PathBuf {
        let volume = spec["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|v| v["name"].as_str() == Some(name));
        if let Some(claim) = volume.and_then(|v| v["persistentVolumeClaim"]["claimName"].as_str()) {
            return self.pvc_dir(claim);
        }
        if volume.is_none() && self.m.claim_templates.iter().any(|t| t == name) {
            return self.pvc_dir(&format!("{name}-{owner}"));
        }
        self.root.path().join(owner).join(name)
    }

    pub fn mounts(
        &self,
        spec: &Value,
        container: &Value,
        owner: &str,
    ) -> BTreeMap<String, PathBuf> {
        let mut out = BTreeMap::new();
        if let Some(list) = container["volumeMounts"].as_sequence() {
            for vm in list {
                let dir = self.volume_dir(spec, s(&vm["name"], "volume name"), owner);
                std::fs::create_dir_all(&dir).expect("mkdir");
                out.insert(s(&vm["mountPath"], "mountPath").to_string(), dir);
            }
        }
        out
    }

    /// The environment of `container` (of the pod template `spec`) as
    /// Kubernetes builds it, localized.
    pub fn env(
        &self,
        spec: &Value,
        container: &Value,
        pod: u32,
        owner: &str,
    ) -> Vec<(String, String)> {
        let name = self.pod_name(pod);
        let mut env: Vec<(String, String)> = vec![("HOSTNAME".into(), name.clone())];
        if let Some(from) = container["envFrom"].as_sequence() {
            for f in from {
                let cm = s(&f["configMapRef"]["name"], "configMapRef");
                assert_eq!(cm, "kvstore-config", "unknown ConfigMap {cm}");
                env.extend(self.config.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        if let Some(list) = container["env"].as_sequence() {
            for e in list {
                let key = s(&e["name"], "env name").to_string();
                let value = if let Some(v) = e["value"].as_str() {
                    expand(v, &env)
                } else {
                    let path = s(&e["valueFrom"]["fieldRef"]["fieldPath"], "fieldPath");
                    assert_eq!(path, "metadata.name", "unsupported fieldRef {path}");
                    name.clone()
                };
                env.retain(|(k, _)| *k != key);
                env.push((key, value));
            }
        }
        let mounts = self.mounts(spec, container, owner);
        env.into_iter()
            .map(|(k, v)| {
                let v = self.localize(&v, pod, &mounts);
                (k, v)
            })
            .collect()
    }

    /// The command of `container` (of the pod template `spec`), with the
    /// image's `kvstore` replaced by the binary under test.
    pub fn command(&self, spec: &Value, container: &Value, pod: u32, owner: &str) -> Command {
        let mut argv: Vec<String> = seq(&container["command"], "command")
            .iter()
            .map(|a| s(a, "command arg").to_string())
            .collect();
        if let Some(args) = container["args"].as_sequence() {
            argv.extend(args.iter().map(|a| s(a, "arg").to_string()));
        }
        assert_eq!(argv.first().map(String::as_str), Some("kvstore"));
        let mounts = self.mounts(spec, container, owner);
        let mut cmd = Command::new(kvstore_bin());
        for a in argv.iter().skip(1) {
            cmd.arg(self.localize(a, pod, &mounts));
        }
        cmd.env_clear();
        for (k, v) in self.env(spec, container, pod, owner) {
            cmd.env(k, v);
        }
        for (k, v) in self.service_account_env(spec, owner) {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    pub fn container<'a>(&self, spec: &'a Value, list: &str, name: &str) -> &'a Value {
        seq(&spec[list], list)
            .iter()
            .find(|c| c["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no {list} entry named {name}"))
    }

    pub fn main_container(&self) -> Value {
        self.container(&self.m.pod, "containers", "kvstore").clone()
    }

    /// The kubelet mounting the Secret volumes of a pod with template
    /// `spec` (every container's, init containers included) for `owner`,
    /// or refreshing them after the Secret changed.
    pub fn mount_secrets(&self, spec: &Value, owner: &str) {
        let volumes = spec["volumes"].as_sequence();
        for list in ["initContainers", "containers"] {
            for c in spec[list].as_sequence().into_iter().flatten() {
                for vm in c["volumeMounts"].as_sequence().into_iter().flatten() {
                    let name = s(&vm["name"], "volume name");
                    let source = volumes
                        .into_iter()
                        .flatten()
                        .find(|v| v["name"].as_str() == Some(name))
                        .map(|v| &v["secret"]);
                    let Some(source) = source.filter(|v| v.is_mapping()) else {
                        continue;
                    };
                    assert_eq!(
                        vm["readOnly"],
                        Value::Bool(true),
                        "Secret volume {name} must be mounted readOnly"
                    );
                    let dir = self.root.path().join(owner).join(name);
                    std::fs::create_dir_all(&dir).expect("mkdir");
                    self.secret.project(source, &dir);
                }
            }
        }
    }

    /// The kubelet syncing every running pod's Secret volumes (after
    /// `kubectl apply` of a changed Secret).
    pub fn sync_secrets(&self) {
        for n in 0..PODS {
            self.mount_secrets(&self.m.pod, &self.pod_name(n));
        }
    }

    /// `kubectl exec kvstore-n -- sh -c 'kill -HUP 1'`.
    pub fn hup(&self, n: u32) {
        let child = self.pods[n as usize].as_ref().expect("pod running");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        kill(pid, Signal::SIGHUP).expect("SIGHUP");
    }

    /// Runs the init container of pod `n` (its volumes mounted first): its
    /// stdout, or a panic.
    pub fn run_init(&self, n: u32) -> Output {
        self.mount_secrets(&self.m.pod, &self.pod_name(n));
        let init = self.container(&self.m.pod, "initContainers", "init-kvstore");
        let mut cmd = self.command(&self.m.pod, init, n, &self.pod_name(n));
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        run_cli(cmd, None)
    }

    /// "Kubernetes starts pod n": init container, then the server.
    pub fn start(&mut self, n: u32) {
        let init = self.run_init(n);
        assert!(
            init.status.success(),
            "init container of {} failed: {}",
            self.pod_name(n),
            String::from_utf8_lossy(&init.stderr)
        );
        self.restarts += 1;
        let log = self
            .root
            .path()
            .join(format!("{}-{}.log", self.pod_name(n), self.restarts));
        let main = self.main_container();
        let mut cmd = self.command(&self.m.pod, &main, n, &self.pod_name(n));
        let file = std::fs::File::create(&log).expect("log");
        cmd.stdout(file.try_clone().expect("log")).stderr(file);
        let child = cmd.spawn().expect("spawn the kvstore container");
        self.pods[n as usize] = Some(child);
        std::fs::write(
            self.root.path().join(format!("current-{n}")),
            log.to_str().unwrap_or(""),
        )
        .expect("note log");
    }

    pub fn logs(&self, n: u32) -> String {
        let path = std::fs::read_to_string(self.root.path().join(format!("current-{n}")))
            .unwrap_or_default();
        std::fs::read_to_string(path).unwrap_or_default()
    }

    pub fn start_all(&mut self) {
        for n in 0..PODS {
            self.start(n);
        }
    }

    pub fn stop(&mut self, n: u32, signal: Signal) {
        let mut child = self.pods[n as usize].take().expect("pod running");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        kill(pid, signal).expect("signal");
        let status = wait_for(DEADLINE, "the pod to exit", || {
            child.try_wait().expect("wait")
        });
        if signal == Signal::SIGTERM {
            assert!(status.success(), "SIGTERM exit {status}: {}", self.logs(n));
        }
    }

    /// Waits for pod `n`'s container to exit by itself.
    pub fn wait_exit(&mut self, n: u32) -> std::process::ExitStatus {
        let mut child = self.pods[n as usize].take().expect("pod running");
        wait_for(DEADLINE, "the pod to exit", || {
            child.try_wait().expect("wait")
        })
    }

    /// Every probe of the main container, as the kubelet would send it.
    pub fn probes(&self) -> Vec<(String, String, u16)> {
        let main = self.main_container();
        let mut out = Vec::new();
        for kind in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let get = &main[kind]["httpGet"];
            assert!(get.is_mapping(), "{kind} must be an httpGet probe");
            out.push((
                kind.to_string(),
                s(&get["path"], "probe path").to_string(),
                self.port(&main, &get["port"]),
            ));
        }
        out
    }

    /// Waits until every probe of pod `n` answers 200.
    pub fn wait_probes(&mut self, n: u32) {
        let ip = self.ip(n);
        for (kind, path, port) in self.probes() {
            let addr: SocketAddr = format!("{ip}:{port}").parse().expect("addr");
            let end = Instant::now() + DEADLINE;
            loop {
                if let Some(child) = self.pods[n as usize].as_mut() {
                    if let Ok(Some(st)) = child.try_wait() {
                        panic!("pod {n} exited ({st}):\n{}", self.logs(n));
                    }
                }
                if matches!(http_get(addr, &path), Ok((200, _))) {
                    break;
                }
                assert!(
                    Instant::now() < end,
                    "{kind} {path} on {addr} never answered 200; log:\n{}",
                    self.logs(n)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Every pod's probes answer 200 and the master Service routes to the
    /// elected master, whose term has settled.
    pub fn wait_all_ready(&mut self) {
        for n in 0..PODS {
            self.wait_probes(n);
        }
        self.wait_master();
    }

    /// `kubectl exec kvstore-n -- kvstore ARGS`: the CLI with the pod's
    /// environment (so the pod's client token and CA), talking to the pod's
    /// own client port.
    pub fn exec(&self, n: u32, args: &[&str]) -> Output {
        self.exec_with(n, &[], args)
    }

    /// `kubectl exec kvstore-n -- env [-u K] [K=V]... kvstore ARGS`: `None`
    /// unsets the variable.
    pub fn exec_with(&self, n: u32, env: &[(&str, Option<&Path>)], args: &[&str]) -> Output {
        let main = self.main_container();
        let mut cmd = Command::new(kvstore_bin());
        cmd.args(args).env_clear();
        for (k, v) in self.env(&self.m.pod, &main, n, &self.pod_name(n)) {
            cmd.env(k, v);
        }
        cmd.env(
            "KVSTORE_ADDR",
            format!("{}:{}", self.ip(n), self.client_port()),
        );
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        run_cli(cmd, None)
    }

    /// A run of the backup CronJob's Job (volumes mounted as its pod
    /// spec says), in its own directory `owner`.
    pub fn run_backup_job(&self, owner: &str) -> Output {
        self.run_job(&self.m.backup_pod, "backup", owner)
    }

    /// A run of container `name` of a Job's pod template `spec`, with its
    /// volumes, in its own directory `owner`, under the cluster DNS
    /// stand-in.
    ///
    /// The stand-in: Kubernetes DNS answers a headless Service's own name
    /// with one A record per pod (every pod here, as the Service has
    /// publishNotReadyAddresses: true). The Job runs in a private mount
    /// namespace whose /etc/hosts holds the host's lines plus those
    /// records, one per running pod; nothing outside the Job sees it.
    /// Needs root (`unshare --mount`), as the chaos tests do.
    pub fn run_job(&self, spec: &Value, name: &str, owner: &str) -> Output {
        self.mount_secrets(spec, owner);
        let container = self.container(spec, "containers", name);
        let job = self.command(spec, container, 0, owner);
        let service = format!("{}.{}.svc.cluster.local", self.m.headless, self.m.namespace);
        let mut hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        for n in 0..PODS {
            if self.pods[n as usize].is_some() {
                hosts.push_str(&format!("{} {service}\n", self.ip(n)));
            }
        }
        let hosts_file = self.root.path().join(format!("{owner}.hosts"));
        std::fs::write(&hosts_file, hosts).expect("write the hosts file");
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--"])
            .args(["sh", "-c", r#"mount --bind "$0" /etc/hosts && exec "$@""#])
            .arg(&hosts_file)
            .arg(job.get_program())
            .args(job.get_args())
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        for (k, v) in job.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        run_cli(cmd, None)
    }

    /// A library client of pod `n` with the pods' client token and CA, as
    /// the CLI in the pod uses them (for many keys: one process per key
    /// would be slow).
    pub fn client(&self, n: u32) -> BlockingClient {
        let addr = format!("{}:{}", self.ip(n), self.client_port());
        let addr = addr.parse().expect("addr");
        self.client_at(addr, true).expect("connect to the pod")
    }

    /// A library client of `addr` with the pods' client token and CA;
    /// without `follow_redirects`, a replica's REDIRECT is an error, and a
    /// dead address fails within seconds.
    pub fn client_at(&self, addr: SocketAddr, follow_redirects: bool) -> Option<BlockingClient> {
        let tls = Connector::from_files(&TlsFiles {
            ca: Some(self.secret.path("ca.crt")),
            ..TlsFiles::default()
        })
        .expect("the CA")
        .expect("a TLS connector");
        let token = self.secret.get("client-token");
        let token = String::from_utf8_lossy(&token);
        let token = token.lines().next().unwrap_or("").trim().to_string();
        let timeout = if follow_redirects {
            DEADLINE
        } else {
            Duration::from_secs(5)
        };
        let options = ClientOptions {
            connect_timeout: timeout,
            request_timeout: timeout,
            client_name: "k8s-test".into(),
            credential: Some(token.into()),
            tls: Some(tls),
            follow_redirects,
        };
        BlockingClient::connect(addr.to_string(), options).ok()
    }

    pub fn client_port(&self) -> u16 {
        let main = self.main_container();
        self.port(&main, &Value::String("client".into()))
    }

    pub fn stats(&self, n: u32) -> Json {
        let out = self.exec(n, &["stats", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("stats JSON")
    }

    pub fn put(&self, n: u32, key: &str, value: &str) {
        let out = self.exec(n, &["put", key, value]);
        assert!(
            out.status.success(),
            "put via pod {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until pod `n` reads `value` for `key`.
    pub fn wait_value(&self, n: u32, key: &str, value: &str) {
        wait_for(DEADLINE, &format!("{key}={value} on pod {n}"), || {
            let out = self.exec(n, &["read", key]);
            (out.status.success() && out.stdout == value.as_bytes()).then_some(())
        });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.pods.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A 127.0.T.0/24 where every pod's client and HTTP ports are free.
fn free_subnet(m: &Manifests) -> u8 {
    let _ = m;
    let start = std::process::id() % 200;
    for i in 0..200u32 {
        let t = u8::try_from(20 + (start + i * 7) % 200).expect("fits");
        let free = (0..PODS).all(|n| {
            [5555u16, 9555]
                .iter()
                .all(|p| TcpListener::bind(format!("127.0.{t}.{}:{p}", 10 + n)).is_ok())
        });
        if free {
            return t;
        }
    }
    panic!("no free 127.0.T.0/24 for the local pods");
}
