//! Engine options, each with its default, validated at open.

use std::sync::Arc;
use std::time::Duration;

use super::clock::Clock;
use super::error::{Error, Result};
use super::fault::Faults;

/// When an acknowledged write is on stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// A write is acknowledged only after the fdatasync that covers it.
    /// Concurrent writers share fsyncs (group commit). Loses nothing.
    #[default]
    Always,
    /// Writes are acknowledged once buffered; the log is handed to the OS
    /// continuously and fsynced every interval. A power loss or kernel crash
    /// can lose up to one interval; a process crash can lose the writes
    /// still in the process's buffer (microseconds of work).
    Interval(Duration),
    /// Like `Interval` without the periodic fsync: the OS writes the pages
    /// back when it likes (fsyncs still happen at segment rolls and at
    /// close). A power loss can lose anything not yet written back.
    Never,
}

impl Durability {
    /// The policy's name as `--durability` spells it: `always`,
    /// `interval` or `never`.
    pub fn name(&self) -> &'static str {
        match self {
            Durability::Always => "always",
            Durability::Interval(_) => "interval",
            Durability::Never => "never",
        }
    }
}

/// When the background compactor merges the sealed prefix on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactionPolicy {
    /// Run only when at least this fraction of all data bytes is dead
    /// (overwritten, deleted, tombstones). Default 0.5.
    pub min_dead_ratio: f64,
    /// ... and at least this many bytes are dead. Default 64 MiB.
    pub min_dead_bytes: u64,
    /// How often the policy is checked; `None` disables background
    /// compaction (on-demand `compact` still works). Default 30 s.
    pub check_every: Option<Duration>,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            min_dead_ratio: 0.5,
            min_dead_bytes: 64 * 1024 * 1024,
            check_every: Some(Duration::from_secs(30)),
        }
    }
}

/// How the engine removes keys whose expiry has passed.
///
/// Expired keys read as absent at once, on every node. Removing them (a
/// delete record in the log, the index entry gone) is the master's job:
/// an engine *expires keys* only while [`ExpiryPolicy::active`] is set,
/// or after [`super::Engine::set_expiring`] turned it on (replication
/// does so when the node becomes master, and turns it off on a replica,
/// whose deletes come from its master).
#[derive(Debug, Clone, PartialEq)]
pub struct ExpiryPolicy {
    /// Whether the engine starts out expiring keys. Default false.
    pub active: bool,
    /// How often the sweep looks for keys whose expiry passed; `None`
    /// disables the background sweep (`Engine::expire_due` still works).
    /// Default 100 ms.
    pub sweep_every: Option<Duration>,
    /// Fraction of one core the sweep may use: each round stops after
    /// `sweep_every × cpu_budget` of work and leaves the rest for the next
    /// round. Default 0.25 (Redis's active expiry uses the same share).
    pub cpu_budget: f64,
}

impl Default for ExpiryPolicy {
    fn default() -> Self {
        ExpiryPolicy {
            active: false,
            sweep_every: Some(Duration::from_millis(100)),
            cpu_budget: 0.25,
        }
    }
}

/// Smallest accepted segment size (tests use tiny segments).
pub const MIN_SEGMENT_BYTES: u64 = 4096;
/// Largest accepted segment size: record positions are 32-bit and one
/// append may overshoot the limit by up to [`super::record::MAX_APPEND_BYTES`].
pub const MAX_SEGMENT_BYTES: u64 = 2 * 1024 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Options {
    /// Default [`Durability::Always`].
    pub durability: Durability,
    /// The active segment is sealed and a new one started once it holds
    /// this many bytes. Default 1 GiB; between 4 KiB and 2 GiB.
    pub segment_max_bytes: u64,
    /// Default: see [`CompactionPolicy`].
    pub compaction: CompactionPolicy,
    /// Default: see [`ExpiryPolicy`].
    pub expiry: ExpiryPolicy,
    /// The wall clock expiry is measured on. Default: the system clock;
    /// tests use a [`super::ManualClock`].
    pub clock: Clock,
    /// Fault injection for tests; `None` in production.
    pub faults: Option<Arc<Faults>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Always,
            segment_max_bytes: 1024 * 1024 * 1024,
            compaction: CompactionPolicy::default(),
            expiry: ExpiryPolicy::default(),
            clock: Clock::system(),
            faults: None,
        }
    }
}

impl Options {
    /// Checks every option, naming the first one that is out of range.
    pub fn validate(&self) -> Result<()> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_max_bytes) {
            return Err(Error::InvalidOption {
                name: "segment_max_bytes",
                reason: format!(
                    "{} is outside {MIN_SEGMENT_BYTES}..={MAX_SEGMENT_BYTES}",
                    self.segment_max_bytes
                ),
            });
        }
        if let Durability::Interval(d) = self.durability {
            if d.is_zero() || d > Duration::from_secs(3600) {
                return Err(Error::InvalidOption {
                    name: "durability interval",
                    reason: format!("{d:?} is not between 1 ms and 1 hour"),
                });
            }
        }
        let ratio = self.compaction.min_dead_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(Error::InvalidOption {
                name: "compaction.min_dead_ratio",
                reason: format!("{ratio} is not between 0 and 1"),
            });
        }
        if self.compaction.check_every.is_some_and(|d| d.is_zero()) {
            return Err(Error::InvalidOption {
                name: "compaction.check_every",
                reason: "must be greater than zero".into(),
            });
        }
        if self.expiry.sweep_every.is_some_and(|d| d.is_zero()) {
            return Err(Error::InvalidOption {
                name: "expiry.sweep_every",
                reason: "must be greater than zero".into(),
            });
        }
        let budget = self.expiry.cpu_budget;
        if !(budget > 0.0 && budget <= 1.0) {
            return Err(Error::InvalidOption {
                name: "expiry.cpu_budget",
                reason: format!("{budget} is not above 0 and at most 1"),
            });
        }
        Ok(())
    }
}
