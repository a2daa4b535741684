//! Size limits enforced while decoding, before anything is allocated.
//!
//! The key and value maxima are the wire's own constants (docs/PROTOCOL.md
//! section 4): the protocol imports nothing of the engine. They equal the
//! engine's record limits, so anything the protocol lets through the engine
//! can store; the node, which imports both, checks that at compile time.

/// Largest key the protocol carries: 64 KiB.
pub const MAX_KEY_BYTES: u32 = 64 * 1024;
/// Largest value the protocol carries: 64 MiB.
pub const MAX_VALUE_BYTES: u32 = 64 * 1024 * 1024;

/// Bounds on what one peer accepts from the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame body (opcode + payload) accepted, in bytes.
    /// Default: max value + max key + 1 MiB of framing room.
    pub max_frame_bytes: u32,
    /// Largest key, in bytes. Default [`MAX_KEY_BYTES`].
    pub max_key_bytes: u32,
    /// Largest value, in bytes. Default [`MAX_VALUE_BYTES`].
    pub max_value_bytes: u32,
    /// Most operations in one BATCH. Default 10,000.
    pub max_batch_ops: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: MAX_VALUE_BYTES + MAX_KEY_BYTES + (1 << 20),
            max_key_bytes: MAX_KEY_BYTES,
            max_value_bytes: MAX_VALUE_BYTES,
            max_batch_ops: 10_000,
        }
    }
}

impl Limits {
    /// Limits a client applies to responses: values up to the engine's
    /// maximum, generous stats payloads.
    pub fn for_client() -> Self {
        Limits::default()
    }
}
