//! Mixed client load with a record of every acknowledged write.
//!
//! Writer threads put unique keys (alone or three to a BATCH) and read back
//! keys they wrote; a write counts as acknowledged only when the server
//! answered OK. Keys are never overwritten, so an acknowledged write has
//! exactly one correct value whatever happened to unacknowledged ones. A
//! read of an acknowledged key that finds nothing is a lost write. A write
//! the server answered with an error (rather than a broken connection) is
//! counted as refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use bytes::Bytes;
use kvstore::client::{BlockingClient, ClientOptions, Error};
use kvstore::protocol::BatchOp;

pub type Acked = Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>;

pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub acked: Acked,
    pub lost_on_read: Arc<AtomicU64>,
    /// Operations that failed (not acknowledged), kept for debugging.
    #[allow(dead_code)]
    pub failed: Arc<AtomicU64>,
    /// Writes the server answered with an error, and the first such answer.
    pub refused: Arc<Refused>,
}

#[derive(Default)]
pub struct Refused {
    pub count: AtomicU64,
    pub first: Mutex<Option<String>>,
}

impl Refused {
    fn note<T>(&self, result: &Result<T, Error>) {
        if let Err(e @ Error::Server { .. }) = result {
            self.count.fetch_add(1, Ordering::Relaxed);
            self.first
                .lock()
                .expect("refused")
                .get_or_insert_with(|| e.to_string());
        }
    }

    /// `(count, first answer)` so far.
    pub fn get(&self) -> (u64, Option<String>) {
        let first = self.first.lock().expect("refused").clone();
        (self.count.load(Ordering::Relaxed), first)
    }
}

/// A client with short timeouts, so a killed or paused server costs a
/// writer at most a second or two.
pub fn quick_client(addr: SocketAddr) -> Option<BlockingClient> {
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(1500),
        client_name: "chaos".into(),
        ..ClientOptions::default()
    };
    BlockingClient::connect(addr.to_string(), options).ok()
}

impl Load {
    pub fn start(addr: SocketAddr, writers: usize, tag: &str, value_len: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Acked = Arc::default();
        let lost_on_read = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(Refused::default());
        let threads = (0..writers)
            .map(|w| {
                let (stop, acked) = (stop.clone(), acked.clone());
                let (lost, failed) = (lost_on_read.clone(), failed.clone());
                let refused = refused.clone();
                let tag = format!("{tag}-w{w}");
                thread::spawn(move || {
                    let counts = Counts {
                        lost: &lost,
                        failed: &failed,
                        refused: &refused,
                    };
                    writer(addr, &tag, value_len, &stop, &acked, counts)
                })
            })
            .collect();
        Load {
            stop,
            threads,
            acked,
            lost_on_read,
            failed,
            refused,
        }
    }

    /// Stops the writers and returns every acknowledged write.
    pub fn stop(self) -> (BTreeMap<Vec<u8>, Vec<u8>>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("writer thread panicked");
        }
        let acked = self.acked.lock().expect("acked").clone();
        (acked, self.lost_on_read.load(Ordering::Relaxed))
    }
}

struct Counts<'a> {
    lost: &'a AtomicU64,
    failed: &'a AtomicU64,
    refused: &'a Refused,
}

fn writer(
    addr: SocketAddr,
    tag: &str,
    value_len: usize,
    stop: &AtomicBool,
    acked: &Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    counts: Counts<'_>,
) {
    let Counts {
        lost,
        failed,
        refused,
    } = counts;
    let mut client: Option<BlockingClient> = None;
    let mut n: u64 = 0;
    // Bounded: at most this many operations per writer.
    while !stop.load(Ordering::Relaxed) && n < 2_000_000 {
        let Some(c) = client.as_mut() else {
            client = quick_client(addr);
            if client.is_none() {
                thread::sleep(Duration::from_millis(20));
            }
            continue;
        };
        n += 1;
        let value = |k: &[u8]| {
            let mut v = k.to_vec();
            v.resize(value_len.max(k.len()), b'.');
            v
        };
        let ok = if n.is_multiple_of(5) {
            let keys: Vec<Vec<u8>> = (0..3)
                .map(|j| format!("{tag}-{n}-{j}").into_bytes())
                .collect();
            let ops = keys
                .iter()
                .map(|k| BatchOp::Put {
                    key: Bytes::from(k.clone()),
                    value: Bytes::from(value(k)),
                })
                .collect();
            let r = c.batch(ops);
            refused.note(&r);
            if r.is_ok() {
                let mut a = acked.lock().expect("acked");
                for k in keys {
                    let v = value(&k);
                    a.insert(k, v);
                }
            }
            r.is_ok()
        } else if n.is_multiple_of(7) {
            // Read back an earlier acknowledged key of this writer.
            let probe = acked
                .lock()
                .expect("acked")
                .range(format!("{tag}-").into_bytes()..)
                .next()
                .map(|(k, v)| (k.clone(), v.clone()));
            match probe {
                Some((k, v)) => match c.get(&k) {
                    Ok(Some(got)) => {
                        assert_eq!(&got[..], &v[..], "acknowledged key read back wrong");
                        true
                    }
                    Ok(None) => {
                        lost.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    Err(_) => false,
                },
                None => true,
            }
        } else {
            let k = format!("{tag}-{n}").into_bytes();
            let v = value(&k);
            let r = c.put(&k, &v);
            refused.note(&r);
            if r.is_ok() {
                acked.lock().expect("acked").insert(k, v);
            }
            r.is_ok()
        };
        if !ok {
            failed.fetch_add(1, Ordering::Relaxed);
            client = None;
        }
    }
}

/// Reads every acknowledged key from `addr`; returns how many are missing
/// or wrong. Retries connection problems for up to `deadline`.
pub fn count_lost(addr: SocketAddr, acked: &BTreeMap<Vec<u8>, Vec<u8>>, deadline: Duration) -> u64 {
    let end = std::time::Instant::now() + deadline;
    let mut lost = 0;
    let mut client = None;
    for (k, v) in acked {
        loop {
            assert!(
                std::time::Instant::now() < end,
                "could not read back from {addr} in time"
            );
            let Some(c) = client.as_mut() else {
                client = quick_client(addr);
                continue;
            };
            match c.get(k) {
                Ok(Some(got)) if got[..] == v[..] => break,
                Ok(_) => {
                    lost += 1;
                    break;
                }
                Err(_) => client = None,
            }
        }
    }
    lost
}

/// [`count_lost`] on a node that may still be catching up (an async
/// replica after its link was broken): reads again every 200 ms until
/// nothing is missing or `deadline` has passed; returns the last count.
pub fn count_lost_eventually(
    addr: SocketAddr,
    acked: &BTreeMap<Vec<u8>, Vec<u8>>,
    deadline: Duration,
) -> u64 {
    let end = std::time::Instant::now() + deadline;
    loop {
        let lost = count_lost(addr, acked, deadline);
        if lost == 0 || std::time::Instant::now() > end {
            return lost;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
