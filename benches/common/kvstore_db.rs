//! kvstore's side of the benchmark workload, through the public engine API;
//! shared by `benches/engine.rs` and `benches/compare` through `#[path]`.
//!
//! Options are the defaults but for the durability policy, except that
//! `BENCH_SEGMENT_MB` sets the segment size: with the default (1 GiB) the
//! whole load stays in the active segment, which a reopen after a clean
//! close indexes from the hint that close wrote (and a reopen as after a
//! crash scans); a smaller size seals segments and reopens from their
//! hints.

use std::path::Path;

use kvstore::engine::{Durability, Engine, Options, WriteOp};

use super::workload::{AsyncPut, Db, Key, GET_RUN};

pub struct Kvstore(Engine);

impl Db for Kvstore {
    fn open(dir: &Path, synced: bool) -> Self {
        let options = Options {
            durability: if synced {
                Durability::Always
            } else {
                Durability::Never
            },
            segment_max_bytes: match std::env::var("BENCH_SEGMENT_MB") {
                Ok(mb) => {
                    mb.parse::<u64>()
                        .expect("BENCH_SEGMENT_MB is a whole number")
                        << 20
                }
                Err(_) => Options::default().segment_max_bytes,
            },
            ..Options::default()
        };
        Kvstore(Engine::open(dir, options).expect("kvstore: open"))
    }

    fn put(&self, key: &[u8], value: &[u8]) {
        self.0.put(key, value).expect("kvstore: put");
    }

    fn get_many(&self, keys: &[Key]) -> u64 {
        keys.iter()
            .map(|k| {
                self.0
                    .get(k)
                    .expect("kvstore: get")
                    .map_or(0, |v| v.len() as u64)
            })
            .sum()
    }

    fn get_warmed(&self, keys: &[Key]) -> Option<u64> {
        let mut found = 0;
        for run in keys.chunks(GET_RUN) {
            self.0.warm_for_reads(run.iter().map(|key| &key[..]));
            found += self.get_many(run);
        }
        Some(found)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key).expect("kvstore: get")
    }

    fn close(self) {
        self.0.close().expect("kvstore: close");
    }

    fn forget_clean_close(dir: &Path) -> bool {
        // The active segment is the last; its hint is the one a clean
        // close wrote (sealed segments' hints stay).
        let mut segments: Vec<_> = std::fs::read_dir(dir)
            .expect("kvstore: list the directory")
            .map(|e| e.expect("kvstore: list the directory").path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segments.sort();
        segments
            .pop()
            .is_some_and(|seg| std::fs::remove_file(seg.with_extension("hint")).is_ok())
    }

    fn keydir_bytes_per_key(&self) -> Option<f64> {
        let stats = self.0.stats();
        Some(stats.keydir_bytes as f64 / stats.keys.max(1) as f64)
    }

    fn fsyncs(&self) -> Option<u64> {
        Some(self.0.stats().fsyncs)
    }

    fn put_async<'a>(&'a self, key: &'a [u8], value: &'a [u8]) -> Option<AsyncPut<'a>> {
        Some(Box::pin(async move {
            self.0
                .write_async(&[WriteOp::Put(key, value)], false)
                .await
                .expect("kvstore: put");
        }))
    }
}
