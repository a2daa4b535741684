//! kvstore's side of the benchmark workload, through the public engine API;
//! shared by `benches/engine.rs` and `benches/compare` through `#[path]`.

use std::path::Path;

use kvstore::engine::{Durability, Engine, Options};

use super::workload::{Db, Key};

pub struct Kvstore(Engine);

impl Db for Kvstore {
    fn open(dir: &Path, synced: bool) -> Self {
        let options = Options {
            durability: if synced {
                Durability::Always
            } else {
                Durability::Never
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

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key).expect("kvstore: get")
    }

    fn close(self) {
        self.0.close().expect("kvstore: close");
    }

    fn keydir_bytes_per_key(&self) -> Option<f64> {
        let stats = self.0.stats();
        Some(stats.keydir_bytes as f64 / stats.keys.max(1) as f64)
    }

    fn fsyncs(&self) -> Option<u64> {
        Some(self.0.stats().fsyncs)
    }
}
