//! The `kvstore` command line: one subcommand per task.
//!
//! `serve` runs a node ([`serve`]); the client commands talk to a node over
//! the wire protocol ([`client`]); offline commands work on a data
//! directory directly. Every failure becomes one line on stderr,
//! `error: ...`, and a non-zero exit code: 2 for a bad configuration, 1 for
//! anything else unless the command says otherwise ([`CliError::Exit`]).

pub mod admin;
pub mod backup;
pub mod bench;
pub mod client;
pub mod cluster;
pub mod connect;
pub mod duration;
pub mod offline;
pub mod role;
pub mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::config::ConfigError;
use crate::server::ServerError;

/// Default node address for client commands.
pub const DEFAULT_ADDR: &str = "127.0.0.1:5555";
/// How errors name `--addr`.
const ADDR_SETTING: &str = "--addr (KVSTORE_ADDR)";

/// `kvstore`: a replicated key-value store.
#[derive(Debug, Parser)]
#[command(name = "kvstore", version, about, propagate_version = true)]
pub struct Cli {
    /// Node to talk to, HOST:PORT (before or after the subcommand).
    #[arg(
        long,
        global = true,
        env = "KVSTORE_ADDR",
        value_name = "ADDR",
        default_value = DEFAULT_ADDR,
        help_heading = connect::GLOBAL_HEADING
    )]
    pub addr: String,
    #[command(flatten)]
    pub connect: connect::ConnectArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node.
    Serve(Box<ServeCommand>),
    /// Print the role `serve` would start in with these settings, and exit
    /// (the Kubernetes init container runs it).
    Role(Box<crate::config::ServeArgs>),
    /// Back up a running node (a replica by preference) into DIR/<timestamp>/.
    Backup(backup::BackupArgs),
    /// Restore a backup into an empty data directory.
    Restore(backup::RestoreArgs),
    /// Check every file of a backup against its manifest.
    VerifyBackup(backup::VerifyBackupArgs),
    /// Client commands: talk to a node over the network.
    #[command(flatten)]
    Client(client::ClientCommand),
    // Offline commands (verify, dump, compact --data-dir): src/cli/offline.rs.
}

/// `serve`'s arguments: the node's settings, and `--auth-token-file` with
/// its server meaning. The flag is also a global client flag
/// ([`connect::ConnectArgs`]) whose help describes the client side; an
/// argument of the same id defined here replaces the global one in
/// `serve`'s parser and help (clap does not propagate a global argument to
/// a subcommand that has its own), so each `--help` tells its own story.
#[derive(Debug, Args)]
pub struct ServeCommand {
    #[command(flatten)]
    pub settings: crate::config::ServeArgs,
    /// File of client tokens: every token in it is accepted as a client
    /// (read and write) credential; the first one is also sent to the
    /// master when this node is a replica.
    #[arg(long, env = "KVSTORE_AUTH_TOKEN_FILE", value_name = "PATH")]
    pub auth_token_file: Option<PathBuf>,
}

/// A failed command; `Display` is the one line shown to the user.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Server(#[from] ServerError),
    /// Exit with `code` after printing `message` (e.g. "key not found").
    #[error("{message}")]
    Exit { code: u8, message: String },
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            // A token or certificate file that cannot be used is a
            // configuration error like any other bad setting.
            CliError::Config(_) | CliError::Server(ServerError::Security(_)) => 2,
            CliError::Exit { code, .. } => *code,
            _ => 1,
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(cmd) => {
            // Given before `serve`, the flag lands in the global one.
            let connect = connect::ConnectArgs {
                auth_token_file: cmd.auth_token_file.or(cli.connect.auth_token_file),
                ..cli.connect
            };
            serve::run(&cmd.settings, &connect)
        }
        Command::Role(args) => role::run(&args),
        Command::Backup(args) => backup::run_backup(&args, &cli.connect),
        Command::Restore(args) => backup::run_restore(&args),
        Command::VerifyBackup(args) => backup::run_verify(&args),
        Command::Client(cmd) => {
            if cmd.talks_to_addr() {
                connect::check_addr(ADDR_SETTING, &cli.addr)?;
            }
            client::run(cmd, &cli.addr, &cli.connect)
        }
    }
}

/// The whole program: parse `std::env::args`, run, report. `main.rs` calls
/// only this.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match ConfigError::from_clap(&e, &Cli::command()) {
            // A bad value: one line naming the flag and its variable.
            Some(bad) => {
                eprintln!("error: {bad}");
                return ExitCode::from(CliError::Config(bad).exit_code());
            }
            // Usage errors, --help, --version: clap's own words.
            None => e.exit(),
        },
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::KNOWN_ENV;

    /// Every variable a flag of any subcommand reads.
    fn flag_variables(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                out.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            flag_variables(sub, out);
        }
    }

    /// `serve` warns about a `KVSTORE_` variable missing from the known
    /// list as a probable typo: the list must be exactly what flags read.
    #[test]
    fn the_known_variables_are_exactly_the_flags_variables() {
        let mut read = BTreeSet::new();
        flag_variables(&Cli::command(), &mut read);
        let known: BTreeSet<String> = KNOWN_ENV.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            read.difference(&known).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "read by a flag, missing from KNOWN_ENV (serve would call them typos)"
        );
        assert_eq!(
            known.difference(&read).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "in KNOWN_ENV, read by no flag"
        );
    }
}
