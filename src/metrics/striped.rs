//! Counters and a latency histogram that many threads bump on every request
//! without sharing a cache line.
//!
//! A plain `AtomicU64` counter updated by two connection threads for each
//! request moves its cache line between their CPUs every time, and
//! prometheus-client's `Histogram` takes a mutex for each observation. Here
//! every thread writes its own stripe (a cache-line-aligned cell, picked
//! once per thread); a scrape sums the stripes. Sums are exact: each stripe
//! only grows, and a scrape that races an update sees it or not, as with a
//! single atomic.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Atomic;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Stripes per metric: more than the threads that serve requests on any
/// machine this runs on is not needed; two threads that share a stripe are
/// only as slow as a plain atomic.
const STRIPES: usize = 16;

/// This thread's stripe, assigned round robin on first use.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT.fetch_add(1, Relaxed) % STRIPES);
        }
        s.get()
    })
}

/// One cache line (two on CPUs that fetch lines in pairs) per stripe.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Line<T>(T);

/// A `u64` counter in stripes; the storage of [`Counter`].
#[derive(Debug, Default)]
pub struct StripedU64 {
    lines: [Line<AtomicU64>; STRIPES],
}

impl Atomic<u64> for StripedU64 {
    fn inc(&self) -> u64 {
        self.inc_by(1)
    }

    /// Returns this thread's stripe before the increment, not the total.
    fn inc_by(&self, v: u64) -> u64 {
        self.lines[stripe()].0.fetch_add(v, Relaxed)
    }

    fn get(&self) -> u64 {
        self.lines
            .iter()
            .fold(0u64, |sum, line| sum.wrapping_add(line.0.load(Relaxed)))
    }
}

/// A Prometheus counter whose increments stay on the calling thread's stripe.
pub type Counter = prometheus_client::metrics::counter::Counter<u64, StripedU64>;

/// Upper bounds of the latency buckets: 10 µs doubling, 21 of them (to
/// about 10 s), then +Inf.
const BUCKETS: usize = 21;
const FIRST_BOUND: Duration = Duration::from_micros(10);

fn bound_ns(i: usize) -> u64 {
    (FIRST_BOUND.as_nanos() as u64) << i
}

/// What one thread has observed: a count per bucket (+Inf last) and the
/// sum of the observations in nanoseconds.
#[derive(Debug, Default)]
struct Observed {
    buckets: [AtomicU64; BUCKETS + 1],
    sum_ns: AtomicU64,
}

/// A latency histogram (Prometheus `histogram`, seconds) in stripes. Its
/// clones share it, like prometheus-client's own metrics.
#[derive(Debug, Default, Clone)]
pub struct LatencyHistogram {
    lines: Arc<[Line<Observed>; STRIPES]>,
}

impl LatencyHistogram {
    pub fn observe(&self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let bucket = (0..BUCKETS).find(|&i| ns <= bound_ns(i)).unwrap_or(BUCKETS);
        let line = &self.lines[stripe()].0;
        line.buckets[bucket].fetch_add(1, Relaxed);
        line.sum_ns.fetch_add(ns, Relaxed);
    }

    /// Count per bucket (not cumulative) and the sum in seconds.
    fn snapshot(&self) -> ([u64; BUCKETS + 1], f64) {
        let mut counts = [0u64; BUCKETS + 1];
        let mut sum_ns = 0u64;
        for line in self.lines.iter() {
            for (count, bucket) in counts.iter_mut().zip(&line.0.buckets) {
                *count = count.wrapping_add(bucket.load(Relaxed));
            }
            sum_ns = sum_ns.wrapping_add(line.0.sum_ns.load(Relaxed));
        }
        (counts, Duration::from_nanos(sum_ns).as_secs_f64())
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (counts, sum) = self.snapshot();
        // The bounds as prometheus-client's own histogram labels them.
        let bounds = exponential_buckets(FIRST_BOUND.as_secs_f64(), 2.0, BUCKETS as u16)
            .chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = bounds.zip(counts).collect();
        let count = counts.iter().sum();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_sums_what_every_thread_added() {
        let counter = Arc::new(Counter::default());
        let threads: Vec<_> = (0..20)
            .map(|t| {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counter.inc_by(t);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counter.get(), 1000 * (0..20).sum::<u64>());
    }

    #[test]
    fn the_histogram_puts_each_latency_in_the_first_bucket_that_holds_it() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(10)); // on the first bound
        h.observe(Duration::from_micros(11)); // second bucket (20 µs)
        h.observe(Duration::from_millis(30)); // 40.96 ms bucket
        h.observe(Duration::from_secs(100)); // past the last bound
        let (counts, sum) = h.snapshot();
        assert_eq!(counts[0], 1);
        assert_eq!(counts[1], 1);
        assert_eq!(counts[12], 1, "10 µs << 12 = 40.96 ms");
        assert_eq!(counts[BUCKETS], 1);
        assert_eq!(counts.iter().sum::<u64>(), 4);
        assert!((sum - 100.030_021).abs() < 1e-9, "sum {sum}");
    }
}
