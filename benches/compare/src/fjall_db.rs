//! fjall 3 with its defaults: each insert reaches the OS (its journal's
//! `PersistMode::Buffer`) but is not fsynced; when synced, every insert is
//! followed by `persist(PersistMode::SyncData)`.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::workload::{Db, Key};

pub struct Fjall {
    db: Database,
    items: Keyspace,
    synced: bool,
}

impl Db for Fjall {
    fn open(dir: &Path, synced: bool) -> Self {
        let db = Database::builder(dir).open().expect("fjall: open");
        let items = db
            .keyspace("bench", KeyspaceCreateOptions::default)
            .expect("fjall: keyspace");
        Fjall { db, items, synced }
    }

    fn put(&self, key: &[u8], value: &[u8]) {
        self.items.insert(key, value).expect("fjall: insert");
        if self.synced {
            self.db
                .persist(PersistMode::SyncData)
                .expect("fjall: persist");
        }
    }

    fn get_many(&self, keys: &[Key]) -> u64 {
        keys.iter()
            .map(|k| {
                self.items
                    .get(k)
                    .expect("fjall: get")
                    .map_or(0, |v| v.len() as u64)
            })
            .sum()
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.items.get(key).expect("fjall: get").map(|v| v.to_vec())
    }

    fn close(self) {
        self.db
            .persist(PersistMode::SyncAll)
            .expect("fjall: persist");
    }
}
