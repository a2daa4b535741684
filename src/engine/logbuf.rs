//! The writer's buffer: log bytes appended to the active segment and not
//! yet handed to the OS.
//!
//! A master encodes its records into one `Vec`. A replica appends log
//! bytes it received from its master; copying them into that `Vec` is one
//! more pass over every byte of a catch-up, on top of the socket's copy in
//! and the page cache's copy out (a quarter of the CPU of the replica's
//! receiving side, measured). So shipped bytes are kept as the chunks they
//! arrived in (`Bytes` views of the receive buffers) and written from
//! there. Each chunk holds whole records, so a record is always in one
//! piece for a read of the buffer.

use bytes::Bytes;

/// Log bytes appended and not yet written: the encoded bytes first, then
/// the shipped chunks, in that order.
#[derive(Default)]
pub(crate) struct LogBuf {
    encoded: Vec<u8>,
    shipped: Vec<Bytes>,
    shipped_len: usize,
}

impl LogBuf {
    /// An empty buffer that encodes into `spare` (its allocation reused).
    pub fn with_spare(mut spare: Vec<u8>) -> LogBuf {
        spare.clear();
        LogBuf {
            encoded: spare,
            ..LogBuf::default()
        }
    }

    pub fn len(&self) -> usize {
        self.encoded.len() + self.shipped_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&mut self) {
        self.encoded.clear();
        self.shipped.clear();
        self.shipped_len = 0;
    }

    /// The vector to encode records into, at the end of the buffer. Shipped
    /// chunks held are copied into it first, so that what is encoded next
    /// follows them (only when a replica that appended shipped bytes starts
    /// writing its own, as a promotion makes it).
    pub fn encoded(&mut self) -> &mut Vec<u8> {
        if !self.shipped.is_empty() {
            for chunk in self.shipped.drain(..) {
                self.encoded.extend_from_slice(&chunk);
            }
            self.shipped_len = 0;
        }
        &mut self.encoded
    }

    /// Appends a copy of `bytes`: at the end of the encoded bytes, or as a
    /// chunk of its own after shipped ones (copying only `bytes`).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        if self.shipped.is_empty() {
            self.encoded.extend_from_slice(bytes);
        } else {
            self.push_shipped(Bytes::copy_from_slice(bytes));
        }
    }

    /// Appends `chunk` without copying it: it must hold whole records.
    pub fn push_shipped(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.shipped_len += chunk.len();
            self.shipped.push(chunk);
        }
    }

    /// `[start, start + len)` of the buffer, if it lies in one piece (a
    /// record always does).
    pub fn get(&self, start: usize, len: usize) -> Option<&[u8]> {
        let end = start.checked_add(len)?;
        let mut at = self.encoded.len();
        if start < at || self.shipped.is_empty() {
            return self.encoded.get(start..end);
        }
        for chunk in &self.shipped {
            if start < at + chunk.len() {
                return chunk.get(start - at..end - at);
            }
            at += chunk.len();
        }
        None
    }

    /// The buffer's bytes in order, as the pieces it holds them in.
    pub fn pieces(&self) -> Vec<&[u8]> {
        let mut pieces = Vec::with_capacity(1 + self.shipped.len());
        if !self.encoded.is_empty() {
            pieces.push(&self.encoded[..]);
        }
        pieces.extend(self.shipped.iter().map(|chunk| &chunk[..]));
        pieces
    }

    /// The encoding vector's allocation, emptied, for the next buffer; the
    /// shipped chunks are let go (their receive buffers can be reused).
    pub fn into_spare(mut self) -> Vec<u8> {
        self.encoded.clear();
        self.encoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_chunks_follow_the_encoded_bytes_and_are_read_in_place() {
        let mut buf = LogBuf::with_spare(b"stale".to_vec());
        assert!(buf.is_empty());
        buf.extend_from_slice(b"abc");
        let chunk = Bytes::from_static(b"defgh");
        buf.push_shipped(chunk.slice(..3));
        buf.push_shipped(Bytes::new());
        buf.push_shipped(chunk.slice(3..));
        assert_eq!(buf.len(), 8);
        assert_eq!(buf.pieces(), vec![&b"abc"[..], b"def", b"gh"]);
        assert_eq!(buf.get(0, 3), Some(&b"abc"[..]));
        assert_eq!(buf.get(3, 3), Some(&b"def"[..]));
        assert_eq!(buf.get(4, 2), Some(&b"ef"[..]));
        assert_eq!(buf.get(6, 2), Some(&b"gh"[..]));
        // Across two pieces, or past the end: not in one piece.
        assert_eq!(buf.get(2, 2), None);
        assert_eq!(buf.get(5, 2), None);
        assert_eq!(buf.get(8, 1), None);
        // The shipped chunk is held, not copied.
        assert_eq!(buf.get(3, 3).unwrap().as_ptr(), chunk.as_ptr());
    }

    #[test]
    fn encoding_after_shipped_chunks_copies_them_first_to_keep_the_order() {
        let mut buf = LogBuf::default();
        buf.push_shipped(Bytes::from_static(b"one"));
        buf.push_shipped(Bytes::from_static(b"two"));
        buf.encoded().extend_from_slice(b"three");
        assert_eq!(buf.pieces(), vec![&b"onetwothree"[..]]);
        assert_eq!(buf.len(), 11);
        buf.push_shipped(Bytes::from_static(b"four"));
        assert_eq!(buf.pieces(), vec![&b"onetwothree"[..], b"four"]);
        // A copy appended after a shipped chunk is a chunk of its own:
        // the chunks before it stay where they are.
        buf.extend_from_slice(b"five");
        assert_eq!(buf.pieces(), vec![&b"onetwothree"[..], b"four", b"five"]);
        let spare = buf.into_spare();
        assert!(spare.is_empty() && spare.capacity() >= 11);
    }
}
