//! A running node, the top of the layering: the process that wires the
//! node core to its listeners, and the binary protocol's front end.
//!
//! Start: bind the client, RESP and HTTP listeners (a port in use fails
//! here, before anything is opened), write the port file, serve HTTP
//! (`/healthz` is live from now on), open the engine, start replication in
//! the configured role, mark ready, accept clients: binary ones through
//! [`binary::Binary`], Redis ones through [`crate::resp`], both driven by
//! the node's one connection loop.
//!
//! Stop (SIGTERM, SIGINT or the `stop` future of [`run`]): `/readyz`
//! turns 503, a master with a coordinator hands its seat to a caught-up
//! replica (planned switchover, bounded by `--switchover-timeout-ms` and
//! a lease TTL),
//! the shutdown signal reaches every listener, connection and
//! replication stream, the follower stops, connections answer what they
//! have read and close within `--shutdown-timeout-secs` (stragglers are
//! aborted), then the engine is flushed and closed and [`run`] returns
//! `Ok`, so the process exits 0.

pub mod binary;
pub mod http;
pub mod port_file;
mod reseed;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::{Config, Role};
use crate::engine::{self, Options};
use crate::lifecycle::{self, Health, ShutdownTrigger};
use crate::metrics::Metrics;
use crate::node::workers::Workers;
use crate::node::{self, listener, Node};
use crate::replication::{self, Replication, RoleView};
use crate::security::{Security, SecurityError};

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
    #[error("cannot open the coordinator session: {0}")]
    Coordinator(String),
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
        mode: config.replication_mode,
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
        durability: config.durability,
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

    match &config.role {
        Role::Master => {
            info!(listen = %client_addr, http = %http_addr, data_dir = %config.data_dir.display(), "Starting as MASTER")
        }
        Role::Replica { master_addr } => {
            info!(listen = %client_addr, http = %http_addr, data_dir = %config.data_dir.display(), "Starting as REPLICA of {master_addr}")
        }
        Role::Candidate => {
            info!(listen = %client_addr, http = %http_addr, data_dir = %config.data_dir.display(), "Starting as a CANDIDATE: the coordinator elects the master")
        }
    }
    raise_fd_limit(&config);

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let (trigger, shutdown) = lifecycle::channel();
    let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let router = http::router(http::HttpState {
        metrics: Arc::clone(&metrics),
        health: Arc::clone(&health),
    });
    let http_limits = http::HttpLimits {
        max_connections: config.http_max_connections,
        header_timeout: config.http_header_timeout,
    };
    let http_task = tokio::spawn(http::serve(
        http,
        router,
        http_limits,
        Arc::clone(&metrics),
        async {
            let _ = http_stop_rx.await;
        },
    ));

    let listeners = Listeners { client, resp };
    let parts = Parts {
        security: Arc::clone(&security),
        metrics,
        health,
        shutdown,
    };
    let result = serve_clients(&config, listeners, parts, trigger, stop).await;
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

/// What exists before the engine opens.
struct Parts {
    security: Arc<Security>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: lifecycle::Shutdown,
}

/// Opens the engine, starts replication, serves clients until `stop`,
/// drains, closes the engine.
async fn serve_clients(
    config: &Config,
    listeners: Listeners,
    parts: Parts,
    trigger: ShutdownTrigger,
    stop: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    tokio::pin!(stop);
    let Parts {
        security,
        metrics,
        health,
        shutdown,
    } = parts;
    let Listeners { client, resp } = listeners;
    let client_addr = client.local_addr().unwrap_or(config.listen);
    // Started before anything opens: a node that cannot have them stops
    // here, with nothing to undo.
    let workers =
        Arc::new(Workers::start(config.io_threads).map_err(|e| {
            ServerError::Internal(format!("cannot start the connection threads: {e}"))
        })?);
    metrics.attach_io_threads(workers.figures_source());
    // Gathers connections on as few threads as their load needs.
    let balancing = {
        let metrics = Arc::clone(&metrics);
        tokio::spawn(Workers::balance(Arc::downgrade(&workers), move || {
            metrics.bytes_received()
        }))
    };
    let dir = config.data_dir.clone();
    let options = engine_options(config);
    // A candidate may be elected: its data may be the only copy.
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
        // A replica of nobody until the coordinator shows a master.
        Role::Candidate => RoleView::Replica {
            master: String::new(),
        },
    };
    let ha = match &config.coordinator {
        None => None,
        Some(settings) => {
            let mut settings = settings.clone();
            if settings.advertise_addr.is_empty() {
                settings.advertise_addr = client_addr.to_string();
            }
            let dir_id = engine.dir_id();
            settings.data_dir = Some(crate::coordinator::DataDir {
                id: dir_id.to_string(),
                predates_ids: dir_id.predates_ids(),
            });
            let ha = node::ha::Ha::connect(&settings, config.ha)
                .await
                .map_err(|e| ServerError::Coordinator(e.to_string()))?;
            info!(backend = %settings.backend, node_id = %settings.node_id, cluster = %settings.cluster, dir_id = %dir_id, dir_origin = dir_id.origin().name(), "coordinator session open");
            Some(Arc::new(ha))
        }
    };
    let mut settings = replication::Settings {
        security: Arc::clone(&security),
        ..replication_settings(config, client_addr)
    };
    if let Some(ha) = &ha {
        // The master knows its replicas by node id, the names the in-sync
        // set lists.
        settings.replica_id = ha.node_id().to_string();
    }
    let replication = Replication::start(engine.clone(), settings, Arc::clone(&health), role)
        .await
        .map_err(|source| ServerError::Open {
            path: config.data_dir.clone(),
            source,
        })?;
    metrics.attach_replication(Arc::clone(&replication));
    // Ready only once everything /metrics and clients rely on is in place.
    health.set_engine_open();
    let engine_health = tokio::spawn(http::follow_engine(engine.clone(), Arc::clone(&health)));
    info!(data_dir = %config.data_dir.display(), "engine open, ready");
    let memory = Arc::new(node::memory::Budget::new(config.limits.client_memory_bytes));
    let figures = Arc::clone(&memory);
    metrics.attach_memory(move || (figures.used(), figures.limit()));
    let node = Arc::new(Node {
        memory,
        engine: engine.clone(),
        durability: config.durability,
        security,
        replication: Arc::clone(&replication),
        metrics,
        limits: config.limits,
        shutdown,
        health: Arc::clone(&health),
        ha: ha.clone(),
    });
    let ha_task = ha
        .clone()
        .map(|ha| tokio::spawn(node::ha::run(Arc::clone(&node), ha)));
    // Each front end serves until the shutdown signal, then drains
    // (bounded by --shutdown-timeout-secs); both deal their connections
    // out to the same threads.
    let binary = tokio::spawn(listener::serve(
        client,
        Arc::clone(&node),
        Arc::new(binary::Binary),
        Arc::clone(&workers),
    ));
    let resp = resp.map(|(l, addr)| {
        let settings = crate::resp::Settings::new(addr, &node);
        tokio::spawn(crate::resp::serve(
            l,
            Arc::clone(&node),
            settings,
            Arc::clone(&workers),
        ))
    });
    stop.await;

    health.set_stopping();
    if let Some(ha) = &ha {
        // A master hands its seat to a caught-up replica first, while its
        // replication streams still run (bounded by the switchover timeout
        // and a lease TTL).
        node::ha::switchover::before_shutdown(&node, ha).await;
    }
    trigger.trigger();
    if let Some(task) = ha_task {
        // It resigns a held term; bounded so a dead coordinator cannot
        // hold the exit.
        if tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .is_err()
        {
            warn!("the HA loop did not stop within 5s");
        }
    }
    replication.stop().await;
    let _ = binary.await;
    if let Some(resp) = resp {
        let _ = resp.await;
    }
    // Every connection is done: stop their threads.
    balancing.abort();
    let _ = tokio::task::spawn_blocking(move || drop(workers)).await;
    drop(node);
    engine_health.abort();

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

/// Raises the soft open-files limit to the hard limit, as Go and nginx do,
/// logs the result, and warns when the connections the settings allow
/// cannot fit under it.
fn raise_fd_limit(config: &Config) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let before = getrlimit(Resource::Nofile);
    if before.current != before.maximum {
        let raised = Rlimit {
            current: before.maximum,
            maximum: before.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            warn!("cannot raise the open-files limit: {e}");
        }
    }
    let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_string(), |v| v.to_string());
    let soft = getrlimit(Resource::Nofile).current;
    info!(
        soft = %show(soft),
        hard = %show(before.maximum),
        was = %show(before.current),
        "open-files limit"
    );
    // Both client ports, the slots still closing on each, HTTP, and the
    // segments, listeners, replication and logs.
    let per_port =
        (config.limits.max_connections as u64).saturating_add(node::slots::MAX_EVICTING as u64);
    let ports = if config.resp_listen.is_some() { 2 } else { 1 };
    let needed = per_port
        .saturating_mul(ports)
        .saturating_add(config.http_max_connections as u64)
        .saturating_add(256);
    if let Some(soft) = soft {
        if soft < needed {
            warn!(
                "open-files limit is {soft}, below the {needed} the connection limits may need \
                 (--max-connections per client port, --http-max-connections, 256 for files); \
                 connections beyond it will fail to be accepted"
            );
        }
    }
}
