//! The one connection loop: read requests, answer each in order, enforce
//! the per-connection limits, timeouts and the shutdown. Each front end
//! plugs a [`Codec`] into it (the binary protocol in `server::binary`,
//! RESP in `resp::codec`); the codec decodes requests, gates and runs
//! them, and encodes answers, and knows nothing of sockets or timers.
//!
//! Invariants:
//! - answers are written in request order; all requests already buffered
//!   are answered before the next read, in one write, so a pipelining
//!   client costs one read and one write per batch (answers are flushed
//!   early once [`FLUSH_AT`] bytes are pending);
//! - consecutive writes of one pipeline (the codec says which requests
//!   are writes) are started in request order and then awaited together,
//!   so they share one group commit instead of paying one fsync each; a
//!   request that follows them waits until they are done, so it sees them.
//!   A codec may ready what a run of several will touch, or append
//!   several of its writes as one ([`Codec::run_writes`]);
//! - the read buffer grows only as bytes arrive, never by an announced
//!   length: once less than a quarter of [`READ_CHUNK`] is free, it is
//!   replaced by one with room for what the request still needs (if the
//!   codec knows), but at most as much as is already buffered (doubling,
//!   so a large request costs few copies and at most twice what arrived),
//!   and at least [`READ_CHUNK`]. The codec bounds every length before
//!   this loop makes room. A buffer grown past [`SHRINK_ABOVE`] is
//!   released once it is empty, so an idle connection holds little;
//! - both buffers are charged to the node's client memory budget
//!   ([`super::memory`]) before they grow: a read that does not fit
//!   refuses the request (the codec's [`Cut::Memory`] answer, then the
//!   close), an answer that does not fit is replaced by that refusal,
//!   then the close; the connection holding the most memory at that
//!   moment gets [`Cut::Largest`] at its next wait and is closed too. The decoded requests of a read share its buffer, so
//!   a buffer is replaced (never grown in place) only once they are all
//!   answered, and the charge is always the size of the one allocation
//!   the connection holds;
//! - a connection that has not completed its handshake (the codec says
//!   when it is authenticated; with authentication off, its first request
//!   does) within `handshake_timeout` of its start gets the codec's
//!   [`Cut::HandshakeTimeout`] answer and is closed;
//! - a connection chosen to make room for a new one ([`super::slots`])
//!   gets [`Cut::Evicted`] at its next wait (read or write) and is
//!   closed; every byte received marks it active;
//! - an answer that ends the connection (a connection error, QUIT) is
//!   flushed, then the write side is shut;
//! - a connection idle for `idle_timeout` (0 = never) is closed silently;
//!   a request that has started and is not complete within
//!   `frame_timeout` gets the codec's timeout answer, then the close. A
//!   request starts when the one before it completes, so a long stream of
//!   pipelined requests is never timed out as a whole;
//! - a client that reads none of its answers is bounded like an idle one:
//!   a write that makes no progress for `idle_timeout` ends the connection;
//! - at shutdown, every request read before the loop notices it, and the
//!   one request it was in the middle of reading, is answered in full;
//!   the next request (one already read, one still to come, or none yet)
//!   gets the codec's shutting-down answer, which ends the connection. The
//!   loop then shuts its write side (FIN after the last answer) and reads
//!   and discards until the client closes or goes quiet for [`LINGER`], so
//!   that a request the client sends meanwhile does not turn the close
//!   into a reset that would cut the answers still in flight;
//! - a TLS ClientHello arriving on a plaintext port is recognised by its
//!   whole shape in the first 11 bytes ([`first_bytes`]) and the
//!   connection closed at once, so a TLS client fails fast instead of
//!   waiting for a request that never completes; a request that merely
//!   starts with the same bytes is served;
//! - between requests, with nothing read and nothing left to write, a
//!   plaintext connection whose thread has been asked to give
//!   connections away ([`super::workers`]) stops here and is resumed by
//!   the loop on the other thread, its codec's state unchanged.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::memory::{Exhausted, Lease};
use super::slots::Slot;
use super::workers::Seat;
use super::Node;
use crate::metrics::{AuthFailure, MemoryRefusal};
use crate::security::tls::{first_bytes, FirstBytes};
use crate::security::ServerStream;

/// Smallest read: enough for many small pipelined requests at once.
pub const READ_CHUNK: usize = 16 * 1024;
/// Flush answers once this many bytes are pending, even mid-pipeline.
pub const FLUSH_AT: usize = 256 * 1024;
/// A buffer grown past this is released once it is empty again (twice
/// [`FLUSH_AT`]: a pipelining connection keeps its write buffer).
pub const SHRINK_ABOVE: usize = 2 * FLUSH_AT;
/// Most writes started together before they are awaited.
pub const MAX_WRITE_RUN: usize = 1024;
/// Most reads readied together before the first runs: what they touch
/// must still be in the CPU's caches when they run.
pub const MAX_READ_RUN: usize = 64;
/// Stand-in for "no idle timeout": far away, but no overflow.
pub const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);
/// At shutdown, how long the loop waits for a client that neither closes
/// nor sends before it closes the connection.
pub const LINGER: Duration = Duration::from_millis(500);

/// What the codec decided for one decoded request.
pub enum Admit<C: Codec> {
    /// Run it now, after the writes before it.
    Run(C::Request),
    /// A read that only looks at the store: run in order like
    /// [`Admit::Run`], but consecutive reads are gathered, so that the
    /// codec readies them all ([`Codec::warm_reads`]) before the first runs.
    Read(C::Request),
    /// A write that may share a group commit with the writes around it.
    Write(C::Request),
    /// Send this instead of running anything (a refusal of the auth gate,
    /// an invalid request).
    Answer(C::Answer),
    /// Nothing to answer (RESP's empty request).
    Skip,
    /// The connection stops being request/answer (the binary protocol's
    /// REPL_SYNC and BACKUP): once every earlier answer is out, the loop
    /// returns it to the front end with the stream.
    HandOff(C::HandOff),
}

/// Why the loop ends a connection on its own, with the codec's answer.
#[derive(Debug, Clone, Copy)]
pub enum Cut {
    /// No completed handshake within this time.
    HandshakeTimeout(Duration),
    /// Closed to admit a new connection.
    Evicted,
    /// The client memory budget refused a request or answer.
    Memory(Exhausted),
    /// The budget refused another connection while this one held the
    /// most (`held` bytes).
    Largest { held: u64 },
}

/// An answer after which the connection is closed.
#[derive(Debug)]
pub struct Closing {
    /// For the log: what ended the connection.
    pub why: String,
    /// Whether it counts in `kvstore_protocol_errors_total`.
    pub protocol_error: bool,
}

/// One front end's protocol: bytes to requests, requests to answers,
/// answers to bytes.
pub trait Codec: Send + Sync + Sized + 'static {
    /// A decoded request (it may carry a decoding error to answer).
    type Request: Send;
    /// An answer, before encoding.
    type Answer: Send + Sync;
    /// What a connection turns into when it leaves request/answer;
    /// [`std::convert::Infallible`] for a protocol without such requests.
    type HandOff: Send;

    /// Takes the next complete request off the front of `buf`;
    /// `Ok(None)` until one is complete. `Err(answer)`: the bytes cannot
    /// be a request; the answer is sent and the connection closed.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Request>, Self::Answer>;

    /// How many more bytes the request at the front of `buf` needs, as
    /// far as the codec knows: the loop makes room for that much, but
    /// never for more than `buf` already holds (at least [`READ_CHUNK`]).
    /// A codec that cannot tell answers `buf.len()`.
    fn missing(&self, buf: &BytesMut) -> usize;

    /// The auth gate, then what to do with `request`. `pipelined`: other
    /// requests came before it in the same read, so their answers are not
    /// out yet (a request that takes the connection over must come alone).
    fn admit(&mut self, request: Self::Request, pipelined: bool) -> Admit<Self>;

    /// Runs one request (it may change the connection's state).
    fn run(&mut self, request: Self::Request) -> impl Future<Output = Self::Answer> + Send + '_;

    /// Runs one write of a run. The writes of a run are polled together in
    /// request order: each must start its write (append to the log) when
    /// first polled, so log order is request order.
    fn run_write(&self, request: Self::Request) -> impl Future<Output = Self::Answer> + Send + '_;

    /// Runs a run of more than one write and answers each, in request
    /// order. The default starts each with [`Codec::run_write`], in
    /// request order, and awaits them together. A codec may ready what
    /// they will touch first (the engine's index for their keys, so that
    /// writes following each other through the engine's single writer do
    /// not wait on memory there), or append several as one, as long as
    /// the log holds them in request order and each gets the answer it
    /// would have got alone.
    fn run_writes(
        &self,
        writes: Vec<Self::Request>,
    ) -> impl Future<Output = Vec<Self::Answer>> + Send + '_ {
        futures_util::future::join_all(writes.into_iter().map(|r| self.run_write(r)))
    }

    /// Readies what a run of more than one read will touch (the engine's
    /// index and log for their keys), so that their waits on memory
    /// overlap instead of following one another. A hint: changes nothing.
    fn warm_reads(&self, _reads: &[Self::Request]) {}

    /// Appends `answer` to `out`; `Some` when the connection must close
    /// after it.
    fn encode(&mut self, answer: &Self::Answer, out: &mut BytesMut) -> Option<Closing>;

    /// The bytes [`Codec::encode`] appends for `answer`, or close above
    /// (the loop reserves them first; a short estimate is charged after).
    fn encoded_len(&self, answer: &Self::Answer) -> usize;

    /// Whether the connection has authenticated (always, with
    /// authentication off).
    fn authenticated(&self) -> bool;

    /// The answer before the loop closes the connection for `cut`.
    fn cut(&self, cut: Cut) -> Self::Answer;

    /// The answer to a request not complete within the frame timeout.
    fn frame_timeout(&self) -> Self::Answer;

    /// The answer to a request that arrives after the shutdown began.
    fn shutting_down(&self) -> Self::Answer;
}

/// Why a connection ended; for logs and metrics.
#[derive(Debug)]
pub enum End {
    /// The peer closed cleanly between requests.
    Eof,
    /// The peer closed in the middle of a request.
    EofMidRequest,
    Idle,
    FrameTimeout,
    /// No completed handshake in time.
    HandshakeTimeout,
    /// Closed to admit a new connection.
    Evicted,
    Shutdown,
    /// The codec closed it after an answer.
    Closed(Closing),
    /// A TLS handshake arrived on this plaintext port.
    TlsOnPlainPort,
    Io(std::io::Error),
}

/// How [`serve`] finished.
pub enum Served<C: Codec> {
    Ended(End),
    /// Asked to move to thread `to` between requests: the socket and the
    /// codec, to be served there from where they stand (nothing buffered).
    Moved {
        stream: tokio::net::TcpStream,
        codec: C,
        to: usize,
    },
    /// The codec handed the connection over; `leftover` holds what was
    /// read past the request that asked for it.
    HandOff {
        hand_off: C::HandOff,
        stream: ServerStream,
        leftover: BytesMut,
        codec: C,
    },
}

/// Why the loop stops.
enum Stop<H> {
    End(End),
    HandOff(H),
    Move(usize),
}

impl<H> From<End> for Stop<H> {
    fn from(end: End) -> Self {
        Stop::End(end)
    }
}

/// Serves one connection with `codec` in `slot` until it ends, is
/// handed over, or (with a `seat`) its thread asks it to move. Never
/// panics on client bytes; what ended it is logged (at debug level, a TLS
/// client on a plaintext port as a warning) and counted.
pub async fn serve<C: Codec>(
    stream: ServerStream,
    codec: C,
    node: Arc<Node>,
    slot: &Slot,
    seat: Option<&Seat>,
) -> Served<C> {
    let peer = stream
        .tcp()
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "unknown".into());
    let mut lease = Lease::connection(&node.memory);
    // Within the free part of every lease: cannot be refused.
    lease.cover_allocated(READ_CHUNK);
    let mut conn = Connection {
        stream,
        codec,
        node,
        slot,
        seat,
        read_buf: BytesMut::with_capacity(READ_CHUNK),
        read_alloc: READ_CHUNK,
        write_buf: BytesMut::new(),
        lease,
        start_checked: false,
        owed: None,
    };
    conn.start_checked = conn.stream.is_tls();
    let end = match conn.run().await {
        Stop::HandOff(hand_off) => {
            return Served::HandOff {
                hand_off,
                stream: conn.stream,
                leftover: conn.read_buf,
                codec: conn.codec,
            }
        }
        Stop::Move(to) => match conn.stream {
            ServerStream::Plain(stream) => {
                return Served::Moved {
                    stream,
                    codec: conn.codec,
                    to,
                }
            }
            // Never asked of a TLS connection.
            ServerStream::Tls(_) => End::Io(std::io::Error::other("a TLS connection cannot move")),
        },
        Stop::End(end) => end,
    };
    let metrics = &conn.node.metrics;
    match &end {
        End::Eof | End::Shutdown => tracing::trace!(%peer, ?end, "connection closed"),
        End::Io(e) => tracing::debug!(%peer, error = %e, "connection I/O error"),
        End::Idle => tracing::debug!(%peer, "idle connection closed"),
        End::Closed(closing) => {
            if closing.protocol_error {
                metrics.protocol_error();
            }
            tracing::debug!(%peer, why = %closing.why, "connection closed after an answer");
        }
        End::TlsOnPlainPort => {
            metrics.auth_failure(AuthFailure::Tls);
            tracing::warn!(%peer, "TLS handshake on a plaintext port; closed (this node has no --tls-cert)");
        }
        End::EofMidRequest | End::FrameTimeout => {
            metrics.protocol_error();
            tracing::debug!(%peer, ?end, "connection closed for cause");
        }
        End::HandshakeTimeout => {
            metrics.handshake_timeout();
            tracing::debug!(%peer, "connection closed: no handshake in time");
        }
        End::Evicted => tracing::debug!(%peer, "connection closed to admit a new one"),
    }
    Served::Ended(end)
}

struct Connection<'s, C: Codec> {
    stream: ServerStream,
    codec: C,
    node: Arc<Node>,
    slot: &'s Slot,
    /// Its place on a connection thread, when it may move to another.
    seat: Option<&'s Seat>,
    read_buf: BytesMut,
    /// The size of the read buffer's allocation (its `capacity()` shrinks
    /// as requests are split off the front; the allocation does not).
    read_alloc: usize,
    write_buf: BytesMut,
    /// Covers `read_alloc` and the write buffer's capacity.
    lease: Lease,
    /// Whether the first bytes were checked for a TLS handshake.
    start_checked: bool,
    /// Once the shutdown is noticed: how many more requests get a real
    /// answer (1 when one had started arriving, else 0).
    owed: Option<usize>,
}

impl<C: Codec> Connection<'_, C> {
    async fn run(&mut self) -> Stop<C::HandOff> {
        // When the first byte of a not-yet-complete request arrived.
        let mut started: Option<Instant> = None;
        // One shutdown future and one timer for the connection's life:
        // re-arming a timer is cheaper than creating one per read.
        let node = Arc::clone(&self.node);
        let shutdown = node.shutdown.wait();
        tokio::pin!(shutdown);
        let timer = tokio::time::sleep_until(Instant::now() + NEVER);
        tokio::pin!(timer);
        let limits = node.limits;
        let handshake_by = Instant::now() + limits.handshake_timeout;
        loop {
            if !self.start_checked {
                match first_bytes(&self.read_buf) {
                    FirstBytes::NotTls => self.start_checked = true,
                    FirstBytes::ClientHello => {
                        let _ = self.stream.shutdown().await;
                        return End::TlsOnPlainPort.into();
                    }
                    // Nothing is decoded until the first bytes are told
                    // apart from a ClientHello (at most 11 bytes; no
                    // request that starts so is complete before that).
                    FirstBytes::Undecided => {}
                }
            }
            // 1. Answer every complete request already buffered.
            let buffered = self.read_buf.len();
            if self.start_checked {
                if let Err(stop) = self.answer_buffered().await {
                    if let Stop::End(End::Closed(_)) = stop {
                        self.close().await;
                    }
                    return stop;
                }
            }
            // A request completed: what is left is a new request, whose
            // time starts now, not when the previous one began.
            let progressed = self.read_buf.len() < buffered;
            if let Err(end) = self.flush().await {
                return end.into();
            }
            if self.owed.is_none() && node.shutdown.is_triggered() {
                self.notice_shutdown(!self.read_buf.is_empty());
            }
            if self.owed == Some(0) {
                return self.shut_down().await.into();
            }
            if self.read_buf.is_empty() {
                started = None;
                if let Some(to) = self.departure() {
                    return Stop::Move(to);
                }
                if self.read_alloc > SHRINK_ABOVE {
                    self.read_buf = BytesMut::with_capacity(READ_CHUNK);
                    self.read_alloc = READ_CHUNK;
                    self.recharge();
                }
            } else if progressed || started.is_none() {
                started = Some(Instant::now());
            }

            // 2. Wait for more bytes, bounded by the frame or idle deadline
            // (and the handshake's, until it is done).
            let mut deadline = match started {
                Some(start) => start + limits.frame_timeout,
                None if limits.idle_timeout.is_zero() => Instant::now() + NEVER,
                None => Instant::now() + limits.idle_timeout,
            };
            if !self.slot.is_handshaken() {
                deadline = deadline.min(handshake_by);
            }
            let missing = self.codec.missing(&self.read_buf);
            if let Err(exhausted) = self.make_room(missing) {
                self.node.metrics.memory_refused(MemoryRefusal::Request);
                return self.cut(Cut::Memory(exhausted)).await.into();
            }
            timer.as_mut().reset(deadline);
            let had_bytes = !self.read_buf.is_empty();
            let read = tokio::select! {
                biased;
                r = self.stream.read_buf(&mut self.read_buf) => Some(r),
                () = &mut timer => None,
                // Everything fully read has been answered: finish the one
                // request in progress, if any, and refuse the rest.
                () = &mut shutdown, if self.owed.is_none() => {
                    self.notice_shutdown(had_bytes);
                    continue;
                }
                () = self.slot.evicted() => {
                    return self.cut(Cut::Evicted).await.into();
                }
                () = self.lease.cut() => {
                    self.node.metrics.memory_refused(MemoryRefusal::Largest);
                    let held = self.lease.covered();
                    return self.cut(Cut::Largest { held }).await.into();
                }
            };
            // Bytes read once the shutdown had begun start no new request.
            if self.owed.is_none() && node.shutdown.is_triggered() {
                self.notice_shutdown(had_bytes);
            }
            match read {
                None if !self.slot.is_handshaken() && Instant::now() >= handshake_by => {
                    let cut = Cut::HandshakeTimeout(limits.handshake_timeout);
                    return self.cut(cut).await.into();
                }
                None if started.is_some() => {
                    let answer = self.codec.frame_timeout();
                    let _ = self.codec.encode(&answer, &mut self.write_buf);
                    self.close().await;
                    return End::FrameTimeout.into();
                }
                None => return End::Idle.into(),
                Some(Err(e)) => return End::Io(e).into(),
                Some(Ok(0)) if self.read_buf.is_empty() => return End::Eof.into(),
                Some(Ok(0)) => return End::EofMidRequest.into(),
                Some(Ok(n)) => {
                    self.slot.touch();
                    self.node.metrics.add_bytes_received(n as u64);
                }
            }
        }
    }

    /// The thread this connection is to move to now, if its thread gives
    /// connections away and it can go: between requests (the caller's
    /// part), everything answered and written, past its handshake, not
    /// shutting down, and not TLS.
    fn departure(&self) -> Option<usize> {
        let seat = self.seat?;
        let settled = self.write_buf.is_empty()
            && self.owed.is_none()
            && self.start_checked
            && !self.stream.is_tls()
            && self.slot.is_handshaken();
        settled.then(|| seat.departure()).flatten()
    }

    /// Makes room for the next read, more while a large request streams
    /// in (module invariants). The new allocation is charged to the
    /// budget before it is made.
    fn make_room(&mut self, missing: usize) -> Result<(), Exhausted> {
        let len = self.read_buf.len();
        if self.read_buf.capacity() - len >= READ_CHUNK / 4 {
            return Ok(());
        }
        let room = missing.min(len).max(READ_CHUNK);
        let capacity = len.saturating_add(room);
        self.lease
            .cover(capacity.saturating_add(self.write_buf.capacity()))?;
        let mut grown = BytesMut::with_capacity(capacity);
        grown.extend_from_slice(&self.read_buf);
        self.read_buf = grown;
        self.read_alloc = capacity;
        Ok(())
    }

    /// Sets the lease to what the buffers hold now (after one shrank).
    fn recharge(&mut self) {
        let held = self.read_alloc.saturating_add(self.write_buf.capacity());
        self.lease.cover_allocated(held);
    }

    /// Answers the codec's answer to `cut`, closes, says why it ended.
    async fn cut(&mut self, cut: Cut) -> End {
        let answer = self.codec.cut(cut);
        let _ = self.codec.encode(&answer, &mut self.write_buf);
        self.close().await;
        match cut {
            Cut::HandshakeTimeout(_) => End::HandshakeTimeout,
            Cut::Evicted => End::Evicted,
            Cut::Memory(exhausted) => End::Closed(Closing {
                why: exhausted.to_string(),
                protocol_error: false,
            }),
            Cut::Largest { held } => End::Closed(Closing {
                why: format!(
                    "held the most client memory ({held} bytes) when the budget was spent"
                ),
                protocol_error: false,
            }),
        }
    }

    /// Decodes and answers every complete request in the read buffer, in
    /// order. `Err` when the connection ends or is handed over (after the
    /// closing answer has been queued).
    async fn answer_buffered(&mut self) -> Result<(), Stop<C::HandOff>> {
        // At most one of the two holds requests: a write runs the reads
        // before it, a read the writes before it.
        let mut writes: Vec<C::Request> = Vec::new();
        let mut reads: Vec<C::Request> = Vec::new();
        let mut pipelined = false;
        loop {
            if self.owed == Some(0) {
                break;
            }
            let request = match self.codec.decode(&mut self.read_buf) {
                Ok(Some(request)) => request,
                Ok(None) => break,
                Err(answer) => {
                    self.run_pending(&mut writes, &mut reads).await?;
                    self.push(answer).await?;
                    // A decoding failure always ends the connection.
                    return Err(End::Closed(Closing {
                        why: "undecodable request".into(),
                        protocol_error: true,
                    })
                    .into());
                }
            };
            let admitted = self.codec.admit(request, pipelined);
            if !self.slot.is_handshaken() && self.codec.authenticated() {
                self.slot.handshake_done();
            }
            if !matches!(admitted, Admit::Skip) {
                pipelined = true;
                if let Some(owed) = self.owed.as_mut() {
                    *owed = owed.saturating_sub(1);
                }
            }
            match admitted {
                Admit::Skip => {}
                Admit::Write(request) => {
                    self.run_reads(&mut reads).await?;
                    writes.push(request);
                    if writes.len() >= MAX_WRITE_RUN {
                        self.run_writes(&mut writes).await?;
                    }
                }
                Admit::Read(request) => {
                    self.run_writes(&mut writes).await?;
                    reads.push(request);
                    if reads.len() >= MAX_READ_RUN {
                        self.run_reads(&mut reads).await?;
                    }
                }
                Admit::Answer(answer) => {
                    self.run_pending(&mut writes, &mut reads).await?;
                    self.push(answer).await?;
                }
                Admit::Run(request) => {
                    self.run_pending(&mut writes, &mut reads).await?;
                    let answer = self.codec.run(request).await;
                    self.push(answer).await?;
                }
                Admit::HandOff(hand_off) => {
                    self.run_pending(&mut writes, &mut reads).await?;
                    self.flush().await?;
                    return Err(Stop::HandOff(hand_off));
                }
            }
        }
        self.run_pending(&mut writes, &mut reads).await
    }

    /// Runs the gathered requests (writes or reads: never both).
    async fn run_pending(
        &mut self,
        writes: &mut Vec<C::Request>,
        reads: &mut Vec<C::Request>,
    ) -> Result<(), Stop<C::HandOff>> {
        self.run_writes(writes).await?;
        self.run_reads(reads).await
    }

    /// Runs a run of consecutive reads in order, each readied first when
    /// there are several (a lone read gains nothing from it).
    async fn run_reads(&mut self, reads: &mut Vec<C::Request>) -> Result<(), Stop<C::HandOff>> {
        if reads.len() > 1 {
            self.codec.warm_reads(reads);
        }
        for request in reads.drain(..) {
            let answer = self.codec.run(request).await;
            self.push(answer).await?;
        }
        Ok(())
    }

    /// Executes a run of consecutive writes: `join_all` polls them in
    /// order, so each is appended in request order, and they then wait for
    /// their durability together.
    async fn run_writes(&mut self, writes: &mut Vec<C::Request>) -> Result<(), Stop<C::HandOff>> {
        if writes.is_empty() {
            return Ok(());
        }
        if writes.len() == 1 {
            if let Some(request) = writes.pop() {
                let answer = self.codec.run_write(request).await;
                return self.push(answer).await;
            }
        }
        let answers = self.codec.run_writes(std::mem::take(writes)).await;
        for answer in answers {
            self.push(answer).await?;
        }
        Ok(())
    }

    /// Queues an answer; flushes once enough is pending. An answer that
    /// closes the connection ends the loop, and so does one the memory
    /// budget cannot hold (it is replaced by the refusal). The answer is
    /// dropped once encoded, before any flush: a client that reads
    /// nothing holds only the buffer, which the budget counts.
    async fn push(&mut self, answer: C::Answer) -> Result<(), Stop<C::HandOff>> {
        let size = self.codec.encoded_len(&answer);
        if let Err(exhausted) = self.room_to_write(size) {
            self.node.metrics.memory_refused(MemoryRefusal::Answer);
            let answer = self.codec.cut(Cut::Memory(exhausted));
            let _ = self.codec.encode(&answer, &mut self.write_buf);
            return Err(End::Closed(Closing {
                why: exhausted.to_string(),
                protocol_error: false,
            })
            .into());
        }
        let closing = self.codec.encode(&answer, &mut self.write_buf);
        drop(answer);
        if self.read_alloc.saturating_add(self.write_buf.capacity()) as u64 > self.lease.covered() {
            // The estimate was short and the buffer grew by itself.
            self.recharge();
        }
        if let Some(closing) = closing {
            return Err(End::Closed(closing).into());
        }
        if self.write_buf.len() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes the pending answers. A client that never reads its answers
    /// is bounded like an idle one: the write gives up after the idle
    /// timeout.
    async fn flush(&mut self) -> Result<(), End> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        let idle = self.node.limits.idle_timeout;
        let bound = if idle.is_zero() { NEVER } else { idle };
        let send = tokio::time::timeout(bound, self.stream.send_all(&self.write_buf));
        let result = tokio::select! {
            // An answer the socket takes at once is sent even by a
            // connection being closed (its closing answer).
            biased;
            result = send => result,
            // A client that reads nothing may be the one chosen to make
            // room: its answers are dropped, it is simply closed.
            () = self.slot.evicted() => {
                self.write_buf.clear();
                return Err(End::Evicted);
            }
            // Likewise when it holds the most memory.
            () = self.lease.cut() => {
                self.node.metrics.memory_refused(MemoryRefusal::Largest);
                self.write_buf.clear();
                return Err(End::Closed(Closing {
                    why: "held the most client memory when the budget was spent".into(),
                    protocol_error: false,
                }));
            }
        };
        self.node
            .metrics
            .add_bytes_sent(self.write_buf.len() as u64);
        self.write_buf.clear();
        if self.write_buf.capacity() > SHRINK_ABOVE {
            self.write_buf = BytesMut::new();
            self.recharge();
        }
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Io(e)),
            Err(_) => Err(End::Idle),
        }
    }

    /// Room in the write buffer for `size` more bytes, charged to the
    /// budget before it is allocated. The buffer is replaced, not grown in
    /// place, so the charge is the one allocation.
    fn room_to_write(&mut self, size: usize) -> Result<(), Exhausted> {
        let len = self.write_buf.len();
        if self.write_buf.capacity() - len >= size {
            return Ok(());
        }
        let capacity = len.saturating_add(size.max(len).max(256));
        self.lease.cover(self.read_alloc.saturating_add(capacity))?;
        let mut grown = BytesMut::with_capacity(capacity);
        grown.extend_from_slice(&self.write_buf);
        self.write_buf = grown;
        Ok(())
    }

    /// The loop has noticed the shutdown: with `in_progress`, the request
    /// it was reading still gets its answer.
    fn notice_shutdown(&mut self, in_progress: bool) {
        self.owed = Some(usize::from(in_progress));
    }

    /// Answers the shutting-down answer, shuts the write side, then reads
    /// and discards until the client closes or is quiet for [`LINGER`]:
    /// closing with unread bytes would send a reset, which discards what
    /// the kernel has not yet delivered of the last answers.
    async fn shut_down(&mut self) -> End {
        let answer = self.codec.shutting_down();
        let _ = self.codec.encode(&answer, &mut self.write_buf);
        if let Err(end) = self.flush().await {
            return end;
        }
        let _ = self.stream.shutdown().await;
        // Discarded as read: one fixed buffer, nothing to charge.
        let mut discard = [0u8; 4096];
        loop {
            let read = tokio::time::timeout(LINGER, self.stream.read(&mut discard));
            match read.await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return End::Shutdown,
            }
        }
    }

    /// Sends what is pending (a closing answer) and shuts the write side.
    /// Failures are ignored: the connection ends anyway.
    async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}
