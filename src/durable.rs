//! Durable file writes, for every layer that keeps state in small files
//! (the engine's manifest, epoch history and hints, a backup's manifest,
//! the port file, a replica's staged snapshot).
//!
//! A file is replaced in four steps: its new bytes go to `NAME.tmp`, which
//! is fsynced, then renamed over `NAME`, then the directory is fsynced.
//! A rename is atomic, so a reader (or a crash) sees the old file or the
//! new one, never a mix; the directory fsync makes the rename itself
//! survive a crash. A crash before the rename leaves a `NAME.tmp` that an
//! owner may delete (the engine deletes every `*.tmp` when it opens).
//!
//! This module imports nothing from the rest of the crate, so that every
//! layer may use it.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A file-system step that failed: what was done, to which path.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct Error {
    /// The step: `create`, `write`, `fsync`, `rename`, `fsync directory`.
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl From<Error> for io::Error {
    /// Keeps the kind of the underlying error and the step in the message.
    fn from(e: Error) -> io::Error {
        io::Error::new(e.source.kind(), e)
    }
}

fn step<T>(op: &'static str, path: &Path, result: io::Result<T>) -> Result<T, Error> {
    result.map_err(|source| Error {
        op,
        path: path.to_path_buf(),
        source,
    })
}

/// The temporary name a replacement of `path` is written under:
/// `path` with `.tmp` appended.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".tmp");
    PathBuf::from(name)
}

/// Opens `dir` and fsyncs it, so that a create, rename or delete of an
/// entry inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    step(
        "fsync directory",
        dir,
        File::open(dir).and_then(|d| d.sync_all()),
    )
}

/// Replaces `path` with `bytes` durably: [`stage`] then [`commit`].
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    stage(path, bytes)?;
    commit(path)
}

/// Writes `bytes` to [`tmp_path`]`(path)` and fsyncs it; `path` itself is
/// untouched until [`commit`]. A temporary file that could not be written
/// whole is removed.
pub fn stage(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = tmp_path(path);
    let mut file = step("create", &tmp, File::create(&tmp))?;
    let written = step("write", &tmp, file.write_all(bytes))
        .and_then(|()| step("fsync", &tmp, file.sync_all()));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Renames the staged [`tmp_path`]`(path)` over `path` and fsyncs the
/// directory: from here on a crash leaves the new file.
pub fn commit(path: &Path) -> Result<(), Error> {
    let tmp = tmp_path(path);
    step("rename", &tmp, std::fs::rename(&tmp, path))?;
    sync_dir(parent(path))
}

/// The directory holding `path` (`.` for a bare file name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_a_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("STATE");
        write_file(&path, b"one").unwrap();
        write_file(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn a_staged_file_is_invisible_until_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("STATE");
        write_file(&path, b"old").unwrap();
        stage(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read(tmp_path(&path)).unwrap(), b"new");
        commit(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn a_failed_step_names_the_step_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("STATE");
        let err = write_file(&path, b"x").unwrap_err();
        assert_eq!(err.op, "create");
        assert_eq!(err.path, tmp_path(&path));
        assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
        let err = commit(&dir.path().join("never-staged")).unwrap_err();
        assert_eq!(err.op, "rename");
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_bare_file_name_lives_in_the_current_directory() {
        assert_eq!(parent(Path::new("port")), Path::new("."));
        assert_eq!(parent(Path::new("/a/port")), Path::new("/a"));
        assert_eq!(tmp_path(Path::new("/a/port")), Path::new("/a/port.tmp"));
    }
}
