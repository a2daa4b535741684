//! sled 0.34: no background flusher for the unsynced load (its default is a
//! flush every 500 ms); `flush()` after every insert when synced.

use std::path::Path;

use crate::workload::{Db, Key};

pub struct Sled {
    db: sled::Db,
    synced: bool,
}

impl Db for Sled {
    fn open(dir: &Path, synced: bool) -> Self {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .open()
            .expect("sled: open");
        Sled { db, synced }
    }

    fn put(&self, key: &[u8], value: &[u8]) {
        self.db.insert(key, value).expect("sled: insert");
        if self.synced {
            self.db.flush().expect("sled: flush");
        }
    }

    fn get_many(&self, keys: &[Key]) -> u64 {
        keys.iter()
            .map(|k| {
                self.db
                    .get(k)
                    .expect("sled: get")
                    .map_or(0, |v| v.len() as u64)
            })
            .sum()
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.db.get(key).expect("sled: get").map(|v| v.to_vec())
    }

    fn close(self) {
        self.db.flush().expect("sled: flush");
    }
}
