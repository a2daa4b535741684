//! Backups (docs/BACKUP.md): take a snapshot of a running node over the
//! wire protocol, keep it as plain files with checksums, restore it into
//! an empty data directory.
//!
//! A backup is a directory `<backup root>/<UTC timestamp>/` holding the
//! snapshot's files (merged files, sealed segments, the active segment up
//! to its durable end, `MERGED`, `EPOCHS`) and a manifest,
//! [`manifest::MANIFEST_FILE`], that lists every file with its length and
//! crc32 plus the log end offset and the epoch history.
//!
//! Invariants:
//! - the manifest is written last (temporary name, fsync, rename, directory
//!   fsync), after every file it names is durable: a directory without one
//!   is an incomplete backup, which restore refuses and retention removes;
//! - every checksum is computed from the bytes as they arrive, so the
//!   manifest describes what the node sent, not what the disk later holds;
//!   restore re-reads every file and refuses any mismatch;
//! - a file whose name, length and checksum equal the previous complete
//!   backup's is stored as a hard link to it (sealed segments and merged
//!   files never change), so backups share their unchanged files;
//! - restore writes only into an empty (or absent) data directory, and the
//!   restored node resumes replication from the manifest's `end`;
//! - the node records a backup as successful ([`last`]) only when the
//!   client confirms, after writing the manifest, that it holds the
//!   snapshot up to its `end`.

pub mod last;
pub mod manifest;
pub mod restore;
pub mod serve;
pub mod take;
pub(crate) mod time;

use std::path::PathBuf;

pub use last::LastBackup;
pub use manifest::{BackupManifest, ManifestFile, MANIFEST_FILE};
pub use restore::{restore, verify, RestoreReport};
pub use take::{take_backup, BackupOptions, BackupReport};

/// Why a backup or a restore failed. Each message names the file, node or
/// directory involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("no node to back up from: {0}")]
    NoSource(String),
    #[error("bad stream from {addr}: {why}")]
    Stream { addr: String, why: String },
    #[error("{addr} refused the backup: {code}: {message}")]
    Refused {
        addr: String,
        code: crate::protocol::ErrorCode,
        message: String,
    },
    #[error("incomplete backup {}: it has no {MANIFEST_FILE} (the backup was interrupted or failed)", dir.display())]
    Incomplete { dir: PathBuf },
    #[error("corrupt backup: {}: {why}", file.display())]
    Corrupt { file: PathBuf, why: String },
    #[error("refusing to restore into {}: it is not empty (restore needs an empty data directory)", dir.display())]
    NotEmpty { dir: PathBuf },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

impl From<crate::durable::Error> for Error {
    fn from(e: crate::durable::Error) -> Error {
        Error::io(format!("{} {}", e.op, e.path.display()), e.source)
    }
}

pub type Result<T> = std::result::Result<T, Error>;
