//! `kvstore cluster status`: the coordinator's view of the cluster as one
//! node sees it (holder, epoch, lease, in-sync set, members), as a table or
//! as the CLUSTER_STATUS JSON document (`--json`, field names in
//! docs/PROTOCOL.md). Any node answers; a node without a coordinator says
//! so (`coordinator: none`) and lists itself.

use clap::{Args, Subcommand};

use crate::cli::admin;
use crate::cli::connect::ConnectArgs;
use crate::cli::CliError;
use crate::protocol::cluster::{ClusterStatus, Member};

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the holder, its epoch and lease, the in-sync set and every live
    /// member's role, log end and lag, as the node at --addr sees them.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the JSON document (stable field names) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `cluster ...` against the node at `addr`.
pub fn run(args: &ClusterArgs, addr: &str, with: &ConnectArgs) -> Result<(), CliError> {
    match &args.command {
        ClusterCommand::Status(status_args) => {
            let status = admin::connect(addr, with)?
                .cluster_status()
                .map_err(admin::fail)?;
            if status_args.json {
                println!("{}", status.to_json());
            } else {
                print!("{}", render(&status));
                for error in &status.errors {
                    eprintln!("warning: {error}");
                }
            }
            Ok(())
        }
    }
}

/// The human table: a few `name  value` lines, then one row per member.
pub fn render(s: &ClusterStatus) -> String {
    let mut head: Vec<(&str, String)> = Vec::new();
    if s.coordinator == "none" {
        head.push((
            "coordinator",
            format!(
                "none: roles are set by hand (--role), nothing is elected; {} mode (answered by {})",
                s.mode, s.node_id
            ),
        ));
    } else {
        head.push((
            "coordinator",
            format!(
                "{}, {} mode (answered by {})",
                s.coordinator, s.mode, s.node_id
            ),
        ));
        head.push((
            "holder",
            match &s.holder {
                Some(h) => format!("{} at {}, epoch {}", h.node_id, h.addr, h.epoch),
                None => "none (the seat is vacant)".into(),
            },
        ));
        head.push((
            "lease",
            match &s.lease {
                Some(l) => {
                    let left = l.remaining_ms.map_or("time left unknown".into(), |ms| {
                        format!("{} left", secs(ms))
                    });
                    if l.held_here {
                        format!("{left} (held by this node: its fence deadline)")
                    } else {
                        format!("{left} as {} sees it", s.node_id)
                    }
                }
                None => "-".into(),
            },
        ));
        head.push((
            "in-sync set",
            match &s.in_sync {
                Some(set) => format!(
                    "{} (published in epoch {})",
                    set.node_ids.join(", "),
                    set.epoch
                ),
                None if s.mode == "sync" => "none published yet".into(),
                None => "- (async mode)".into(),
            },
        ));
    }
    let width = head.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (name, value) in &head {
        out.push_str(&format!("{name:<width$}  {value}\n"));
    }
    out.push('\n');
    out.push_str(&table(&s.members));
    out
}

/// One row per member, columns padded to their widest cell.
fn table(members: &[Member]) -> String {
    let header = [
        "NODE", "ADDRESS", "ROLE", "EPOCH", "LOG END", "LAG", "IN SYNC", "BLOCKED",
    ];
    let dash = || "-".to_string();
    let rows: Vec<[String; 8]> = members
        .iter()
        .map(|m| {
            [
                m.node_id.clone(),
                m.addr.clone(),
                m.role.clone(),
                m.epoch.to_string(),
                m.log_end.to_string(),
                m.lag_bytes.map_or_else(dash, |b| b.to_string()),
                m.in_sync
                    .map_or_else(dash, |yes| String::from(if yes { "yes" } else { "no" })),
                m.blocked.clone().unwrap_or_else(dash),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(&header);
    for row in &rows {
        out.push_str(&line(&row.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    out
}

/// `4512` → `4.512 s`.
fn secs(ms: u64) -> String {
    format!("{}.{:03} s", ms / 1000, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, role: &str, end: u64, lag: Option<u64>) -> Member {
        Member {
            node_id: id.into(),
            addr: format!("10.0.0.{}:5555", id.len()),
            role: role.into(),
            epoch: 3,
            log_end: end,
            lag_bytes: lag,
            in_sync: Some(id != "n2"),
            blocked: None,
        }
    }

    #[test]
    fn the_table_names_holder_lease_set_and_members() {
        let status = ClusterStatus {
            members: vec![
                member("n0", "master", 4096, Some(0)),
                member("n1", "replica", 4000, Some(96)),
                member("n2", "replica", 10, Some(4086)),
            ],
            ..crate::protocol::cluster::example()
        };
        let text = render(&status);
        assert!(
            text.contains("holder       n0 at 10.0.0.2:5555, epoch 3"),
            "{text}"
        );
        assert!(
            text.contains("lease        4.000 s left as n1 sees it"),
            "{text}"
        );
        assert!(
            text.contains("in-sync set  n0, n1 (published in epoch 3)"),
            "{text}"
        );
        assert!(text.contains("NODE  ADDRESS"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == [
                        "n2",
                        "10.0.0.2:5555",
                        "replica",
                        "3",
                        "10",
                        "4086",
                        "no",
                        "-"
                    ]),
            "{text}"
        );
    }

    #[test]
    fn without_a_coordinator_the_table_says_so() {
        let status = ClusterStatus {
            coordinator: "none".into(),
            node_id: "127.0.0.1:5555".into(),
            mode: "async".into(),
            holder: None,
            lease: None,
            in_sync: None,
            members: vec![member("127.0.0.1:5555", "master", 7, None)],
            errors: Vec::new(),
        };
        let text = render(&status);
        assert!(
            text.starts_with("coordinator  none: roles are set by hand"),
            "{text}"
        );
        assert!(!text.contains("holder"), "{text}");
    }
}
