//! The value parsers clap runs on `kvstore serve`'s flags and variables:
//! each turns one string into its type or says, in a few words, what was
//! expected. [`super::ConfigError::from_clap`] adds the flag and its
//! variable to make the one-line error.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::Durability;
use crate::replication::Mode;

/// A whole number in `MIN..=MAX`.
pub fn number<const MIN: u64, const MAX: u64>(value: &str) -> Result<u64, String> {
    let n: u64 = value
        .trim()
        .parse()
        .map_err(|_| "expected a whole number".to_string())?;
    if !(MIN..=MAX).contains(&n) {
        return Err(format!("must be between {MIN} and {MAX}"));
    }
    Ok(n)
}

/// `--max-frame-bytes`: 1024 to 2^32-1.
pub fn frame_bytes(value: &str) -> Result<u32, String> {
    let n = number::<1024, { u32::MAX as u64 }>(value)?;
    u32::try_from(n).map_err(|_| "too large".to_string())
}

/// A `host:port` that resolves (a name is looked up now: a listener binds
/// what it names).
pub fn address(value: &str) -> Result<SocketAddr, String> {
    let mut addrs = value
        .trim()
        .to_socket_addrs()
        .map_err(|e| format!("expected host:port ({e})"))?;
    addrs
        .next()
        .ok_or_else(|| "resolves to no address".to_string())
}

/// A `host:port` checked for its form only, not resolved: the host (a
/// master, this node's advertised name) may not be up yet.
pub fn host_port(value: &str) -> Result<String, String> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| "expected host:port".to_string())?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err("expected host:port with a port from 1 to 65535".into());
    }
    Ok(value.trim().to_string())
}

/// `--durability`; `interval` carries a placeholder period that
/// [`super::Config::from_args`] replaces with `--fsync-interval-ms`.
pub fn durability(value: &str) -> Result<Durability, String> {
    match value.trim() {
        "always" => Ok(Durability::Always),
        "interval" => Ok(Durability::Interval(Duration::from_millis(100))),
        "never" => Ok(Durability::Never),
        _ => Err("expected always, interval or never".into()),
    }
}

/// `--replication-mode` and `REPLICATION_MODE`.
pub fn mode(value: &str) -> Result<Mode, String> {
    match value.trim() {
        "async" => Ok(Mode::Async),
        "sync" => Ok(Mode::Sync),
        _ => Err("expected async or sync".into()),
    }
}

/// `--replication-enabled` and `REPLICATION_ENABLED`.
pub fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// `--master-ordinal` and `MASTER_ORDINAL`.
pub fn ordinal(value: &str) -> Result<u32, String> {
    value
        .trim()
        .parse()
        .map_err(|_| "expected a pod ordinal (0, 1, 2, ...)".into())
}

/// A path that must not be empty.
pub fn non_empty_path(value: &str) -> Result<PathBuf, String> {
    if value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(PathBuf::from(value))
}

/// `--data-dir`: not empty, and not something other than a directory (a
/// missing one is created at start).
pub fn data_dir(value: &str) -> Result<PathBuf, String> {
    let path = non_empty_path(value)?;
    if std::fs::metadata(&path).is_ok_and(|m| !m.is_dir()) {
        return Err("is not a directory".into());
    }
    Ok(path)
}

/// `--coordinator`: none, etcd or kubernetes.
pub fn backend(value: &str) -> Result<crate::coordinator::Backend, String> {
    value.trim().parse()
}

/// One etcd client URL: `http://host:port` or `https://host:port`.
pub fn endpoint(value: &str) -> Result<String, String> {
    let value = value.trim();
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or_else(|| "expected http://host:port or https://host:port".to_string())?;
    host_port(rest.trim_end_matches('/'))?;
    Ok(value.to_string())
}

/// `--cluster`: a name usable as an etcd key segment and a Kubernetes name.
pub fn cluster_name(value: &str) -> Result<String, String> {
    crate::coordinator::validate_name("--cluster", value)
        .map(|()| value.to_string())
        .map_err(|e| reason_of(&e))
}

/// `--node-id`: like `--cluster`.
pub fn node_id(value: &str) -> Result<String, String> {
    crate::coordinator::validate_name("--node-id", value)
        .map(|()| value.to_string())
        .map_err(|e| reason_of(&e))
}

/// `--kube-pod-selector`: an equality-based label selector,
/// `key=value[,key=value...]`, as a StatefulSet's `matchLabels` reads.
pub fn pod_selector(value: &str) -> Result<String, String> {
    let label = |s: &str| {
        s.len() <= 316
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
    };
    for part in value.split(',') {
        let well_formed = part
            .split_once('=')
            .is_some_and(|(k, v)| !k.is_empty() && label(k) && label(v));
        if !well_formed {
            return Err(format!(
                "{part:?} is not key=value (a label key and value: letters, digits, '-', '_', '.', '/'; several joined by ',')"
            ));
        }
    }
    Ok(value.to_string())
}

/// The reason of a coordinator setting error, without the setting's name
/// (clap's error adds the flag and its variable).
fn reason_of(e: &crate::coordinator::Error) -> String {
    match e {
        crate::coordinator::Error::Setting { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}
