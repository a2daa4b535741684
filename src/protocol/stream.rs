//! One framed stream, the only part of the protocol that does I/O: connect
//! (TCP, then TLS when a CA is given), say HELLO, write frames, read
//! frames. The client library, a replica's link to its master, the
//! master's side of that link and `kvstore backup` all use it, so the
//! handshake and the frame-read loop exist once.
//!
//! It lives here, above `security` (which owns TLS: the connector and the
//! one stream type over plain TCP or TLS) and below everything that talks
//! to a node; it imports neither the engine nor any front end.
//!
//! Invariants:
//! - a frame's length is checked against the reader's `max_frame` when its
//!   4 bytes arrive; the buffer then grows by at most [`MAX_RESERVE`] per
//!   read, so memory follows what arrived;
//! - "the peer closed between frames" is `Ok(None)`, a close mid-frame is
//!   [`StreamError::Closed`];
//! - writes are flushed (a TLS stream holds encrypted bytes until then).

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use super::{Auth, Error, ErrorCode, Frame, Hello, HelloOk, Limits, Request, Response};
use crate::security::{ClientStream, Connector};

/// Smallest read buffer growth.
const MIN_READ: usize = 64 * 1024;
/// Largest buffer growth for one read of a big frame.
pub const MAX_RESERVE: usize = 4 * 1024 * 1024;

/// Why a framed stream failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(#[from] Error),
    #[error("the peer closed the connection mid-frame")]
    Closed,
    #[error("nothing received for {0:?}")]
    Timeout(Duration),
}

/// Connects to `addr` (`host:port`) with TCP_NODELAY (requests are small
/// and latency-bound), then runs the TLS handshake when `tls` is set. The
/// caller bounds the time.
pub async fn connect(addr: &str, tls: Option<&Connector>) -> std::io::Result<ClientStream> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    match tls {
        None => Ok(ClientStream::Plain(tcp)),
        Some(tls) => tls.connect(tcp, addr).await,
    }
}

/// Why [`open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// TCP or TLS.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error(transparent)]
    Hello(#[from] HelloError),
}

/// Connects to `addr` (TLS when `tls` is set), says `hello` and waits up
/// to `timeout` for HELLO_OK: the one handshake of every outbound
/// connection (client, replica, backup). Frames up to
/// `limits.max_frame_bytes` are accepted afterwards. The caller bounds the
/// whole.
pub async fn open(
    addr: &str,
    tls: Option<&Connector>,
    hello: &Request,
    timeout: Duration,
    limits: &Limits,
) -> Result<(Framed<ClientStream>, HelloOk), OpenError> {
    let stream = connect(addr, tls).await.map_err(OpenError::Connect)?;
    let mut framed = Framed::new(stream, limits.max_frame_bytes);
    let info = framed.hello(hello, timeout, limits).await?;
    Ok((framed, info))
}

/// The HELLO a client sends: this build's version, the token if any.
pub fn hello(token: Option<&[u8]>, client_name: &str) -> Request {
    Request::Hello(Hello {
        version: super::PROTOCOL_VERSION,
        auth: match token {
            Some(token) => Auth::Token(bytes::Bytes::copy_from_slice(token)),
            None => Auth::None,
        },
        client_name: client_name.to_string(),
    })
}

/// Why the HELLO exchange did not end in HELLO_OK.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("the server refused: {code}: {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("the server answered {0} to HELLO")]
    Unexpected(&'static str),
}

/// Reads frames off one byte stream into one buffer.
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    max_frame: u32,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader whose buffer starts with `leftover` (bytes already read
    /// past an earlier frame), accepting frames up to `max_frame` bytes.
    pub fn new(io: R, leftover: BytesMut, max_frame: u32) -> Self {
        FrameReader {
            io,
            buf: leftover,
            max_frame,
        }
    }

    /// The next frame if it has already been received in full; never
    /// waits for the socket.
    pub fn buffered(&mut self) -> Result<Option<Frame>, StreamError> {
        Ok(Frame::parse(&mut self.buf, self.max_frame)?)
    }

    /// Whether any byte is buffered (a frame or the start of one).
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next frame; `Ok(None)` when the peer closed between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, StreamError> {
        loop {
            if let Some(frame) = Frame::parse(&mut self.buf, self.max_frame)? {
                return Ok(Some(frame));
            }
            // The prefix, if buffered, was validated by `parse`.
            let want = Frame::missing(&self.buf, self.max_frame)?.unwrap_or(0);
            self.buf.reserve(want.clamp(MIN_READ, MAX_RESERVE));
            if self.io.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(StreamError::Closed);
            }
        }
    }

    /// [`FrameReader::next`], giving up after `timeout` without a
    /// complete frame.
    pub async fn next_within(&mut self, timeout: Duration) -> Result<Option<Frame>, StreamError> {
        tokio::time::timeout(timeout, self.next())
            .await
            .map_err(|_| StreamError::Timeout(timeout))?
    }

    /// The next frame as a response (an ERROR frame included); a close
    /// between frames is [`StreamError::Closed`] here.
    pub async fn response(
        &mut self,
        timeout: Duration,
        limits: &Limits,
    ) -> Result<Response, StreamError> {
        let frame = self.frame_within(timeout).await?;
        Ok(Response::decode(frame, limits)?)
    }

    /// The next frame within `timeout`, where one must come: a close
    /// between frames is [`StreamError::Closed`] here.
    pub async fn frame_within(&mut self, timeout: Duration) -> Result<Frame, StreamError> {
        self.next_within(timeout).await?.ok_or(StreamError::Closed)
    }

    pub fn get_ref(&self) -> &R {
        &self.io
    }
}

/// Writes frames to one byte stream.
pub struct FrameWriter<W> {
    io: W,
    buf: BytesMut,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(io: W) -> Self {
        FrameWriter {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Encodes a frame with `encode` into the write buffer; nothing is
    /// sent until [`FrameWriter::flush`].
    pub fn queue(
        &mut self,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), Error>,
    ) -> Result<(), Error> {
        queue(&mut self.buf, encode)
    }

    /// Writes and flushes everything queued.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        write_out(&mut self.io, &mut self.buf).await
    }

    /// Encodes one frame and writes it out.
    pub async fn send(
        &mut self,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), Error>,
    ) -> Result<(), StreamError> {
        self.queue(encode)?;
        Ok(self.flush().await?)
    }

    /// Writes one frame whose bulk bytes are not copied into the write
    /// buffer: `encode_head` encodes the rest of the frame and returns the
    /// bytes that complete it, if any. Head and bulk go out in one
    /// vectored write where the stream supports it (plain TCP); a TLS
    /// layer copies them as it encrypts.
    pub async fn send_parts(
        &mut self,
        encode_head: impl FnOnce(&mut BytesMut) -> Result<Option<bytes::Bytes>, Error>,
    ) -> Result<(), StreamError> {
        let before = self.buf.len();
        let bulk = encode_head(&mut self.buf).inspect_err(|_| self.buf.truncate(before))?;
        let Some(bulk) = bulk else {
            return Ok(self.flush().await?);
        };
        let mut parts = bytes::Buf::chain(std::mem::take(&mut self.buf), bulk);
        let mut result = self.io.write_all_buf(&mut parts).await;
        if result.is_ok() {
            result = self.io.flush().await;
        }
        // Keep the buffer's allocation for the next frame.
        let (mut head, _) = parts.into_inner();
        head.clear();
        self.buf = head;
        Ok(result?)
    }

    /// Shuts the write side; errors are ignored (the stream ends anyway).
    pub async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

/// Encodes a frame at the end of `buf`; a frame that fails to encode
/// leaves `buf` as it was.
fn queue(
    buf: &mut BytesMut,
    encode: impl FnOnce(&mut BytesMut) -> Result<(), Error>,
) -> Result<(), Error> {
    let before = buf.len();
    encode(buf).inspect_err(|_| buf.truncate(before))
}

/// Writes all of `buf` to `io`, flushes it out of a TLS layer, empties
/// `buf` (whatever happened: after an error the stream is not used again).
async fn write_out<W: AsyncWrite + Unpin>(io: &mut W, buf: &mut BytesMut) -> std::io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    let mut result = io.write_all(buf).await;
    if result.is_ok() {
        result = io.flush().await;
    }
    buf.clear();
    result
}

/// A framed byte stream with both directions on one value (a client's
/// request/response conversation); [`Framed::into_split`] gives halves
/// for streams read and written at once.
pub struct Framed<S> {
    reader: FrameReader<S>,
    write_buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Framed<S> {
    /// A framed stream accepting frames up to `max_frame` bytes.
    pub fn new(io: S, max_frame: u32) -> Self {
        Framed {
            reader: FrameReader::new(io, BytesMut::new(), max_frame),
            write_buf: BytesMut::new(),
        }
    }

    /// Queues a request; nothing is sent until [`Framed::flush`].
    pub fn queue(&mut self, request: &Request) -> Result<(), Error> {
        queue(&mut self.write_buf, |b| request.encode(b))
    }

    /// Queues a frame encoded by `encode` (a message that is not a
    /// request, such as a replication acknowledgement).
    pub fn queue_with(
        &mut self,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), Error>,
    ) -> Result<(), Error> {
        queue(&mut self.write_buf, encode)
    }

    /// Writes and flushes every queued request.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        write_out(&mut self.reader.io, &mut self.write_buf).await
    }

    /// Sends one request.
    pub async fn send(&mut self, request: &Request) -> Result<(), StreamError> {
        self.queue(request)?;
        Ok(self.flush().await?)
    }

    /// The reading side: the next frame, what is buffered, the stream.
    pub fn reader(&mut self) -> &mut FrameReader<S> {
        &mut self.reader
    }

    /// Says HELLO and waits up to `timeout` for HELLO_OK.
    pub async fn hello(
        &mut self,
        hello: &Request,
        timeout: Duration,
        limits: &Limits,
    ) -> Result<HelloOk, HelloError> {
        self.send(hello).await?;
        match self.reader.response(timeout, limits).await? {
            Response::HelloOk(info) => Ok(info),
            Response::Error { code, message } => Err(HelloError::Refused { code, message }),
            other => Err(HelloError::Unexpected(super::opcode::name(other.opcode()))),
        }
    }

    /// Splits into a reader and a writer that can be used at once (from
    /// two tasks); bytes already buffered stay with the reader.
    pub fn into_split(self) -> (FrameReader<ReadHalf<S>>, FrameWriter<WriteHalf<S>>) {
        let FrameReader { io, buf, max_frame } = self.reader;
        let (rd, wr) = tokio::io::split(io);
        (FrameReader::new(rd, buf, max_frame), FrameWriter::new(wr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn ping_frame() -> Vec<u8> {
        let mut b = BytesMut::new();
        Request::Ping.encode(&mut b).expect("encode");
        b.to_vec()
    }

    #[tokio::test]
    async fn frames_split_across_reads_close_between_and_mid_frame() {
        let (mut near, far) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(far, BytesMut::new(), 1024);
        let frame = ping_frame();
        // One frame in two writes, then half of another, then EOF.
        near.write_all(&frame[..2]).await.unwrap();
        let task = tokio::spawn(async move {
            near.write_all(&frame[2..]).await.unwrap();
            near.write_all(&frame[..3]).await.unwrap();
            drop(near);
        });
        let got = reader.next().await.unwrap().expect("a frame");
        assert_eq!(got.opcode, crate::protocol::opcode::PING);
        task.await.unwrap();
        assert!(matches!(reader.next().await, Err(StreamError::Closed)));

        let (near, far) = tokio::io::duplex(64);
        drop(near);
        let mut reader = FrameReader::new(far, BytesMut::new(), 1024);
        assert!(reader.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_its_body() {
        let (mut near, far) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(far, BytesMut::new(), 1024);
        near.write_all(&2048u32.to_le_bytes()).await.unwrap();
        assert!(matches!(
            reader.next().await,
            Err(StreamError::Protocol(Error::FrameTooLarge { .. }))
        ));
    }

    #[tokio::test]
    async fn leftover_bytes_are_read_first_and_split_keeps_them() {
        let (near, far) = tokio::io::duplex(64);
        let mut framed = Framed::new(far, 1024);
        let mut peer = Framed::new(near, 1024);
        peer.send(&Request::Ping).await.unwrap();
        peer.send(&Request::Stats).await.unwrap();
        let first = framed.reader().next().await.unwrap().expect("first");
        assert_eq!(first.opcode, crate::protocol::opcode::PING);
        let (mut reader, _writer) = framed.into_split();
        // STATS may already be buffered: either way the reader returns it.
        let second = reader
            .next_within(Duration::from_secs(5))
            .await
            .unwrap()
            .expect("second");
        assert_eq!(second.opcode, crate::protocol::opcode::STATS);
    }
}
