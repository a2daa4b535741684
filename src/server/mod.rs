//! A running node: listeners, the engine, and the order in which they start
//! and stop.
//!
//! Start: bind the client and HTTP listeners (a port in use fails here,
//! before anything is opened), write the port file, serve HTTP (`/healthz`
//! is live from now on), open the engine, mark ready, accept clients.
//!
//! Stop (SIGTERM, SIGINT or [`ShutdownTrigger`]): `/readyz` turns 503, the
//! accept loop stops, connections answer their request in flight and close
//! within `--shutdown-timeout-secs` (stragglers are aborted), then the
//! engine is flushed and closed and [`run`] returns `Ok`, so the process
//! exits 0.

pub mod connection;
pub mod dispatch;
pub mod health;
pub mod http;
mod listener;
pub mod port_file;
mod reseed;
pub mod shutdown;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{info, warn};

pub use crate::config::Limits;
use crate::config::{Config, DurabilityPolicy, ReplicationMode, Role};
use crate::engine::{self, Durability, Engine, Options};
use crate::metrics::Metrics;
use crate::replication::{self, Replication, RoleView};
use crate::security::{Security, SecurityError};
use health::Health;
pub use shutdown::{Shutdown, ShutdownTrigger};

/// Everything a connection task needs, shared behind an `Arc`.
pub struct ServerContext {
    pub engine: Engine,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub shutdown: Shutdown,
    pub health: Arc<Health>,
    pub replication: Arc<Replication>,
    /// Tokens and TLS, reloaded on SIGHUP.
    pub security: Arc<Security>,
}

/// Why a node could not start or stop cleanly. Each message names what
/// failed and where.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} ({setting}): {source}")]
    Bind {
        setting: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write --port-file {path}: {source}")]
    PortFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create --data-dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the engine in {path}: {source}")]
    Open {
        path: PathBuf,
        source: engine::Error,
    },
    #[error("cannot flush the engine on shutdown: {0}")]
    Close(engine::Error),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Replication settings for `config`; `client_addr` is the bound client
/// address, announced when no `--advertise-addr` is set.
pub fn replication_settings(config: &Config, client_addr: SocketAddr) -> replication::Settings {
    let advertise = config
        .advertise_addr
        .clone()
        .unwrap_or_else(|| client_addr.to_string());
    replication::Settings {
        mode: match config.replication_mode {
            ReplicationMode::Async => replication::Mode::Async,
            ReplicationMode::Sync => replication::Mode::Sync,
        },
        min_acks: config.min_acks,
        sync_timeout: config.sync_timeout,
        retention_bytes: config.replication_retention_bytes,
        max_ready_lag_bytes: config.replica_max_lag_bytes,
        replica_id: advertise.clone(),
        advertise,
        ..replication::Settings::default()
    }
}

/// Engine options for `config`.
pub fn engine_options(config: &Config) -> Options {
    Options {
        durability: match config.durability {
            DurabilityPolicy::Always => Durability::Always,
            DurabilityPolicy::Interval => Durability::Interval(config.fsync_interval),
            DurabilityPolicy::Never => Durability::Never,
        },
        segment_max_bytes: config.segment_max_bytes,
        ..Options::default()
    }
}

/// Runs a node until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run_until_signal(config: Config) -> Result<(), ServerError> {
    // Install the handlers before anything is bound: a signal that arrives
    // as soon as the port file exists must take the graceful path, not the
    // default action (death by SIGTERM).
    let signals = termination_signals();
    run(config, signals).await
}

/// Installs SIGTERM and SIGINT handlers now; the returned future resolves
/// on the first of them. If the handlers cannot be installed the node
/// keeps running (and says so): killing it still works.
fn termination_signals() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let installed = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        match installed {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => info!("SIGTERM received, shutting down"),
                    _ = int.recv() => info!("SIGINT received, shutting down"),
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                warn!("cannot install signal handlers ({e}); graceful shutdown is unavailable");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Re-reads token files and certificates on every SIGHUP. A reload that
/// fails keeps what was loaded before and says why.
fn reload_on_sighup(security: Arc<Security>) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let installed = signal(SignalKind::hangup());
    tokio::spawn(async move {
        let mut hup = match installed {
            Ok(hup) => hup,
            Err(e) => {
                warn!("cannot install the SIGHUP handler ({e}); tokens and certificates load only at start");
                return;
            }
        };
        while hup.recv().await.is_some() {
            match security.reload() {
                Ok(tokens) => info!(
                    tokens,
                    tls = security.tls_enabled(),
                    "SIGHUP: reloaded tokens and certificates"
                ),
                Err(e) => warn!(
                    "SIGHUP: reload failed, keeping the previous tokens and certificates: {e}"
                ),
            }
        }
    })
}

/// Runs a node until `stop` resolves, then shuts down gracefully.
pub async fn run(config: Config, stop: impl Future<Output = ()>) -> Result<(), ServerError> {
    let master_addr = match &config.role {
        Role::Master => None,
        Role::Replica { master_addr } => Some(master_addr.clone()),
    };

    let security = Arc::new(Security::load(config.tokens.clone(), config.tls.clone())?);
    let reloader = reload_on_sighup(Arc::clone(&security));

    let client = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            setting: "--listen",
            addr: config.listen,
            source,
        })?;
    let http = TcpListener::bind(config.http_listen)
        .await
        .map_err(|source| ServerError::Bind {
            setting: "--http-listen",
            addr: config.http_listen,
            source,
        })?;
    let local = |l: &TcpListener, setting, addr| {
        l.local_addr().map_err(|source| ServerError::Bind {
            setting,
            addr,
            source,
        })
    };
    let client_addr = local(&client, "--listen", config.listen)?;
    let http_addr = local(&http, "--http-listen", config.http_listen)?;
    let resp = match config.resp_listen {
        None => None,
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind {
                    setting: "--resp-listen",
                    addr,
                    source,
                })?;
            let bound = local(&l, "--resp-listen", addr)?;
            Some((l, bound))
        }
    };
    if let Some(path) = &config.port_file {
        let resp_addr = resp.as_ref().map(|(_, a)| *a);
        port_file::write_with_resp(path, client_addr, http_addr, resp_addr).map_err(|source| {
            ServerError::PortFile {
                path: path.clone(),
                source,
            }
        })?;
    }

    match &master_addr {
        None => {
            info!(listen = %client_addr, http = %http_addr, data_dir = %config.data_dir.display(), "Starting as MASTER")
        }
        Some(m) => {
            info!(listen = %client_addr, http = %http_addr, data_dir = %config.data_dir.display(), "Starting as REPLICA of {m}")
        }
    }
    listener::raise_fd_limit(config.limits.max_connections);

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let (trigger, shutdown) = shutdown::channel();
    let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let router = http::router(http::HttpState {
        metrics: Arc::clone(&metrics),
        health: Arc::clone(&health),
    });
    let http_task = tokio::spawn(async move {
        let serve = axum::serve(http, router).with_graceful_shutdown(async {
            let _ = http_stop_rx.await;
        });
        if let Err(e) = serve.await {
            warn!("HTTP server stopped: {e}");
        }
    });

    let listeners = Listeners { client, resp };
    let result = serve_clients(
        &config, listeners, &security, &metrics, &health, trigger, shutdown, stop,
    )
    .await;
    reloader.abort();
    let _ = http_stop_tx.send(());
    // The HTTP server has no long requests; a bounded wait keeps a stuck
    // scrape from holding the exit.
    if tokio::time::timeout(std::time::Duration::from_secs(2), http_task)
        .await
        .is_err()
    {
        warn!("HTTP server did not stop within 2s");
    }
    result
}

/// The bound client listeners: binary, and RESP when enabled.
struct Listeners {
    client: TcpListener,
    resp: Option<(TcpListener, SocketAddr)>,
}

/// Opens the engine, accepts clients until `stop`, drains, closes the engine.
#[allow(clippy::too_many_arguments)]
async fn serve_clients(
    config: &Config,
    listeners: Listeners,
    security: &Arc<Security>,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
    trigger: ShutdownTrigger,
    shutdown: Shutdown,
    stop: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    tokio::pin!(stop);
    let Listeners { client, resp } = listeners;
    let client_addr = client.local_addr().unwrap_or(config.listen);
    let dir = config.data_dir.clone();
    let options = engine_options(config);
    let reseed = matches!(config.role, Role::Replica { .. });
    let open = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).map_err(|source| ServerError::DataDir {
            path: dir.clone(),
            source,
        })?;
        reseed::open(&dir, options, reseed)
            .map_err(|source| ServerError::Open { path: dir, source })
    });
    // A signal while the engine opens still stops the node cleanly.
    let engine = tokio::select! {
        opened = open => opened.map_err(|e| ServerError::Internal(e.to_string()))??,
        _ = &mut stop => {
            info!("stopped before the engine finished opening");
            return Ok(());
        }
    };
    metrics.attach_engine(engine.clone());
    if let Some(last) = crate::backup::LastBackup::load_or_warn(&config.data_dir) {
        metrics.backup_succeeded(last.unix_ms);
    }

    let role = match &config.role {
        Role::Master => RoleView::Master,
        Role::Replica { master_addr } => RoleView::Replica {
            master: master_addr.clone(),
        },
    };
    let settings = replication::Settings {
        security: Arc::clone(security),
        ..replication_settings(config, client_addr)
    };
    let replication = Replication::start(engine.clone(), settings, Arc::clone(health), role)
        .await
        .map_err(|source| ServerError::Open {
            path: config.data_dir.clone(),
            source,
        })?;
    metrics.attach_replication(Arc::clone(&replication));
    // Ready only once everything /metrics and clients rely on is in place.
    health.set_engine_open();
    info!(data_dir = %config.data_dir.display(), "engine open, ready");
    let ctx = Arc::new(ServerContext {
        engine: engine.clone(),
        metrics: Arc::clone(metrics),
        limits: config.limits,
        shutdown: shutdown.clone(),
        health: Arc::clone(health),
        replication: Arc::clone(&replication),
        security: Arc::clone(security),
    });
    // RESP clients are served until the shutdown trigger, then drained
    // (bounded by --shutdown-timeout-secs) alongside binary ones.
    let resp_task = resp.map(|(l, addr)| {
        let settings = crate::resp::Settings {
            addr,
            durability: match config.durability {
                DurabilityPolicy::Always => "always",
                DurabilityPolicy::Interval => "interval",
                DurabilityPolicy::Never => "never",
            },
            limits: crate::resp::parse::Limits {
                max_request: config.limits.max_frame_bytes as usize,
                ..crate::resp::parse::Limits::default()
            },
            shutdown_timeout: config.shutdown_timeout,
        };
        tokio::spawn(crate::resp::serve(l, Arc::clone(&ctx), settings))
    });
    let connections = listener::accept_until(client, Arc::clone(&ctx), &mut stop).await;
    replication.stop().await;

    health.set_stopping();
    trigger.trigger();
    let resp_drained = async {
        if let Some(task) = resp_task {
            let _ = task.await;
        }
    };
    tokio::join!(
        listener::drain(connections, config.shutdown_timeout),
        resp_drained
    );
    drop(ctx);

    let flushed = tokio::task::spawn_blocking(move || {
        engine.flush()?;
        engine.close()
    })
    .await
    .map_err(|e| ServerError::Internal(e.to_string()))?;
    flushed.map_err(ServerError::Close)?;
    info!("engine flushed and closed; bye");
    Ok(())
}
