//! Errors returned by the client.

use std::time::Duration;

use crate::protocol::{self, ErrorCode};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to {addr} failed: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} to {addr} timed out after {after:?}")]
    Timeout {
        what: &'static str,
        addr: String,
        after: Duration,
    },
    #[error("{addr} closed the connection")]
    Closed { addr: String },
    #[error("invalid data from the server: {0}")]
    Protocol(#[from] protocol::Error),
    #[error("server error {code}: {message}")]
    Server { code: ErrorCode, message: String },
    #[error("server answered {response} to a {request} request")]
    UnexpectedResponse {
        request: &'static str,
        response: &'static str,
    },
    #[error("{addr} is a replica; writes go to the master at {master}")]
    Redirected { addr: String, master: String },
    /// The request needs a newer protocol version than the server's
    /// HELLO_OK offered; it was not sent.
    #[error("{addr} speaks protocol version {version}; {request} needs version {needed}: upgrade the server")]
    Unsupported {
        addr: String,
        request: &'static str,
        version: u16,
        needed: u16,
    },
    /// A STATS or CLUSTER_STATUS document that is not the JSON expected.
    #[error("server sent an invalid JSON document: {0}")]
    InvalidStats(#[from] serde_json::Error),
}

impl Error {
    /// True if the connection this error happened on cannot be used again.
    pub fn breaks_connection(&self) -> bool {
        match self {
            Error::Server { code, .. } => code.closes_connection(),
            Error::UnexpectedResponse { .. }
            | Error::InvalidStats(_)
            | Error::Redirected { .. }
            | Error::Unsupported { .. } => false,
            // A request refused by our own limit check never touched the wire.
            Error::Protocol(e) => !matches!(
                e,
                protocol::Error::KeyTooLarge { .. }
                    | protocol::Error::ValueTooLarge { .. }
                    | protocol::Error::BatchTooLarge { .. }
            ),
            Error::Connect { .. }
            | Error::Io { .. }
            | Error::Timeout { .. }
            | Error::Closed { .. } => true,
        }
    }

    /// True for failures of the transport itself (as opposed to an answer
    /// from the server), after which a read-only request may be retried.
    pub fn is_transport(&self) -> bool {
        matches!(self, Error::Io { .. } | Error::Closed { .. })
    }
}
