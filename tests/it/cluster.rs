//! `kvstore cluster status` (CLUSTER_STATUS) through the real CLI against
//! real nodes: under a 3-member etcd cluster and under the Kubernetes API
//! stand-in, the table and the JSON name the elected holder, its epoch and
//! the in-sync set, and after a SIGKILL of the master the new holder; with
//! etcd gone a node still answers and names what it could not read; a
//! node without a coordinator answers `coordinator: none` and lists
//! itself.
//!
//! Every wait polls with a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::common::{cli, wait_for, Server};

/// An election and a follow-up on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(40);

/// `cluster status --json` from the node at `addr`, parsed; `None` when the
/// command fails (a node still starting, say).
fn status_json(addr: SocketAddr) -> Option<Value> {
    let out = cli(addr, &["cluster", "status", "--json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// `cluster status` (the table) from the node at `addr`.
fn status_table(addr: SocketAddr) -> String {
    let out = cli(addr, &["cluster", "status"]);
    assert!(
        out.status.success(),
        "cluster status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 table")
}

fn str_at<'a>(doc: &'a Value, pointer: &str) -> Option<&'a str> {
    doc.pointer(pointer)?.as_str()
}

/// The member row of `id` in a status document.
fn member<'a>(doc: &'a Value, id: &str) -> Option<&'a Value> {
    doc.get("members")?
        .as_array()?
        .iter()
        .find(|m| m.get("node_id").and_then(Value::as_str) == Some(id))
}

/// The in-sync set's node ids, sorted.
fn in_sync_ids(doc: &Value) -> Option<Vec<String>> {
    let mut ids: Vec<String> = doc
        .pointer("/in_sync/node_ids")?
        .as_array()?
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    ids.sort();
    Some(ids)
}

#[cfg(any(feature = "etcd", feature = "kubernetes"))]
mod with_coordinator {
    use super::*;
    use crate::common::failover::{one_master, ttl, Coord};

    /// Three sync-mode nodes under `coord`: `cluster status` from a replica
    /// and from the master names the holder, its epoch, the full in-sync
    /// set and every member; after a SIGKILL of the master, a survivor
    /// names the new holder in a later epoch.
    pub(super) fn status_follows_a_failover(coord: Coord) {
        let sync = ["--replication-mode", "sync", "--min-acks", "2"];
        let mut nodes: Vec<Server> = (0..3).map(|i| coord.start_node(i, &sync)).collect();
        let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
        let (m, epoch) = wait_for(DEADLINE, "one master followed by the rest", || {
            one_master(&addrs)
        });
        let holder = format!("n{m}");
        let replica = addrs[(m + 1) % 3];
        let all: Vec<String> = (0..3).map(|i| format!("n{i}")).collect();
        let doc = wait_for(DEADLINE, "a status with all three in sync", || {
            let doc = status_json(replica)?;
            (in_sync_ids(&doc)? == all && doc["members"].as_array()?.len() == 3).then_some(doc)
        });
        assert_eq!(str_at(&doc, "/coordinator"), Some(coord.name()), "{doc}");
        assert_eq!(str_at(&doc, "/mode"), Some("sync"), "{doc}");
        assert_eq!(
            str_at(&doc, "/holder/node_id"),
            Some(holder.as_str()),
            "{doc}"
        );
        assert_eq!(
            str_at(&doc, "/holder/addr"),
            Some(addrs[m].to_string().as_str()),
            "{doc}"
        );
        assert_eq!(
            doc.pointer("/holder/epoch").and_then(Value::as_u64),
            Some(epoch),
            "{doc}"
        );
        assert_eq!(
            doc.pointer("/in_sync/epoch").and_then(Value::as_u64),
            Some(epoch),
            "{doc}"
        );
        assert_eq!(
            doc.pointer("/lease/held_here"),
            Some(&Value::Bool(false)),
            "{doc}"
        );
        let ttl_ms = u64::try_from(ttl().as_millis()).expect("ttl");
        let left = doc.pointer("/lease/remaining_ms").and_then(Value::as_u64);
        assert!(left.is_some_and(|ms| ms <= ttl_ms), "{doc}");
        for (i, addr) in addrs.iter().enumerate() {
            let row = member(&doc, &format!("n{i}")).expect("every node is a member");
            let role = if i == m { "master" } else { "replica" };
            assert_eq!(row["role"], role, "{doc}");
            assert_eq!(row["addr"], addr.to_string(), "{doc}");
            assert_eq!(row["in_sync"], true, "{doc}");
            assert!(row["lag_bytes"].is_u64(), "{doc}");
            assert!(row["blocked"].is_null(), "{doc}");
        }

        // The master holds the term itself: its fence is what it reports.
        let own = status_json(addrs[m]).expect("status from the master");
        assert_eq!(
            own.pointer("/lease/held_here"),
            Some(&Value::Bool(true)),
            "{own}"
        );
        let left = own.pointer("/lease/remaining_ms").and_then(Value::as_u64);
        assert!(left.is_some_and(|ms| ms > 0 && ms <= ttl_ms), "{own}");
        assert_eq!(
            member(&own, &holder).and_then(|r| r["lag_bytes"].as_u64()),
            Some(0)
        );

        // The table says the same.
        let table = status_table(replica);
        for line in [
            format!(
                "coordinator  {}, sync mode (answered by n{})",
                coord.name(),
                (m + 1) % 3
            ),
            format!("holder       {holder} at {}, epoch {epoch}", addrs[m]),
            format!("in-sync set  n0, n1, n2 (published in epoch {epoch})"),
        ] {
            assert!(table.contains(&line), "{line:?} not in:\n{table}");
        }
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("{holder} ")))
            .unwrap_or_else(|| panic!("no row for {holder}:\n{table}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells[..3],
            [holder.as_str(), &addrs[m].to_string(), "master"],
            "{table}"
        );
        assert_eq!(cells[3], epoch.to_string(), "{table}");

        // SIGKILL of the master: a survivor names the new holder.
        nodes[m].sigkill();
        let survivor = replica;
        let (new_holder, new_epoch) = wait_for(DEADLINE, "a status naming a new holder", || {
            let doc = status_json(survivor)?;
            let id = str_at(&doc, "/holder/node_id")?.to_string();
            let e = doc.pointer("/holder/epoch")?.as_u64()?;
            (id != holder && e > epoch).then_some((id, e))
        });
        let survivors: Vec<SocketAddr> = (0..3).filter(|&i| i != m).map(|i| addrs[i]).collect();
        let (new_m, elected) = wait_for(DEADLINE, "the survivors to follow a new master", || {
            one_master(&survivors)
        });
        let new_m = (0..3).filter(|&i| i != m).nth(new_m).expect("index");
        assert_eq!(new_holder, format!("n{new_m}"));
        assert_eq!(new_epoch, elected);
        let table = status_table(survivor);
        assert!(
            table.contains(&format!(
                "holder       {new_holder} at {}, epoch {new_epoch}",
                addrs[new_m]
            )),
            "{table}"
        );
    }
}

#[cfg(feature = "etcd")]
#[test]
fn cluster_status_under_a_three_member_etcd_names_the_holder_and_the_new_one_after_sigkill() {
    with_coordinator::status_follows_a_failover(crate::common::failover::Coord::etcd(3));
}

#[cfg(feature = "kubernetes")]
#[test]
fn cluster_status_under_the_lease_api_stand_in_names_the_holder_and_the_new_one_after_sigkill() {
    with_coordinator::status_follows_a_failover(crate::common::failover::Coord::kube());
}

#[test]
fn a_node_without_a_coordinator_says_so_and_lists_itself() {
    let node = Server::start(&[]);
    let doc = status_json(node.addr).expect("status from a node without a coordinator");
    assert_eq!(str_at(&doc, "/coordinator"), Some("none"), "{doc}");
    assert!(doc["holder"].is_null() && doc["lease"].is_null(), "{doc}");
    assert!(doc["in_sync"].is_null(), "{doc}");
    assert_eq!(doc["errors"], Value::Array(Vec::new()), "{doc}");
    let members = doc["members"].as_array().expect("members");
    assert_eq!(members.len(), 1, "{doc}");
    assert_eq!(members[0]["role"], "master", "{doc}");
    assert_eq!(members[0]["node_id"], doc["node_id"], "{doc}");
    let table = status_table(node.addr);
    assert!(
        table.starts_with("coordinator  none: roles are set by hand (--role)"),
        "{table}"
    );
    assert!(!table.contains("holder"), "{table}");
}

/// With etcd gone the node still answers, at once (each read bounded by
/// the request timeout), naming what it could not read; the table prints
/// the same as warnings and the command still succeeds.
#[cfg(feature = "etcd")]
#[test]
fn with_etcd_gone_the_status_still_answers_and_says_what_it_could_not_read() {
    use crate::common::etcd::EtcdCluster;
    use crate::common::failover::{one_master, start_node};

    let mut etcd = EtcdCluster::start(1);
    let node = start_node(&etcd, 0, &[]);
    wait_for(DEADLINE, "n0 elected", || one_master(&[node.addr]));
    etcd.kill(0);
    let doc = wait_for(DEADLINE, "a status naming failed reads", || {
        let doc = status_json(node.addr)?;
        (!doc["errors"].as_array()?.is_empty()).then_some(doc)
    });
    let errors = doc["errors"].to_string();
    assert!(errors.contains("from the coordinator"), "{doc}");
    assert_eq!(str_at(&doc, "/coordinator"), Some("etcd"), "{doc}");
    let members = doc["members"].as_array().expect("members");
    assert!(
        members.iter().any(|m| m["node_id"] == "n0"),
        "the node lists itself even when the members cannot be read: {doc}"
    );
    let out = cli(node.addr, &["cluster", "status"]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: cannot read"), "{stderr}");
}
