//! Server configuration: `kvstore serve` flags, `KVSTORE_*` environment
//! variables and the Kubernetes ConfigMap variables, validated at start.
//!
//! Precedence, highest first: command-line flag, `KVSTORE_<FLAG>` variable,
//! ConfigMap variable (`MASTER_ORDINAL`, `REPLICATION_MODE`,
//! `REPLICATION_ENABLED`, read as they are), built-in default.
//!
//! [`ServeArgs`] holds the raw strings exactly as given; [`Config::from_args`]
//! parses and checks every one of them (raft-engine's `sanitize()`), so that
//! a bad value fails at start with a message that names the flag and its
//! variable, never later and never with a parser's `Debug` dump. Every
//! setting, its default and its meaning is listed in `docs/CONFIGURATION.md`;
//! a test keeps that table and this file in step.

mod role;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::engine::options::{MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES};
use crate::engine::record::{MAX_KEY_LEN, MAX_VALUE_LEN};
use crate::security::{TlsFiles, TokenFiles};
pub use role::Role;

/// Default client address (`--listen`).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:5555";
/// Default HTTP address for health and metrics (`--http-listen`).
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:9555";
/// Default data directory (`--data-dir`).
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default maximum frame: the largest key and value plus 1 MiB for framing
/// and batch overhead, so any record the engine accepts fits in one frame.
pub const DEFAULT_MAX_FRAME_BYTES: u64 = (MAX_KEY_LEN + MAX_VALUE_LEN + (1 << 20)) as u64;

/// `kvstore serve` arguments, as given (strings, parsed by [`Config::from_args`]).
///
/// Values are strings on purpose: parsing them here gives one error format
/// that names the flag *and* its environment variable.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Data directory (created if missing).
    #[arg(long, env = "KVSTORE_DATA_DIR", value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: String,
    /// Address for clients (host:port; port 0 picks a free port).
    #[arg(long, env = "KVSTORE_LISTEN", value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "KVSTORE_HTTP_LISTEN", value_name = "ADDR", default_value = DEFAULT_HTTP_LISTEN)]
    pub http_listen: String,
    /// When a write is acknowledged: always (after fsync), interval, never.
    #[arg(
        long,
        env = "KVSTORE_DURABILITY",
        value_name = "always|interval|never",
        default_value = "always"
    )]
    pub durability: String,
    /// Fsync period for --durability interval, in milliseconds (1..=60000).
    #[arg(
        long,
        env = "KVSTORE_FSYNC_INTERVAL_MS",
        value_name = "MS",
        default_value = "100"
    )]
    pub fsync_interval_ms: String,
    /// Size at which the active segment is sealed and a new one started.
    #[arg(
        long,
        env = "KVSTORE_SEGMENT_MAX_BYTES",
        value_name = "BYTES",
        default_value = "1073741824"
    )]
    pub segment_max_bytes: String,
    /// master, replica, or auto (master when the pod ordinal equals MASTER_ORDINAL).
    #[arg(
        long,
        env = "KVSTORE_ROLE",
        value_name = "master|replica|auto",
        default_value = "master"
    )]
    pub role: String,
    /// Master to follow (host:port); `{ordinal}` is replaced by MASTER_ORDINAL.
    #[arg(long, env = "KVSTORE_MASTER_ADDR", value_name = "ADDR")]
    pub master_addr: Option<String>,
    /// async or sync [default: async; also REPLICATION_MODE].
    #[arg(long, env = "KVSTORE_REPLICATION_MODE", value_name = "async|sync")]
    pub replication_mode: Option<String>,
    /// true or false [default: true; also REPLICATION_ENABLED].
    #[arg(long, env = "KVSTORE_REPLICATION_ENABLED", value_name = "BOOL")]
    pub replication_enabled: Option<String>,
    /// Where other nodes and redirected clients reach this node (host:port)
    /// [default: the bound --listen address].
    #[arg(long, env = "KVSTORE_ADVERTISE_ADDR", value_name = "ADDR")]
    pub advertise_addr: Option<String>,
    /// Sync mode: replicas that must hold a write before it is acknowledged.
    #[arg(long, env = "KVSTORE_MIN_ACKS", value_name = "N", default_value = "1")]
    pub min_acks: String,
    /// Sync mode: how long a write waits for replica acknowledgements.
    #[arg(
        long,
        env = "KVSTORE_SYNC_TIMEOUT_MS",
        value_name = "MS",
        default_value = "5000"
    )]
    pub sync_timeout_ms: String,
    /// Log a master keeps for connected replicas beyond what they acknowledged.
    #[arg(
        long,
        env = "KVSTORE_REPLICATION_RETENTION_BYTES",
        value_name = "BYTES",
        default_value = "1073741824"
    )]
    pub replication_retention_bytes: String,
    /// A replica reports ready only while at most this far behind its master.
    #[arg(
        long,
        env = "KVSTORE_REPLICA_MAX_LAG_BYTES",
        value_name = "BYTES",
        default_value = "67108864"
    )]
    pub replica_max_lag_bytes: String,
    /// Ordinal of the master pod, for --role auto [also MASTER_ORDINAL].
    #[arg(long, env = "KVSTORE_MASTER_ORDINAL", value_name = "N")]
    pub master_ordinal: Option<String>,
    /// This pod's name, `<statefulset>-<ordinal>`, for --role auto [default: $HOSTNAME].
    #[arg(long, env = "KVSTORE_POD_NAME", value_name = "NAME")]
    pub pod_name: Option<String>,
    /// Client connections served at once; more are refused.
    #[arg(
        long,
        env = "KVSTORE_MAX_CONNECTIONS",
        value_name = "N",
        default_value = "1024"
    )]
    pub max_connections: String,
    /// Largest request or response frame, in bytes.
    #[arg(long, env = "KVSTORE_MAX_FRAME_BYTES", value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME_BYTES.to_string())]
    pub max_frame_bytes: String,
    /// Close a connection idle this long (0 = never).
    #[arg(
        long,
        env = "KVSTORE_IDLE_TIMEOUT_SECS",
        value_name = "SECS",
        default_value = "300"
    )]
    pub idle_timeout_secs: String,
    /// A frame that has started must arrive completely within this time.
    #[arg(
        long,
        env = "KVSTORE_FRAME_TIMEOUT_SECS",
        value_name = "SECS",
        default_value = "30"
    )]
    pub frame_timeout_secs: String,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    #[arg(
        long,
        env = "KVSTORE_SHUTDOWN_TIMEOUT_SECS",
        value_name = "SECS",
        default_value = "10"
    )]
    pub shutdown_timeout_secs: String,
    /// Log format: text or json.
    #[arg(
        long,
        env = "KVSTORE_LOG_FORMAT",
        value_name = "text|json",
        default_value = "text"
    )]
    pub log_format: String,
    /// Also serve Redis clients (RESP2) on this address (host:port); off unless given.
    #[arg(long, env = "KVSTORE_RESP_LISTEN", value_name = "ADDR")]
    pub resp_listen: Option<String>,
    /// Write the bound addresses here (`listen=..`, `http=..`) once listening.
    #[arg(long, env = "KVSTORE_PORT_FILE", value_name = "PATH")]
    pub port_file: Option<String>,
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
}

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

/// When the engine acknowledges a write (docs/CONFIGURATION.md, "Durability").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurabilityPolicy {
    /// Ack after fsync (group commit).
    Always,
    /// Fsync every `fsync_interval`; a crash loses up to one interval.
    Interval,
    /// Leave it to the OS.
    Never,
}

/// `async` or `sync` replication (docs/REPLICATION.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationMode {
    /// The master acks after its own durability policy.
    Async,
    /// The master acks once replicas have the write durably.
    Sync,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Per-connection limits, shared with the protocol layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once. Default 1024.
    pub max_connections: usize,
    /// Largest frame in bytes. Default [`DEFAULT_MAX_FRAME_BYTES`].
    pub max_frame_bytes: u32,
    /// Close a connection idle this long; zero means never. Default 300 s.
    pub idle_timeout: Duration,
    /// A started frame must complete within this. Default 30 s.
    pub frame_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES as u32,
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(30),
        }
    }
}

/// Validated server configuration. Build it with [`Config::from_args`].
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub http_listen: SocketAddr,
    /// RESP listener (`--resp-listen`), if any.
    pub resp_listen: Option<SocketAddr>,
    pub durability: DurabilityPolicy,
    pub fsync_interval: Duration,
    pub segment_max_bytes: u64,
    pub role: Role,
    pub replication_mode: ReplicationMode,
    pub replication_enabled: bool,
    pub limits: Limits,
    pub shutdown_timeout: Duration,
    pub log_format: LogFormat,
    pub port_file: Option<PathBuf>,
    pub advertise_addr: Option<String>,
    pub min_acks: usize,
    pub sync_timeout: Duration,
    pub replication_retention_bytes: u64,
    pub replica_max_lag_bytes: u64,
    /// Token files; the client one comes from the global
    /// `--auth-token-file` ([`Config::with_connect`]).
    pub tokens: TokenFiles,
    /// TLS files; the CA and server name come from the global flags.
    pub tls: TlsFiles,
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

fn parse_u64(flag: &str, value: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let n: u64 = value
        .trim()
        .parse()
        .map_err(|_| invalid(flag, value, "expected a whole number"))?;
    if n < min || n > max {
        return Err(invalid(
            flag,
            value,
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(n)
}

fn parse_addr(flag: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    let mut addrs = value
        .trim()
        .to_socket_addrs()
        .map_err(|e| invalid(flag, value, format!("expected host:port ({e})")))?;
    addrs
        .next()
        .ok_or_else(|| invalid(flag, value, "resolves to no address"))
}

fn parse_bool(setting: String, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::Invalid {
            setting,
            value: value.to_string(),
            reason: "expected true or false".into(),
        }),
    }
}

impl Config {
    /// Parses and validates `args`; `env` looks up the ConfigMap variables
    /// (`MASTER_ORDINAL`, `REPLICATION_MODE`, `REPLICATION_ENABLED`,
    /// `HOSTNAME`), so tests can run without touching the process
    /// environment. In the binary it is `|k| std::env::var(k).ok()`.
    pub fn from_args(
        args: &ServeArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        if args.data_dir.trim().is_empty() {
            return Err(invalid("data-dir", &args.data_dir, "must not be empty"));
        }
        // A missing directory is created at start; anything else in its
        // place is refused here, before the node logs that it starts.
        if std::fs::metadata(&args.data_dir).is_ok_and(|m| !m.is_dir()) {
            return Err(invalid("data-dir", &args.data_dir, "is not a directory"));
        }
        let listen = parse_addr("listen", &args.listen)?;
        let http_listen = parse_addr("http-listen", &args.http_listen)?;
        if listen == http_listen && listen.port() != 0 {
            return Err(invalid(
                "http-listen",
                &args.http_listen,
                "must differ from --listen",
            ));
        }
        let resp_listen = match &args.resp_listen {
            None => None,
            Some(a) => {
                let addr = parse_addr("resp-listen", a)?;
                if addr.port() != 0 && (addr == listen || addr == http_listen) {
                    return Err(invalid(
                        "resp-listen",
                        a,
                        "must differ from --listen and --http-listen",
                    ));
                }
                Some(addr)
            }
        };
        let durability = match args.durability.trim() {
            "always" => DurabilityPolicy::Always,
            "interval" => DurabilityPolicy::Interval,
            "never" => DurabilityPolicy::Never,
            _ => {
                return Err(invalid(
                    "durability",
                    &args.durability,
                    "expected always, interval or never",
                ))
            }
        };
        let fsync_interval = Duration::from_millis(parse_u64(
            "fsync-interval-ms",
            &args.fsync_interval_ms,
            1,
            60_000,
        )?);
        let segment_max_bytes = parse_u64(
            "segment-max-bytes",
            &args.segment_max_bytes,
            MIN_SEGMENT_BYTES,
            MAX_SEGMENT_BYTES,
        )?;

        let max_connections = parse_u64("max-connections", &args.max_connections, 1, 1_000_000)?;
        let max_frame_bytes = parse_u64(
            "max-frame-bytes",
            &args.max_frame_bytes,
            1024,
            u64::from(u32::MAX),
        )?;
        let idle = parse_u64("idle-timeout-secs", &args.idle_timeout_secs, 0, 86_400 * 7)?;
        let frame = parse_u64("frame-timeout-secs", &args.frame_timeout_secs, 1, 3600)?;
        let shutdown = parse_u64(
            "shutdown-timeout-secs",
            &args.shutdown_timeout_secs,
            0,
            3600,
        )?;
        let limits = Limits {
            max_connections: usize::try_from(max_connections)
                .map_err(|_| invalid("max-connections", &args.max_connections, "too large"))?,
            max_frame_bytes: u32::try_from(max_frame_bytes)
                .map_err(|_| invalid("max-frame-bytes", &args.max_frame_bytes, "too large"))?,
            idle_timeout: Duration::from_secs(idle),
            frame_timeout: Duration::from_secs(frame),
        };

        let log_format = match args.log_format.trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => {
                return Err(invalid(
                    "log-format",
                    &args.log_format,
                    "expected text or json",
                ))
            }
        };
        let port_file = match &args.port_file {
            Some(p) if p.trim().is_empty() => {
                return Err(invalid("port-file", p, "must not be empty"))
            }
            Some(p) => Some(PathBuf::from(p)),
            None => None,
        };

        let replication_mode = match args
            .replication_mode
            .clone()
            .or_else(|| env("REPLICATION_MODE"))
        {
            None => ReplicationMode::Async,
            Some(v) => match v.trim() {
                "async" => ReplicationMode::Async,
                "sync" => ReplicationMode::Sync,
                _ => {
                    return Err(ConfigError::Invalid {
                        setting: format!("{} or REPLICATION_MODE", name("replication-mode")),
                        value: v,
                        reason: "expected async or sync".into(),
                    })
                }
            },
        };
        let replication_enabled = match args
            .replication_enabled
            .clone()
            .or_else(|| env("REPLICATION_ENABLED"))
        {
            None => true,
            Some(v) => parse_bool(
                format!("{} or REPLICATION_ENABLED", name("replication-enabled")),
                &v,
            )?,
        };
        let role = role::resolve_role(args, replication_enabled, &env)?;
        let advertise_addr = match &args.advertise_addr {
            Some(a) => {
                role::check_host_port("advertise-addr", a)?;
                Some(a.trim().to_string())
            }
            None => None,
        };
        let min_acks = parse_u64("min-acks", &args.min_acks, 1, 64)? as usize;
        let sync_timeout = Duration::from_millis(parse_u64(
            "sync-timeout-ms",
            &args.sync_timeout_ms,
            1,
            600_000,
        )?);
        let replication_retention_bytes = parse_u64(
            "replication-retention-bytes",
            &args.replication_retention_bytes,
            0,
            u64::MAX,
        )?;
        let replica_max_lag_bytes = parse_u64(
            "replica-max-lag-bytes",
            &args.replica_max_lag_bytes,
            0,
            u64::MAX,
        )?;

        Ok(Config {
            data_dir: PathBuf::from(&args.data_dir),
            listen,
            http_listen,
            resp_listen,
            durability,
            fsync_interval,
            segment_max_bytes,
            role,
            replication_mode,
            replication_enabled,
            limits,
            shutdown_timeout: Duration::from_secs(shutdown),
            log_format,
            port_file,
            advertise_addr,
            min_acks,
            sync_timeout,
            replication_retention_bytes,
            replica_max_lag_bytes,
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
        })
    }

    /// Adds the settings shared with client commands: the client token
    /// file (`--auth-token-file`), the CA this node verifies its master
    /// against (`--tls-ca`) and the name it expects there.
    pub fn with_connect(mut self, connect: &crate::cli::connect::ConnectArgs) -> Config {
        self.tokens.client.clone_from(&connect.auth_token_file);
        self.tls.ca.clone_from(&connect.tls_ca);
        self.tls.server_name.clone_from(&connect.tls_server_name);
        self
    }
}

#[cfg(test)]
mod tests;
