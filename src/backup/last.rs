//! The last successful backup taken from this node, kept in its data
//! directory as `LAST_BACKUP`, so the time survives restarts and the
//! "no backup for a day" alert does not reset with a pod.
//!
//! A backup counts as successful only once its client has committed it
//! (written its manifest) and said so on the BACKUP connection; a stream
//! the client abandons, or a client that fails to write, changes nothing.
//!
//! The file is small JSON, replaced atomically through [`crate::durable`].
//! It is not part of the log: backups and full resyncs do not copy it, a
//! restored directory starts without one, and the engine ignores it.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Error, Result};
use crate::durable;

/// File name inside the data directory.
pub const FILE_NAME: &str = "LAST_BACKUP";
/// A larger file is not one kvstore wrote.
const MAX_BYTES: u64 = 64 * 1024;

/// What `LAST_BACKUP` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastBackup {
    /// When the client confirmed the backup, in Unix milliseconds.
    pub unix_ms: u64,
    /// The log offset the backup ends at.
    pub end: u64,
    /// The client's address.
    pub client: String,
}

impl LastBackup {
    /// Reads `dir/LAST_BACKUP`; `None` when no backup was ever recorded.
    pub fn load(dir: &Path) -> Result<Option<LastBackup>> {
        let path = dir.join(FILE_NAME);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
        };
        let mut text = Vec::new();
        file.take(MAX_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        if text.len() as u64 > MAX_BYTES {
            return Err(Error::Corrupt {
                file: path,
                why: format!("larger than {MAX_BYTES} bytes"),
            });
        }
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                file: path,
                why: e.to_string(),
            })
    }

    /// [`LastBackup::load`] for a node that is starting: a file it cannot
    /// read is logged and treated as absent (the gauge then reads 0, so
    /// the missing-backup alert fires rather than stays silent).
    pub fn load_or_warn(dir: &Path) -> Option<LastBackup> {
        LastBackup::load(dir).unwrap_or_else(|e| {
            tracing::warn!("{e}; the last backup time reads 0 until the next backup");
            None
        })
    }

    /// Replaces `dir/LAST_BACKUP` durably.
    pub fn store(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::io("encode LAST_BACKUP", std::io::Error::other(e)))?;
        durable::write_file(&dir.join(FILE_NAME), &bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_an_absent_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(LastBackup::load(dir.path()).unwrap(), None);
        let last = LastBackup {
            unix_ms: 1_795_835_820_123,
            end: 4096,
            client: "127.0.0.1:40000".into(),
        };
        last.store(dir.path()).unwrap();
        assert_eq!(LastBackup::load(dir.path()).unwrap(), Some(last));
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{\"unix_ms\": 12").unwrap();
        let err = LastBackup::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(FILE_NAME), "{err}");
        std::fs::write(dir.path().join(FILE_NAME), vec![b' '; 70_000]).unwrap();
        let err = LastBackup::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
    }
}
