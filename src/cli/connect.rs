//! How client commands reach a node: the token and TLS flags shared by
//! every command (global, so they go before or after the subcommand), shown
//! under their own heading in `--help`, and the check of `--addr`.
//!
//! `serve` reads the same flags: `--auth-token-file` is then the file of
//! client tokens it accepts (`serve` redefines the flag with that help, see
//! [`crate::cli::ServeCommand`]), and `--tls-ca` / `--tls-server-name` how
//! it verifies its master. Inside a pod, where the environment already
//! names both, `kvstore put k v` therefore just works.

use std::path::PathBuf;

use bytes::Bytes;
use clap::Args;

use crate::cli::CliError;
use crate::client::ClientOptions;
use crate::config::ConfigError;
use crate::security::{tokens, Connector, TlsFiles};

/// The `--help` heading of the flags every client command takes.
pub const GLOBAL_HEADING: &str = "Global options";

/// The global connection flags.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = GLOBAL_HEADING)]
pub struct ConnectArgs {
    /// Token file: the first token in it is sent to the node.
    #[arg(
        long,
        global = true,
        env = "KVSTORE_AUTH_TOKEN_FILE",
        value_name = "PATH"
    )]
    pub auth_token_file: Option<PathBuf>,
    /// PEM CA bundle: talk TLS and verify the server's certificate against it.
    #[arg(long, global = true, env = "KVSTORE_TLS_CA", value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// Name to verify in the server's certificate instead of the host part
    /// of the address.
    #[arg(
        long,
        global = true,
        env = "KVSTORE_TLS_SERVER_NAME",
        value_name = "NAME"
    )]
    pub tls_server_name: Option<String>,
}

impl ConnectArgs {
    /// `base` with this command line's credential and TLS settings.
    pub fn options(&self, base: ClientOptions) -> Result<ClientOptions, CliError> {
        let credential = match &self.auth_token_file {
            Some(path) => Some(Bytes::from(
                tokens::client_token(path).map_err(|e| CliError::Other(e.to_string()))?,
            )),
            None => None,
        };
        let tls = Connector::from_files(&TlsFiles {
            ca: self.tls_ca.clone(),
            server_name: self.tls_server_name.clone(),
            ..TlsFiles::default()
        })
        .map_err(|e| CliError::Other(e.to_string()))?;
        Ok(ClientOptions {
            credential,
            tls,
            ..base
        })
    }
}

/// Checks that `value`, given to `flag`, has the form `HOST:PORT` (an IPv6
/// host in brackets, `[::1]:5555`) before anything connects, so a typo gets
/// one line that names the expected form instead of a resolver's message.
/// The host is resolved when connecting: it may be a DNS name.
pub fn check_addr(flag: &str, value: &str) -> Result<(), CliError> {
    let well_formed = value
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.trim().is_empty() && port.parse::<u16>().is_ok());
    if well_formed {
        return Ok(());
    }
    Err(CliError::Config(ConfigError::Invalid {
        setting: flag.to_string(),
        value: value.to_string(),
        reason: format!("expected HOST:PORT, e.g. {}", crate::cli::DEFAULT_ADDR),
    }))
}
