//! `--role` resolution: `master`, `replica`, or `auto`, where a Kubernetes
//! pod compares its StatefulSet ordinal with the ConfigMap's
//! `MASTER_ORDINAL`. A replica must know a valid master address.

use super::parse::{host_port, ordinal};
use super::{from_configmap, invalid, name, ConfigError, RoleSetting, ServeArgs};

/// The role this node starts in, resolved from `--role`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Takes writes.
    Master,
    /// Follows `master_addr`.
    Replica { master_addr: String },
    /// With a coordinator: starts as a replica of nobody and follows, or
    /// becomes, the master the coordinator elects.
    Candidate,
}

/// The ordinal at the end of a StatefulSet pod name: `kvstore-2` is 2.
fn pod_ordinal(pod_name: &str) -> Option<u32> {
    pod_name.rsplit_once('-')?.1.parse().ok()
}

/// Resolves `--role` (with `auto` using the pod ordinal and MASTER_ORDINAL)
/// into a [`Role`], checking that a replica knows its master.
pub(super) fn resolve_role(
    args: &ServeArgs,
    replication_enabled: bool,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Role, ConfigError> {
    let master_ordinal = match (args.master_ordinal, env("MASTER_ORDINAL")) {
        (Some(n), _) => Some(n),
        (None, Some(v)) => Some(from_configmap(
            "master-ordinal",
            "MASTER_ORDINAL",
            v,
            ordinal,
        )?),
        (None, None) => None,
    };
    let replica_of = |master_addr: &Option<String>| -> Result<Role, ConfigError> {
        let raw = master_addr.clone().ok_or_else(|| ConfigError::Missing {
            setting: name("master-addr"),
            reason: "a replica must know its master".into(),
        })?;
        let addr = match master_ordinal {
            Some(n) => raw.replace("{ordinal}", &n.to_string()),
            None if raw.contains("{ordinal}") => {
                return Err(ConfigError::Missing {
                    setting: "MASTER_ORDINAL".into(),
                    reason: format!("--master-addr {raw:?} uses {{ordinal}}"),
                })
            }
            None => raw,
        };
        let master_addr =
            host_port(&addr).map_err(|reason| invalid("master-addr", &addr, reason))?;
        Ok(Role::Replica { master_addr })
    };
    match args.role {
        RoleSetting::Master => Ok(Role::Master),
        RoleSetting::Replica if !replication_enabled => Err(invalid(
            "role",
            "replica",
            "replication is disabled (REPLICATION_ENABLED=false)",
        )),
        RoleSetting::Replica => replica_of(&args.master_addr),
        // Without replication every node stands alone, so each is a master.
        RoleSetting::Auto if !replication_enabled => Ok(Role::Master),
        RoleSetting::Auto => {
            let master = master_ordinal.ok_or_else(|| ConfigError::Missing {
                setting: format!("MASTER_ORDINAL or {}", name("master-ordinal")),
                reason: "--role auto compares it with this pod's ordinal".into(),
            })?;
            let pod = args
                .pod_name
                .clone()
                .or_else(|| env("HOSTNAME"))
                .ok_or_else(|| ConfigError::Missing {
                    setting: format!("{} or HOSTNAME", name("pod-name")),
                    reason: "--role auto reads the pod ordinal from it".into(),
                })?;
            let own = pod_ordinal(&pod).ok_or_else(|| ConfigError::Invalid {
                setting: format!("{} or HOSTNAME", name("pod-name")),
                value: pod.clone(),
                reason: "--role auto needs a name ending in -<ordinal>, like kvstore-0".into(),
            })?;
            if own == master {
                Ok(Role::Master)
            } else {
                replica_of(&args.master_addr)
            }
        }
    }
}
