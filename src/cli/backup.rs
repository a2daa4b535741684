//! `kvstore backup` and `kvstore restore` (logic in [`crate::backup`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::backup::{self, BackupOptions};
use crate::cli::connect::ConnectArgs;
use crate::cli::CliError;
use crate::client::ClientOptions;

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Node(s) to back up from, comma-separated host:port; the first
    /// replica that answers is used, else the first node that answers.
    #[arg(
        long,
        value_name = "ADDR[,ADDR...]",
        value_delimiter = ',',
        required = true
    )]
    pub from: Vec<String>,
    /// Backup root directory; the backup goes into DIR/<UTC timestamp>/.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Keep only the newest N complete backups (the new one included).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
    /// Bound on connecting and on each wait for data from the node.
    #[arg(long, value_name = "SECS", default_value = "60")]
    pub timeout_secs: u64,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// One backup directory (DIR/<timestamp>, the one holding MANIFEST.json).
    #[arg(long, value_name = "BACKUP_DIR")]
    pub from: PathBuf,
    /// Empty (or absent) data directory to restore into.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct VerifyBackupArgs {
    /// One backup directory (DIR/<timestamp>).
    #[arg(long, value_name = "BACKUP_DIR")]
    pub from: PathBuf,
}

fn fail(e: backup::Error) -> CliError {
    CliError::Other(e.to_string())
}

pub fn run_backup(args: &BackupArgs, connect: &ConnectArgs) -> Result<(), CliError> {
    for from in &args.from {
        crate::cli::connect::check_addr("--from", from)?;
    }
    let client = connect.options(ClientOptions {
        client_name: "kvstore-backup".into(),
        ..ClientOptions::default()
    })?;
    let opts = BackupOptions {
        client,
        sources: args.from.clone(),
        to: args.to.clone(),
        keep: args.keep.map(|k| k as usize),
        timeout: Duration::from_secs(args.timeout_secs.max(1)),
    };
    let report =
        backup::take_backup(&opts).map_err(|e| CliError::Other(format!("backup failed: {e}")))?;
    println!(
        "backup complete: {} from {} ({}): {} files, {} linked to the previous backup, {} bytes copied, log end {}",
        report.dir.display(),
        report.source,
        report.source_role,
        report.files,
        report.linked,
        report.copied_bytes,
        report.end
    );
    for p in &report.removed {
        println!("removed {}", p.display());
    }
    Ok(())
}

pub fn run_restore(args: &RestoreArgs) -> Result<(), CliError> {
    let report = backup::restore(&args.from, &args.data_dir)
        .map_err(|e| CliError::Other(format!("restore failed: {e}")))?;
    println!(
        "restored {} files ({} bytes) into {}; log end {}, epoch {}: a replica started on it resumes replication from there",
        report.files,
        report.bytes,
        args.data_dir.display(),
        report.end,
        report.epoch
    );
    Ok(())
}

pub fn run_verify(args: &VerifyBackupArgs) -> Result<(), CliError> {
    let m = backup::verify(&args.from).map_err(fail)?;
    println!(
        "backup {} is complete: {} files verified, log end {}",
        args.from.display(),
        m.files.len(),
        m.end
    );
    Ok(())
}
