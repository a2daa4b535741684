//! Prometheus metrics for a node, served on `/metrics` by
//! [`crate::server::http`].
//!
//! Request and connection metrics are recorded as they happen through
//! [`Metrics`]; engine figures (keys, bytes, fsyncs, compactions) are read
//! from [`Engine::stats`] at scrape time by a collector, so the engine knows
//! nothing about Prometheus and a scrape always sees current numbers.
//!
//! Metric names are a public contract (dashboards and alerts use them); they
//! are listed in `docs/CONFIGURATION.md` under "Metrics".

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::engine::Engine;
use crate::replication::Replication;

mod disk;
mod replication;
pub mod striped;
mod threads;

pub use threads::IoThreads;

use striped::LatencyHistogram;

/// How a request ended, as seen by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered as asked.
    Ok,
    /// The key does not exist (an answer, not an error).
    NotFound,
    /// The request was malformed or over a limit.
    BadRequest,
    /// The server could not do it (engine error, poisoned, read-only, ...).
    Error,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Ok,
        Outcome::NotFound,
        Outcome::BadRequest,
        Outcome::Error,
    ];

    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotFound => "not_found",
            Outcome::BadRequest => "bad_request",
            Outcome::Error => "error",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    op: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Why a connection or request was refused by authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// A token that is not accepted.
    BadToken,
    /// No token, or a request before authenticating.
    MissingToken,
    /// A valid token without the permission the request needs.
    PermissionDenied,
    /// Plaintext on a TLS port, or a failed TLS handshake.
    Tls,
}

impl AuthFailure {
    const ALL: [AuthFailure; 4] = [
        AuthFailure::BadToken,
        AuthFailure::MissingToken,
        AuthFailure::PermissionDenied,
        AuthFailure::Tls,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::BadToken => "bad_token",
            AuthFailure::MissingToken => "missing_token",
            AuthFailure::PermissionDenied => "permission_denied",
            AuthFailure::Tls => "tls",
        }
    }
}

/// Why a connection was closed to admit a new one
/// (`kvstore_connections_evicted_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Every slot was taken: the connection idle the longest was closed.
    SlotsFull,
    /// The quota of connections still in their handshake was full: the
    /// oldest of them was closed.
    Unauthenticated,
}

impl Eviction {
    const ALL: [Eviction; 2] = [Eviction::SlotsFull, Eviction::Unauthenticated];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Eviction::SlotsFull => "slots_full",
            Eviction::Unauthenticated => "unauthenticated",
        }
    }
}

/// What the client memory budget refused
/// (`kvstore_memory_refusals_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryRefusal {
    /// A request could not be read further: the connection was closed.
    Request,
    /// An answer could not be queued: the connection was closed.
    Answer,
    /// A multi-key answer (MGET) over its size bound or the budget: the
    /// command was refused, the connection goes on.
    MultiKey,
    /// Another connection was refused while this one held the most: it
    /// was closed.
    Largest,
}

impl MemoryRefusal {
    const ALL: [MemoryRefusal; 4] = [
        MemoryRefusal::Request,
        MemoryRefusal::Answer,
        MemoryRefusal::MultiKey,
        MemoryRefusal::Largest,
    ];

    /// The `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryRefusal::Request => "request",
            MemoryRefusal::Answer => "answer",
            MemoryRefusal::MultiKey => "multi_key",
            MemoryRefusal::Largest => "largest_closed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Reads the client memory budget at scrape time: `(used, limit)`.
type MemoryFigures = Box<dyn Fn() -> (u64, u64) + Send + Sync>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

/// Operations whose handles are created up front, so that recording them
/// costs atomic adds and no map lookup under a lock.
const KNOWN_OPS: &[&str] = &[
    "hello",
    "ping",
    "get",
    "put",
    "delete",
    "exists",
    "batch",
    "compact",
    "stats",
    "put_expiring",
    "ttl",
    // The RESP hot path (src/resp); other RESP commands go through the map.
    "resp_get",
    "resp_set",
];

/// Pre-created handles for one operation (the metrics are `Arc`s inside:
/// these share state with the families in the registry). What every
/// request bumps is striped ([`striped`]): the runtime's workers would
/// otherwise pass these cache lines, and a histogram's mutex, back and
/// forth on every request.
struct OpHandles {
    op: &'static str,
    by_outcome: [striped::Counter; 4],
    latency: LatencyHistogram,
}

/// All metrics of one node. Cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, striped::Counter>,
    latency: Family<OpLabels, LatencyHistogram>,
    known: Vec<OpHandles>,
    connections_active: Gauge,
    connections_accepted: Counter,
    connections_rejected: Counter,
    protocol_errors: Counter,
    auth_failures: Family<ReasonLabels, Counter>,
    bytes_received: striped::Counter,
    bytes_sent: striped::Counter,
    evictions: Family<ReasonLabels, Counter>,
    handshake_timeouts: Counter,
    http_evictions: Counter,
    memory_refusals: Family<KindLabels, Counter>,
    memory: Arc<OnceLock<MemoryFigures>>,
    last_backup: Gauge<f64, AtomicU64>,
    engine: Arc<OnceLock<Engine>>,
    replication: Arc<OnceLock<Arc<Replication>>>,
    io_threads: Arc<OnceLock<threads::IoThreadFigures>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric; engine figures appear once
    /// [`Metrics::attach_engine`] is called.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kvstore");
        let requests = Family::<RequestLabels, striped::Counter>::default();
        let latency = Family::<OpLabels, LatencyHistogram>::default();
        registry.register(
            "requests",
            "Requests answered, by operation and outcome",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a complete request frame to its response, by operation",
            latency.clone(),
        );
        let known = KNOWN_OPS
            .iter()
            .map(|&op| OpHandles {
                op,
                by_outcome: Outcome::ALL.map(|o| {
                    requests.get_or_create_owned(&RequestLabels {
                        op,
                        outcome: o.as_str(),
                    })
                }),
                latency: latency.get_or_create_owned(&OpLabels { op }),
            })
            .collect();

        let connections_active = Gauge::default();
        let connections_accepted = Counter::default();
        let connections_rejected = Counter::default();
        let protocol_errors = Counter::default();
        let bytes_received = striped::Counter::default();
        let bytes_sent = striped::Counter::default();
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        for reason in AuthFailure::ALL {
            // Present at zero from the start, so alerts see the series.
            let _ = auth_failures.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            });
        }
        registry.register(
            "auth_failures",
            "Connections or requests refused by authentication or TLS, by reason",
            auth_failures.clone(),
        );
        registry.register(
            "connections_active",
            "Client connections open now",
            connections_active.clone(),
        );
        registry.register(
            "connections_accepted",
            "Client connections accepted",
            connections_accepted.clone(),
        );
        registry.register(
            "connections_rejected",
            "Client connections refused because --max-connections was reached",
            connections_rejected.clone(),
        );
        registry.register(
            "protocol_errors",
            "Malformed frames and connections closed for cause",
            protocol_errors.clone(),
        );
        let evictions = Family::<ReasonLabels, Counter>::default();
        for reason in Eviction::ALL {
            let _ = evictions.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            });
        }
        registry.register(
            "connections_evicted",
            "Client connections closed to admit a new one: the idle-longest when every slot was taken, the oldest still in its handshake when their quota was full",
            evictions.clone(),
        );
        let handshake_timeouts = Counter::default();
        registry.register(
            "handshake_timeouts",
            "Client connections closed for not completing their handshake (HELLO with a token, or a first request) within --handshake-timeout-secs",
            handshake_timeouts.clone(),
        );
        let http_evictions = Counter::default();
        registry.register(
            "http_connections_evicted",
            "HTTP connections closed to admit a new one at --http-max-connections",
            http_evictions.clone(),
        );
        let memory_refusals = Family::<KindLabels, Counter>::default();
        for kind in MemoryRefusal::ALL {
            let _ = memory_refusals.get_or_create(&KindLabels {
                kind: kind.as_str(),
            });
        }
        registry.register(
            "memory_refusals",
            "Requests and answers refused by the client memory budget, by kind",
            memory_refusals.clone(),
        );
        let memory = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(MemoryCollector {
            figures: Arc::clone(&memory),
        }));
        registry.register(
            "network_received_bytes",
            "Bytes read from clients",
            bytes_received.clone(),
        );
        registry.register(
            "network_sent_bytes",
            "Bytes written to clients",
            bytes_sent.clone(),
        );

        // 0 until a backup is taken from this node (or loaded from its data
        // directory at start, see `backup::last`).
        let last_backup = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "backup_last_success_timestamp_seconds",
            "Unix time of the last backup taken from this node that its client committed; 0 if none",
            last_backup.clone(),
        );

        let engine = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(EngineCollector {
            engine: Arc::clone(&engine),
        }));
        registry.register_collector(Box::new(disk::DataDirCollector {
            engine: Arc::clone(&engine),
        }));
        let replication = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(replication::ReplicationCollector {
            replication: Arc::clone(&replication),
        }));
        let io_threads = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(threads::IoThreadCollector {
            figures: Arc::clone(&io_threads),
        }));

        Metrics {
            registry,
            requests,
            latency,
            known,
            connections_active,
            connections_accepted,
            connections_rejected,
            protocol_errors,
            auth_failures,
            bytes_received,
            bytes_sent,
            evictions,
            handshake_timeouts,
            http_evictions,
            memory_refusals,
            memory,
            last_backup,
            engine,
            replication,
            io_threads,
        }
    }

    /// Records one answered request.
    pub fn observe_request(&self, op: &'static str, outcome: Outcome, latency: Duration) {
        let idx = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        if let Some(h) = self.known.iter().find(|h| h.op == op) {
            h.by_outcome[idx].inc();
            h.latency.observe(latency);
            return;
        }
        self.requests
            .get_or_create(&RequestLabels {
                op,
                outcome: outcome.as_str(),
            })
            .inc();
        self.latency
            .get_or_create(&OpLabels { op })
            .observe(latency);
    }

    /// Counts bytes read from a client socket.
    pub fn add_bytes_received(&self, n: u64) {
        self.bytes_received.inc_by(n);
    }

    /// Bytes read from client sockets so far.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received.get()
    }

    /// Counts bytes written to a client socket.
    pub fn add_bytes_sent(&self, n: u64) {
        self.bytes_sent.inc_by(n);
    }

    /// Counts a malformed frame or a connection closed for cause.
    pub fn protocol_error(&self) {
        self.protocol_errors.inc();
    }

    /// Counts a refusal by authentication or TLS.
    pub fn auth_failure(&self, reason: AuthFailure) {
        self.auth_failures
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Counts an accepted connection; call [`Metrics::connection_closed`] when it ends.
    pub fn connection_opened(&self) {
        self.connections_accepted.inc();
        self.connections_active.inc();
    }

    /// Pairs with [`Metrics::connection_opened`].
    pub fn connection_closed(&self) {
        self.connections_active.dec();
    }

    /// Counts a connection refused at the connection limit.
    pub fn connection_rejected(&self) {
        self.connections_rejected.inc();
    }

    /// Counts a connection closed to admit a new one.
    pub fn connection_evicted(&self, why: Eviction) {
        self.evictions
            .get_or_create(&ReasonLabels {
                reason: why.as_str(),
            })
            .inc();
    }

    /// Counts a connection closed at its handshake timeout.
    pub fn handshake_timeout(&self) {
        self.handshake_timeouts.inc();
    }

    /// Counts an HTTP connection closed to admit a new one.
    pub fn http_connection_evicted(&self) {
        self.http_evictions.inc();
    }

    /// Counts a refusal of the client memory budget.
    pub fn memory_refused(&self, kind: MemoryRefusal) {
        self.memory_refusals
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// Makes the client memory budget (`(used, limit)` read by `figures`)
    /// part of every scrape. Only the first attached counts.
    pub fn attach_memory(&self, figures: impl Fn() -> (u64, u64) + Send + Sync + 'static) {
        let _ = self.memory.set(Box::new(figures));
    }

    /// Records the time (Unix milliseconds) of a backup taken from this
    /// node that its client committed.
    pub fn backup_succeeded(&self, unix_ms: u64) {
        // Milliseconds fit an f64 exactly until the year 287396.
        self.last_backup.set(unix_ms as f64 / 1000.0);
    }

    /// Makes engine figures part of every scrape from now on. Only the
    /// first engine attached counts.
    pub fn attach_engine(&self, engine: Engine) {
        let _ = self.engine.set(engine);
    }

    /// Makes replication figures part of every scrape from now on. Only
    /// the first attached counts.
    pub fn attach_replication(&self, replication: Arc<Replication>) {
        let _ = self.replication.set(replication);
    }

    /// Makes the connection threads' figures (read by `figures`) part of
    /// every scrape. Only the first attached counts.
    pub fn attach_io_threads(&self, figures: impl Fn() -> IoThreads + Send + Sync + 'static) {
        let _ = self.io_threads.set(Box::new(figures));
    }

    /// Encodes every metric in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Reads the client memory budget at scrape time.
struct MemoryCollector {
    figures: Arc<OnceLock<MemoryFigures>>,
}

impl fmt::Debug for MemoryCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCollector").finish_non_exhaustive()
    }
}

impl Collector for MemoryCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let Some(figures) = self.figures.get() else {
            return Ok(());
        };
        let (used, limit) = figures();
        gauge(
            &mut enc,
            "client_memory_bytes",
            "Bytes of client requests and answers reserved against the budget now",
            used,
        )?;
        gauge(
            &mut enc,
            "client_memory_limit_bytes",
            "The client memory budget (--max-client-memory-bytes)",
            limit,
        )
    }
}

/// Reads [`Engine::stats`] at scrape time.
struct EngineCollector {
    engine: Arc<OnceLock<Engine>>,
}

impl fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineCollector").finish_non_exhaustive()
    }
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge<N>(enc: &mut DescriptorEncoder, name: &str, help: &str, v: N) -> fmt::Result
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// One gauge family with a sample for each `(value of label, figure)`.
fn labelled_gauges<L: AsRef<str>, N>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (L, N)>,
) -> fmt::Result
where
    ConstGauge<N>: EncodeMetric,
{
    let probe = ConstGauge::new(0u64);
    let mut family = enc.encode_descriptor(name, help, None, probe.metric_type())?;
    for (value, figure) in samples {
        let labels = [(label, value.as_ref())];
        ConstGauge::new(figure).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for EngineCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let Some(engine) = self.engine.get() else {
            return Ok(());
        };
        let s = engine.stats();
        let counters = [
            ("engine_puts", "Put records written.", s.puts),
            ("engine_deletes", "Tombstones written.", s.deletes),
            ("engine_batches", "Atomic batches written.", s.batches),
            (
                "engine_written_bytes",
                "Bytes appended to the log.",
                s.bytes_written,
            ),
            (
                "engine_fsyncs",
                "fsync/fdatasync calls on the log.",
                s.fsyncs,
            ),
            (
                "engine_fsyncs_at_park",
                "Of those, fsyncs a connection thread ran itself as it ran out of work (always: group commit at park).",
                s.fsyncs_at_park,
            ),
            (
                "engine_compactions",
                "Compactions completed.",
                s.compactions,
            ),
            (
                "engine_tail_cuts",
                "Tails cut off the end of the log (torn at open, or rolled back by a live recovery), as kept in the epoch history.",
                s.tail_cuts,
            ),
            (
                "engine_tail_cut_bytes",
                "Bytes discarded by those tail cuts.",
                s.tail_cut_bytes,
            ),
            (
                "engine_tail_cut_records",
                "Records discarded by those tail cuts (a torn record counts as one).",
                s.tail_cut_records,
            ),
            (
                "engine_resumes",
                "Times the engine resumed writes on its own after a failed write or fsync.",
                s.resumes,
            ),
            (
                "engine_expired_keys",
                "Keys the expiry sweep deleted (master only).",
                s.expired_keys,
            ),
            (
                "engine_expiry_sweeps",
                "Expiry sweep rounds run.",
                s.expiry_sweeps,
            ),
        ];
        let gauges = [
            ("engine_keys", "Live keys in the index.", s.keys),
            ("engine_live_bytes", "Bytes of live records.", s.live_bytes),
            (
                "engine_data_bytes",
                "Bytes of all records, live and dead.",
                s.data_bytes,
            ),
            (
                "engine_disk_bytes",
                "Bytes of all data files on disk.",
                s.disk_bytes,
            ),
            (
                "engine_keydir_bytes",
                "Heap bytes of the in-memory index.",
                s.keydir_bytes,
            ),
            ("engine_segments", "Segment files.", s.segments),
            (
                "engine_merged_files",
                "Merged files of the current generation.",
                s.merged_files,
            ),
            (
                "engine_log_start_offset",
                "First global offset still in the log.",
                s.log_start,
            ),
            (
                "engine_log_end_offset",
                "Global offset of the end of the log.",
                s.log_end,
            ),
            (
                "engine_durable_end_offset",
                "Global offset up to which the log is durable.",
                s.durable_end,
            ),
            (
                "engine_epoch",
                "Epoch stamped on records this node writes.",
                u64::from(s.epoch),
            ),
            (
                "engine_keys_with_expiry",
                "Keys with an expiry (entries of the expiry index).",
                s.keys_with_expiry,
            ),
            (
                "engine_expiry_due",
                "Keys whose expiry passed that the sweep has not deleted yet.",
                s.expiry_due,
            ),
            (
                "engine_expiry_index_bytes",
                "Heap bytes of the expiry index.",
                s.expiry_index_bytes,
            ),
            (
                "engine_poisoned",
                "1 when the engine refuses writes after an I/O error.",
                u64::from(s.poisoned.is_some()),
            ),
            (
                "engine_campaign_blocked",
                "1 while a tail this node cut has not been fetched again from a master: it must not campaign for leadership.",
                u64::from(s.unrefetched_cut.is_some()),
            ),
        ];
        for (name, help, v) in counters {
            counter(&mut enc, name, help, v)?;
        }
        let sweep = ConstCounter::new(s.expiry_sweep_seconds);
        sweep.encode(enc.encode_descriptor(
            "engine_expiry_sweep_seconds",
            "CPU time the expiry sweep used.",
            None,
            sweep.metric_type(),
        )?)?;
        for (name, help, v) in gauges {
            gauge(&mut enc, name, help, v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_op_and_outcome() {
        let m = Metrics::new();
        m.observe_request("get", Outcome::NotFound, Duration::from_micros(30));
        m.observe_request("get", Outcome::NotFound, Duration::from_micros(30));
        // An op not in KNOWN_OPS takes the slower path, same result.
        m.observe_request("promote", Outcome::Error, Duration::from_millis(2));
        let text = m.encode().unwrap();
        assert!(
            text.contains("kvstore_requests_total{op=\"get\",outcome=\"not_found\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("kvstore_requests_total{op=\"promote\",outcome=\"error\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("kvstore_request_duration_seconds_count{op=\"get\"} 2\n"),
            "{text}"
        );
        // No engine attached yet: no engine figures, and no failure.
        assert!(!text.contains("kvstore_engine_keys"), "{text}");
    }
}
