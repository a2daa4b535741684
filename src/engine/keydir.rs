//! The keydir: the in-memory index from key to the location of its newest
//! record.
//!
//! To keep the per-key cost small the keydir does not hold keys. Each entry
//! is 16 bytes: 32 bits of the key's hash (the *fingerprint*) and the
//! record's location (file id, position, length). The rest of the 64-bit
//! hash picks one of [`SHARDS`] shards, each a table of its own
//! ([`table`]: one cache line per look-up, which a caller can ask for
//! ahead of time, [`KeyDir::prefetch`]). Two keys can share a fingerprint, so
//! every match is confirmed by comparing the key stored in the record on
//! disk (a read through the memory map); the `is_key` callbacks do that.
//! This is the layout of FASTER's hash index: the log holds the keys.
//!
//! Invariants: at most one entry per distinct key; an entry always points at
//! a complete put record whose bytes are readable (for the `always`
//! durability policy: durable) or in the writer's buffer. Keys with an
//! expiry also have an entry in the side index [`KeyDir::expiries`], kept
//! by the same apply paths; an entry here says nothing about expiry (the
//! record does), so keys without expiry cost nothing more.

mod table;

use parking_lot::{RwLock, RwLockWriteGuard};
use xxhash_rust::xxh3::xxh3_64;

use super::expiries::ExpiryIndex;
use table::{Slot, Table};

/// Number of independently locked shards.
pub const SHARDS: usize = 64;
const SHARD_BITS: u32 = SHARDS.trailing_zeros();

/// Where a record lives: the in-memory id of its data file, its position in
/// that file and its encoded length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Loc {
    pub file: u32,
    pub pos: u32,
    pub len: u32,
}

/// A key's 64-bit hash: the shard and fingerprint come from it, and hint
/// files store it. xxh3 is specified and stable across versions and
/// platforms, which the hint format depends on.
pub fn hash_key(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// The shard a key's hash belongs to.
pub fn shard_of(hash: u64) -> usize {
    (hash >> (64 - SHARD_BITS)) as usize
}

fn fingerprint(hash: u64) -> u32 {
    hash as u32
}

/// Candidate locations for one key, most of the time exactly one.
#[derive(Default)]
pub struct Candidates {
    first: Option<Loc>,
    rest: Vec<Loc>,
}

impl Candidates {
    fn push(&mut self, loc: Loc) {
        if self.first.is_none() {
            self.first = Some(loc);
        } else {
            self.rest.push(loc);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Loc> + '_ {
        self.first.iter().copied().chain(self.rest.iter().copied())
    }
}

/// A shard's lock on a cache line of its own: readers of two shards on two
/// CPUs do not take the same line from each other.
#[repr(align(64))]
#[derive(Default)]
struct Shard(RwLock<Table>);

pub struct KeyDir {
    shards: Box<[Shard]>,
    /// The keys that have an expiry, by expiry time.
    pub expiries: ExpiryIndex,
}

impl Default for KeyDir {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyDir {
    pub fn new() -> Self {
        KeyDir {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            expiries: ExpiryIndex::default(),
        }
    }

    /// Every location whose fingerprint matches `hash`; the caller confirms
    /// the key by reading the record.
    pub fn candidates(&self, hash: u64) -> Candidates {
        let mut out = Candidates::default();
        for slot in self.shard(hash).read().matching(fingerprint(hash)) {
            out.push(slot.loc);
        }
        out
    }

    /// Asks the CPU to load the part of the index a look-up of `hash`
    /// reads first, and returns without waiting for it: a caller with
    /// several keys at hand prefetches them all, then looks them up.
    pub fn prefetch(&self, hash: u64) {
        self.shard(hash).read().prefetch(fingerprint(hash));
    }

    fn shard(&self, hash: u64) -> &RwLock<Table> {
        &self.shards[shard_of(hash)].0
    }

    /// Points the key at `loc`, returning the location it replaced.
    /// `is_key(existing)` must say whether a record at `existing` holds the
    /// same key (it is called only for fingerprint matches).
    pub fn insert(&self, hash: u64, loc: Loc, is_key: impl FnMut(Loc) -> bool) -> Option<Loc> {
        insert_in(&mut self.shard(hash).write(), hash, loc, is_key)
    }

    /// Removes the key, returning where its record was.
    pub fn remove(&self, hash: u64, is_key: impl FnMut(Loc) -> bool) -> Option<Loc> {
        remove_in(&mut self.shard(hash).write(), hash, is_key)
    }

    /// Holds shard `shard` for filling while the index is built at open,
    /// with room for `additional` more entries: the inserts then take no
    /// lock each and never grow the table.
    pub fn fill_shard(&self, shard: usize, additional: usize) -> ShardFill<'_> {
        let mut table = self.shards[shard].0.write();
        table.reserve(additional);
        ShardFill {
            shard,
            table,
            expiries: &self.expiries,
        }
    }

    /// Moves an entry from `old` to `new` only if it still points at `old`
    /// (compaction uses this: a key written meanwhile keeps its new value).
    pub fn replace_if(&self, hash: u64, old: Loc, new: Loc) -> bool {
        let mut shard = self.shard(hash).write();
        match shard.find_mut(fingerprint(hash), |s| s.loc == old) {
            Some(slot) => {
                slot.loc = new;
                true
            }
            None => false,
        }
    }

    /// Removes the entry only if it still points at `loc` (compaction
    /// dropping an expired record: a key written meanwhile stays).
    pub fn remove_if(&self, hash: u64, loc: Loc) -> bool {
        let mut shard = self.shard(hash).write();
        shard.remove(fingerprint(hash), |s| s.loc == loc).is_some()
    }

    /// Whether the record at `loc` is the newest for its key.
    pub fn is_current(&self, hash: u64, loc: Loc) -> bool {
        let shard = self.shard(hash).read();
        shard.find(fingerprint(hash), |s| s.loc == loc).is_some()
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.read().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held by the index tables.
    pub fn allocated_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.read().allocation_size())
            .sum()
    }

    /// Calls `f` with every location, shard by shard (shards are locked one
    /// at a time, so concurrent writes may or may not be seen).
    pub fn for_each(&self, mut f: impl FnMut(Loc)) {
        for shard in self.shards.iter() {
            for slot in shard.0.read().iter() {
                f(slot.loc);
            }
        }
    }
}

fn insert_in(
    table: &mut Table,
    hash: u64,
    loc: Loc,
    mut is_key: impl FnMut(Loc) -> bool,
) -> Option<Loc> {
    let fp = fingerprint(hash);
    if let Some(slot) = table.find_mut(fp, |s| is_key(s.loc)) {
        return Some(std::mem::replace(&mut slot.loc, loc));
    }
    table.insert_unique(Slot { fp, loc });
    None
}

fn remove_in(table: &mut Table, hash: u64, mut is_key: impl FnMut(Loc) -> bool) -> Option<Loc> {
    table
        .remove(fingerprint(hash), |s| is_key(s.loc))
        .map(|s| s.loc)
}

/// Where index changes go: the keydir itself (each change takes its
/// shard's lock), or one shard held by [`KeyDir::fill_shard`].
pub trait Slots {
    /// As [`KeyDir::insert`].
    fn insert(&mut self, hash: u64, loc: Loc, is_key: &mut dyn FnMut(Loc) -> bool) -> Option<Loc>;
    /// As [`KeyDir::remove`].
    fn remove(&mut self, hash: u64, is_key: &mut dyn FnMut(Loc) -> bool) -> Option<Loc>;
    /// The side index of keys with an expiry.
    fn expiries(&self) -> &ExpiryIndex;
}

impl Slots for &KeyDir {
    fn insert(&mut self, hash: u64, loc: Loc, is_key: &mut dyn FnMut(Loc) -> bool) -> Option<Loc> {
        KeyDir::insert(self, hash, loc, is_key)
    }

    fn remove(&mut self, hash: u64, is_key: &mut dyn FnMut(Loc) -> bool) -> Option<Loc> {
        KeyDir::remove(self, hash, is_key)
    }

    fn expiries(&self) -> &ExpiryIndex {
        &self.expiries
    }
}

/// One shard held for writing while the index is built at open. Every
/// hash given to it must belong to its shard ([`shard_of`]).
pub struct ShardFill<'a> {
    shard: usize,
    table: RwLockWriteGuard<'a, Table>,
    expiries: &'a ExpiryIndex,
}

impl Slots for ShardFill<'_> {
    fn insert(&mut self, hash: u64, loc: Loc, is_key: &mut dyn FnMut(Loc) -> bool) -> Option<Loc> {
        debug_assert_eq!(shard_of(hash), self.shard);
        insert_in(&mut self.table, hash, loc, is_key)
    }

    fn remove(&mut self, hash: u64, is_key: &mut dyn FnMut(Loc) -> bool) -> Option<Loc> {
        debug_assert_eq!(shard_of(hash), self.shard);
        remove_in(&mut self.table, hash, is_key)
    }

    fn expiries(&self) -> &ExpiryIndex {
        self.expiries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(file: u32, pos: u32) -> Loc {
        Loc { file, pos, len: 10 }
    }

    #[test]
    fn colliding_fingerprints_are_told_apart_by_the_key_check() {
        let kd = KeyDir::new();
        // Two "keys" forced onto the same hash; the key check tells them
        // apart by location, as the engine does by reading the record.
        let h = 0xdead_beef_u64;
        let key_of = |l: Loc| l.file; // file 1 holds key A, file 2 key B
        assert_eq!(kd.insert(h, loc(1, 0), |_| false), None);
        assert_eq!(kd.insert(h, loc(2, 0), |l| key_of(l) == 2), None);
        assert_eq!(kd.len(), 2);
        // Overwrite key A only.
        assert_eq!(
            kd.insert(h, loc(1, 50), |l| key_of(l) == 1),
            Some(loc(1, 0))
        );
        let cands: Vec<_> = kd.candidates(h).iter().collect();
        assert_eq!(cands.len(), 2);
        assert!(cands.contains(&loc(1, 50)) && cands.contains(&loc(2, 0)));
        assert_eq!(kd.remove(h, |l| key_of(l) == 2), Some(loc(2, 0)));
        assert_eq!(kd.len(), 1);
    }

    #[test]
    fn replace_if_only_moves_the_current_location() {
        let kd = KeyDir::new();
        let h = hash_key(b"k");
        kd.insert(h, loc(1, 0), |_| true);
        assert!(!kd.replace_if(h, loc(1, 99), loc(3, 0)));
        assert!(kd.replace_if(h, loc(1, 0), loc(3, 0)));
        assert!(kd.is_current(h, loc(3, 0)));
        assert!(!kd.is_current(h, loc(1, 0)));
        assert!(!kd.remove_if(h, loc(1, 0)));
        assert!(kd.remove_if(h, loc(3, 0)));
        assert!(kd.is_empty());
    }

    #[test]
    fn a_shard_lock_has_its_cache_line() {
        assert_eq!(std::mem::align_of::<Shard>(), 64);
    }
}
