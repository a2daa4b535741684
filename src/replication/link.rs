//! Framed reading and writing on the two halves of a replication
//! connection, with the same bounds as the client protocol.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::{self, Frame};

use super::ReplError;

const READ_CHUNK: usize = 256 * 1024;

pub(crate) struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max_frame: u32,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, leftover: BytesMut, max_frame: u32) -> Self {
        FrameReader {
            inner,
            buf: leftover,
            max_frame,
        }
    }

    /// The next frame; `Ok(None)` when the peer closed cleanly between
    /// frames. Gives up after `timeout` without a complete frame.
    pub async fn next(&mut self, timeout: Duration) -> Result<Option<Frame>, ReplError> {
        let read = async {
            loop {
                if let Some(frame) = Frame::parse(&mut self.buf, self.max_frame)? {
                    return Ok(Some(frame));
                }
                let want = Frame::missing(&self.buf, self.max_frame)?
                    .unwrap_or(0)
                    .clamp(READ_CHUNK, 4 * READ_CHUNK);
                self.buf.reserve(want);
                if self.inner.read_buf(&mut self.buf).await? == 0 {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    return Err(ReplError::Closed);
                }
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| ReplError::Timeout(timeout))?
    }

    /// The next frame if it has already been received in full; never
    /// waits for the socket.
    pub fn buffered(&mut self) -> Result<Option<Frame>, ReplError> {
        Ok(Frame::parse(&mut self.buf, self.max_frame)?)
    }
}

pub(crate) struct FrameWriter<W> {
    inner: W,
    buf: BytesMut,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        FrameWriter {
            inner,
            buf: BytesMut::new(),
        }
    }

    /// Encodes with `encode` and writes the frame out.
    pub async fn send(
        &mut self,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), protocol::Error>,
    ) -> Result<(), ReplError> {
        self.buf.clear();
        encode(&mut self.buf)?;
        self.inner.write_all(&self.buf).await?;
        // A TLS stream holds encrypted bytes until flushed.
        self.inner.flush().await?;
        Ok(())
    }

    pub async fn shutdown(&mut self) {
        let _ = self.inner.shutdown().await;
    }
}
