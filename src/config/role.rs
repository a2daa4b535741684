//! `--role` resolution: `master`, `replica`, or `auto`, where a Kubernetes
//! pod compares its StatefulSet ordinal with the ConfigMap's
//! `MASTER_ORDINAL`. A replica must know a valid master address.

use super::{invalid, name, ConfigError, ServeArgs};

/// The role this node starts in, resolved from `--role`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Takes writes.
    Master,
    /// Follows `master_addr`.
    Replica { master_addr: String },
}

/// Checks `host:port` without resolving it: the master may not be up yet.
pub(super) fn check_host_port(flag: &str, value: &str) -> Result<(), ConfigError> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| invalid(flag, value, "expected host:port"))?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(invalid(
            flag,
            value,
            "expected host:port with a port from 1 to 65535",
        ));
    }
    Ok(())
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
    let master_ordinal = match args
        .master_ordinal
        .clone()
        .or_else(|| env("MASTER_ORDINAL"))
    {
        None => None,
        Some(v) => Some(v.trim().parse::<u32>().map_err(|_| ConfigError::Invalid {
            setting: format!("{} or MASTER_ORDINAL", name("master-ordinal")),
            value: v.clone(),
            reason: "expected a pod ordinal (0, 1, 2, ...)".into(),
        })?),
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
        check_host_port("master-addr", &addr)?;
        Ok(Role::Replica { master_addr: addr })
    };
    match args.role.trim() {
        "master" => Ok(Role::Master),
        "replica" if !replication_enabled => Err(invalid(
            "role",
            &args.role,
            "replication is disabled (REPLICATION_ENABLED=false)",
        )),
        "replica" => replica_of(&args.master_addr),
        // Without replication every node stands alone, so each is a master.
        "auto" if !replication_enabled => Ok(Role::Master),
        "auto" => {
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
            let ordinal = pod_ordinal(&pod).ok_or_else(|| ConfigError::Invalid {
                setting: format!("{} or HOSTNAME", name("pod-name")),
                value: pod.clone(),
                reason: "--role auto needs a name ending in -<ordinal>, like kvstore-0".into(),
            })?;
            if ordinal == master {
                Ok(Role::Master)
            } else {
                replica_of(&args.master_addr)
            }
        }
        _ => Err(invalid(
            "role",
            &args.role,
            "expected master, replica or auto",
        )),
    }
}
