//! Packed, bucketed maps over one sled tree: many fixed-size items per sled value, because one sled
//! key per record caps an indexer at 15-40k records/s whatever the key order (measured, see
//! `../shared/notes`). Items hash to one of `buckets` buckets; each indexer batch writes one
//! *chunk* per bucket it touches (key: prefix, bucket, chunk number), holding that batch's items
//! sorted by key; a bucket whose chunks pass `CHUNKS_PER_BUCKET_MAX` is merged into one chunk.
//! Invariants: within a bucket a higher chunk number is newer, and the newest chunk holding a key
//! decides its value; a merge keeps exactly that, so merging never changes what a lookup returns;
//! every write goes into the caller's `sled::Batch`, so it becomes visible with the rest of the
//! batch or not at all.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, Ordering};

/// Past this many chunks a bucket is merged (when the batch has merge budget left).
pub const CHUNKS_PER_BUCKET_MAX: u16 = 16;
/// Buckets merged in one batch at most, so one batch's work stays bounded.
pub const MERGES_PER_BATCH_MAX: usize = 64;

/// A key and its value.
pub type Item = (Vec<u8>, Vec<u8>);

/// One map: its key prefix byte in the tree, its item shape and its buckets.
pub struct ChunkMap {
    prefix: u8,
    key_len: usize,
    val_len: usize,
    /// Bytes of the key that choose the bucket (a prefix, so a multimap's postings of one subject
    /// share a bucket).
    hash_len: usize,
    buckets: u32,
    salt: [u8; 16],
    /// Chunks per bucket as far as this process knows (a merge heuristic, not a truth: it is
    /// corrected whenever a bucket is read whole).
    chunks: Vec<AtomicU16>,
}

/// What a map lookup or merge found damaged.
#[derive(Debug, thiserror::Error)]
#[error("chunk {key} of the merged view: {reason}")]
pub struct ChunkDamage {
    pub key: String,
    pub reason: String,
}

impl ChunkMap {
    pub fn new(prefix: u8, key_len: usize, val_len: usize, hash_len: usize, buckets: u32, salt: [u8; 16]) -> ChunkMap {
        assert!(hash_len <= key_len && buckets > 0 && key_len > 0);
        ChunkMap {
            prefix,
            key_len,
            val_len,
            hash_len,
            buckets,
            salt,
            chunks: (0..buckets).map(|_| AtomicU16::new(0)).collect(),
        }
    }

    fn item_len(&self) -> usize {
        self.key_len + self.val_len
    }

    /// The bucket of a key (or of a hash prefix of `hash_len` bytes). Salted per store, so a
    /// peer cannot choose record ids that all land in one bucket.
    pub fn bucket_of(&self, key: &[u8]) -> u32 {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.salt);
        h.update(&key[..self.hash_len]);
        let d = h.finalize();
        u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % self.buckets
    }

    fn bucket_prefix(&self, bucket: u32) -> [u8; 5] {
        let b = bucket.to_be_bytes();
        [self.prefix, b[0], b[1], b[2], b[3]]
    }

    fn chunk_key(&self, bucket: u32, chunk: u64) -> Vec<u8> {
        let mut k = self.bucket_prefix(bucket).to_vec();
        k.extend_from_slice(&chunk.to_be_bytes());
        k
    }

    fn check(&self, k: &[u8], v: &[u8]) -> Result<(), ChunkDamage> {
        if k.len() != 13 || !v.len().is_multiple_of(self.item_len()) {
            return Err(ChunkDamage {
                key: hex::encode(k),
                reason: format!("value of {} bytes is not a whole number of items", v.len()),
            });
        }
        Ok(())
    }

    /// The value of `key`, if any (the newest chunk holding it decides).
    pub fn get(&self, tree: &sled::Tree, key: &[u8]) -> Result<Option<Vec<u8>>, sled::Error> {
        debug_assert_eq!(key.len(), self.key_len);
        let bucket = self.bucket_of(key);
        let mut seen = 0u16;
        let mut found = None;
        for kv in tree.scan_prefix(self.bucket_prefix(bucket)).rev() {
            let (k, v) = kv?;
            seen += 1;
            if self.check(&k, &v).is_err() {
                continue;
            }
            if let Some(item) = self.search(&v, key) {
                found = Some(item[self.key_len..].to_vec());
                break;
            }
        }
        if found.is_none() {
            self.chunks[bucket as usize].store(seen, Ordering::Relaxed);
        }
        Ok(found)
    }

    fn search<'v>(&self, chunk: &'v [u8], key: &[u8]) -> Option<&'v [u8]> {
        let n = chunk.len() / self.item_len();
        let item = |i: usize| &chunk[i * self.item_len()..(i + 1) * self.item_len()];
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match item(mid)[..self.key_len].cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(item(mid)),
            }
        }
        None
    }

    /// Every item of the bucket of `hash_prefix` whose key starts with it, newest value per key,
    /// in key order.
    pub fn with_prefix(&self, tree: &sled::Tree, hash_prefix: &[u8]) -> Result<Vec<Item>, sled::Error> {
        debug_assert_eq!(hash_prefix.len(), self.hash_len);
        let bucket = self.bucket_of(hash_prefix);
        let items = self.bucket_items(tree, bucket)?;
        Ok(items.into_iter().filter(|(k, _)| k.starts_with(hash_prefix)).collect())
    }

    /// Every item of one bucket, newest value per key, in key order.
    pub fn bucket_items(&self, tree: &sled::Tree, bucket: u32) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, sled::Error> {
        let mut items = BTreeMap::new();
        let mut seen = 0u16;
        // Oldest first, so newer chunks overwrite.
        for kv in tree.scan_prefix(self.bucket_prefix(bucket)) {
            let (k, v) = kv?;
            seen = seen.saturating_add(1);
            if self.check(&k, &v).is_err() {
                continue;
            }
            for item in v.chunks_exact(self.item_len()) {
                items.insert(item[..self.key_len].to_vec(), item[self.key_len..].to_vec());
            }
        }
        self.chunks[bucket as usize].store(seen, Ordering::Relaxed);
        Ok(items)
    }

    /// Damaged chunks of the whole map (for `verify`).
    pub fn damaged(&self, tree: &sled::Tree) -> Result<Vec<ChunkDamage>, sled::Error> {
        let mut out = Vec::new();
        for kv in tree.scan_prefix([self.prefix]) {
            let (k, v) = kv?;
            if let Err(d) = self.check(&k, &v) {
                out.push(d);
            }
        }
        Ok(out)
    }

    pub fn buckets(&self) -> u32 {
        self.buckets
    }

    /// Writes `items` (key ++ value, any order, later ones win) as chunk `chunk` of their
    /// buckets into `batch`, first merging up to `MERGES_PER_BATCH_MAX` of the fullest buckets
    /// it touches. `chunk` must be greater than every chunk number written before.
    pub fn write(
        &self,
        tree: &sled::Tree,
        batch: &mut sled::Batch,
        chunk: u64,
        items: impl IntoIterator<Item = Vec<u8>>,
    ) -> Result<(), sled::Error> {
        let mut by_bucket: BTreeMap<u32, BTreeMap<Vec<u8>, Vec<u8>>> = BTreeMap::new();
        for item in items {
            debug_assert_eq!(item.len(), self.item_len());
            let bucket = self.bucket_of(&item[..self.key_len]);
            let (k, v) = item.split_at(self.key_len);
            by_bucket.entry(bucket).or_default().insert(k.to_vec(), v.to_vec());
        }
        let mut full: Vec<(u16, u32)> = by_bucket
            .keys()
            .map(|b| (self.chunks[*b as usize].load(Ordering::Relaxed), *b))
            .filter(|(n, _)| *n >= CHUNKS_PER_BUCKET_MAX)
            .collect();
        full.sort_unstable_by(|a, b| b.cmp(a));
        for (_, bucket) in full.into_iter().take(MERGES_PER_BATCH_MAX) {
            // The merged chunk takes this batch's number: the old chunks are removed and the new
            // items overwrite theirs, so the bucket ends with exactly one chunk.
            let mut merged = Vec::new();
            for kv in tree.scan_prefix(self.bucket_prefix(bucket)) {
                let (k, _) = kv?;
                batch.remove(k);
            }
            let old = self.bucket_items(tree, bucket)?;
            let new = by_bucket.remove(&bucket).unwrap_or_default();
            let mut all = old;
            all.extend(new);
            for (k, v) in all {
                merged.extend_from_slice(&k);
                merged.extend_from_slice(&v);
            }
            batch.insert(self.chunk_key(bucket, chunk), merged);
            self.chunks[bucket as usize].store(1, Ordering::Relaxed);
        }
        for (bucket, items) in by_bucket {
            let mut value = Vec::with_capacity(items.len() * self.item_len());
            for (k, v) in items {
                value.extend_from_slice(&k);
                value.extend_from_slice(&v);
            }
            batch.insert(self.chunk_key(bucket, chunk), value);
            let n = &self.chunks[bucket as usize];
            n.store(n.load(Ordering::Relaxed).saturating_add(1), Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().path(dir.path()).open().expect("sled");
        let tree = db.open_tree("t").expect("tree");
        (dir, tree)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 50, ..ProptestConfig::default() })]
        /// Whatever the batches and merges, a lookup returns the value last written for a key.
        #[test]
        fn lookups_see_the_last_write_through_merges(
            batches in proptest::collection::vec(proptest::collection::vec((0u8..40, any::<u8>()), 0..30), 1..60),
        ) {
            let (_dir, tree) = tree();
            let map = ChunkMap::new(b'x', 2, 1, 2, 4, [7; 16]);
            let mut model = BTreeMap::new();
            for (i, items) in batches.iter().enumerate() {
                let mut batch = sled::Batch::default();
                let encoded = items.iter().map(|(k, v)| vec![b'k', *k, *v]);
                map.write(&tree, &mut batch, i as u64 + 1, encoded).expect("write");
                tree.apply_batch(batch).expect("apply");
                for (k, v) in items {
                    model.insert(*k, *v);
                }
                for k in 0u8..40 {
                    let got = map.get(&tree, &[b'k', k]).expect("get");
                    prop_assert_eq!(got, model.get(&k).map(|v| vec![*v]), "key {} after batch {}", k, i);
                }
            }
            let mut all = BTreeMap::new();
            for b in 0..map.buckets() {
                all.extend(map.bucket_items(&tree, b).expect("bucket"));
            }
            let expected: BTreeMap<Vec<u8>, Vec<u8>> = model.iter().map(|(k, v)| (vec![b'k', *k], vec![*v])).collect();
            prop_assert_eq!(all, expected);
            for b in 0..map.buckets() {
                prop_assert!(tree.scan_prefix(map.bucket_prefix(b)).count() <= usize::from(CHUNKS_PER_BUCKET_MAX) + 1);
            }
        }
    }
}
