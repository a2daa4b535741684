//! Scratch directories for the targets that open a real engine: a fresh,
//! empty directory per input, on tmpfs when available so runs do not wear
//! the disk. The caller removes it when the input is done.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// A new empty directory named after `target`, the process and a counter.
pub fn scratch_dir(target: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let root = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = root.join(format!(
        "kvstore-fuzz-{target}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}
