//! `kvstore restore`: check a backup completely, then copy it into an
//! empty data directory. `--from` names one backup, or a backup root (the
//! `--to` of `kvstore backup`), which stands for its newest complete
//! backup. The node started on that directory opens the
//! snapshot like any data directory and, as a replica, resumes replication
//! from the manifest's `end` offset.
//!
//! A restored directory is a different copy of the log than the one the
//! backup was taken from (it lacks every write after the backup): it gets
//! a new data-directory id (`DIR_ID`, which backups never copy), so that a
//! coordinator never takes it for the directory its in-sync set names.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::manifest::{BackupManifest, ManifestFile};
use super::{Error, Result};
use crate::durable::sync_dir;
use crate::engine::dir_id::{DirId, Origin};
use crate::engine::snapshot::is_snapshot_file;

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The backup restored (`--from`, or the newest one under it).
    pub backup: PathBuf,
    pub files: usize,
    pub bytes: u64,
    /// Where the restored node's log ends (it resumes replication here).
    pub end: u64,
    pub epoch: u32,
}

const COPY_CHUNK: usize = 1024 * 1024;

/// The backup `from` names: `from` itself when it has a manifest, else the
/// newest complete backup under it when there is one, else `from` (whose
/// missing manifest is then reported as an incomplete backup).
pub fn resolve(from: &Path) -> Result<PathBuf> {
    if !from.join(super::MANIFEST_FILE).exists() && from.is_dir() {
        if let Some(newest) = super::take::complete_backups(from)?.pop() {
            return Ok(newest);
        }
    }
    Ok(from.to_path_buf())
}

/// Verifies every file of the backup `from` names ([`resolve`]) against
/// its manifest, then copies them into `data_dir`, which must be empty
/// (`lost+found` aside) or absent.
pub fn restore(from: &Path, data_dir: &Path) -> Result<RestoreReport> {
    let backup = resolve(from)?;
    let from = backup.as_path();
    let manifest = BackupManifest::load(from)?;
    ensure_empty(data_dir)?;
    for f in &manifest.files {
        check_name(from, f)?;
        copy_checked(&from.join(&f.name), None, f)?;
    }
    fs::create_dir_all(data_dir)
        .map_err(|e| Error::io(format!("create {}", data_dir.display()), e))?;
    let mut done: Vec<PathBuf> = Vec::new();
    let mut bytes = 0u64;
    for f in &manifest.files {
        let dst = data_dir.join(&f.name);
        if let Err(e) = copy_checked(&from.join(&f.name), Some(&dst), f) {
            for p in &done {
                let _ = fs::remove_file(p);
            }
            let _ = fs::remove_file(&dst);
            return Err(e);
        }
        bytes += f.len;
        done.push(dst);
    }
    DirId::new(Origin::Restored)
        .and_then(|id| id.store(data_dir))
        .map_err(|e| {
            Error::io(
                format!("write a new data-directory id into {}", data_dir.display()),
                std::io::Error::other(e),
            )
        })?;
    sync_dir(data_dir)?;
    Ok(RestoreReport {
        backup,
        files: manifest.files.len(),
        bytes,
        end: manifest.end,
        epoch: manifest.epoch,
    })
}

/// Checks every file of a backup without copying anything.
pub fn verify(from: &Path) -> Result<BackupManifest> {
    let manifest = BackupManifest::load(from)?;
    for f in &manifest.files {
        check_name(from, f)?;
        copy_checked(&from.join(&f.name), None, f)?;
    }
    Ok(manifest)
}

fn check_name(from: &Path, f: &ManifestFile) -> Result<()> {
    if !is_snapshot_file(&f.name) || f.name.contains('/') {
        return Err(Error::Corrupt {
            file: from.join(super::MANIFEST_FILE),
            why: format!("{:?} is not a data file name", f.name),
        });
    }
    Ok(())
}

fn ensure_empty(dir: &Path) -> Result<()> {
    match fs::read_dir(dir) {
        Ok(entries) => {
            // A fresh ext4 volume comes with lost+found: that is empty.
            let mut entries = entries.flatten().filter(|e| e.file_name() != "lost+found");
            if entries.next().is_some() {
                return Err(Error::NotEmpty {
                    dir: dir.to_path_buf(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("list {}", dir.display()), e)),
    }
}

/// Reads `src` whole, checking its length, crc32 and xxh3 against `f`;
/// with `dst`, also writes the bytes there (created new) and fsyncs it.
fn copy_checked(src: &Path, dst: Option<&Path>, f: &ManifestFile) -> Result<()> {
    let corrupt = |why: String| Error::Corrupt {
        file: src.to_path_buf(),
        why,
    };
    let mut input = fs::File::open(src).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => corrupt("missing (listed in the manifest)".into()),
        _ => Error::io(format!("open {}", src.display()), e),
    })?;
    let actual = input
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", src.display()), e))?
        .len();
    if actual != f.len {
        return Err(corrupt(format!(
            "{actual} bytes but the manifest says {} (truncated or altered)",
            f.len
        )));
    }
    let mut output = match dst {
        Some(dst) => Some(
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dst)
                .map_err(|e| Error::io(format!("create {}", dst.display()), e))?,
        ),
        None => None,
    };
    let mut crc = crc32fast::Hasher::new();
    let mut xxh = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut total = 0u64;
    loop {
        let n = input
            .read(&mut buf)
            .map_err(|e| Error::io(format!("read {}", src.display()), e))?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).unwrap_or(&[]);
        crc.update(chunk);
        xxh.update(chunk);
        total += n as u64;
        if let (Some(out), Some(dst)) = (output.as_mut(), dst) {
            out.write_all(chunk)
                .map_err(|e| Error::io(format!("write {}", dst.display()), e))?;
        }
    }
    let crc32 = crc.finalize();
    if total != f.len || crc32 != f.crc32 || xxh.digest() != f.xxh3 {
        return Err(corrupt(format!(
            "checksum mismatch: crc32 {crc32:08x} over {total} bytes, the manifest says {:08x} over {} (or the xxh3 differs)",
            f.crc32, f.len
        )));
    }
    if let (Some(out), Some(dst)) = (output, dst) {
        out.sync_all()
            .map_err(|e| Error::io(format!("fsync {}", dst.display()), e))?;
    }
    Ok(())
}
