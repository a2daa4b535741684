//! One accepted client connection: read frames, answer each request in
//! order, enforce the per-connection limits and timeouts.
//!
//! Invariants:
//! - answers are written in request order; all requests already buffered
//!   are answered before the next read, in one write, so a pipelining
//!   client costs one read and one write per batch;
//! - consecutive writes (PUT, DELETE, BATCH) of one pipeline are appended
//!   to the log in request order and then awaited together, so they share
//!   one group commit instead of paying one fsync each; a read that
//!   follows them waits until they are done, so it sees them;
//! - nothing a client sends can panic this task or make it allocate more
//!   than the frame limit: a frame length is validated when its 4 bytes
//!   arrive, and the buffer grows only as bytes actually arrive;
//! - a connection error (code < 100) is answered, flushed, and the
//!   connection closed; a request error leaves it open;
//! - an idle connection is closed after `idle_timeout` (0 = never), a frame
//!   that starts and is not complete within `frame_timeout` gets
//!   FRAME_TIMEOUT and the connection is closed;
//! - with authentication on, nothing but HELLO and PING runs before a
//!   HELLO with an accepted token, and every request is checked against
//!   the token's permission before it runs (see [`authorize`]);
//! - a TLS handshake arriving on a plaintext port is recognised from its
//!   first bytes and the connection closed at once, so a TLS client fails
//!   fast instead of waiting for a frame that never completes.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::dispatch;
use super::ServerContext;
use crate::metrics::AuthFailure;
use crate::protocol::replication::SyncRequest;
use crate::protocol::{self, Auth, ErrorCode, Frame, Request, Response};
use crate::security::tls::looks_like_tls;
use crate::security::{Credential, Permission, ServerStream};

/// Smallest read: enough for many small pipelined requests at once.
pub(crate) const READ_CHUNK: usize = 16 * 1024;
/// Largest single buffer growth while a big frame streams in, so memory
/// follows the bytes that actually arrived, not the announced length.
pub(crate) const MAX_GROWTH: usize = 1024 * 1024;
/// Flush answers once this many bytes are pending, even mid-pipeline.
pub(crate) const FLUSH_AT: usize = 256 * 1024;
/// A buffer grown past this is released once it is empty again.
pub(crate) const SHRINK_ABOVE: usize = 4 * 1024 * 1024;
/// Most writes started together before they are awaited.
pub(crate) const MAX_WRITE_RUN: usize = 1024;
/// Stand-in for "no idle timeout": far away, but no overflow.
pub(crate) const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why a connection ended; for logs only.
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
    Refused(ErrorCode),
    /// A TLS handshake arrived on this plaintext port.
    TlsOnPlainPort,
    Io(std::io::Error),
    /// The peer is a replica: the connection becomes its stream.
    Replication(SyncRequest),
    /// The peer asked for a backup snapshot: the connection becomes its
    /// stream.
    Backup,
}

/// Serves one client until it disconnects, misbehaves, idles out or the
/// server shuts down. Never panics on client bytes; errors go to logs.
pub async fn serve_connection(stream: ServerStream, ctx: Arc<ServerContext>) {
    let peer = stream
        .tcp()
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "unknown".into());
    let limits = dispatch::protocol_limits(&ctx.limits);
    let credential = Credential::new(&ctx.security);
    let mut conn = Connection {
        stream,
        ctx,
        limits,
        read_buf: BytesMut::with_capacity(READ_CHUNK),
        write_buf: BytesMut::new(),
        peer: peer.clone(),
        client_name: String::new(),
        credential,
        start_checked: false,
    };
    let end = conn.run().await;
    if let End::Replication(sync) = end {
        let Connection {
            stream,
            read_buf,
            ctx,
            credential,
            ..
        } = conn;
        crate::replication::master::serve_replica(stream, read_buf, ctx, sync, credential).await;
        return;
    }
    if let End::Backup = end {
        crate::backup::serve::serve_backup(conn.stream, conn.ctx).await;
        return;
    }
    match &end {
        End::Eof | End::Shutdown => tracing::trace!(%peer, ?end, "connection closed"),
        End::Io(e) => tracing::debug!(%peer, error = %e, "connection I/O error"),
        End::Idle => tracing::debug!(%peer, "idle connection closed"),
        End::Refused(code) => {
            conn.ctx.metrics.protocol_error();
            tracing::debug!(%peer, %code, "connection closed after an error");
        }
        End::TlsOnPlainPort => {
            conn.ctx.metrics.auth_failure(AuthFailure::Tls);
            tracing::warn!(%peer, "TLS handshake on a plaintext port; closed (this node has no --tls-cert)");
        }
        _ => {
            conn.ctx.metrics.protocol_error();
            tracing::debug!(%peer, ?end, "connection closed for cause");
        }
    }
}

/// Refuses a connection over `--max-connections`: one ERROR frame
/// (TOO_MANY_CONNECTIONS), then close. The caller bounds the time.
pub async fn reject_connection(mut stream: TcpStream, ctx: Arc<ServerContext>) {
    let mut buf = BytesMut::new();
    let message = format!(
        "too many connections (limit {}); retry later",
        ctx.limits.max_connections
    );
    if Response::error(ErrorCode::TOO_MANY_CONNECTIONS, message)
        .encode(&mut buf)
        .is_ok()
    {
        let _ = stream.write_all(&buf).await;
    }
    let _ = stream.shutdown().await;
}

struct Connection {
    stream: ServerStream,
    ctx: Arc<ServerContext>,
    limits: protocol::Limits,
    read_buf: BytesMut,
    write_buf: BytesMut,
    peer: String,
    /// From HELLO, for logs.
    client_name: String,
    /// What this connection has proved.
    credential: Credential,
    /// Whether the first bytes were checked for a TLS handshake.
    start_checked: bool,
}

impl Connection {
    async fn run(&mut self) -> End {
        // When the first byte of a not-yet-complete frame arrived.
        let mut frame_started: Option<Instant> = None;
        // One shutdown future and one timer for the connection's life:
        // re-arming a timer is cheaper than creating one per read.
        let ctx = Arc::clone(&self.ctx);
        let shutdown = ctx.shutdown.wait();
        tokio::pin!(shutdown);
        let timer = tokio::time::sleep_until(Instant::now() + NEVER);
        tokio::pin!(timer);
        loop {
            if !self.start_checked && self.read_buf.len() >= 3 {
                self.start_checked = true;
                if !self.stream.is_tls() && looks_like_tls(&self.read_buf) {
                    let _ = self.stream.shutdown().await;
                    return End::TlsOnPlainPort;
                }
            }
            // 1. Answer every complete request already buffered.
            let buffered = self.read_buf.len();
            if let Err(end) = self.answer_buffered().await {
                return end;
            }
            if self.read_buf.len() < buffered {
                // A frame completed: what is left is a new frame, whose
                // time starts now, not when the previous one began.
                frame_started = None;
            }
            if let Err(end) = self.flush().await {
                return end;
            }
            if self.ctx.shutdown.is_triggered() {
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

            // 2. Wait for more bytes, bounded by the frame or idle deadline.
            let deadline = match frame_started {
                Some(start) => start + self.ctx.limits.frame_timeout,
                None if self.ctx.limits.idle_timeout.is_zero() => Instant::now() + NEVER,
                None => Instant::now() + self.ctx.limits.idle_timeout,
            };
            // The prefix (if buffered) was validated by answer_buffered.
            let missing = Frame::missing(&self.read_buf, self.limits.max_frame_bytes)
                .ok()
                .flatten()
                .unwrap_or(0);
            self.read_buf.reserve(missing.clamp(READ_CHUNK, MAX_GROWTH));
            timer.as_mut().reset(deadline);
            let read = tokio::select! {
                biased;
                r = self.stream.read_buf(&mut self.read_buf) => Some(r),
                () = &mut timer => None,
                // Everything fully read has been answered; stop here.
                () = &mut shutdown => return End::Shutdown,
            };
            match read {
                None if frame_started.is_some() => {
                    self.fail(ErrorCode::FRAME_TIMEOUT, "frame not completed in time")
                        .await;
                    return End::FrameTimeout;
                }
                None => return End::Idle,
                Some(Err(e)) => return End::Io(e),
                Some(Ok(0)) if self.read_buf.is_empty() => return End::Eof,
                Some(Ok(0)) => return End::EofMidFrame,
                Some(Ok(n)) => self.ctx.metrics.add_bytes_received(n as u64),
            }
        }
    }

    /// Parses and answers every complete frame in the read buffer, in
    /// order. Returns `Err` when the connection must end (after the error
    /// answer has been sent).
    async fn answer_buffered(&mut self) -> Result<(), End> {
        let mut writes: Vec<Request> = Vec::new();
        loop {
            let frame = match Frame::parse(&mut self.read_buf, self.limits.max_frame_bytes) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    self.run_writes(&mut writes).await?;
                    return Err(self.refuse(&e).await);
                }
            };
            let request = match Request::decode(frame, &self.limits) {
                Ok(request) => request,
                Err(e) => {
                    self.run_writes(&mut writes).await?;
                    if e.code().closes_connection() {
                        return Err(self.refuse(&e).await);
                    }
                    self.push(&Response::error(e.code(), e.to_string())).await?;
                    continue;
                }
            };
            if let Err((code, message)) = self.authorize(&request) {
                self.run_writes(&mut writes).await?;
                self.push(&Response::error(code, message)).await?;
                continue;
            }
            if let Request::ReplSync(sync) = request {
                self.run_writes(&mut writes).await?;
                self.flush().await?;
                return Err(End::Replication(sync));
            }
            if let Request::Backup = request {
                self.run_writes(&mut writes).await?;
                self.flush().await?;
                return Err(End::Backup);
            }
            if is_write(&request) {
                writes.push(request);
                if writes.len() >= MAX_WRITE_RUN {
                    self.run_writes(&mut writes).await?;
                }
                continue;
            }
            self.run_writes(&mut writes).await?;
            let response = dispatch::execute(&self.ctx, request).await;
            self.push(&response).await?;
        }
        self.run_writes(&mut writes).await
    }

    /// Executes a run of consecutive writes. Each write is appended to the
    /// log when its future is first polled, and `join_all` polls them in
    /// order, so log order is request order; they then wait for their
    /// durability together.
    async fn run_writes(&mut self, writes: &mut Vec<Request>) -> Result<(), End> {
        if writes.is_empty() {
            return Ok(());
        }
        let ctx = Arc::clone(&self.ctx);
        if writes.len() == 1 {
            if let Some(request) = writes.pop() {
                let response = dispatch::execute(&ctx, request).await;
                return self.push(&response).await;
            }
        }
        let run = writes.drain(..).map(|r| dispatch::execute(&ctx, r));
        let responses = futures_util::future::join_all(run).await;
        for response in &responses {
            self.push(response).await?;
        }
        Ok(())
    }

    /// Queues an answer; a connection error answer ends the connection.
    async fn push(&mut self, response: &Response) -> Result<(), End> {
        if let Response::Error { code, message } = response {
            if code.closes_connection() {
                self.fail(*code, message).await;
                return Err(End::Refused(*code));
            }
        }
        if let Err(e) = response.encode(&mut self.write_buf) {
            // Only an answer over 4 GiB cannot be framed; say so instead.
            let msg = format!("answer cannot be sent: {e}");
            let _ = Response::error(ErrorCode::INTERNAL, msg).encode(&mut self.write_buf);
        }
        if self.write_buf.len() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), End> {
        flush_answers(&mut self.stream, &mut self.write_buf, &self.ctx)
            .await
            .map_err(|failure| match failure {
                FlushFailure::Io(e) => End::Io(e),
                FlushFailure::Stalled => End::Idle,
            })
    }

    async fn refuse(&mut self, e: &protocol::Error) -> End {
        let code = e.code();
        self.fail(code, &e.to_string()).await;
        End::Refused(code)
    }

    /// Sends pending answers plus one connection-ending ERROR, then shuts
    /// the write side. Failures are ignored: the connection ends anyway.
    async fn fail(&mut self, code: ErrorCode, message: &str) {
        let _ = Response::error(code, message).encode(&mut self.write_buf);
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}

impl Connection {
    /// Checks `request` against the connection's credential. HELLO
    /// authenticates (a missing or unknown token ends the connection);
    /// anything else needs the permission [`required_permission`] names.
    /// Refusals are counted and logged with the peer, never the token.
    fn authorize(&mut self, request: &Request) -> Result<(), (ErrorCode, String)> {
        let security = &self.ctx.security;
        if let Request::Hello(hello) = request {
            self.client_name.clone_from(&hello.client_name);
            if !security.auth_enabled() {
                return Ok(());
            }
            let Auth::Token(token) = &hello.auth else {
                self.ctx.metrics.auth_failure(AuthFailure::MissingToken);
                tracing::warn!(peer = %self.peer, client = %self.client_name, "HELLO without a token; this node requires one");
                return Err((
                    ErrorCode::AUTH_REQUIRED,
                    "this server requires a token: send one in HELLO (kvstore --auth-token-file)"
                        .into(),
                ));
            };
            return match self.credential.authenticate(security, token) {
                Some(permission) => {
                    tracing::debug!(peer = %self.peer, client = %self.client_name, permission = permission.name(), "authenticated");
                    Ok(())
                }
                None => {
                    self.ctx.metrics.auth_failure(AuthFailure::BadToken);
                    tracing::warn!(peer = %self.peer, client = %self.client_name, "authentication failed: token not accepted");
                    Err((
                        ErrorCode::AUTH_FAILED,
                        "authentication failed: the token is not accepted".into(),
                    ))
                }
            };
        }
        let Some(needed) = required_permission(request) else {
            return Ok(());
        };
        let Ok(granted) = self.credential.permission(security) else {
            self.ctx.metrics.auth_failure(AuthFailure::BadToken);
            tracing::warn!(peer = %self.peer, client = %self.client_name, "token removed by a reload; closing the connection");
            return Err((
                ErrorCode::AUTH_FAILED,
                "the token of this connection is no longer accepted (removed by a reload); \
                 reconnect with a current token"
                    .into(),
            ));
        };
        match granted {
            Some(granted) if granted >= needed => Ok(()),
            None => {
                self.ctx.metrics.auth_failure(AuthFailure::MissingToken);
                tracing::warn!(peer = %self.peer, op = request.name(), "request before authenticating");
                Err((
                    ErrorCode::AUTH_REQUIRED,
                    format!(
                        "authentication required: send HELLO with a token before {}",
                        request.name().to_uppercase()
                    ),
                ))
            }
            Some(granted) => {
                self.ctx.metrics.auth_failure(AuthFailure::PermissionDenied);
                tracing::warn!(
                    peer = %self.peer,
                    client = %self.client_name,
                    op = request.name(),
                    "permission denied: {} needs a token with the {} permission, this one has {}",
                    request.name().to_uppercase(),
                    needed.name(),
                    granted.name()
                );
                Err((
                    ErrorCode::PERMISSION_DENIED,
                    format!(
                        "permission denied: {} needs a token with the {} permission; this connection's token has {}",
                        request.name().to_uppercase(),
                        needed.name(),
                        granted.name()
                    ),
                ))
            }
        }
    }
}

/// Why pending answers could not be written.
pub(crate) enum FlushFailure {
    Io(std::io::Error),
    /// The client read nothing for the idle timeout.
    Stalled,
}

/// Writes `buf` (answers of either protocol) to `stream` and empties it,
/// releasing it if it grew large. A client that never reads its answers
/// is bounded like an idle one: the write gives up after the idle timeout.
pub(crate) async fn flush_answers(
    stream: &mut ServerStream,
    buf: &mut BytesMut,
    ctx: &ServerContext,
) -> Result<(), FlushFailure> {
    if buf.is_empty() {
        return Ok(());
    }
    let idle = ctx.limits.idle_timeout;
    let bound = if idle.is_zero() { NEVER } else { idle };
    let result = tokio::time::timeout(bound, stream.send_all(buf)).await;
    ctx.metrics.add_bytes_sent(buf.len() as u64);
    buf.clear();
    if buf.capacity() > SHRINK_ABOVE {
        *buf = BytesMut::new();
    }
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(FlushFailure::Io(e)),
        Err(_) => Err(FlushFailure::Stalled),
    }
}

/// The permission a request needs; `None` for HELLO and PING, which any
/// connection may send.
pub(crate) fn required_permission(request: &Request) -> Option<Permission> {
    match request {
        Request::Hello(_) | Request::Ping => None,
        Request::Get { .. } | Request::Exists { .. } | Request::Stats => Some(Permission::Read),
        Request::Put { .. } | Request::Delete { .. } | Request::Batch(_) => Some(Permission::Write),
        Request::Compact
        | Request::Promote
        | Request::Replicate { .. }
        | Request::ReplSync(_)
        | Request::Backup => Some(Permission::Admin),
    }
}

/// The plaintext answer to a plaintext client on a TLS port, encoded once.
pub(crate) fn tls_required_frame() -> &'static [u8] {
    static FRAME: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
        let mut buf = BytesMut::new();
        let message = "this port requires TLS: connect with --tls-ca (KVSTORE_TLS_CA)";
        let _ = Response::error(ErrorCode::TLS_REQUIRED, message).encode(&mut buf);
        buf.to_vec()
    });
    &FRAME
}

fn is_write(request: &Request) -> bool {
    matches!(
        request,
        Request::Put { .. } | Request::Delete { .. } | Request::Batch(_)
    )
}
