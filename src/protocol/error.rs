//! Decoding errors ([`Error`]) and the numeric codes carried by ERROR
//! responses ([`ErrorCode`]).

use std::fmt;

/// Why bytes from the peer are not a valid frame or message.
///
/// "Need more bytes" is not here: the decoders return `Ok(None)` for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: u64, max: u32 },
    #[error("empty frame: a frame body holds at least an opcode byte")]
    EmptyFrame,
    #[error("unknown opcode {opcode:#04x}")]
    UnknownOpcode { opcode: u8 },
    #[error("{opcode} frame truncated: {field} needs {needed} bytes, {available} left")]
    Truncated {
        opcode: &'static str,
        field: &'static str,
        needed: u64,
        available: usize,
    },
    #[error("{opcode} frame has {extra} unexpected trailing bytes")]
    TrailingBytes { opcode: &'static str, extra: usize },
    #[error("key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge { len: u64, max: u32 },
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge { len: u64, max: u32 },
    #[error("batch of {ops} operations exceeds the limit of {max}")]
    BatchTooLarge { ops: u64, max: u32 },
    #[error("{opcode} frame: invalid {field} {value:#x}")]
    InvalidField {
        opcode: &'static str,
        field: &'static str,
        value: u64,
    },
    #[error("{opcode} frame: {field} is not valid UTF-8")]
    InvalidUtf8 {
        opcode: &'static str,
        field: &'static str,
    },
}

impl Error {
    /// The code a server answers with for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::FrameTooLarge { .. } => ErrorCode::FRAME_TOO_LARGE,
            Error::UnknownOpcode { .. } => ErrorCode::UNKNOWN_OPCODE,
            Error::KeyTooLarge { .. } => ErrorCode::KEY_TOO_LARGE,
            Error::ValueTooLarge { .. } => ErrorCode::VALUE_TOO_LARGE,
            Error::BatchTooLarge { .. } => ErrorCode::BATCH_TOO_LARGE,
            Error::EmptyFrame
            | Error::Truncated { .. }
            | Error::TrailingBytes { .. }
            | Error::InvalidField { .. }
            | Error::InvalidUtf8 { .. } => ErrorCode::MALFORMED_FRAME,
        }
    }
}

/// The numeric code in an ERROR response (u16 on the wire).
///
/// Codes below 100 are connection errors: the server closes the connection
/// right after sending them. Codes from 100 are request errors: the request
/// failed, the connection stays usable. Unknown codes must be accepted by
/// clients (a newer server may send them) and treated by that rule.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    // Connection errors (< 100): the server closes after sending.
    pub const MALFORMED_FRAME: ErrorCode = ErrorCode(1);
    pub const UNKNOWN_OPCODE: ErrorCode = ErrorCode(2);
    pub const FRAME_TOO_LARGE: ErrorCode = ErrorCode(3);
    pub const FRAME_TIMEOUT: ErrorCode = ErrorCode(4);
    pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(5);
    pub const AUTH_FAILED: ErrorCode = ErrorCode(6);
    pub const TOO_MANY_CONNECTIONS: ErrorCode = ErrorCode(7);
    pub const SHUTTING_DOWN: ErrorCode = ErrorCode(8);
    /// A request other than HELLO or PING before authenticating, or a
    /// HELLO without a token to a server that requires one.
    pub const AUTH_REQUIRED: ErrorCode = ErrorCode(9);
    /// Plaintext bytes on a port that accepts TLS only (sent in plaintext).
    pub const TLS_REQUIRED: ErrorCode = ErrorCode(10);
    /// The node's memory budget for client requests and answers cannot
    /// hold this request or answer now.
    pub const MEMORY_LIMIT: ErrorCode = ErrorCode(11);
    // Request errors (>= 100): the connection stays open.
    pub const KEY_TOO_LARGE: ErrorCode = ErrorCode(100);
    pub const VALUE_TOO_LARGE: ErrorCode = ErrorCode(101);
    pub const BATCH_TOO_LARGE: ErrorCode = ErrorCode(102);
    pub const STORAGE: ErrorCode = ErrorCode(110);
    pub const POISONED: ErrorCode = ErrorCode(111);
    pub const READ_ONLY: ErrorCode = ErrorCode(112);
    pub const FATE_UNKNOWN: ErrorCode = ErrorCode(113);
    pub const NOT_ENOUGH_REPLICAS: ErrorCode = ErrorCode(114);
    pub const STALE_MASTER: ErrorCode = ErrorCode(115);
    pub const NOT_MASTER: ErrorCode = ErrorCode(116);
    pub const MALFORMED_REQUEST: ErrorCode = ErrorCode(117);
    /// The connection's credential does not allow this request.
    pub const PERMISSION_DENIED: ErrorCode = ErrorCode(118);
    /// Replication: the replica holds log bytes past a tail this master
    /// cut off its log; it is not told to truncate them.
    pub const TAIL_CUT: ErrorCode = ErrorCode(119);
    pub const INTERNAL: ErrorCode = ErrorCode(120);
    /// SWITCHOVER was refused or did not complete; the message says why
    /// and whether the master kept its term.
    pub const SWITCHOVER_FAILED: ErrorCode = ErrorCode(121);

    /// True if the server closes the connection after this error.
    pub fn closes_connection(self) -> bool {
        self.0 < 100
    }

    /// The symbolic name used in docs and logs.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::MALFORMED_FRAME => "MALFORMED_FRAME",
            ErrorCode::UNKNOWN_OPCODE => "UNKNOWN_OPCODE",
            ErrorCode::FRAME_TOO_LARGE => "FRAME_TOO_LARGE",
            ErrorCode::FRAME_TIMEOUT => "FRAME_TIMEOUT",
            ErrorCode::UNSUPPORTED_VERSION => "UNSUPPORTED_VERSION",
            ErrorCode::AUTH_FAILED => "AUTH_FAILED",
            ErrorCode::TOO_MANY_CONNECTIONS => "TOO_MANY_CONNECTIONS",
            ErrorCode::SHUTTING_DOWN => "SHUTTING_DOWN",
            ErrorCode::AUTH_REQUIRED => "AUTH_REQUIRED",
            ErrorCode::TLS_REQUIRED => "TLS_REQUIRED",
            ErrorCode::MEMORY_LIMIT => "MEMORY_LIMIT",
            ErrorCode::KEY_TOO_LARGE => "KEY_TOO_LARGE",
            ErrorCode::VALUE_TOO_LARGE => "VALUE_TOO_LARGE",
            ErrorCode::BATCH_TOO_LARGE => "BATCH_TOO_LARGE",
            ErrorCode::STORAGE => "STORAGE",
            ErrorCode::POISONED => "POISONED",
            ErrorCode::READ_ONLY => "READ_ONLY",
            ErrorCode::FATE_UNKNOWN => "FATE_UNKNOWN",
            ErrorCode::NOT_ENOUGH_REPLICAS => "NOT_ENOUGH_REPLICAS",
            ErrorCode::STALE_MASTER => "STALE_MASTER",
            ErrorCode::NOT_MASTER => "NOT_MASTER",
            ErrorCode::MALFORMED_REQUEST => "MALFORMED_REQUEST",
            ErrorCode::PERMISSION_DENIED => "PERMISSION_DENIED",
            ErrorCode::TAIL_CUT => "TAIL_CUT",
            ErrorCode::INTERNAL => "INTERNAL",
            ErrorCode::SWITCHOVER_FAILED => "SWITCHOVER_FAILED",
            _ => "UNKNOWN_CODE",
        }
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
