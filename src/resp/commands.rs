//! Runs one decoded RESP command against the engine.
//!
//! Writes go through the binary protocol's write path
//! ([`execute::write`]): a replica refuses them (`-READONLY`, naming its
//! master), sync replication waits for acknowledgements exactly as for
//! binary clients. Every command is counted in `kvstore_requests_total`
//! under `op="resp_<name>"`.
//!
//! `SET` with options and the expiry commands are in [`super::expiry`]:
//! their conditions are decided inside the engine's single writer.

use std::time::Instant;

use bytes::Bytes;

use super::expiry::{self, Unit};
use super::info;
use super::parse::Args;
use super::reply::{from_response, Reply};
use super::table::{self, Spec};
use super::{Session, Shared};
use crate::engine::WriteOp;
use crate::metrics::{MemoryRefusal, Outcome};
use crate::node::execute;
use crate::node::memory::Lease;
use crate::node::Node;

/// Whether `args` is a write that may share a group commit with the writes
/// around it in a pipeline: it needs no session, and it appends when first
/// polled, so the writes of a pipeline reach the log in request order.
/// `SET` with options and the expiry commands qualify too: their
/// conditions are decided inside the engine's single writer, against every
/// write appended before them, pipelined ones included. So is the count
/// of a one-key `DEL`; a `DEL` of several keys counts them before it
/// appends, outside the writer, where a write of the same run may not have
/// reached the index yet (under `always` it reaches it once durable), so
/// it runs alone, once the writes before it are done.
pub fn batchable(args: &Args) -> bool {
    const WRITES: [&[u8]; 10] = [
        b"set",
        b"mset",
        b"del",
        b"setex",
        b"psetex",
        b"expire",
        b"pexpire",
        b"expireat",
        b"pexpireat",
        b"persist",
    ];
    match args.first() {
        Some(name) if name.eq_ignore_ascii_case(b"del") => args.len() <= 2,
        Some(name) => WRITES.iter().any(|w| name.eq_ignore_ascii_case(w)),
        None => false,
    }
}

/// The key and value of a plain `SET key value` (no options): consecutive
/// ones of a pipeline go to the engine as one append
/// ([`execute::put_groups`]); `None` for any other write.
pub fn plain_set(args: &Args) -> Option<(&[u8], &[u8])> {
    match &args[..] {
        [name, key, value] if name.eq_ignore_ascii_case(b"set") => Some((key, value)),
        _ => None,
    }
}

/// The key of a `GET key`: a read the connection loop may gather with
/// the `GET`s after it and warm together ([`warm_for_reads`]).
pub fn plain_get(args: &Args) -> Option<&[u8]> {
    match &args[..] {
        [name, key] if name.eq_ignore_ascii_case(b"get") => Some(key),
        _ => None,
    }
}

/// Readies the engine's index and log for the keys of the [`plain_get`]s
/// among `reads` (a hint: nothing changes).
pub fn warm_for_reads(node: &Node, reads: &[Args]) {
    node.engine
        .warm_for_reads(reads.iter().filter_map(plain_get));
}

/// Readies the engine's index for the keys the [`batchable`] `writes` will
/// write (a hint: nothing changes; a malformed request is skipped).
pub fn warm_for_writes(node: &Node, writes: &[Args]) {
    node.engine
        .warm_for_writes(writes.iter().flat_map(written_keys));
}

/// The keys a [`batchable`] write names: MSET every other argument, the
/// rest their first.
fn written_keys(args: &Args) -> impl Iterator<Item = &[u8]> {
    let keys: &[Bytes] = args.get(1..).unwrap_or_default();
    let step = match args.first() {
        Some(name) if name.eq_ignore_ascii_case(b"mset") => 2,
        _ => keys.len().max(1),
    };
    keys.iter().step_by(step).map(|key| &key[..])
}

/// Runs any command. Records metrics.
pub async fn execute(node: &Node, shared: &Shared, session: &mut Session, args: Args) -> Reply {
    let args = &args;
    timed(node, shared, args, |spec| async move {
        match spec.name {
            "ping" => match args.get(1) {
                _ if args.len() > 2 => wrong_arity("ping"),
                Some(msg) => Reply::bulk(msg.to_vec()),
                None => Reply::Status("PONG"),
            },
            "echo" => Reply::bulk(args[1].to_vec()),
            "get" => get(node, shared, &args[1]),
            "ttl" | "pttl" | "expiretime" | "pexpiretime" => expiry::ttl(node, spec.name, &args[1]),
            "exists" => exists(node, &args[1..]),
            "mget" => mget(node, shared, &args[1..]),
            "dbsize" => Reply::Int(i64::try_from(node.engine.stats().keys).unwrap_or(i64::MAX)),
            "info" => Reply::Bulk(info::info(node, shared, &args[1..]).into_bytes()),
            "command" => command(&args[1..]),
            "config" => info::config(node, shared, &args[1..]),
            "select" => match &args[1][..] {
                b"0" => Reply::ok(),
                _ => Reply::err("DB index is out of range (kvstore has only database 0)"),
            },
            "quit" => {
                session.quit = true;
                Reply::ok()
            }
            "client" => client(session, &args[1..]),
            "hello" => hello(node, session, &args[1..]),
            _ => write_command(node, spec, args).await,
        }
    })
    .await
}

/// Runs a [`batchable`] write (or any write). Records metrics.
pub async fn execute_write(node: &Node, shared: &Shared, args: &Args) -> Reply {
    timed(node, shared, args, |spec| write_command(node, spec, args)).await
}

/// Runs consecutive plain `SET`s of one pipeline (a group from
/// [`execute::put_groups`]) as one append ([`execute::write_puts`]): all
/// get the same answer. Counted and timed one by one.
pub async fn execute_sets(node: &Node, shared: &Shared, sets: &[Args]) -> Reply {
    let started = Instant::now();
    let reply = match execute::write_puts(node, sets.iter().filter_map(plain_set)).await {
        Ok(_) => Reply::ok(),
        Err(answer) => from_response(answer),
    };
    let elapsed = started.elapsed();
    let op = table::lookup(b"set").map_or(table::UNKNOWN_OP, |spec| spec.op);
    for _ in sets {
        shared.count_command();
        node.metrics.observe_request(op, outcome(&reply), elapsed);
    }
    reply
}

/// Looks the command up, checks its arity, runs `body`, counts it.
async fn timed<F, Fut>(node: &Node, shared: &Shared, args: &Args, body: F) -> Reply
where
    F: FnOnce(&'static Spec) -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    let started = Instant::now();
    let name = args.first().map(|b| &b[..]).unwrap_or(b"");
    let (op, reply) = match table::lookup(name) {
        None => (table::UNKNOWN_OP, unknown(args)),
        Some(spec) if !table::arity_ok(spec, args.len()) => (spec.op, wrong_arity(spec.name)),
        Some(spec) => (spec.op, body(spec).await),
    };
    shared.count_command();
    node.metrics
        .observe_request(op, outcome(&reply), started.elapsed());
    reply
}

fn outcome(reply: &Reply) -> Outcome {
    match reply {
        Reply::Nil => Outcome::NotFound,
        Reply::Error(e)
            if e.starts_with("ERR wrong number")
                || e.starts_with("ERR syntax")
                || e.starts_with("ERR unknown")
                || e.starts_with("ERR Protocol") =>
        {
            Outcome::BadRequest
        }
        Reply::Error(_) => Outcome::Error,
        _ => Outcome::Ok,
    }
}

fn wrong_arity(name: &str) -> Reply {
    Reply::err(format!("wrong number of arguments for '{name}' command"))
}

/// Redis's wording: the name and up to the first few arguments.
fn unknown(args: &Args) -> Reply {
    let show = |b: &Bytes| {
        let s = String::from_utf8_lossy(b);
        s.chars().take(128).collect::<String>()
    };
    let name = args.first().map(show).unwrap_or_default();
    let rest: String = args
        .iter()
        .skip(1)
        .take(8)
        .map(|a| format!("'{}' ", show(a)))
        .collect();
    Reply::err(format!(
        "unknown command '{name}', with args beginning with: {rest}"
    ))
}

fn get(node: &Node, shared: &Shared, key: &[u8]) -> Reply {
    match node.engine.get(key) {
        Ok(Some(value)) => {
            shared.count_hit(true);
            Reply::Bulk(value)
        }
        Ok(None) => {
            shared.count_hit(false);
            Reply::Nil
        }
        Err(e) => from_response(execute::engine_error(e)),
    }
}

/// MGET, bounded: its answer may be at most `--max-frame-bytes` (as large
/// as the largest request), and the values it has read are charged to the
/// client memory budget while it is built, so MGETs on many connections
/// at once cannot hold more than the budget. Past either bound the command
/// is refused (`-ERR`) and the connection goes on.
fn mget(node: &Node, shared: &Shared, keys: &[Bytes]) -> Reply {
    let max = usize::try_from(node.limits.max_frame_bytes).unwrap_or(usize::MAX);
    let mut lease = Lease::answer(&node.memory);
    let mut items = Vec::with_capacity(keys.len().min(1024));
    for key in keys {
        let item = get(node, shared, key);
        let size = item.encoded_len();
        let held = usize::try_from(lease.covered()).unwrap_or(usize::MAX);
        if held.saturating_add(size) > max {
            node.metrics.memory_refused(MemoryRefusal::MultiKey);
            return Reply::err(format!(
                "MGET answer larger than {max} bytes (--max-frame-bytes): ask for fewer keys at once"
            ));
        }
        if let Err(exhausted) = lease.add(size) {
            node.metrics.memory_refused(MemoryRefusal::MultiKey);
            return Reply::err(format!("MGET refused: {exhausted}"));
        }
        items.push(item);
    }
    Reply::Array(items)
}

fn exists(node: &Node, keys: &[Bytes]) -> Reply {
    let mut n = 0;
    for key in keys {
        match node.engine.contains(key) {
            Ok(true) => n += 1,
            Ok(false) => {}
            Err(e) => return from_response(execute::engine_error(e)),
        }
    }
    Reply::Int(n)
}

/// SET, DEL, MSET and the expiry writes.
async fn write_command(node: &Node, spec: &Spec, args: &Args) -> Reply {
    match spec.name {
        "set" if args.len() == 3 => set(node, args).await,
        "set" => expiry::set(node, args).await,
        "setex" => expiry::setex(node, args, Unit::Seconds).await,
        "psetex" => expiry::setex(node, args, Unit::Millis).await,
        "expire" | "pexpire" | "expireat" | "pexpireat" => {
            expiry::expire(node, spec.name, args).await
        }
        "persist" => expiry::persist(node, args).await,
        "del" => del(node, &args[1..]).await,
        "mset" => {
            if args.len().is_multiple_of(2) {
                return wrong_arity("mset");
            }
            let ops: Vec<WriteOp<'_>> = args[1..]
                .chunks_exact(2)
                .map(|kv| WriteOp::Put(&kv[0], &kv[1]))
                .collect();
            match execute::write(node, &ops, true).await {
                Ok(_) => Reply::ok(),
                Err(answer) => from_response(answer),
            }
        }
        other => Reply::err(format!("'{other}' is not a write")),
    }
}

/// Plain `SET key value`: a put without expiry, which clears the key's
/// expiry as Redis does (batchable: see [`batchable`]).
async fn set(node: &Node, args: &Args) -> Reply {
    match execute::write(node, &[WriteOp::Put(&args[1], &args[2])], false).await {
        Ok(_) => Reply::ok(),
        Err(answer) => from_response(answer),
    }
}

/// DEL answers how many of the (distinct) keys existed. With one key the
/// engine says so exactly; with several they are checked first and then
/// deleted in one atomic batch, so the count is exact unless another client
/// writes one of them in between.
async fn del(node: &Node, keys: &[Bytes]) -> Reply {
    if let [key] = keys {
        return match execute::write(node, &[WriteOp::Delete(key)], false).await {
            Ok(receipt) => Reply::Int(i64::from(receipt.existed)),
            Err(answer) => from_response(answer),
        };
    }
    let mut distinct: Vec<&Bytes> = keys.iter().collect();
    distinct.sort();
    distinct.dedup();
    let mut existed = 0;
    for key in &distinct {
        match node.engine.contains(key) {
            Ok(true) => existed += 1,
            Ok(false) => {}
            Err(e) => return from_response(execute::engine_error(e)),
        }
    }
    let ops: Vec<WriteOp<'_>> = distinct.iter().map(|k| WriteOp::Delete(k)).collect();
    match execute::write(node, &ops, true).await {
        Ok(_) => Reply::Int(existed),
        Err(answer) => from_response(answer),
    }
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND INFO name...`, `COMMAND LIST`,
/// `COMMAND DOCS` (empty: redis-cli falls back to its built-in help).
fn command(args: &[Bytes]) -> Reply {
    let sub = args.first().map(|s| s.to_ascii_lowercase());
    match sub.as_deref() {
        None => Reply::Array(table::COMMANDS.iter().map(table::info).collect()),
        Some(b"count") => Reply::Int(i64::try_from(table::COMMANDS.len()).unwrap_or(0)),
        Some(b"list") => Reply::Array(
            table::COMMANDS
                .iter()
                .map(|s| Reply::bulk(s.name))
                .collect(),
        ),
        Some(b"info") => Reply::Array(
            args[1..]
                .iter()
                .map(|n| table::lookup(n).map_or(Reply::Nil, table::info))
                .collect(),
        ),
        Some(b"docs") => Reply::Array(Vec::new()),
        Some(_) => Reply::err(format!(
            "unknown subcommand '{}'. Try COMMAND COUNT, DOCS, INFO or LIST.",
            String::from_utf8_lossy(&args[0])
        )),
    }
}

fn client(session: &mut Session, args: &[Bytes]) -> Reply {
    let sub = args[0].to_ascii_lowercase();
    match (&sub[..], args.len()) {
        (b"setname", 2) => {
            let name = &args[1];
            if name.iter().any(|&b| b <= b' ' || b > b'~') {
                return Reply::err("Client names cannot contain spaces, newlines or special characters.");
            }
            session.name = if name.is_empty() { None } else { Some(name.clone()) };
            Reply::ok()
        }
        (b"getname", 1) => session
            .name
            .as_ref()
            .map_or(Reply::Nil, |n| Reply::bulk(n.to_vec())),
        (b"id", 1) => Reply::Int(i64::try_from(session.id).unwrap_or(i64::MAX)),
        (b"info", 1) => Reply::Bulk(format!("{}\n", session.describe()).into_bytes()),
        (b"list", 1) => Reply::Bulk(format!("{}\n", session.describe()).into_bytes()),
        // Client libraries announce themselves; nothing to keep.
        (b"setinfo", 3) => Reply::ok(),
        _ => Reply::err(format!(
            "unknown subcommand or wrong number of arguments for '{}'. Try CLIENT SETNAME, GETNAME, ID, INFO, LIST or SETINFO.",
            String::from_utf8_lossy(&args[0])
        )),
    }
}

/// `HELLO [2 [SETNAME name]]`: RESP2 only; `HELLO 3` is refused as Redis
/// refuses an unknown version, so clients fall back to RESP2.
fn hello(node: &Node, session: &mut Session, args: &[Bytes]) -> Reply {
    if let Some(version) = args.first() {
        if &version[..] != b"2" {
            return Reply::Error(
                "NOPROTO sorry, this protocol version is not supported (kvstore speaks RESP2 only)"
                    .into(),
            );
        }
    }
    let mut rest = args.iter().skip(1);
    while let Some(opt) = rest.next() {
        match (&opt.to_ascii_lowercase()[..], rest.next()) {
            (b"setname", Some(name)) => session.name = Some(name.clone()),
            _ => return Reply::err("syntax error in HELLO option"),
        }
    }
    let role = if node.replication.is_master() {
        "master"
    } else {
        "replica"
    };
    Reply::Array(vec![
        Reply::bulk("server"),
        Reply::bulk("kvstore"),
        Reply::bulk("version"),
        Reply::bulk(info::REDIS_VERSION),
        Reply::bulk("proto"),
        Reply::Int(2),
        Reply::bulk("id"),
        Reply::Int(i64::try_from(session.id).unwrap_or(i64::MAX)),
        Reply::bulk("mode"),
        Reply::bulk("standalone"),
        Reply::bulk("role"),
        Reply::bulk(role),
        Reply::bulk("modules"),
        Reply::Array(Vec::new()),
    ])
}
