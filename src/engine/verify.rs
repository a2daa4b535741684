//! Offline verification of a data directory (`kvstore verify`): every
//! file header, every record checksum, every hint against its data file,
//! the manifest and the continuity of the segments. It reports all the
//! problems it finds rather than stopping at the first.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::error::{Error, IoContext, Result};
use super::hint;
use super::lock_dir;
use super::manifest::{self, Manifest};
use super::recovery::{scan, ScanMode};
use super::segment::{DataFile, FileKind, FILE_HEADER_LEN};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub offset: u64,
    pub what: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub files: u64,
    pub records: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    fn problem(&mut self, file: impl Into<PathBuf>, offset: u64, what: impl Into<String>) {
        self.problems.push(Problem {
            file: file.into(),
            offset,
            what: what.into(),
        });
    }

    /// Records an error found while checking `file`: a corruption where it
    /// says it is, anything else at the start of `file`.
    fn error(&mut self, file: PathBuf, e: Error) {
        match e {
            Error::Corrupt {
                file,
                offset,
                reason,
            } => self.problem(file, offset, reason),
            other => self.problem(file, 0, other.to_string()),
        }
    }
}

/// Verifies the stopped node's data directory `dir` (its lock is taken,
/// so a running node's directory is refused).
pub fn verify_dir(dir: &Path) -> Result<VerifyReport> {
    let _lock = lock_dir(dir)?;
    let mut report = VerifyReport::default();
    let manifest = match Manifest::load(dir) {
        Ok(m) => m.unwrap_or_default(),
        Err(e) => {
            report.error(dir.join(manifest::FILE_NAME), e);
            Manifest::default()
        }
    };
    let mut kinds = Vec::new();
    for entry in fs::read_dir(dir).at("list", dir)? {
        let name = entry.at("list", dir)?.file_name();
        if let Some(kind) = FileKind::parse(&name.to_string_lossy()) {
            kinds.push(kind);
        }
    }
    kinds.sort();
    for index in 0..manifest.file_lens.len() {
        let kind = FileKind::Merged {
            horizon: manifest.horizon,
            index: index as u32,
        };
        if !kinds.contains(&kind) {
            report.problem(
                dir.join(kind.file_name()),
                0,
                "merged file named by the manifest is missing",
            );
        }
    }
    let history = super::epochs::EpochHistory::load(dir).unwrap_or_else(|e| {
        report.error(dir.join(super::epochs::FILE_NAME), e);
        Default::default()
    });
    let bases: Vec<u64> = kinds
        .iter()
        .filter_map(|k| match k {
            FileKind::Segment { base } => Some(*base),
            FileKind::Merged { .. } => None,
        })
        .collect();
    let last_segment = kinds
        .iter()
        .rev()
        .find(|k| matches!(k, FileKind::Segment { .. }))
        .copied();
    let mut expected = manifest.horizon;
    for kind in kinds {
        let path = dir.join(kind.file_name());
        match kind {
            FileKind::Merged { horizon, .. } if horizon != manifest.horizon => {
                report.problem(
                    &path,
                    0,
                    "merged file of an uncommitted generation (removed at next open)",
                );
                continue;
            }
            FileKind::Segment { base } if base < manifest.horizon => {
                report.problem(&path, 0, "segment already merged (removed at next open)");
                continue;
            }
            FileKind::Segment { base } if base != expected => {
                report.problem(
                    &path,
                    0,
                    format!("segment starts at {base}, the log before it ends at {expected}"),
                );
            }
            _ => {}
        }
        report.files += 1;
        // A segment's end past a cut recorded in EPOCHS is not part of the
        // log (open trims it): check only what belongs to the log.
        let keep = match kind {
            FileKind::Segment { base } => {
                let next = bases.iter().copied().find(|&b| b > base);
                let len = fs::metadata(&path).map_or(0, |m| m.len());
                match super::tail::segment_len(base, len, next, &history) {
                    Ok(keep) => keep.map(|(keep, _)| keep),
                    Err(why) => {
                        report.problem(&path, 0, why);
                        None
                    }
                }
            }
            FileKind::Merged { .. } => None,
        };
        let Some(file) = map(&path, kind, keep, &mut report) else {
            continue;
        };
        if let FileKind::Segment { base } = kind {
            expected = base + file.readable_len().saturating_sub(FILE_HEADER_LEN);
        }
        let active = Some(kind) == last_segment;
        check_records(dir, &file, active, &mut report);
    }
    Ok(report)
}

/// Maps the file at `path`, all of it or its first `keep` bytes.
fn map(
    path: &Path,
    kind: FileKind,
    keep: Option<u64>,
    report: &mut VerifyReport,
) -> Option<Arc<DataFile>> {
    let opened = fs::File::open(path).and_then(|f| f.metadata().map(|m| (f, m.len())));
    let opened = opened.map(|(f, len)| (f, keep.map_or(len, |k| k.min(len))));
    let (file, len) = match opened {
        Ok(x) => x,
        Err(e) => {
            report.problem(path, 0, format!("cannot open: {e}"));
            return None;
        }
    };
    let data = match DataFile::new(0, kind, path.to_path_buf(), file, len, len) {
        Ok(d) => d,
        Err(e) => {
            report.problem(path, 0, e.to_string());
            return None;
        }
    };
    if let Err(why) = kind.check_header(data.tail_from(0)) {
        report.problem(path, 0, why);
        return None;
    }
    Some(Arc::new(data))
}

fn check_records(dir: &Path, file: &DataFile, active: bool, report: &mut VerifyReport) {
    let mode = if active {
        ScanMode::TornTailAllowed
    } else {
        ScanMode::Strict
    };
    let mut entries = Vec::new();
    let end = match scan(file, mode, |e| entries.push(e)) {
        Ok(end) => end,
        Err(e) => {
            report.error(file.path.clone(), e);
            return;
        }
    };
    report.records += entries.len() as u64;
    let len = file.readable_len();
    let past_end = file
        .tail_from(0)
        .get(end.valid_len as usize..)
        .unwrap_or_default();
    let torn = super::tail::torn_part(past_end).len();
    if torn > 0 {
        report.problem(
            &file.path,
            end.valid_len,
            format!("torn tail of {torn} bytes (cut off at next open)"),
        );
    }
    let hint_path = dir.join(file.kind.hint_name());
    // A missing hint is not a problem: it is rebuilt at the next open.
    let Ok(bytes) = fs::read(&hint_path) else {
        return;
    };
    let decoded = match hint::decode_any(&bytes) {
        // The active segment's hint is written at a clean close; once the
        // segment has changed, the next open ignores it, as designed.
        Ok(h)
            if active
                && h.check_covers(len, crc32fast::hash(file.tail_from(0)))
                    .is_err() =>
        {
            return
        }
        Ok(_) => hint::decode(&bytes, len),
        Err(e) => Err(e),
    };
    match decoded {
        Ok(hinted) if hinted == entries => {}
        Ok(_) => report.problem(
            &hint_path,
            0,
            "hint entries differ from the data file's records",
        ),
        Err(e) => report.problem(&hint_path, e.offset, e.reason),
    }
}
