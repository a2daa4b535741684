//! The binary wire protocol spoken between clients and a kvstore node.
//!
//! Data flows one way: bytes → [`Frame`] (length-prefixed, bounded) →
//! [`Request`] / [`Response`] (typed, limits checked). Nothing here touches
//! the engine or a front end; only [`stream`] touches a socket: the one
//! framed stream (connect, TLS, HELLO, frames) that the client, a replica,
//! a master's replication stream and backups use.
//!
//! Invariants:
//! - every frame is `u32` little-endian body length, then the body; the body
//!   starts with one opcode byte;
//! - every length read from the wire is checked against [`Limits`] before
//!   anything is allocated, and every slice is taken with bounds checks;
//! - "need more bytes" is `Ok(None)`, never an error.
//!
//! The byte-level specification lives in `docs/PROTOCOL.md`; its hex
//! examples are produced by the unit tests of this module.

pub mod cluster;
pub mod error;
pub mod expiry;
pub mod frame;
pub mod limits;
pub mod opcode;
pub mod replication;
pub mod request;
pub mod response;
pub mod stream;
mod wire;

#[cfg(test)]
mod examples;
#[cfg(test)]
mod proptests;

pub use error::{Error, ErrorCode};
pub use expiry::{ExpireCondition, Expiry, KeyTtl};
pub use frame::{Frame, FRAME_HEADER_LEN};
pub use limits::Limits;
pub use request::{Auth, BatchOp, Hello, Request};
pub use response::{CompactionSummary, HelloOk, NewMaster, Response, Role};

/// The protocol version this build speaks. A client sends the highest
/// version it knows in HELLO; the server answers with the version both use.
/// Version 2 added key expiry (PUT_EXPIRING, EXPIRE, PERSIST, TTL and the
/// batch's put with expiry); everything of version 1 is unchanged.
pub const PROTOCOL_VERSION: u16 = 2;
/// The first version with key expiry: a client sends its requests only to
/// a server whose HELLO_OK says at least this (an older server would close
/// the connection on them).
pub const EXPIRY_VERSION: u16 = 2;
/// The oldest version this build accepts.
pub const MIN_PROTOCOL_VERSION: u16 = 1;
