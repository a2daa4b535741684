//! Size limits enforced while decoding, before anything is allocated.

use crate::engine::record::{MAX_KEY_LEN, MAX_VALUE_LEN};

/// Bounds on what one peer accepts from the other. The defaults match the
/// engine's own record limits, so anything the protocol lets through the
/// engine can store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame body (opcode + payload) accepted, in bytes.
    /// Default: max value + max key + 1 MiB of framing room.
    pub max_frame_bytes: u32,
    /// Largest key, in bytes. Default 64 KiB (the engine's limit).
    pub max_key_bytes: u32,
    /// Largest value, in bytes. Default 64 MiB (the engine's limit).
    pub max_value_bytes: u32,
    /// Most operations in one BATCH. Default 10,000.
    pub max_batch_ops: u32,
}

/// Largest key the engine stores, as a wire-sized integer.
const ENGINE_MAX_KEY: u32 = as_u32(MAX_KEY_LEN);
/// Largest value the engine stores, as a wire-sized integer.
const ENGINE_MAX_VALUE: u32 = as_u32(MAX_VALUE_LEN);

/// Compile-time conversion that fails the build rather than truncating.
const fn as_u32(n: usize) -> u32 {
    assert!(n <= u32::MAX as usize);
    n as u32
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: ENGINE_MAX_VALUE + ENGINE_MAX_KEY + (1 << 20),
            max_key_bytes: ENGINE_MAX_KEY,
            max_value_bytes: ENGINE_MAX_VALUE,
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
