//! The host under the tests: small filesystems mounted for one test, and
//! what `/proc` and the resource limits say about a process.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for one test, unmounted (lazily) on drop.
pub struct Tmpfs {
    path: PathBuf,
    /// The mount point when the tmpfs made its own.
    _dir: Option<tempfile::TempDir>,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "2m") on a fresh directory.
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fs = Tmpfs::mount_on(dir.path(), size)?;
        fs._dir = Some(dir);
        Some(fs)
    }

    /// Mounts a tmpfs of `size` on `path` (created if missing). Fails the
    /// test when that is impossible (not root, no mount(8)), unless
    /// `KVSTORE_CHAOS_ALLOW_NO_MOUNT=1`: then it says so and gives `None`,
    /// and the caller skips.
    pub fn mount_on(path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                path: path.to_path_buf(),
                _dir: None,
            }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var("KVSTORE_CHAOS_ALLOW_NO_MOUNT").as_deref() == Ok("1"),
                    "cannot mount a tmpfs ({why}); run as root or set KVSTORE_CHAOS_ALLOW_NO_MOUNT=1 to skip"
                );
                eprintln!("SKIPPED: cannot mount a tmpfs here ({why})");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Changes the filesystem's size (space returns, or runs out).
    pub fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "remount of {} failed: {out:?}",
            self.path.display()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// The resident set size of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// Raises this process's open-file limit to its hard limit, so a test can
/// hold thousands of connections.
pub fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
