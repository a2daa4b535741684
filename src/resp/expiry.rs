//! The RESP commands that set, read or clear a key's expiry, and `SET`
//! with its options: `SET k v [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`,
//! `SETEX`, `PSETEX`, `EXPIRE`/`PEXPIRE`/`EXPIREAT`/`PEXPIREAT`
//! `[NX|XX|GT|LT]`, `TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME`, `PERSIST`.
//!
//! Parsing follows Redis 7's replies, errors included. Relative times are
//! turned into absolute ones (ms since the Unix epoch) on the engine's
//! clock here; every conditional form is then decided inside the engine's
//! single writer ([`crate::engine::Conditional`]), so no write from any
//! connection or protocol can come between its check and its write, and
//! the log carries only the outcome.

use bytes::Bytes;

use super::parse::Args;
use super::reply::{from_response, Reply};
use crate::engine::{Conditional, ExpireIf, KeyExpiry, SetExpiry, SetWhen};
use crate::node::execute;
use crate::node::Node;

const NOT_AN_INTEGER: &str = "value is not an integer or out of range";

/// A Redis integer argument.
fn integer(arg: &[u8]) -> Result<i64, Reply> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| Reply::err(NOT_AN_INTEGER))
}

/// The unit of a time argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Seconds from now (`EX`, `EXPIRE`, `SETEX`).
    Seconds,
    /// Milliseconds from now (`PX`, `PEXPIRE`, `PSETEX`).
    Millis,
    /// Unix time in seconds (`EXAT`, `EXPIREAT`).
    UnixSeconds,
    /// Unix time in milliseconds (`PXAT`, `PEXPIREAT`).
    UnixMillis,
}

/// The absolute expiry (ms since the Unix epoch) that `n` in `unit` means
/// at `now`; a time before the epoch is 0 (long past). `None` when it
/// overflows, which Redis reports as an invalid expire time.
fn absolute(n: i64, unit: Unit, now: u64) -> Option<u64> {
    let ms = match unit {
        Unit::Seconds | Unit::UnixSeconds => i128::from(n).checked_mul(1000)?,
        Unit::Millis | Unit::UnixMillis => i128::from(n),
    };
    let at = match unit {
        Unit::Seconds | Unit::Millis => ms.checked_add(i128::from(now))?,
        Unit::UnixSeconds | Unit::UnixMillis => ms,
    };
    // Redis keeps expiries in a signed 64-bit millisecond count.
    if at > i128::from(i64::MAX) {
        return None;
    }
    Some(u64::try_from(at).unwrap_or(0))
}

fn invalid_expire(command: &str) -> Reply {
    Reply::err(format!("invalid expire time in '{command}' command"))
}

/// `SET key value [NX|XX] [GET] [EX|PX|EXAT|PXAT n | KEEPTTL]`.
pub async fn set(node: &Node, args: &Args) -> Reply {
    let (key, value) = (&args[1], &args[2]);
    let mut when = SetWhen::Always;
    let mut get = false;
    let mut expiry: Option<(Unit, &Bytes)> = None;
    let mut keep = false;
    let mut rest = args[3..].iter();
    while let Some(opt) = rest.next() {
        let upper = opt.to_ascii_uppercase();
        let unit = match &upper[..] {
            b"NX" if when != SetWhen::Present => {
                when = SetWhen::Absent;
                continue;
            }
            b"XX" if when != SetWhen::Absent => {
                when = SetWhen::Present;
                continue;
            }
            b"GET" => {
                get = true;
                continue;
            }
            b"KEEPTTL" if expiry.is_none() => {
                keep = true;
                continue;
            }
            b"EX" => Unit::Seconds,
            b"PX" => Unit::Millis,
            b"EXAT" => Unit::UnixSeconds,
            b"PXAT" => Unit::UnixMillis,
            _ => return Reply::err("syntax error"),
        };
        match rest.next() {
            Some(n) if expiry.is_none() && !keep => expiry = Some((unit, n)),
            _ => return Reply::err("syntax error"),
        }
    }
    let expiry = match expiry {
        None if keep => SetExpiry::Keep,
        None => SetExpiry::Clear,
        Some((unit, n)) => {
            let n = match integer(n) {
                Ok(n) => n,
                Err(reply) => return reply,
            };
            match absolute(n, unit, node.engine.now_ms()) {
                Some(at) if n > 0 => SetExpiry::At(at),
                _ => return invalid_expire("set"),
            }
        }
    };
    let op = Conditional::Set {
        key,
        value,
        expiry,
        when,
        get,
    };
    match execute::decide(node, &op).await {
        Ok(decided) if get => decided.previous.map_or(Reply::Nil, Reply::Bulk),
        Ok(decided) if decided.applied => Reply::ok(),
        Ok(_) => Reply::Nil,
        Err(answer) => from_response(answer),
    }
}

/// `SETEX key seconds value`, `PSETEX key milliseconds value`.
pub async fn setex(node: &Node, args: &Args, unit: Unit) -> Reply {
    let command = if unit == Unit::Seconds {
        "setex"
    } else {
        "psetex"
    };
    let n = match integer(&args[2]) {
        Ok(n) => n,
        Err(reply) => return reply,
    };
    let at = match absolute(n, unit, node.engine.now_ms()) {
        Some(at) if n > 0 => at,
        _ => return invalid_expire(command),
    };
    let op = Conditional::Set {
        key: &args[1],
        value: &args[3],
        expiry: SetExpiry::At(at),
        when: SetWhen::Always,
        get: false,
    };
    match execute::decide(node, &op).await {
        Ok(_) => Reply::ok(),
        Err(answer) => from_response(answer),
    }
}

/// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT key n [NX|XX|GT|LT]`.
pub async fn expire(node: &Node, command: &str, args: &Args) -> Reply {
    let unit = match command {
        "expire" => Unit::Seconds,
        "pexpire" => Unit::Millis,
        "expireat" => Unit::UnixSeconds,
        _ => Unit::UnixMillis,
    };
    let n = match integer(&args[2]) {
        Ok(n) => n,
        Err(reply) => return reply,
    };
    let mut only_if = ExpireIf::default();
    for opt in &args[3..] {
        match &opt.to_ascii_uppercase()[..] {
            b"NX" => only_if.no_expiry = true,
            b"XX" => only_if.has_expiry = true,
            b"GT" => only_if.later = true,
            b"LT" => only_if.sooner = true,
            other => {
                return Reply::err(format!(
                    "Unsupported option {}",
                    String::from_utf8_lossy(other)
                ))
            }
        }
    }
    if only_if.no_expiry && (only_if.has_expiry || only_if.later || only_if.sooner) {
        return Reply::err("NX and XX, GT or LT options at the same time are not compatible");
    }
    if only_if.later && only_if.sooner {
        return Reply::err("GT and LT options at the same time are not compatible");
    }
    let Some(at) = absolute(n, unit, node.engine.now_ms()) else {
        return invalid_expire(command);
    };
    let op = Conditional::Expire {
        key: &args[1],
        at,
        only_if,
    };
    match execute::decide(node, &op).await {
        Ok(decided) => Reply::Int(i64::from(decided.applied)),
        Err(answer) => from_response(answer),
    }
}

/// `PERSIST key`.
pub async fn persist(node: &Node, args: &Args) -> Reply {
    match execute::decide(node, &Conditional::Persist { key: &args[1] }).await {
        Ok(decided) => Reply::Int(i64::from(decided.applied)),
        Err(answer) => from_response(answer),
    }
}

/// `TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME key`: -2 for no key, -1 for
/// no expiry.
pub fn ttl(node: &Node, command: &str, key: &[u8]) -> Reply {
    let at = match node.engine.expiry(key) {
        Ok(KeyExpiry::Absent) => return Reply::Int(-2),
        Ok(KeyExpiry::Never) => return Reply::Int(-1),
        Ok(KeyExpiry::At(at)) => at,
        Err(e) => return from_response(execute::engine_error(e)),
    };
    let left = at.saturating_sub(node.engine.now_ms());
    let n = match command {
        // Redis rounds the seconds left to the nearest.
        "ttl" => left.saturating_add(500) / 1000,
        "pttl" => left,
        "expiretime" => at / 1000,
        _ => at,
    };
    Reply::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_become_absolute_or_are_refused() {
        let now = 1_000_000;
        assert_eq!(absolute(5, Unit::Seconds, now), Some(1_005_000));
        assert_eq!(absolute(5, Unit::Millis, now), Some(1_000_005));
        assert_eq!(absolute(7, Unit::UnixSeconds, now), Some(7_000));
        assert_eq!(absolute(7, Unit::UnixMillis, now), Some(7));
        // In the past: a time before the epoch is simply long past.
        assert_eq!(absolute(-5, Unit::Seconds, now), Some(995_000));
        assert_eq!(absolute(-2_000, Unit::Seconds, now), Some(0));
        assert_eq!(absolute(-1, Unit::UnixMillis, now), Some(0));
        // Overflow of Redis's signed millisecond count.
        assert_eq!(absolute(i64::MAX, Unit::Seconds, now), None);
        assert_eq!(absolute(i64::MAX / 1000 + 1, Unit::UnixSeconds, now), None);
        assert_eq!(absolute(i64::MAX, Unit::Millis, now), None);
        assert_eq!(
            absolute(i64::MAX, Unit::UnixMillis, now),
            Some(i64::MAX as u64)
        );
    }

    #[test]
    fn integers_are_strict() {
        assert_eq!(integer(b"-12"), Ok(-12));
        for bad in [&b"1.5"[..], b"", b" 1", b"9223372036854775808", b"ten"] {
            assert_eq!(integer(bad), Err(Reply::err(NOT_AN_INTEGER)), "{bad:?}");
        }
    }
}
