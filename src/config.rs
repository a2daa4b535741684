//! Server configuration: `kvstore serve` flags, `KVSTORE_*` environment
//! variables and the Kubernetes ConfigMap variables, validated at start.
//!
//! Precedence, highest first: command-line flag, `KVSTORE_<FLAG>` variable,
//! ConfigMap variable (`MASTER_ORDINAL`, `REPLICATION_MODE`,
//! `REPLICATION_ENABLED`, read as they are), built-in default.
//!
//! clap parses every flag once, into its type, with the value parsers in
//! [`parse`]: a number is range-checked, an address resolved, a policy
//! named, as the flag or its variable is read. A bad value fails at start
//! with one line that names the flag and its variable
//! ([`ConfigError::from_clap`] turns clap's error into that line), never
//! later and never with a parser's `Debug` dump. [`Config::from_args`]
//! then checks what involves several settings (distinct addresses, the
//! role and its master, the ConfigMap variables) and builds the node's
//! types (raft-engine's `sanitize()`). Every setting, its default and its
//! meaning is listed in `docs/CONFIGURATION.md`; a test keeps that table and
//! this file in step.

mod parse;
mod role;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::coordinator::{self, Backend, KubernetesSettings};
use crate::engine::options::{MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES};
use crate::engine::Durability;
use crate::node::Limits;
use crate::replication::Mode as ReplicationMode;
use crate::security::{TlsFiles, TokenFiles};
use parse::{address, boolean, durability, host_port, mode, non_empty_path, number};
pub use role::Role;

/// Default client address (`--listen`).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:5555";
/// Default HTTP address for health and metrics (`--http-listen`).
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:9555";
/// Default data directory (`--data-dir`).
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default maximum request frame.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = crate::node::DEFAULT_MAX_FRAME_BYTES;

/// `kvstore serve` arguments, each parsed by clap into its type.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Data directory (created if missing).
    #[arg(long, env = "KVSTORE_DATA_DIR", value_name = "DIR", default_value = DEFAULT_DATA_DIR, value_parser = parse::data_dir)]
    pub data_dir: PathBuf,
    /// Address for clients (host:port; port 0 picks a free port).
    #[arg(long, env = "KVSTORE_LISTEN", value_name = "ADDR", default_value = DEFAULT_LISTEN, value_parser = address)]
    pub listen: SocketAddr,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "KVSTORE_HTTP_LISTEN", value_name = "ADDR", default_value = DEFAULT_HTTP_LISTEN, value_parser = address)]
    pub http_listen: SocketAddr,
    /// When a write is acknowledged: always (after fsync), interval, never.
    #[arg(
        long,
        env = "KVSTORE_DURABILITY",
        value_name = "always|interval|never",
        default_value = "always",
        value_parser = durability
    )]
    pub durability: Durability,
    /// Fsync period for --durability interval, in milliseconds (1..=60000).
    #[arg(
        long,
        env = "KVSTORE_FSYNC_INTERVAL_MS",
        value_name = "MS",
        default_value = "100",
        value_parser = number::<1, 60_000>
    )]
    pub fsync_interval_ms: u64,
    /// Size at which the active segment is sealed and a new one started.
    #[arg(
        long,
        env = "KVSTORE_SEGMENT_MAX_BYTES",
        value_name = "BYTES",
        default_value = "1073741824",
        value_parser = number::<MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES>
    )]
    pub segment_max_bytes: u64,
    /// master, replica, or auto (master when the pod ordinal equals MASTER_ORDINAL).
    #[arg(
        long,
        env = "KVSTORE_ROLE",
        value_name = "master|replica|auto",
        default_value = "master"
    )]
    pub role: RoleSetting,
    /// Master to follow (host:port); `{ordinal}` is replaced by MASTER_ORDINAL.
    #[arg(long, env = "KVSTORE_MASTER_ADDR", value_name = "ADDR")]
    pub master_addr: Option<String>,
    /// async or sync [default: async; also REPLICATION_MODE].
    #[arg(long, env = "KVSTORE_REPLICATION_MODE", value_name = "async|sync", value_parser = mode)]
    pub replication_mode: Option<ReplicationMode>,
    /// true or false [default: true; also REPLICATION_ENABLED].
    #[arg(long, env = "KVSTORE_REPLICATION_ENABLED", value_name = "BOOL", value_parser = boolean)]
    pub replication_enabled: Option<bool>,
    /// Where other nodes and redirected clients reach this node (host:port)
    /// [default: the bound --listen address].
    #[arg(long, env = "KVSTORE_ADVERTISE_ADDR", value_name = "ADDR", value_parser = host_port)]
    pub advertise_addr: Option<String>,
    /// Sync mode: replicas that must hold a write before it is acknowledged.
    #[arg(long, env = "KVSTORE_MIN_ACKS", value_name = "N", default_value = "1", value_parser = number::<1, 64>)]
    pub min_acks: u64,
    /// Sync mode: how long a write waits for replica acknowledgements.
    #[arg(
        long,
        env = "KVSTORE_SYNC_TIMEOUT_MS",
        value_name = "MS",
        default_value = "5000",
        value_parser = number::<1, 600_000>
    )]
    pub sync_timeout_ms: u64,
    /// Log a master keeps for connected replicas beyond what they acknowledged.
    #[arg(
        long,
        env = "KVSTORE_REPLICATION_RETENTION_BYTES",
        value_name = "BYTES",
        default_value = "1073741824",
        value_parser = number::<0, { u64::MAX }>
    )]
    pub replication_retention_bytes: u64,
    /// A replica reports ready only while at most this far behind its master.
    #[arg(
        long,
        env = "KVSTORE_REPLICA_MAX_LAG_BYTES",
        value_name = "BYTES",
        default_value = "67108864",
        value_parser = number::<0, { u64::MAX }>
    )]
    pub replica_max_lag_bytes: u64,
    /// Ordinal of the master pod, for --role auto [also MASTER_ORDINAL].
    #[arg(long, env = "KVSTORE_MASTER_ORDINAL", value_name = "N", value_parser = parse::ordinal)]
    pub master_ordinal: Option<u32>,
    /// This pod's name, `<statefulset>-<ordinal>`, for --role auto and --kube-pod-selector [default: $HOSTNAME].
    #[arg(long, env = "KVSTORE_POD_NAME", value_name = "NAME")]
    pub pod_name: Option<String>,
    /// Client connections served at once; more are refused.
    #[arg(
        long,
        env = "KVSTORE_MAX_CONNECTIONS",
        value_name = "N",
        default_value = "1024",
        value_parser = number::<1, 1_000_000>
    )]
    pub max_connections: u64,
    /// Largest request frame, in bytes.
    #[arg(long, env = "KVSTORE_MAX_FRAME_BYTES", value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME_BYTES, value_parser = parse::frame_bytes)]
    pub max_frame_bytes: u32,
    /// Close a connection idle this long (0 = never).
    #[arg(
        long,
        env = "KVSTORE_IDLE_TIMEOUT_SECS",
        value_name = "SECS",
        default_value = "300",
        value_parser = number::<0, { 86_400 * 7 }>
    )]
    pub idle_timeout_secs: u64,
    /// A frame that has started must arrive completely within this time.
    #[arg(
        long,
        env = "KVSTORE_FRAME_TIMEOUT_SECS",
        value_name = "SECS",
        default_value = "30",
        value_parser = number::<1, 3600>
    )]
    pub frame_timeout_secs: u64,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    #[arg(
        long,
        env = "KVSTORE_SHUTDOWN_TIMEOUT_SECS",
        value_name = "SECS",
        default_value = "10",
        value_parser = number::<0, 3600>
    )]
    pub shutdown_timeout_secs: u64,
    /// A connection must complete its handshake within this: HELLO with an
    /// accepted token (authentication on), its first request (off).
    #[arg(
        long,
        env = "KVSTORE_HANDSHAKE_TIMEOUT_SECS",
        value_name = "SECS",
        default_value = "10",
        value_parser = number::<1, 3600>
    )]
    pub handshake_timeout_secs: u64,
    /// Connections still in their handshake at once, per client port; a
    /// new one closes the oldest of them.
    #[arg(
        long,
        env = "KVSTORE_MAX_UNAUTHENTICATED",
        value_name = "N",
        default_value = "256",
        value_parser = number::<1, 1_000_000>
    )]
    pub max_unauthenticated: u64,
    /// Bytes of requests being read and answers waiting to be sent, all
    /// client connections of both ports together.
    #[arg(
        long,
        env = "KVSTORE_MAX_CLIENT_MEMORY_BYTES",
        value_name = "BYTES",
        default_value = "1073741824",
        value_parser = number::<1_048_576, { u64::MAX }>
    )]
    pub max_client_memory_bytes: u64,
    /// HTTP connections served at once; a new one closes the oldest.
    #[arg(
        long,
        env = "KVSTORE_HTTP_MAX_CONNECTIONS",
        value_name = "N",
        default_value = "64",
        value_parser = number::<1, 100_000>
    )]
    pub http_max_connections: u64,
    /// An HTTP request's headers must arrive within this, counted from
    /// the connection's start or the previous answer.
    #[arg(
        long,
        env = "KVSTORE_HTTP_HEADER_TIMEOUT_SECS",
        value_name = "SECS",
        default_value = "10",
        value_parser = number::<1, 3600>
    )]
    pub http_header_timeout_secs: u64,
    /// Threads serving client connections (both ports); each connection
    /// stays on one of them. 0: one per CPU the process may use.
    #[arg(
        long,
        env = "KVSTORE_IO_THREADS",
        value_name = "N",
        default_value = "0",
        value_parser = number::<0, 1024>
    )]
    pub io_threads: u64,
    /// Log format: text or json.
    #[arg(
        long,
        env = "KVSTORE_LOG_FORMAT",
        value_name = "text|json",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Also serve Redis clients (RESP2) on this address (host:port); off unless given.
    #[arg(long, env = "KVSTORE_RESP_LISTEN", value_name = "ADDR", value_parser = address)]
    pub resp_listen: Option<SocketAddr>,
    /// Write the bound addresses here (`listen=..`, `http=..`) once listening.
    #[arg(long, env = "KVSTORE_PORT_FILE", value_name = "PATH", value_parser = non_empty_path)]
    pub port_file: Option<PathBuf>,
    /// Tokens (one per line) that may only read: GET, EXISTS, STATS.
    /// Client tokens come from the global --auth-token-file.
    #[arg(long, env = "KVSTORE_READONLY_TOKEN_FILE", value_name = "PATH")]
    pub readonly_token_file: Option<PathBuf>,
    /// Tokens (one per line) that may do everything, including pulling the
    /// log (replicas), BACKUP, PROMOTE, REPLICATE and COMPACT. This node
    /// presents the first one to its master.
    #[arg(long, env = "KVSTORE_ADMIN_TOKEN_FILE", value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
    /// PEM certificate chain for the client port and RESP listener; with
    /// it they accept TLS only.
    #[arg(
        long,
        env = "KVSTORE_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "KVSTORE_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Who elects the master: none (manual roles), etcd or kubernetes.
    #[arg(
        long,
        env = "KVSTORE_COORDINATOR",
        value_name = "none|etcd|kubernetes",
        default_value = "none",
        value_parser = parse::backend
    )]
    pub coordinator: Backend,
    /// etcd client URLs, comma-separated (--coordinator etcd).
    #[arg(
        long,
        env = "KVSTORE_ETCD_ENDPOINTS",
        value_name = "URL[,URL]",
        value_delimiter = ',',
        value_parser = parse::endpoint
    )]
    pub etcd_endpoints: Vec<String>,
    /// The cluster's name: etcd key prefix, Lease name.
    #[arg(long, env = "KVSTORE_CLUSTER", value_name = "NAME", default_value = "kvstore", value_parser = parse::cluster_name)]
    pub cluster: String,
    /// This node's id in the coordinator [default: the host name].
    #[arg(long, env = "KVSTORE_NODE_ID", value_name = "ID", value_parser = parse::node_id)]
    pub node_id: Option<String>,
    /// Leadership lease TTL, in milliseconds [default: 5000 for etcd, 15000 for kubernetes].
    #[arg(long, env = "KVSTORE_LEASE_TTL_MS", value_name = "MS", value_parser = number::<1000, 600_000>)]
    pub lease_ttl_ms: Option<u64>,
    /// Kubernetes API server URL (--coordinator kubernetes) [default: the in-cluster one, from the pod's service account].
    #[arg(long, env = "KVSTORE_KUBE_API_URL", value_name = "URL")]
    pub kube_api_url: Option<String>,
    /// File holding the bearer token for --kube-api-url, read once at start [default: the service account's].
    #[arg(
        long,
        env = "KVSTORE_KUBE_TOKEN_FILE",
        value_name = "PATH",
        requires = "kube_api_url"
    )]
    pub kube_token_file: Option<PathBuf>,
    /// PEM file of the CA(s) that sign the API server's certificate [default: the service account's].
    #[arg(
        long,
        env = "KVSTORE_KUBE_CA_FILE",
        value_name = "PATH",
        requires = "kube_api_url"
    )]
    pub kube_ca_file: Option<PathBuf>,
    /// Namespace of the Lease objects [default: the pod's].
    #[arg(long, env = "KVSTORE_KUBE_NAMESPACE", value_name = "NAMESPACE")]
    pub kube_namespace: Option<String>,
    /// Label selector of the kvstore pods (the StatefulSet's, key=value[,...]): the master labels its own pod (--pod-name) kvstore.io/role=master and every other pod it matches kvstore.io/role=replica, so the master Service follows it [default: no labels].
    #[arg(long, env = "KVSTORE_KUBE_POD_SELECTOR", value_name = "SELECTOR", value_parser = parse::pod_selector)]
    pub kube_pod_selector: Option<String>,
    /// Sync mode with a coordinator: a member of the in-sync set whose durable end stays behind the master's end of this long ago is dropped from the set [default: 2000, or half of --sync-timeout-ms when that is less].
    #[arg(
        long,
        env = "KVSTORE_IN_SYNC_MAX_LAG_MS",
        value_name = "MS",
        value_parser = number::<100, 600_000>
    )]
    pub in_sync_max_lag_ms: Option<u64>,
    /// Async mode with a coordinator: how long a candidate waits for a more advanced one to take a vacant seat before campaigning itself.
    #[arg(
        long,
        env = "KVSTORE_CAMPAIGN_GRACE_MS",
        value_name = "MS",
        default_value = "1000",
        value_parser = number::<0, 600_000>
    )]
    pub campaign_grace_ms: u64,
    /// With a coordinator: how long a master hands its seat over (`kvstore switchover`, SIGTERM), writes paused, waiting for its successor to catch up before it gives up and takes writes again.
    #[arg(
        long,
        env = "KVSTORE_SWITCHOVER_TIMEOUT_MS",
        value_name = "MS",
        default_value = "5000",
        value_parser = number::<100, 600_000>
    )]
    pub switchover_timeout_ms: u64,
}

/// `--in-sync-max-lag-ms` unless `--sync-timeout-ms` is below twice this.
const DEFAULT_IN_SYNC_MAX_LAG_MS: u64 = 2000;

/// A configuration value that cannot be used; the message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// One setting has a value that does not parse or is out of range.
    #[error("invalid value {value:?} for {setting}: {reason}")]
    Invalid {
        setting: String,
        value: String,
        reason: String,
    },
    /// A setting that the chosen combination requires is missing.
    #[error("{setting} is required: {reason}")]
    Missing { setting: String, reason: String },
}

impl ConfigError {
    /// The one-line error for a value clap's parser refused (a value
    /// parser's error, or a name outside a [`ValueEnum`]), naming the flag
    /// and, from `command` (the whole command line), its variable. `None`
    /// for every other clap error (an unknown flag, `--help`), which clap
    /// reports itself.
    pub fn from_clap(error: &clap::Error, command: &clap::Command) -> Option<ConfigError> {
        use clap::error::{ContextKind, ContextValue, ErrorKind};
        if !matches!(
            error.kind(),
            ErrorKind::ValueValidation | ErrorKind::InvalidValue
        ) {
            return None;
        }
        let text = |kind| match error.get(kind) {
            Some(ContextValue::String(s)) => Some(s.clone()),
            _ => None,
        };
        // "--durability <always|interval|never>": the flag is the first word.
        let arg = text(ContextKind::InvalidArg)?;
        let flag = arg.split([' ', '=']).next().unwrap_or(&arg).to_string();
        let value = text(ContextKind::InvalidValue).unwrap_or_default();
        let reason = match error.get(ContextKind::ValidValue) {
            Some(ContextValue::Strings(valid)) => format!("expected {}", one_of(valid)),
            _ => std::error::Error::source(error)
                .map(ToString::to_string)
                .unwrap_or_else(|| "not a valid value".into()),
        };
        let setting = match env_of(command, flag.trim_start_matches('-')) {
            Some(env) => format!("{flag} ({env})"),
            None => flag,
        };
        Some(ConfigError::Invalid {
            setting,
            value,
            reason,
        })
    }
}

/// "a, b or c".
fn one_of(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The environment variable of the flag `--long` anywhere in `command`.
fn env_of(command: &clap::Command, long: &str) -> Option<String> {
    let here = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned());
    here.or_else(|| command.get_subcommands().find_map(|sub| env_of(sub, long)))
}

/// How `--role` starts a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleSetting {
    /// Take writes.
    Master,
    /// Follow `--master-addr`.
    Replica,
    /// Master when this pod's ordinal is `MASTER_ORDINAL`, else replica.
    Auto,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Validated server configuration. Build it with [`Config::from_args`].
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub http_listen: SocketAddr,
    /// RESP listener (`--resp-listen`), if any.
    pub resp_listen: Option<SocketAddr>,
    /// The durability policy, with `--fsync-interval-ms` for `interval`.
    pub durability: Durability,
    pub segment_max_bytes: u64,
    pub role: Role,
    pub replication_mode: ReplicationMode,
    pub replication_enabled: bool,
    /// Connection limits and timeouts, `--shutdown-timeout-secs` included.
    pub limits: Limits,
    /// HTTP connections served at once (`--http-max-connections`).
    pub http_max_connections: usize,
    /// HTTP header read timeout (`--http-header-timeout-secs`).
    pub http_header_timeout: Duration,
    /// Threads serving client connections (`--io-threads`, 0 resolved to
    /// the CPUs the process may use).
    pub io_threads: usize,
    pub log_format: LogFormat,
    pub port_file: Option<PathBuf>,
    pub advertise_addr: Option<String>,
    pub min_acks: usize,
    pub sync_timeout: Duration,
    pub replication_retention_bytes: u64,
    pub replica_max_lag_bytes: u64,
    /// Token files; the client one comes from the global
    /// `--auth-token-file`, which the command line adds.
    pub tokens: TokenFiles,
    /// TLS files; the CA and server name come from the global flags.
    pub tls: TlsFiles,
    /// The coordinator session's settings when `--coordinator` is not
    /// `none` (then [`Config::role`] is [`Role::Candidate`]). Its
    /// `advertise_addr` is `--advertise-addr`, or empty until the node has
    /// bound `--listen`.
    pub coordinator: Option<coordinator::Settings>,
    /// The failover rules' timing (`--in-sync-max-lag-ms`,
    /// `--campaign-grace-ms`, `--switchover-timeout-ms`); read only with a
    /// coordinator.
    pub ha: crate::node::ha::Policy,
}

/// Every environment variable `kvstore` reads; anything else starting with
/// `KVSTORE_` is probably a typo and is warned about at start.
pub const KNOWN_ENV: &[&str] = &[
    "KVSTORE_DATA_DIR",
    "KVSTORE_LISTEN",
    "KVSTORE_HTTP_LISTEN",
    "KVSTORE_RESP_LISTEN",
    "KVSTORE_DURABILITY",
    "KVSTORE_FSYNC_INTERVAL_MS",
    "KVSTORE_SEGMENT_MAX_BYTES",
    "KVSTORE_ROLE",
    "KVSTORE_MASTER_ADDR",
    "KVSTORE_REPLICATION_MODE",
    "KVSTORE_REPLICATION_ENABLED",
    "KVSTORE_MASTER_ORDINAL",
    "KVSTORE_POD_NAME",
    "KVSTORE_ADVERTISE_ADDR",
    "KVSTORE_MIN_ACKS",
    "KVSTORE_SYNC_TIMEOUT_MS",
    "KVSTORE_REPLICATION_RETENTION_BYTES",
    "KVSTORE_REPLICA_MAX_LAG_BYTES",
    "KVSTORE_MAX_CONNECTIONS",
    "KVSTORE_MAX_FRAME_BYTES",
    "KVSTORE_IDLE_TIMEOUT_SECS",
    "KVSTORE_FRAME_TIMEOUT_SECS",
    "KVSTORE_SHUTDOWN_TIMEOUT_SECS",
    "KVSTORE_HANDSHAKE_TIMEOUT_SECS",
    "KVSTORE_MAX_UNAUTHENTICATED",
    "KVSTORE_MAX_CLIENT_MEMORY_BYTES",
    "KVSTORE_HTTP_MAX_CONNECTIONS",
    "KVSTORE_HTTP_HEADER_TIMEOUT_SECS",
    "KVSTORE_IO_THREADS",
    "KVSTORE_LOG_FORMAT",
    "KVSTORE_PORT_FILE",
    "KVSTORE_ADDR",
    "KVSTORE_AUTH_TOKEN_FILE",
    "KVSTORE_READONLY_TOKEN_FILE",
    "KVSTORE_ADMIN_TOKEN_FILE",
    "KVSTORE_TLS_CERT",
    "KVSTORE_TLS_KEY",
    "KVSTORE_TLS_CA",
    "KVSTORE_TLS_SERVER_NAME",
    "KVSTORE_COORDINATOR",
    "KVSTORE_ETCD_ENDPOINTS",
    "KVSTORE_CLUSTER",
    "KVSTORE_NODE_ID",
    "KVSTORE_LEASE_TTL_MS",
    "KVSTORE_KUBE_API_URL",
    "KVSTORE_KUBE_TOKEN_FILE",
    "KVSTORE_KUBE_CA_FILE",
    "KVSTORE_KUBE_NAMESPACE",
    "KVSTORE_KUBE_POD_SELECTOR",
    "KVSTORE_IN_SYNC_MAX_LAG_MS",
    "KVSTORE_CAMPAIGN_GRACE_MS",
    "KVSTORE_SWITCHOVER_TIMEOUT_MS",
];

/// Names a setting in messages: `--durability (KVSTORE_DURABILITY)`.
fn name(flag: &str) -> String {
    let env = flag.to_ascii_uppercase().replace('-', "_");
    format!("--{flag} (KVSTORE_{env})")
}

fn invalid(flag: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: name(flag),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// A ConfigMap variable's value parsed as its flag would be; the message
/// names both.
fn from_configmap<T>(
    flag: &str,
    var: &str,
    value: String,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    parse(&value).map_err(|reason| ConfigError::Invalid {
        setting: format!("{} or {var}", name(flag)),
        value,
        reason,
    })
}

impl Config {
    /// Checks what involves several settings and builds the node's types;
    /// `env` looks up the ConfigMap variables (`MASTER_ORDINAL`,
    /// `REPLICATION_MODE`, `REPLICATION_ENABLED`, `HOSTNAME`), so tests can
    /// run without touching the process environment. In the binary it is
    /// `|k| std::env::var(k).ok()`.
    pub fn from_args(
        args: &ServeArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let (listen, http_listen) = (args.listen, args.http_listen);
        if listen == http_listen && listen.port() != 0 {
            return Err(invalid(
                "http-listen",
                &http_listen.to_string(),
                "must differ from --listen",
            ));
        }
        if let Some(addr) = args.resp_listen {
            if addr.port() != 0 && (addr == listen || addr == http_listen) {
                return Err(invalid(
                    "resp-listen",
                    &addr.to_string(),
                    "must differ from --listen and --http-listen",
                ));
            }
        }
        let durability = match args.durability {
            Durability::Interval(_) => {
                Durability::Interval(Duration::from_millis(args.fsync_interval_ms))
            }
            other => other,
        };
        let limits = Limits {
            max_connections: usize::try_from(args.max_connections).map_err(|_| {
                invalid(
                    "max-connections",
                    &args.max_connections.to_string(),
                    "too large",
                )
            })?,
            max_frame_bytes: args.max_frame_bytes,
            idle_timeout: Duration::from_secs(args.idle_timeout_secs),
            frame_timeout: Duration::from_secs(args.frame_timeout_secs),
            shutdown_timeout: Duration::from_secs(args.shutdown_timeout_secs),
            handshake_timeout: Duration::from_secs(args.handshake_timeout_secs),
            // The parsers bound both to 1,000,000.
            max_unauthenticated: usize::try_from(args.max_unauthenticated).unwrap_or(1_000_000),
            client_memory_bytes: args.max_client_memory_bytes,
        };
        let replication_mode = match args.replication_mode {
            Some(m) => m,
            None => match env("REPLICATION_MODE") {
                Some(v) => from_configmap("replication-mode", "REPLICATION_MODE", v, mode)?,
                None => ReplicationMode::Async,
            },
        };
        let replication_enabled = match args.replication_enabled {
            Some(b) => b,
            None => match env("REPLICATION_ENABLED") {
                Some(v) => {
                    from_configmap("replication-enabled", "REPLICATION_ENABLED", v, boolean)?
                }
                None => true,
            },
        };
        let coordinator = coordinator_settings(args, &env)?;
        let in_sync_max_lag_ms = args
            .in_sync_max_lag_ms
            .unwrap_or(DEFAULT_IN_SYNC_MAX_LAG_MS.min(args.sync_timeout_ms / 2));
        if coordinator.is_some()
            && replication_mode == ReplicationMode::Sync
            && in_sync_max_lag_ms >= args.sync_timeout_ms
        {
            return Err(invalid(
                "in-sync-max-lag-ms",
                &in_sync_max_lag_ms.to_string(),
                format!(
                    "must be below --sync-timeout-ms ({}): a lagging member must be dropped from the in-sync set before the writes waiting for it time out",
                    args.sync_timeout_ms
                ),
            ));
        }
        let role = match &coordinator {
            // Every node starts as a candidate and finds the master through
            // the coordinator: --role and --master-addr are not read.
            Some(_) => Role::Candidate,
            None => role::resolve_role(args, replication_enabled, &env)?,
        };
        Ok(Config {
            data_dir: args.data_dir.clone(),
            listen,
            http_listen,
            resp_listen: args.resp_listen,
            durability,
            segment_max_bytes: args.segment_max_bytes,
            role,
            replication_mode,
            replication_enabled,
            limits,
            http_max_connections: usize::try_from(args.http_max_connections).unwrap_or(100_000),
            http_header_timeout: Duration::from_secs(args.http_header_timeout_secs),
            io_threads: match args.io_threads {
                0 => std::thread::available_parallelism().map_or(1, usize::from),
                // At most 1024: the parser bounds it.
                n => usize::try_from(n).unwrap_or(1024),
            },
            log_format: args.log_format,
            port_file: args.port_file.clone(),
            advertise_addr: args.advertise_addr.clone(),
            // At most 64: the parser bounds it.
            min_acks: usize::try_from(args.min_acks).unwrap_or(64),
            sync_timeout: Duration::from_millis(args.sync_timeout_ms),
            replication_retention_bytes: args.replication_retention_bytes,
            replica_max_lag_bytes: args.replica_max_lag_bytes,
            tokens: TokenFiles {
                readonly: args.readonly_token_file.clone(),
                admin: args.admin_token_file.clone(),
                client: None,
            },
            tls: TlsFiles {
                cert: args.tls_cert.clone(),
                key: args.tls_key.clone(),
                ca: None,
                server_name: None,
            },
            coordinator,
            ha: crate::node::ha::Policy {
                in_sync_max_lag: Duration::from_millis(in_sync_max_lag_ms),
                campaign_grace: Duration::from_millis(args.campaign_grace_ms),
                switchover_timeout: Duration::from_millis(args.switchover_timeout_ms),
            },
        })
    }
}

/// The coordinator settings, `None` for `--coordinator none`. The node id
/// defaults to the host name (`HOSTNAME`, else the kernel's).
fn coordinator_settings(
    args: &ServeArgs,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<coordinator::Settings>, ConfigError> {
    // Under `none` nothing is elected and nothing labelled: not read, as
    // --role is not read under a coordinator.
    if let Some(selector) = &args.kube_pod_selector {
        if args.coordinator == Backend::Etcd {
            return Err(invalid(
                "kube-pod-selector",
                selector,
                "only the kubernetes coordinator labels pods (--coordinator kubernetes)",
            ));
        }
    }
    if args.coordinator == Backend::None {
        return Ok(None);
    }
    if args.coordinator == Backend::Etcd && args.etcd_endpoints.is_empty() {
        return Err(ConfigError::Missing {
            setting: name("etcd-endpoints"),
            reason: "--coordinator etcd needs at least one etcd client URL".into(),
        });
    }
    if !args.replication_enabled.unwrap_or(true) {
        return Err(invalid(
            "coordinator",
            args.coordinator.name(),
            "a coordinator elects a master among replicating nodes; replication is disabled",
        ));
    }
    let node_id = match &args.node_id {
        Some(id) => id.clone(),
        None => {
            let host = env("HOSTNAME")
                .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
                .unwrap_or_default();
            let host = host.trim().to_string();
            parse::node_id(&host).map_err(|reason| ConfigError::Invalid {
                setting: format!("{} (default: the host name)", name("node-id")),
                value: host,
                reason,
            })?
        }
    };
    let mut settings = coordinator::Settings::new(
        args.coordinator,
        node_id,
        args.advertise_addr.clone().unwrap_or_default(),
    );
    settings.cluster.clone_from(&args.cluster);
    settings.lease_ttl = args.lease_ttl_ms.map(Duration::from_millis);
    settings.etcd_endpoints.clone_from(&args.etcd_endpoints);
    settings.kubernetes = kubernetes_settings(args)?;
    if let Some(selector) = &args.kube_pod_selector {
        let pod = args
            .pod_name
            .clone()
            .or_else(|| env("HOSTNAME"))
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ConfigError::Missing {
                setting: name("pod-name"),
                reason: "--kube-pod-selector labels this node's own pod, found by its name".into(),
            })?;
        settings.kubernetes.pod_selector = Some(selector.clone());
        settings.kubernetes.pod_name = Some(pod);
    }
    settings.timing().map_err(|e| {
        invalid(
            "lease-ttl-ms",
            &args.lease_ttl_ms.unwrap_or_default().to_string(),
            e.to_string(),
        )
    })?;
    Ok(Some(settings))
}

/// Where the Lease API is: the flags, or (all absent) the pod's service
/// account. The token file is read here, so a bad path fails at start.
fn kubernetes_settings(args: &ServeArgs) -> Result<KubernetesSettings, ConfigError> {
    let token = match &args.kube_token_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    "kube-token-file",
                    &path.display().to_string(),
                    e.to_string(),
                )
            })?;
            let token = text.trim().to_string();
            if token.is_empty() {
                return Err(invalid(
                    "kube-token-file",
                    &path.display().to_string(),
                    "the file is empty",
                ));
            }
            Some(token)
        }
    };
    Ok(KubernetesSettings {
        namespace: args.kube_namespace.clone(),
        api_url: args.kube_api_url.clone(),
        token,
        ca_file: args.kube_ca_file.clone(),
        ..KubernetesSettings::default()
    })
}

#[cfg(test)]
mod tests;
