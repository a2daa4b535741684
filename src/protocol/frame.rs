//! Frames: the unit of the wire protocol.
//!
//! ```text
//! offset  size  field
//!      0     4  body length N, u32 little-endian, 1 <= N <= max_frame_bytes
//!      4     1  opcode
//!      5   N-1  payload (layout depends on the opcode)
//! ```
//!
//! The length is validated as soon as its 4 bytes are present, before the
//! body arrives, so a peer announcing 4 GiB is refused without the reader
//! buffering or allocating anything for it.

use bytes::{Buf, Bytes, BytesMut};

use super::error::Error;

/// Bytes of the length prefix.
pub const FRAME_HEADER_LEN: usize = 4;

/// One complete frame, its payload a zero-copy view of the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub opcode: u8,
    pub payload: Bytes,
}

/// Reads and validates the length prefix at the start of `buf`.
///
/// Returns `Ok(None)` when fewer than 4 bytes are buffered, otherwise the
/// total frame length (prefix included) once it is known to be within
/// `max_frame_bytes`.
pub fn frame_len(buf: &[u8], max_frame_bytes: u32) -> Result<Option<usize>, Error> {
    let Some(prefix) = buf.get(..FRAME_HEADER_LEN) else {
        return Ok(None);
    };
    let mut le = [0u8; FRAME_HEADER_LEN];
    le.copy_from_slice(prefix);
    let len = u32::from_le_bytes(le);
    if len == 0 {
        return Err(Error::EmptyFrame);
    }
    if len > max_frame_bytes {
        return Err(Error::FrameTooLarge {
            len: u64::from(len),
            max: max_frame_bytes,
        });
    }
    let body = usize::try_from(len).map_err(|_| Error::FrameTooLarge {
        len: u64::from(len),
        max: max_frame_bytes,
    })?;
    Ok(body.checked_add(FRAME_HEADER_LEN))
}

impl Frame {
    /// Takes one complete frame off the front of `buf`.
    ///
    /// `Ok(None)` means more bytes are needed (nothing is consumed); an
    /// error means the stream cannot be framed any further.
    pub fn parse(buf: &mut BytesMut, max_frame_bytes: u32) -> Result<Option<Frame>, Error> {
        let Some(total) = frame_len(buf, max_frame_bytes)? else {
            return Ok(None);
        };
        if buf.len() < total {
            return Ok(None);
        }
        let mut body = buf.split_to(total).freeze();
        body.advance(FRAME_HEADER_LEN);
        // total > FRAME_HEADER_LEN because frame_len rejects an empty body.
        let opcode = body.get_u8();
        Ok(Some(Frame {
            opcode,
            payload: body,
        }))
    }

    /// Bytes still missing before the frame at the front of `buf` is
    /// complete, if its prefix is known. Lets a reader reserve exactly what
    /// the (already validated) frame needs.
    pub fn missing(buf: &[u8], max_frame_bytes: u32) -> Result<Option<usize>, Error> {
        Ok(frame_len(buf, max_frame_bytes)?.map(|total| total.saturating_sub(buf.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_is_not_an_error() {
        let mut buf = BytesMut::from(&[3u8, 0, 0][..]);
        assert_eq!(Frame::parse(&mut buf, 100), Ok(None));
        buf.extend_from_slice(&[0, 0x02, 9]);
        assert_eq!(Frame::parse(&mut buf, 100), Ok(None));
        assert_eq!(buf.len(), 6);
        buf.extend_from_slice(&[8, 0xAA]);
        let frame = Frame::parse(&mut buf, 100).unwrap().unwrap();
        assert_eq!(frame.opcode, 0x02);
        assert_eq!(&frame.payload[..], &[9, 8]);
        assert_eq!(&buf[..], &[0xAA]);
    }

    #[test]
    fn huge_length_is_refused_before_the_body() {
        let mut buf = BytesMut::from(&[0xFF, 0xFF, 0xFF, 0xFF][..]);
        assert_eq!(
            Frame::parse(&mut buf, 1 << 20),
            Err(Error::FrameTooLarge {
                len: u64::from(u32::MAX),
                max: 1 << 20
            })
        );
    }

    #[test]
    fn empty_frame_is_an_error() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0, 1][..]);
        assert_eq!(Frame::parse(&mut buf, 100), Err(Error::EmptyFrame));
    }

    #[test]
    fn missing_counts_body_bytes() {
        assert_eq!(Frame::missing(&[5, 0, 0, 0, 1], 100), Ok(Some(4)));
        assert_eq!(Frame::missing(&[5, 0], 100), Ok(None));
    }
}
