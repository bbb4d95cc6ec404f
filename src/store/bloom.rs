//! A growing Bloom filter of the merged view's record keys, in memory: it answers "certainly new"
//! for a record id without a sled read, which is the common case of every publish and of every
//! replicated entry. Invariant: no false negatives — a key is added before the batch that stores
//! it becomes visible, and a filter that is not complete (being rebuilt at start) says "maybe" to
//! everything.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;

/// Keys of the first layer; each further layer holds twice the one before.
const FIRST_LAYER_KEYS: u64 = 1 << 20;
/// Bits per key and probes: about 1 % false positives per layer.
const BITS_PER_KEY: u64 = 10;
const PROBES: u64 = 7;

struct Layer {
    words: Vec<AtomicU64>,
    bits: u64,
    capacity: u64,
    keys: AtomicU64,
}

impl Layer {
    fn new(capacity: u64) -> Layer {
        let bits = (capacity * BITS_PER_KEY).next_multiple_of(64);
        Layer {
            words: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
            bits,
            capacity,
            keys: AtomicU64::new(0),
        }
    }

    fn probes(&self, h: (u64, u64)) -> impl Iterator<Item = u64> + '_ {
        (0..PROBES).map(move |i| h.0.wrapping_add(i.wrapping_mul(h.1)) % self.bits)
    }

    fn insert(&self, h: (u64, u64)) {
        for bit in self.probes(h) {
            self.words[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Relaxed);
        }
        self.keys.fetch_add(1, Ordering::Relaxed);
    }

    fn contains(&self, h: (u64, u64)) -> bool {
        self.probes(h)
            .all(|bit| self.words[(bit / 64) as usize].load(Ordering::Relaxed) & (1 << (bit % 64)) != 0)
    }
}

pub struct Bloom {
    layers: RwLock<Vec<Layer>>,
    complete: AtomicBool,
    /// SipHash with keys drawn per process: the filter lives in memory only, so its hashes need
    /// not be stable, and a peer cannot choose ids that collide in it.
    seeds: (RandomState, RandomState),
}

impl Default for Bloom {
    fn default() -> Bloom {
        Bloom {
            layers: RwLock::new(vec![Layer::new(FIRST_LAYER_KEYS)]),
            complete: AtomicBool::new(false),
            seeds: (RandomState::new(), RandomState::new()),
        }
    }
}

impl Bloom {
    fn hashes(&self, key: &[u8]) -> (u64, u64) {
        (self.seeds.0.hash_one(key), self.seeds.1.hash_one(key) | 1)
    }

    pub fn insert(&self, key: &[u8]) {
        let h = self.hashes(key);
        {
            let layers = self.layers.read().expect("bloom lock");
            let last = layers.last().expect("at least one layer");
            if last.keys.load(Ordering::Relaxed) < last.capacity {
                last.insert(h);
                return;
            }
        }
        let mut layers = self.layers.write().expect("bloom lock");
        let last = layers.last().expect("at least one layer");
        if last.keys.load(Ordering::Relaxed) >= last.capacity {
            let capacity = last.capacity * 2;
            layers.push(Layer::new(capacity));
        }
        layers.last().expect("just pushed").insert(h);
    }

    /// False only if `key` was certainly never inserted (and the filter is complete).
    pub fn may_contain(&self, key: &[u8]) -> bool {
        if !self.complete.load(Ordering::Acquire) {
            return true;
        }
        let h = self.hashes(key);
        self.layers.read().expect("bloom lock").iter().any(|l| l.contains(h))
    }

    /// Called once every stored key has been inserted.
    pub fn mark_complete(&self) {
        self.complete.store(true, Ordering::Release);
    }

    /// Memory held by the bits.
    pub fn bytes(&self) -> u64 {
        self.layers.read().expect("bloom lock").iter().map(|l| l.bits / 8).sum()
    }
}

/// A fixed Bloom filter of one packed chunk's keys (or key prefixes), in memory only: a look-up
/// reads a chunk only when its filter may hold the key, so at 10M records a look-up reads about
/// one chunk of its bucket instead of all of them (up to ~20). Built from the chunk's items when
/// it is written or first read; never changed after (a chunk is immutable). About
/// `BITS_PER_KEY` bits per distinct key, so ~1 % of chunks that do not hold a key are read anyway.
pub struct ChunkFilter {
    words: Box<[u64]>,
}

impl ChunkFilter {
    /// A filter of the keys whose hashes `hashes` gives (`distinct` of them at most).
    pub fn build(distinct: usize, hashes: impl Iterator<Item = (u64, u64)>) -> ChunkFilter {
        let bits = (distinct.max(1) as u64 * BITS_PER_KEY).next_multiple_of(64);
        let mut words = vec![0u64; (bits / 64) as usize].into_boxed_slice();
        for h in hashes {
            for i in 0..PROBES {
                let bit = h.0.wrapping_add(i.wrapping_mul(h.1)) % bits;
                words[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
        ChunkFilter { words }
    }

    /// False only if the key of hashes `h` was certainly not among those built in.
    pub fn may_contain(&self, h: (u64, u64)) -> bool {
        let bits = self.words.len() as u64 * 64;
        (0..PROBES).all(|i| {
            let bit = h.0.wrapping_add(i.wrapping_mul(h.1)) % bits;
            self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0
        })
    }

    /// Memory held by the bits.
    pub fn bytes(&self) -> usize {
        self.words.len() * 8
    }
}

/// The two hashes a filter probes with, keyed per process (filters live in memory only, so the
/// hashes need not be stable, and a peer cannot choose keys that collide).
pub struct FilterHasher(RandomState, RandomState);

impl Default for FilterHasher {
    fn default() -> FilterHasher {
        FilterHasher(RandomState::new(), RandomState::new())
    }
}

impl FilterHasher {
    pub fn hashes(&self, key: &[u8]) -> (u64, u64) {
        (self.0.hash_one(key), self.1.hash_one(key) | 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives_across_layers() {
        let bloom = Bloom::default();
        let n = FIRST_LAYER_KEYS + FIRST_LAYER_KEYS / 2;
        for i in 0..n {
            bloom.insert(&i.to_be_bytes());
        }
        assert!(
            bloom.may_contain(&u64::MAX.to_be_bytes()),
            "incomplete filter says maybe"
        );
        bloom.mark_complete();
        assert!((0..n).all(|i| bloom.may_contain(&i.to_be_bytes())));
        let false_positives = (n..n + 100_000).filter(|i| bloom.may_contain(&i.to_be_bytes())).count();
        assert!(false_positives < 4_000, "{false_positives} false positives in 100,000");
        assert_eq!(bloom.layers.read().expect("lock").len(), 2);
    }

    #[test]
    fn a_chunk_filter_holds_every_key_it_was_built_with_and_few_others() {
        let hasher = FilterHasher::default();
        let n = 1000u64;
        let filter = ChunkFilter::build(n as usize, (0..n).map(|i| hasher.hashes(&i.to_be_bytes())));
        assert!((0..n).all(|i| filter.may_contain(hasher.hashes(&i.to_be_bytes()))));
        let false_positives = (n..n + 100_000)
            .filter(|i| filter.may_contain(hasher.hashes(&i.to_be_bytes())))
            .count();
        assert!(false_positives < 2_500, "{false_positives} false positives in 100,000");
        assert_eq!(filter.bytes() as u64, (n * BITS_PER_KEY).next_multiple_of(64) / 8);
        let empty = ChunkFilter::build(0, std::iter::empty());
        assert!(!empty.may_contain(hasher.hashes(b"anything")));
    }
}
