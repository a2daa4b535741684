//! Automatic reseed of a corrupt replica.
//!
//! A replica's data is a copy of its master's: when opening it finds
//! corruption (`engine::Error::Corrupt`, e.g. a bit flip in a sealed
//! segment, hint-checked merged file or manifest), there is nothing to
//! repair locally. Instead of refusing to start, the replica moves every
//! file of its data directory (except the lock file) into a new
//! `quarantine-<unix seconds>/` subdirectory, kept for inspection and never
//! read again, and opens an empty directory; its master then ships the
//! whole log or a snapshot (full resync). A master never does this: its
//! data is the only copy, so a corrupt master still refuses to start.

use std::fs;
use std::path::{Path, PathBuf};

use tracing::error;

use crate::engine::{self, Engine, Options, LOCK_FILE};

/// Opens `dir`; on a replica (`reseed`), a corrupt directory is
/// quarantined and reopened empty.
pub fn open(dir: &Path, options: Options, reseed: bool) -> engine::Result<Engine> {
    match Engine::open(dir, options.clone()) {
        Err(engine::Error::Corrupt {
            file,
            offset,
            reason,
        }) if reseed => {
            let quarantine = quarantine(dir).map_err(|source| {
                engine::Error::io("quarantine the corrupt files of", dir, source)
            })?;
            error!(
                file = %file.display(),
                offset,
                reason,
                moved_to = %quarantine.display(),
                "replica data directory is corrupt: quarantined it, reseeding from the master"
            );
            Engine::open(dir, options)
        }
        other => other,
    }
}

fn quarantine(dir: &Path) -> std::io::Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let target = dir.join(format!("quarantine-{secs}"));
    fs::create_dir_all(&target)?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let is_file = entry.file_type()?.is_file();
        if name == LOCK_FILE || !is_file {
            continue;
        }
        fs::rename(entry.path(), target.join(&name))?;
    }
    crate::durable::sync_dir(dir)?;
    Ok(target)
}
