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
//!   read, so memory follows what arrived (a reader reusing its buffers
//!   allocates one block of a size its owner chose at a time);
//! - "the peer closed between frames" is `Ok(None)`, a close mid-frame is
//!   [`StreamError::Closed`];
//! - a frame is a view of the buffer it arrived in, never overwritten while
//!   any part of it is held: a reader that reuses its buffers
//!   ([`FrameReader::reuse_buffers`]) reads into one again only once every
//!   frame split from it is dropped;
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
    /// Receive blocks kept for reuse, when the reader was asked to.
    blocks: Option<Blocks>,
}

/// The receive blocks of a reader that reuses its buffers: fixed-size
/// allocations that frames are read into and split from. A block whose
/// frames are all dropped is read into again instead of a fresh
/// allocation, so a long transfer touches the same memory over and over
/// rather than fresh pages (which the allocator would take from the OS and
/// give back as each frame is dropped).
struct Blocks {
    /// Bytes in a block.
    size: usize,
    /// Blocks kept at most, the one being read into included.
    max: usize,
    /// Whether the read buffer is a block (its allocation is `size` bytes).
    current: bool,
    /// Blocks read into before, each an empty handle that keeps its
    /// allocation; reusable once the handle is the allocation's only one.
    spare: Vec<BytesMut>,
    /// Blocks allocated so far.
    #[cfg(test)]
    made: usize,
}

impl Blocks {
    /// Makes room in `buf` for `room` more bytes, in a block when the
    /// frame being read fits in one.
    fn make_room(&mut self, buf: &mut BytesMut, room: usize) {
        let len = buf.len();
        if buf.capacity() - len >= room {
            return;
        }
        if len + room > self.size {
            // A frame larger than a block: a buffer of its own, grown as
            // it arrives.
            if self.current {
                self.switch(buf, BytesMut::with_capacity(len + room));
                self.current = false;
            } else {
                buf.reserve(room);
            }
            return;
        }
        // The block being read into, when none of its frames is held any
        // more: its unread bytes move to its start.
        if self.current && buf.try_reclaim(self.size - len) {
            return;
        }
        let free = self
            .spare
            .iter_mut()
            .position(|block| block.try_reclaim(self.size));
        let next = match free {
            Some(i) => self.spare.swap_remove(i),
            None => {
                #[cfg(test)]
                {
                    self.made += 1;
                }
                BytesMut::with_capacity(self.size)
            }
        };
        self.switch(buf, next);
        self.current = true;
    }

    /// Moves the unread bytes of `buf` into `next`, which becomes the read
    /// buffer; keeps the block `buf` was, if it was one and there is room.
    fn switch(&mut self, buf: &mut BytesMut, mut next: BytesMut) {
        next.extend_from_slice(buf);
        let mut old = std::mem::replace(buf, next);
        if self.current && self.spare.len() + 1 < self.max {
            old.clear();
            self.spare.push(old);
        }
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader whose buffer starts with `leftover` (bytes already read
    /// past an earlier frame), accepting frames up to `max_frame` bytes.
    pub fn new(io: R, leftover: BytesMut, max_frame: u32) -> Self {
        FrameReader {
            io,
            buf: leftover,
            max_frame,
            blocks: None,
        }
    }

    /// Reads into blocks of `size` bytes from now on, keeping up to `max`
    /// of them: a block is read into again once every frame split from it
    /// is dropped. For a stream of large frames held a while (replication
    /// chunks on their way to the disk), where a fresh buffer per frame
    /// would be fresh memory to fault in per frame. A frame that does not
    /// fit in a block gets a buffer of its own.
    pub fn reuse_buffers(&mut self, size: usize, max: usize) {
        self.blocks = Some(Blocks {
            size,
            max: max.max(1),
            current: false,
            spare: Vec::new(),
            #[cfg(test)]
            made: 0,
        });
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
            let room = want.clamp(MIN_READ, MAX_RESERVE);
            let read = match &mut self.blocks {
                // No further than the frame's end (or `MIN_READ` into the
                // next ones): the bytes read past a frame are copied when
                // the block is left.
                Some(blocks) => {
                    blocks.make_room(&mut self.buf, room);
                    let mut limited = bytes::BufMut::limit(&mut self.buf, room);
                    self.io.read_buf(&mut limited).await?
                }
                None => {
                    self.buf.reserve(room);
                    self.io.read_buf(&mut self.buf).await?
                }
            };
            if read == 0 {
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
        let FrameReader {
            io,
            buf,
            max_frame,
            blocks,
        } = self.reader;
        let (rd, wr) = tokio::io::split(io);
        let mut reader = FrameReader::new(rd, buf, max_frame);
        reader.blocks = blocks;
        (reader, FrameWriter::new(wr))
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

    /// A frame of `len` body bytes (opcode `n`) whose payload says which
    /// frame it is in every byte.
    fn numbered_frame(n: u8, len: usize) -> Vec<u8> {
        let mut b = (len as u32).to_le_bytes().to_vec();
        b.push(n);
        b.extend((1..len).map(|i| n.wrapping_mul(31).wrapping_add(i as u8)));
        b
    }

    fn assert_numbered(frame: &Frame, n: u8, len: usize) {
        assert_eq!(frame.opcode, n);
        assert_eq!(frame.payload.len(), len - 1, "frame {n}");
        let good =
            (1..len).all(|i| frame.payload[i - 1] == n.wrapping_mul(31).wrapping_add(i as u8));
        assert!(good, "frame {n} changed under its holder");
    }

    /// Writes `frames` (number, body length) to a reader that reuses
    /// blocks of `block` bytes, keeping at most `max`.
    fn pooled_reader(
        frames: Vec<(u8, usize)>,
        block: usize,
        max: usize,
    ) -> (
        FrameReader<tokio::io::DuplexStream>,
        tokio::task::JoinHandle<()>,
    ) {
        let (mut near, far) = tokio::io::duplex(64 * 1024);
        let mut reader = FrameReader::new(far, BytesMut::new(), 8 << 20);
        reader.reuse_buffers(block, max);
        let writer = tokio::spawn(async move {
            for (n, len) in frames {
                near.write_all(&numbered_frame(n, len)).await.unwrap();
            }
        });
        (reader, writer)
    }

    fn made(reader: &FrameReader<tokio::io::DuplexStream>) -> usize {
        reader.blocks.as_ref().expect("reusing").made
    }

    #[tokio::test]
    async fn a_block_is_read_into_again_only_once_its_frames_are_dropped() {
        // Two 100 KB frames fit in a 256 KiB block (the second read of a
        // frame runs into the next one, whose start moves with it when
        // the block is left).
        const LEN: usize = 100_000;
        let (mut reader, writer) = pooled_reader((0..12).map(|n| (n, LEN)).collect(), 256 << 10, 4);
        let mut held = Vec::new();
        for n in 0..6 {
            held.push(reader.next().await.unwrap().expect("a frame"));
            assert_numbered(&held[n as usize], n, LEN);
        }
        // Every block read so far holds a frame still held: all are new.
        let first = made(&reader);
        assert!(first >= 3, "{first} blocks for six frames");
        // Drop the first four: their blocks become free, the others not.
        let freed: Vec<(usize, usize)> = held
            .drain(..4)
            .map(|f| (f.payload.as_ptr() as usize, f.payload.len()))
            .collect();
        let mut reused = 0;
        for _ in 6..12 {
            let frame = reader.next().await.unwrap().expect("a frame");
            let at = frame.payload.as_ptr() as usize;
            if freed
                .iter()
                .any(|&(p, len)| at < p + len && p < at + frame.payload.len())
            {
                reused += 1;
            }
            held.push(frame);
        }
        // Four frames into the two freed blocks, two into a new one.
        let second = made(&reader);
        writer.await.unwrap();
        assert!(reader.next().await.unwrap().is_none());
        for (frame, n) in held.iter().zip(4..) {
            assert_numbered(frame, n, LEN);
        }
        assert!(reused >= 4, "{reused} frames read into freed blocks");
        assert_eq!(
            second,
            first + 1,
            "blocks made after the first four frames were dropped"
        );
    }

    #[tokio::test]
    async fn frames_larger_than_a_block_get_their_own_buffer_between_pooled_ones() {
        let frames = vec![
            (0, 1_000),
            (1, 1_000_000),
            (2, 7),
            (3, 100_000),
            (4, 300_000),
            (5, 300_000),
            (6, 50_000),
            (7, 1),
        ];
        let (mut reader, writer) = pooled_reader(frames.clone(), 128 << 10, 2);
        let mut held = Vec::new();
        while let Some(frame) = reader.next().await.unwrap() {
            held.push(frame);
        }
        writer.await.unwrap();
        assert_eq!(held.len(), frames.len());
        for (frame, (n, len)) in held.iter().zip(frames) {
            assert_numbered(frame, n, len);
        }
    }
}
