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
//!   request that follows them waits until they are done, so it sees them;
//! - the read buffer grows only as bytes arrive (by at most
//!   [`MAX_GROWTH`] per read), never by an announced length: the codec
//!   bounds every length before this loop reserves room for it;
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
//!   starts with the same bytes is served.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::Node;
use crate::metrics::AuthFailure;
use crate::security::tls::{first_bytes, FirstBytes};
use crate::security::ServerStream;

/// Smallest read: enough for many small pipelined requests at once.
pub const READ_CHUNK: usize = 16 * 1024;
/// Largest single buffer growth while a big request streams in, so memory
/// follows the bytes that actually arrived, not the announced length.
pub const MAX_GROWTH: usize = 1024 * 1024;
/// Flush answers once this many bytes are pending, even mid-pipeline.
pub const FLUSH_AT: usize = 256 * 1024;
/// A buffer grown past this is released once it is empty again.
pub const SHRINK_ABOVE: usize = 4 * 1024 * 1024;
/// Most writes started together before they are awaited.
pub const MAX_WRITE_RUN: usize = 1024;
/// Stand-in for "no idle timeout": far away, but no overflow.
pub const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);
/// At shutdown, how long the loop waits for a client that neither closes
/// nor sends before it closes the connection.
pub const LINGER: Duration = Duration::from_millis(500);

/// What the codec decided for one decoded request.
pub enum Admit<C: Codec> {
    /// Run it now, after the writes before it.
    Run(C::Request),
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

    /// How many more bytes the request at the front of `buf` needs, if the
    /// codec knows (the loop grows the buffer by at most [`MAX_GROWTH`]).
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

    /// Appends `answer` to `out`; `Some` when the connection must close
    /// after it.
    fn encode(&mut self, answer: &Self::Answer, out: &mut BytesMut) -> Option<Closing>;

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
}

impl<H> From<End> for Stop<H> {
    fn from(end: End) -> Self {
        Stop::End(end)
    }
}

/// Serves one connection with `codec` until it ends or is handed over.
/// Never panics on client bytes; what ended it is logged (at debug level,
/// a TLS client on a plaintext port as a warning) and counted.
pub async fn serve<C: Codec>(stream: ServerStream, codec: C, node: Arc<Node>) -> Served<C> {
    let peer = stream
        .tcp()
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "unknown".into());
    let mut conn = Connection {
        stream,
        codec,
        node,
        read_buf: BytesMut::with_capacity(READ_CHUNK),
        write_buf: BytesMut::new(),
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
    }
    Served::Ended(end)
}

struct Connection<C: Codec> {
    stream: ServerStream,
    codec: C,
    node: Arc<Node>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// Whether the first bytes were checked for a TLS handshake.
    start_checked: bool,
    /// Once the shutdown is noticed: how many more requests get a real
    /// answer (1 when one had started arriving, else 0).
    owed: Option<usize>,
}

impl<C: Codec> Connection<C> {
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
                if self.read_buf.capacity() > SHRINK_ABOVE {
                    self.read_buf = BytesMut::with_capacity(READ_CHUNK);
                }
            } else if progressed || started.is_none() {
                started = Some(Instant::now());
            }

            // 2. Wait for more bytes, bounded by the frame or idle deadline.
            let deadline = match started {
                Some(start) => start + limits.frame_timeout,
                None if limits.idle_timeout.is_zero() => Instant::now() + NEVER,
                None => Instant::now() + limits.idle_timeout,
            };
            let missing = self.codec.missing(&self.read_buf);
            self.read_buf.reserve(missing.clamp(READ_CHUNK, MAX_GROWTH));
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
            };
            // Bytes read once the shutdown had begun start no new request.
            if self.owed.is_none() && node.shutdown.is_triggered() {
                self.notice_shutdown(had_bytes);
            }
            match read {
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
                Some(Ok(n)) => self.node.metrics.add_bytes_received(n as u64),
            }
        }
    }

    /// Decodes and answers every complete request in the read buffer, in
    /// order. `Err` when the connection ends or is handed over (after the
    /// closing answer has been queued).
    async fn answer_buffered(&mut self) -> Result<(), Stop<C::HandOff>> {
        let mut writes: Vec<C::Request> = Vec::new();
        let mut pipelined = false;
        loop {
            if self.owed == Some(0) {
                break;
            }
            let request = match self.codec.decode(&mut self.read_buf) {
                Ok(Some(request)) => request,
                Ok(None) => break,
                Err(answer) => {
                    self.run_writes(&mut writes).await?;
                    self.push(&answer).await?;
                    // A decoding failure always ends the connection.
                    return Err(End::Closed(Closing {
                        why: "undecodable request".into(),
                        protocol_error: true,
                    })
                    .into());
                }
            };
            let admitted = self.codec.admit(request, pipelined);
            if !matches!(admitted, Admit::Skip) {
                pipelined = true;
                if let Some(owed) = self.owed.as_mut() {
                    *owed = owed.saturating_sub(1);
                }
            }
            match admitted {
                Admit::Skip => {}
                Admit::Write(request) => {
                    writes.push(request);
                    if writes.len() >= MAX_WRITE_RUN {
                        self.run_writes(&mut writes).await?;
                    }
                }
                Admit::Answer(answer) => {
                    self.run_writes(&mut writes).await?;
                    self.push(&answer).await?;
                }
                Admit::Run(request) => {
                    self.run_writes(&mut writes).await?;
                    let answer = self.codec.run(request).await;
                    self.push(&answer).await?;
                }
                Admit::HandOff(hand_off) => {
                    self.run_writes(&mut writes).await?;
                    self.flush().await?;
                    return Err(Stop::HandOff(hand_off));
                }
            }
        }
        self.run_writes(&mut writes).await
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
                return self.push(&answer).await;
            }
        }
        let codec = &self.codec;
        let answers =
            futures_util::future::join_all(writes.drain(..).map(|r| codec.run_write(r))).await;
        for answer in &answers {
            self.push(answer).await?;
        }
        Ok(())
    }

    /// Queues an answer; flushes once enough is pending. An answer that
    /// closes the connection ends the loop.
    async fn push(&mut self, answer: &C::Answer) -> Result<(), Stop<C::HandOff>> {
        if let Some(closing) = self.codec.encode(answer, &mut self.write_buf) {
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
        let result = tokio::time::timeout(bound, self.stream.send_all(&self.write_buf)).await;
        self.node
            .metrics
            .add_bytes_sent(self.write_buf.len() as u64);
        self.write_buf.clear();
        if self.write_buf.capacity() > SHRINK_ABOVE {
            self.write_buf = BytesMut::new();
        }
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Io(e)),
            Err(_) => Err(End::Idle),
        }
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
        loop {
            self.read_buf.clear();
            self.read_buf.reserve(READ_CHUNK);
            let read = tokio::time::timeout(LINGER, self.stream.read_buf(&mut self.read_buf));
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
