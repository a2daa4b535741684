//! The network server: listener, connections, dispatch, shutdown.
//!
//! STUB until server-runtime merge: the accept loop, configuration, metrics
//! and shutdown belong to branch `server-runtime`. This file only defines
//! the context that [`connection::serve_connection`] needs, with the field
//! names agreed in /work/notes/proto-runtime-contract.md.

pub mod connection;
pub mod dispatch;

use std::time::Duration;

use crate::engine::Engine;
use crate::protocol;
use crate::protocol::Role;

/// Limits a server enforces per connection.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Sizes checked while decoding.
    pub protocol: protocol::Limits,
    /// A connection with no request for this long is closed. Default 300 s.
    pub idle_timeout: Duration,
    /// A frame that has started must be complete within this. Default 10 s.
    pub frame_timeout: Duration,
    /// Most simultaneous client connections. Default 10,000.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            protocol: protocol::Limits::default(),
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(10),
            max_connections: 10_000,
        }
    }
}

/// STUB until server-runtime merge.
#[derive(Debug, Default)]
pub struct Metrics;

impl Metrics {
    /// Counts one request by op and outcome and records its latency.
    pub fn record_request(&self, _op: &'static str, _outcome: &'static str, _latency: Duration) {}
}

/// Everything a connection needs, shared by all connections.
pub struct ServerContext {
    pub engine: Engine,
    pub limits: Limits,
    pub metrics: Metrics,
    pub role: Role,
    /// Becomes `true` when the server stops: connections answer what they
    /// have already read, then close.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}
