//! The coordinator's settings: which backend, the names, the timing.
//! Validated once, when a session is opened; every error names the
//! setting (docs/FAILOVER.md, "Settings").

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::{Error, Result};

/// The backends `--coordinator` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    None,
    Etcd,
    Kubernetes,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::None => "none",
            Backend::Etcd => "etcd",
            Backend::Kubernetes => "kubernetes",
        }
    }

    /// The lease TTL when `--lease-ttl-ms` is not given: 5 s on etcd (as
    /// the failover target asks), 15 s on the Lease API (client-go's
    /// leader election default).
    pub fn default_ttl(self) -> Duration {
        match self {
            Backend::None | Backend::Etcd => Duration::from_secs(5),
            Backend::Kubernetes => Duration::from_secs(15),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Backend, String> {
        match s {
            "none" => Ok(Backend::None),
            "etcd" => Ok(Backend::Etcd),
            "kubernetes" => Ok(Backend::Kubernetes),
            other => Err(format!(
                "unknown coordinator {other:?} (none, etcd, kubernetes)"
            )),
        }
    }
}

/// What a backend needs to know; filled from `--coordinator`,
/// `--cluster`, `--node-id`, `--advertise-addr`, `--lease-ttl-ms`,
/// `--etcd-endpoints` (docs/FAILOVER.md).
#[derive(Debug, Clone)]
pub struct Settings {
    pub backend: Backend,
    /// Names the cluster: etcd key prefix `/<cluster>/`, Lease name.
    pub cluster: String,
    pub node_id: String,
    /// The client address published for REDIRECT and `cluster status`.
    pub advertise_addr: String,
    /// `None`: [`Backend::default_ttl`].
    pub lease_ttl: Option<Duration>,
    /// `None`: a tenth of the TTL.
    pub margin: Option<Duration>,
    /// Bound on each request to the coordinator. `None`: a third of the TTL.
    pub request_timeout: Option<Duration>,
    pub etcd_endpoints: Vec<String>,
    pub kubernetes: KubernetesSettings,
    /// The data directory this node runs on, presented when it campaigns
    /// in sync mode (`ClusterRecord::admits`). Set by the node once its
    /// engine is open; `None`: no directory (tools), the node id alone is
    /// checked.
    pub data_dir: Option<super::DataDir>,
}

/// Where the Lease API is. Everything `None`: in-cluster configuration
/// from the pod's service account.
#[derive(Debug, Clone, Default)]
pub struct KubernetesSettings {
    /// Namespace of the Lease objects (`None`: the service account's).
    pub namespace: Option<String>,
    /// API server URL instead of the in-cluster one (tests, stand-in).
    pub api_url: Option<String>,
    /// Bearer token instead of the service account's.
    pub token: Option<String>,
    /// PEM file of the CA(s) to verify the API server with, instead of
    /// the service account's.
    pub ca_file: Option<std::path::PathBuf>,
    /// Label selector of the kvstore pods (the StatefulSet's): when set,
    /// the master labels its pod `kvstore.io/role=master` and every other
    /// pod it matches `replica` ([`super::routing`]).
    pub pod_selector: Option<String>,
    /// This node's pod, with `pod_selector`.
    pub pod_name: Option<String>,
}

impl Settings {
    /// Settings with every default, for `backend`.
    pub fn new(
        backend: Backend,
        node_id: impl Into<String>,
        advertise_addr: impl Into<String>,
    ) -> Settings {
        Settings {
            backend,
            cluster: "kvstore".into(),
            node_id: node_id.into(),
            advertise_addr: advertise_addr.into(),
            lease_ttl: None,
            margin: None,
            request_timeout: None,
            etcd_endpoints: Vec::new(),
            kubernetes: KubernetesSettings::default(),
            data_dir: None,
        }
    }

    /// The TTL, margin and request bound in force, validated.
    pub fn timing(&self) -> Result<Timing> {
        let ttl = self.lease_ttl.unwrap_or_else(|| self.backend.default_ttl());
        if ttl < Duration::from_secs(1) {
            return Err(Error::Setting {
                setting: "--lease-ttl-ms",
                reason: format!(
                    "{} ms is below the 1000 ms both backends can grant",
                    ttl.as_millis()
                ),
            });
        }
        let margin = self.margin.unwrap_or(ttl / 10);
        if margin >= ttl / 2 {
            return Err(Error::Setting {
                setting: "lease margin",
                reason: format!("{margin:?} must be below half the TTL ({ttl:?})"),
            });
        }
        let request_timeout = self.request_timeout.unwrap_or(ttl / 3);
        Ok(Timing {
            ttl,
            margin,
            request_timeout,
        })
    }

    pub(crate) fn validate_names(&self) -> Result<()> {
        validate_name("--cluster", &self.cluster)?;
        validate_name("--node-id", &self.node_id)
    }
}

/// Resolved timing settings.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub ttl: Duration,
    pub margin: Duration,
    pub request_timeout: Duration,
}

impl Timing {
    /// The TTL in whole seconds, rounded up (both backends count seconds).
    pub fn ttl_secs(&self) -> i64 {
        let secs = self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0);
        i64::try_from(secs).unwrap_or(i64::MAX)
    }
}

/// Cluster names and node ids become etcd key segments and Kubernetes
/// object names: lowercase letters, digits, `-` and `.`, starting and
/// ending with a letter or digit, at most 63 characters.
pub fn validate_name(setting: &'static str, value: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if value.len() > 63
        || !value.chars().all(ok_char)
        || !edge(value.chars().next())
        || !edge(value.chars().last())
    {
        return Err(Error::Setting {
            setting,
            reason: format!(
                "{value:?} must be 1 to 63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["kvstore", "kvstore-0", "a", "node.example", "0"] {
            validate_name("--node-id", good).unwrap();
        }
        for bad in ["", "Kvstore", "-a", "a-", "a/b", "a b", &"x".repeat(64)] {
            assert!(validate_name("--node-id", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timing_defaults_and_limits() {
        let mut s = Settings::new(Backend::Kubernetes, "a", "127.0.0.1:5555");
        let t = s.timing().unwrap();
        assert_eq!(
            (t.ttl, t.margin, t.request_timeout),
            (
                Duration::from_secs(15),
                Duration::from_millis(1500),
                Duration::from_secs(5)
            )
        );
        s.backend = Backend::Etcd;
        assert_eq!(s.timing().unwrap().ttl, Duration::from_secs(5));
        s.lease_ttl = Some(Duration::from_millis(1500));
        assert_eq!(s.timing().unwrap().ttl_secs(), 2);
        s.lease_ttl = Some(Duration::from_millis(999));
        assert!(s.timing().is_err());
        s.lease_ttl = Some(Duration::from_secs(2));
        s.margin = Some(Duration::from_secs(1));
        assert!(s.timing().is_err());
    }

    #[test]
    fn backend_names_round_trip() {
        for b in [Backend::None, Backend::Etcd, Backend::Kubernetes] {
            assert_eq!(b.name().parse::<Backend>().unwrap(), b);
        }
        assert!("zookeeper".parse::<Backend>().is_err());
    }
}
