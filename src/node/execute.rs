//! Executes one command against the engine and the node's role, and
//! builds its answer.
//!
//! The commands are the binary protocol's requests; the RESP front end
//! runs its writes through [`write`] too, so both protocols share one
//! write path (a replica redirects, sync mode waits for replicas), and
//! both hand consecutive plain puts of a pipeline to the engine as one
//! append ([`put_groups`], [`write_puts`]). Engine
//! errors become ERROR responses with a code a client can act on; nothing
//! here can fail the connection.

use std::ops::Range;
use std::time::Instant;

use super::ha::{switchover, Admitted};
use super::Node;
use crate::engine;
use crate::engine::{
    Conditional, Decided, ExpireIf, KeyExpiry, WriteOp, MAX_KEY_LEN, MAX_VALUE_LEN,
};
use crate::metrics::Outcome;
use crate::protocol::{
    BatchOp, CompactionSummary, ErrorCode, ExpireCondition, Expiry, Hello, HelloOk, KeyTtl,
    NewMaster, Request, Response, Role, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use crate::replication::RoleView;

/// The metrics outcome of an answer.
pub fn outcome(response: &Response) -> Outcome {
    match response {
        Response::NotFound => Outcome::NotFound,
        Response::Error { code, .. } if code.closes_connection() => Outcome::BadRequest,
        Response::Error { code, .. }
            if matches!(
                *code,
                ErrorCode::KEY_TOO_LARGE
                    | ErrorCode::VALUE_TOO_LARGE
                    | ErrorCode::BATCH_TOO_LARGE
                    | ErrorCode::MALFORMED_REQUEST
            ) =>
        {
            Outcome::BadRequest
        }
        Response::Error { .. } => Outcome::Error,
        _ => Outcome::Ok,
    }
}

/// Runs `request` and returns its response. Records metrics.
pub async fn execute(node: &Node, request: &Request) -> Response {
    let started = Instant::now();
    let op = request.name();
    let response = run(node, request).await;
    node.metrics
        .observe_request(op, outcome(&response), started.elapsed());
    response
}

async fn run(node: &Node, request: &Request) -> Response {
    let engine = &node.engine;
    match request {
        Request::Hello(hello) => hello_answer(node, hello),
        Request::Ping => Response::Pong,
        Request::Get { key } => match engine.get(key) {
            Ok(Some(value)) => Response::Value(value.into()),
            Ok(None) => Response::NotFound,
            Err(e) => engine_error(e),
        },
        Request::Exists { key } => match engine.contains(key) {
            Ok(found) => Response::Exists(found),
            Err(e) => engine_error(e),
        },
        Request::Put { key, value } => {
            match write(node, &[WriteOp::Put(key, value)], false).await {
                Ok(_) => Response::Ok,
                Err(answer) => answer,
            }
        }
        Request::Delete { key } => match write(node, &[WriteOp::Delete(key)], false).await {
            Ok(receipt) => Response::Deleted {
                existed: receipt.existed,
            },
            Err(answer) => answer,
        },
        Request::PutExpiring { key, value, expiry } => {
            let at = match put_expiry(*expiry, engine.now_ms()) {
                Ok(at) => at,
                Err(answer) => return answer,
            };
            match write(node, &[WriteOp::PutExpiring(key, value, at)], false).await {
                Ok(_) => Response::Ok,
                Err(answer) => answer,
            }
        }
        Request::Batch(ops) => {
            let now = engine.now_ms();
            let ops: Result<Vec<WriteOp<'_>>, Response> =
                ops.iter().map(|op| to_write_op(op, now)).collect();
            let ops = match ops {
                Ok(ops) => ops,
                Err(answer) => return answer,
            };
            match write(node, &ops, true).await {
                Ok(_) => Response::Ok,
                Err(answer) => answer,
            }
        }
        Request::Expire {
            key,
            expiry,
            only_if,
        } => {
            let op = match expire_op(key, *expiry, *only_if, engine.now_ms()) {
                Ok(op) => op,
                Err(answer) => return answer,
            };
            match decide(node, &op).await {
                Ok(decided) => Response::Applied(decided.applied),
                Err(answer) => answer,
            }
        }
        Request::Persist { key } => match decide(node, &Conditional::Persist { key }).await {
            Ok(decided) => Response::Applied(decided.applied),
            Err(answer) => answer,
        },
        Request::Ttl { key } => match engine.expiry(key) {
            Ok(KeyExpiry::Absent) => Response::Ttl(KeyTtl::Absent),
            Ok(KeyExpiry::Never) => Response::Ttl(KeyTtl::Never),
            Ok(KeyExpiry::At(at)) => Response::Ttl(KeyTtl::Expires {
                at,
                left_ms: at.saturating_sub(engine.now_ms()),
            }),
            Err(e) => engine_error(e),
        },
        Request::Switchover { to } => switch_over(node, to.clone()).await,
        Request::Promote | Request::Replicate { .. } if node.ha.is_some() => manual_refused(node),
        Request::Promote => match node.replication.promote().await {
            Ok(epoch) => {
                tracing::info!(epoch, "promoted to master by request");
                Response::Ok
            }
            Err(e) => engine_error(e),
        },
        Request::Replicate { master } => {
            if master.trim().is_empty() || !master.contains(':') {
                return Response::error(
                    ErrorCode::MALFORMED_REQUEST,
                    format!("master address {master:?} is not host:port"),
                );
            }
            node.replication.replicate(master.clone()).await;
            Response::Ok
        }
        // The binary codec hands a REPL_SYNC or BACKUP sent alone over to
        // its stream; reaching here means it was pipelined behind other
        // requests, whose answers the stream would have to interleave.
        Request::ReplSync(_) => Response::error(
            ErrorCode::MALFORMED_REQUEST,
            "REPL_SYNC must be sent alone, once every earlier request is answered, as the last request on its connection",
        ),
        Request::Backup => Response::error(
            ErrorCode::MALFORMED_REQUEST,
            "BACKUP must be sent alone, once every earlier request is answered, as the last request on its connection",
        ),
        Request::Compact => {
            let engine = engine.clone();
            match tokio::task::spawn_blocking(move || engine.compact()).await {
                Ok(Ok(report)) => Response::Compacted(CompactionSummary {
                    horizon: report.horizon,
                    bytes_before: report.bytes_before,
                    bytes_after: report.bytes_after,
                    keys_kept: report.keys_kept,
                }),
                Ok(Err(e)) => engine_error(e),
                Err(join) => Response::error(
                    ErrorCode::INTERNAL,
                    format!("compaction task failed: {join}"),
                ),
            }
        }
        Request::ClusterStatus => {
            Response::ClusterStatus(super::ha::cluster_status(node).await.to_json())
        }
        Request::Stats => match stats_json(node) {
            Ok(json) => Response::Stats(json),
            Err(e) => Response::error(ErrorCode::INTERNAL, format!("cannot encode stats: {e}")),
        },
    }
}

fn hello_answer(node: &Node, hello: &Hello) -> Response {
    if hello.version < MIN_PROTOCOL_VERSION {
        return Response::error(
            ErrorCode::UNSUPPORTED_VERSION,
            format!(
                "protocol version {} is not supported; this server speaks {}..={}",
                hello.version, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION
            ),
        );
    }
    // The credential was checked before this runs (the binary codec's auth gate);
    // without authentication it is ignored.
    Response::HelloOk(HelloOk {
        version: hello.version.min(PROTOCOL_VERSION),
        role: if node.replication.is_master() {
            Role::Master
        } else {
            Role::Replica
        },
        limits: node.limits.protocol(),
        server: format!("kvstore {}", env!("CARGO_PKG_VERSION")),
    })
}

/// A batch operation as the engine takes it; a put with expiry is
/// checked as PUT_EXPIRING is, relative times counted from `now`.
fn to_write_op(op: &BatchOp, now: u64) -> Result<WriteOp<'_>, Response> {
    Ok(match op {
        BatchOp::Put { key, value } => WriteOp::Put(key, value),
        BatchOp::Delete { key } => WriteOp::Delete(key),
        BatchOp::PutExpiring { key, value, expiry } => {
            WriteOp::PutExpiring(key, value, put_expiry(*expiry, now)?)
        }
    })
}

/// The absolute expiry of a put (ms since the Unix epoch). As Redis's
/// `SET ... PX 0`, a relative expiry of 0 is refused; an absolute one
/// already past is a put that leaves the key absent.
fn put_expiry(expiry: Expiry, now: u64) -> Result<u64, Response> {
    if expiry == Expiry::In(0) {
        return Err(Response::error(
            ErrorCode::MALFORMED_REQUEST,
            "a relative expiry must be at least 1 ms (to remove a key, DELETE it)",
        ));
    }
    absolute(expiry, now)
}

fn absolute(expiry: Expiry, now: u64) -> Result<u64, Response> {
    expiry.at(now).ok_or_else(|| {
        Response::error(
            ErrorCode::MALFORMED_REQUEST,
            format!(
                "expiry {expiry:?} is past the latest accepted, {} ms since the Unix epoch",
                crate::protocol::expiry::MAX_EXPIRY_MS
            ),
        )
    })
}

/// EXPIRE as the engine decides it, or why it is refused.
fn expire_op(
    key: &[u8],
    expiry: Expiry,
    only_if: ExpireCondition,
    now: u64,
) -> Result<Conditional<'_>, Response> {
    if let Some(why) = only_if.conflict() {
        return Err(Response::error(ErrorCode::MALFORMED_REQUEST, why));
    }
    Ok(Conditional::Expire {
        key,
        at: absolute(expiry, now)?,
        only_if: ExpireIf {
            no_expiry: only_if.no_expiry,
            has_expiry: only_if.has_expiry,
            later: only_if.later,
            sooner: only_if.sooner,
        },
    })
}

/// PROMOTE and REPLICATE with a coordinator: refused, since a role set by
/// hand would bypass the elected term and its epoch (docs/FAILOVER.md).
fn manual_refused(node: &Node) -> Response {
    let backend = node
        .ha
        .as_ref()
        .map_or("a coordinator", |ha| ha.backend().name());
    Response::error(
        ErrorCode::MALFORMED_REQUEST,
        format!(
            "roles are elected by the coordinator ({backend}): PROMOTE and REPLICATE are refused. \
             To move the master, run `kvstore switchover [--to NODE_ID]` (or stop it: at SIGTERM \
             it hands over to a caught-up replica); to take a node out, stop it"
        ),
    )
}

/// SWITCHOVER: the master hands its seat to a caught-up replica and
/// answers with the master elected next; a replica answers REDIRECT to
/// the master it knows, which the client follows.
async fn switch_over(node: &Node, to: Option<String>) -> Response {
    let Some(ha) = &node.ha else {
        return Response::error(
            ErrorCode::SWITCHOVER_FAILED,
            "this node runs without a coordinator (--coordinator none), so roles are set by hand: \
             move the master with `kvstore failover --nodes ...` or `kvstore promote` instead",
        );
    };
    if !node.replication.is_master() || !ha.may_write() {
        return match ha.refusal() {
            Response::Error { message, .. } => {
                Response::error(ErrorCode::SWITCHOVER_FAILED, message)
            }
            redirect => redirect,
        };
    }
    let failed = |e: switchover::SwitchoverError| {
        Response::error(ErrorCode::SWITCHOVER_FAILED, format!("switchover: {e}"))
    };
    let named = match switchover::hand_over(ha, to, false).await {
        Ok(named) => named,
        Err(e) => return failed(e),
    };
    match switchover::new_master(ha, &named).await {
        Ok(holder) => Response::Switchover(NewMaster {
            node_id: holder.node_id,
            addr: holder.addr,
            epoch: holder.epoch,
        }),
        Err(e) => failed(e),
    }
}

/// A write as the node's role allows it: a replica redirects it to its
/// master; in sync mode the master refuses it up front when too few
/// replicas are connected (or in the in-sync set), and acknowledges it
/// only once enough hold it (with a coordinator: every member of the
/// published in-sync set). With a coordinator the master checks its
/// term's fence before appending and again before the OK: past the
/// deadline a new write is refused (REDIRECT or READ_ONLY) and an
/// appended one answers FATE_UNKNOWN. A planned switchover pauses new
/// writes the same way; the ones admitted before it keep their normal
/// answer.
pub async fn write(
    node: &Node,
    ops: &[WriteOp<'_>],
    atomic: bool,
) -> Result<engine::Receipt, Response> {
    let admitted = may_append(node)?;
    let receipt = node
        .engine
        .write_async(ops, atomic)
        .await
        .map_err(engine_error)?;
    drop(admitted);
    acknowledge(node, receipt.end).await?;
    Ok(receipt)
}

/// A write decided from the key's current state inside the engine's
/// single writer (`SET NX`, `EXPIRE GT`, `PERSIST`, ...), under the same
/// rules as [`write`].
pub async fn decide(node: &Node, op: &Conditional<'_>) -> Result<Decided, Response> {
    let admitted = may_append(node)?;
    let decided = node.engine.decide_async(op).await.map_err(engine_error)?;
    drop(admitted);
    acknowledge(node, decided.end).await?;
    Ok(decided)
}

/// Most key and value bytes one group of pipelined puts carries into the
/// engine ([`put_groups`]): enough to share the writer's lock among many
/// small writes, small enough that a group never nears the engine's
/// largest append.
pub const PUT_GROUP_BYTES: usize = 1 << 20;

/// Splits a run of pipelined writes, in order, into the stretches appended
/// together. `put` gives the key and value of a plain put (no expiry, no
/// condition); consecutive ones whose key and value the engine takes, up
/// to [`PUT_GROUP_BYTES`] a stretch, go to the engine as one append
/// ([`write_puts`]). Every other write is a stretch of its own, and so is
/// a put the engine refuses, which gets its own answer.
pub fn put_groups<'a, T>(
    writes: &'a [T],
    put: impl Fn(&'a T) -> Option<(&'a [u8], &'a [u8])>,
) -> Vec<Range<usize>> {
    let mut groups = Vec::new();
    // The start and the bytes of the stretch of puts being gathered.
    let mut open: Option<(usize, usize)> = None;
    for (i, write) in writes.iter().enumerate() {
        let size = put(write)
            .filter(|(key, value)| key.len() <= MAX_KEY_LEN && value.len() <= MAX_VALUE_LEN)
            .map(|(key, value)| key.len() + value.len());
        match (size, &mut open) {
            (Some(size), Some((_, bytes))) if *bytes + size <= PUT_GROUP_BYTES => *bytes += size,
            (size, _) => {
                if let Some((start, _)) = open.take() {
                    groups.push(start..i);
                }
                match size {
                    Some(size) => open = Some((i, size)),
                    None => groups.push(i..i + 1),
                }
            }
        }
    }
    if let Some((start, _)) = open {
        groups.push(start..writes.len());
    }
    groups
}

/// The answers of a run split by [`put_groups`], in request order: a
/// group's one answer for each of its writes.
pub fn spread<A: Clone>(groups: &[Range<usize>], answers: Vec<A>) -> Vec<A> {
    let mut spread = Vec::with_capacity(groups.last().map_or(0, |g| g.end));
    for (group, answer) in groups.iter().zip(answers) {
        spread.extend(std::iter::repeat_n(answer, group.len()));
    }
    spread
}

/// Appends a group of pipelined puts from [`put_groups`] as one, under
/// the rules of [`write`]: one pass through the engine's single writer and
/// one wait for durability (and, in sync mode, for the replicas) for all
/// of them. Each is still a record of its own, in request order, as if
/// appended one by one; all get the same answer (the refusal each would
/// have got: a replica's redirect, a poisoned log, a lost lease).
pub async fn write_puts<'a>(
    node: &Node,
    puts: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<engine::Receipt, Response> {
    let ops: Vec<WriteOp<'_>> = puts.map(|(key, value)| WriteOp::Put(key, value)).collect();
    write(node, &ops, false).await
}

/// Whether this node may append a client write now: it is the master,
/// within its term's fence, not pausing for a switchover, and (sync mode)
/// has the replicas to acknowledge it. With a coordinator the write holds
/// its admission until its append returned.
fn may_append(node: &Node) -> Result<Option<Admitted<'_>>, Response> {
    let repl = &node.replication;
    // A master (the common case) reads its role without copying it.
    if !repl.is_master() {
        if let RoleView::Replica { master } = repl.role() {
            if master.is_empty() {
                return Err(super::ha::not_the_master());
            }
            return Err(Response::Redirect { master });
        }
    }
    let admitted = match &node.ha {
        Some(ha) => Some(ha.admit().ok_or_else(|| ha.refusal())?),
        None => None,
    };
    repl.check_sync_ready()
        .map_err(|message| Response::error(ErrorCode::NOT_ENOUGH_REPLICAS, message))?;
    Ok(admitted)
}

/// Whether a write appended up to `end` may be answered OK: sync mode
/// waits for its replicas, then the term's fence is checked again.
async fn acknowledge(node: &Node, end: u64) -> Result<(), Response> {
    node.replication
        .wait_replicated(end)
        .await
        .map_err(|message| Response::error(ErrorCode::FATE_UNKNOWN, message))?;
    if let Some(ha) = &node.ha {
        if !ha.may_write() {
            return Err(Response::error(
                ErrorCode::FATE_UNKNOWN,
                "this node's leadership term ended before the write was acknowledged: it is in this node's log and may or may not be on the new master",
            ));
        }
    }
    Ok(())
}

/// The STATS document: the engine's figures, plus `role` and a
/// `replication` section.
fn stats_json(node: &Node) -> Result<String, serde_json::Error> {
    let mut doc = serde_json::to_value(node.engine.stats())?;
    let replication = node.replication.stats();
    if let serde_json::Value::Object(map) = &mut doc {
        map.insert("role".into(), replication.role.into());
        map.insert("replication".into(), serde_json::to_value(replication)?);
        let coordinator = node.ha.as_ref().map_or("none", |ha| ha.backend().name());
        map.insert("coordinator".into(), coordinator.into());
    }
    serde_json::to_string(&doc)
}

/// Maps an engine error to the code a client can act on. The message is
/// the engine's own one-line description.
pub fn engine_error(e: engine::Error) -> Response {
    let code = match &e {
        engine::Error::KeyTooLarge { .. } => ErrorCode::KEY_TOO_LARGE,
        engine::Error::ValueTooLarge { .. } => ErrorCode::VALUE_TOO_LARGE,
        engine::Error::BatchTooLarge { .. } => ErrorCode::BATCH_TOO_LARGE,
        engine::Error::Poisoned { .. } => ErrorCode::POISONED,
        engine::Error::Closed => ErrorCode::SHUTTING_DOWN,
        _ => ErrorCode::STORAGE,
    };
    Response::error(code, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write of the test run: a plain put of `key` and `value`, or
    /// anything else.
    enum W {
        Put(Vec<u8>, Vec<u8>),
        Other,
    }

    fn put_of(w: &W) -> Option<(&[u8], &[u8])> {
        match w {
            W::Put(key, value) => Some((key, value)),
            W::Other => None,
        }
    }

    fn put(key_len: usize, value_len: usize) -> W {
        W::Put(vec![b'k'; key_len], vec![b'v'; value_len])
    }

    #[test]
    fn puts_in_a_row_are_grouped_and_every_other_write_runs_alone() {
        let run = vec![
            put(1, 1),
            put(1, 1),
            W::Other,
            put(1, 1),
            put(MAX_KEY_LEN + 1, 1),
            put(1, 1),
            put(1, 1),
            put(1, 1),
            W::Other,
            W::Other,
        ];
        assert_eq!(
            put_groups(&run, put_of),
            vec![0..2, 2..3, 3..4, 4..5, 5..8, 8..9, 9..10]
        );
        assert!(put_groups(&[], put_of).is_empty());
        let answers = spread(&put_groups(&run, put_of), (0..7).collect());
        assert_eq!(answers, vec![0, 0, 1, 2, 3, 4, 4, 4, 5, 6]);
    }

    #[test]
    fn a_group_of_puts_ends_at_its_byte_limit() {
        // Each put carries a quarter of the limit.
        let run: Vec<W> = (0..9).map(|_| put(1, PUT_GROUP_BYTES / 4 - 1)).collect();
        assert_eq!(put_groups(&run, put_of), vec![0..4, 4..8, 8..9]);
        let run = vec![put(1, PUT_GROUP_BYTES * 2), put(1, 1), put(1, 1)];
        assert_eq!(put_groups(&run, put_of), vec![0..1, 1..3]);
    }
}
