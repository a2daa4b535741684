//! Bounds-checked little-endian field reading and writing shared by the
//! request and response codecs.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::Error;

/// Reads fields from one frame payload. Every read checks the remaining
/// length first; slices are zero-copy views of the frame.
pub(crate) struct Reader {
    buf: Bytes,
    opcode: &'static str,
}

impl Reader {
    pub(crate) fn new(buf: Bytes, opcode: &'static str) -> Self {
        Reader { buf, opcode }
    }

    pub(crate) fn opcode(&self) -> &'static str {
        self.opcode
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<Bytes, Error> {
        if self.buf.len() < n {
            return Err(Error::Truncated {
                opcode: self.opcode,
                field,
                needed: n as u64,
                available: self.buf.len(),
            });
        }
        Ok(self.buf.split_to(n))
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Error> {
        let bytes = self.take(field, N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, Error> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, Error> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(Error::InvalidField {
                opcode: self.opcode,
                field,
                value: u64::from(other),
            }),
        }
    }

    /// A `u32` length then that many bytes. `too_large` builds the error
    /// for a length over `max`; it is checked before the bytes are touched.
    pub(crate) fn sized(
        &mut self,
        field: &'static str,
        max: u32,
        too_large: fn(u64, u32) -> Error,
    ) -> Result<Bytes, Error> {
        let len = self.u32(field)?;
        if len > max {
            return Err(too_large(u64::from(len), max));
        }
        let len = usize::try_from(len).map_err(|_| too_large(u64::from(len), max))?;
        self.take(field, len)
    }

    /// A `u32` length then that many bytes of UTF-8, at most `max` bytes.
    pub(crate) fn string(&mut self, field: &'static str, max: u32) -> Result<String, Error> {
        let opcode = self.opcode;
        let len = self.u32(field)?;
        if len > max {
            return Err(Error::InvalidField {
                opcode,
                field,
                value: u64::from(len),
            });
        }
        let n = usize::try_from(len).map_err(|_| Error::InvalidField {
            opcode,
            field,
            value: u64::from(len),
        })?;
        let bytes = self.take(field, n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Error::InvalidUtf8 { opcode, field })
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(self) -> Result<(), Error> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::TrailingBytes {
                opcode: self.opcode,
                extra: self.buf.len(),
            })
        }
    }
}

/// Writes a `u32` length then the bytes. The caller guarantees `len` fits
/// in a frame (frames are bounded by `u32`, checked in [`finish_frame`]).
pub(crate) fn put_sized(dst: &mut BytesMut, bytes: &[u8]) {
    dst.put_u32_le(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    dst.put_slice(bytes);
}

/// Starts a frame: reserves the length prefix and writes the opcode.
/// Returns the position of the prefix for [`finish_frame`].
pub(crate) fn start_frame(dst: &mut BytesMut, opcode: u8) -> usize {
    let at = dst.len();
    dst.put_u32_le(0);
    dst.put_u8(opcode);
    at
}

/// Patches the length prefix written by [`start_frame`]. A body longer than
/// `u32::MAX` cannot be framed: the partial frame is removed and an error
/// returned, so `dst` never holds a frame with a lying length.
pub(crate) fn finish_frame(dst: &mut BytesMut, at: usize) -> Result<(), Error> {
    finish_frame_before(dst, at, 0)
}

/// [`finish_frame`] for a frame whose last `trailing` bytes are not in
/// `dst`: the caller writes them right after it (a payload sent from its
/// own buffer rather than copied in).
pub(crate) fn finish_frame_before(
    dst: &mut BytesMut,
    at: usize,
    trailing: usize,
) -> Result<(), Error> {
    let body = (dst.len() - at - super::FRAME_HEADER_LEN).saturating_add(trailing);
    match u32::try_from(body) {
        Ok(len) => {
            dst[at..at + super::FRAME_HEADER_LEN].copy_from_slice(&len.to_le_bytes());
            Ok(())
        }
        Err(_) => {
            dst.truncate(at);
            Err(Error::FrameTooLarge {
                len: body as u64,
                max: u32::MAX,
            })
        }
    }
}
