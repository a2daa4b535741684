//! The README's shell blocks work as pasted. Every ```sh block of
//! README.md, read from the file itself so that a README that drifts from
//! the product fails here, is run with bash against real `kvstore`
//! processes, unless the last line before it says
//! `<!-- readme-test: skip (REASON) -->`.
//!
//! How a block runs:
//! - `bash -euxo pipefail`: any failing command fails the block (a person
//!   pasting it would have seen the error);
//! - `kvstore` on PATH is the debug binary under test;
//! - in a new temporary directory holding a symlink to each top-level
//!   entry of the repository, so `k8s/gen-secrets.sh` is there and
//!   `./data-m` is the block's own;
//! - with no `KVSTORE_*` variable from the caller's environment;
//! - in its own network namespace (`unshare --net`, with
//!   `--user --map-root-user` when not root) with only loopback up, so the
//!   README's fixed ports (5555, 9555, ...) are the block's own and never
//!   collide with another test or a node the developer runs. The block's
//!   text is not changed;
//! - bounded by [`BLOCK_DEADLINE`]; whatever it leaves running is killed
//!   with its process group.
//!
//! The blocks run in parallel (each has its own namespace).

use crate::common;

use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::markdown::{fenced_blocks, skip_reason, Block};
use common::{kvstore_bin, repo_root};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// How long one block may run: its servers start, wait for readiness (the
/// README's curl gives up after 30 s) and stop.
const BLOCK_DEADLINE: Duration = Duration::from_secs(120);

fn readme_blocks() -> Vec<Block> {
    let path = repo_root().join("README.md");
    let text = std::fs::read_to_string(&path).expect("read README.md");
    fenced_blocks(&text).unwrap_or_else(|e| panic!("README.md: {e}"))
}

fn is_shell(block: &Block) -> bool {
    matches!(block.lang.as_str(), "sh" | "bash" | "shell")
}

/// Every block is a shell block that runs, a shell block marked skip with
/// a reason, or a block of another named language (never run).
#[test]
fn every_readme_block_is_run_or_marked_with_a_reason() {
    let blocks = readme_blocks();
    let mut run = 0;
    for block in &blocks {
        assert!(
            !block.lang.is_empty(),
            "README.md line {}: a fenced block without a language; say `sh` (then it is run) or what it is",
            block.line
        );
        match &block.marker {
            Some(m) => {
                skip_reason(m).unwrap_or_else(|e| panic!("README.md line {}: {e}", block.line));
                assert!(
                    is_shell(block),
                    "README.md line {}: only shell blocks are run, so only they may be marked",
                    block.line
                );
            }
            None if is_shell(block) => run += 1,
            None => {}
        }
    }
    // The quick start, master/replica and TLS blocks at least: a parser
    // that finds nothing must not pass.
    assert!(run >= 3, "only {run} README blocks would run");
}

#[test]
fn readme_shell_blocks_run_as_written() {
    let blocks: Vec<Block> = readme_blocks()
        .into_iter()
        .filter(|b| is_shell(b) && b.marker.is_none())
        .collect();
    assert!(!blocks.is_empty(), "no README block to run");
    let bin = tempfile::tempdir().expect("tempdir");
    symlink(kvstore_bin(), bin.path().join("kvstore")).expect("link kvstore");
    let runs: Vec<_> = blocks
        .into_iter()
        .map(|block| {
            let bin = bin.path().to_path_buf();
            std::thread::spawn(move || run_block(&block, &bin))
        })
        .collect();
    let failures: Vec<String> = runs
        .into_iter()
        .filter_map(|h| h.join().expect("block thread").err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Runs one block as described in the module header; `Err` carries the
/// block, its trace and the logs it wrote.
fn run_block(block: &Block, bin: &Path) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path().join("repo");
    std::fs::create_dir(&cwd).expect("mkdir");
    for entry in std::fs::read_dir(repo_root()).expect("list the repository") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name != "target" && name != ".git" {
            symlink(entry.path(), cwd.join(&name)).expect("link a repository entry");
        }
    }
    let script = dir.path().join("block.sh");
    std::fs::write(&script, &block.code).expect("write the block");
    let trace = dir.path().join("trace.txt");
    let out = std::fs::File::create(&trace).expect("trace file");

    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("unshare");
    if !rustix::process::geteuid().is_root() {
        cmd.args(["--user", "--map-root-user"]);
    }
    cmd.args(["--net", "bash", "-c"])
        .arg(r#"ip link set lo up && exec bash -euxo pipefail "$0""#)
        .arg(&script)
        .current_dir(&cwd)
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .process_group(0);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KVSTORE_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run unshare ({e}): `make deps` installs util-linux"));
    let group = Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"));
    let end = Instant::now() + BLOCK_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the block") {
            break Some(status);
        }
        if Instant::now() >= end {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Servers the block left behind, or all of it after the deadline.
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait();
    let verdict = match status {
        Some(s) if s.success() => return Ok(()),
        Some(s) => format!("failed ({s})"),
        None => format!("did not finish within {BLOCK_DEADLINE:?}"),
    };
    Err(format!(
        "README.md block at line {} {verdict}.\n--- block ---\n{}--- trace (bash -x) ---\n{}{}",
        block.line,
        block.code,
        std::fs::read_to_string(&trace).unwrap_or_default(),
        logs(&cwd)
    ))
}

/// The `*.log` files a block wrote (its servers' logs), for a failure.
fn logs(cwd: &Path) -> String {
    let mut text = String::new();
    let Ok(entries) = std::fs::read_dir(cwd) else {
        return text;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let body = std::fs::read_to_string(&path).unwrap_or_default();
            text.push_str(&format!("--- {} ---\n{body}", path.display()));
        }
    }
    text
}
