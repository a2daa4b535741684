//! What the tests take from `k8s/`: the YAML files, and the objects the
//! local cluster needs from them (StatefulSet, ConfigMap, CronJob,
//! Namespace, headless Service), cross-checked where they must agree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

pub fn k8s_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s").join(name)
}

pub fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(k8s_file(name)).expect("read manifest");
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("k8s/{name} is not YAML: {e}"))
}

pub fn s<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v:?}"))
}

pub fn seq<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("{what} is not a list: {v:?}"))
}

/// What the test takes from the manifests.
pub struct Manifests {
    pub sts_name: String,
    pub namespace: String,
    pub headless: String,
    pub config: BTreeMap<String, String>,
    /// Pod template spec of the StatefulSet.
    pub pod: Value,
    /// Pod template spec of the CronJob's job.
    pub backup_pod: Value,
}

pub fn manifests() -> Manifests {
    let sts = load("statefulset.yaml");
    let cm = load("configmap.yaml");
    let cron = load("cronjob-backup.yaml");
    let ns = load("namespace.yaml");
    let headless = load("service-headless.yaml");
    assert_eq!(s(&sts["kind"], "kind"), "StatefulSet");
    assert_eq!(
        s(&sts["spec"]["serviceName"], "serviceName"),
        s(&headless["metadata"]["name"], "headless name"),
        "the StatefulSet's serviceName must be the headless service"
    );
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"],
        Value::Bool(true)
    );
    let config = cm["data"]
        .as_mapping()
        .expect("ConfigMap data")
        .iter()
        .map(|(k, v)| (s(k, "key").to_string(), s(v, "ConfigMap value").to_string()))
        .collect();
    Manifests {
        sts_name: s(&sts["metadata"]["name"], "name").to_string(),
        namespace: s(&ns["metadata"]["name"], "namespace").to_string(),
        headless: s(&headless["metadata"]["name"], "name").to_string(),
        config,
        pod: sts["spec"]["template"]["spec"].clone(),
        backup_pod: cron["spec"]["jobTemplate"]["spec"]["template"]["spec"].clone(),
    }
}

/// `$(VAR)` references to variables defined before, as Kubernetes does.
pub fn expand(value: &str, env: &[(String, String)]) -> String {
    let mut out = value.to_string();
    for (k, v) in env.iter().rev() {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}
