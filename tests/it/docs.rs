//! The documentation keeps its promises: the README starts with `make run`
//! and `make test` and `make` knows both; `docs/CONFIGURATION.md` lists
//! every `kvstore serve` flag and its environment variable.

use crate::common;

use std::path::Path;
use std::process::Command;

use clap::CommandFactory;
use kvstore::cli::Cli;

fn repo_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Commands in the README's fenced blocks, in order, without comments.
fn readme_commands() -> Vec<String> {
    let readme = repo_file("README.md");
    let blocks = common::markdown::fenced_blocks(&readme).expect("README.md");
    blocks
        .iter()
        .flat_map(|b| b.code.lines())
        .map(|line| line.split('#').next().unwrap_or("").trim().to_string())
        .filter(|command| !command.is_empty())
        .collect()
}

#[test]
fn readme_starts_with_make_run_and_make_test() {
    let commands = readme_commands();
    assert_eq!(
        commands.get(..2),
        Some(&["make run".to_string(), "make test".to_string()][..])
    );
    for target in ["run", "test"] {
        let out = Command::new("make")
            .args(["-n", target])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run make");
        assert!(
            out.status.success(),
            "`make -n {target}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // `make run` starts a node with the defaults.
    let out = Command::new("make")
        .args(["-n", "run"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run make");
    let recipe = String::from_utf8_lossy(&out.stdout);
    assert!(
        recipe.contains("kvstore") && recipe.contains("serve"),
        "{recipe}"
    );
}

#[test]
fn configuration_doc_lists_every_serve_flag() {
    let doc = repo_file("docs/CONFIGURATION.md");
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("serve subcommand");
    let mut checked = 0;
    for arg in serve.get_arguments().filter(|a| !a.is_global_set()) {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version" | "addr") {
            continue;
        }
        let flag = format!("`--{long}");
        assert!(
            doc.contains(&flag),
            "docs/CONFIGURATION.md does not list --{long}"
        );
        let env = arg
            .get_env()
            .and_then(|e| e.to_str())
            .unwrap_or_else(|| panic!("--{long} has no env var"));
        assert!(
            doc.contains(&format!("`{env}`")),
            "docs/CONFIGURATION.md does not list {env}"
        );
        checked += 1;
    }
    assert!(checked >= 18, "only {checked} flags found");
    for configmap in [
        "MASTER_ORDINAL",
        "REPLICATION_MODE",
        "REPLICATION_ENABLED",
        "KVSTORE_ADDR",
    ] {
        assert!(doc.contains(configmap), "{configmap}");
    }
}
