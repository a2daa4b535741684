//! kvstore's integration tests, built as one test binary so that `make
//! test` links once. One module per behaviour; every test starts real
//! `kvstore` processes (and real etcd, redis-cli, ...) through the helpers
//! in `common/`. Run one module with a nextest filter, e.g.
//! `cargo nextest run -E 'test(/^chaos::/)'`.

mod common;

mod active_hint;
mod backup;
mod chaos;
mod charts;
mod cli;
mod cluster;
mod commit_at_park;
mod compaction;
mod config;
mod connections;
mod coordinator;
mod crash;
mod docs;
mod expiry;
mod expiry_client;
mod expiry_model;
mod failover;
mod failover_kube;
mod failover_rules;
mod first_frame;
mod fixtures;
mod group_commit;
mod hostile;
mod http;
mod k8s;
mod layers;
mod log;
mod model;
mod monitoring;
mod protocol;
mod readme;
mod recovery;
mod replication;
mod replication_hints;
mod reserve;
mod resp;
mod resume;
mod security;
mod server;
mod setup;
mod shutdown;
mod snapshot;
mod switchover;
mod tail;
