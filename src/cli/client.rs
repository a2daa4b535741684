//! PLACEHOLDER: client subcommands. The protocol branch (`proto`) replaces
//! this file; only `ClientCommand` and `run` are the contract with
//! `cli/mod.rs`.

use clap::Subcommand;

use crate::cli::CliError;

/// Commands that talk to a node.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Check that a node answers.
    Ping,
}

/// Runs a client command against the node at `addr`.
pub fn run(cmd: ClientCommand, addr: &str) -> Result<(), CliError> {
    match cmd {
        ClientCommand::Ping => Err(CliError::Other(format!(
            "ping {addr}: the client is not implemented on this branch yet"
        ))),
    }
}
