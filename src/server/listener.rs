//! The accept loop: one task per client connection, at most
//! `--max-connections` at once, and the drain at shutdown.
//!
//! Over the limit a connection is handed to
//! [`connection::reject_connection`] (a short error, then close) in a task
//! of its own with a one-second bound; at most [`MAX_REJECTING`] of those
//! run at once and beyond that the socket is simply closed, so a flood of
//! connections costs the server a bounded amount of work and never delays
//! the clients it is serving.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::metrics::AuthFailure;
use crate::security::tls::{self, Accepted};
use crate::server::{connection, ServerContext};

/// Rejections in progress at once; more are closed without a word.
const MAX_REJECTING: usize = 64;
/// Time a rejection may take to write its error.
const REJECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after an accept error such as EMFILE, so the loop does not spin
/// while file descriptors are exhausted.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections until `stop` resolves; returns the running
/// connection tasks for [`drain`].
pub(super) async fn accept_until(
    listener: TcpListener,
    ctx: Arc<ServerContext>,
    stop: &mut Pin<&mut impl Future<Output = ()>>,
) -> JoinSet<()> {
    let slots = Arc::new(Semaphore::new(ctx.limits.max_connections));
    let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
    let mut tasks = JoinSet::new();
    loop {
        // Reap finished tasks so the set stays the size of the live ones.
        while tasks.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = stop.as_mut() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Per-connection errors (ECONNABORTED) and resource
                // exhaustion (EMFILE, ENFILE) alike: the listener itself is
                // fine, so log, back off briefly and keep accepting.
                warn!("accept failed: {e}");
                tokio::select! {
                    _ = stop.as_mut() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!(%peer, "set_nodelay failed: {e}");
        }
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => {
                let ctx = Arc::clone(&ctx);
                ctx.metrics.connection_opened();
                tasks.spawn(async move {
                    let refusal = connection::tls_required_frame();
                    let acceptor = ctx.security.acceptor();
                    let bound = ctx.limits.frame_timeout;
                    match tls::accept(stream, acceptor, bound, refusal).await {
                        Accepted::Stream(stream) => {
                            connection::serve_connection(stream, Arc::clone(&ctx)).await;
                        }
                        Accepted::Refused(why) => {
                            ctx.metrics.auth_failure(AuthFailure::Tls);
                            warn!(%peer, "connection refused: {why}");
                        }
                    }
                    ctx.metrics.connection_closed();
                    drop(permit);
                });
            }
            Err(_) => {
                ctx.metrics.connection_rejected();
                debug!(%peer, "refused: max connections ({}) reached", ctx.limits.max_connections);
                if let Ok(permit) = Arc::clone(&rejecting).try_acquire_owned() {
                    let ctx = Arc::clone(&ctx);
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(
                            REJECT_TIMEOUT,
                            connection::reject_connection(stream, ctx),
                        )
                        .await;
                        drop(permit);
                    });
                }
            }
        }
    }
    drop(listener);
    while tasks.try_join_next().is_some() {}
    info!(open = tasks.len(), "stopped accepting connections");
    tasks
}

/// Waits up to `bound` for connection tasks to finish their request in
/// flight, then aborts what is left.
pub(super) async fn drain(mut tasks: JoinSet<()>, bound: Duration) {
    let all_done = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(bound, all_done).await.is_err() {
        warn!(
            left = tasks.len(),
            "connections still open after {bound:?}; closing them"
        );
        tasks.shutdown().await;
    }
}

/// Raises the soft open-files limit to the hard limit, as Go and nginx do,
/// and warns when `max_connections` cannot fit under it.
pub(super) fn raise_fd_limit(max_connections: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            debug!("cannot raise the open-files limit: {e}");
        }
    }
    let soft = getrlimit(Resource::Nofile).current;
    // Segments, listeners, replication and logs need descriptors too.
    let needed = (max_connections as u64).saturating_add(256);
    if let Some(soft) = soft {
        if soft < needed {
            warn!(
                "open-files limit is {soft}, below --max-connections ({max_connections}) + 256; \
                 connections beyond it will fail to be accepted"
            );
        }
    }
}
