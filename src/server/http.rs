//! The HTTP port (default 9555): `/healthz`, `/readyz` and `/metrics`.
//!
//! `/healthz` (liveness) answers 200 while [`Health::liveness`] holds:
//! the process serves and can recover on its own; 503 with the reason only
//! when its engine refuses writes until a restart. `/readyz` answers 200
//! only when [`Health::readiness`] holds (the engine open and taking
//! writes, a replica following its master, not shutting down), else 503
//! with the reason. [`follow_engine`] keeps both up to date with the
//! engine. `/metrics` is the Prometheus text format (0.0.4).
//! Served on its own listener, so a flood on the client port does not
//! hide the node's health: axum's router, on hyper's HTTP/1 connections
//! driven here (axum's `serve` cannot bound them). At most
//! `--http-max-connections` at once: a new connection closes the oldest
//! (counted in `kvstore_http_connections_evicted_total`), so a flood of
//! idle connections cannot keep a probe out. A request's headers must
//! arrive within `--http-header-timeout-secs` of the connection's start
//! or of the previous answer, so an idle or trickling connection is
//! closed.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::engine::Engine;
use crate::lifecycle::{EngineWrites, Health};
use crate::metrics::Metrics;

/// What the HTTP handlers read.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

/// Bounds on the HTTP port's connections.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// Pause after an accept error (EMFILE), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `stop` resolves; then the open
/// connections finish their request in progress and close.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let (closing, closed) = tokio::sync::watch::channel(false);
    // Oldest first.
    let mut open: VecDeque<JoinHandle<()>> = VecDeque::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    warn!("HTTP accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        open.retain(|task| !task.is_finished());
        while open.len() >= limits.max_connections {
            let Some(oldest) = open.pop_front() else {
                break;
            };
            // HTTP answers are small and stateless: cutting one costs the
            // client a retry, nothing else.
            oldest.abort();
            metrics.http_connection_evicted();
        }
        let service = TowerToHyperService::new(router.clone());
        let mut closed = closed.clone();
        open.push_back(tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = closed.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                debug!(%peer, "HTTP connection ended: {e}");
            }
        }));
    }
    drop(listener);
    let _ = closing.send(true);
    for task in open {
        let _ = task.await;
    }
}

/// The router for the HTTP port.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz(State(state): State<HttpState>) -> Response {
    match state.health.liveness() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ok: {why}\n")).into_response(),
    }
}

async fn readyz(State(state): State<HttpState>) -> Response {
    match state.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

/// How often [`follow_engine`] looks at the engine: one atomic read.
const ENGINE_EVERY: Duration = Duration::from_millis(100);

/// Keeps `health` saying whether `engine` takes writes, until aborted.
pub async fn follow_engine(engine: Engine, health: Arc<Health>) {
    let progress = engine.subscribe();
    let mut every = tokio::time::interval(ENGINE_EVERY);
    let mut shown = EngineWrites::Taken;
    loop {
        every.tick().await;
        // The writer lock only while poisoned.
        let now = if progress.borrow().poisoned {
            match engine.poison() {
                Some(p) if !p.recovers => EngineWrites::RefusedUntilRestart,
                Some(_) => EngineWrites::RefusedForNow,
                None => EngineWrites::Taken,
            }
        } else {
            EngineWrites::Taken
        };
        if now != shown {
            health.set_engine_writes(now);
            shown = now;
        }
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    match state.metrics.encode() {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n",
        )
            .into_response(),
    }
}
