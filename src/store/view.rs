//! The merged cross-regional view: every origin's records, indexed behind the journal by the
//! indexer (`store::indexer`), in its own sled tree. What it holds, all derived from the journal
//! and rebuilt by `cxnode reindex`:
//! - record state per (origin, record id), in packed chunks (`chunks::ChunkMap`), with a Bloom
//!   filter in front so a new id costs no sled read;
//! - subject -> (origin, seq, journal position) postings, packed the same way;
//! - (category, origin) -> (seq, journal position) postings: one key per batch and pair,
//!   delta-encoded, at the right edge of the tree, so a filtered feed reads only its own category
//!   and origin, and then exactly the frames it sends (a position is a single read, where a seq
//!   alone would cost a walk of its run);
//! - the expiry schedule: publicity end month -> (date, origin, record id), per batch;
//! - entries whose operation does not decode, with the reason (indexed as such, never dropped);
//! - departments' receipts: per record, who (node, department) stopped showing it and when; per
//!   department, the vector its latest receipt says it has applied;
//! - the journal position indexed up to and each origin's seq indexed up to, in the same atomic
//!   batch as everything else.
//!
//! Invariants: a batch becomes visible whole or not at all (one `apply_batch`, under the view's
//! write lock, so a reader never sees a bucket half merged; the chunks it points at are written
//! and synced before, while readers go on, and level 0 in memory changes with it); the position never passes the
//! journal's durable end; entries are applied in journal order, so each origin's entries in seq
//! order, and the state is a function of each origin's log alone (two stores holding the same
//! entries in different journal orders hold the same view).

use super::bloom::Bloom;
use super::chunks::{ChunkError, ChunkMap};
use super::heap::ChunkHeap;
use super::journal::{Frame, JournalPos, JournalReader};
use crate::log::ledger::{self, Change, LedgerState, OpKind, RecordState};
use crate::log::Entry;
use crate::record::{summarize, Category, DisclosureClass, RecordId, Region, SharingClass, Summary};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

const TREE: &str = "view";
const KEY_META: &[u8] = b"V";
const KEY_SALT: &[u8] = b"Z";
const KEY_BUCKETS: &[u8] = b"B";
const KEY_FORMAT: &[u8] = b"F";
/// The view's key layout; a view of another layout is rebuilt with `cxnode reindex`.
/// (4: bucket chunks moved to the chunk heap, sled holding pointers; 5: level-0 chunks there too,
/// and buckets chosen by SipHash-1-3 keyed with the salt instead of SHA-256.)
const FORMAT: &[u8] = b"cx-view-5";
/// The chunk heap's directory, inside the view's sled directory.
pub const HEAP_DIR: &str = "chunks";
const P_RECORD: u8 = b'R';
const P_SUBJECT: u8 = b'S';
const P_CATEGORY: u8 = b'C';
const P_EXPIRY: u8 = b'E';
const P_UNDECODABLE: u8 = b'U';
const P_PENDING: u8 = b'P';
const P_ORIGIN: u8 = b'O';
/// Receipts: origin, record id, receiving node, seq -> received at, department.
const P_RECEIPT: u8 = b'Q';
/// What each department has applied, as its latest receipt says: node, department -> vector.
const P_APPLIED: u8 = b'A';
/// Append days: origin, day (Julian, China Standard Time) -> the first seq appended on a day later
/// than every earlier entry's (so the entries of `[from, to]` lie between two such seqs).
const P_DAY: u8 = b'D';
/// Posted entries appended on a day before an earlier entry's (an origin's clock stepped back)
/// or at an unreadable time: origin, seq -> journal position. They lie outside the day marks'
/// ranges, so a period reads them one by one.
const P_DAY_EXCEPTION: u8 = b'X';
/// Present when the day marks cover every entry (the view was made by a version that keeps them;
/// an older view is read without them until `cxnode reindex`).
const KEY_DAYS: &[u8] = b"W";
/// Buckets of the record and subject maps of a new view (`StoreConfig::view_buckets`). Catching
/// up, a batch writes about one chunk per bucket per map, so a batch of `BATCH_ENTRIES_MAX`
/// entries costs ~2 × this many sled keys.
pub const VIEW_BUCKETS: u32 = 2048;
/// Entries indexed per batch at most when catching up, by default
/// (`store.index_batch_entries_max`); live, a batch is whatever the writer committed since the
/// last one.
pub const BATCH_ENTRIES_MAX: usize = 50_000;
/// Subject index bytes held (a length byte and the tagged identifier, zero-padded).
const SUBJECT_BYTES: usize = 20;
const RECORD_KEY_BYTES: usize = 4 + 16;
const RECORD_VALUE_BYTES: usize = 4 + 4 + 4 * 8 + 4 + SUBJECT_BYTES;
const SUBJECT_ITEM_BYTES: usize = SUBJECT_BYTES + 4 + 8;
/// A subject posting's value: the journal position of the entry's frame.
const SUBJECT_VALUE_BYTES: usize = 8;
const EXPIRY_ITEM_BYTES: usize = 4 + 4 + 16;
const NO_DATE: i32 = i32::MIN;

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("merged view (sled): {0}")]
    Sled(#[from] sled::Error),
    #[error("merged view: {0}; run `cxnode reindex --data <DIR>` if it is damage")]
    Heap(#[from] super::heap::HeapError),
    #[error(transparent)]
    Journal(#[from] super::journal::JournalError),
    #[error(
        "merged view is damaged at {key}: {reason}; run `cxnode reindex --data <DIR>` to rebuild it from the journal"
    )]
    Damaged { key: String, reason: String },
    #[error("merged view: journal position {pos}: entry {origin}/{seq} is out of order (expected seq {expected}); the journal and the view disagree: run `cxnode reindex`")]
    OutOfOrder {
        pos: u64,
        origin: Region,
        seq: u64,
        expected: u64,
    },
    #[error(
        "merged view: the thread reading operations for the indexer stopped (see the log for why); restart the node"
    )]
    ReaderStopped,
}

impl From<ChunkError> for ViewError {
    fn from(e: ChunkError) -> ViewError {
        match e {
            ChunkError::Sled(e) => ViewError::Sled(e),
            ChunkError::Heap(e) => ViewError::Heap(e),
        }
    }
}

/// A record as the merged view knows it: its latest operation applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViewRecord {
    pub category: Category,
    /// Kind of the latest operation on the record.
    pub kind: OpKind,
    pub disclosure: DisclosureClass,
    pub sharing: SharingClass,
    pub version: u32,
    /// Seq of the latest entry that changed the record (upsert or revocation).
    pub latest_seq: u64,
    pub upsert_seq: u64,
    pub repaired_by_seq: u64,
    pub revoked_seq: u64,
    pub publicity_end: Option<time::Date>,
    subject: [u8; SUBJECT_BYTES],
}

impl ViewRecord {
    /// The subject's index bytes (`SubjectKey::index_bytes`).
    pub fn subject(&self) -> &[u8] {
        let len = usize::from(self.subject[0]).min(SUBJECT_BYTES - 1);
        &self.subject[1..1 + len]
    }

    pub fn repaired(&self) -> bool {
        self.repaired_by_seq != 0
    }

    pub fn revoked(&self) -> bool {
        self.revoked_seq != 0
    }

    /// Publicity ended before `today` (a record without an end date never expires).
    pub fn expired(&self, today: time::Date) -> bool {
        self.publicity_end.is_some_and(|end| end < today)
    }

    /// The ledger's part of the state. Digests are not kept in the view (a publish decision that
    /// needs one reads it from the journal entry at the seq).
    pub fn ledger_state(&self) -> RecordState {
        RecordState {
            category: self.category,
            version: self.version,
            upsert_seq: self.upsert_seq,
            content_digest: [0; 32],
            repaired_by_seq: self.repaired_by_seq,
            revoked_seq: self.revoked_seq,
            revoke_digest: [0; 32],
        }
    }
}

fn kind_code(k: OpKind) -> u8 {
    match k {
        OpKind::Publish => 1,
        OpKind::Amend => 2,
        OpKind::Repair => 3,
        OpKind::Revoke => 4,
        OpKind::Receipt => 5,
    }
}

fn kind_from(code: u8) -> Option<OpKind> {
    Some(match code {
        1 => OpKind::Publish,
        2 => OpKind::Amend,
        3 => OpKind::Repair,
        4 => OpKind::Revoke,
        5 => OpKind::Receipt,
        _ => return None,
    })
}

fn disclosure_code(d: DisclosureClass) -> u8 {
    match d {
        DisclosureClass::Public => 1,
        DisclosureClass::Limited => 2,
        DisclosureClass::NonPublic => 3,
    }
}

fn sharing_code(s: SharingClass) -> u8 {
    match s {
        SharingClass::Unconditional => 1,
        SharingClass::Conditional => 2,
        SharingClass::NotShared => 3,
    }
}

fn julian(d: Option<time::Date>) -> i32 {
    d.map_or(NO_DATE, |d| d.to_julian_day())
}

fn encode_record(r: &ViewRecord) -> [u8; RECORD_VALUE_BYTES] {
    let mut v = [0u8; RECORD_VALUE_BYTES];
    v[0] = r.category.as_u8();
    v[1] = kind_code(r.kind);
    v[2] = disclosure_code(r.disclosure);
    v[3] = sharing_code(r.sharing);
    v[4..8].copy_from_slice(&r.version.to_be_bytes());
    v[8..16].copy_from_slice(&r.latest_seq.to_be_bytes());
    v[16..24].copy_from_slice(&r.upsert_seq.to_be_bytes());
    v[24..32].copy_from_slice(&r.repaired_by_seq.to_be_bytes());
    v[32..40].copy_from_slice(&r.revoked_seq.to_be_bytes());
    v[40..44].copy_from_slice(&julian(r.publicity_end).to_be_bytes());
    v[44..].copy_from_slice(&r.subject);
    v
}

fn decode_record(v: &[u8]) -> Option<ViewRecord> {
    if v.len() != RECORD_VALUE_BYTES {
        return None;
    }
    let u64_at = |i: usize| u64::from_be_bytes(v[i..i + 8].try_into().expect("8 bytes"));
    let disclosure = match v[2] {
        1 => DisclosureClass::Public,
        2 => DisclosureClass::Limited,
        3 => DisclosureClass::NonPublic,
        _ => return None,
    };
    let sharing = match v[3] {
        1 => SharingClass::Unconditional,
        2 => SharingClass::Conditional,
        3 => SharingClass::NotShared,
        _ => return None,
    };
    let end = i32::from_be_bytes(v[40..44].try_into().expect("4 bytes"));
    Some(ViewRecord {
        category: Category::from_u8(v[0])?,
        kind: kind_from(v[1])?,
        disclosure,
        sharing,
        version: u32::from_be_bytes(v[4..8].try_into().expect("4 bytes")),
        latest_seq: u64_at(8),
        upsert_seq: u64_at(16),
        repaired_by_seq: u64_at(24),
        revoked_seq: u64_at(32),
        publicity_end: if end == NO_DATE {
            None
        } else {
            Some(time::Date::from_julian_day(end).ok()?)
        },
        subject: v[44..].try_into().expect("subject bytes"),
    })
}

fn record_key(origin: Region, id: &RecordId) -> [u8; RECORD_KEY_BYTES] {
    let mut k = [0u8; RECORD_KEY_BYTES];
    k[..4].copy_from_slice(&origin.code().to_be_bytes());
    k[4..].copy_from_slice(&id.0);
    k
}

/// The subject field as stored: length byte, then the index bytes. None if it does not fit.
fn subject_field(index_bytes: &[u8]) -> Option<[u8; SUBJECT_BYTES]> {
    if index_bytes.len() >= SUBJECT_BYTES {
        return None;
    }
    let mut s = [0u8; SUBJECT_BYTES];
    s[0] = index_bytes.len() as u8;
    s[1..1 + index_bytes.len()].copy_from_slice(index_bytes);
    Some(s)
}

fn origin_key(prefix: u8, origin: Region) -> Vec<u8> {
    let mut k = vec![prefix];
    k.extend_from_slice(&origin.code().to_be_bytes());
    k
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Where the view stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ViewPosition {
    /// Journal position indexed up to.
    pub pos: JournalPos,
    /// Entries indexed (all origins).
    pub entries: u64,
    /// Entries whose operation did not decode.
    pub undecodable: u64,
    chunk: u64,
}

impl ViewPosition {
    fn encode(&self) -> [u8; 32] {
        let mut v = [0u8; 32];
        v[..8].copy_from_slice(&self.pos.0.to_be_bytes());
        v[8..16].copy_from_slice(&self.entries.to_be_bytes());
        v[16..24].copy_from_slice(&self.undecodable.to_be_bytes());
        v[24..].copy_from_slice(&self.chunk.to_be_bytes());
        v
    }

    fn decode(v: &[u8]) -> Option<ViewPosition> {
        if v.len() != 32 {
            return None;
        }
        let at = |i: usize| u64::from_be_bytes(v[i..i + 8].try_into().expect("8 bytes"));
        Some(ViewPosition {
            pos: JournalPos(at(0)),
            entries: at(8),
            undecodable: at(16),
            chunk: at(24),
        })
    }
}

/// The shape of a view's packed maps: buckets (used when the view is created; an existing view
/// keeps its own) and level-0 items per bucket before a flush. Tests use small ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViewLayout {
    pub buckets: u32,
    pub level0_items_per_bucket: u64,
}

impl Default for ViewLayout {
    fn default() -> ViewLayout {
        ViewLayout {
            buckets: VIEW_BUCKETS,
            level0_items_per_bucket: super::chunks::LEVEL0_ITEMS_PER_BUCKET,
        }
    }
}

/// Where an entry of a posting list is: its origin, seq and the journal position of its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Posting {
    pub origin: Region,
    pub seq: u64,
    pub pos: JournalPos,
}

/// One department's receipt for one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptRow {
    /// The node that serves the department (whose log holds the receipt).
    pub node: Region,
    pub seq: u64,
    pub department: String,
    pub received_at_unix: i64,
}

/// What a department has applied, as its latest receipt at one node says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub node: Region,
    pub department: String,
    pub next: BTreeMap<Region, u64>,
    pub received_at_unix: i64,
}

/// An entry the view could not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undecodable {
    pub origin: Region,
    pub seq: u64,
    pub reason: String,
}

pub struct View {
    tree: sled::Tree,
    records: ChunkMap,
    subjects: ChunkMap,
    heap: std::sync::Arc<ChunkHeap>,
    bloom: Bloom,
    /// Readers hold it shared; a commit holds it exclusively, so a chunk merge is never seen half
    /// done by a scan.
    lock: RwLock<()>,
    position: Mutex<ViewPosition>,
    origins: Mutex<BTreeMap<Region, u64>>,
    /// Held repairs stored (almost always zero, which spares every new record a sled read).
    pending: AtomicU64,
    /// Each origin's latest marked append day (`P_DAY`).
    days: Mutex<HashMap<Region, u32>>,
    days_complete: std::sync::atomic::AtomicBool,
}

/// Where one origin's entries of a period lie: every posted entry appended in it has a seq in
/// `first..=last` or is one of `exceptions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeriodSeqs {
    pub first: u64,
    pub last: u64,
    pub exceptions: Vec<Posting>,
}

impl View {
    /// Opens the view in `db`, the sled database in `dir` (its chunk heap is in `dir/chunks`);
    /// `buckets` is used only when the view is created (the layout of an existing view is
    /// recorded in it).
    pub fn open(db: &sled::Db, dir: &std::path::Path, layout: ViewLayout) -> Result<View, ViewError> {
        let ViewLayout {
            buckets,
            level0_items_per_bucket,
        } = layout;
        let tree = db.open_tree(TREE)?;
        match tree.get(KEY_FORMAT)? {
            Some(f) if f.as_ref() == FORMAT => {}
            Some(f) => {
                return Err(ViewError::Damaged {
                    key: "format".into(),
                    reason: format!(
                        "layout {:?} is not this version's {:?}",
                        String::from_utf8_lossy(&f),
                        String::from_utf8_lossy(FORMAT)
                    ),
                })
            }
            None if tree.is_empty() => {
                tree.insert(KEY_FORMAT, FORMAT)?;
                tree.insert(KEY_DAYS, &[1u8])?;
            }
            None => {
                return Err(ViewError::Damaged {
                    key: "format".into(),
                    reason: "written by an earlier version without a layout mark".into(),
                })
            }
        }
        let buckets = match tree.get(KEY_BUCKETS)? {
            Some(v) => u32::from_be_bytes(v.as_ref().try_into().map_err(|_| ViewError::Damaged {
                key: "buckets".into(),
                reason: "wrong length".into(),
            })?),
            None => {
                tree.insert(KEY_BUCKETS, &buckets.max(1).to_be_bytes())?;
                buckets.max(1)
            }
        };
        let salt: [u8; 16] = match tree.get(KEY_SALT)? {
            Some(v) => v.as_ref().try_into().map_err(|_| ViewError::Damaged {
                key: "salt".into(),
                reason: "wrong length".into(),
            })?,
            None => {
                let salt: [u8; 16] = rand::random();
                tree.insert(KEY_SALT, &salt)?;
                salt
            }
        };
        let position = match tree.get(KEY_META)? {
            None => ViewPosition::default(),
            Some(v) => ViewPosition::decode(&v).ok_or_else(|| ViewError::Damaged {
                key: "position".into(),
                reason: "wrong length".into(),
            })?,
        };
        let mut origins = BTreeMap::new();
        for kv in tree.scan_prefix([P_ORIGIN]) {
            let (k, v) = kv?;
            let damaged = || ViewError::Damaged {
                key: hex::encode(&k),
                reason: "bad origin position".into(),
            };
            let code = u32::from_be_bytes(k.get(1..5).and_then(|b| b.try_into().ok()).ok_or_else(damaged)?);
            let seq = u64::from_be_bytes(v.as_ref().try_into().map_err(|_| damaged())?);
            origins.insert(Region::from_code(code).map_err(|_| damaged())?, seq);
        }
        let pending = tree.scan_prefix([P_PENDING]).count() as u64;
        let days_complete = tree.contains_key(KEY_DAYS)?;
        let mut days = HashMap::new();
        for origin in origins.keys() {
            if let Some(kv) = tree.scan_prefix(origin_key(P_DAY, *origin)).next_back() {
                let (k, _) = kv?;
                let day = k
                    .get(5..9)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes)
                    .ok_or_else(|| ViewError::Damaged {
                        key: hex::encode(&k),
                        reason: "bad day mark".into(),
                    })?;
                days.insert(*origin, day);
            }
        }
        let heap = std::sync::Arc::new(ChunkHeap::open(&dir.join(HEAP_DIR))?);
        let records = ChunkMap::open(
            &tree,
            P_RECORD,
            (RECORD_KEY_BYTES, RECORD_VALUE_BYTES),
            RECORD_KEY_BYTES,
            (buckets, level0_items_per_bucket),
            salt,
            heap.clone(),
        )?;
        let subjects = ChunkMap::open(
            &tree,
            P_SUBJECT,
            (SUBJECT_ITEM_BYTES, SUBJECT_VALUE_BYTES),
            SUBJECT_BYTES,
            (buckets, level0_items_per_bucket),
            salt,
            heap.clone(),
        )?;
        // Both maps have counted what they point at: segments nothing points at go.
        heap.finish_open()?;
        Ok(View {
            records,
            subjects,
            heap,
            tree,
            bloom: Bloom::default(),
            lock: RwLock::new(()),
            position: Mutex::new(position),
            origins: Mutex::new(origins),
            pending: AtomicU64::new(pending),
            days: Mutex::new(days),
            days_complete: std::sync::atomic::AtomicBool::new(days_complete),
        })
    }

    /// Fills the Bloom filter from the stored records (at start, off the serving path; until it
    /// completes, every lookup reads sled).
    pub fn load_filter(&self) -> Result<u64, ViewError> {
        let mut n = 0u64;
        {
            let _shared = self.lock.read().expect("view lock");
            self.records.for_each(&self.tree, |k, _| {
                self.bloom.insert(k);
                n += 1;
            })?;
        }
        self.bloom.mark_complete();
        Ok(n)
    }

    /// Builds the subject map's chunk filters (the record map's are built by `load_filter`), a
    /// bucket at a time under the shared lock, so commits go on between buckets. Holds the view
    /// only during a bucket: returns false (stopped) once nothing else holds it.
    pub fn warm_subject_filters(view: &std::sync::Weak<View>) -> Result<bool, ViewError> {
        let mut bucket = 0;
        loop {
            let Some(v) = view.upgrade() else {
                return Ok(false);
            };
            if bucket >= v.subjects.buckets() {
                return Ok(true);
            }
            let _shared = v.lock.read().expect("view lock");
            v.subjects.warm_filters(&v.tree, bucket)?;
            bucket += 1;
        }
    }

    /// Chunks whose value is not a whole number of items (lookups skip them; `verify` names them).
    pub fn damaged_chunks(&self) -> Result<Vec<String>, ViewError> {
        let _shared = self.lock.read().expect("view lock");
        let mut out: Vec<String> = self
            .records
            .damaged(&self.tree)?
            .iter()
            .map(ToString::to_string)
            .collect();
        out.extend(self.subjects.damaged(&self.tree)?.iter().map(ToString::to_string));
        Ok(out)
    }

    /// Writes sled's dirty pages now (it does so itself every second).
    pub fn flush(&self) -> Result<(), ViewError> {
        self.tree.flush()?;
        Ok(())
    }

    /// Memory held by the Bloom filter and the chunk filters.
    pub fn filter_bytes(&self) -> u64 {
        self.bloom.bytes() + self.records.filter_bytes() + self.subjects.filter_bytes()
    }

    /// Whether the day marks cover every entry (`period_seqs` answers).
    pub fn days_complete(&self) -> bool {
        self.days_complete.load(Ordering::Relaxed)
    }

    /// Behaves as a view made by a version without day marks (tests of the fallback).
    #[cfg(test)]
    pub(crate) fn forget_day_marks(&self) {
        self.days_complete.store(false, Ordering::Relaxed);
    }

    pub fn position(&self) -> ViewPosition {
        *self.position.lock().expect("view position lock")
    }

    /// Each origin's seq indexed up to.
    pub fn origin_seqs(&self) -> BTreeMap<Region, u64> {
        self.origins.lock().expect("view origins lock").clone()
    }

    pub fn origin_seq(&self, origin: Region) -> u64 {
        self.origins
            .lock()
            .expect("view origins lock")
            .get(&origin)
            .copied()
            .unwrap_or(0)
    }

    fn record_unlocked(&self, key: &[u8; RECORD_KEY_BYTES]) -> Result<Option<ViewRecord>, ViewError> {
        if !self.bloom.may_contain(key) {
            return Ok(None);
        }
        match self.records.get(&self.tree, key)? {
            None => Ok(None),
            Some(v) => decode_record(&v).map(Some).ok_or_else(|| ViewError::Damaged {
                key: hex::encode(key),
                reason: "undecodable record state".into(),
            }),
        }
    }

    pub fn record(&self, origin: Region, id: &RecordId) -> Result<Option<ViewRecord>, ViewError> {
        let key = record_key(origin, id);
        // "Certainly new" needs no lock: a key enters the filter before the commit that stores
        // it takes effect, so a reader told "new" during a commit sees the state before it (as
        // it would have waiting for the lock). The writer's decision of every new id then never
        // waits for an indexer commit (which holds the lock while it applies its batch).
        if !self.bloom.may_contain(&key) {
            return Ok(None);
        }
        let _shared = self.lock.read().expect("view lock");
        self.record_unlocked(&key)
    }

    /// Where `origin`'s entries appended in `[from, to]` (days in China Standard Time) lie, from
    /// the day marks; None when this view's marks do not cover every entry (made by an older
    /// version: then every posting must be read).
    pub fn period_seqs(
        &self,
        origin: Region,
        from: time::Date,
        to: time::Date,
    ) -> Result<Option<PeriodSeqs>, ViewError> {
        if !self.days_complete() {
            return Ok(None);
        }
        let _shared = self.lock.read().expect("view lock");
        let key = |day: i64| {
            let mut k = origin_key(P_DAY, origin);
            k.extend_from_slice(&(day.clamp(0, i64::from(u32::MAX)) as u32).to_be_bytes());
            k
        };
        let prefix = origin_key(P_DAY, origin);
        let seq_at = |kv: Option<sled::Result<(sled::IVec, sled::IVec)>>| -> Result<Option<u64>, ViewError> {
            match kv {
                None => Ok(None),
                Some(kv) => {
                    let (k, v) = kv?;
                    if !k.starts_with(&prefix) {
                        return Ok(None);
                    }
                    let seq = v
                        .as_ref()
                        .try_into()
                        .map(u64::from_be_bytes)
                        .map_err(|_| ViewError::Damaged {
                            key: hex::encode(&k),
                            reason: "bad day mark".into(),
                        })?;
                    Ok(Some(seq))
                }
            }
        };
        let first = seq_at(self.tree.range(key(i64::from(from.to_julian_day()))..).next())?.unwrap_or(u64::MAX);
        let after = seq_at(self.tree.range(key(i64::from(to.to_julian_day()) + 1)..).next())?;
        let last = after.map_or(u64::MAX, |s| s.saturating_sub(1));
        let mut exceptions = Vec::new();
        for kv in self.tree.scan_prefix(origin_key(P_DAY_EXCEPTION, origin)) {
            let (k, v) = kv?;
            let damaged = || ViewError::Damaged {
                key: hex::encode(&k),
                reason: "bad day exception".into(),
            };
            let seq = k
                .get(5..13)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(damaged)?;
            let pos = v.as_ref().try_into().map(u64::from_be_bytes).map_err(|_| damaged())?;
            exceptions.push(Posting {
                origin,
                seq,
                pos: JournalPos(pos),
            });
        }
        Ok(Some(PeriodSeqs {
            first,
            last,
            exceptions,
        }))
    }

    fn latest_day(&self, origin: Region) -> Option<u32> {
        self.days.lock().expect("view days lock").get(&origin).copied()
    }

    /// `record` of each of `ids`, in their order, with each bucket of the record map read once
    /// for all (bulk look-ups: the evaluation's ended records and repair targets).
    pub fn records_many(&self, ids: &[(Region, RecordId)]) -> Result<Vec<Option<ViewRecord>>, ViewError> {
        let keys: Vec<[u8; RECORD_KEY_BYTES]> = ids.iter().map(|(o, id)| record_key(*o, id)).collect();
        let _shared = self.lock.read().expect("view lock");
        let maybe: Vec<usize> = (0..keys.len()).filter(|i| self.bloom.may_contain(&keys[*i])).collect();
        let asked: Vec<&[u8]> = maybe.iter().map(|i| &keys[*i][..]).collect();
        let mut out = vec![None; keys.len()];
        for (i, v) in maybe.into_iter().zip(self.records.get_many(&self.tree, &asked)?) {
            if let Some(v) = v {
                out[i] = Some(decode_record(&v).ok_or_else(|| ViewError::Damaged {
                    key: hex::encode(keys[i]),
                    reason: "undecodable record state".into(),
                })?);
            }
        }
        Ok(out)
    }

    /// Every entry about `subject` (`SubjectKey::index_bytes`), in (origin, seq) order.
    pub fn subject_entries(&self, subject: &[u8]) -> Result<Vec<Posting>, ViewError> {
        let Some(field) = subject_field(subject) else {
            return Ok(Vec::new());
        };
        let _shared = self.lock.read().expect("view lock");
        let mut out = Vec::new();
        for (k, v) in self.subjects.with_prefix(&self.tree, &field)? {
            let code = u32::from_be_bytes(k[SUBJECT_BYTES..SUBJECT_BYTES + 4].try_into().expect("4 bytes"));
            let seq = u64::from_be_bytes(k[SUBJECT_BYTES + 4..].try_into().expect("8 bytes"));
            // Never the key itself in a message: it holds the subject (a resident ID number).
            let damaged = |reason: &str| ViewError::Damaged {
                key: format!("subject posting {code}/{seq}"),
                reason: reason.into(),
            };
            let origin = Region::from_code(code).map_err(|_| damaged("subject posting names no province"))?;
            let pos = v
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| damaged("subject posting without a journal position"))?;
            out.push(Posting {
                origin,
                seq,
                pos: JournalPos(pos),
            });
        }
        out.sort();
        Ok(out)
    }

    /// `origin`'s entries that changed a record of `category`, from `from_seq` on, at most
    /// `limit`, in seq order. Reads only this category's and origin's keys.
    pub fn category_entries(
        &self,
        category: Category,
        origin: Region,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Posting>, ViewError> {
        self.category_entries_through(category, origin, from_seq, u64::MAX, limit)
    }

    /// `category_entries` that stops at `to_seq` (a feed's step window) instead of decoding
    /// postings it would drop.
    pub fn category_entries_through(
        &self,
        category: Category,
        origin: Region,
        from_seq: u64,
        to_seq: u64,
        limit: usize,
    ) -> Result<Vec<Posting>, ViewError> {
        let _shared = self.lock.read().expect("view lock");
        self.category_entries_unlocked(category, origin, from_seq, to_seq, limit)
    }

    /// `category_entries` for a caller that holds the view lock (a second read lock on one
    /// thread can deadlock behind a waiting writer).
    fn category_entries_unlocked(
        &self,
        category: Category,
        origin: Region,
        from_seq: u64,
        to_seq: u64,
        limit: usize,
    ) -> Result<Vec<Posting>, ViewError> {
        let mut prefix = vec![P_CATEGORY, category.as_u8()];
        prefix.extend_from_slice(&origin.code().to_be_bytes());
        let mut start = prefix.clone();
        // The key holding `from_seq` starts at or before it: begin at the last key <= from_seq.
        let mut at_from = prefix.clone();
        at_from.extend_from_slice(&from_seq.to_be_bytes());
        if let Some(kv) = self.tree.range(prefix.clone()..=at_from).next_back() {
            start = kv?.0.to_vec();
        }
        let mut out = Vec::new();
        'keys: for kv in self.tree.range(start..) {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let damaged = || ViewError::Damaged {
                key: hex::encode(&k),
                reason: "bad category postings".into(),
            };
            // The key carries the first seq; the value holds (seq delta, position delta) pairs,
            // the first pair (0, absolute position).
            let mut seq = u64::from_be_bytes(k.get(6..14).and_then(|b| b.try_into().ok()).ok_or_else(damaged)?);
            let mut pos = 0u64;
            let mut at = 0;
            while at < v.len() {
                seq += get_varint(&v, &mut at).ok_or_else(damaged)?;
                pos += get_varint(&v, &mut at).ok_or_else(damaged)?;
                if seq > to_seq {
                    break 'keys;
                }
                if seq >= from_seq && out.len() < limit {
                    out.push(Posting {
                        origin,
                        seq,
                        pos: JournalPos(pos),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Records whose publicity ends in `[from, to]`: (end date, origin, record id). An amendment
    /// that moved the date leaves the old entry here: check the record's current state.
    pub fn expiring(&self, from: time::Date, to: time::Date) -> Result<Vec<(time::Date, Region, RecordId)>, ViewError> {
        let month = |d: time::Date| (d.year() * 12 + i32::from(u8::from(d.month())) - 1) as u32;
        let mut low = vec![P_EXPIRY];
        low.extend_from_slice(&month(from).to_be_bytes());
        let mut high = vec![P_EXPIRY];
        high.extend_from_slice(&(month(to) + 1).to_be_bytes());
        let _shared = self.lock.read().expect("view lock");
        let mut out = Vec::new();
        for kv in self.tree.range(low..high) {
            let (k, v) = kv?;
            let damaged = || ViewError::Damaged {
                key: hex::encode(&k),
                reason: "bad expiry schedule".into(),
            };
            if v.len() % EXPIRY_ITEM_BYTES != 0 {
                return Err(damaged());
            }
            for item in v.chunks_exact(EXPIRY_ITEM_BYTES) {
                let date = time::Date::from_julian_day(i32::from_be_bytes(item[..4].try_into().expect("4 bytes")))
                    .map_err(|_| damaged())?;
                let origin = Region::from_code(u32::from_be_bytes(item[4..8].try_into().expect("4 bytes")))
                    .map_err(|_| damaged())?;
                if date >= from && date <= to {
                    out.push((date, origin, RecordId(item[8..].try_into().expect("16 bytes"))));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Receipts that list `origin`'s record `id` as stopped, in (node, seq) order.
    pub fn receipts(&self, origin: Region, id: &RecordId) -> Result<Vec<ReceiptRow>, ViewError> {
        let mut prefix = origin_key(P_RECEIPT, origin);
        prefix.extend_from_slice(&id.0);
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let damaged = || ViewError::Damaged {
                key: hex::encode(&k),
                reason: "bad receipt".into(),
            };
            let node = u32::from_be_bytes(k.get(21..25).and_then(|b| b.try_into().ok()).ok_or_else(damaged)?);
            let seq = u64::from_be_bytes(k.get(25..33).and_then(|b| b.try_into().ok()).ok_or_else(damaged)?);
            let at = i64::from_be_bytes(v.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(damaged)?);
            out.push(ReceiptRow {
                node: Region::from_code(node).map_err(|_| damaged())?,
                seq,
                department: String::from_utf8_lossy(&v[8..]).into_owned(),
                received_at_unix: at,
            });
        }
        Ok(out)
    }

    /// Every department's latest applied vector, per node that serves it.
    pub fn applied(&self) -> Result<Vec<Applied>, ViewError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix([P_APPLIED]) {
            let (k, v) = kv?;
            let damaged = || ViewError::Damaged {
                key: hex::encode(&k),
                reason: "bad applied vector".into(),
            };
            let node = u32::from_be_bytes(k.get(1..5).and_then(|b| b.try_into().ok()).ok_or_else(damaged)?);
            let at = i64::from_be_bytes(v.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(damaged)?);
            let mut next = BTreeMap::new();
            if (v.len() - 8) % 12 != 0 {
                return Err(damaged());
            }
            for item in v[8..].chunks_exact(12) {
                let o = Region::from_code(u32::from_be_bytes(item[..4].try_into().expect("4 bytes")))
                    .map_err(|_| damaged())?;
                next.insert(o, u64::from_be_bytes(item[4..].try_into().expect("8 bytes")));
            }
            out.push(Applied {
                node: Region::from_code(node).map_err(|_| damaged())?,
                department: String::from_utf8_lossy(&k[5..]).into_owned(),
                next,
                received_at_unix: at,
            });
        }
        Ok(out)
    }

    /// Entries that did not decode, in (origin, seq) order, at most `limit`.
    pub fn undecodable(&self, limit: usize) -> Result<Vec<Undecodable>, ViewError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix([P_UNDECODABLE]).take(limit) {
            let (k, v) = kv?;
            let damaged = || ViewError::Damaged {
                key: hex::encode(&k),
                reason: "bad undecodable entry key".into(),
            };
            let code = u32::from_be_bytes(k.get(1..5).and_then(|b| b.try_into().ok()).ok_or_else(damaged)?);
            out.push(Undecodable {
                origin: Region::from_code(code).map_err(|_| damaged())?,
                seq: u64::from_be_bytes(k.get(5..13).and_then(|b| b.try_into().ok()).ok_or_else(damaged)?),
                reason: String::from_utf8_lossy(&v).into_owned(),
            });
        }
        Ok(out)
    }

    /// Everything the view holds, in a canonical order independent of batch boundaries, chunk
    /// layout and salt: one line per fact. Two views of the same entries give the same lines
    /// (used by `verify` and the tests).
    pub fn logical_dump(&self, mut visit: impl FnMut(String)) -> Result<(), ViewError> {
        let _shared = self.lock.read().expect("view lock");
        let p = self.position();
        visit(format!("entries {} undecodable {}", p.entries, p.undecodable));
        for (o, s) in self.origin_seqs() {
            visit(format!("origin {o} seq {s}"));
        }
        let mut records = BTreeMap::new();
        let mut subjects = Vec::new();
        self.records.for_each(&self.tree, |k, v| {
            records.insert(k.to_vec(), decode_record(v));
        })?;
        self.subjects.for_each(&self.tree, |k, _| subjects.push(k.to_vec()))?;
        for (k, r) in records {
            visit(format!("record {} {r:?}", hex::encode(k)));
        }
        subjects.sort();
        for k in subjects {
            visit(format!("subject {}", hex::encode(k)));
        }
        let mut expiry = Vec::new();
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            match k.first() {
                Some(&P_EXPIRY) => {
                    for item in v.chunks_exact(EXPIRY_ITEM_BYTES) {
                        expiry.push(hex::encode(item));
                    }
                }
                Some(&P_UNDECODABLE) | Some(&P_PENDING) | Some(&P_RECEIPT) | Some(&P_APPLIED) => {
                    visit(format!("{} {}", hex::encode(&k), hex::encode(&v)));
                }
                // Day exceptions name journal positions, which differ between stores.
                Some(&P_DAY) if self.days_complete() => visit(format!("day {} {}", hex::encode(&k), hex::encode(&v))),
                Some(&P_DAY_EXCEPTION) if self.days_complete() => visit(format!("day-exception {}", hex::encode(&k))),
                _ => {}
            }
        }
        for c in Category::all() {
            for o in self.origin_seqs().into_keys() {
                // Positions differ between stores (journal order is arrival order): not a fact of
                // the view's content.
                let seqs: Vec<u64> = self
                    .category_entries_unlocked(*c, o, 0, u64::MAX, usize::MAX)?
                    .into_iter()
                    .map(|p| p.seq)
                    .collect();
                if !seqs.is_empty() {
                    visit(format!("category {} {o} {seqs:?}", c.code()));
                }
            }
        }
        expiry.sort();
        for e in expiry {
            visit(format!("expiry {e}"));
        }
        Ok(())
    }

    /// Starts a batch of updates over the committed view.
    pub fn begin(&self) -> ViewBatch<'_> {
        ViewBatch {
            view: self,
            position: self.position(),
            origins: HashMap::new(),
            records: HashMap::new(),
            new_keys: Vec::new(),
            pending: HashMap::new(),
            subjects: Vec::new(),
            categories: BTreeMap::new(),
            expiry: BTreeMap::new(),
            undecodable: Vec::new(),
            receipts: Vec::new(),
            days: HashMap::new(),
            day_marks: Vec::new(),
            day_exceptions: Vec::new(),
            exceptional: false,
            day_cache: Default::default(),
            error: None,
        }
    }

    /// Indexes the journal's frames from the view's position up to `to` (a durable end), in
    /// batches of at most `batch_entries_max` entries. `after_batch` is told each new position.
    pub fn catch_up(
        &self,
        reader: &JournalReader,
        to: JournalPos,
        batch_entries_max: usize,
        hints: Option<&super::hints::SummaryHints>,
        ops_reader: Option<&Reader>,
        mut after_batch: impl FnMut(&ViewPosition),
    ) -> Result<(), ViewError> {
        let batch_max = batch_entries_max.max(1);
        loop {
            let from = self.position().pos;
            if from >= to {
                return Ok(());
            }
            let mut batch = self.begin();
            let mut end = from;
            let mut entries = 0usize;
            let mut pending: Vec<(JournalPos, JournalPos, Entry)> = Vec::with_capacity(DECODE_GROUP_ENTRIES);
            let mut pending_bytes = 0usize;
            reader.scan(from, to, |at, frame_end, frame| {
                if let Frame::Entry(e) = frame {
                    pending_bytes += e.op_bytes.len();
                    pending.push((at, frame_end, e));
                    entries += 1;
                    if pending.len() == DECODE_GROUP_ENTRIES || pending_bytes >= DECODE_GROUP_BYTES_MAX {
                        index_group(&mut batch, &mut pending, hints, ops_reader)?;
                        pending_bytes = 0;
                    }
                }
                end = frame_end;
                Ok::<_, ViewError>(entries < batch_max)
            })?;
            index_group(&mut batch, &mut pending, hints, ops_reader)?;
            // Past the last frame there may be the group's commit frame, which readers do not
            // see: a batch that read everything ends at `to`.
            let end = if entries < batch_max { to } else { end };
            batch.commit(end)?;
            after_batch(&self.position());
        }
    }
}

/// Entries whose operations are read together, on two threads, before they are indexed in
/// order: reading an operation (`summarize`) is half of what indexing a replicated entry costs,
/// and the indexer is the one thread a replica's catch-up waits for. With
/// `DECODE_GROUP_BYTES_MAX`, bounds the entries held in memory at once.
pub const DECODE_GROUP_ENTRIES: usize = 2048;
/// Operation bytes a group holds at most (a record is ~1 KB, but may be 64 KiB).
pub const DECODE_GROUP_BYTES_MAX: usize = 8 << 20;

type Read = Option<Result<Summary, crate::record::Rejection>>;
type Group = Vec<(JournalPos, JournalPos, Entry)>;

/// Fills in what is not read yet: each entry's operation, as `summarize` reads it.
fn read_group(ops: &mut [Read], entries: &[(JournalPos, JournalPos, Entry)]) {
    for (op, (_, _, e)) in ops.iter_mut().zip(entries) {
        if op.is_none() {
            *op = Some(summarize(&e.op_bytes));
        }
    }
}

/// A thread that reads operations for the indexer, half of each group, while the indexer reads
/// the other half: one for the indexer's life (a thread per group cost more than the reading
/// it saved, in a virtual machine). It ends when the `Reader` is dropped.
pub struct Reader {
    jobs: std::sync::mpsc::SyncSender<(Group, Vec<Read>)>,
    done: std::sync::mpsc::Receiver<(Group, Vec<Read>)>,
}

impl Reader {
    pub fn spawn() -> std::io::Result<Reader> {
        // One job in flight at a time: the indexer waits for each before the next.
        let (jobs, inbox) = std::sync::mpsc::sync_channel::<(Group, Vec<Read>)>(1);
        let (outbox, done) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("cx-index-read".to_string())
            .spawn(move || {
                while let Ok((group, mut ops)) = inbox.recv() {
                    read_group(&mut ops, &group);
                    if outbox.send((group, ops)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Reader { jobs, done })
    }

    /// Reads `group`'s unread operations, the second half on the reader thread.
    fn read(&self, group: &mut Group, ops: &mut Vec<Read>) -> Result<(), ViewError> {
        let half = group.len() / 2;
        let (their_group, their_ops) = (group.split_off(half), ops.split_off(half));
        match self.jobs.send((their_group, their_ops)) {
            Ok(()) => {
                read_group(ops, group);
                // It answers every job it took unless it panicked: then the group is lost.
                let (g, o) = self.done.recv().map_err(|_| ViewError::ReaderStopped)?;
                group.extend(g);
                ops.extend(o);
            }
            Err(std::sync::mpsc::SendError((mut g, mut o))) => {
                read_group(&mut o, &g);
                read_group(ops, group);
                group.append(&mut g);
                ops.append(&mut o);
            }
        }
        Ok(())
    }
}

/// Indexes `group` (entries in journal order) into `batch` and empties it: the summaries the
/// writer handed over are taken in order, the other operations are read on this thread and,
/// with a `reader`, on its thread too, then every entry is indexed in order.
fn index_group(
    batch: &mut ViewBatch<'_>,
    group: &mut Group,
    hints: Option<&super::hints::SummaryHints>,
    reader: Option<&Reader>,
) -> Result<(), ViewError> {
    let mut ops: Vec<Read> = group
        .iter()
        .map(|(_, _, e)| hints.and_then(|h| h.take(e.origin, e.seq, &e.op_digest)).map(Ok))
        .collect();
    let unread = ops.iter().filter(|o| o.is_none()).count();
    match reader {
        Some(r) if unread >= 64 => r.read(group, &mut ops)?,
        _ => read_group(&mut ops, group),
    }
    for ((at, end, e), op) in group.drain(..).zip(ops) {
        batch.index_entry(at, end, &e, op)?;
    }
    Ok(())
}

/// Updates of one batch: an overlay over the committed view, so later entries see earlier ones.
pub struct ViewBatch<'a> {
    view: &'a View,
    position: ViewPosition,
    origins: HashMap<Region, u64>,
    records: HashMap<(Region, RecordId), (Option<ViewRecord>, bool)>,
    new_keys: Vec<[u8; RECORD_KEY_BYTES]>,
    /// `None` = taken in this batch.
    pending: HashMap<(Region, RecordId), Option<u64>>,
    /// Subject postings (items of `SUBJECT_ITEM_BYTES + SUBJECT_VALUE_BYTES`, one after another).
    subjects: Vec<u8>,
    categories: BTreeMap<(u8, u32), Vec<(u64, JournalPos)>>,
    expiry: BTreeMap<u32, Vec<u8>>,
    undecodable: Vec<(Region, u64, String)>,
    /// Receipt and applied-vector keys of this batch (key, value), later ones win.
    receipts: Vec<(Vec<u8>, Vec<u8>)>,
    /// Latest marked append day per origin in this batch, the marks and the exceptions.
    days: HashMap<Region, u32>,
    day_marks: Vec<(Region, u32, u64)>,
    day_exceptions: Vec<(Region, u64, JournalPos)>,
    /// The entry being indexed lies outside the day marks (posted as a day exception).
    exceptional: bool,
    day_cache: crate::evaluate::facts::DayCache,
    error: Option<ViewError>,
}

struct OriginView<'b, 'a> {
    batch: &'b mut ViewBatch<'a>,
    origin: Region,
}

impl LedgerState for OriginView<'_, '_> {
    fn get(&mut self, id: &RecordId) -> Option<RecordState> {
        self.batch.get(self.origin, id).map(|r| r.ledger_state())
    }

    fn put(&mut self, id: RecordId, state: RecordState) {
        let existing = self.batch.get(self.origin, &id);
        let record = match existing {
            Some(mut r) => {
                r.category = state.category;
                r.version = state.version;
                r.upsert_seq = state.upsert_seq;
                r.repaired_by_seq = state.repaired_by_seq;
                r.revoked_seq = state.revoked_seq;
                r
            }
            // The caller fills in the rest from the operation.
            None => ViewRecord {
                category: state.category,
                kind: OpKind::Publish,
                disclosure: DisclosureClass::NonPublic,
                sharing: SharingClass::NotShared,
                version: state.version,
                latest_seq: state.upsert_seq,
                upsert_seq: state.upsert_seq,
                repaired_by_seq: state.repaired_by_seq,
                revoked_seq: state.revoked_seq,
                publicity_end: None,
                subject: [0; SUBJECT_BYTES],
            },
        };
        if existing.is_none() {
            self.batch.new_keys.push(record_key(self.origin, &id));
        }
        self.batch.records.insert((self.origin, id), (Some(record), true));
    }

    fn add_pending_repair(&mut self, target: RecordId, repair_seq: u64) {
        self.batch.pending.insert((self.origin, target), Some(repair_seq));
    }

    fn take_pending_repair(&mut self, target: &RecordId) -> Option<u64> {
        let key = (self.origin, *target);
        if let Some(slot) = self.batch.pending.get_mut(&key) {
            return slot.take();
        }
        if self.batch.view.pending.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut k = origin_key(P_PENDING, self.origin);
        k.extend_from_slice(&target.0);
        match self.batch.view.tree.get(k) {
            Ok(Some(v)) => {
                let seq = v.as_ref().try_into().ok().map(u64::from_be_bytes);
                self.batch.pending.insert(key, None);
                seq
            }
            Ok(None) => None,
            Err(e) => {
                self.batch.error.get_or_insert(e.into());
                None
            }
        }
    }
}

impl ViewBatch<'_> {
    fn get(&mut self, origin: Region, id: &RecordId) -> Option<ViewRecord> {
        if let Some((r, _)) = self.records.get(&(origin, *id)) {
            return *r;
        }
        match self.view.record_unlocked(&record_key(origin, id)) {
            Ok(r) => {
                self.records.insert((origin, *id), (r, false));
                r
            }
            Err(e) => {
                self.error.get_or_insert(e);
                None
            }
        }
    }

    fn post_category(&mut self, category: Category, origin: Region, seq: u64, at: JournalPos) {
        let list = self.categories.entry((category.as_u8(), origin.code())).or_default();
        if list.last().map(|l| l.0) != Some(seq) {
            list.push((seq, at));
        }
        if self.exceptional && self.day_exceptions.last().map(|x| (x.0, x.1)) != Some((origin, seq)) {
            self.day_exceptions.push((origin, seq, at));
        }
    }

    fn post_subject(&mut self, subject: &[u8; SUBJECT_BYTES], origin: Region, seq: u64, at: JournalPos) {
        let k = &mut self.subjects;
        k.extend_from_slice(subject);
        k.extend_from_slice(&origin.code().to_be_bytes());
        k.extend_from_slice(&seq.to_be_bytes());
        k.extend_from_slice(&at.0.to_be_bytes());
    }

    /// A receipt in `e`: who stopped showing which records, and what the department applied.
    fn index_receipt(&mut self, e: &Entry, r: &crate::record::Receipt) {
        for (origin, id) in &r.stopped {
            let mut k = origin_key(P_RECEIPT, *origin);
            k.extend_from_slice(&id.0);
            k.extend_from_slice(&e.origin.code().to_be_bytes());
            k.extend_from_slice(&e.seq.to_be_bytes());
            let mut v = r.received_at_unix.to_be_bytes().to_vec();
            v.extend_from_slice(r.department.as_bytes());
            self.receipts.push((k, v));
        }
        let mut k = origin_key(P_APPLIED, e.origin);
        k.extend_from_slice(r.department.as_bytes());
        let mut v = r.received_at_unix.to_be_bytes().to_vec();
        for (o, next) in &r.applied {
            v.extend_from_slice(&o.code().to_be_bytes());
            v.extend_from_slice(&next.to_be_bytes());
        }
        self.receipts.push((k, v));
    }

    /// Indexes one entry whose frame starts at journal position `at` and ends at `end`; `read`
    /// is its operation as already read (`summarize`, or the writer's summary), else it is read
    /// here.
    pub fn index_entry(
        &mut self,
        at: JournalPos,
        end: JournalPos,
        e: &Entry,
        read: Option<Result<Summary, crate::record::Rejection>>,
    ) -> Result<(), ViewError> {
        let expected = self
            .origins
            .get(&e.origin)
            .copied()
            .unwrap_or_else(|| self.view.origin_seq(e.origin))
            + 1;
        if e.seq != expected {
            return Err(ViewError::OutOfOrder {
                pos: end.0,
                origin: e.origin,
                seq: e.seq,
                expected,
            });
        }
        self.origins.insert(e.origin, e.seq);
        self.position.entries += 1;
        self.position.pos = end;
        let day = self
            .day_cache
            .day_of(e.appended_at_micros)
            .and_then(|d| u32::try_from(d.to_julian_day()).ok());
        let latest = match self.days.get(&e.origin) {
            Some(d) => Some(*d),
            None => self.view.latest_day(e.origin),
        };
        self.exceptional = false;
        match day {
            Some(d) if latest.is_none_or(|l| d > l) => {
                self.days.insert(e.origin, d);
                self.day_marks.push((e.origin, d, e.seq));
            }
            Some(d) if latest == Some(d) => {}
            _ => self.exceptional = true,
        }
        let op = match read.unwrap_or_else(|| summarize(&e.op_bytes)) {
            Ok(op) => op,
            Err(r) => {
                self.undecodable.push((e.origin, e.seq, r.to_string()));
                return Ok(());
            }
        };
        if let Summary::Receipt(r) = &op {
            self.index_receipt(e, r);
            return Ok(());
        }
        let (change, subject) = match &op {
            Summary::Receipt(_) => unreachable!("indexed above"),
            Summary::Upsert(rec) => match subject_field(&rec.subject.index_bytes()) {
                Some(s) => (
                    Change::Upsert {
                        record_id: rec.record_id,
                        category: rec.category,
                        version: rec.record_version,
                        repairs: rec.repaired_record_id,
                    },
                    Some(s),
                ),
                None => {
                    self.undecodable
                        .push((e.origin, e.seq, "subject identifier longer than the index holds".into()));
                    return Ok(());
                }
            },
            Summary::Revoke { record_id } => (Change::Revoke { record_id: *record_id }, None),
        };
        let id = op.record_id();
        let previous = self.get(e.origin, &id);
        let target = match change {
            Change::Upsert { repairs: Some(t), .. } => self.get(e.origin, &t),
            _ => None,
        };
        let mut view = OriginView {
            batch: self,
            origin: e.origin,
        };
        ledger::apply_change(&mut view, &change, e.seq, e.op_digest);
        if let Some(err) = self.error.take() {
            return Err(err);
        }
        match &op {
            Summary::Upsert(rec) => {
                let subject = subject.expect("set for upserts above");
                if let Some((Some(r), _)) = self.records.get_mut(&(e.origin, id)) {
                    r.kind = match previous {
                        Some(_) => OpKind::Amend,
                        None if rec.category == Category::CreditRepair => OpKind::Repair,
                        None => OpKind::Publish,
                    };
                    r.disclosure = rec.disclosure_class;
                    r.sharing = rec.sharing_class;
                    r.publicity_end = rec.publicity_end_date;
                    r.subject = subject;
                    r.latest_seq = e.seq;
                }
                self.post_subject(&subject, e.origin, e.seq, at);
                self.post_category(rec.category, e.origin, e.seq, at);
                if let Some(t) = target {
                    // A repair changes its target: a feed of the target's category must see it.
                    self.post_category(t.category, e.origin, e.seq, at);
                }
                if let Some(end_date) = rec.publicity_end_date {
                    let month = (end_date.year() * 12 + i32::from(u8::from(end_date.month())) - 1) as u32;
                    let item = self.expiry.entry(month).or_default();
                    item.extend_from_slice(&end_date.to_julian_day().to_be_bytes());
                    item.extend_from_slice(&e.origin.code().to_be_bytes());
                    item.extend_from_slice(&id.0);
                }
            }
            Summary::Receipt(_) => {}
            Summary::Revoke { .. } => {
                if let Some((Some(r), _)) = self.records.get_mut(&(e.origin, id)) {
                    if r.revoked_seq == e.seq {
                        r.kind = OpKind::Revoke;
                        r.latest_seq = e.seq;
                        let (category, subject) = (r.category, r.subject);
                        self.post_category(category, e.origin, e.seq, at);
                        self.post_subject(&subject, e.origin, e.seq, at);
                    }
                }
            }
        }
        Ok(())
    }

    /// Makes the batch visible atomically, with the view's position at `end`.
    pub fn commit(mut self, end: JournalPos) -> Result<(), ViewError> {
        let view = self.view;
        let mut batch = sled::Batch::default();
        self.position.pos = end;
        self.position.chunk += 1;
        let chunk = self.position.chunk;
        let mut pending_added = 0u64;
        let mut pending_removed = 0u64;
        // New keys enter the filter before they become visible (no false negatives).
        for k in &self.new_keys {
            view.bloom.insert(k);
        }
        let mut records = Vec::with_capacity(self.records.len() * (RECORD_KEY_BYTES + RECORD_VALUE_BYTES));
        for ((origin, id), (r, written)) in &self.records {
            if let (Some(r), true) = (r, written) {
                records.extend_from_slice(&record_key(*origin, id));
                records.extend_from_slice(&encode_record(r));
            }
        }
        // Readers go on while the chunks are written and synced: they see the view as it was
        // until the exclusive section below installs the maps' level 0 and applies the batch.
        let records = view.records.prepare(&view.tree, &mut batch, chunk, &records)?;
        let subjects = view.subjects.prepare(&view.tree, &mut batch, chunk, &self.subjects)?;
        for ((cat, origin), seqs) in &self.categories {
            let mut k = vec![P_CATEGORY, *cat];
            k.extend_from_slice(&origin.to_be_bytes());
            k.extend_from_slice(&seqs[0].0.to_be_bytes());
            let mut v = Vec::with_capacity(seqs.len() * 4);
            let (mut previous, mut previous_pos) = (seqs[0].0, 0u64);
            for (s, at) in seqs {
                // An origin's entries lie in the journal in seq order, so both deltas are >= 0.
                debug_assert!(at.0 >= previous_pos);
                put_varint(&mut v, s - previous);
                put_varint(&mut v, at.0 - previous_pos);
                previous = *s;
                previous_pos = at.0;
            }
            batch.insert(k, v);
        }
        for (month, items) in &self.expiry {
            let mut k = vec![P_EXPIRY];
            k.extend_from_slice(&month.to_be_bytes());
            k.extend_from_slice(&chunk.to_be_bytes());
            batch.insert(k, items.as_slice());
        }
        for (origin, seq, reason) in &self.undecodable {
            let mut k = origin_key(P_UNDECODABLE, *origin);
            k.extend_from_slice(&seq.to_be_bytes());
            batch.insert(k, reason.as_bytes());
            self.position.undecodable += 1;
        }
        for ((origin, target), seq) in &self.pending {
            let mut k = origin_key(P_PENDING, *origin);
            k.extend_from_slice(&target.0);
            let existed = view.tree.contains_key(&k)?;
            match seq {
                Some(seq) => {
                    pending_added += u64::from(!existed);
                    batch.insert(k, &seq.to_be_bytes());
                }
                None => {
                    pending_removed += u64::from(existed);
                    batch.remove(k);
                }
            }
        }
        for (k, v) in std::mem::take(&mut self.receipts) {
            batch.insert(k, v);
        }
        for (origin, seq) in &self.origins {
            batch.insert(origin_key(P_ORIGIN, *origin), &seq.to_be_bytes());
        }
        for (origin, day, seq) in &self.day_marks {
            let mut k = origin_key(P_DAY, *origin);
            k.extend_from_slice(&day.to_be_bytes());
            batch.insert(k, &seq.to_be_bytes());
        }
        for (origin, seq, at) in &self.day_exceptions {
            let mut k = origin_key(P_DAY_EXCEPTION, *origin);
            k.extend_from_slice(&seq.to_be_bytes());
            batch.insert(k, &at.0.to_be_bytes());
        }
        batch.insert(KEY_META, &self.position.encode());
        // What the batch points at in the heap is durable before the batch can be.
        view.heap.sync()?;
        let _exclusive = view.lock.write().expect("view lock");
        if let Some(p) = records {
            view.records.install(p);
        }
        if let Some(p) = subjects {
            view.subjects.install(p);
        }
        view.tree.apply_batch(batch)?;
        if let Some(moved) = super::chunks::collect_garbage(&view.tree, &[&view.records, &view.subjects], &view.heap)? {
            let usage = view.heap.usage();
            tracing::debug!(
                moved,
                live = usage.live_bytes,
                file = usage.file_bytes,
                "chunk heap collected"
            );
        }
        view.pending.fetch_add(pending_added, Ordering::Relaxed);
        view.pending.fetch_sub(pending_removed, Ordering::Relaxed);
        view.origins
            .lock()
            .expect("view origins lock")
            .extend(self.origins.iter().map(|(o, s)| (*o, *s)));
        view.days
            .lock()
            .expect("view days lock")
            .extend(self.days.iter().map(|(o, d)| (*o, *d)));
        *view.position.lock().expect("view position lock") = self.position;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_encoding_round_trips() {
        let r = ViewRecord {
            category: Category::AdministrativePenalty,
            kind: OpKind::Amend,
            disclosure: DisclosureClass::Limited,
            sharing: SharingClass::Conditional,
            version: 4,
            latest_seq: 99,
            upsert_seq: 98,
            repaired_by_seq: 0,
            revoked_seq: 7,
            publicity_end: Some(time::macros::date!(2027 - 03 - 01)),
            subject: subject_field(b"U91110000600037341L").expect("fits"),
        };
        assert_eq!(decode_record(&encode_record(&r)), Some(r));
        assert_eq!(r.subject(), b"U91110000600037341L");
        let none = ViewRecord {
            publicity_end: None,
            ..r
        };
        assert_eq!(decode_record(&encode_record(&none)), Some(none));
        assert_eq!(decode_record(&encode_record(&r)[1..]), None);
    }

    #[test]
    fn the_reader_thread_reads_what_this_thread_would_in_the_same_order() {
        let mut gen = crate::record::RecordGenerator::new(3, Region::parse("440000").expect("province"));
        let mut group: Group = Vec::new();
        for i in 0..300u64 {
            // Some entries are damaged, so errors must come back in their places too.
            let op_bytes = if i % 37 == 5 {
                b"[1,2]".to_vec()
            } else {
                let op = crate::record::parse_operation(gen.next_line().as_bytes()).expect("valid");
                op.canonical().to_vec()
            };
            let e = Entry {
                origin: Region::parse("440000").expect("province"),
                seq: i + 1,
                prev_hash: [0; 32],
                appended_at_micros: 0,
                op_digest: [0; 32],
                op_bytes: op_bytes.into(),
                hash: [0; 32],
            };
            group.push((JournalPos(i * 10), JournalPos(i * 10 + 10), e));
        }
        let mut expected: Vec<Read> = vec![None; group.len()];
        read_group(&mut expected, &group);
        // Entries with a writer's summary are kept as they were handed over, not read again.
        let placeholder = summarize(&group[0].2.op_bytes);
        let prefilled = |i: usize| i.is_multiple_of(5) && i != 5;
        let mut ops: Vec<Read> = (0..group.len())
            .map(|i| prefilled(i).then(|| placeholder.clone()))
            .collect();
        for (i, op) in expected.iter_mut().enumerate() {
            if prefilled(i) {
                *op = Some(placeholder.clone());
            }
        }
        let reader = Reader::spawn().expect("thread");
        let before: Vec<u64> = group.iter().map(|(_, _, e)| e.seq).collect();
        reader.read(&mut group, &mut ops).expect("read");
        assert_eq!(group.iter().map(|(_, _, e)| e.seq).collect::<Vec<_>>(), before);
        assert_eq!(ops, expected);
        assert!(ops.iter().filter(|o| matches!(o, Some(Err(_)))).count() >= 5);
        // And again with the same thread, which must still be there.
        let mut again: Vec<Read> = vec![None; group.len()];
        reader.read(&mut group, &mut again).expect("read");
        assert_eq!(again.iter().filter(|o| o.is_none()).count(), 0);
    }

    #[test]
    fn varints_round_trip() {
        let mut v = Vec::new();
        for x in [0u64, 1, 127, 128, 300, u64::MAX] {
            put_varint(&mut v, x);
        }
        let mut at = 0;
        for x in [0u64, 1, 127, 128, 300, u64::MAX] {
            assert_eq!(get_varint(&v, &mut at), Some(x));
        }
        assert_eq!(get_varint(&v, &mut at), None);
    }
}
