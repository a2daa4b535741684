//! The async client: typed calls, raw pipelining, lazy reconnect.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::conn::Conn;
use super::error::Error;
use super::ClientOptions;
use crate::protocol::cluster::ClusterStatus;
use crate::protocol::stream;
use crate::protocol::{
    opcode, BatchOp, CompactionSummary, ExpireCondition, Expiry, HelloOk, KeyTtl, NewMaster,
    Request, Response,
};

/// Most REDIRECT answers followed for one call.
const MAX_REDIRECTS: usize = 4;

/// An async connection to one kvstore node.
///
/// Methods take `&mut self`: one client is one ordered conversation. Open
/// several clients for concurrency.
pub struct Client {
    addr: String,
    options: ClientOptions,
    conn: Option<Conn>,
    /// When the connection last finished a call; a connection idle longer
    /// than [`STALE_CHECK_AFTER`] is checked for a server-side close before
    /// it is reused, so a write is not sent into a dead socket.
    last_used: Instant,
}

/// Idle time after which a connection is probed before reuse.
const STALE_CHECK_AFTER: Duration = Duration::from_millis(500);

impl Client {
    /// Connects to `addr` (`host:port`) and performs the HELLO exchange.
    pub async fn connect(addr: impl Into<String>, options: ClientOptions) -> Result<Client, Error> {
        let mut client = Client {
            addr: addr.into(),
            options,
            conn: None,
            last_used: Instant::now(),
        };
        client.ensure_connected().await?;
        Ok(client)
    }

    /// Connects with default options.
    pub async fn connect_default(addr: impl Into<String>) -> Result<Client, Error> {
        Client::connect(addr, ClientOptions::default()).await
    }

    /// The address this client talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The server's answer to HELLO on the current connection.
    pub fn server_info(&self) -> Option<&HelloOk> {
        self.conn.as_ref().and_then(|c| c.server.as_ref())
    }

    /// Closes the connection; the next call reconnects.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    pub async fn ping(&mut self) -> Result<(), Error> {
        match self.call_retrying(Request::Ping).await? {
            Response::Pong => Ok(()),
            other => unexpected("PING", &other),
        }
    }

    /// The newest value of `key`, or `None` if it does not exist.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, Error> {
        let key = Bytes::copy_from_slice(key);
        match self.call_retrying(Request::Get { key }).await? {
            Response::Value(v) => Ok(Some(v)),
            Response::NotFound => Ok(None),
            other => unexpected("GET", &other),
        }
    }

    /// Stores `value` under `key`; returns once the server says it is
    /// durable under its policy.
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let request = Request::Put {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
        };
        match self.call(&request).await? {
            Response::Ok => Ok(()),
            other => unexpected("PUT", &other),
        }
    }

    /// Stores `value` under `key`, expiring `ttl` after the server runs
    /// the request (on its clock; rounded up to whole milliseconds, at
    /// least 1). Needs a server of protocol version 2
    /// ([`Error::Unsupported`] otherwise, nothing sent).
    pub async fn put_with_ttl(
        &mut self,
        key: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), Error> {
        self.put_with_expiry(key, value, Expiry::In(millis(ttl).max(1)))
            .await
    }

    /// Stores `value` under `key` with `expiry`, which replaces any the
    /// key had. An [`Expiry::At`] already past leaves the key absent.
    pub async fn put_with_expiry(
        &mut self,
        key: &[u8],
        value: &[u8],
        expiry: Expiry,
    ) -> Result<(), Error> {
        let request = Request::PutExpiring {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            expiry,
        };
        match self.call(&request).await? {
            Response::Ok => Ok(()),
            other => unexpected("PUT_EXPIRING", &other),
        }
    }

    /// Makes `key` expire `ttl` from now (rounded up to whole
    /// milliseconds; zero deletes it). Returns whether the key had a value
    /// (Redis's `PEXPIRE` answering 1).
    pub async fn expire(&mut self, key: &[u8], ttl: Duration) -> Result<bool, Error> {
        self.expire_with(key, Expiry::In(millis(ttl)), ExpireCondition::default())
            .await
    }

    /// Sets the expiry of `key` if it has a value and `only_if` holds;
    /// returns whether it did.
    pub async fn expire_with(
        &mut self,
        key: &[u8],
        expiry: Expiry,
        only_if: ExpireCondition,
    ) -> Result<bool, Error> {
        let request = Request::Expire {
            key: Bytes::copy_from_slice(key),
            expiry,
            only_if,
        };
        match self.call(&request).await? {
            Response::Applied(applied) => Ok(applied),
            other => unexpected("EXPIRE", &other),
        }
    }

    /// Removes the expiry of `key`; returns whether it had a value and an
    /// expiry.
    pub async fn persist(&mut self, key: &[u8]) -> Result<bool, Error> {
        let key = Bytes::copy_from_slice(key);
        match self.call(&Request::Persist { key }).await? {
            Response::Applied(applied) => Ok(applied),
            other => unexpected("PERSIST", &other),
        }
    }

    /// Whether `key` has a value, and until when.
    pub async fn ttl(&mut self, key: &[u8]) -> Result<KeyTtl, Error> {
        let key = Bytes::copy_from_slice(key);
        match self.call_retrying(Request::Ttl { key }).await? {
            Response::Ttl(ttl) => Ok(ttl),
            other => unexpected("TTL", &other),
        }
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&mut self, key: &[u8]) -> Result<bool, Error> {
        let key = Bytes::copy_from_slice(key);
        match self.call(&Request::Delete { key }).await? {
            Response::Deleted { existed } => Ok(existed),
            other => unexpected("DELETE", &other),
        }
    }

    pub async fn exists(&mut self, key: &[u8]) -> Result<bool, Error> {
        let key = Bytes::copy_from_slice(key);
        match self.call_retrying(Request::Exists { key }).await? {
            Response::Exists(e) => Ok(e),
            other => unexpected("EXISTS", &other),
        }
    }

    /// Applies `ops` atomically.
    pub async fn batch(&mut self, ops: Vec<BatchOp>) -> Result<(), Error> {
        match self.call(&Request::Batch(ops)).await? {
            Response::Ok => Ok(()),
            other => unexpected("BATCH", &other),
        }
    }

    /// Runs a compaction on the server and waits for it.
    pub async fn compact(&mut self) -> Result<CompactionSummary, Error> {
        match self.call(&Request::Compact).await? {
            Response::Compacted(c) => Ok(c),
            other => unexpected("COMPACT", &other),
        }
    }

    /// The server's statistics as a JSON object.
    pub async fn stats(&mut self) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
        match self.call_retrying(Request::Stats).await? {
            Response::Stats(json) => Ok(serde_json::from_str(&json)?),
            other => unexpected("STATS", &other),
        }
    }

    /// The coordinator's view of the cluster as this node sees it
    /// (holder, lease, in-sync set, members).
    pub async fn cluster_status(&mut self) -> Result<ClusterStatus, Error> {
        match self.call_retrying(Request::ClusterStatus).await? {
            Response::ClusterStatus(json) => Ok(serde_json::from_str(&json)?),
            other => unexpected("CLUSTER_STATUS", &other),
        }
    }

    /// Sends one request and returns the raw response. An ERROR response
    /// is returned as `Err(Error::Server)`. A REDIRECT from a replica is
    /// followed to the master it names (a few hops at most) unless
    /// [`ClientOptions::follow_redirects`] is off; the client then stays
    /// connected to that master.
    pub async fn call(&mut self, request: &Request) -> Result<Response, Error> {
        for _ in 0..MAX_REDIRECTS {
            let mut responses = self.pipeline(std::slice::from_ref(request)).await?;
            let response = responses.pop().ok_or_else(|| Error::UnexpectedResponse {
                request: opcode::name(request.opcode()),
                response: "nothing",
            })?;
            match response {
                Response::Error { code, message } => return Err(Error::Server { code, message }),
                Response::Redirect { master }
                    if self.options.follow_redirects && master != self.addr =>
                {
                    tracing::debug!(from = %self.addr, to = %master, "following redirect to the master");
                    self.addr = master;
                    self.conn = None;
                }
                Response::Redirect { master } => {
                    return Err(Error::Redirected {
                        addr: self.addr.clone(),
                        master,
                    })
                }
                other => return Ok(other),
            }
        }
        Err(Error::Redirected {
            addr: self.addr.clone(),
            master: "(too many redirects)".into(),
        })
    }

    /// Makes the node a master in a new epoch (it must be a replica or
    /// already a master).
    pub async fn promote(&mut self) -> Result<(), Error> {
        match self.call(&Request::Promote).await? {
            Response::Ok => Ok(()),
            other => unexpected("PROMOTE", &other),
        }
    }

    /// Makes the node follow `master`.
    pub async fn replicate(&mut self, master: &str) -> Result<(), Error> {
        match self
            .call(&Request::Replicate {
                master: master.to_string(),
            })
            .await?
        {
            Response::Ok => Ok(()),
            other => unexpected("REPLICATE", &other),
        }
    }

    /// Planned switchover (a cluster with a coordinator): the master hands
    /// its seat to the node `to` (a node id), or to its most caught-up
    /// eligible replica, and the answer names the master elected next.
    /// Sent to a replica, its REDIRECT is followed to the master unless
    /// [`ClientOptions::follow_redirects`] is off. The server bounds the
    /// wait (its `--switchover-timeout-ms` and lease TTL): give this client
    /// a request timeout above both.
    pub async fn switchover(&mut self, to: Option<&str>) -> Result<NewMaster, Error> {
        let request = Request::Switchover {
            to: to.map(str::to_string),
        };
        match self.call(&request).await? {
            Response::Switchover(new) => Ok(new),
            other => unexpected("SWITCHOVER", &other),
        }
    }

    /// Sends all `requests` at once, then reads one response per request,
    /// in order. ERROR responses are returned in place, not as `Err`; an
    /// `Err` means the connection failed and later answers are lost.
    pub async fn pipeline(&mut self, requests: &[Request]) -> Result<Vec<Response>, Error> {
        let timeout = self.options.request_timeout;
        if self.last_used.elapsed() > STALE_CHECK_AFTER {
            if let Some(conn) = self.conn.as_mut() {
                if conn.is_stale() {
                    self.conn = None;
                }
            }
        }
        self.ensure_connected().await?;
        let addr = self.addr.clone();
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Error::Closed { addr: addr.clone() })?;
        check_version(conn.version(), &addr, requests)?;
        let work = async {
            for request in requests {
                conn.queue(request)?;
            }
            conn.flush().await?;
            let mut responses = Vec::with_capacity(requests.len());
            for _ in requests {
                let response = conn.recv().await?;
                let closes =
                    matches!(&response, Response::Error { code, .. } if code.closes_connection());
                responses.push(response);
                if closes {
                    break;
                }
            }
            Ok(responses)
        };
        let result = with_timeout(timeout, "request", &addr, work).await;
        self.last_used = Instant::now();
        match &result {
            Err(e) if e.breaks_connection() => self.conn = None,
            Ok(responses) if responses.len() < requests.len() => self.conn = None,
            _ => {}
        }
        result
    }

    /// Low-level pipelining for load generators: queue requests, flush,
    /// then read responses one by one. No timeout, no reconnect.
    pub async fn send_raw(&mut self, requests: &[Request]) -> Result<(), Error> {
        self.ensure_connected().await?;
        let addr = self.addr.clone();
        let conn = self
            .conn
            .as_mut()
            .ok_or(Error::Closed { addr: addr.clone() })?;
        check_version(conn.version(), &addr, requests)?;
        for request in requests {
            conn.queue(request)?;
        }
        conn.flush().await
    }

    /// Reads the next response of a [`Client::send_raw`] pipeline.
    pub async fn recv_raw(&mut self) -> Result<Response, Error> {
        let addr = self.addr.clone();
        let conn = self.conn.as_mut().ok_or(Error::Closed { addr })?;
        conn.recv().await
    }

    /// A read-only call: retried once on a new connection if the current
    /// one turns out to be dead (e.g. the server restarted in between).
    async fn call_retrying(&mut self, request: Request) -> Result<Response, Error> {
        let reused = self.conn.is_some();
        match self.call(&request).await {
            Err(e) if reused && e.is_transport() => self.call(&request).await,
            other => other,
        }
    }

    async fn ensure_connected(&mut self) -> Result<(), Error> {
        if self.conn.is_some() {
            return Ok(());
        }
        let hello = stream::hello(
            self.options.credential.as_deref(),
            &self.options.client_name,
        );
        let addr = self.addr.clone();
        let timeout = self.options.connect_timeout;
        let handshake = Conn::open(&addr, self.options.tls.as_ref(), &hello, timeout);
        let conn = with_timeout(timeout, "connect", &addr, handshake).await?;
        self.conn = Some(conn);
        Ok(())
    }
}

/// Refuses, before anything is sent, a request the server's protocol
/// version does not have: an older server would close the connection on
/// it.
fn check_version(version: u16, addr: &str, requests: &[Request]) -> Result<(), Error> {
    match requests.iter().find(|r| r.min_version() > version) {
        Some(request) => Err(Error::Unsupported {
            addr: addr.to_string(),
            request: opcode::name(request.opcode()),
            version,
            needed: request.min_version(),
        }),
        None => Ok(()),
    }
}

/// `d` in whole milliseconds, rounded up, saturating.
fn millis(d: Duration) -> u64 {
    let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

fn unexpected<T>(request: &'static str, response: &Response) -> Result<T, Error> {
    if let Response::Error { code, message } = response {
        return Err(Error::Server {
            code: *code,
            message: message.clone(),
        });
    }
    Err(Error::UnexpectedResponse {
        request,
        response: opcode::name(response.opcode()),
    })
}

async fn with_timeout<T>(
    after: Duration,
    what: &'static str,
    addr: &str,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(after, work).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout {
            what,
            addr: addr.to_string(),
            after,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EXPIRY_VERSION;

    #[test]
    fn expiry_requests_are_not_sent_to_a_version_1_server() {
        let key = Bytes::from_static(b"k");
        let put = Request::Put {
            key: key.clone(),
            value: key.clone(),
        };
        let ttl = Request::Ttl { key: key.clone() };
        let batch = Request::Batch(vec![BatchOp::PutExpiring {
            key: key.clone(),
            value: key,
            expiry: Expiry::In(1),
        }]);
        assert!(check_version(1, "h:1", std::slice::from_ref(&put)).is_ok());
        for refused in [ttl, batch] {
            let requests = [put.clone(), refused];
            let err = check_version(1, "h:1", &requests).unwrap_err();
            assert!(
                matches!(err, Error::Unsupported { needed, version: 1, .. } if needed == EXPIRY_VERSION),
                "{err:?}"
            );
            assert!(err.to_string().contains("upgrade the server"), "{err}");
            assert!(check_version(EXPIRY_VERSION, "h:1", &requests).is_ok());
        }
    }

    #[test]
    fn durations_round_up_to_whole_milliseconds() {
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::from_nanos(1_000_001)), 2);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
