//! Commands that work on a stopped node's data directory, without a
//! server: `verify`, `dump` and `compact --data-dir`.

use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::path::Path;

use crate::engine::record::{self, Kind};
use crate::engine::segment::{FileKind, FILE_HEADER_LEN};
use crate::engine::verify::verify_dir;
use crate::engine::{self, CompactionPolicy, Engine, ExpiryPolicy, Options};

/// Checks every record, hint and manifest; prints one line per problem.
/// Returns whether the directory is clean.
pub fn verify(dir: &Path, out: &mut impl Write) -> engine::Result<bool> {
    let report = verify_dir(dir)?;
    for p in &report.problems {
        let _ = writeln!(
            out,
            "PROBLEM {} at offset {}: {}",
            p.file.display(),
            p.offset,
            p.what
        );
    }
    let _ = writeln!(
        out,
        "checked {} files, {} records: {}",
        report.files,
        report.records,
        match report.problems.len() {
            0 => "no problems".to_string(),
            n => format!("{n} problem(s)"),
        }
    );
    Ok(report.problems.is_empty())
}

/// Prints every record of every data file, one per line, in log order.
pub fn dump(dir: &Path, out: &mut impl Write) -> engine::Result<()> {
    let _lock = engine::lock_dir(dir)?;
    let mut kinds: Vec<FileKind> = fs::read_dir(dir)
        .map_err(|e| engine::Error::io("list", dir, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| FileKind::parse(&e.file_name().to_string_lossy()))
        .collect();
    kinds.sort();
    for kind in kinds {
        let path = dir.join(kind.file_name());
        let bytes = fs::read(&path).map_err(|e| engine::Error::io("read", &path, e))?;
        let _ = writeln!(out, "# {}", kind.file_name());
        if let Err(why) = kind.check_header(&bytes) {
            let _ = writeln!(out, "!! bad header: {why}");
            continue;
        }
        let mut pos = FILE_HEADER_LEN as usize;
        while pos < bytes.len() {
            match record::decode(&bytes[pos..]) {
                Ok(Some((rec, len))) => {
                    let _ = writeln!(out, "{}", describe(kind, pos, &rec));
                    pos += len;
                }
                Ok(None) => {
                    let _ = writeln!(
                        out,
                        "!! {pos}: incomplete record ({} bytes left)",
                        bytes.len() - pos
                    );
                    break;
                }
                Err(e) => {
                    let _ = writeln!(out, "!! {pos}: {e}");
                    break;
                }
            }
        }
    }
    Ok(())
}

fn describe(kind: FileKind, pos: usize, rec: &record::Record<'_>) -> String {
    let mut line = match kind {
        FileKind::Segment { base } => format!("offset={} ", base + pos as u64 - FILE_HEADER_LEN),
        FileKind::Merged { .. } => format!("pos={pos} "),
    };
    let _ = write!(line, "epoch={} {}", rec.epoch, rec.kind);
    if rec.in_batch {
        line.push_str("(batch)");
    }
    match rec.kind {
        Kind::Commit => {
            let _ = write!(line, " count={}", rec.commit_count().unwrap_or(0));
        }
        _ => {
            let _ = write!(line, " key={}", escape(rec.key, 80));
            if rec.kind == Kind::Put {
                let _ = write!(
                    line,
                    " value={} ({} bytes)",
                    escape(rec.value, 60),
                    rec.value.len()
                );
                if let Some(at) = rec.expires_at {
                    let _ = write!(line, " expires={at} ({})", crate::backup::time::rfc3339(at));
                }
            }
        }
    }
    line
}

/// Printable form of arbitrary bytes, cut at `max` bytes.
fn escape(bytes: &[u8], max: usize) -> String {
    let shown: String = bytes[..bytes.len().min(max)]
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if bytes.len() > max {
        format!("\"{shown}\"...")
    } else {
        format!("\"{shown}\"")
    }
}

/// Compacts a stopped node's directory.
pub fn compact(dir: &Path, out: &mut impl Write) -> engine::Result<()> {
    let options = Options {
        compaction: CompactionPolicy {
            check_every: None,
            ..CompactionPolicy::default()
        },
        // Counted as expiring keys, without a sweep: compaction then keeps
        // expired records as a master's does (the directory may be a
        // master's, whose replicas still need the deletes).
        expiry: ExpiryPolicy {
            active: true,
            sweep_every: None,
            ..ExpiryPolicy::default()
        },
        ..Options::default()
    };
    let engine = Engine::open(dir, options)?;
    let report = engine.compact()?;
    engine.close()?;
    let _ = writeln!(
        out,
        "merged {} files below offset {}: {} bytes -> {} bytes, {} live records",
        report.files_merged,
        report.horizon,
        report.bytes_before,
        report.bytes_after,
        report.keys_kept
    );
    Ok(())
}
