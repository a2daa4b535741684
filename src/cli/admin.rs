//! Role commands: `promote`, `replicate` and `failover`, an operator's
//! one-shot failover without consensus; `switchover`, the planned
//! hand-over of a cluster with a coordinator.

use clap::Args;
use serde_json::Value;

use crate::cli::connect::{check_addr, ConnectArgs};
use crate::cli::CliError;
use crate::client::{BlockingClient, ClientOptions};

#[derive(Debug, Args)]
pub struct ReplicateArgs {
    /// The master to follow (host:port).
    #[arg(long, value_name = "ADDR")]
    pub master: String,
}

#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// Every node of the cluster, comma-separated host:port.
    #[arg(long, value_name = "A,B,C", value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// Act even though a master still answers (it is demoted to a replica
    /// of the promoted node, and loses what it had not replicated).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct SwitchoverArgs {
    /// Hand the seat to this node (its --node-id) [default: the master's
    /// most caught-up eligible replica].
    #[arg(long, value_name = "NODE_ID")]
    pub to: Option<String>,
}

/// Asks the master (found through `addr`'s REDIRECT when `addr` is a
/// replica) to hand its seat over; prints the new master.
pub fn switchover(addr: &str, args: &SwitchoverArgs, with: &ConnectArgs) -> Result<(), CliError> {
    if args.to.as_deref().is_some_and(|to| to.trim().is_empty()) {
        return Err(CliError::Other(
            "--to needs a node id (leave it out to let the master choose)".into(),
        ));
    }
    let options = with.options(ClientOptions {
        client_name: "kvstore-admin".into(),
        connect_timeout: std::time::Duration::from_secs(2),
        // The server bounds the switchover by its timeout and lease TTL.
        request_timeout: std::time::Duration::from_secs(120),
        follow_redirects: true,
        ..ClientOptions::default()
    })?;
    let mut client = BlockingClient::connect(addr, options).map_err(fail)?;
    let new = client.switchover(args.to.as_deref()).map_err(fail)?;
    println!(
        "switched over: {} ({}) is the master in epoch {}",
        new.node_id, new.addr, new.epoch
    );
    Ok(())
}

pub(crate) fn connect(addr: &str, with: &ConnectArgs) -> Result<BlockingClient, CliError> {
    let options = with.options(ClientOptions {
        client_name: "kvstore-admin".into(),
        connect_timeout: std::time::Duration::from_secs(2),
        follow_redirects: false,
        ..ClientOptions::default()
    })?;
    BlockingClient::connect(addr, options).map_err(fail)
}

pub(crate) fn fail(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

pub fn promote(addr: &str, with: &ConnectArgs) -> Result<(), CliError> {
    connect(addr, with)?.promote().map_err(fail)?;
    println!("{addr} is now the master");
    Ok(())
}

pub fn replicate(addr: &str, args: &ReplicateArgs, with: &ConnectArgs) -> Result<(), CliError> {
    check_addr("--master", &args.master)?;
    connect(addr, with)?.replicate(&args.master).map_err(fail)?;
    println!("{addr} now follows {}", args.master);
    Ok(())
}

/// What failover learned about one node.
struct NodeState {
    addr: String,
    role: String,
    epoch: u64,
    durable: u64,
    /// Its `--coordinator` (`none`: roles by hand).
    coordinator: String,
}

fn node_state(addr: &str, with: &ConnectArgs) -> Result<NodeState, CliError> {
    let stats = connect(addr, with)?.stats().map_err(fail)?;
    let repl = stats.get("replication").cloned().unwrap_or(Value::Null);
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    Ok(NodeState {
        addr: addr.to_string(),
        role: repl
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string(),
        epoch: num(&repl, "epoch"),
        durable: num(&repl, "durable_offset"),
        coordinator: stats
            .get("coordinator")
            .and_then(Value::as_str)
            .unwrap_or("none")
            .to_string(),
    })
}

/// Asks every node for its role, epoch and durable log end; promotes the
/// most advanced replica; points every other reachable node at it.
pub fn failover(args: &FailoverArgs, with: &ConnectArgs) -> Result<(), CliError> {
    for addr in &args.nodes {
        check_addr("--nodes", addr)?;
    }
    let mut reachable = Vec::new();
    for addr in &args.nodes {
        match node_state(addr, with) {
            Ok(s) => {
                println!(
                    "{:<24} {:<8} epoch {:<6} durable offset {}",
                    s.addr, s.role, s.epoch, s.durable
                );
                reachable.push(s);
            }
            Err(e) => println!("{addr:<24} unreachable: {e}"),
        }
    }
    if let Some(s) = reachable.iter().find(|s| s.coordinator != "none") {
        return Err(CliError::Other(format!(
            "refusing to fail over: {} runs with --coordinator {}, which elects the master itself. \
             Run `kvstore switchover [--to NODE_ID]` instead (or stop the master: at SIGTERM it \
             hands over to a caught-up replica)",
            s.addr, s.coordinator
        )));
    }
    let masters: Vec<&str> = reachable
        .iter()
        .filter(|s| s.role == "master")
        .map(|s| s.addr.as_str())
        .collect();
    if !masters.is_empty() && !args.force {
        return Err(CliError::Other(format!(
            "refusing to fail over: {} still answers as master (use --force to demote it)",
            masters.join(", ")
        )));
    }
    let best = reachable
        .iter()
        .filter(|s| s.role == "replica")
        .max_by_key(|s| (s.epoch, s.durable))
        .ok_or_else(|| CliError::Other("no reachable replica to promote".into()))?;
    let new_master = best.addr.clone();
    promote(&new_master, with)?;
    for s in reachable.iter().filter(|s| s.addr != new_master) {
        let repointed =
            connect(&s.addr, with).and_then(|mut c| c.replicate(&new_master).map_err(fail));
        match repointed {
            Ok(()) => println!("{} now follows {new_master}", s.addr),
            Err(e) => eprintln!("warning: could not repoint {}: {e}", s.addr),
        }
    }
    println!("failover done: {new_master} is the master");
    Ok(())
}
