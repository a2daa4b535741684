//! The data directory's file system, for `/metrics`: free and total
//! bytes, read with `statvfs(2)` at scrape time.
//!
//! "Free" is what this process may still write (`f_bavail`: the blocks
//! left to unprivileged users, not the root reserve), since that is where
//! the engine's writes start failing. Both figures are absent from a scrape
//! whose `statvfs` fails; the rest of the scrape is unaffected.

use std::fmt;
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::gauge;
use crate::engine::Engine;

/// Reads the file system of [`Engine::dir`] at scrape time.
pub(super) struct DataDirCollector {
    pub(super) engine: Arc<OnceLock<Engine>>,
}

impl fmt::Debug for DataDirCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataDirCollector").finish_non_exhaustive()
    }
}

/// `(free, total)` bytes of the file system holding `dir`.
fn space(dir: &std::path::Path) -> std::io::Result<(u64, u64)> {
    let st = rustix::fs::statvfs(dir)?;
    let block = st.f_frsize;
    Ok((
        st.f_bavail.saturating_mul(block),
        st.f_blocks.saturating_mul(block),
    ))
}

impl Collector for DataDirCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let Some(engine) = self.engine.get() else {
            return Ok(());
        };
        let Ok((free, total)) = space(engine.dir()) else {
            return Ok(());
        };
        gauge(
            &mut enc,
            "data_dir_free_bytes",
            "Bytes this node may still write on the data directory's file system.",
            free,
        )?;
        gauge(
            &mut enc,
            "data_dir_total_bytes",
            "Size in bytes of the data directory's file system.",
            total,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_is_within_total_and_a_missing_dir_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (free, total) = space(dir.path()).unwrap();
        assert!(total > 0 && free <= total, "free {free}, total {total}");
        assert!(space(&dir.path().join("missing")).is_err());
    }
}
