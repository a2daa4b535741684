//! One connection on the client side: the protocol's framed stream
//! (connect, TLS, HELLO, frames) with the client's error types, and a
//! non-blocking check that the server has not closed it.

use std::os::fd::AsFd;
use std::time::Duration;

use rustix::net::RecvFlags;

use super::error::Error;
use crate::protocol::stream::{self, Framed, HelloError, OpenError, StreamError};
use crate::protocol::{opcode, HelloOk, Limits, Request, Response};
use crate::security::{ClientStream, Connector};

pub(crate) struct Conn {
    framed: Framed<ClientStream>,
    addr: String,
    /// Limits applied to responses (a VALUE can be as large as the
    /// server's max value, so the defaults are the engine's maxima).
    limits: Limits,
    /// The server's HELLO_OK, once received.
    pub(crate) server: Option<HelloOk>,
}

impl Conn {
    /// Connects to `addr`, over TLS when `tls` is set, and says `hello`.
    /// The caller bounds the time; `timeout` bounds the wait for HELLO_OK.
    pub(crate) async fn open(
        addr: &str,
        tls: Option<&Connector>,
        hello: &Request,
        timeout: Duration,
    ) -> Result<Conn, Error> {
        let limits = Limits::for_client();
        let (framed, info) = match stream::open(addr, tls, hello, timeout, &limits).await {
            Ok(opened) => opened,
            Err(OpenError::Connect(source)) => {
                return Err(Error::Connect {
                    addr: addr.to_string(),
                    source,
                })
            }
            Err(OpenError::Hello(HelloError::Stream(e))) => return Err(stream_error(addr, e)),
            Err(OpenError::Hello(HelloError::Refused { code, message })) => {
                return Err(Error::Server { code, message })
            }
            Err(OpenError::Hello(HelloError::Unexpected(response))) => {
                return Err(Error::UnexpectedResponse {
                    request: opcode::name(opcode::HELLO),
                    response,
                })
            }
        };
        let conn = Conn {
            framed,
            addr: addr.to_string(),
            limits,
            server: Some(info),
        };
        Ok(conn)
    }

    /// The protocol version the server's HELLO_OK settled on.
    pub(crate) fn version(&self) -> u16 {
        self.server
            .as_ref()
            .map_or(crate::protocol::PROTOCOL_VERSION, |s| s.version)
    }

    /// Queues a request; nothing is sent until [`Conn::flush`].
    pub(crate) fn queue(&mut self, request: &Request) -> Result<(), Error> {
        Ok(self.framed.queue(request)?)
    }

    /// Writes every queued request.
    pub(crate) async fn flush(&mut self) -> Result<(), Error> {
        self.framed.flush().await.map_err(|source| Error::Io {
            addr: self.addr.clone(),
            source,
        })
    }

    /// Reads the next response.
    pub(crate) async fn recv(&mut self) -> Result<Response, Error> {
        match self.framed.reader().next().await {
            Ok(Some(frame)) => Ok(Response::decode(frame, &self.limits)?),
            Ok(None) => Err(Error::Closed {
                addr: self.addr.clone(),
            }),
            Err(e) => Err(self.stream_error(e)),
        }
    }

    fn stream_error(&self, e: StreamError) -> Error {
        stream_error(&self.addr, e)
    }

    /// True if the server has closed this connection (or sent something
    /// unasked, which only happens right before it closes). Non-blocking.
    pub(crate) fn is_stale(&mut self) -> bool {
        let reader = self.framed.reader();
        if reader.has_buffered() {
            return true;
        }
        // A direct peek: tokio's readiness cache is stale while no runtime
        // polls this socket (the blocking client between calls).
        let mut probe = [0u8; 1];
        let flags = RecvFlags::PEEK | RecvFlags::DONTWAIT;
        match rustix::net::recv(reader.get_ref().tcp().as_fd(), &mut probe[..], flags) {
            // EOF, or bytes nobody asked for.
            Ok(_) => true,
            Err(e) => e != rustix::io::Errno::AGAIN,
        }
    }
}

/// A stream failure on the connection to `addr` as a client error.
fn stream_error(addr: &str, e: StreamError) -> Error {
    let addr = addr.to_string();
    match e {
        StreamError::Io(source) => Error::Io { addr, source },
        StreamError::Protocol(e) => Error::Protocol(e),
        StreamError::Closed => Error::Closed { addr },
        StreamError::Timeout(after) => Error::Timeout {
            what: "request",
            addr,
            after,
        },
    }
}
