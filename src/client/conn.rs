//! One framed TCP connection on the client side: buffered writes of
//! request frames, bounded reads of response frames.

use std::os::fd::AsFd;

use bytes::BytesMut;
use rustix::net::RecvFlags;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::Error;
use crate::protocol::{Frame, HelloOk, Limits, Request, Response};
use crate::security::{ClientStream, Connector};

/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;

pub(crate) struct Conn {
    stream: ClientStream,
    addr: String,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// Limits applied to responses (a VALUE can be as large as the
    /// server's max value, so the defaults are the engine's maxima).
    limits: Limits,
    /// The server's HELLO_OK, once received.
    pub(crate) server: Option<HelloOk>,
}

impl Conn {
    /// Connects to `addr`, over TLS when `tls` is set. The caller bounds
    /// the time.
    pub(crate) async fn open(addr: &str, tls: Option<&Connector>) -> Result<Conn, Error> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| Error::Connect {
                addr: addr.to_string(),
                source,
            })?;
        // Requests are small and latency-bound: never wait for Nagle.
        stream.set_nodelay(true).map_err(|source| Error::Connect {
            addr: addr.to_string(),
            source,
        })?;
        let stream = match tls {
            None => ClientStream::Plain(stream),
            Some(tls) => tls
                .connect(stream, addr)
                .await
                .map_err(|source| Error::Connect {
                    addr: addr.to_string(),
                    source,
                })?,
        };
        Ok(Conn {
            stream,
            addr: addr.to_string(),
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: BytesMut::with_capacity(READ_CHUNK),
            limits: Limits::for_client(),
            server: None,
        })
    }

    /// Queues a request; nothing is sent until [`Conn::flush`].
    pub(crate) fn queue(&mut self, request: &Request) -> Result<(), Error> {
        request.encode(&mut self.write_buf)?;
        Ok(())
    }

    /// Writes every queued request.
    pub(crate) async fn flush(&mut self) -> Result<(), Error> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        let mut result = self.stream.write_all(&self.write_buf).await;
        if result.is_ok() {
            result = self.stream.flush().await;
        }
        self.write_buf.clear();
        result.map_err(|source| self.io(source))
    }

    /// Reads the next response.
    pub(crate) async fn recv(&mut self) -> Result<Response, Error> {
        loop {
            if let Some(frame) = Frame::parse(&mut self.read_buf, self.limits.max_frame_bytes)? {
                return Ok(Response::decode(frame, &self.limits)?);
            }
            // The prefix was validated against our limit, so reserving the
            // whole missing body is bounded.
            let want = Frame::missing(&self.read_buf, self.limits.max_frame_bytes)?
                .unwrap_or(0)
                .max(READ_CHUNK);
            self.read_buf.reserve(want);
            let n = self
                .stream
                .read_buf(&mut self.read_buf)
                .await
                .map_err(|source| self.io(source))?;
            if n == 0 {
                return Err(Error::Closed {
                    addr: self.addr.clone(),
                });
            }
        }
    }

    /// True if the server has closed this connection (or sent something
    /// unasked, which only happens right before it closes). Non-blocking.
    pub(crate) fn is_stale(&mut self) -> bool {
        if !self.read_buf.is_empty() {
            return true;
        }
        // A direct peek: tokio's readiness cache is stale while no runtime
        // polls this socket (the blocking client between calls).
        let mut probe = [0u8; 1];
        let flags = RecvFlags::PEEK | RecvFlags::DONTWAIT;
        match rustix::net::recv(self.stream.tcp().as_fd(), &mut probe[..], flags) {
            // EOF, or bytes nobody asked for.
            Ok(_) => true,
            Err(e) => e != rustix::io::Errno::AGAIN,
        }
    }

    fn io(&self, source: std::io::Error) -> Error {
        Error::Io {
            addr: self.addr.clone(),
            source,
        }
    }
}
