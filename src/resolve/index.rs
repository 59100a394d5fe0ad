//! A shard's hash index: where each key's entry is, by the key's hash, in one array
//! of 8-byte slots (open addressing, linear probing). A slot holds the upper half of
//! the hash and the entry's position, so a probe reads one cache line, where
//! hashbrown's table read two (control bytes, then the slot), and the index grows
//! without reading a single entry.

/// Grows past 4/5 full (hashbrown: 7/8, with a byte more a slot): a probe then
/// mostly stays within a cache line, and the index is no larger than hashbrown's.
const LOAD: (usize, usize) = (4, 5);

#[derive(Debug, Clone, Default)]
pub struct Index {
    /// Empty (0), or a hash's upper half above an entry's position + 1. A power of
    /// two long, or empty.
    slots: Vec<u64>,
    len: usize,
}

fn slot(half: u32, position: u32) -> u64 {
    u64::from(half) << 32 | (u64::from(position) + 1)
}

impl Index {
    fn home(&self, half: u32) -> usize {
        half as usize & (self.slots.len() - 1)
    }

    /// Where a search for `half` ends: the position of the entry `is` accepts, or
    /// else the empty slot where such an entry would go. The index has room. (Every
    /// event comes through here: inlined into each caller.)
    #[inline(always)]
    fn probe(&self, half: u32, is: impl Fn(u32) -> bool) -> Result<u32, usize> {
        let mut i = self.home(half);
        loop {
            match self.slots[i] {
                0 => return Err(i),
                s if (s >> 32) as u32 == half && is(s as u32 - 1) => return Ok(s as u32 - 1),
                _ => i = (i + 1) & (self.slots.len() - 1),
            }
        }
    }

    /// The position of the entry of hash `half` that `is` accepts, if any.
    pub fn find(&self, half: u32, is: impl Fn(u32) -> bool) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        self.probe(half, is).ok()
    }

    /// `find`; when there is no such entry, records `new` as its position.
    pub fn find_or_insert(&mut self, half: u32, is: impl Fn(u32) -> bool, new: u32) -> Option<u32> {
        assert!(new < u32::MAX, "under 2^32 - 1 entries a shard");
        self.reserve(1);
        match self.probe(half, is) {
            Ok(at) => Some(at),
            Err(empty) => {
                self.slots[empty] = slot(half, new);
                self.len += 1;
                None
            }
        }
    }

    /// Room for `extra` more keys without growing.
    pub fn reserve(&mut self, extra: usize) {
        let needed = self.len + extra;
        if needed * LOAD.1 <= self.slots.len() * LOAD.0 {
            return;
        }
        let size = (needed * LOAD.1 / LOAD.0 + 1).next_power_of_two().max(16);
        let old = std::mem::replace(&mut self.slots, empty_slots(size));
        for s in old.into_iter().filter(|&s| s != 0) {
            // Keys are distinct: each goes to the first empty slot of its search.
            if let Err(empty) = self.probe((s >> 32) as u32, |_| false) {
                self.slots[empty] = s;
            }
        }
    }

    /// Starts fetching the slot where a search for `half` begins into the caches.
    pub fn prefetch(&self, half: u32) {
        if !self.slots.is_empty() {
            prefetch(&self.slots[self.home(half)]);
        }
    }

    /// The position a search for `half` most likely ends at: the first slot's, if
    /// its hash matches. For fetching that entry early, not for finding it.
    pub fn likely(&self, half: u32) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let s = self.slots[self.home(half)];
        (s != 0 && (s >> 32) as u32 == half).then(|| s as u32 - 1)
    }

    /// Empties the index, keeping its room.
    pub fn clear(&mut self) {
        self.slots.fill(0);
        self.len = 0;
    }

    /// Bytes of room.
    pub fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<u64>()
    }
}

/// `size` empty slots, each page of them written now. A fresh page read first (by
/// a probe) maps the shared zero page, and the write after it must then flush every
/// core's TLB: 3 % of the CPU, in `reserve`, before this.
fn empty_slots(size: usize) -> Vec<u64> {
    let mut slots = vec![0; size];
    for page in slots.chunks_mut(4096 / std::mem::size_of::<u64>()) {
        // SAFETY: a valid, aligned element. Volatile, because a plain store of the
        // zero it already holds would be optimized away.
        unsafe { std::ptr::write_volatile(page.as_mut_ptr(), 0) };
    }
    slots
}

/// Starts fetching `at` into the caches: its first byte's cache line and, for a
/// value larger than a word (an entry, which may straddle two), its last byte's.
pub fn prefetch<T>(at: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let first = std::ptr::from_ref(at).cast::<i8>();
        // SAFETY: every x86-64 CPU has SSE, a prefetch never faults, and both
        // addresses are within `at`.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(first);
            if std::mem::size_of::<T>() > 8 {
                _mm_prefetch::<_MM_HINT_T0>(first.add(std::mem::size_of::<T>() - 1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a map, with hashes drawn from a few values so that keys collide.
        #[test]
        fn finds_what_it_holds_and_nothing_else(keys in proptest::collection::vec((0u32..6, 0u32..40), 0..300)) {
            let mut index = Index::default();
            let mut positions: Vec<(u32, u32)> = Vec::new(); // (hash, key) by position
            for (half, key) in keys {
                let at = |p: u32| positions[p as usize] == (half, key);
                let expected = positions.iter().position(|&k| k == (half, key)).map(|p| p as u32);
                let new = positions.len() as u32;
                prop_assert_eq!(index.find(half, at), expected);
                prop_assert_eq!(index.find_or_insert(half, at, new), expected);
                if expected.is_none() {
                    positions.push((half, key));
                }
            }
            for (p, &(half, key)) in positions.iter().enumerate() {
                prop_assert_eq!(index.find(half, |q| positions[q as usize] == (half, key)), Some(p as u32));
                // A hint, but only ever to an entry of the same hash; the first key
                // of a hash sits in its home slot unless another hash took it first.
                let likely = index.likely(half);
                prop_assert!(likely.is_none_or(|q| positions[q as usize].0 == half));
                if positions.iter().all(|&(h, _)| h == half) {
                    prop_assert_eq!(likely, Some(0));
                }
            }
            index.clear();
            prop_assert_eq!(index.find(0, |_| true), None);
        }
    }
}
