//! How client commands reach a node: the token and TLS flags shared by
//! every command (global, so they go before or after the subcommand).
//!
//! `serve` reads the same flags: `--auth-token-file` is then the file of
//! client tokens it accepts, and `--tls-ca` / `--tls-server-name` how it
//! verifies its master. Inside a pod, where the environment already names
//! both, `kvstore put k v` therefore just works.

use std::path::PathBuf;

use bytes::Bytes;
use clap::Args;

use crate::cli::CliError;
use crate::client::ClientOptions;
use crate::security::{tokens, Connector, TlsFiles};

/// The global connection flags.
#[derive(Debug, Clone, Default, Args)]
pub struct ConnectArgs {
    /// Token file: client commands send its first token; `serve` accepts
    /// every token in it as a client (read and write) credential.
    #[arg(
        long,
        global = true,
        env = "KVSTORE_AUTH_TOKEN_FILE",
        value_name = "PATH"
    )]
    pub auth_token_file: Option<PathBuf>,
    /// PEM CA bundle: use TLS and verify the server against it (`serve`:
    /// toward its master).
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
