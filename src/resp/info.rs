//! `INFO` and `CONFIG GET`: kvstore's figures under Redis's field names
//! where they mean the same thing, and `kvstore_*` fields where there is no
//! Redis equivalent. Nothing here is invented: a field is present only when
//! kvstore has the figure.

use bytes::Bytes;

use super::reply::Reply;
use super::Shared;
use crate::engine::Durability;
use crate::node::Node;

/// The Redis command level the front end imitates, announced as
/// `redis_version` so clients enable the matching behaviour.
pub const REDIS_VERSION: &str = "7.0.0";

const SECTIONS: &[&str] = &[
    "server",
    "clients",
    "persistence",
    "stats",
    "replication",
    "keyspace",
];

/// The `INFO [section ...]` text. `all`, `everything`, `default` or no
/// argument give every section; unknown sections are ignored, as in Redis.
pub fn info(node: &Node, shared: &Shared, args: &[Bytes]) -> String {
    let wanted: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| matches!(w.as_str(), "all" | "everything" | "default"));
    let mut out = String::new();
    for section in SECTIONS {
        if !all && !wanted.iter().any(|w| w == section) {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let body = match *section {
            "server" => server(shared),
            "clients" => clients(node, shared),
            "persistence" => persistence(node),
            "stats" => stats(shared),
            "replication" => replication(node),
            _ => keyspace(node),
        };
        let mut title = section.to_string();
        if let Some(first) = title.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        out.push_str(&format!("# {title}\r\n"));
        for (k, v) in body {
            out.push_str(&format!("{k}:{v}\r\n"));
        }
    }
    out
}

type Fields = Vec<(String, String)>;

fn field(fields: &mut Fields, k: impl Into<String>, v: impl ToString) {
    fields.push((k.into(), v.to_string()));
}

fn server(shared: &Shared) -> Fields {
    let mut f = Vec::new();
    let uptime = shared.started.elapsed().as_secs();
    field(&mut f, "redis_version", REDIS_VERSION);
    field(&mut f, "kvstore_version", env!("CARGO_PKG_VERSION"));
    field(&mut f, "redis_mode", "standalone");
    field(&mut f, "os", std::env::consts::OS);
    field(&mut f, "arch_bits", usize::BITS);
    field(&mut f, "process_id", std::process::id());
    field(&mut f, "tcp_port", shared.settings.addr.port());
    field(&mut f, "uptime_in_seconds", uptime);
    field(&mut f, "uptime_in_days", uptime / 86_400);
    f
}

fn clients(node: &Node, shared: &Shared) -> Fields {
    let mut f = Vec::new();
    field(&mut f, "connected_clients", shared.connected());
    field(&mut f, "maxclients", node.limits.max_connections);
    f
}

fn persistence(node: &Node) -> Fields {
    let s = node.engine.stats();
    let mut f = Vec::new();
    field(&mut f, "loading", 0);
    // Every write goes to the append-only log: that is what AOF means.
    field(&mut f, "aof_enabled", 1);
    field(&mut f, "aof_rewrite_in_progress", 0);
    field(&mut f, "aof_rewrites", s.compactions);
    let status = if s.poisoned.is_some() { "err" } else { "ok" };
    field(&mut f, "aof_last_write_status", status);
    field(&mut f, "aof_current_size", s.disk_bytes);
    field(&mut f, "kvstore_durability", node.durability.name());
    field(&mut f, "kvstore_appendfsync", appendfsync(node.durability));
    field(&mut f, "kvstore_log_end_offset", s.log_end);
    field(&mut f, "kvstore_durable_end_offset", s.durable_end);
    field(&mut f, "kvstore_fsyncs", s.fsyncs);
    field(&mut f, "kvstore_segments", s.segments);
    f
}

fn stats(shared: &Shared) -> Fields {
    let c = &shared.counters;
    let mut f = Vec::new();
    field(
        &mut f,
        "total_connections_received",
        c.connections_received(),
    );
    field(&mut f, "total_commands_processed", c.commands_processed());
    field(&mut f, "rejected_connections", c.rejected());
    field(&mut f, "keyspace_hits", c.hits());
    field(&mut f, "keyspace_misses", c.misses());
    f
}

/// `host:port` split at the last colon (IPv6 literals keep theirs).
fn host_port(addr: &str) -> (&str, &str) {
    addr.rsplit_once(':').unwrap_or((addr, "0"))
}

fn replication(node: &Node) -> Fields {
    let r = node.replication.stats();
    let mut f = Vec::new();
    match &r.master {
        None => {
            field(&mut f, "role", "master");
            field(&mut f, "connected_slaves", r.connected_replicas);
            for (i, replica) in r.replicas.iter().enumerate() {
                let (ip, port) = host_port(&replica.advertise);
                field(
                    &mut f,
                    format!("slave{i}"),
                    format!(
                        "ip={ip},port={port},state=online,offset={},lag={}",
                        replica.acked_offset,
                        replica.lag_seconds.round() as u64
                    ),
                );
            }
        }
        Some(master) => {
            let (host, port) = host_port(master);
            field(&mut f, "role", "slave");
            field(&mut f, "master_host", host);
            field(&mut f, "master_port", port);
            field(
                &mut f,
                "master_link_status",
                if r.link_up { "up" } else { "down" },
            );
            field(&mut f, "master_sync_in_progress", 0);
            field(&mut f, "slave_repl_offset", r.end_offset);
            field(&mut f, "slave_read_only", 1);
            field(&mut f, "connected_slaves", r.connected_replicas);
            field(&mut f, "kvstore_lag_bytes", r.lag_bytes);
        }
    }
    field(&mut f, "master_repl_offset", r.end_offset);
    field(&mut f, "kvstore_epoch", r.epoch);
    field(
        &mut f,
        "kvstore_replication_mode",
        format!("{:?}", r.mode).to_ascii_lowercase(),
    );
    field(&mut f, "kvstore_min_acks", r.min_acks);
    f
}

fn keyspace(node: &Node) -> Fields {
    let keys = node.engine.stats().keys;
    let mut f = Vec::new();
    if keys > 0 {
        field(&mut f, "db0", format!("keys={keys},expires=0,avg_ttl=0"));
    }
    f
}

/// Redis's `appendfsync` for the durability policy.
fn appendfsync(durability: Durability) -> &'static str {
    match durability {
        Durability::Always => "always",
        Durability::Interval(_) => "everysec",
        Durability::Never => "no",
    }
}

/// `CONFIG GET pattern...`: the parameters redis-benchmark and common
/// clients read, answered from kvstore's settings. `CONFIG SET` and the
/// rest are refused: settings are flags and environment variables.
pub fn config(node: &Node, shared: &Shared, args: &[Bytes]) -> Reply {
    let sub = args[0].to_ascii_lowercase();
    if &sub[..] != b"get" {
        return Reply::err(format!(
            "CONFIG {} is not supported: kvstore is configured by flags and KVSTORE_* variables",
            String::from_utf8_lossy(&args[0]).to_ascii_uppercase()
        ));
    }
    if args.len() < 2 {
        return Reply::err("wrong number of arguments for 'config|get' command");
    }
    let limits = &shared.settings.limits;
    let params: Vec<(&str, String)> = vec![
        ("save", String::new()),
        ("appendonly", "yes".into()),
        ("appendfsync", appendfsync(node.durability).into()),
        ("databases", "1".into()),
        ("maxmemory", "0".into()),
        ("maxclients", node.limits.max_connections.to_string()),
        ("timeout", node.limits.idle_timeout.as_secs().to_string()),
        ("proto-max-bulk-len", limits.max_bulk.to_string()),
        ("port", shared.settings.addr.port().to_string()),
        ("bind", shared.settings.addr.ip().to_string()),
        ("dir", node.engine.dir().display().to_string()),
        ("replica-read-only", "yes".into()),
        ("slave-read-only", "yes".into()),
        ("cluster-enabled", "no".into()),
    ];
    let mut out = Vec::new();
    for (name, value) in &params {
        if args[1..]
            .iter()
            .any(|p| glob(&p.to_ascii_lowercase(), name.as_bytes()))
        {
            out.push(Reply::bulk(*name));
            out.push(Reply::bulk(value.as_bytes()));
        }
    }
    Reply::Array(out)
}

/// Redis-style glob with `*` and `?` (no classes), iterative so any
/// pattern costs at most `pattern × text` steps.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || Some(&c) == text.get(t) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern.get(p..).unwrap_or(&[]).iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globbing() {
        assert!(glob(b"*", b"save"));
        assert!(glob(b"append*", b"appendfsync"));
        assert!(glob(b"s?ve", b"save"));
        assert!(!glob(b"save", b"saves"));
        assert!(glob(b"*only", b"appendonly"));
        assert!(!glob(b"x*", b"save"));
    }
}
