//! The RESP front end (`--resp-listen`): Redis clients, `redis-cli` and
//! `redis-benchmark` against the same engine as the binary protocol.
//!
//! - [`parse`]: bounded request decoding (multibulk and inline);
//! - [`reply`]: RESP2 answers;
//! - [`table`] and [`commands`]: what is supported and how it runs;
//! - [`info`]: `INFO` and `CONFIG GET`;
//! - [`codec`]: the codec the node's connection loop drives (pipelining,
//!   timeouts and shutdown are the loop's, shared with binary clients);
//! - this file: the front end for the node's accept loop, and the state
//!   shared by RESP connections.
//!
//! RESP connections have their own limit, the same number as
//! `--max-connections` (so a node takes up to twice that in total), and the
//! same idle and frame timeouts as binary connections. Only RESP2 is
//! spoken; `HELLO 3` is refused with `-NOPROTO`.

pub mod auth;
pub mod codec;
pub mod commands;
pub mod expiry;
pub mod info;
pub mod parse;
pub mod reply;
pub mod table;
#[cfg(test)]
mod thread_moves;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prometheus_client::metrics::counter::Atomic;
use tokio::net::TcpListener;
use tracing::info;

use crate::metrics::striped::StripedU64;
use crate::node::connection::Served;
use crate::node::listener::{self, Event, FrontEnd};
use crate::node::workers::Workers;
use crate::node::Node;
use crate::security::ServerStream;
use codec::RespCodec;

/// The RESP listener's own settings; everything else is the node's.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The bound RESP address.
    pub addr: SocketAddr,
    pub limits: parse::Limits,
}

impl Settings {
    /// The settings of a RESP listener bound at `addr` on `node`: a
    /// request's arguments may add up to the node's frame limit.
    pub fn new(addr: SocketAddr, node: &Node) -> Settings {
        Settings {
            addr,
            limits: parse::Limits {
                max_request: node.limits.max_frame_bytes as usize,
                ..parse::Limits::default()
            },
        }
    }
}

/// Counters for `INFO stats`. The three every request bumps are striped
/// (one cache line per thread, summed when read).
#[derive(Debug, Default)]
pub struct Counters {
    commands: StripedU64,
    received: AtomicU64,
    rejected: AtomicU64,
    hits: StripedU64,
    misses: StripedU64,
    connected: AtomicU64,
}

impl Counters {
    pub fn commands_processed(&self) -> u64 {
        self.commands.get()
    }
    pub fn connections_received(&self) -> u64 {
        self.received.load(Relaxed)
    }
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Relaxed)
    }
    pub fn hits(&self) -> u64 {
        self.hits.get()
    }
    pub fn misses(&self) -> u64 {
        self.misses.get()
    }
}

/// State shared by every RESP connection of a node.
#[derive(Debug)]
pub struct Shared {
    pub settings: Settings,
    pub started: Instant,
    pub counters: Counters,
    next_id: AtomicU64,
}

impl Shared {
    pub fn new(settings: Settings) -> Shared {
        Shared {
            settings,
            started: Instant::now(),
            counters: Counters::default(),
            next_id: AtomicU64::new(1),
        }
    }
    pub fn count_command(&self) {
        self.counters.commands.inc();
    }
    pub fn count_hit(&self, hit: bool) {
        let c = if hit {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        c.inc();
    }
    pub fn connected(&self) -> u64 {
        self.counters.connected.load(Relaxed)
    }
}

/// One client's connection state.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub name: Option<Bytes>,
    pub peer: String,
    pub local: String,
    /// Set by QUIT: answer, flush, close.
    pub quit: bool,
    /// What this client has proved (AUTH).
    pub credential: crate::security::Credential,
    pub opened: Instant,
}

impl Session {
    /// A `CLIENT INFO` line.
    pub fn describe(&self) -> String {
        let name = self
            .name
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        format!(
            "id={} addr={} laddr={} name={} age={} db=0 resp=2",
            self.id,
            self.peer,
            self.local,
            name,
            self.opened.elapsed().as_secs()
        )
    }
}

impl FrontEnd for Shared {
    type Codec = RespCodec;
    const NAME: &'static str = "RESP";

    fn codec(this: &Arc<Self>, node: &Arc<Node>, stream: &ServerStream) -> RespCodec {
        let addr = |a: std::io::Result<SocketAddr>| {
            a.map(|a| a.to_string())
                .unwrap_or_else(|_| "unknown".into())
        };
        let session = Session {
            id: this.next_id.fetch_add(1, Relaxed),
            name: None,
            peer: addr(stream.tcp().peer_addr()),
            local: addr(stream.tcp().local_addr()),
            quit: false,
            credential: crate::security::Credential::new(&node.security),
            opened: Instant::now(),
        };
        RespCodec::new(Arc::clone(node), Arc::clone(this), session)
    }

    fn tls_refusal(&self) -> &'static [u8] {
        b"-ERR this port requires TLS: connect with TLS (redis-cli --tls --cacert CA)\r\n"
    }

    fn too_many(&self, _node: &Node) -> Vec<u8> {
        b"-ERR max number of clients reached\r\n".to_vec()
    }

    fn count(&self, event: Event) {
        let c = &self.counters;
        match event {
            Event::Received => c.received.fetch_add(1, Relaxed),
            Event::Rejected => c.rejected.fetch_add(1, Relaxed),
            Event::Opened => c.connected.fetch_add(1, Relaxed),
            Event::Closed => c.connected.fetch_sub(1, Relaxed),
        };
    }

    async fn hand_off(&self, _node: Arc<Node>, served: Served<RespCodec>) {
        // RESP has no request that hands its connection over.
        if let Served::HandOff { hand_off, .. } = served {
            match hand_off {}
        }
    }
}

/// Serves RESP clients on `listener` until the node shuts down, then waits
/// up to the node's shutdown timeout for them to finish.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    settings: Settings,
    workers: Arc<Workers>,
) {
    let shared = Arc::new(Shared::new(settings));
    info!(resp = %shared.settings.addr, "serving RESP clients");
    listener::serve(listener, node, shared, workers).await;
}
