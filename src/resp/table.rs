//! The commands the RESP front end knows: name, arity and key positions in
//! Redis's conventions (used for arity errors and `COMMAND`), and the
//! metrics label each one is counted under.
//!
//! Arity as Redis defines it: `n > 0` means exactly `n` arguments (the
//! name included), `n < 0` at least `-n`.

use super::reply::Reply;

/// One command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// Lower-case name.
    pub name: &'static str,
    pub arity: i64,
    pub flags: &'static [&'static str],
    pub first_key: i64,
    pub last_key: i64,
    pub step: i64,
    /// The `op` label in `kvstore_requests_total`.
    pub op: &'static str,
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    op: &'static str,
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
        op,
    }
}

const NONE: (i64, i64, i64) = (0, 0, 0);

/// Every supported command.
pub const COMMANDS: &[Spec] = &[
    spec("ping", -1, &["fast", "stale"], NONE, "resp_ping"),
    spec("echo", 2, &["fast", "stale"], NONE, "resp_echo"),
    spec("get", 2, &["readonly", "fast"], (1, 1, 1), "resp_get"),
    spec("set", -3, &["write", "denyoom"], (1, 1, 1), "resp_set"),
    spec("del", -2, &["write"], (1, -1, 1), "resp_del"),
    spec(
        "exists",
        -2,
        &["readonly", "fast"],
        (1, -1, 1),
        "resp_exists",
    ),
    spec("mget", -2, &["readonly", "fast"], (1, -1, 1), "resp_mget"),
    spec("mset", -3, &["write", "denyoom"], (1, -1, 2), "resp_mset"),
    spec("dbsize", 1, &["readonly", "fast"], NONE, "resp_dbsize"),
    spec("info", -1, &["loading", "stale"], NONE, "resp_info"),
    spec("command", -1, &["loading", "stale"], NONE, "resp_command"),
    spec(
        "config",
        -2,
        &["admin", "loading", "stale"],
        NONE,
        "resp_config",
    ),
    spec(
        "select",
        2,
        &["loading", "stale", "fast"],
        NONE,
        "resp_select",
    ),
    spec("quit", -1, &["fast", "stale"], NONE, "resp_quit"),
    spec("client", -2, &["loading", "stale"], NONE, "resp_client"),
    spec("hello", -1, &["fast", "stale"], NONE, "resp_hello"),
    spec("setex", 4, &["write", "denyoom"], (1, 1, 1), "resp_setex"),
    spec("psetex", 4, &["write", "denyoom"], (1, 1, 1), "resp_psetex"),
    spec("expire", -3, &["write", "fast"], (1, 1, 1), "resp_expire"),
    spec("pexpire", -3, &["write", "fast"], (1, 1, 1), "resp_pexpire"),
    spec(
        "expireat",
        -3,
        &["write", "fast"],
        (1, 1, 1),
        "resp_expireat",
    ),
    spec(
        "pexpireat",
        -3,
        &["write", "fast"],
        (1, 1, 1),
        "resp_pexpireat",
    ),
    spec("persist", 2, &["write", "fast"], (1, 1, 1), "resp_persist"),
    spec("ttl", 2, &["readonly", "fast"], (1, 1, 1), "resp_ttl"),
    spec("pttl", 2, &["readonly", "fast"], (1, 1, 1), "resp_pttl"),
    spec(
        "expiretime",
        2,
        &["readonly", "fast"],
        (1, 1, 1),
        "resp_expiretime",
    ),
    spec(
        "pexpiretime",
        2,
        &["readonly", "fast"],
        (1, 1, 1),
        "resp_pexpiretime",
    ),
];

/// Label for commands not in [`COMMANDS`].
pub const UNKNOWN_OP: &str = "resp_unknown";

/// The spec of `name`, case-insensitively.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    COMMANDS
        .iter()
        .find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether `argc` arguments (name included) fit `spec`'s arity.
pub fn arity_ok(spec: &Spec, argc: usize) -> bool {
    let argc = i64::try_from(argc).unwrap_or(i64::MAX);
    if spec.arity >= 0 {
        argc == spec.arity
    } else {
        argc >= -spec.arity
    }
}

/// `COMMAND INFO`'s entry for `spec` (the Redis 7 ten-field shape).
pub fn info(spec: &Spec) -> Reply {
    let strings = |v: &[&str]| Reply::Array(v.iter().map(|s| Reply::bulk(*s)).collect());
    Reply::Array(vec![
        Reply::bulk(spec.name),
        Reply::Int(spec.arity),
        Reply::Array(spec.flags.iter().map(|f| Reply::Status(f)).collect()),
        Reply::Int(spec.first_key),
        Reply::Int(spec.last_key),
        Reply::Int(spec.step),
        strings(&[]),
        strings(&[]),
        strings(&[]),
        strings(&[]),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_arity() {
        let set = lookup(b"SeT").unwrap();
        assert!(!arity_ok(set, 2));
        assert!(arity_ok(set, 5));
        let get = lookup(b"GET").unwrap();
        assert!(arity_ok(get, 2) && !arity_ok(get, 3));
        assert!(lookup(b"flushall").is_none());
    }
}
