//! The one accept loop, for every front end: one task per connection, in
//! the front end's [`Slots`] (at most `max_connections` at once, at most
//! `max_unauthenticated` of them in their handshake; a new connection is
//! admitted by closing the oldest one still in its handshake or the one
//! idle the longest), TLS when the node has a certificate, and the drain
//! at shutdown.
//!
//! A connection that cannot be admitted (every slot held by a replication
//! stream, or too many connections still closing) is given the front
//! end's short refusal in a task of its own with a one-second bound; at
//! most [`MAX_REJECTING`] of those run at once and beyond that the socket
//! is simply closed, so a flood of connections costs the node a bounded
//! amount of work and never delays the clients it is serving.
//!
//! The loop stops accepting when the node's shutdown starts, then waits up
//! to `shutdown_timeout` for its connections to finish and aborts the rest.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::slots::{Admission, Slots, Taken};
use super::workers::{Seat, Workers};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::connection::{self, Codec, Served};
use super::Node;
use crate::metrics::AuthFailure;
use crate::security::tls::{self, Accepted};
use crate::security::ServerStream;

/// Rejections in progress at once; more are closed without a word.
const MAX_REJECTING: usize = 64;
/// Time a rejection may take to write its answer.
const REJECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after an accept error such as EMFILE, so the loop does not spin
/// while file descriptors are exhausted.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A connection's life as a front end counts it (RESP's `INFO` figures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Accepted by the socket, before the connection limit.
    Received,
    /// Refused: no slot could be made free.
    Rejected,
    /// Taken into service.
    Opened,
    /// Done with.
    Closed,
}

/// One front end as the accept loop sees it.
pub trait FrontEnd: Send + Sync + 'static {
    type Codec: Codec;

    /// The front end in logs: "client", "RESP".
    const NAME: &'static str;

    /// The codec of a new connection.
    fn codec(this: &Arc<Self>, node: &Arc<Node>, stream: &ServerStream) -> Self::Codec;

    /// What a plaintext client gets on a TLS-only port, in the clear.
    fn tls_refusal(&self) -> &'static [u8];

    /// What a connection over the limit gets before it is closed.
    fn too_many(&self, node: &Node) -> Vec<u8>;

    /// Counts a connection event (on top of the node's metrics).
    fn count(&self, _event: Event) {}

    /// Serves a connection its codec handed over.
    fn hand_off(
        &self,
        node: Arc<Node>,
        served: Served<Self::Codec>,
    ) -> impl Future<Output = ()> + Send;
}

/// Accepts connections for `front` on `listener` until the node's
/// shutdown starts, then drains them. Each connection is served on the
/// least loaded of `workers`' threads, to its end (a replication or
/// backup stream it is handed over to included).
pub async fn serve<F: FrontEnd>(
    listener: TcpListener,
    node: Arc<Node>,
    front: Arc<F>,
    workers: Arc<Workers>,
) {
    let limits = node.limits;
    let slots = Arc::new(Slots::new(
        limits.max_connections,
        limits.max_unauthenticated,
    ));
    let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
    let mut tasks = JoinSet::new();
    loop {
        // Reap finished tasks so the set stays the size of the live ones.
        while tasks.try_join_next().is_some() {}
        let accepted = tokio::select! {
            () = node.shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Per-connection errors (ECONNABORTED) and resource
                // exhaustion (EMFILE, ENFILE) alike: the listener itself is
                // fine, so log, back off briefly and keep accepting.
                warn!("{} accept failed: {e}", F::NAME);
                tokio::select! {
                    () = node.shutdown.wait() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!(%peer, "set_nodelay failed: {e}");
        }
        front.count(Event::Received);
        let Some(slot) = admit(&slots, &node).await else {
            front.count(Event::Rejected);
            node.metrics.connection_rejected();
            debug!(%peer, "{} connection refused: max connections ({}) reached", F::NAME, limits.max_connections);
            if let Ok(permit) = Arc::clone(&rejecting).try_acquire_owned() {
                let answer = front.too_many(&node);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(REJECT_TIMEOUT, reject(stream, &answer)).await;
                    drop(permit);
                });
            }
            continue;
        };
        node.metrics.connection_opened();
        front.count(Event::Opened);
        let (node, front) = (Arc::clone(&node), Arc::clone(&front));
        let seat = workers.pick();
        let worker = seat.handle().clone();
        tasks.spawn_on(
            async move {
                let slot = Arc::new(slot);
                serve_one(stream, peer, &node, &front, &slot, seat).await;
                front.count(Event::Closed);
                node.metrics.connection_closed();
                drop(slot);
            },
            &worker,
        );
    }
    drop(listener);
    while tasks.try_join_next().is_some() {}
    info!(
        open = tasks.len(),
        "stopped accepting {} connections",
        F::NAME
    );
    let bound = limits.shutdown_timeout;
    let all_done = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(bound, all_done).await.is_err() {
        warn!(
            left = tasks.len(),
            "{} connections still open after {bound:?}; closing them",
            F::NAME
        );
        tasks.shutdown().await;
    }
}

/// One admitted connection, on its thread: the socket moved to that
/// thread's reactor, TLS, then the connection loop and any hand-off.
/// When the connection moves to another thread, the rest of its life is
/// a task there, which this one waits for (and aborts, if it is aborted
/// itself at the end of the drain).
async fn serve_one<F: FrontEnd>(
    stream: TcpStream,
    peer: SocketAddr,
    node: &Arc<Node>,
    front: &Arc<F>,
    slot: &Arc<Taken>,
    seat: Seat,
) {
    // Accepted, the socket is registered with the accept loop's runtime:
    // moved to this thread's, or every readiness event would wake that
    // runtime to wake this thread.
    let stream = match stream.into_std().and_then(TcpStream::from_std) {
        Ok(stream) => stream,
        Err(e) => {
            warn!(%peer, "{} connection dropped: cannot move it to its thread: {e}", F::NAME);
            return;
        }
    };
    let acceptor = node.security.acceptor();
    // The TLS handshake is part of the connection's handshake.
    let bound = node.limits.frame_timeout.min(node.limits.handshake_timeout);
    let accepted = tokio::select! {
        accepted = tls::accept(stream, acceptor, bound, front.tls_refusal()) => Some(accepted),
        () = slot.evicted() => None,
    };
    match accepted {
        Some(Accepted::Stream(stream)) => {
            let codec = F::codec(front, node, &stream);
            let mut moved = serve_here(stream, codec, node, front, slot, seat).await;
            while let Some((stream, codec, seat)) = moved {
                let (node, front, slot) = (Arc::clone(node), Arc::clone(front), Arc::clone(slot));
                let mut there = JoinSet::new();
                let worker = seat.handle().clone();
                there.spawn_on(
                    async move {
                        match TcpStream::from_std(stream) {
                            Ok(stream) => {
                                let stream = ServerStream::Plain(stream);
                                serve_here(stream, codec, &node, &front, &slot, seat).await
                            }
                            Err(e) => {
                                warn!(
                                    "{} connection dropped: cannot move it to thread {}: {e}",
                                    F::NAME,
                                    seat.thread()
                                );
                                None
                            }
                        }
                    },
                    &worker,
                );
                moved = there.join_next().await.and_then(Result::ok).flatten();
            }
        }
        Some(Accepted::Refused(why)) => {
            node.metrics.auth_failure(AuthFailure::Tls);
            warn!(%peer, "{} connection refused: {why}", F::NAME);
        }
        None => {
            debug!(%peer, "{} connection closed in its TLS handshake to admit a new one", F::NAME)
        }
    }
}

/// A connection that moves: its socket out of every reactor, its codec,
/// and its seat on the thread it goes to.
type Moved<C> = (std::net::TcpStream, C, Seat);

/// Serves a connection on the thread of `seat` until it ends (after any
/// hand-off) or moves to another thread.
async fn serve_here<F: FrontEnd>(
    stream: ServerStream,
    codec: F::Codec,
    node: &Arc<Node>,
    front: &Arc<F>,
    slot: &Arc<Taken>,
    seat: Seat,
) -> Option<Moved<F::Codec>> {
    let served = connection::serve(stream, codec, Arc::clone(node), slot, Some(&seat)).await;
    match served {
        Served::Moved { stream, codec, to } => match stream.into_std() {
            Ok(stream) => Some((stream, codec, seat.move_to(to))),
            Err(e) => {
                warn!(
                    "{} connection dropped: cannot move it to thread {to}: {e}",
                    F::NAME
                );
                None
            }
        },
        Served::HandOff { .. } => {
            slot.pin();
            front.hand_off(Arc::clone(node), served).await;
            None
        }
        Served::Ended(_) => None,
    }
}

/// A slot for a new connection, by the policy of [`Slots`]; when too many
/// connections closed to make room are still ending, waits (bounded) for
/// one of them, holding the accept loop back meanwhile. `None`: refused.
async fn admit(slots: &Arc<Slots>, node: &Node) -> Option<Taken> {
    let deadline = tokio::time::Instant::now() + REJECT_TIMEOUT;
    loop {
        match slots.admit(&node.metrics) {
            Admission::Admitted(taken) => return Some(taken),
            Admission::Full => return None,
            Admission::Busy => {
                let freed = tokio::time::timeout_at(deadline, slots.freed());
                if freed.await.is_err() {
                    return None;
                }
            }
        }
    }
}

/// Writes `answer` to a connection over the limit, then closes it.
async fn reject(mut stream: TcpStream, answer: &[u8]) {
    let _ = stream.write_all(answer).await;
    let _ = stream.shutdown().await;
}
