//! Writes decided from the key's current state, inside the single writer:
//! `SET` with `NX`/`XX`/`GET`/`KEEPTTL`, `EXPIRE` with `NX`/`XX`/`GT`/`LT`,
//! `PERSIST`, and the sweep's deletes of expired keys.
//!
//! The decision is made under the writer lock, against the newest state of
//! the key: records appended but not yet in the keydir (waiting for their
//! fsync) first, then the keydir. No other write can come between the
//! check and the append, from any connection or protocol, and the log
//! carries only the outcome: a put (with or without expiry), a delete, or
//! nothing at all.
//!
//! How each outcome is logged (docs/FORMAT.md says the same):
//! - `EXPIRE` (any form) that applies logs a put with expiry holding the
//!   key's current value, `PERSIST` that applies a plain put of it: the
//!   key's newest record alone gives its value and expiry, so recovery,
//!   replicas and compaction never combine two records. The cost is the
//!   value's bytes per `EXPIRE`.
//! - A write whose expiry has already passed (`EXPIRE` with a time in the
//!   past, `SET ... PXAT` in the past) logs a delete, as Redis propagates a
//!   `DEL`.
//! - A condition that fails logs nothing.
//!
//! The answer waits until the log is durable up to where it ended when the
//! decision was made, so a client never acts on a state (say, "the key
//! exists") that a crash could still undo.

use std::sync::atomic::Ordering;

use super::error::{Error, Result};
use super::files::FileTable;
use super::keydir::{hash_key, Loc};
use super::record::{self, Kind, Record};
use super::writer::{WriteOp, WriterState};
use super::{decode_in, Inner, READ_RETRIES};

/// What a `SET` does to the key's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetExpiry {
    /// No expiry: the key's old one, if any, is gone (Redis's default).
    Clear,
    /// Expire at this time (ms since the Unix epoch).
    At(u64),
    /// Keep the expiry the key has now (`KEEPTTL`).
    Keep,
}

/// When a `SET` applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetWhen {
    Always,
    /// Only if the key has no (unexpired) value: `NX`.
    Absent,
    /// Only if it has one: `XX`.
    Present,
}

/// The conditions of an `EXPIRE`, as Redis defines them; all that are set
/// must hold. A key without expiry counts as expiring never (so `GT` fails
/// on it and `LT` holds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpireIf {
    /// `NX`: the key has no expiry.
    pub no_expiry: bool,
    /// `XX`: the key has an expiry.
    pub has_expiry: bool,
    /// `GT`: the new expiry is later than the current one.
    pub later: bool,
    /// `LT`: the new expiry is sooner than the current one.
    pub sooner: bool,
}

impl ExpireIf {
    fn holds(&self, current: Option<u64>, new: u64) -> bool {
        !(self.no_expiry && current.is_some()
            || self.has_expiry && current.is_none()
            || self.later && current.is_none_or(|c| new <= c)
            || self.sooner && current.is_some_and(|c| new >= c))
    }
}

/// A write decided from the key's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conditional<'a> {
    Set {
        key: &'a [u8],
        value: &'a [u8],
        expiry: SetExpiry,
        when: SetWhen,
        /// Also answer the value the key had (`SET ... GET`).
        get: bool,
    },
    /// Sets the key's expiry (ms since the Unix epoch) if it has a value
    /// and the conditions hold. A time that has passed deletes the key.
    Expire {
        key: &'a [u8],
        at: u64,
        only_if: ExpireIf,
    },
    /// Removes the key's expiry, if it has a value and an expiry.
    Persist { key: &'a [u8] },
}

impl Conditional<'_> {
    fn key(&self) -> &[u8] {
        match *self {
            Conditional::Set { key, .. }
            | Conditional::Expire { key, .. }
            | Conditional::Persist { key } => key,
        }
    }
}

/// What a conditional write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// Whether it wrote (for `EXPIRE` and `PERSIST`: Redis's 1 or 0).
    pub applied: bool,
    /// The value the key had, when asked for (`SET ... GET`).
    pub previous: Option<Vec<u8>>,
    /// Where the log ended after the decision: the answer is durable once
    /// the log is durable up to here (replication waits for this too).
    pub end: u64,
    /// Live recoveries when it was decided: a recovery in between rolls
    /// the write back.
    pub(crate) resumes: u64,
}

/// A key's expiry, as `TTL` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyExpiry {
    /// No value (or an expired one): Redis's -2.
    Absent,
    /// A value without expiry: Redis's -1.
    Never,
    /// A value that expires at this time (ms since the Unix epoch).
    At(u64),
}

/// The key's current value and expiry, copied out under the lock.
struct Current {
    value: Vec<u8>,
    expires_at: Option<u64>,
}

/// The one record a decision logs.
enum Outcome {
    Nothing,
    Put(Option<u64>),
    Delete,
}

impl Inner {
    /// Decides and appends `op`; the caller waits for durability up to the
    /// returned end.
    pub(crate) fn decide(&self, op: &Conditional<'_>) -> Result<Decided> {
        let (key, value_len) = match *op {
            Conditional::Set { key, value, .. } => (key, value.len()),
            _ => (op.key(), 0),
        };
        record::check_lengths(key.len(), value_len)?;
        let mut st = self.writer.state.lock();
        st.check_writable()?;
        loop {
            let now = self.now_ms();
            let current = self.current_locked(&st, key, |rec| Current {
                value: rec.value.to_vec(),
                expires_at: rec.expires_at,
            })?;
            let current = current.filter(|c| c.expires_at.is_none_or(|at| at > now));
            let (outcome, previous, value) = decide(op, current.as_ref(), now);
            let write = match (&outcome, value) {
                (Outcome::Nothing, _) => None,
                (Outcome::Delete, _) => Some(WriteOp::Delete(key)),
                (Outcome::Put(None), v) => Some(WriteOp::Put(key, v)),
                (Outcome::Put(Some(at)), v) => Some(WriteOp::PutExpiring(key, v, *at)),
            };
            let Some(write) = write else {
                return Ok(Decided {
                    applied: false,
                    previous,
                    end: st.end(),
                    resumes: st.resumes,
                });
            };
            let len = write.encoded_len();
            let end_before = st.end();
            self.roll_if_full(&mut st, len)?;
            if st.end() != end_before || st.poisoned.is_some() {
                // Rolling waited without the lock: decide again.
                st.check_writable()?;
                continue;
            }
            let appended = self.append_locked(&mut st, &[write], false, now);
            self.stats.count_ops(&[write], len as u64);
            drop(st);
            self.kick_after(appended);
            return Ok(Decided {
                applied: true,
                previous,
                end: appended.end,
                resumes: appended.resumes,
            });
        }
    }

    /// Appends a delete for every key in `keys` whose current record has
    /// expired by now: the sweep's deletes, decided here so that a value
    /// written after the sweep looked is never deleted. Each is a record of
    /// its own, not a batch. Returns how many keys it deleted.
    pub(crate) fn delete_expired(&self, keys: &[Vec<u8>]) -> Result<u64> {
        let most: usize = keys.iter().map(|k| record::encoded_len(k.len(), 0)).sum();
        let mut st = self.writer.state.lock();
        st.check_writable()?;
        if !self.sweeper.active.load(Ordering::Relaxed) {
            // Turned off meanwhile: this node follows a master now.
            return Ok(0);
        }
        self.roll_if_full(&mut st, most)?;
        let now = self.now_ms();
        let mut expired = Vec::new();
        for key in keys {
            if self.current_locked(&st, key, |rec| rec.expired_at(now))? == Some(true) {
                expired.push(WriteOp::Delete(key));
            }
        }
        if expired.is_empty() {
            return Ok(0);
        }
        let appended = self.append_locked(&mut st, &expired, false, now);
        let bytes = expired.iter().map(WriteOp::encoded_len).sum::<usize>();
        self.stats.count_expired(expired.len() as u64, bytes as u64);
        drop(st);
        self.kick_after(appended);
        Ok(expired.len() as u64)
    }

    /// Calls `f` with the newest record of `key` (`None` when its newest
    /// record is a delete or it has none), as the writer sees it: records
    /// appended but not yet in the keydir first. Expiry is not looked at.
    pub(crate) fn current_locked<R>(
        &self,
        st: &WriterState,
        key: &[u8],
        f: impl FnOnce(Record<'_>) -> R,
    ) -> Result<Option<R>> {
        let hash = hash_key(key);
        let mut f = Some(f);
        let mut call = |rec: Record<'_>| (f.take().expect("called once"))(rec);
        for _ in 0..READ_RETRIES {
            let table = self.files.load();
            for op in st.pending.iter().rev().chain(st.flushing.iter().rev()) {
                if op.hash != hash {
                    continue;
                }
                // Under the lock a record not yet in the keydir is in the
                // buffer, in flight, or written: always readable.
                let bytes = bytes_locked(st, &table, op.loc).ok_or_else(|| {
                    Error::corrupt(
                        &st.active.path,
                        u64::from(op.loc.pos),
                        "appended record is not readable",
                    )
                })?;
                let rec = decode_in(&st.active.path, op.loc, bytes)?;
                if rec.key == key {
                    return Ok((op.kind == Kind::Put).then(|| call(rec)));
                }
            }
            let candidates = self.keydir.load().candidates(hash);
            // Loaded after the candidates: a file a compaction retired
            // before this load has no entry left in them.
            let table = self.files.load();
            let mut stale = false;
            for loc in candidates.iter() {
                let Some(bytes) = bytes_locked(st, &table, loc) else {
                    stale = true;
                    continue;
                };
                let path = table.get(loc.file).map_or(&st.active.path, |f| &f.path);
                let rec = decode_in(path, loc, bytes)?;
                if rec.key == key {
                    return Ok(Some(call(rec)));
                }
            }
            if !stale {
                return Ok(None);
            }
        }
        Err(Error::ReadRaced {
            attempts: READ_RETRIES,
        })
    }
}

/// The bytes of the record at `loc`, from the writer's buffers or from its
/// file; the writer lock is held, so no flusher moves them meanwhile.
fn bytes_locked<'a>(st: &'a WriterState, table: &'a FileTable, loc: Loc) -> Option<&'a [u8]> {
    if loc.file == st.active.id {
        if let Some(bytes) = st.buffered(u64::from(loc.pos), loc.len as usize) {
            return Some(bytes);
        }
    }
    table
        .get(loc.file)?
        .slice(u64::from(loc.pos), loc.len as usize)
}

/// The outcome of `op` given the key's current (unexpired) value at `now`:
/// what to log, the previous value to answer, and the value to write.
fn decide<'a>(
    op: &Conditional<'a>,
    current: Option<&'a Current>,
    now: u64,
) -> (Outcome, Option<Vec<u8>>, &'a [u8]) {
    // A put whose expiry has passed is logged as a delete.
    let put = |at: Option<u64>| match at {
        Some(at) if at <= now => Outcome::Delete,
        at => Outcome::Put(at),
    };
    match *op {
        Conditional::Set {
            value,
            expiry,
            when,
            get,
            ..
        } => {
            let previous = if get {
                current.map(|c| c.value.clone())
            } else {
                None
            };
            let applies = match when {
                SetWhen::Always => true,
                SetWhen::Absent => current.is_none(),
                SetWhen::Present => current.is_some(),
            };
            if !applies {
                return (Outcome::Nothing, previous, value);
            }
            let at = match expiry {
                SetExpiry::Clear => None,
                SetExpiry::At(at) => Some(at),
                SetExpiry::Keep => current.and_then(|c| c.expires_at),
            };
            (put(at), previous, value)
        }
        Conditional::Expire { at, only_if, .. } => match current {
            Some(c) if only_if.holds(c.expires_at, at) => (put(Some(at)), None, &c.value),
            _ => (Outcome::Nothing, None, &[]),
        },
        Conditional::Persist { .. } => match current {
            Some(c) if c.expires_at.is_some() => (Outcome::Put(None), None, &c.value),
            _ => (Outcome::Nothing, None, &[]),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expire_conditions_follow_redis() {
        let nx = ExpireIf {
            no_expiry: true,
            ..ExpireIf::default()
        };
        let xx = ExpireIf {
            has_expiry: true,
            ..ExpireIf::default()
        };
        let gt = ExpireIf {
            later: true,
            ..ExpireIf::default()
        };
        let lt = ExpireIf {
            sooner: true,
            ..ExpireIf::default()
        };
        let xx_gt = ExpireIf { later: true, ..xx };
        // (condition, current expiry, new expiry, applies)
        for (cond, current, new, applies) in [
            (ExpireIf::default(), None, 5, true),
            (ExpireIf::default(), Some(9), 5, true),
            (nx, None, 5, true),
            (nx, Some(9), 5, false),
            (xx, None, 5, false),
            (xx, Some(9), 5, true),
            // No expiry counts as "never": GT fails, LT holds.
            (gt, None, 5, false),
            (gt, Some(4), 5, true),
            (gt, Some(5), 5, false),
            (lt, None, 5, true),
            (lt, Some(6), 5, true),
            (lt, Some(5), 5, false),
            (xx_gt, None, 5, false),
            (xx_gt, Some(4), 5, true),
        ] {
            assert_eq!(
                cond.holds(current, new),
                applies,
                "{cond:?} {current:?} {new}"
            );
        }
    }

    #[test]
    fn outcomes_are_what_the_log_carries() {
        let now = 1_000;
        let with = |expires_at| Current {
            value: b"old".to_vec(),
            expires_at,
        };
        let set = |expiry, when, get| Conditional::Set {
            key: b"k",
            value: b"new",
            expiry,
            when,
            get,
        };
        let persistent = with(None);
        let expiring = with(Some(5_000));
        let outcome = |op: Conditional<'_>, cur: Option<&Current>| {
            let (o, prev, v) = decide(&op, cur, now);
            let o = match o {
                Outcome::Nothing => "nothing".to_string(),
                Outcome::Delete => "delete".to_string(),
                Outcome::Put(at) => format!("put {at:?}"),
            };
            (o, prev, v.to_vec())
        };
        assert_eq!(
            outcome(set(SetExpiry::Keep, SetWhen::Always, true), Some(&expiring)),
            (
                "put Some(5000)".into(),
                Some(b"old".to_vec()),
                b"new".to_vec()
            )
        );
        assert_eq!(
            outcome(set(SetExpiry::Keep, SetWhen::Always, false), None).0,
            "put None"
        );
        assert_eq!(
            outcome(
                set(SetExpiry::Clear, SetWhen::Absent, true),
                Some(&persistent)
            ),
            ("nothing".into(), Some(b"old".to_vec()), b"new".to_vec())
        );
        assert_eq!(
            outcome(
                set(SetExpiry::At(now), SetWhen::Present, false),
                Some(&persistent)
            )
            .0,
            "delete"
        );
        let expire = |at| Conditional::Expire {
            key: b"k",
            at,
            only_if: ExpireIf::default(),
        };
        assert_eq!(
            outcome(expire(2_000), Some(&persistent)),
            ("put Some(2000)".into(), None, b"old".to_vec())
        );
        assert_eq!(outcome(expire(now), Some(&persistent)).0, "delete");
        assert_eq!(outcome(expire(2_000), None).0, "nothing");
        let persist = Conditional::Persist { key: b"k" };
        assert_eq!(
            outcome(persist, Some(&expiring)),
            ("put None".into(), None, b"old".to_vec())
        );
        assert_eq!(outcome(persist, Some(&persistent)).0, "nothing");
    }
}
