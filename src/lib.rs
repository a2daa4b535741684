//! kvstore: a replicated Bitcask-style key-value store.
//!
//! The crate is layered so that data flows one way: bytes from a file or a
//! socket become records or frames, frames become commands, commands reach
//! the [`node`] and through it the [`engine`]. The front ends ([`server`]'s
//! binary protocol, [`resp`]) are codecs driven by the node's one
//! connection loop; [`replication`] and [`backup`] take the parts of the
//! node they use and import no front end. [`server`] also runs the node
//! process, [`cli`] is the command line, [`config`] validates a node's
//! settings and [`metrics`] exports them. [`durable`] and [`lifecycle`], at
//! the bottom, import nothing of the crate. [`coordinator`] borrows
//! leadership and fencing epochs from etcd or the Kubernetes Lease API for
//! automatic failover. docs/ARCHITECTURE.md has the layers and the rules
//! (`scripts/check-layers.py` checks them in `make test`).

pub mod backup;
pub mod cli;
pub mod client;
pub mod config;
pub mod coordinator;
pub mod durable;
pub mod engine;
pub mod lifecycle;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod replication;
pub mod resp;
pub mod security;
pub mod server;
