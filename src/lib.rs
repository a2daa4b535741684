//! kvstore: a replicated Bitcask-style key-value store.
//!
//! The crate is layered so that data flows one way: bytes from a file or a
//! socket become records or frames, frames become commands, commands reach
//! the [`engine`].

pub mod client;
pub mod engine;
pub mod protocol;
pub mod server;
