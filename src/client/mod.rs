//! The kvstore client library: an async [`Client`] (connect, reconnect,
//! pipelining, timeouts) and a [`BlockingClient`] wrapper for synchronous
//! code such as the CLI.
//!
//! A client owns at most one TCP connection. After any connection-level
//! failure (I/O error, timeout, a connection error code from the server)
//! the connection is dropped and the next call opens a new one. Read-only
//! calls (ping, get, exists, stats) are retried once on a fresh connection
//! when a reused connection turns out to be dead; writes are never retried
//! automatically, because their fate is unknown. To keep that rare, a
//! connection idle for a while is probed (a non-blocking peek) before it
//! is reused, so a connection the server closed for idleness is replaced
//! before a write is sent into it.

mod async_client;
mod blocking;
mod conn;
mod error;

use std::time::Duration;

use bytes::Bytes;

pub use async_client::Client;
pub use blocking::BlockingClient;
pub use error::Error;

/// Default address of a node's client port.
pub const DEFAULT_ADDR: &str = "127.0.0.1:5555";

/// How a [`Client`] connects and how long it waits.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Bound on TCP connect plus the HELLO exchange. Default 5 s.
    pub connect_timeout: Duration,
    /// Bound on one call (or one pipeline) from first byte written to
    /// last byte read. Default 30 s; COMPACT may need more.
    pub request_timeout: Duration,
    /// Sent in HELLO, shown in server logs.
    pub client_name: String,
    /// Bearer token sent in HELLO, for servers with authentication.
    pub credential: Option<Bytes>,
    /// TLS: verify the server with this CA (and name). `None` = plaintext.
    pub tls: Option<crate::security::Connector>,
    /// Follow a replica's REDIRECT to its master (reconnecting there) for
    /// writes. Default true; when false a redirect is an
    /// [`Error::Redirected`].
    pub follow_redirects: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            client_name: format!("kvstore-client {}", env!("CARGO_PKG_VERSION")),
            credential: None,
            tls: None,
            follow_redirects: true,
        }
    }
}
