//! `scripts/check-layers.py` (run by `make lint`) accepts this tree and
//! rejects each rule's violation planted in a copy of it: an inline path,
//! a plain `use`, a grouped `use crate::{..}`, a `super::super::` path and
//! a cycle between two files. Comments and strings that look like imports
//! are not imports.

use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the script on `src`; returns whether it passed and what it said.
fn check(src: &Path) -> (bool, String) {
    crate::common::run_python_script("check-layers.py", &[Path::new("--src"), src])
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A copy of src/ with `code` appended to each named file.
fn planted(plants: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    copy_tree(&repo().join("src"), &src);
    for (file, code) in plants {
        let path = src.join(file);
        let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        text.push('\n');
        text.push_str(code);
        text.push('\n');
        std::fs::write(&path, text).expect("write plant");
    }
    (dir, src)
}

#[test]
fn this_tree_follows_the_layering() {
    let (ok, out) = check(&repo().join("src"));
    assert!(ok, "{out}");
}

#[test]
fn comments_and_strings_are_not_imports() {
    let (_dir, src) = planted(&[(
        "engine/writer.rs",
        "// use crate::server::Server;\n/* crate::resp::codec */\n\
         pub const PLANTED: &str = \"crate::node::Node\";",
    )]);
    let (ok, out) = check(&src);
    assert!(ok, "{out}");
}

#[test]
fn each_rule_rejects_its_planted_import() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "engine/writer.rs",
            "pub fn planted() { let _ = crate::server::run; }",
            "engine must not import server",
        ),
        (
            "protocol/frame.rs",
            "#[allow(unused_imports)]\nuse crate::engine::Engine;",
            "protocol must not import engine",
        ),
        (
            "replication/quorum.rs",
            "use crate::{durable, resp::{codec::{self}}};",
            "replication must not import resp",
        ),
        (
            "replication/master.rs",
            "use crate::node::Node as Planted;",
            "replication must not import node",
        ),
        (
            "backup/last.rs",
            "use super::super::server::ServerError;",
            "backup must not import server",
        ),
        (
            "config.rs",
            "pub type Planted = crate::cli::connect::ConnectArgs;",
            "config must not import cli",
        ),
    ];
    for (file, code, expected) in cases {
        let (_dir, src) = planted(&[(file, code)]);
        let (ok, out) = check(&src);
        assert!(!ok, "{file}: `{code}` was accepted:\n{out}");
        let line = out
            .lines()
            .find(|l| l.contains(expected))
            .unwrap_or_else(|| panic!("{file}: no `{expected}` in:\n{out}"));
        assert!(line.starts_with(&format!("src/{file}:")), "{line}");
    }
}

#[test]
fn a_cycle_between_two_files_is_rejected_and_shown() {
    let (_dir, src) = planted(&[
        (
            "engine/writer.rs",
            "pub fn planted_w() { super::recovery::planted_r(); }",
        ),
        (
            "engine/recovery.rs",
            "pub fn planted_r() { super::writer::planted_w(); }",
        ),
    ]);
    let (ok, out) = check(&src);
    assert!(!ok, "the cycle was accepted:\n{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("import cycle between files")
                && l.contains("src/engine/writer.rs")
                && l.contains("src/engine/recovery.rs")),
        "{out}"
    );
}
