//! Executes one decoded request against the engine and builds its answer.
//!
//! Engine errors become ERROR responses with a code a client can act on;
//! nothing here can fail the connection.

use std::time::Instant;

use super::ServerContext;
use crate::config;
use crate::engine;
use crate::metrics::Outcome;
use crate::protocol::{
    self, BatchOp, CompactionSummary, ErrorCode, Hello, HelloOk, Request, Response, Role,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};

/// The wire limits a server enforces: the configured frame limit, the
/// engine's key and value limits, the default batch limit.
pub fn protocol_limits(limits: &config::Limits) -> protocol::Limits {
    protocol::Limits {
        max_frame_bytes: limits.max_frame_bytes,
        ..protocol::Limits::default()
    }
}

/// The metrics outcome of an answer.
pub fn outcome(response: &Response) -> Outcome {
    match response {
        Response::NotFound => Outcome::NotFound,
        Response::Error { code, .. } if code.closes_connection() => Outcome::BadRequest,
        Response::Error { code, .. }
            if matches!(
                *code,
                ErrorCode::KEY_TOO_LARGE | ErrorCode::VALUE_TOO_LARGE | ErrorCode::BATCH_TOO_LARGE
            ) =>
        {
            Outcome::BadRequest
        }
        Response::Error { .. } => Outcome::Error,
        _ => Outcome::Ok,
    }
}

/// Runs `request` and returns its response. Records metrics.
pub async fn execute(ctx: &ServerContext, request: Request) -> Response {
    let started = Instant::now();
    let op = request.name();
    let response = run(ctx, request).await;
    ctx.metrics
        .observe_request(op, outcome(&response), started.elapsed());
    response
}

async fn run(ctx: &ServerContext, request: Request) -> Response {
    let engine = &ctx.engine;
    match request {
        Request::Hello(hello) => hello_answer(ctx, &hello),
        Request::Ping => Response::Pong,
        Request::Get { key } => match engine.get(&key) {
            Ok(Some(value)) => Response::Value(value.into()),
            Ok(None) => Response::NotFound,
            Err(e) => engine_error(e),
        },
        Request::Exists { key } => match engine.contains(&key) {
            Ok(found) => Response::Exists(found),
            Err(e) => engine_error(e),
        },
        Request::Put { key, value } => match engine.put_async(&key, &value).await {
            Ok(()) => Response::Ok,
            Err(e) => engine_error(e),
        },
        Request::Delete { key } => match engine.delete_async(&key).await {
            Ok(existed) => Response::Deleted { existed },
            Err(e) => engine_error(e),
        },
        Request::Batch(ops) => {
            let ops: Vec<engine::BatchOp> = ops.into_iter().map(to_engine_op).collect();
            match engine.write_batch_async(&ops).await {
                Ok(()) => Response::Ok,
                Err(e) => engine_error(e),
            }
        }
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
        Request::Stats => match serde_json::to_string(&engine.stats()) {
            Ok(json) => Response::Stats(json),
            Err(e) => Response::error(ErrorCode::INTERNAL, format!("cannot encode stats: {e}")),
        },
    }
}

fn hello_answer(ctx: &ServerContext, hello: &Hello) -> Response {
    if hello.version < MIN_PROTOCOL_VERSION {
        return Response::error(
            ErrorCode::UNSUPPORTED_VERSION,
            format!(
                "protocol version {} is not supported; this server speaks {}..={}",
                hello.version, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION
            ),
        );
    }
    // Authentication is not implemented yet: a credential is accepted and
    // ignored, so clients can already send one.
    Response::HelloOk(HelloOk {
        version: hello.version.min(PROTOCOL_VERSION),
        role: match ctx.role {
            config::Role::Master => Role::Master,
            config::Role::Replica { .. } => Role::Replica,
        },
        limits: protocol_limits(&ctx.limits),
        server: format!("kvstore {}", env!("CARGO_PKG_VERSION")),
    })
}

fn to_engine_op(op: BatchOp) -> engine::BatchOp {
    match op {
        BatchOp::Put { key, value } => engine::BatchOp::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        },
        BatchOp::Delete { key } => engine::BatchOp::Delete { key: key.to_vec() },
    }
}

/// Maps an engine error to the code a client can act on. The message is
/// the engine's own one-line description.
fn engine_error(e: engine::Error) -> Response {
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
