//! The engine's error type: each variant carries what an operator needs to
//! act on it (which file, which offset, which limit).

use std::io;
use std::path::PathBuf;

use super::record::RecordError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("corrupt data in {file} at offset {offset}: {reason}")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("key of {len} bytes is over the limit of {max} bytes")]
    KeyTooLarge { len: u64, max: usize },
    #[error("value of {len} bytes is over the limit of {max} bytes")]
    ValueTooLarge { len: u64, max: usize },
    #[error("batch of {len} encoded bytes is over the limit of {max} bytes")]
    BatchTooLarge { len: u64, max: usize },
    #[error("the engine refuses writes after an earlier failure: {reason}")]
    Poisoned { reason: String },
    #[error("data directory {path} is locked by another process")]
    Locked { path: PathBuf },
    #[error("the engine is closed")]
    Closed,
    #[error("invalid option {name}: {reason}")]
    InvalidOption { name: &'static str, reason: String },
    #[error("log offset {offset} was compacted away; the log now starts at {start}")]
    Compacted { offset: u64, start: u64 },
    #[error("log offset {offset} is beyond the end of the log at {end}")]
    BeyondEnd { offset: u64, end: u64 },
    #[error("log bytes received from elsewhere are invalid at offset {offset}: {reason}")]
    BadLogBytes { offset: u64, reason: String },
}

impl Error {
    /// Wraps an I/O error with what was being done, e.g.
    /// `Error::io("fsync 00000000000000000000.seg", e)`.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn corrupt(file: impl Into<PathBuf>, offset: u64, reason: impl ToString) -> Self {
        Error::Corrupt {
            file: file.into(),
            offset,
            reason: reason.to_string(),
        }
    }
}

impl From<crate::durable::Error> for Error {
    fn from(e: crate::durable::Error) -> Self {
        Error::io(format!("{} {}", e.op, e.path.display()), e.source)
    }
}

impl From<RecordError> for Error {
    /// Size errors from the codec become the engine's size errors; other
    /// codec errors only arise while reading a file, where the caller turns
    /// them into [`Error::Corrupt`] with the file and offset.
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::KeyTooLarge { len, max } => Error::KeyTooLarge { len, max },
            RecordError::ValueTooLarge { len, max } => Error::ValueTooLarge { len, max },
            other => Error::BadLogBytes {
                offset: 0,
                reason: other.to_string(),
            },
        }
    }
}

/// Adds context to I/O results: `file.sync_data().ctx(|| format!("fsync {path}"))`.
pub(crate) trait IoContext<T> {
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
