//! Client subcommands: talk to a node over the wire protocol with the
//! [`BlockingClient`].
//!
//! Keys and values are taken as raw bytes from the command line (no UTF-8
//! requirement). `read` writes the value's raw bytes to stdout, and a
//! newline after them only when stdout is a terminal (so the prompt does
//! not stick to the value; `$(kvstore read k)` and pipes get the bytes
//! exactly). A missing key exits 1 with a message on stderr, as scripts
//! expect. Durations (`put --ttl`, `expire`) are parsed by [`duration`].

use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::cli::bench::{self, BenchArgs};
use crate::cli::connect::ConnectArgs;
use crate::cli::CliError;
use crate::cli::{admin, cluster, duration, offline};
use crate::client::{BlockingClient, ClientOptions};
use crate::protocol::{ExpireCondition, Expiry, KeyTtl};

/// Commands that talk to a node.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Store a value: `put KEY VALUE`, `put KEY --file PATH`, or the value
    /// from stdin when neither is given (or VALUE is `-`); with `--ttl` it
    /// expires.
    Put(PutArgs),
    /// Print a key's value to stdout: the raw bytes, plus a newline when
    /// stdout is a terminal; exit 1 if the key is absent.
    #[command(visible_alias = "get")]
    Read(KeyArg),
    /// Delete a key (succeeds whether or not it existed).
    Delete(KeyArg),
    /// Print `true` (exit 0) or `false` (exit 1).
    Exists(KeyArg),
    /// Print how long a key has left and when it expires, or `no expiry`;
    /// exit 1 if the key is absent.
    Ttl(TtlArgs),
    /// Make a key expire after DURATION (0 deletes it); exit 1 if the key
    /// is absent or a condition does not hold.
    Expire(ExpireArgs),
    /// Remove a key's expiry; exit 1 if the key is absent.
    Persist(KeyArg),
    /// Compact the node's log now and report what it did; with
    /// --data-dir, compact a stopped node's directory instead.
    Compact(CompactArgs),
    /// Show the node's statistics.
    Stats(StatsArgs),
    /// Check that the node answers; print the round-trip time.
    Ping,
    /// Load generator in the manner of redis-benchmark.
    Bench(BenchArgs),
    /// Make the node (a replica) the master, in a new epoch, without a restart.
    Promote,
    /// Make the node follow another master (repoint a replica, demote a master).
    Replicate(admin::ReplicateArgs),
    /// One-shot failover: promote the most advanced replica of --nodes and
    /// repoint the others; refuses while a master answers unless --force.
    Failover(admin::FailoverArgs),
    /// With a coordinator: the master hands its seat to a caught-up
    /// replica (--to, or the most caught-up one); sent to any node.
    Switchover(admin::SwitchoverArgs),
    /// The coordinator's view of the cluster: `cluster status [--json]`.
    Cluster(cluster::ClusterArgs),
    /// Check every record, hint and manifest of a stopped node's data
    /// directory; exit 1 on any problem.
    Verify(DataDirArg),
    /// Print every record of a stopped node's data directory.
    Dump(DataDirArg),
}

impl ClientCommand {
    /// Whether the command connects to `--addr` (the offline ones read a
    /// data directory; `failover` takes `--nodes`).
    pub fn talks_to_addr(&self) -> bool {
        !matches!(
            self,
            ClientCommand::Verify(_)
                | ClientCommand::Dump(_)
                | ClientCommand::Failover(_)
                | ClientCommand::Compact(CompactArgs { data_dir: Some(_) })
        )
    }
}

#[derive(Debug, Args)]
pub struct CompactArgs {
    /// Compact this stopped node's data directory instead of a running node.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DataDirArg {
    /// The data directory (the node must be stopped).
    #[arg(long, value_name = "DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct KeyArg {
    /// The key (raw bytes of the argument).
    pub key: OsString,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    /// The key (raw bytes of the argument).
    pub key: OsString,
    /// The value; `-` or absent reads it from stdin (unless --file).
    #[arg(conflicts_with = "file")]
    pub value: Option<OsString>,
    /// Read the value from this file.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Expire the key after this long: 500ms, 30s, 5m, 2h, 1d, or plain
    /// seconds; counted on the server's clock from when it stores the value.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub ttl: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct TtlArgs {
    /// The key (raw bytes of the argument).
    pub key: OsString,
    /// Print only Redis's PTTL number: milliseconds left, -1 for no
    /// expiry, -2 for an absent key (exit 0 in every case).
    #[arg(long)]
    pub ms: bool,
}

#[derive(Debug, Args)]
pub struct ExpireArgs {
    /// The key (raw bytes of the argument).
    pub key: OsString,
    /// How long from now: 500ms, 30s, 5m, 2h, 1d, or plain seconds; 0
    /// deletes the key.
    #[arg(value_parser = duration::parse)]
    pub duration: Duration,
    /// Only if the key has no expiry.
    #[arg(long, conflicts_with_all = ["xx", "gt", "lt"])]
    pub nx: bool,
    /// Only if the key has an expiry.
    #[arg(long)]
    pub xx: bool,
    /// Only if the new expiry is later than the current one (a key without
    /// expiry counts as never expiring).
    #[arg(long, conflicts_with = "lt")]
    pub gt: bool,
    /// Only if the new expiry is sooner than the current one.
    #[arg(long)]
    pub lt: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print the raw JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs a client command against the node at `addr`.
pub fn run(cmd: ClientCommand, addr: &str, connect: &ConnectArgs) -> Result<(), CliError> {
    let mut client = match cmd {
        ClientCommand::Bench(args) => return bench::run(&args, addr, connect),
        ClientCommand::Promote => return admin::promote(addr, connect),
        ClientCommand::Replicate(args) => return admin::replicate(addr, &args, connect),
        ClientCommand::Failover(args) => return admin::failover(&args, connect),
        ClientCommand::Switchover(args) => return admin::switchover(addr, &args, connect),
        ClientCommand::Cluster(args) => return cluster::run(&args, addr, connect),
        ClientCommand::Verify(args) => return offline_verify(&args),
        ClientCommand::Dump(args) => {
            let mut out = std::io::stdout().lock();
            return offline::dump(&args.data_dir, &mut out)
                .map_err(|e| CliError::Other(e.to_string()));
        }
        ClientCommand::Compact(CompactArgs {
            data_dir: Some(dir),
        }) => {
            let mut out = std::io::stdout().lock();
            return offline::compact(&dir, &mut out).map_err(|e| CliError::Other(e.to_string()));
        }
        _ => {
            let options = connect.options(ClientOptions {
                client_name: "kvstore-cli".into(),
                ..ClientOptions::default()
            })?;
            BlockingClient::connect(addr, options).map_err(other)?
        }
    };
    match cmd {
        ClientCommand::Put(args) => {
            let value = put_value(&args)?;
            let key = args.key.as_bytes();
            match args.ttl {
                Some(ttl) if ttl.is_zero() => {
                    return Err(CliError::Other(
                        "--ttl must be at least 1ms (to remove a key, use delete)".into(),
                    ))
                }
                Some(ttl) => client.put_with_ttl(key, &value, ttl),
                None => client.put(key, &value),
            }
            .map_err(other)?;
            println!("OK");
        }
        ClientCommand::Ttl(args) => {
            let ttl = client.ttl(args.key.as_bytes()).map_err(other)?;
            match ttl {
                _ if args.ms => println!("{}", pttl(ttl)),
                KeyTtl::Absent => return Err(not_found(&args.key)),
                KeyTtl::Never => println!("no expiry"),
                KeyTtl::Expires { at, left_ms } => println!(
                    "{}.{:03}s left, expires at {}",
                    left_ms / 1000,
                    left_ms % 1000,
                    crate::backup::time::rfc3339(at)
                ),
            }
        }
        ClientCommand::Expire(args) => {
            let ms = u64::try_from(args.duration.as_millis()).unwrap_or(u64::MAX);
            let only_if = ExpireCondition {
                no_expiry: args.nx,
                has_expiry: args.xx,
                later: args.gt,
                sooner: args.lt,
            };
            let key = args.key.as_bytes();
            if !client
                .expire_with(key, Expiry::In(ms), only_if)
                .map_err(other)?
            {
                let why = if only_if == ExpireCondition::default() {
                    "the key has no value"
                } else {
                    "the key has no value or the condition does not hold"
                };
                return Err(CliError::Exit {
                    code: 1,
                    message: format!("expiry not set: {why}: {}", args.key.to_string_lossy()),
                });
            }
            println!("OK");
        }
        ClientCommand::Persist(arg) => {
            let key = arg.key.as_bytes();
            if client.persist(key).map_err(other)? {
                println!("OK");
            } else if client.ttl(key).map_err(other)? == KeyTtl::Absent {
                return Err(not_found(&arg.key));
            } else {
                println!("no expiry");
            }
        }
        ClientCommand::Read(arg) => match client.get(arg.key.as_bytes()).map_err(other)? {
            Some(value) => {
                let stdout = std::io::stdout();
                let newline = stdout.is_terminal() && !value.ends_with(b"\n");
                let mut out = stdout.lock();
                out.write_all(&value)
                    .and_then(|()| {
                        if newline {
                            out.write_all(b"\n")
                        } else {
                            Ok(())
                        }
                    })
                    .and_then(|()| out.flush())
                    .map_err(|e| CliError::Other(format!("cannot write to stdout: {e}")))?;
            }
            None => return Err(not_found(&arg.key)),
        },
        ClientCommand::Delete(arg) => {
            let existed = client.delete(arg.key.as_bytes()).map_err(other)?;
            println!("{}", if existed { "deleted" } else { "not found" });
        }
        ClientCommand::Exists(arg) => {
            if client.exists(arg.key.as_bytes()).map_err(other)? {
                println!("true");
            } else {
                println!("false");
                return Err(not_found(&arg.key));
            }
        }
        ClientCommand::Compact(_) => {
            let c = client.compact().map_err(other)?;
            println!(
                "compacted up to offset {}: {} -> {} bytes, {} keys kept",
                c.horizon, c.bytes_before, c.bytes_after, c.keys_kept
            );
        }
        ClientCommand::Stats(args) => {
            let stats = client.stats().map_err(other)?;
            if args.json {
                let json = serde_json::Value::Object(stats);
                println!("{json}");
            } else {
                print_table(&stats);
            }
        }
        ClientCommand::Ping => {
            let start = std::time::Instant::now();
            client.ping().map_err(other)?;
            println!("PONG ({:.3} ms)", start.elapsed().as_secs_f64() * 1000.0);
        }
        // Returned before connecting.
        ClientCommand::Bench(_)
        | ClientCommand::Promote
        | ClientCommand::Replicate(_)
        | ClientCommand::Failover(_)
        | ClientCommand::Switchover(_)
        | ClientCommand::Cluster(_)
        | ClientCommand::Verify(_)
        | ClientCommand::Dump(_) => {}
    }
    Ok(())
}

fn offline_verify(args: &DataDirArg) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    let clean =
        offline::verify(&args.data_dir, &mut out).map_err(|e| CliError::Other(e.to_string()))?;
    if clean {
        Ok(())
    } else {
        Err(CliError::Exit {
            code: 1,
            message: format!("{} has problems (listed above)", args.data_dir.display()),
        })
    }
}

fn put_value(args: &PutArgs) -> Result<Vec<u8>, CliError> {
    if let Some(path) = &args.file {
        return std::fs::read(path)
            .map_err(|e| CliError::Other(format!("cannot read --file {}: {e}", path.display())));
    }
    match &args.value {
        Some(v) if v.as_bytes() != b"-" => Ok(v.as_bytes().to_vec()),
        _ => {
            let mut value = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut value)
                .map_err(|e| CliError::Other(format!("cannot read the value from stdin: {e}")))?;
            Ok(value)
        }
    }
}

/// Prints the stats as `name  value` lines; nested objects (the
/// `replication` section) are flattened as `section.name`.
fn print_table(stats: &serde_json::Map<String, serde_json::Value>) {
    let mut rows = Vec::new();
    flatten("", stats, &mut rows);
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (name, shown) in rows {
        println!("{name:<width$}  {shown}");
    }
}

fn flatten(
    prefix: &str,
    map: &serde_json::Map<String, serde_json::Value>,
    rows: &mut Vec<(String, String)>,
) {
    for (name, value) in map {
        let name = format!("{prefix}{name}");
        match value {
            serde_json::Value::Object(inner) => flatten(&format!("{name}."), inner, rows),
            serde_json::Value::Null => rows.push((name, "-".into())),
            serde_json::Value::String(s) => rows.push((name, s.clone())),
            other => rows.push((name, other.to_string())),
        }
    }
}

/// Redis's PTTL number for a TTL answer.
fn pttl(ttl: KeyTtl) -> i128 {
    match ttl {
        KeyTtl::Absent => -2,
        KeyTtl::Never => -1,
        KeyTtl::Expires { left_ms, .. } => i128::from(left_ms),
    }
}

/// Exit 1 with `key not found: KEY`, as `read` and `exists` do.
fn not_found(key: &OsString) -> CliError {
    CliError::Exit {
        code: 1,
        message: format!("key not found: {}", key.to_string_lossy()),
    }
}

fn other(e: crate::client::Error) -> CliError {
    CliError::Other(e.to_string())
}
