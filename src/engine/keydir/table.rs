//! One keydir shard's table: open addressing over cache-line buckets.
//!
//! A bucket is one 64-byte cache line of four 16-byte slots, so a look-up
//! that finds its key in its home bucket reads one line, and a caller can
//! ask the CPU for that line ahead of time ([`Table::prefetch`]): a pipeline
//! of reads then waits on memory once for all its keys, not once per key.
//! (A general-purpose table keeps its control bytes apart from its slots,
//! two lines per look-up, and does not say where either lies.)
//!
//! A fingerprint's home bucket is picked by its low bits; a full bucket
//! overflows into the next one (linear probing, by bucket). A slot is
//! live, empty, or a tombstone left by a removal. Invariant: between an
//! entry's home bucket and its own, no bucket has an empty slot — an insert
//! takes the first slot that is not live along the way, and a removal
//! leaves a tombstone, never an empty slot — so a look-up stops at the
//! first bucket with an empty slot. Live slots and tombstones together
//! fill at most 7/8 of the slots, so there always is one.

use super::Loc;
use crate::engine::prefetch::prefetch;

/// Slots per bucket: 4 × 16 bytes, one cache line.
const BUCKET_SLOTS: usize = 4;

/// One entry: the key's fingerprint and where its record lies. A record is
/// never empty, so a zero length marks a slot that holds no entry; its
/// file then says which kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub fp: u32,
    pub loc: Loc,
}

const EMPTY_FILE: u32 = 0;
const TOMBSTONE_FILE: u32 = u32::MAX;

impl Slot {
    const EMPTY: Slot = Slot::vacant(EMPTY_FILE);
    const TOMBSTONE: Slot = Slot::vacant(TOMBSTONE_FILE);

    const fn vacant(file: u32) -> Slot {
        Slot {
            fp: 0,
            loc: Loc {
                file,
                pos: 0,
                len: 0,
            },
        }
    }

    fn is_live(&self) -> bool {
        self.loc.len != 0
    }

    fn is_empty(&self) -> bool {
        !self.is_live() && self.loc.file == EMPTY_FILE
    }
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket([Slot; BUCKET_SLOTS]);

impl Bucket {
    const EMPTY: Bucket = Bucket([Slot::EMPTY; BUCKET_SLOTS]);

    fn has_empty(&self) -> bool {
        self.0.iter().any(Slot::is_empty)
    }
}

/// Where a slot is: its bucket and its index in the bucket.
type At = (usize, usize);

#[derive(Default)]
pub struct Table {
    /// A power of two of buckets, or none before the first insert.
    buckets: Box<[Bucket]>,
    live: usize,
    tombstones: usize,
}

impl Table {
    pub fn len(&self) -> usize {
        self.live
    }

    /// Heap bytes the table holds.
    pub fn allocation_size(&self) -> usize {
        std::mem::size_of_val(&*self.buckets)
    }

    /// Asks the CPU to load the home bucket of `fp`, and returns without
    /// waiting for it.
    pub fn prefetch(&self, fp: u32) {
        if let Some(bucket) = self.buckets.get(self.home(fp)) {
            prefetch(bucket);
        }
    }

    /// Every live slot with fingerprint `fp`, in probe order.
    pub fn matching(&self, fp: u32) -> impl Iterator<Item = &Slot> {
        self.probe(fp)
            .flat_map(|b| self.buckets[b].0.iter())
            .filter(move |s| s.is_live() && s.fp == fp)
    }

    /// The first live slot with fingerprint `fp` for which `is_it` holds.
    pub fn find(&self, fp: u32, mut is_it: impl FnMut(&Slot) -> bool) -> Option<&Slot> {
        self.find_at(fp, &mut is_it)
            .map(|(b, i)| &self.buckets[b].0[i])
    }

    /// As [`Table::find`], for changing the slot's location in place.
    pub fn find_mut(&mut self, fp: u32, mut is_it: impl FnMut(&Slot) -> bool) -> Option<&mut Slot> {
        let (b, i) = self.find_at(fp, &mut is_it)?;
        Some(&mut self.buckets[b].0[i])
    }

    /// Removes the first live slot with fingerprint `fp` for which `is_it`
    /// holds, returning it.
    pub fn remove(&mut self, fp: u32, mut is_it: impl FnMut(&Slot) -> bool) -> Option<Slot> {
        let (b, i) = self.find_at(fp, &mut is_it)?;
        let slot = std::mem::replace(&mut self.buckets[b].0[i], Slot::TOMBSTONE);
        self.live -= 1;
        self.tombstones += 1;
        Some(slot)
    }

    /// Adds `slot`, which the caller knows is not in the table.
    ///
    /// # Panics
    ///
    /// If `slot` is not live (a zero length): no record is empty.
    pub fn insert_unique(&mut self, slot: Slot) {
        assert!(slot.is_live(), "keydir: a record of length 0: {slot:?}");
        // A tombstone on the way is taken as it is; an empty slot adds to
        // the load, which may call for a rebuild first.
        let mut at = self.free_at(slot.fp);
        let reuses = at.is_some_and(|(b, i)| !self.buckets[b].0[i].is_empty());
        if !reuses && self.live + self.tombstones >= max_load(self.buckets.len()) {
            self.reserve(1);
            at = self.free_at(slot.fp);
        }
        let (b, i) = at.expect("a table under its load has an empty slot");
        if !self.buckets[b].0[i].is_empty() {
            self.tombstones -= 1;
        }
        self.buckets[b].0[i] = slot;
        self.live += 1;
    }

    /// Makes room for `additional` more entries: if they would take the
    /// table past its load, it is rebuilt without its tombstones, at the
    /// same size if that leaves it at most half full, else at twice the
    /// size or more.
    pub fn reserve(&mut self, additional: usize) {
        let need = self.live + additional;
        if self.live + self.tombstones + additional <= max_load(self.buckets.len()) {
            return;
        }
        let now = self.buckets.len();
        // Mostly tombstones in the way: rebuild at this size, leaving room
        // for as many inserts as there are entries. Else grow.
        let mut buckets = if now > 0 && need <= max_load(now) / 2 {
            now
        } else {
            (now * 2).max(1)
        };
        while need > max_load(buckets) {
            buckets *= 2;
        }
        let old = std::mem::replace(&mut self.buckets, vec![Bucket::EMPTY; buckets].into());
        self.tombstones = 0;
        for slot in old.iter().flat_map(|b| b.0.iter()).filter(|s| s.is_live()) {
            let (b, i) = self.free_at(slot.fp).expect("a rebuilt table has room");
            self.buckets[b].0[i] = *slot;
        }
    }

    /// Every live slot.
    pub fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.buckets
            .iter()
            .flat_map(|b| b.0.iter())
            .filter(|s| s.is_live())
    }

    fn home(&self, fp: u32) -> usize {
        fp as usize & self.buckets.len().wrapping_sub(1)
    }

    /// The buckets a look-up of `fp` reads: from its home bucket on, up to
    /// and including the first with an empty slot.
    fn probe(&self, fp: u32) -> impl Iterator<Item = usize> + '_ {
        let n = self.buckets.len();
        let start = self.home(fp);
        let mut done = n == 0;
        (0..n).map_while(move |step| {
            if done {
                return None;
            }
            let b = (start + step) & (n - 1);
            done = self.buckets[b].has_empty();
            Some(b)
        })
    }

    fn find_at(&self, fp: u32, is_it: &mut impl FnMut(&Slot) -> bool) -> Option<At> {
        self.first_at(fp, |s| s.is_live() && s.fp == fp && is_it(s))
    }

    /// The first slot that is not live along the probe of `fp`.
    fn free_at(&self, fp: u32) -> Option<At> {
        self.first_at(fp, |s| !s.is_live())
    }

    /// The first slot along the probe of `fp` for which `pick` holds.
    fn first_at(&self, fp: u32, mut pick: impl FnMut(&Slot) -> bool) -> Option<At> {
        self.probe(fp)
            .find_map(|b| Some((b, self.buckets[b].0.iter().position(&mut pick)?)))
    }
}

/// The most slots, live or tombstones, a table of `buckets` holds: 7/8.
fn max_load(buckets: usize) -> usize {
    buckets * BUCKET_SLOTS * 7 / 8
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn slot(fp: u32, file: u32) -> Slot {
        Slot {
            fp,
            loc: Loc {
                file,
                pos: 0,
                len: 1,
            },
        }
    }

    #[test]
    fn a_bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 16);
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
        assert_eq!(std::mem::align_of::<Bucket>(), 64);
    }

    #[test]
    fn a_full_home_bucket_overflows_into_the_next_and_wraps_at_the_end() {
        let mut t = Table::default();
        t.reserve(20); // 8 buckets
        assert_eq!(t.buckets.len(), 8);
        // Six entries whose home is the last bucket: four fill it, two
        // wrap to bucket 0.
        for file in 1..=6 {
            t.insert_unique(slot(7, file));
        }
        assert!(t.buckets[7].0.iter().all(Slot::is_live));
        assert_eq!(t.buckets[0].0.iter().filter(|s| s.is_live()).count(), 2);
        let files: Vec<u32> = t.matching(7).map(|s| s.loc.file).collect();
        assert_eq!(files, [1, 2, 3, 4, 5, 6]);
        // A removal in the full bucket leaves a tombstone: the two that
        // overflowed are still found, and the next insert reuses it.
        assert_eq!(t.remove(7, |s| s.loc.file == 2), Some(slot(7, 2)));
        assert_eq!(t.matching(7).count(), 5);
        assert!(t.find(7, |s| s.loc.file == 6).is_some());
        t.insert_unique(slot(7, 9));
        assert_eq!(t.buckets[7].0[1], slot(7, 9));
        assert_eq!((t.len(), t.tombstones), (6, 0));
    }

    #[test]
    fn tombstones_are_dropped_by_a_rebuild_at_the_same_size() {
        let mut t = Table::default();
        t.reserve(28); // 8 buckets, 28 slots before a rebuild
        assert_eq!(t.buckets.len(), 8);
        // Homes 0-3 take four entries each, homes 4-7 three: one empty
        // slot in each of buckets 4-7. Then buckets 0-3 are emptied.
        for fp in 0..28 {
            t.insert_unique(slot(fp, 1));
        }
        for fp in (0..28).filter(|fp| fp % 8 < 4) {
            assert!(t.remove(fp, |_| true).is_some());
        }
        assert_eq!((t.len(), t.tombstones), (12, 16));
        // A new entry at home 4 takes its empty slot: 29 slots would be in
        // use, so the table is rebuilt first, at the same size (13 live
        // entries fit in half of it).
        t.insert_unique(slot(4, 2));
        assert_eq!(t.buckets.len(), 8);
        assert_eq!((t.len(), t.tombstones), (13, 0));
        for fp in (0..28).filter(|fp| fp % 8 >= 4) {
            assert_eq!(t.find(fp, |s| s.loc.file == 1), Some(&slot(fp, 1)));
        }
        assert_eq!(t.find(4, |s| s.loc.file == 2), Some(&slot(4, 2)));
    }

    #[test]
    fn the_table_grows_to_keep_one_slot_in_eight_empty() {
        let mut t = Table::default();
        for fp in 0..10_000u32 {
            t.insert_unique(slot(fp.wrapping_mul(0x9E37_79B9), 1));
            assert!(t.live + t.tombstones <= max_load(t.buckets.len()));
        }
        assert_eq!(t.len(), 10_000);
        assert_eq!(t.iter().count(), 10_000);
        // Between 7/16 and 7/8 full after a doubling: 18 to 37 bytes each.
        let per_entry = t.allocation_size() as f64 / 10_000.0;
        assert!((18.0..=37.0).contains(&per_entry), "{per_entry}");
    }

    #[test]
    #[should_panic(expected = "length 0")]
    fn an_empty_record_is_refused() {
        let mut t = Table::default();
        t.insert_unique(Slot::EMPTY);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Upsert(u8),
        Remove(u8),
    }

    proptest! {
        /// The table against a map, with keys of few fingerprints (so that
        /// homes collide and buckets overflow): keys are told apart by the
        /// file of their slot, as the keydir tells them apart by reading
        /// the record.
        #[test]
        fn it_agrees_with_a_map(ops in proptest::collection::vec(
            prop_oneof![
                (0u8..64).prop_map(Op::Upsert),
                (0u8..64).prop_map(Op::Remove),
            ],
            1..400,
        )) {
            let mut t = Table::default();
            let mut model: HashMap<u8, u32> = HashMap::new();
            let fp_of = |key: u8| u32::from(key % 8) * 3;
            for (n, op) in ops.iter().enumerate() {
                let pos = n as u32;
                match *op {
                    Op::Upsert(key) => {
                        let file = u32::from(key) + 1;
                        let new = Slot { fp: fp_of(key), loc: Loc { file, pos, len: 1 } };
                        match t.find_mut(new.fp, |s| s.loc.file == file) {
                            Some(s) => *s = new,
                            None => t.insert_unique(new),
                        }
                        model.insert(key, pos);
                    }
                    Op::Remove(key) => {
                        let file = u32::from(key) + 1;
                        let gone = t.remove(fp_of(key), |s| s.loc.file == file);
                        prop_assert_eq!(gone.map(|s| s.loc.pos), model.remove(&key));
                    }
                }
                prop_assert_eq!(t.len(), model.len());
                prop_assert!(t.live + t.tombstones <= max_load(t.buckets.len()));
            }
            for key in 0u8..64 {
                let file = u32::from(key) + 1;
                let found = t.find(fp_of(key), |s| s.loc.file == file).map(|s| s.loc.pos);
                prop_assert_eq!(found, model.get(&key).copied());
                let matches = t.matching(fp_of(key)).filter(|s| s.loc.file == file).count();
                prop_assert_eq!(matches, usize::from(model.contains_key(&key)));
            }
            prop_assert_eq!(t.iter().count(), model.len());
        }
    }
}
