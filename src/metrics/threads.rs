//! The connection threads, for `/metrics`: how many connections each
//! serves, its share of the last balancing round spent on a CPU, and the
//! connections moved between threads so far. Read at scrape time.

use std::fmt;
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

use super::{counter, labelled_gauges};

/// The connection threads as a scrape sees them, thread `i` at index `i`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IoThreads {
    /// Connections each thread serves now.
    pub connections: Vec<u64>,
    /// Each thread's share of the last balancing round on a CPU, 0 to 1;
    /// `None` with a single thread, which is never balanced or measured.
    pub busy: Option<Vec<f64>>,
    /// Connections moved from one thread to another so far.
    pub moves: u64,
}

/// What a scrape calls for the figures.
pub(super) type IoThreadFigures = Box<dyn Fn() -> IoThreads + Send + Sync>;

pub(super) struct IoThreadCollector {
    pub(super) figures: Arc<OnceLock<IoThreadFigures>>,
}

impl fmt::Debug for IoThreadCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoThreadCollector").finish_non_exhaustive()
    }
}

/// One gauge family with a sample per thread, labelled by its number.
fn per_thread<N: Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[N],
) -> fmt::Result
where
    ConstGauge<N>: EncodeMetric,
{
    let samples = values.iter().enumerate().map(|(i, v)| (i.to_string(), *v));
    labelled_gauges(enc, name, help, "thread", samples)
}

impl Collector for IoThreadCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let Some(figures) = self.figures.get() else {
            return Ok(());
        };
        let threads = figures();
        per_thread(
            &mut enc,
            "io_thread_connections",
            "Client connections each connection thread (kvstore-io-N) serves now.",
            &threads.connections,
        )?;
        if let Some(busy) = &threads.busy {
            per_thread(
                &mut enc,
                "io_thread_busy_ratio",
                "Share of the last balancing round (20 ms under load) each connection thread spent on a CPU.",
                busy,
            )?;
        }
        counter(
            &mut enc,
            "io_thread_moves",
            "Client connections moved from one connection thread to another.",
            threads.moves,
        )
    }
}
