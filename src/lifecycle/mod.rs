//! A node's lifecycle signals, shared by every layer that runs tasks:
//! [`Health`], the readiness `/readyz` reports (the engine sets it open,
//! replication sets whether a replica follows its master, the shutdown
//! sets it stopping), and [`Shutdown`], the one broadcast that tells every
//! connection, replication stream and backup stream that the node stops.
//!
//! Both are plain flags with no knowledge of who sets or reads them, so
//! this module imports nothing of the crate and sits at the bottom of the
//! layering (docs/ARCHITECTURE.md): replication and backup take them
//! without importing the node or a front end.

pub mod health;
pub mod shutdown;

pub use health::{EngineWrites, Health};
pub use shutdown::{channel, Shutdown, ShutdownTrigger};
