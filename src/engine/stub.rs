//! THROWAWAY in-memory stand-in for the engine API in
//! /work/notes/engine-api.md, so the server compiles before the real engine
//! lands on main. Deleted when main is merged.
#![allow(missing_docs, clippy::missing_errors_doc)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("engine is closed")]
    Closed,
}

#[derive(Debug, Clone, Default)]
pub enum Durability {
    #[default]
    Always,
    Interval(Duration),
    Never,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub durability: Durability,
    pub segment_max_bytes: u64,
    pub more: (),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Always,
            segment_max_bytes: 256 << 20,
            more: (),
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub keys: u64,
    pub live_bytes: u64,
    pub disk_bytes: u64,
    pub segments: u64,
    pub log_start: u64,
    pub log_end: u64,
    pub durable_end: u64,
    pub puts: u64,
    pub deletes: u64,
    pub fsyncs: u64,
    pub bytes_written: u64,
    pub compactions: u64,
    pub poisoned: Option<String>,
}

pub enum BatchOp {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

pub struct CompactionReport {
    pub horizon: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub keys_kept: u64,
}

#[derive(Clone, Default)]
pub struct Engine {
    map: Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>>,
}

impl Engine {
    pub fn open(_dir: impl AsRef<Path>, _options: Options) -> Result<Engine, Error> {
        Ok(Engine::default())
    }
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.map.lock().get(key).cloned())
    }
    pub fn contains(&self, key: &[u8]) -> Result<bool, Error> {
        Ok(self.map.lock().contains_key(key))
    }
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.map.lock().insert(key.to_vec(), value.to_vec());
        Ok(())
    }
    pub fn delete(&self, key: &[u8]) -> Result<bool, Error> {
        Ok(self.map.lock().remove(key).is_some())
    }
    pub async fn put_async(&self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.put(key, value)
    }
    pub async fn delete_async(&self, key: &[u8]) -> Result<bool, Error> {
        self.delete(key)
    }
    pub fn stats(&self) -> Stats {
        Stats {
            keys: self.map.lock().len() as u64,
            ..Stats::default()
        }
    }
    pub fn flush(&self) -> Result<(), Error> {
        Ok(())
    }
    pub fn close(self) -> Result<(), Error> {
        Ok(())
    }
}
