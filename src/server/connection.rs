//! One accepted client connection: read frames, answer each request in
//! order, enforce the per-connection limits and timeouts.
//!
//! Invariants:
//! - responses are written in request order; requests already buffered are
//!   executed one after another, their answers written in one batch, so a
//!   pipelining client costs one write per read;
//! - nothing a client sends can panic this task or make it allocate more
//!   than the frame limit: frame lengths are validated when their 4 bytes
//!   arrive, and buffers grow only as bytes actually arrive;
//! - a connection error (code < 100) is answered, flushed, and the
//!   connection closed; a request error leaves it open;
//! - an idle connection is closed after `idle_timeout`, a frame that starts
//!   and does not finish within `frame_timeout` gets FRAME_TIMEOUT.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::dispatch;
use super::ServerContext;
use crate::protocol::{self, ErrorCode, Frame, Request, Response};

/// Smallest read: enough for many small pipelined requests at once.
const READ_CHUNK: usize = 16 * 1024;
/// Largest single buffer growth while a big frame streams in, so memory
/// follows the bytes that actually arrived, not the announced length.
const MAX_GROWTH: usize = 1024 * 1024;
/// Flush answers once this many bytes are pending, even mid-pipeline.
const FLUSH_AT: usize = 256 * 1024;
/// A read buffer grown past this is released when it becomes empty.
const SHRINK_ABOVE: usize = 4 * 1024 * 1024;

/// Why a connection ended. Only for logs: the client already got its
/// answer, or is gone.
#[derive(Debug)]
enum End {
    /// Peer closed cleanly between frames.
    Eof,
    /// Peer closed in the middle of a frame.
    EofMidFrame,
    Idle,
    FrameTimeout,
    Shutdown,
    /// A connection error was answered, e.g. a malformed frame.
    ProtocolError(ErrorCode),
    Io(std::io::Error),
}

/// Serves one client until it disconnects, misbehaves, idles out or the
/// server shuts down. Never panics on client bytes; errors end up in logs.
pub async fn serve_connection(stream: TcpStream, ctx: Arc<ServerContext>) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "unknown".into());
    // Small request/response exchanges: Nagle would add up to 40 ms.
    let _ = stream.set_nodelay(true);
    let mut conn = Connection {
        stream,
        ctx,
        read_buf: BytesMut::with_capacity(READ_CHUNK),
        write_buf: BytesMut::new(),
    };
    let end = conn.run().await;
    match &end {
        End::Eof | End::Shutdown => tracing::trace!(%peer, ?end, "connection closed"),
        End::Io(e) => tracing::debug!(%peer, error = %e, "connection I/O error"),
        _ => tracing::debug!(%peer, ?end, "connection closed by server"),
    }
}

/// Answers a connection the server will not serve (e.g. over the
/// connection limit) with one ERROR frame, then closes it.
pub async fn reject(mut stream: TcpStream, code: ErrorCode, message: &str) {
    let mut buf = BytesMut::new();
    if Response::error(code, message).encode(&mut buf).is_ok() {
        let write = stream.write_all(&buf);
        // A client that does not read must not hold the accept path.
        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
    }
    let _ = stream.shutdown().await;
}

struct Connection {
    stream: TcpStream,
    ctx: Arc<ServerContext>,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

impl Connection {
    async fn run(&mut self) -> End {
        let mut shutdown = self.ctx.shutdown.clone();
        // When the first byte of a not-yet-complete frame arrived.
        let mut frame_started: Option<Instant> = None;
        loop {
            // 1. Answer every complete request already buffered.
            if let Err(end) = self.answer_buffered().await {
                return end;
            }
            if let Err(e) = self.flush().await {
                return e;
            }
            if *shutdown.borrow() {
                return End::Shutdown;
            }
            if self.read_buf.is_empty() {
                frame_started = None;
                if self.read_buf.capacity() > SHRINK_ABOVE {
                    self.read_buf = BytesMut::with_capacity(READ_CHUNK);
                }
            } else if frame_started.is_none() {
                frame_started = Some(Instant::now());
            }

            // 2. Wait for more bytes, bounded by the idle or frame deadline.
            let limits = &self.ctx.limits;
            let deadline = match frame_started {
                Some(start) => start + limits.frame_timeout,
                None => Instant::now() + limits.idle_timeout,
            };
            let missing = Frame::missing(&self.read_buf, limits.protocol.max_frame_bytes)
                .ok()
                .flatten()
                .unwrap_or(0);
            self.read_buf.reserve(missing.clamp(READ_CHUNK, MAX_GROWTH));
            let read = tokio::select! {
                r = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.read_buf)) => r,
                _ = shutdown.changed() => {
                    // Sender gone or shutdown signalled: either way stop
                    // reading; what was fully read has been answered.
                    return End::Shutdown;
                }
            };
            match read {
                Err(_elapsed) if frame_started.is_some() => {
                    self.fail(ErrorCode::FRAME_TIMEOUT, "frame not completed in time")
                        .await;
                    return End::FrameTimeout;
                }
                Err(_elapsed) => return End::Idle,
                Ok(Err(e)) => return End::Io(e),
                Ok(Ok(0)) if self.read_buf.is_empty() => return End::Eof,
                Ok(Ok(0)) => return End::EofMidFrame,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Parses and executes every complete frame in the read buffer,
    /// appending answers to the write buffer. Returns `Err` when the
    /// connection must end (after the error answer is flushed).
    async fn answer_buffered(&mut self) -> Result<(), End> {
        let limits = self.ctx.limits.protocol;
        loop {
            let frame = match Frame::parse(&mut self.read_buf, limits.max_frame_bytes) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.protocol_error(&e).await),
            };
            let request = match Request::decode(frame, &limits) {
                Ok(request) => request,
                Err(e) if e.code().closes_connection() => {
                    return Err(self.protocol_error(&e).await)
                }
                Err(e) => {
                    self.push(&Response::error(e.code(), e.to_string())).await?;
                    continue;
                }
            };
            let response = dispatch::execute(&self.ctx, request).await;
            if let Response::Error { code, message } = &response {
                if code.closes_connection() {
                    self.fail(*code, message).await;
                    return Err(End::ProtocolError(*code));
                }
            }
            self.push(&response).await?;
        }
    }

    /// Queues an answer; flushes when enough is pending.
    async fn push(&mut self, response: &Response) -> Result<(), End> {
        if let Err(e) = response.encode(&mut self.write_buf) {
            // Only a > 4 GiB answer cannot be framed; tell the client.
            let msg = format!("answer cannot be sent: {e}");
            let _ = Response::error(ErrorCode::INTERNAL, msg).encode(&mut self.write_buf);
        }
        if self.write_buf.len() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), End> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        // A client that never reads its answers is bounded like an idle one.
        let write = self.stream.write_all(&self.write_buf);
        let result = tokio::time::timeout(self.ctx.limits.idle_timeout, write).await;
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

    async fn protocol_error(&mut self, e: &protocol::Error) -> End {
        let code = e.code();
        self.fail(code, &e.to_string()).await;
        End::ProtocolError(code)
    }

    /// Sends pending answers plus one connection-ending ERROR, then closes
    /// the write side. Failures are ignored: the connection ends anyway.
    async fn fail(&mut self, code: ErrorCode, message: &str) {
        let _ = Response::error(code, message).encode(&mut self.write_buf);
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}
