//! The sled indexes: everything here is derived from the journal and can be rebuilt from it
//! (`cxnode reindex`). The only module that uses sled. Invariants: one tree, keys prefixed by a
//! kind byte and big-endian so ranges scan in order; every update of a group, including the
//! journal position indexed up to, goes in one atomic `apply_batch`, so the indexes never show half
//! a batch; the indexed position never passes the journal's durable end.
//!
//! Keys: `m indexed` -> journal end indexed (u64); `h origin` -> chain head (next seq, head hash);
//! `g origin seq` -> journal position of the entry that starts a run (a run is at most
//! `RUN_ENTRIES_MAX` consecutive entries of one origin in consecutive frames: one key per run, not
//! per entry, because sled inserts are the cost that bounds ingest); `r origin record_id` -> record state; `s subject 0 origin
//! seq` -> (); `p origin target` -> seq of a held repair; `k origin` -> latest checkpoint (position,
//! seq, signing time).

use super::journal::{Frame, JournalPos};
use crate::log::ledger::{self, LedgerState, RecordState};
use crate::log::{ChainHead, Hash};
use crate::record::{decode_stored, Category, Operation, RecordId, Region};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const KEY_INDEXED: &[u8] = b"mindexed";
const P_HEAD: u8 = b'h';
const P_RUN: u8 = b'g';
/// Entries of one run: finding an entry reads at most this many frames from the run's start.
pub const RUN_ENTRIES_MAX: u64 = 256;
const P_RECORD: u8 = b'r';
const P_SUBJECT: u8 = b's';
const P_PENDING: u8 = b'p';
const P_CHECKPOINT: u8 = b'k';
const P_FORK: u8 = b'f';
/// origin, seq -> signing time of the latest checkpoint held at that seq.
const P_CHECKPOINT_AT: u8 = b'K';
/// Attempts, 100 ms apart, to take sled's lock from a handle that is still closing.
const INDEX_LOCK_RETRIES: u32 = 50;
const RECORD_STATE_BYTES: usize = 1 + 4 + 8 + 32 + 8 + 8 + 32;

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
    /// Held repairs in the index. Almost always zero, which spares every new record a sled read.
    pending_repairs: Arc<AtomicU64>,
    local: Option<Region>,
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

fn key_record(prefix: u8, origin: Region, id: &RecordId) -> Vec<u8> {
    let mut k = key_origin(prefix, origin);
    k.extend_from_slice(&id.0);
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

fn encode_state(s: &RecordState) -> Vec<u8> {
    let mut v = Vec::with_capacity(RECORD_STATE_BYTES);
    v.push(s.category.as_u8());
    v.extend_from_slice(&s.version.to_be_bytes());
    v.extend_from_slice(&s.upsert_seq.to_be_bytes());
    v.extend_from_slice(&s.content_digest);
    v.extend_from_slice(&s.repaired_by_seq.to_be_bytes());
    v.extend_from_slice(&s.revoked_seq.to_be_bytes());
    v.extend_from_slice(&s.revoke_digest);
    v
}

fn decode_state(v: &[u8]) -> Option<RecordState> {
    if v.len() != RECORD_STATE_BYTES {
        return None;
    }
    Some(RecordState {
        category: Category::from_u8(v[0])?,
        version: u32::from_be_bytes(v[1..5].try_into().ok()?),
        upsert_seq: u64::from_be_bytes(v[5..13].try_into().ok()?),
        content_digest: v[13..45].try_into().ok()?,
        repaired_by_seq: u64::from_be_bytes(v[45..53].try_into().ok()?),
        revoked_seq: u64::from_be_bytes(v[53..61].try_into().ok()?),
        revoke_digest: v[61..93].try_into().ok()?,
    })
}

/// The latest checkpoint an index knows for an origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointRef {
    pub pos: JournalPos,
    pub seq: u64,
    /// When the origin signed it (unix seconds).
    pub at_unix_seconds: i64,
}

impl Index {
    /// `local`: the node's own origin. Its entries get the record and subject indexes, which the
    /// writer needs to decide publishes; other origins' entries get the chain indexes only (heads,
    /// runs, checkpoints, forks), so catching up on a peer is not bound by per-record sled writes.
    /// With None, every origin gets every index.
    pub fn open(path: &Path, cache_bytes: u64, local: Option<Region>) -> Result<Index, IndexError> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            // Measured here: about 1.5x the inserts per second of the default LowSpace mode.
            .mode(sled::Mode::HighThroughput)
            // sled writes its dirty pages itself this often; the journal, not sled, is the durability
            // point, so a lazy flush loses nothing.
            .flush_every_ms(Some(1000));
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
        let tree = db.open_tree("idx").map_err(|source| IndexError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let pending = tree.scan_prefix([P_PENDING]).count() as u64;
        Ok(Index {
            db,
            tree,
            pending_repairs: Arc::new(AtomicU64::new(pending)),
            local,
        })
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

    pub fn record(&self, origin: Region, id: &RecordId) -> Result<Option<RecordState>, IndexError> {
        match self.tree.get(key_record(P_RECORD, origin, id))? {
            None => Ok(None),
            Some(v) => decode_state(&v).map(Some).ok_or_else(|| IndexError::Damaged {
                key: format!("record {id} of {origin}"),
                reason: "undecodable record state".to_string(),
            }),
        }
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

    /// (origin, seq) of every entry about `subject` (see `SubjectKey::index_bytes`), in key order.
    pub fn subject_entries(&self, subject: &[u8], limit: usize) -> Result<Vec<(Region, u64)>, IndexError> {
        let mut prefix = vec![P_SUBJECT];
        prefix.extend_from_slice(subject);
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&prefix).take(limit) {
            let (k, _) = item?;
            let rest = &k[prefix.len()..];
            let damaged = || IndexError::Damaged {
                key: hex::encode(&k),
                reason: "bad subject key".to_string(),
            };
            let code = u32::from_be_bytes(rest.get(0..4).and_then(|b| b.try_into().ok()).ok_or_else(damaged)?);
            let seq = u64::from_be_bytes(rest.get(4..12).and_then(|b| b.try_into().ok()).ok_or_else(damaged)?);
            out.push((Region::from_code(code).map_err(|_| damaged())?, seq));
        }
        Ok(out)
    }

    /// Starts a group of updates; nothing is visible until `commit`.
    pub fn begin(&self) -> IndexBatch<'_> {
        IndexBatch {
            index: self,
            records: HashMap::new(),
            pending: HashMap::new(),
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
pub enum Source<'a> {
    /// Just built by the writer from this operation (linked and hashed by construction).
    Built(&'a Operation),
    /// From a peer: every entry checked by the link receiver, the batch linked to the head by
    /// the store.
    Checked,
    /// Read back from the journal (open, reindex, verify): every hash and link is checked again.
    Journal,
}

/// Updates of one group: an overlay over the committed index (so decisions inside the group see
/// earlier operations of the same group) plus the sled batch that makes them visible at once.
pub struct IndexBatch<'a> {
    index: &'a Index,
    /// Record states read or written in this batch: (state, written here). Reads are kept too, so
    /// a record is read from sled at most once per batch.
    records: HashMap<(Region, RecordId), (Option<RecordState>, bool)>,
    /// `None` = removed in this group.
    pending: HashMap<(Region, RecordId), Option<u64>>,
    heads: HashMap<Region, ChainHead>,
    /// (origin, seq) of the frame just indexed if it was an entry. Batches start after a
    /// checkpoint, so runs depend on the journal alone, never on batch boundaries.
    previous_entry: Option<(Region, u64)>,
    batch: sled::Batch,
}

/// The ledger's view of one origin inside a batch.
pub struct OriginState<'b, 'a> {
    batch: &'b mut IndexBatch<'a>,
    origin: Region,
    error: Option<IndexError>,
}

impl LedgerState for OriginState<'_, '_> {
    fn get(&mut self, id: &RecordId) -> Option<RecordState> {
        if let Some((s, _)) = self.batch.records.get(&(self.origin, *id)) {
            return *s;
        }
        match self.batch.index.record(self.origin, id) {
            Ok(s) => {
                self.batch.records.insert((self.origin, *id), (s, false));
                s
            }
            Err(e) => {
                self.error.get_or_insert(e);
                None
            }
        }
    }

    fn put(&mut self, id: RecordId, state: RecordState) {
        self.batch.records.insert((self.origin, id), (Some(state), true));
    }

    fn add_pending_repair(&mut self, target: RecordId, repair_seq: u64) {
        self.batch.pending.insert((self.origin, target), Some(repair_seq));
    }

    fn take_pending_repair(&mut self, target: &RecordId) -> Option<u64> {
        let key = (self.origin, *target);
        if let Some(slot) = self.batch.pending.get_mut(&key) {
            return slot.take();
        }
        if self.batch.index.pending_repairs.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let stored = match self.batch.index.tree.get(key_record(P_PENDING, self.origin, target)) {
            Ok(v) => v,
            Err(e) => {
                self.error.get_or_insert(e.into());
                None
            }
        };
        let seq = stored.and_then(|v| be_u64(&v, "pending repair").ok());
        if seq.is_some() {
            self.batch.pending.insert(key, None);
        }
        seq
    }
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

    /// The current state of a record, as of this batch.
    pub fn record(&mut self, origin: Region, id: &RecordId) -> Result<Option<RecordState>, IndexError> {
        let mut view = OriginState {
            batch: self,
            origin,
            error: None,
        };
        let s = view.get(id);
        match view.error {
            Some(e) => Err(e),
            None => Ok(s),
        }
    }

    /// Indexes one frame at `pos`; `source` says what has been checked already.
    pub fn index_frame(&mut self, pos: JournalPos, frame: &Frame, source: Source<'_>) -> Result<(), IndexError> {
        match frame {
            Frame::Entry(e) => {
                let mut head = self.head(e.origin)?;
                let broken = |err: String| IndexError::Damaged {
                    key: format!("head of {}", e.origin),
                    reason: format!("journal position {}: {err}", pos.0),
                };
                match source {
                    // Hashes were computed or verified moments ago: only the cheap link check.
                    Source::Built(_) | Source::Checked => {
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
                if self.index.local.is_some_and(|l| l != e.origin) {
                    return Ok(());
                }
                let decoded;
                let op = match source {
                    Source::Built(op) => Some(op),
                    _ => {
                        decoded = decode_stored(&e.op_bytes).ok();
                        decoded.as_ref()
                    }
                };
                if let Some(op) = op {
                    if let Operation::Upsert(rec) = op {
                        let mut k = vec![P_SUBJECT];
                        k.extend_from_slice(&rec.subject.index_bytes());
                        k.push(0);
                        k.extend_from_slice(&e.origin.code().to_be_bytes());
                        k.extend_from_slice(&e.seq.to_be_bytes());
                        self.batch.insert(k, &[]);
                    }
                    let mut view = OriginState {
                        batch: self,
                        origin: e.origin,
                        error: None,
                    };
                    ledger::apply(&mut view, op, e.seq, e.op_digest);
                    if let Some(err) = view.error {
                        return Err(err);
                    }
                }
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
        for ((origin, id), (state, written)) in &self.records {
            if let (Some(state), true) = (state, written) {
                self.batch
                    .insert(key_record(P_RECORD, *origin, id), encode_state(state));
            }
        }
        let (mut added, mut removed) = (0u64, 0u64);
        for ((origin, id), seq) in &self.pending {
            let key = key_record(P_PENDING, *origin, id);
            let existed = self.index.tree.contains_key(&key)?;
            match seq {
                Some(seq) => {
                    added += u64::from(!existed);
                    self.batch.insert(key, &seq.to_be_bytes());
                }
                None => {
                    removed += u64::from(existed);
                    self.batch.remove(key);
                }
            }
        }
        for (origin, head) in &self.heads {
            self.batch.insert(key_origin(P_HEAD, *origin), encode_head(head));
        }
        self.batch.insert(KEY_INDEXED, &end.0.to_be_bytes());
        self.index.tree.apply_batch(self.batch)?;
        // Only the single writer commits, so this count stays exact.
        self.index.pending_repairs.fetch_add(added, Ordering::Relaxed);
        self.index.pending_repairs.fetch_sub(removed, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_state_round_trips() {
        let s = RecordState {
            category: Category::CreditRepair,
            version: 3,
            upsert_seq: 77,
            content_digest: [5; 32],
            repaired_by_seq: 0,
            revoked_seq: 9,
            revoke_digest: [6; 32],
        };
        assert_eq!(decode_state(&encode_state(&s)), Some(s));
        assert_eq!(decode_state(&encode_state(&s)[1..]), None);
    }
}
