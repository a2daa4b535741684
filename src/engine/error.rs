//! The engine's error type: each variant carries what an operator needs to
//! act on it (which step on which file, which offset, which limit). No
//! caller needs to read the message: match the variant.

use std::io;
use std::path::{Path, PathBuf};

use super::record::TooLarge;
use crate::durable;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system call failed: `op` is the step (`open`, `fsync`,
    /// `rename`...), `path` the file or directory it was done to.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not start the {name} thread: {source}")]
    Thread {
        name: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("corrupt data in {} at offset {offset}: {reason}", file.display())]
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
    #[error("data directory {} is locked by another process", path.display())]
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
    /// A read found its key's record replaced (by a compaction or a
    /// truncation) between the index lookup and the file read, every time
    /// it tried. Nothing is wrong with the data; the read may be retried.
    #[error("the key's record moved {attempts} times while it was read; retry")]
    ReadRaced { attempts: usize },
}

impl Error {
    /// A failed file-system call: `Error::io("fsync", &path, e)`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
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

impl From<durable::Error> for Error {
    fn from(e: durable::Error) -> Self {
        Error::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

impl From<TooLarge> for Error {
    fn from(e: TooLarge) -> Self {
        match e {
            TooLarge::Key { len, max } => Error::KeyTooLarge { len, max },
            TooLarge::Value { len, max } => Error::ValueTooLarge { len, max },
        }
    }
}

/// Names the step and the file of an I/O result:
/// `file.sync_data().at("fsync", &path)`.
pub(crate) trait IoContext<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::{check_lengths, MAX_KEY_LEN};
    use super::*;

    #[test]
    fn size_limits_keep_their_numbers() {
        let too_long = MAX_KEY_LEN + 1;
        let e = Error::from(check_lengths(too_long, 0).unwrap_err());
        match e {
            Error::KeyTooLarge { len, max } => {
                assert_eq!(len, too_long as u64);
                assert_eq!(max, MAX_KEY_LEN);
            }
            other => panic!("expected KeyTooLarge, got {other:?}"),
        }
    }
}
