//! The side index of keys that have an expiry: which keys expire when, so
//! that the sweep finds the keys whose time has come without scanning the
//! keydir.
//!
//! Keys without expiry have no entry here and cost nothing: the keydir
//! slot stays 16 bytes. A key with expiry has one entry, its 64-bit key
//! hash in the bucket of its expiry time (buckets of [`BUCKET_MS`]), so the
//! sweep takes the buckets that are due, oldest first, and visits exactly
//! the keys in them.
//!
//! Invariants:
//! - The entry of a key is added when its put with expiry enters the
//!   keydir and removed when that record is replaced or deleted there
//!   (the keydir's apply paths read the old record's expiry anyway, to
//!   confirm its key). So there is at most one entry per key and record.
//! - The index is a hint, never the truth: the sweep reads each record and
//!   deletes a key only if its current record has expired. An entry that
//!   is stale (a bucket taken by the sweep while the key was rewritten) is
//!   dropped when its bucket comes due. Two keys with the same 64-bit hash
//!   and the same bucket share one entry (odds of about 2^-64 per pair):
//!   the sweep visits both, but removing one key's entry removes the
//!   other's, which then waits for a compaction on a replica, or for its
//!   next write.

use std::collections::BTreeMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hashbrown::HashSet;
use parking_lot::Mutex;

use super::idhash::IdHasher;

/// Width of one bucket: how late, at most, the sweep sees that a key is
/// due (it takes a bucket once the bucket's end has passed).
pub const BUCKET_MS: u64 = 100;

/// Key hashes are xxh3 outputs, already well mixed: [`IdHasher`] keeps
/// them as they are.
type Bucket = HashSet<u64, BuildHasherDefault<IdHasher>>;

/// Key hashes by expiry bucket.
#[derive(Default)]
pub struct ExpiryIndex {
    buckets: Mutex<BTreeMap<u64, Bucket>>,
    len: AtomicU64,
}

/// Keys (by hash) whose bucket is due, taken out of the index.
pub struct Due {
    pub bucket: u64,
    pub hashes: Vec<u64>,
}

impl ExpiryIndex {
    /// Records that the key with `hash` expires at `at` (ms).
    pub fn add(&self, hash: u64, at: u64) {
        let mut buckets = self.buckets.lock();
        if buckets.entry(at / BUCKET_MS).or_default().insert(hash) {
            self.len.fetch_add(1, Relaxed);
        }
    }

    /// Forgets the entry of the key with `hash` that expired at `at`.
    pub fn remove(&self, hash: u64, at: u64) {
        let bucket = at / BUCKET_MS;
        let mut buckets = self.buckets.lock();
        let Some(set) = buckets.get_mut(&bucket) else {
            return;
        };
        if set.remove(&hash) {
            self.len.fetch_sub(1, Relaxed);
        }
        if set.is_empty() {
            buckets.remove(&bucket);
        }
    }

    /// Takes the oldest bucket whose every expiry is at or before `now`.
    pub fn take_due(&self, now: u64) -> Option<Due> {
        let mut buckets = self.buckets.lock();
        let entry = buckets.first_entry()?;
        // The bucket holds expiries in [b, b + 1) × BUCKET_MS.
        if (entry.key() + 1).saturating_mul(BUCKET_MS) > now.saturating_add(1) {
            return None;
        }
        let (bucket, set) = entry.remove_entry();
        self.len.fetch_sub(set.len() as u64, Relaxed);
        Some(Due {
            bucket,
            hashes: set.into_iter().collect(),
        })
    }

    /// Puts back what a sweep took but did not get to.
    pub fn restore(&self, bucket: u64, hashes: impl IntoIterator<Item = u64>) {
        let mut buckets = self.buckets.lock();
        let set = buckets.entry(bucket).or_default();
        let before = set.len();
        set.extend(hashes);
        self.len.fetch_add((set.len() - before) as u64, Relaxed);
        if set.is_empty() {
            buckets.remove(&bucket);
        }
    }

    /// Entries (keys with expiry, give or take the rare stale one).
    pub fn len(&self) -> u64 {
        self.len.load(Relaxed)
    }

    /// Entries whose bucket is due at `now` (the sweep's backlog).
    pub fn due(&self, now: u64) -> u64 {
        let last_due = (now.saturating_add(1) / BUCKET_MS).checked_sub(1);
        let Some(last_due) = last_due else {
            return 0;
        };
        let buckets = self.buckets.lock();
        buckets
            .range(..=last_due)
            .map(|(_, set)| set.len() as u64)
            .sum()
    }

    /// Heap bytes of the bucket sets and, roughly, of the map's nodes.
    pub fn allocated_bytes(&self) -> usize {
        let buckets = self.buckets.lock();
        // A BTreeMap node holds up to 11 entries of key + value.
        let per_bucket = std::mem::size_of::<u64>() + std::mem::size_of::<Bucket>();
        buckets
            .values()
            .map(|set| set.allocation_size() + per_bucket * 12 / 11)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_come_due_in_order_once_their_end_has_passed() {
        let index = ExpiryIndex::default();
        index.add(1, 1_050);
        index.add(2, 1_099);
        index.add(3, 950);
        index.add(4, 5_000);
        assert_eq!(index.len(), 4);
        assert!(index.take_due(949).is_none());
        let due = index.take_due(999).unwrap();
        assert_eq!((due.bucket, due.hashes), (9, vec![3]));
        // Bucket 10 holds 1000..=1099: due only at 1099.
        assert!(index.take_due(1_098).is_none());
        assert_eq!(index.due(1_099), 2);
        let mut due = index.take_due(1_099).unwrap();
        due.hashes.sort();
        assert_eq!(due.hashes, vec![1, 2]);
        assert_eq!(index.len(), 1);
        assert!(index.take_due(1_099).is_none());
    }

    #[test]
    fn a_replaced_or_deleted_key_leaves_its_bucket() {
        let index = ExpiryIndex::default();
        index.add(7, 2_000);
        index.add(7, 2_000);
        assert_eq!(index.len(), 1);
        index.remove(7, 2_000);
        index.remove(7, 2_000);
        index.remove(8, 9_999);
        assert_eq!(index.len(), 0);
        assert!(index.take_due(u64::MAX).is_none());
        assert_eq!(index.allocated_bytes(), 0);
    }

    #[test]
    fn what_a_sweep_did_not_finish_goes_back() {
        let index = ExpiryIndex::default();
        for h in 0..10 {
            index.add(h, 100);
        }
        let due = index.take_due(1_000).unwrap();
        assert_eq!(index.len(), 0);
        index.restore(due.bucket, due.hashes.into_iter().skip(4));
        assert_eq!(index.len(), 6);
        assert_eq!(index.take_due(1_000).unwrap().hashes.len(), 6);
    }

    /// What a key with expiry costs beside its keydir slot: one 8-byte
    /// hash in a bucket set (plus the set's spare capacity and control
    /// bytes), about 10 to 20 bytes.
    #[test]
    fn an_expiring_key_costs_a_few_bytes_more() {
        let index = ExpiryIndex::default();
        let n = 100_000u64;
        for h in 0..n {
            // Spread over 60 s of buckets, like keys with TTLs of 1–60 s.
            let hash = xxhash_rust::xxh3::xxh3_64(&h.to_le_bytes());
            index.add(hash, 1_000_000 + (hash % 60_000));
        }
        let per_key = index.allocated_bytes() as f64 / n as f64;
        eprintln!("expiry index: {per_key:.1} bytes per key");
        assert!(
            (8.0..=24.0).contains(&per_key),
            "{per_key:.1} bytes per key"
        );
    }
}
