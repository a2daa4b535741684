//! The Secret `kvstore-secrets`, made by the real `k8s/gen-secrets.sh`
//! (openssl) and projected into Secret volumes the way the kubelet does:
//! all keys or the volume's `items`, mode `defaultMode`, each file replaced
//! atomically. Tests edit it (`kubectl edit secret`) for rotations.
//! Invariant: the Secret has exactly the keys `k8s/secret.example.yaml` has.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

use crate::k8s::manifests::{k8s_file, load, s};

pub const SECRET_NAME: &str = "kvstore-secrets";

/// The live Secret: one file per key in `dir`.
pub struct Secret {
    dir: PathBuf,
    /// The CA that signed the first server certificate (`--keep-ca`).
    pub ca_dir: PathBuf,
    namespace: String,
    extra_sans: String,
}

/// Runs `k8s/gen-secrets.sh ARGS` as an operator would; panics with its
/// stderr on failure.
pub fn gen_secrets(namespace: &str, extra_sans: &str, args: &[&str]) {
    let out = Command::new(k8s_file("gen-secrets.sh"))
        .args(args)
        .env("NAMESPACE", namespace)
        .env("EXTRA_SANS", extra_sans)
        .output()
        .expect("run k8s/gen-secrets.sh (needs bash and openssl)");
    assert!(
        out.status.success(),
        "k8s/gen-secrets.sh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Secret {
    /// `k8s/gen-secrets.sh --out <root>/secret --keep-ca <root>/ca`, with
    /// `extra_sans` (`IP:...,DNS:...`) added to the server certificate.
    pub fn generate(root: &Path, namespace: &str, extra_sans: &str) -> Secret {
        let dir = root.join("secret");
        let ca_dir = root.join("ca");
        gen_secrets(
            namespace,
            extra_sans,
            &[
                "--out",
                dir.to_str().expect("utf-8"),
                "--keep-ca",
                ca_dir.to_str().expect("utf-8"),
            ],
        );
        let example = load("secret.example.yaml");
        assert_eq!(s(&example["metadata"]["name"], "name"), SECRET_NAME);
        let secret = Secret {
            dir,
            ca_dir,
            namespace: namespace.to_string(),
            extra_sans: extra_sans.to_string(),
        };
        let mut example_keys: Vec<String> = example["stringData"]
            .as_mapping()
            .expect("stringData")
            .keys()
            .map(|k| s(k, "key").to_string())
            .collect();
        example_keys.sort();
        assert_eq!(
            secret.keys(),
            example_keys,
            "gen-secrets.sh and secret.example.yaml disagree"
        );
        secret
    }

    /// A fresh set from the same script (same names and extra SANs) in
    /// `out`: with `--ca DIR` a new server certificate from that CA, without
    /// it a new CA too (kept in `<out>/ca`).
    pub fn generate_more(&self, out: &Path, ca: Option<&Path>) {
        let out_s = out.to_str().expect("utf-8");
        let keep = out.join("ca");
        let mut args = vec!["--out", out_s];
        match ca {
            Some(dir) => args.extend(["--ca", dir.to_str().expect("utf-8")]),
            None => args.extend(["--keep-ca", keep.to_str().expect("utf-8")]),
        }
        gen_secrets(&self.namespace, &self.extra_sans, &args);
    }

    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = std::fs::read_dir(&self.dir)
            .expect("secret dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        keys.sort();
        keys
    }

    /// The Secret's own copy of `key` (not a pod's).
    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        std::fs::read(self.path(key)).unwrap_or_else(|e| panic!("Secret key {key}: {e}"))
    }

    /// `kubectl edit secret`: the new value of `key`. Pods see it once
    /// [`Secret::project`] runs again (the kubelet's sync).
    pub fn set(&self, key: &str, value: &[u8]) {
        assert!(self.path(key).is_file(), "no key {key} in the Secret");
        std::fs::write(self.path(key), value).expect("edit the Secret");
    }

    /// The kubelet's part: fills `dir` from the volume source `source`
    /// (`secret:` of a pod volume).
    pub fn project(&self, source: &Value, dir: &Path) {
        assert_eq!(
            s(&source["secretName"], "secretName"),
            SECRET_NAME,
            "unknown Secret"
        );
        let mode = source["defaultMode"]
            .as_u64()
            .map_or(0o644, |m| u32::try_from(m).expect("defaultMode"));
        let items: Vec<(String, String)> = match source["items"].as_sequence() {
            Some(list) => list
                .iter()
                .map(|i| {
                    (
                        s(&i["key"], "item key").to_string(),
                        s(&i["path"], "item path").to_string(),
                    )
                })
                .collect(),
            None => self.keys().into_iter().map(|k| (k.clone(), k)).collect(),
        };
        for (key, path) in items {
            let src = self.path(&key);
            assert!(src.is_file(), "Secret {SECRET_NAME} has no key {key}");
            let tmp = dir.join(format!("..{path}.tmp"));
            let _ = std::fs::remove_file(&tmp);
            std::fs::copy(&src, &tmp).expect("project a Secret key");
            std::fs::set_permissions(&tmp, Permissions::from_mode(mode)).expect("chmod");
            std::fs::rename(&tmp, dir.join(&path)).expect("rename");
        }
    }
}
