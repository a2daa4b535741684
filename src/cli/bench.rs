//! `kvstore bench`: a load generator in the manner of `redis-benchmark`.
//!
//! `-c` connections each run a loop: take up to `-P` requests from a shared
//! budget of `-n`, send them in one write, read the answers, record each
//! request's latency (from the batch's send to its answer) in an HDR
//! histogram. Keys are `key:NNNNNNNNNNNN` drawn uniformly from `-r` keys;
//! values are `-d` bytes. A progress line is printed to stderr while a test
//! runs; results go to stdout.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;

use crate::cli::connect::ConnectArgs;
use crate::cli::CliError;
use crate::client::{Client, ClientOptions};
use crate::protocol::{Request, Response};

/// Load generator options (names as in redis-benchmark).
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Parallel connections.
    #[arg(short = 'c', long = "connections", default_value_t = 50)]
    pub connections: u32,
    /// Total requests per test.
    #[arg(short = 'n', long = "requests", default_value_t = 100_000)]
    pub requests: u64,
    /// Value size in bytes.
    #[arg(short = 'd', long = "data-size", default_value_t = 100)]
    pub data_size: usize,
    /// Key space: keys are drawn uniformly from this many.
    #[arg(short = 'r', long = "keyspace", default_value_t = 1_000_000)]
    pub keyspace: u64,
    /// Requests in flight per connection.
    #[arg(short = 'P', long = "pipeline", default_value_t = 1)]
    pub pipeline: u32,
    /// Comma-separated tests: ping, put, get, exists, delete.
    #[arg(short = 't', long = "tests", default_value = "ping,put,get")]
    pub tests: String,
    /// Only one summary line per test. (The progress line is shown only
    /// when stderr is a terminal.)
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Client threads. Default 1, as redis-benchmark: on a small machine
    /// shared with the server, more client threads mostly steal the
    /// server's CPU.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Ping,
    Put,
    Get,
    Exists,
    Delete,
}

impl Op {
    fn parse(name: &str) -> Result<Op, CliError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "ping" => Ok(Op::Ping),
            "put" | "set" => Ok(Op::Put),
            "get" | "read" => Ok(Op::Get),
            "exists" => Ok(Op::Exists),
            "delete" | "del" => Ok(Op::Delete),
            other => Err(CliError::Other(format!(
                "-t: unknown test {other:?} (known: ping, put, get, exists, delete)"
            ))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Op::Ping => "PING",
            Op::Put => "PUT",
            Op::Get => "GET",
            Op::Exists => "EXISTS",
            Op::Delete => "DELETE",
        }
    }
}

/// What one test measured.
struct Outcome {
    elapsed: Duration,
    histogram: Histogram<u64>,
    errors: u64,
    misses: u64,
}

/// Shared between the connections of one test.
struct Shared {
    issued: AtomicU64,
    done: AtomicU64,
}

/// Runs `kvstore bench` against `addr`.
pub fn run(args: &BenchArgs, addr: &str, with: &ConnectArgs) -> Result<(), CliError> {
    let ops = args
        .tests
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .map(Op::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if args.connections == 0 || args.pipeline == 0 || args.keyspace == 0 {
        return Err(CliError::Other(
            "-c, -P and -r must be at least 1".to_string(),
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the async runtime: {e}")))?;
    for op in ops {
        let outcome = runtime.block_on(run_test(args, addr, op, with))?;
        report(args, op, &outcome);
    }
    Ok(())
}

async fn run_test(
    args: &BenchArgs,
    addr: &str,
    op: Op,
    with: &ConnectArgs,
) -> Result<Outcome, CliError> {
    let shared = Arc::new(Shared {
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
    });
    // Connect everyone first so connection setup is not measured.
    let mut clients = Vec::new();
    for _ in 0..args.connections {
        let options = with.options(ClientOptions {
            client_name: "kvstore-bench".into(),
            ..ClientOptions::default()
        })?;
        let client = Client::connect(addr, options)
            .await
            .map_err(|e| CliError::Other(e.to_string()))?;
        clients.push(client);
    }
    let value = Bytes::from(vec![b'x'; args.data_size]);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        let value = value.clone();
        let args = args.clone();
        let seed = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        tasks.spawn(connection_loop(client, shared, args, op, value, seed));
    }
    let show_progress = !args.quiet && std::io::stderr().is_terminal();
    let progress = show_progress.then(|| {
        let shared = Arc::clone(&shared);
        let total = args.requests;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let done = shared.done.load(Ordering::Relaxed);
                let rate = done as f64 / start.elapsed().as_secs_f64().max(1e-9);
                eprint!(
                    "\r{}: {rate:.0} requests/s, {done}/{total} done   ",
                    op.name()
                );
                let _ = std::io::stderr().flush();
            }
        })
    });
    let mut histogram = new_histogram();
    let (mut errors, mut misses) = (0, 0);
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((h, e, m))) => {
                let _ = histogram.add(&h);
                errors += e;
                misses += m;
            }
            Ok(Err(msg)) => failure = Some(msg),
            Err(e) => failure = Some(format!("bench task failed: {e}")),
        }
    }
    let elapsed = start.elapsed();
    if let Some(p) = progress {
        p.abort();
        eprint!("\r{:72}\r", "");
    }
    if let Some(msg) = failure {
        return Err(CliError::Other(msg));
    }
    Ok(Outcome {
        elapsed,
        histogram,
        errors,
        misses,
    })
}

fn new_histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 100 s, 3 significant digits. These bounds are
    // constants that hdrhistogram accepts; only bad constants could fail.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid constant histogram bounds")
}

type ConnResult = Result<(Histogram<u64>, u64, u64), String>;

async fn connection_loop(
    mut client: Client,
    shared: Arc<Shared>,
    args: BenchArgs,
    op: Op,
    value: Bytes,
    mut seed: u64,
) -> ConnResult {
    let mut histogram = new_histogram();
    let (mut errors, mut misses) = (0u64, 0u64);
    let pipeline = u64::from(args.pipeline);
    let mut batch = Vec::with_capacity(args.pipeline as usize);
    loop {
        let first = shared.issued.fetch_add(pipeline, Ordering::Relaxed);
        if first >= args.requests {
            break;
        }
        let count = pipeline.min(args.requests - first);
        batch.clear();
        for _ in 0..count {
            let key = Bytes::from(format!(
                "key:{:012}",
                next_random(&mut seed) % args.keyspace
            ));
            batch.push(match op {
                Op::Ping => Request::Ping,
                Op::Put => Request::Put {
                    key,
                    value: value.clone(),
                },
                Op::Get => Request::Get { key },
                Op::Exists => Request::Exists { key },
                Op::Delete => Request::Delete { key },
            });
        }
        let sent = Instant::now();
        client.send_raw(&batch).await.map_err(|e| e.to_string())?;
        for _ in 0..count {
            let response = client.recv_raw().await.map_err(|e| e.to_string())?;
            let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
            histogram.saturating_record(micros.max(1));
            match response {
                Response::Error { .. } => errors += 1,
                Response::NotFound
                | Response::Exists(false)
                | Response::Deleted { existed: false } => misses += 1,
                _ => {}
            }
        }
        shared.done.fetch_add(count, Ordering::Relaxed);
    }
    Ok((histogram, errors, misses))
}

/// splitmix64: fast, good enough to spread keys, no dependency.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn report(args: &BenchArgs, op: Op, o: &Outcome) {
    let secs = o.elapsed.as_secs_f64().max(1e-9);
    let count = o.histogram.len();
    let rate = count as f64 / secs;
    let ms = |q: f64| o.histogram.value_at_quantile(q) as f64 / 1000.0;
    let max = o.histogram.max() as f64 / 1000.0;
    if args.quiet {
        let mut extra = String::new();
        if o.errors > 0 || o.misses > 0 {
            extra = format!(" ({} errors, {} misses)", o.errors, o.misses);
        }
        println!(
            "{}: {rate:.0} requests per second, p50={:.3} ms p99={:.3} ms p99.9={:.3} ms max={max:.3} ms{extra}",
            op.name(),
            ms(0.5),
            ms(0.99),
            ms(0.999)
        );
        return;
    }
    println!("====== {} ======", op.name());
    println!("  {count} requests completed in {secs:.2} seconds");
    println!(
        "  {} parallel clients, {} byte values, pipeline {}, key space {}",
        args.connections, args.data_size, args.pipeline, args.keyspace
    );
    if o.errors > 0 || o.misses > 0 {
        println!("  {} errors, {} misses (not found)", o.errors, o.misses);
    }
    println!("  throughput: {rate:.0} requests per second");
    println!(
        "  latency (ms): p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {max:.3}",
        ms(0.5),
        ms(0.99),
        ms(0.999)
    );
    println!();
}
