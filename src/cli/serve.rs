//! `kvstore serve`: validate the configuration, set up logging, run a node
//! until SIGTERM/SIGINT.

use std::io::IsTerminal;

use tracing::warn;
use tracing_subscriber::EnvFilter;

use crate::cli::connect::ConnectArgs;
use crate::cli::CliError;
use crate::config::{Config, LogFormat, ServeArgs, KNOWN_ENV};
use crate::engine;
use crate::server::ServerError;

/// Runs `kvstore serve`. Configuration errors are returned before anything
/// is started.
pub fn run(args: &ServeArgs, connect: &ConnectArgs) -> Result<(), CliError> {
    let mut config = Config::from_args(args, |k| std::env::var(k).ok())?;
    // The settings shared with client commands: the client token file,
    // the CA this node verifies its master against and the name it
    // expects there.
    config.tokens.client.clone_from(&connect.auth_token_file);
    config.tls.ca.clone_from(&connect.tls_ca);
    config.tls.server_name.clone_from(&connect.tls_server_name);
    init_logging(config.log_format);
    warn_unknown_env();
    if config.coordinator.is_some()
        && (args.master_ordinal.is_some() || std::env::var_os("MASTER_ORDINAL").is_some())
    {
        warn!("MASTER_ORDINAL is ignored: the coordinator elects the master");
    }
    if args.master_addr.is_some() && config.role == crate::config::Role::Master {
        warn!("--master-addr is ignored: this node starts as master");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kvstore")
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the async runtime: {e}")))?;
    match runtime.block_on(crate::server::run_until_signal(config)) {
        Err(ServerError::Close(engine::Error::Poisoned { reason })) => Err(CliError::Exit {
            code: POISONED_EXIT,
            message: format!(
                "stopped with the storage engine refusing writes ({reason}); \
                 what it could write was flushed, and no write it refused or failed to make durable \
                 was acknowledged; fix the disk and start the node again"
            ),
        }),
        other => Ok(other?),
    }
}

/// Exit code of a node stopped (SIGTERM, SIGINT) while its engine was
/// poisoned by a failed write or fsync that it could not recover from
/// before stopping (docs/CONFIGURATION.md, "Exit codes").
pub const POISONED_EXIT: u8 = 3;

/// Logs to stderr; `RUST_LOG` filters (default `info`).
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (only possible in tests) keeps the first.
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// A misspelt `KVSTORE_*` variable would otherwise be silently ignored.
fn warn_unknown_env() {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("KVSTORE_") && !KNOWN_ENV.contains(&key) {
            warn!("unknown environment variable {key} is ignored");
        }
    }
}
