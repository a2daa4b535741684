//! Replication figures for `/metrics`, read from
//! [`Replication::stats`] at scrape time (nothing is recorded twice).
//!
//! Every family is always present once replication is attached, whatever
//! the role, so dashboards need no special case: a master reports zero
//! link lag, a replica reports zero connected replicas. Per-replica
//! families carry a `replica` label (the replica's id, its advertised
//! address by default).

use std::fmt;
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

use super::{counter, gauge, labelled_gauges};
use crate::replication::{ReplicaStats, Replication};

/// Reads [`Replication::stats`] at scrape time.
pub(super) struct ReplicationCollector {
    pub(super) replication: Arc<OnceLock<Arc<Replication>>>,
}

impl fmt::Debug for ReplicationCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationCollector")
            .finish_non_exhaustive()
    }
}

/// `kvstore_master{epoch="N"}`: 1 on the master, 0 on a replica, with the
/// node's epoch as a label, so "who leads, in which epoch" is one query.
fn master(enc: &mut DescriptorEncoder, is_master: bool, epoch: u32) -> fmt::Result {
    let g = ConstGauge::new(u64::from(is_master));
    let mut family = enc.encode_descriptor(
        "master",
        "1 when this node is the master, 0 when it is a replica; label epoch: its current epoch.",
        None,
        g.metric_type(),
    )?;
    let epoch = epoch.to_string();
    g.encode(family.encode_family(&[("epoch", epoch.as_str())])?)
}

/// One gauge per replica, labelled with its id.
fn per_replica<N>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    replicas: &[ReplicaStats],
    value: impl Fn(&ReplicaStats) -> N,
) -> fmt::Result
where
    ConstGauge<N>: EncodeMetric,
{
    let samples = replicas.iter().map(|r| (r.id.as_str(), value(r)));
    labelled_gauges(enc, name, help, "replica", samples)
}

impl Collector for ReplicationCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let Some(repl) = self.replication.get() else {
            return Ok(());
        };
        let s = repl.stats();
        let e = &mut enc;
        gauge(
            e,
            "replication_role",
            "1 when this node is the master, 0 when it is a replica.",
            u64::from(s.role == "master"),
        )?;
        master(e, s.role == "master", s.epoch)?;
        counter(
            e,
            "elections",
            "Times this node went from replica to master while running (promote, failover, a won election).",
            s.elections,
        )?;
        gauge(
            e,
            "replication_epoch",
            "Newest epoch in this node's log.",
            u64::from(s.epoch),
        )?;
        gauge(
            e,
            "replication_end_offset",
            "Global offset of the end of this node's log.",
            s.end_offset,
        )?;
        gauge(
            e,
            "replication_durable_offset",
            "Offset up to which this node's log is durable.",
            s.durable_offset,
        )?;
        counter(
            e,
            "replication_truncations",
            "Times this node's master told it to cut its log back (in async mode: writes an old master acknowledged and lost at a failover).",
            s.truncations,
        )?;
        counter(
            e,
            "replication_truncated_bytes",
            "Log bytes those cuts removed.",
            s.truncated_bytes,
        )?;
        gauge(
            e,
            "replication_in_sync_members",
            "Sync mode with a coordinator, on the master: members of the published in-sync set, the master included (0 elsewhere).",
            s.in_sync.as_ref().map_or(0, Vec::len) as u64,
        )?;
        gauge(
            e,
            "replication_cut_conflict",
            "1 while the master refuses this replica because its log runs past a tail the master cut: it may hold writes the master lost.",
            u64::from(s.cut_conflict.is_some()),
        )?;
        gauge(
            e,
            "replication_connected_replicas",
            "Replicas streaming from this master.",
            s.connected_replicas as u64,
        )?;
        per_replica(
            e,
            "replication_replica_acked_offset",
            "Offset up to which each replica acknowledged the log as written (it holds and serves it).",
            &s.replicas,
            |r| r.acked_offset,
        )?;
        per_replica(
            e,
            "replication_replica_durable_offset",
            "Offset up to which each replica acknowledged the log as fsynced (what sync mode counts).",
            &s.replicas,
            |r| r.durable_offset,
        )?;
        per_replica(
            e,
            "replication_replica_lag_bytes",
            "How far each replica's acknowledged offset is behind this master.",
            &s.replicas,
            |r| r.lag_bytes,
        )?;
        per_replica(
            e,
            "replication_replica_lag_seconds",
            "How long each replica has not held everything this master has.",
            &s.replicas,
            |r| r.lag_seconds,
        )?;
        counter(
            e,
            "replication_full_resyncs",
            "Full resyncs served (master) or performed (replica).",
            s.full_resyncs,
        )?;
        counter(
            e,
            "replication_partial_resyncs",
            "Resumptions from an offset served (master) or performed (replica).",
            s.partial_resyncs,
        )?;
        counter(
            e,
            "replication_log_shipped_bytes",
            "Raw log bytes sent to replicas (master) or applied from the master (replica).",
            s.log_bytes_shipped,
        )?;
        counter(
            e,
            "replication_log_chunks",
            "REPL_CHUNK frames sent to replicas (master) or received from the master (replica).",
            s.log_chunks,
        )?;
        counter(
            e,
            "replication_acks",
            "REPL_ACK frames received from replicas (master) or sent to the master (replica).",
            s.acks,
        )?;
        gauge(
            e,
            "replication_link_up",
            "Replica: 1 while streaming from its master.",
            u64::from(s.link_up),
        )?;
        gauge(
            e,
            "replication_lag_bytes",
            "Replica: bytes its master has that it does not.",
            s.lag_bytes,
        )?;
        gauge(
            e,
            "replication_lag_seconds",
            "Replica: how long it has not held everything its master has.",
            s.lag_seconds,
        )?;
        Ok(())
    }
}
