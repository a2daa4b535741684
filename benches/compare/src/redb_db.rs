//! redb 4: one write transaction per put (`Durability::None` for the load,
//! `Durability::Immediate` when synced); gets share one read transaction per
//! thread, as redb-bench does. redb has a single writer, so concurrent
//! writers queue on `begin_write`.

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, TableDefinition};

use crate::workload::{Db, Key};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bench");

pub struct Redb {
    db: Database,
    durability: Durability,
}

impl Db for Redb {
    fn open(dir: &Path, synced: bool) -> Self {
        let db = Database::create(dir.join("redb")).expect("redb: open");
        let durability = if synced {
            Durability::Immediate
        } else {
            Durability::None
        };
        Redb { db, durability }
    }

    fn put(&self, key: &[u8], value: &[u8]) {
        let mut txn = self.db.begin_write().expect("redb: begin_write");
        txn.set_durability(self.durability)
            .expect("redb: set_durability");
        {
            let mut table = txn.open_table(TABLE).expect("redb: open_table");
            table.insert(key, value).expect("redb: insert");
        }
        txn.commit().expect("redb: commit");
    }

    fn get_many(&self, keys: &[Key]) -> u64 {
        let txn = self.db.begin_read().expect("redb: begin_read");
        let table = txn.open_table(TABLE).expect("redb: open_table");
        keys.iter()
            .map(|k| {
                table
                    .get(k.as_slice())
                    .expect("redb: get")
                    .map_or(0, |v| v.value().len() as u64)
            })
            .sum()
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let txn = self.db.begin_read().expect("redb: begin_read");
        let table = txn.open_table(TABLE).expect("redb: open_table");
        let value = table.get(key).expect("redb: get");
        value.map(|v| v.value().to_vec())
    }

    fn close(self) {
        // Non-durable commits are made durable by the next durable one.
        let txn = self.db.begin_write().expect("redb: begin_write");
        txn.commit().expect("redb: commit");
    }
}
