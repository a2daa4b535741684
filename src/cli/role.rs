//! `kvstore role`: resolve the role `kvstore serve` would start in from the
//! same flags and environment (`--role auto`, `MASTER_ORDINAL`,
//! `HOSTNAME`, `--master-addr` with `{ordinal}`), print it and exit. The
//! Kubernetes init container runs it, so a bad ConfigMap stops the pod in
//! `Init` with a clear message, and `kubectl logs -c init-kvstore` shows
//! each pod's role.

use crate::cli::CliError;
use crate::config::{Config, Role, ServeArgs};

pub fn run(args: &ServeArgs) -> Result<(), CliError> {
    let config = Config::from_args(args, |k| std::env::var(k).ok())?;
    let pod = args
        .pod_name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "this node".into());
    match config.role {
        Role::Master => println!("{pod}: role MASTER"),
        Role::Replica { master_addr } => println!("{pod}: role REPLICA of {master_addr}"),
        Role::Candidate => println!(
            "{pod}: role CANDIDATE (the {} coordinator elects the master)",
            args.coordinator
        ),
    }
    Ok(())
}
