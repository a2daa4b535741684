//! One RESP client: read, answer every complete request in order, write the
//! answers in one go.
//!
//! Invariants (as for binary connections, `server::connection`):
//! - answers go out in request order; everything already buffered is
//!   answered before the next read, in one write per batch;
//! - consecutive plain writes of one pipeline (`SET k v`, `MSET`, `DEL`)
//!   are appended in request order and awaited together, so they share a
//!   group commit; a command after them waits until they are done;
//! - the read buffer holds at most one incomplete request, whose size the
//!   parser bounds; it grows only as bytes arrive;
//! - a protocol error is answered `-ERR Protocol error: ...` and the
//!   connection closed, as Redis does;
//! - idle for `--idle-timeout-secs` → closed; a request started and not
//!   complete within `--frame-timeout-secs` → error, closed. A request
//!   "starts" when the one before it completes, so a long stream of
//!   pipelined requests (`redis-cli --pipe`) is never timed out as a whole.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::auth::{self, Refusal};
use super::commands;
use super::parse::{self, Args};
use super::reply::Reply;
use super::{Session, Shared};
// Buffer sizing and timeouts are the binary server's: one tuning for both.
use crate::metrics::AuthFailure;
use crate::security::tls::looks_like_tls;
use crate::security::ServerStream;
use crate::server::connection::{
    flush_answers, FlushFailure, FLUSH_AT, MAX_GROWTH, MAX_WRITE_RUN, NEVER, READ_CHUNK,
    SHRINK_ABOVE,
};

use crate::server::ServerContext;

/// Why the connection ended.
#[derive(Debug)]
enum End {
    Eof,
    Quit,
    Idle,
    Shutdown,
    Protocol,
    /// A token was not accepted.
    AuthFailed,
    /// A TLS handshake arrived on this plaintext port.
    TlsOnPlainPort,
    Io(std::io::Error),
}

/// Answers a connection over the limit and closes it, within one second.
pub async fn reject(mut stream: TcpStream) {
    let send = async {
        let _ = stream
            .write_all(b"-ERR max number of clients reached\r\n")
            .await;
        let _ = stream.shutdown().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), send).await;
}

/// Serves one RESP client until it quits, disconnects, idles out,
/// misbehaves or the node shuts down.
pub async fn serve_connection(
    stream: ServerStream,
    ctx: Arc<ServerContext>,
    shared: Arc<Shared>,
    id: u64,
) {
    let addr = |a: std::io::Result<std::net::SocketAddr>| {
        a.map(|a| a.to_string())
            .unwrap_or_else(|_| "unknown".into())
    };
    let session = Session {
        id,
        name: None,
        peer: addr(stream.tcp().peer_addr()),
        local: addr(stream.tcp().local_addr()),
        quit: false,
        credential: crate::security::Credential::new(&ctx.security),
        opened: std::time::Instant::now(),
    };
    let mut conn = Connection {
        stream,
        ctx,
        shared,
        session,
        read_buf: BytesMut::with_capacity(READ_CHUNK),
        write_buf: BytesMut::new(),
    };
    let end = conn.run().await;
    match end {
        End::Protocol => conn.ctx.metrics.protocol_error(),
        End::TlsOnPlainPort => {
            conn.ctx.metrics.auth_failure(AuthFailure::Tls);
            tracing::warn!(peer = %conn.session.peer, "TLS handshake on the plaintext RESP port; closed");
        }
        End::Io(e) => tracing::debug!(peer = %conn.session.peer, error = %e, "RESP I/O error"),
        other => tracing::trace!(peer = %conn.session.peer, ?other, "RESP connection closed"),
    }
}

struct Connection {
    stream: ServerStream,
    ctx: Arc<ServerContext>,
    shared: Arc<Shared>,
    session: Session,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

impl Connection {
    async fn run(&mut self) -> End {
        let mut started: Option<Instant> = None;
        let mut start_checked = false;
        loop {
            if !start_checked && self.read_buf.len() >= 3 {
                start_checked = true;
                if !self.stream.is_tls() && looks_like_tls(&self.read_buf) {
                    let _ = self.stream.shutdown().await;
                    return End::TlsOnPlainPort;
                }
            }
            let before = self.read_buf.len();
            if let Err(end) = self.answer_buffered().await {
                let _ = self.flush().await;
                let _ = self.stream.shutdown().await;
                return end;
            }
            // A request completed: whatever is left started just now, so
            // a client streaming a long pipeline is not cut off.
            let progressed = self.read_buf.len() < before;
            if let Err(end) = self.flush().await {
                return end;
            }
            if self.ctx.shutdown.is_triggered() {
                return End::Shutdown;
            }
            if self.read_buf.is_empty() {
                started = None;
                if self.read_buf.capacity() > SHRINK_ABOVE {
                    self.read_buf = BytesMut::with_capacity(READ_CHUNK);
                }
            } else if progressed || started.is_none() {
                started = Some(Instant::now());
            }
            let limits = self.ctx.limits;
            let deadline = match started {
                Some(at) => at + limits.frame_timeout,
                None if limits.idle_timeout.is_zero() => Instant::now() + NEVER,
                None => Instant::now() + limits.idle_timeout,
            };
            // Grow by what is already here (a big value streaming in),
            // never by an announced length.
            self.read_buf
                .reserve(self.read_buf.len().clamp(READ_CHUNK, MAX_GROWTH));
            let ctx = Arc::clone(&self.ctx);
            let read = tokio::select! {
                r = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.read_buf)) => r,
                _ = ctx.shutdown.wait() => return End::Shutdown,
            };
            match read {
                Err(_) if started.is_some() => {
                    Reply::err("Protocol error: request not completed in time")
                        .encode(&mut self.write_buf);
                    let _ = self.flush().await;
                    let _ = self.stream.shutdown().await;
                    return End::Protocol;
                }
                Err(_) => return End::Idle,
                Ok(Err(e)) => return End::Io(e),
                Ok(Ok(0)) => return End::Eof,
                Ok(Ok(n)) => self.ctx.metrics.add_bytes_received(n as u64),
            }
        }
    }

    /// Answers every complete request in the buffer, in order.
    async fn answer_buffered(&mut self) -> Result<(), End> {
        let mut writes: Vec<Args> = Vec::new();
        loop {
            let args = match parse::parse(&mut self.read_buf, &self.shared.settings.limits) {
                Ok(Some(args)) => args,
                Ok(None) => break,
                Err(e) => {
                    self.run_writes(&mut writes).await?;
                    Reply::err(e).encode(&mut self.write_buf);
                    return Err(End::Protocol);
                }
            };
            if args.is_empty() {
                continue;
            }
            let args = match auth::gate(&self.ctx, &mut self.session, args) {
                Ok(args) => args,
                Err(refusal) => {
                    self.run_writes(&mut writes).await?;
                    match refusal {
                        Refusal::Answer(reply) => self.push(&reply).await?,
                        Refusal::Close(reply) => {
                            self.push(&reply).await?;
                            return Err(End::AuthFailed);
                        }
                    }
                    continue;
                }
            };
            if commands::batchable(&args) {
                writes.push(args);
                if writes.len() >= MAX_WRITE_RUN {
                    self.run_writes(&mut writes).await?;
                }
                continue;
            }
            self.run_writes(&mut writes).await?;
            let reply = commands::execute(&self.ctx, &self.shared, &mut self.session, args).await;
            self.push(&reply).await?;
            if self.session.quit {
                return Err(End::Quit);
            }
        }
        self.run_writes(&mut writes).await
    }

    /// Runs a run of plain writes: each is appended when first polled and
    /// `join_all` polls in order, so log order is request order.
    async fn run_writes(&mut self, writes: &mut Vec<Args>) -> Result<(), End> {
        if writes.is_empty() {
            return Ok(());
        }
        let (ctx, shared) = (Arc::clone(&self.ctx), Arc::clone(&self.shared));
        let run = writes
            .drain(..)
            .map(|args| commands::execute_write(&ctx, &shared, args));
        let replies = futures_util::future::join_all(run).await;
        for reply in &replies {
            self.push(reply).await?;
        }
        Ok(())
    }

    async fn push(&mut self, reply: &Reply) -> Result<(), End> {
        reply.encode(&mut self.write_buf);
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
}
