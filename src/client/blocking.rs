//! A synchronous wrapper around [`Client`] for code without a tokio
//! runtime (the CLI, simple tools, tests). It owns a current-thread runtime.

use std::time::Duration;

use bytes::Bytes;
use tokio::runtime::Runtime;

use super::async_client::Client;
use super::error::Error;
use super::ClientOptions;
use crate::protocol::cluster::ClusterStatus;
use crate::protocol::{
    BatchOp, CompactionSummary, ExpireCondition, Expiry, HelloOk, KeyTtl, NewMaster, Request,
    Response,
};

/// A blocking connection to one kvstore node.
pub struct BlockingClient {
    runtime: Runtime,
    inner: Client,
}

impl std::fmt::Debug for BlockingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingClient")
            .field("addr", &self.inner.addr())
            .finish_non_exhaustive()
    }
}

impl BlockingClient {
    /// Connects to `addr` and performs the HELLO exchange.
    pub fn connect(addr: impl Into<String>, options: ClientOptions) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                addr: "local runtime".into(),
                source,
            })?;
        let inner = runtime.block_on(Client::connect(addr, options))?;
        Ok(BlockingClient { runtime, inner })
    }

    pub fn server_info(&self) -> Option<&HelloOk> {
        self.inner.server_info()
    }

    pub fn ping(&mut self) -> Result<(), Error> {
        self.runtime.block_on(self.inner.ping())
    }

    pub fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, Error> {
        self.runtime.block_on(self.inner.get(key))
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.runtime.block_on(self.inner.put(key, value))
    }

    /// See [`Client::put_with_ttl`].
    pub fn put_with_ttl(&mut self, key: &[u8], value: &[u8], ttl: Duration) -> Result<(), Error> {
        self.runtime
            .block_on(self.inner.put_with_ttl(key, value, ttl))
    }

    /// See [`Client::put_with_expiry`].
    pub fn put_with_expiry(
        &mut self,
        key: &[u8],
        value: &[u8],
        expiry: Expiry,
    ) -> Result<(), Error> {
        self.runtime
            .block_on(self.inner.put_with_expiry(key, value, expiry))
    }

    /// See [`Client::expire`].
    pub fn expire(&mut self, key: &[u8], ttl: Duration) -> Result<bool, Error> {
        self.runtime.block_on(self.inner.expire(key, ttl))
    }

    /// See [`Client::expire_with`].
    pub fn expire_with(
        &mut self,
        key: &[u8],
        expiry: Expiry,
        only_if: ExpireCondition,
    ) -> Result<bool, Error> {
        self.runtime
            .block_on(self.inner.expire_with(key, expiry, only_if))
    }

    /// See [`Client::persist`].
    pub fn persist(&mut self, key: &[u8]) -> Result<bool, Error> {
        self.runtime.block_on(self.inner.persist(key))
    }

    /// See [`Client::ttl`].
    pub fn ttl(&mut self, key: &[u8]) -> Result<KeyTtl, Error> {
        self.runtime.block_on(self.inner.ttl(key))
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<bool, Error> {
        self.runtime.block_on(self.inner.delete(key))
    }

    pub fn exists(&mut self, key: &[u8]) -> Result<bool, Error> {
        self.runtime.block_on(self.inner.exists(key))
    }

    pub fn batch(&mut self, ops: Vec<BatchOp>) -> Result<(), Error> {
        self.runtime.block_on(self.inner.batch(ops))
    }

    pub fn compact(&mut self) -> Result<CompactionSummary, Error> {
        self.runtime.block_on(self.inner.compact())
    }

    pub fn stats(&mut self) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
        self.runtime.block_on(self.inner.stats())
    }

    /// See [`Client::cluster_status`].
    pub fn cluster_status(&mut self) -> Result<ClusterStatus, Error> {
        self.runtime.block_on(self.inner.cluster_status())
    }

    pub fn promote(&mut self) -> Result<(), Error> {
        self.runtime.block_on(self.inner.promote())
    }

    pub fn replicate(&mut self, master: &str) -> Result<(), Error> {
        self.runtime.block_on(self.inner.replicate(master))
    }

    pub fn switchover(&mut self, to: Option<&str>) -> Result<NewMaster, Error> {
        self.runtime.block_on(self.inner.switchover(to))
    }

    pub fn call(&mut self, request: &Request) -> Result<Response, Error> {
        self.runtime.block_on(self.inner.call(request))
    }

    pub fn pipeline(&mut self, requests: &[Request]) -> Result<Vec<Response>, Error> {
        self.runtime.block_on(self.inner.pipeline(requests))
    }
}
