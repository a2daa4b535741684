//! kvstore: a replicated Bitcask-style key-value store.
//!
//! The crate is layered so that data flows one way: bytes from a file or a
//! socket become records or frames, frames become commands, commands reach
//! the [`engine`]. [`server`] runs a node, [`cli`] is the command line,
//! [`config`] validates a node's settings and [`metrics`] exports them.
//! [`durable`], at the bottom, replaces small files crash-safely for every
//! layer and imports nothing of the crate. [`coordinator`] borrows
//! leadership and fencing epochs from etcd or the Kubernetes Lease API for
//! automatic failover.

pub mod backup;
pub mod cli;
pub mod client;
pub mod config;
pub mod coordinator;
pub mod durable;
pub mod engine;
pub mod metrics;
pub mod protocol;
pub mod replication;
pub mod resp;
pub mod security;
pub mod server;
