//! The node core: the state a running node shares between its front ends,
//! and the execution of their commands.
//!
//! A [`Node`] owns the engine, the security settings (tokens, TLS), the
//! role handle ([`Replication`]: master or replica, and every change
//! between them), the metrics, the per-connection limits, the shutdown
//! signal and the readiness flags. The front ends (`server`: the binary
//! protocol, `resp`: Redis clients) are codecs: they turn bytes into
//! commands and answers into bytes, and everything else is here, written
//! once:
//!
//! - [`execute`]: a command against the engine and the role (a write on a
//!   replica is redirected, a sync-mode write waits for its replicas);
//! - [`connection`]: the one connection loop (frame and idle timeouts,
//!   pipelining, group-committed runs of writes, flushing, the auth gate,
//!   shutdown) that each front end plugs its [`connection::Codec`] into;
//! - [`listener`]: the one accept loop (connection slots, TLS, drain);
//! - [`slots`]: who gets a connection slot, and who makes room for whom;
//! - [`memory`]: the budget for request and answer bytes of every
//!   connection;
//! - [`ha`]: with a coordinator, the loop that follows, elects and fences
//!   the master.
//!
//! Replication and backup import nothing from the front ends (`server`,
//! `resp`) nor from the node: the replication master and the backup
//! server, which take a connection over, get the parts of the [`Node`]
//! they use (`replication::master::Serving`, `backup::serve::Serving`);
//! the rest of replication takes the engine and the health flags, and the
//! process (`server::run`) wires them together.

pub mod connection;
pub mod execute;
pub mod flag;
pub mod ha;
pub mod listener;
pub mod memory;
pub mod slots;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use crate::engine::record::{MAX_KEY_LEN, MAX_VALUE_LEN};
use crate::engine::{Durability, Engine};
use crate::lifecycle::{Health, Shutdown};
use crate::metrics::Metrics;
use crate::protocol;
use crate::replication::Replication;
use crate::security::Security;

// The wire's key and value maxima are the engine's: anything a client may
// send, the engine can store.
const _: () = assert!(protocol::limits::MAX_KEY_BYTES as usize == MAX_KEY_LEN);
const _: () = assert!(protocol::limits::MAX_VALUE_BYTES as usize == MAX_VALUE_LEN);

/// Default maximum frame: the largest key and value plus 1 MiB for framing
/// and batch overhead, so any record the engine accepts fits in one frame.
pub const DEFAULT_MAX_FRAME_BYTES: u32 =
    protocol::limits::MAX_KEY_BYTES + protocol::limits::MAX_VALUE_BYTES + (1 << 20);

/// Per-connection limits, the same for every front end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once, per front end. Default 1024.
    pub max_connections: usize,
    /// Largest request frame in bytes (binary protocol), largest sum of a
    /// request's arguments (RESP). Default [`DEFAULT_MAX_FRAME_BYTES`].
    pub max_frame_bytes: u32,
    /// Close a connection idle this long; zero means never. Default 300 s.
    pub idle_timeout: Duration,
    /// A started request must be complete within this. Default 30 s.
    pub frame_timeout: Duration,
    /// At shutdown, how long connections may take to finish. Default 10 s.
    pub shutdown_timeout: Duration,
    /// A connection must complete its handshake (HELLO with an accepted
    /// token with authentication on, a first request without) within
    /// this. Default 10 s.
    pub handshake_timeout: Duration,
    /// Connections in their handshake at once, per front end. Default 256.
    pub max_unauthenticated: usize,
    /// Bytes of requests and answers buffered by all connections together
    /// ([`memory`]). Default 1 GiB.
    pub client_memory_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_unauthenticated: 256,
            client_memory_bytes: memory::DEFAULT_BUDGET_BYTES,
        }
    }
}

impl Limits {
    /// The wire limits the binary protocol enforces and announces in
    /// HELLO_OK: the configured frame limit, the engine's key and value
    /// limits, the default batch limit.
    pub fn protocol(&self) -> protocol::Limits {
        protocol::Limits {
            max_frame_bytes: self.max_frame_bytes,
            ..protocol::Limits::default()
        }
    }
}

/// A running node's shared state, behind an `Arc` in every connection.
pub struct Node {
    pub engine: Engine,
    /// When writes are acknowledged (reported by RESP's INFO and CONFIG).
    pub durability: Durability,
    /// Tokens and TLS, reloaded on SIGHUP.
    pub security: Arc<Security>,
    /// The role handle: master or replica, and every change of role.
    pub replication: Arc<Replication>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// The budget for request and answer bytes of every connection.
    pub memory: Arc<memory::Budget>,
    pub shutdown: Shutdown,
    pub health: Arc<Health>,
    /// With a coordinator: the session that elects the master, and the
    /// term's fence the write path checks ([`ha`]). `None`: roles by hand.
    pub ha: Option<Arc<ha::Ha>>,
}
