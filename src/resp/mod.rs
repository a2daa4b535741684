//! The RESP front end (`--resp-listen`): Redis clients, `redis-cli` and
//! `redis-benchmark` against the same engine as the binary protocol.
//!
//! - [`parse`]: bounded request decoding (multibulk and inline);
//! - [`reply`]: RESP2 answers;
//! - [`table`] and [`commands`]: what is supported and how it runs;
//! - [`info`]: `INFO` and `CONFIG GET`;
//! - [`connection`]: one client, pipelined;
//! - this file: the accept loop and state shared by RESP connections.
//!
//! RESP connections have their own limit, the same number as
//! `--max-connections` (so a node takes up to twice that in total), and the
//! same idle and frame timeouts as binary connections. Only RESP2 is
//! spoken; `HELLO 3` is refused with `-NOPROTO`.

pub mod auth;
pub mod commands;
pub mod connection;
pub mod info;
pub mod parse;
pub mod reply;
pub mod table;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::metrics::AuthFailure;
use crate::security::tls::{self, Accepted};
use crate::server::ServerContext;

/// What the RESP front end reports about the node's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The bound RESP address.
    pub addr: SocketAddr,
    /// `always`, `interval` or `never`.
    pub durability: &'static str,
    pub limits: parse::Limits,
    /// Bound on the drain at shutdown.
    pub shutdown_timeout: Duration,
}

/// Counters for `INFO stats`.
#[derive(Debug, Default)]
pub struct Counters {
    commands: AtomicU64,
    received: AtomicU64,
    rejected: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    connected: AtomicU64,
}

impl Counters {
    pub fn commands_processed(&self) -> u64 {
        self.commands.load(Relaxed)
    }
    pub fn connections_received(&self) -> u64 {
        self.received.load(Relaxed)
    }
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Relaxed)
    }
    pub fn hits(&self) -> u64 {
        self.hits.load(Relaxed)
    }
    pub fn misses(&self) -> u64 {
        self.misses.load(Relaxed)
    }
}

/// State shared by every RESP connection of a node.
#[derive(Debug)]
pub struct Shared {
    pub settings: Settings,
    pub started: Instant,
    pub counters: Counters,
    next_id: AtomicU64,
    /// Held by `SET NX`/`XX` between their check and their write.
    pub conditional: tokio::sync::Mutex<()>,
}

impl Shared {
    pub fn new(settings: Settings) -> Shared {
        Shared {
            settings,
            started: Instant::now(),
            counters: Counters::default(),
            next_id: AtomicU64::new(1),
            conditional: tokio::sync::Mutex::new(()),
        }
    }
    pub fn count_command(&self) {
        self.counters.commands.fetch_add(1, Relaxed);
    }
    pub fn count_hit(&self, hit: bool) {
        let c = if hit {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        c.fetch_add(1, Relaxed);
    }
    pub fn connected(&self) -> u64 {
        self.counters.connected.load(Relaxed)
    }
}

/// One client's connection state.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub name: Option<Bytes>,
    pub peer: String,
    pub local: String,
    /// Set by QUIT: answer, flush, close.
    pub quit: bool,
    /// What this client has proved (AUTH).
    pub credential: crate::security::Credential,
    pub opened: Instant,
}

impl Session {
    /// A `CLIENT INFO` line.
    pub fn describe(&self) -> String {
        let name = self
            .name
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        format!(
            "id={} addr={} laddr={} name={} age={} db=0 resp=2",
            self.id,
            self.peer,
            self.local,
            name,
            self.opened.elapsed().as_secs()
        )
    }
}

/// Serves RESP clients on `listener` until the node shuts down, then waits
/// up to `settings.shutdown_timeout` for them to finish.
pub async fn serve(listener: TcpListener, ctx: Arc<ServerContext>, settings: Settings) {
    let shared = Arc::new(Shared::new(settings));
    info!(resp = %shared.settings.addr, "serving RESP clients");
    let slots = Arc::new(Semaphore::new(ctx.limits.max_connections));
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = ctx.shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                warn!("RESP accept failed: {e}");
                tokio::select! {
                    _ = ctx.shutdown.wait() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        shared.counters.received.fetch_add(1, Relaxed);
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            shared.counters.rejected.fetch_add(1, Relaxed);
            ctx.metrics.connection_rejected();
            debug!(%peer, "RESP connection refused: max connections reached");
            tasks.spawn(connection::reject(stream));
            continue;
        };
        let id = shared.next_id.fetch_add(1, Relaxed);
        let (ctx, shared) = (Arc::clone(&ctx), Arc::clone(&shared));
        ctx.metrics.connection_opened();
        shared.counters.connected.fetch_add(1, Relaxed);
        tasks.spawn(async move {
            let acceptor = ctx.security.acceptor();
            let refusal =
                b"-ERR this port requires TLS: connect with TLS (redis-cli --tls --cacert CA)\r\n";
            match tls::accept(stream, acceptor, ctx.limits.frame_timeout, refusal).await {
                Accepted::Stream(stream) => {
                    connection::serve_connection(stream, Arc::clone(&ctx), Arc::clone(&shared), id)
                        .await;
                }
                Accepted::Refused(why) => {
                    ctx.metrics.auth_failure(AuthFailure::Tls);
                    warn!(%peer, "RESP connection refused: {why}");
                }
            }
            shared.counters.connected.fetch_sub(1, Relaxed);
            ctx.metrics.connection_closed();
            drop(permit);
        });
    }
    drop(listener);
    let bound = shared.settings.shutdown_timeout;
    let all_done = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(bound, all_done).await.is_err() {
        warn!(
            left = tasks.len(),
            "RESP connections still open after {bound:?}; closing them"
        );
        tasks.shutdown().await;
    }
}
