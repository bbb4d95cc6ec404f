//! The sled indexes: everything here is derived from the journal and can be rebuilt from it
//! (`cxnode reindex`). The only module that uses sled. Invariants: one tree, keys prefixed by a
//! kind byte and big-endian so ranges scan in order; every update of a group, including the
//! journal position indexed up to, goes in one atomic `apply_batch`, so the indexes never show half
//! a batch; the indexed position never passes the journal's durable end.
//!
//! Keys: `m indexed` -> journal end indexed (u64); `h origin` -> chain head (next seq, head hash);
//! `g origin seq` -> journal position of the entry that starts a run (a run is at most
//! `RUN_ENTRIES_MAX` consecutive entries of one origin in consecutive frames: one key per run, not
//! per entry, because sled inserts are the cost that bounds ingest); `k origin` -> latest
//! checkpoint (position, seq, signing time); `K origin seq` -> its signing time; `f origin` ->
//! fork evidence. This is the *chain* index, committed with every group by the writer; records,
//! subjects and categories are in the merged view (`store::view`), indexed behind the journal.

use super::journal::{Frame, JournalPos};
use crate::log::{ChainHead, Hash};
use crate::record::Region;
use std::collections::HashMap;
use std::path::Path;

const KEY_INDEXED: &[u8] = b"mindexed";
const P_HEAD: u8 = b'h';
const P_RUN: u8 = b'g';
/// Entries of one run: finding an entry reads at most this many frames from the run's start.
pub const RUN_ENTRIES_MAX: u64 = 256;
const P_CHECKPOINT: u8 = b'k';
const P_FORK: u8 = b'f';
/// origin, seq -> signing time of the latest checkpoint held at that seq.
const P_CHECKPOINT_AT: u8 = b'K';
/// Attempts, 100 ms apart, to take sled's lock from a handle that is still closing.
const INDEX_LOCK_RETRIES: u32 = 50;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index store (sled) at {path}: {source}; the journal holds everything: run `cxnode reindex --data <DIR>` to rebuild it")]
    Open { path: String, source: sled::Error },
    #[error("index store (sled): {0}")]
    Sled(#[from] sled::Error),
    #[error(
        "index is damaged at key {key}: {reason}; run `cxnode reindex --data <DIR>` to rebuild it from the journal"
    )]
    Damaged { key: String, reason: String },
}

#[derive(Clone)]
pub struct Index {
    db: sled::Db,
    tree: sled::Tree,
}

fn key_origin(prefix: u8, origin: Region) -> Vec<u8> {
    let mut k = Vec::with_capacity(5);
    k.push(prefix);
    k.extend_from_slice(&origin.code().to_be_bytes());
    k
}

fn key_run(origin: Region, seq: u64) -> Vec<u8> {
    let mut k = key_origin(P_RUN, origin);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn be_u64(bytes: &[u8], what: &str) -> Result<u64, IndexError> {
    let arr: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| IndexError::Damaged {
            key: what.to_string(),
            reason: "value too short".to_string(),
        })?;
    Ok(u64::from_be_bytes(arr))
}

/// The latest checkpoint an index knows for an origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointRef {
    pub pos: JournalPos,
    pub seq: u64,
    /// When the origin signed it (unix seconds).
    pub at_unix_seconds: i64,
}

/// Opens a sled database with the node's settings (the chain index and the merged view each
/// have one: sled serialises `apply_batch` across a whole database, so a large view batch in a
/// shared one held up every group commit of the writer).
pub fn open_sled(path: &Path, cache_bytes: u64, flush_ms: u64) -> Result<sled::Db, IndexError> {
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        // Measured here: about 1.5x the inserts per second of the default LowSpace mode.
        .mode(sled::Mode::HighThroughput)
        // sled writes its dirty pages itself this often (`store.index_flush_ms`); the journal,
        // not sled, is the durability point, so a lazy flush loses nothing.
        .flush_every_ms(Some(flush_ms));
    // sled's background threads release its file lock a moment after the last handle is
    // dropped, so an immediate reopen (restart in the same process) may find it still held.
    let mut attempt = 0;
    let db = loop {
        match config.open() {
            Ok(db) => break db,
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && attempt < INDEX_LOCK_RETRIES =>
            {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(source) => {
                return Err(IndexError::Open {
                    path: path.display().to_string(),
                    source,
                })
            }
        }
    };
    Ok(db)
}

impl Index {
    pub fn open(path: &Path, cache_bytes: u64, flush_ms: u64) -> Result<Index, IndexError> {
        let db = open_sled(path, cache_bytes, flush_ms)?;
        let tree = db.open_tree("idx").map_err(|source| IndexError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Index { db, tree })
    }

    /// The journal position indexed up to (0 for a fresh index).
    pub fn indexed_upto(&self) -> Result<JournalPos, IndexError> {
        match self.tree.get(KEY_INDEXED)? {
            None => Ok(JournalPos(0)),
            Some(v) => Ok(JournalPos(be_u64(&v, "indexed position")?)),
        }
    }

    pub fn head(&self, origin: Region) -> Result<ChainHead, IndexError> {
        match self.tree.get(key_origin(P_HEAD, origin))? {
            None => Ok(ChainHead::default()),
            Some(v) => decode_head(&v).ok_or_else(|| IndexError::Damaged {
                key: format!("head of {origin}"),
                reason: "value has the wrong length".to_string(),
            }),
        }
    }

    /// Every origin with at least one entry, with its head.
    pub fn heads(&self) -> Result<Vec<(Region, ChainHead)>, IndexError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([P_HEAD]) {
            let (k, v) = item?;
            let damaged = |reason: &str| IndexError::Damaged {
                key: hex::encode(&k),
                reason: reason.to_string(),
            };
            let code = u32::from_be_bytes(
                k.get(1..5)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| damaged("short key"))?,
            );
            let origin = Region::from_code(code).map_err(|_| damaged("not a province"))?;
            out.push((
                origin,
                decode_head(&v).ok_or_else(|| damaged("value has the wrong length"))?,
            ));
        }
        Ok(out)
    }

    /// Where to start reading to find entry `origin/seq`: (first seq of its run, that entry's
    /// position). None if the origin has no such entry.
    pub fn run_of(&self, origin: Region, seq: u64) -> Result<Option<(u64, JournalPos)>, IndexError> {
        if seq == 0 || seq > self.head(origin)?.seq() {
            return Ok(None);
        }
        let Some(item) = self
            .tree
            .range(key_origin(P_RUN, origin)..=key_run(origin, seq))
            .next_back()
        else {
            return Ok(None);
        };
        let (k, v) = item?;
        let start = be_u64(k.get(5..).unwrap_or_default(), "run key")?;
        if k.get(..5) != Some(&key_origin(P_RUN, origin)[..]) || seq - start >= RUN_ENTRIES_MAX {
            return Err(IndexError::Damaged {
                key: format!("run of {origin}/{seq}"),
                reason: "no run covers an entry below the head".to_string(),
            });
        }
        Ok(Some((start, JournalPos(be_u64(&v, "run position")?))))
    }

    /// Every forked origin with the position of its evidence.
    pub fn forks(&self) -> Result<Vec<(Region, JournalPos)>, IndexError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([P_FORK]) {
            let (k, v) = item?;
            let damaged = || IndexError::Damaged {
                key: hex::encode(&k),
                reason: "bad fork key".to_string(),
            };
            let code = u32::from_be_bytes(k.get(1..5).and_then(|b| b.try_into().ok()).ok_or_else(damaged)?);
            out.push((
                Region::from_code(code).map_err(|_| damaged())?,
                JournalPos(be_u64(&v, "fork evidence")?),
            ));
        }
        Ok(out)
    }

    /// Where the evidence of a fork of `origin` is, if the origin is forked.
    pub fn fork(&self, origin: Region) -> Result<Option<JournalPos>, IndexError> {
        match self.tree.get(key_origin(P_FORK, origin))? {
            None => Ok(None),
            Some(v) => Ok(Some(JournalPos(be_u64(&v, "fork evidence")?))),
        }
    }

    /// The checkpoint held of `origin` with the greatest seq at or below `seq`: (seq, signing
    /// time, the latest signed at that seq).
    pub fn checkpoint_at_or_below(&self, origin: Region, seq: u64) -> Result<Option<(u64, i64)>, IndexError> {
        let low = key_origin(P_CHECKPOINT_AT, origin);
        let mut high = low.clone();
        high.extend_from_slice(&seq.to_be_bytes());
        match self.tree.range(low..=high).next_back() {
            None => Ok(None),
            Some(kv) => {
                let (k, v) = kv?;
                let at_seq = be_u64(k.get(5..).unwrap_or_default(), "checkpoint seq")?;
                Ok(Some((at_seq, be_u64(&v, "checkpoint time")? as i64)))
            }
        }
    }

    pub fn latest_checkpoint(&self, origin: Region) -> Result<Option<CheckpointRef>, IndexError> {
        match self.tree.get(key_origin(P_CHECKPOINT, origin))? {
            None => Ok(None),
            Some(v) => Ok(Some(CheckpointRef {
                pos: JournalPos(be_u64(&v, "checkpoint position")?),
                seq: be_u64(v.get(8..).unwrap_or_default(), "checkpoint seq")?,
                at_unix_seconds: be_u64(v.get(16..).unwrap_or_default(), "checkpoint time")? as i64,
            })),
        }
    }

    /// Starts a group of updates; nothing is visible until `commit`.
    pub fn begin(&self) -> IndexBatch<'_> {
        IndexBatch {
            index: self,
            heads: HashMap::new(),
            previous_entry: None,
            batch: sled::Batch::default(),
        }
    }

    pub fn flush(&self) -> Result<(), IndexError> {
        self.db.flush()?;
        Ok(())
    }

    /// Every key and value, in order (for `verify`).
    pub fn iter(&self) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec), sled::Error>> {
        self.tree.iter()
    }
}

fn encode_head(h: &ChainHead) -> Vec<u8> {
    let mut v = Vec::with_capacity(40);
    v.extend_from_slice(&h.next_seq.to_be_bytes());
    v.extend_from_slice(&h.head_hash);
    v
}

fn decode_head(v: &[u8]) -> Option<ChainHead> {
    if v.len() != 40 {
        return None;
    }
    let next_seq = u64::from_be_bytes(v[0..8].try_into().ok()?);
    let head_hash: Hash = v[8..40].try_into().ok()?;
    Some(ChainHead { next_seq, head_hash })
}

/// Where a frame being indexed comes from, which decides what is checked again.
#[derive(Clone, Copy)]
pub enum Source {
    /// Built by the writer (linked and hashed by construction), or from a peer (every entry
    /// checked by the link receiver, the batch linked to the head by the judge): only the cheap
    /// link check.
    Checked,
    /// Read back from the journal (open, reindex, verify): every hash and link is checked again.
    Journal,
}

/// Updates of one group: an overlay over the committed index (so decisions inside the group see
/// earlier operations of the same group) plus the sled batch that makes them visible at once.
pub struct IndexBatch<'a> {
    index: &'a Index,
    heads: HashMap<Region, ChainHead>,
    /// (origin, seq) of the frame just indexed if it was an entry. Batches start after a
    /// checkpoint, so runs depend on the journal alone, never on batch boundaries.
    previous_entry: Option<(Region, u64)>,
    batch: sled::Batch,
}

impl<'a> IndexBatch<'a> {
    /// The head of `origin` as of this batch.
    pub fn head(&mut self, origin: Region) -> Result<ChainHead, IndexError> {
        if let Some(h) = self.heads.get(&origin) {
            return Ok(*h);
        }
        let h = self.index.head(origin)?;
        self.heads.insert(origin, h);
        Ok(h)
    }

    /// Indexes one frame at `pos`; `source` says what has been checked already.
    pub fn index_frame(&mut self, pos: JournalPos, frame: &Frame, source: Source) -> Result<(), IndexError> {
        match frame {
            Frame::Entry(e) => {
                let mut head = self.head(e.origin)?;
                let broken = |err: String| IndexError::Damaged {
                    key: format!("head of {}", e.origin),
                    reason: format!("journal position {}: {err}", pos.0),
                };
                match source {
                    // Hashes were computed or verified moments ago: only the cheap link check.
                    Source::Checked => {
                        if e.seq != head.next_seq || e.prev_hash != head.head_hash {
                            return Err(broken(format!(
                                "entry {}/{} does not link to the head",
                                e.origin, e.seq
                            )));
                        }
                        head = ChainHead {
                            next_seq: e.seq + 1,
                            head_hash: e.hash,
                        };
                    }
                    // A break here means the journal and the index disagree, or the journal holds
                    // an entry that is not a valid link: refuse rather than index it.
                    Source::Journal => head.advance(e).map_err(|err| broken(err.to_string()))?,
                }
                self.heads.insert(e.origin, head);
                let continues_run =
                    self.previous_entry == Some((e.origin, e.seq - 1)) && (e.seq - 1) % RUN_ENTRIES_MAX != 0;
                if !continues_run {
                    self.batch.insert(key_run(e.origin, e.seq), &pos.0.to_be_bytes());
                }
                self.previous_entry = Some((e.origin, e.seq));
            }
            Frame::ForkEvidence(c) => {
                self.previous_entry = None;
                self.batch.insert(key_origin(P_FORK, c.origin), &pos.0.to_be_bytes());
            }
            Frame::Checkpoint(c) => {
                self.previous_entry = None;
                let mut v = pos.0.to_be_bytes().to_vec();
                v.extend_from_slice(&c.seq.to_be_bytes());
                v.extend_from_slice(&c.at_unix_seconds.to_be_bytes());
                self.batch.insert(key_origin(P_CHECKPOINT, c.origin), v);
                let mut k = key_origin(P_CHECKPOINT_AT, c.origin);
                k.extend_from_slice(&c.seq.to_be_bytes());
                self.batch.insert(k, &c.at_unix_seconds.to_be_bytes());
            }
        }
        Ok(())
    }

    /// Makes the group visible atomically, with `indexed_upto` = `end`.
    pub fn commit(mut self, end: JournalPos) -> Result<(), IndexError> {
        for (origin, head) in &self.heads {
            self.batch.insert(key_origin(P_HEAD, *origin), encode_head(head));
        }
        self.batch.insert(KEY_INDEXED, &end.0.to_be_bytes());
        self.index.tree.apply_batch(self.batch)?;
        Ok(())
    }
}
