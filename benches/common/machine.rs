//! What every benchmark prints beside its figures (machine, load average,
//! date, commit), shared by the bench binaries through `#[path]`. It runs
//! `benches/bench-env.sh`, the one copy the bench scripts source too, so
//! that every benchmark reports the same lines.

use std::path::Path;
use std::process::Command;

/// Prints the lines of `benches/bench-env.sh` (in the repository at
/// `repo`) on stdout; says on stderr why not when it cannot run.
pub fn print(repo: &Path) {
    let script = repo.join("benches/bench-env.sh");
    match Command::new("bash").arg(&script).output() {
        Ok(out) if out.status.success() => print!("{}", String::from_utf8_lossy(&out.stdout)),
        Ok(out) => eprintln!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("cannot run {}: {e}", script.display()),
    }
}
