//! The data directory's identity (`DIR_ID`): a random id made once with the
//! directory, so that a coordinator can tell this copy of the log from
//! another directory that a node with the same node id runs on later (a
//! lost disk, an emptied volume, a restored backup).
//!
//! Invariants:
//! - The id is written durably (file + fsync + directory fsync) before
//!   anything else of the directory is used: [`DirId::open`] runs before
//!   recovery, and a directory never holds data without an id once opened.
//! - An existing `DIR_ID` is kept for the directory's life: restarts,
//!   compactions and full resyncs (which replace the log's files under the
//!   master's control) never change it.
//! - A directory with no data file gets a new id ([`Origin::Created`]);
//!   one that holds data but no `DIR_ID` was made by a version before
//!   directory ids and is given one ([`Origin::Adopted`]); `kvstore
//!   restore` writes a new one ([`Origin::Restored`]): a restored directory
//!   is a different copy of the log. Only an adopted id may stand for a
//!   member that a coordinator record from an older version lists without
//!   one (docs/FAILOVER.md, "Data-directory identity").
//!
//! File layout (docs/FORMAT.md, "Data-directory identity"), in the
//! metadata [envelope](super::envelope):
//!
//! ```text
//!  8  magic "KVSTDID\0"
//!  4  version = 1
//! 16  the id, random bytes
//!  1  origin: 1 created empty, 2 adopted (data from an older version), 3 restored
//!  4  CRC-32 of every byte before this field
//! ```

use std::fmt;
use std::path::Path;

use ring::rand::{SecureRandom, SystemRandom};

use super::envelope::{self, Envelope, Invalid};
use super::error::{Error, Result};
use super::snapshot::is_snapshot_file;
use crate::durable;

/// The file's name in the data directory.
pub const FILE_NAME: &str = "DIR_ID";

const ID_LEN: usize = 16;

const ENVELOPE: Envelope = Envelope {
    name: "data-directory id",
    magic: b"KVSTDID\0",
    version: 1,
    oldest: 1,
    min_payload: ID_LEN + 1,
};

/// How a directory got its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Made with an empty directory.
    Created,
    /// Given to a directory that held data written by a version before
    /// directory ids.
    Adopted,
    /// Written by `kvstore restore`.
    Restored,
}

impl Origin {
    fn code(self) -> u8 {
        match self {
            Origin::Created => 1,
            Origin::Adopted => 2,
            Origin::Restored => 3,
        }
    }

    fn from_code(code: u8) -> Option<Origin> {
        match code {
            1 => Some(Origin::Created),
            2 => Some(Origin::Adopted),
            3 => Some(Origin::Restored),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Origin::Created => "created empty",
            Origin::Adopted => "adopted (data from a version before directory ids)",
            Origin::Restored => "restored from a backup",
        }
    }
}

/// A data directory's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirId {
    id: [u8; ID_LEN],
    origin: Origin,
}

impl fmt::Display for DirId {
    /// The id as 32 lowercase hex digits, as the coordinator stores it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.id {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl DirId {
    /// A new random id.
    pub fn new(origin: Origin) -> Result<DirId> {
        let mut id = [0u8; ID_LEN];
        SystemRandom::new().fill(&mut id).map_err(|_| {
            Error::io(
                "draw random bytes for",
                FILE_NAME,
                std::io::Error::other("the system's random source failed"),
            )
        })?;
        Ok(DirId { id, origin })
    }

    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Whether the directory held data before it had an id (so it may be
    /// the copy an older record names without an id).
    pub fn predates_ids(&self) -> bool {
        self.origin == Origin::Adopted
    }

    fn encode(&self) -> Vec<u8> {
        ENVELOPE.encode(ID_LEN + 1, |out| {
            out.extend_from_slice(&self.id);
            out.push(self.origin.code());
        })
    }

    fn decode(bytes: &[u8]) -> std::result::Result<DirId, Invalid> {
        let payload = ENVELOPE.open(bytes)?;
        if payload.len() != ID_LEN + 1 {
            return Err(Invalid::in_payload(
                ID_LEN + 1,
                format!(
                    "{} bytes of payload, expected {}",
                    payload.len(),
                    ID_LEN + 1
                ),
            ));
        }
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&payload[..ID_LEN]);
        let origin = Origin::from_code(payload[ID_LEN]).ok_or_else(|| {
            Invalid::in_payload(ID_LEN, format!("unknown origin {}", payload[ID_LEN]))
        })?;
        Ok(DirId { id, origin })
    }

    /// Reads `dir/DIR_ID`, if there is one.
    pub fn load(dir: &Path) -> Result<Option<DirId>> {
        envelope::read_file(&dir.join(FILE_NAME), Self::decode)
    }

    /// Writes `dir/DIR_ID` durably (file, fsync, rename, directory fsync).
    pub fn store(&self, dir: &Path) -> Result<()> {
        Ok(durable::write_file(&dir.join(FILE_NAME), &self.encode())?)
    }

    /// The identity of `dir` (locked by the caller, not yet recovered):
    /// the stored one, else a new one, written before the directory is
    /// used — [`Origin::Adopted`] when it already holds data, else
    /// [`Origin::Created`].
    pub fn open(dir: &Path) -> Result<DirId> {
        if let Some(id) = Self::load(dir)? {
            return Ok(id);
        }
        let origin = if holds_data(dir)? {
            Origin::Adopted
        } else {
            Origin::Created
        };
        let id = DirId::new(origin)?;
        id.store(dir)?;
        match origin {
            Origin::Adopted => tracing::warn!(
                dir_id = %id,
                "this data directory holds data but had no {FILE_NAME} (written by an older version): gave it one; \
                 a coordinator record from an older version that lists this node without a directory id is taken to mean this directory"
            ),
            _ => tracing::info!(dir_id = %id, "new data directory: made its id"),
        }
        Ok(id)
    }
}

/// Whether `dir` holds any file of the log (segments, merged files,
/// hints, `MERGED`, `EPOCHS`). The lock file, temporary files and a
/// quarantined corrupt copy do not count: a directory reseeded after
/// corruption starts from nothing and gets a new id.
fn holds_data(dir: &Path) -> Result<bool> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if is_snapshot_file(&name) || name.ends_with(".hint") {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_directory_gets_a_new_id_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirId::open(dir.path()).unwrap();
        assert_eq!(first.origin(), Origin::Created);
        assert!(!first.predates_ids());
        assert_eq!(first.to_string().len(), 32);
        assert_eq!(DirId::open(dir.path()).unwrap(), first);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(DirId::open(other.path()).unwrap(), first);
    }

    #[test]
    fn a_directory_with_data_but_no_id_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("00000000000000000000.seg"), b"").unwrap();
        let id = DirId::open(dir.path()).unwrap();
        assert_eq!(id.origin(), Origin::Adopted);
        assert!(id.predates_ids());
        // The lock file and leftovers do not make a directory hold data.
        let empty = tempfile::tempdir().unwrap();
        std::fs::write(empty.path().join("LOCK"), b"").unwrap();
        std::fs::create_dir(empty.path().join("quarantine-1")).unwrap();
        assert_eq!(DirId::open(empty.path()).unwrap().origin(), Origin::Created);
    }

    #[test]
    fn a_damaged_id_file_is_corruption_not_a_new_id() {
        let dir = tempfile::tempdir().unwrap();
        let id = DirId::open(dir.path()).unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[14] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            DirId::open(dir.path()),
            Err(Error::Corrupt { .. })
        ));
        let restored = DirId::new(Origin::Restored).unwrap();
        restored.store(dir.path()).unwrap();
        let read = DirId::load(dir.path()).unwrap().unwrap();
        assert_eq!(read, restored);
        assert_ne!(read, id);
    }
}
