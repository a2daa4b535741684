//! The backup manifest, `MANIFEST.json`: the commit point of a backup.
//!
//! It lists every file of the backup with its length and crc32, the log
//! offsets the snapshot covers and the epoch history. It is written last,
//! atomically (temporary file, fsync, rename, directory fsync), so its
//! presence means every file it names was complete and durable.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Error, Result};
use crate::durable;
use crate::engine::epochs::EpochStart;

/// File name of the manifest inside a backup directory.
pub const MANIFEST_FILE: &str = "MANIFEST.json";
/// Format version written in [`BackupManifest::format`].
pub const FORMAT: u32 = 1;
/// A manifest larger than this is not one kvstore wrote.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub name: String,
    pub len: u64,
    /// crc32 (IEEE, as crc32fast) of the whole file.
    pub crc32: u32,
    /// xxh3-64 of the whole file. crc32 alone cannot identify a file:
    /// every file that ends with the crc32 of its own bytes (`MERGED`,
    /// `EPOCHS`) has the same crc32 (the CRC residue) for a given length.
    pub xxh3: u64,
    /// Whether the file is a hard link to the previous backup's copy.
    #[serde(default)]
    pub linked: bool,
}

/// One epoch of the history, as in the node's `EPOCHS` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEpoch {
    pub epoch: u32,
    pub start: u64,
}

impl From<&EpochStart> for ManifestEpoch {
    fn from(e: &EpochStart) -> Self {
        ManifestEpoch {
            epoch: e.epoch,
            start: e.start,
        }
    }
}

/// Everything a restore needs to check and to resume from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format: u32,
    /// Version of the `kvstore` that took the backup.
    pub kvstore_version: String,
    /// When the snapshot was received, RFC 3339 UTC and Unix milliseconds.
    pub created: String,
    pub created_unix_ms: u64,
    /// The node the snapshot came from and its role then.
    pub source: String,
    pub source_role: String,
    /// The node's epoch when it served the snapshot.
    pub epoch: u32,
    /// First raw-log offset (the merged horizon).
    pub start: u64,
    /// Log end: a node restored from this backup resumes replication here.
    pub end: u64,
    pub epochs: Vec<ManifestEpoch>,
    pub files: Vec<ManifestFile>,
}

impl BackupManifest {
    /// Writes the manifest into `dir` atomically and durably.
    pub fn store(&self, dir: &Path) -> Result<()> {
        let mut json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::io("encode the manifest", std::io::Error::other(e)))?;
        json.push(b'\n');
        Ok(durable::write_file(&dir.join(MANIFEST_FILE), &json)?)
    }

    /// Loads the manifest of the backup in `dir`: [`Error::Incomplete`]
    /// without one, [`Error::Corrupt`] if it does not parse.
    pub fn load(dir: &Path) -> Result<BackupManifest> {
        let path = dir.join(MANIFEST_FILE);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if dir.is_dir() {
                    return Err(Error::Incomplete {
                        dir: dir.to_path_buf(),
                    });
                }
                return Err(Error::io(format!("open backup {}", dir.display()), e));
            }
            Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
        };
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(Error::Corrupt {
                file: path,
                why: format!("{} bytes is too large for a manifest", meta.len()),
            });
        }
        let bytes =
            fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        let m: BackupManifest = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            file: path.clone(),
            why: format!("not a backup manifest: {e}"),
        })?;
        if m.format != FORMAT {
            return Err(Error::Corrupt {
                file: path,
                why: format!("format {} is not the supported {FORMAT}", m.format),
            });
        }
        Ok(m)
    }

    /// The entry for `name`, if the backup has that file.
    pub fn file(&self, name: &str) -> Option<&ManifestFile> {
        self.files.iter().find(|f| f.name == name)
    }
}
