//! The store: the journal (truth, the only durability point) and the sled indexes derived from it.
//! Invariants: a group is appended to the journal and fsynced before the indexes see it and before
//! any ack; the indexes commit a group atomically together with the journal position they reach;
//! on open, whatever the journal holds past that position is indexed again, so a crash at any
//! instant leaves a store that opens and holds every acknowledged operation.

pub mod audit;
mod bloom;
mod chunks;
#[cfg(test)]
mod crash_tests;
pub mod decisions;
pub mod fs;
pub mod heap;
pub mod hints;
pub mod index;
pub mod indexer;
pub mod journal;
#[cfg(test)]
pub mod sim;
pub mod verify;
pub mod view;
#[cfg(test)]
mod view_tests;
pub mod writer;

use crate::log::ledger::{self, Decision, OpKind, OpRejection, RecordState};
use crate::log::{digest, ChainHead, Checkpoint, CheckpointSigner, Entry, Hash, CHECKPOINT_ENTRIES_MAX};
use crate::record::{decode_stored, Operation, RecordId, Region};
use crate::sync::judge::{judge, Held, HeldChain, OwnOrigin, Verdict};
use crate::sync::Covered;
use decisions::Decisions;
use index::{Index, IndexError, Source};
use journal::{encoded_len, Frame, Journal, JournalError, JournalPos, JournalReader, Quarantined, TailRepair};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use view::{View, ViewError};

/// Frames indexed per sled batch when replaying the journal.
const REPLAY_BATCH_FRAMES: usize = 10_000;
const JOURNAL_DIR: &str = "journal";
const INDEX_DIR: &str = "index";
const VIEW_DIR: &str = "view";
const LOCK_FILE: &str = "LOCK";
const ORIGIN_FILE: &str = "origin";
/// Damaged places `repair_journal` cuts before it gives up (each cut moves the rest aside, so a
/// second one is already rare).
const REPAIR_CUTS_MAX: usize = 8;

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub dir: PathBuf,
    pub segment_bytes_max: u64,
    pub index_cache_bytes: u64,
    /// How often sled writes the indexes' dirty pages itself (milliseconds).
    pub index_flush_ms: u64,
    /// The node's own origin. Recorded in the store at first open and checked at every open (a
    /// store never changes province); when None, the recorded one is used.
    pub local: Option<Region>,
    /// The file system of the journal: the real one, or a simulated one in crash tests.
    pub journal_fs: fs::SharedFs,
    /// Entries the merged view may be behind the journal before the writer waits for it
    /// (backpressure on publishing and on replication alike).
    pub index_lag_entries_max: u64,
    /// The merged view's packed maps (tests use small ones, to exercise flushes and merges).
    pub view_layout: view::ViewLayout,
    /// Entries per merged-view batch when catching up.
    pub index_batch_entries_max: usize,
}

impl StoreConfig {
    pub const SEGMENT_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;
    pub const INDEX_CACHE_BYTES_DEFAULT: u64 = 32 * 1024 * 1024;
    /// sled's own default; a crash loses at most this much indexing, which the node redoes from
    /// the journal at the next start.
    pub const INDEX_FLUSH_MS_DEFAULT: u64 = 1000;
    /// About a second of bulk publishing here: enough to absorb a burst, and it bounds the own
    /// records held in memory for decisions (a 200,000 bound let that map reach 63 MB).
    pub const INDEX_LAG_ENTRIES_MAX_DEFAULT: u64 = 50_000;

    pub fn new(dir: &Path) -> StoreConfig {
        StoreConfig {
            index_lag_entries_max: Self::INDEX_LAG_ENTRIES_MAX_DEFAULT,
            view_layout: view::ViewLayout::default(),
            index_batch_entries_max: view::BATCH_ENTRIES_MAX,
            local: None,
            journal_fs: fs::SharedFs::default(),
            dir: dir.to_path_buf(),
            segment_bytes_max: Self::SEGMENT_BYTES_DEFAULT,
            index_cache_bytes: Self::INDEX_CACHE_BYTES_DEFAULT,
            index_flush_ms: Self::INDEX_FLUSH_MS_DEFAULT,
        }
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.dir.join(JOURNAL_DIR)
    }

    pub fn index_dir(&self) -> PathBuf {
        self.dir.join(INDEX_DIR)
    }

    /// The merged view's own sled database.
    pub fn view_dir(&self) -> PathBuf {
        self.dir.join(VIEW_DIR)
    }

    /// The store's own origin: the configured one (recorded at first open, and it must match
    /// the record after), or the recorded one.
    pub fn resolve_local(&self) -> Result<Option<Region>, StoreError> {
        let path = self.dir.join(ORIGIN_FILE);
        let recorded = match std::fs::read_to_string(&path) {
            Ok(text) => Some(
                Region::parse_node(text.trim()).map_err(|e| StoreError::Origin(format!("{}: {e}", path.display())))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        match (self.local, recorded) {
            (Some(l), Some(r)) if l != r => Err(StoreError::Origin(format!(
                "{} holds the store of region {r}, but this node is configured for {l}: point node.data_dir at this region's store",
                self.dir.display()
            ))),
            (Some(l), None) => {
                let io = |path: &Path| {
                    let path = path.to_path_buf();
                    move |source| StoreError::Io { path, source }
                };
                std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
                // Written, synced, and its directory entry synced: a store that forgets its
                // province after a crash could be opened as another one's.
                let mut file = File::create(&path).map_err(io(&path))?;
                std::io::Write::write_all(&mut file, format!("{l}\n").as_bytes()).map_err(io(&path))?;
                file.sync_all().map_err(io(&path))?;
                File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
                Ok(Some(l))
            }
            (l, r) => Ok(l.or(r)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    View(#[from] ViewError),
    #[error("store directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("store {path} is in use by another process (lock held on {path}/LOCK); stop it first")]
    Locked { path: PathBuf },
    #[error("the index claims journal position {indexed} but the journal ends at {end}: the journal lost acknowledged data or belongs to another store; restore it, or run `cxnode reindex` to rebuild the index from what is there")]
    IndexAhead { indexed: u64, end: u64 },
    #[error("store origin: {0}")]
    Origin(String),
    #[error("checkpoint signing failed: {0}")]
    Sign(String),
    #[error("the store's writer has stopped after an earlier failure; restart the node")]
    WriterStopped,
    #[error("the merged-view indexer has stopped ({0}); the node refuses writes: restart it, or run `cxnode reindex --data <DIR>`")]
    IndexerStopped(String),
}

/// What `open` found and did.
#[derive(Clone, Debug, Default)]
pub struct OpenReport {
    pub tail: TailRepair,
    pub replayed_frames: u64,
    pub journal_end: u64,
}

/// The result of one operation of a committed group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpOutcome {
    Appended {
        kind: OpKind,
        held_for_target: bool,
        seq: u64,
        hash: Hash,
    },
    Duplicate {
        seq: u64,
        hash: Hash,
    },
    Rejected(OpRejection),
}

pub struct Store {
    cfg: StoreConfig,
    journal: Journal,
    index: Index,
    view: Arc<View>,
    decisions: Decisions,
    local: Option<Region>,
    /// Summaries of own entries made durable, for the indexer (`hints::SummaryHints`).
    hints: Option<Arc<hints::SummaryHints>>,
    /// Entries in the journal, all origins.
    entries: u64,
    _lock: File,
}

fn lock_store(dir: &Path) -> Result<File, StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => Err(StoreError::Locked {
            path: dir.to_path_buf(),
        }),
    }
}

impl Store {
    /// Opens the store: recovers the journal's tail, then indexes what the index has not seen.
    pub fn open(cfg: &StoreConfig) -> Result<(Store, OpenReport), StoreError> {
        let lock = lock_store(&cfg.dir)?;
        let local = cfg.resolve_local()?;
        let (journal, tail) = Journal::open_on(cfg.journal_fs.0.clone(), &cfg.journal_dir(), cfg.segment_bytes_max)?;
        let index = Index::open(&cfg.index_dir(), cfg.index_cache_bytes, cfg.index_flush_ms)?;
        let indexed = index.indexed_upto()?;
        if indexed > journal.end() {
            return Err(StoreError::IndexAhead {
                indexed: indexed.0,
                end: journal.end().0,
            });
        }
        let replayed_frames = replay(&journal.reader(), &index, indexed, journal.end())?;
        if replayed_frames > 0 {
            index.flush()?;
        }
        let view = Arc::new(View::open(
            &index::open_sled(&cfg.view_dir(), cfg.index_cache_bytes, cfg.index_flush_ms)?,
            &cfg.view_dir(),
            cfg.view_layout,
        )?);
        if view.position().pos > journal.end() {
            return Err(StoreError::IndexAhead {
                indexed: view.position().pos.0,
                end: journal.end().0,
            });
        }
        let entries = index.heads()?.iter().map(|(_, h)| h.seq()).sum();
        let decisions = match local {
            Some(l) => own_tail(&journal.reader(), &view, l, journal.end())?,
            None => Decisions::default(),
        };
        let report = OpenReport {
            tail,
            replayed_frames,
            journal_end: journal.end().0,
        };
        Ok((
            Store {
                cfg: cfg.clone(),
                journal,
                index,
                view,
                decisions,
                local,
                hints: local.map(|l| Arc::new(hints::SummaryHints::new(l))),
                entries,
                _lock: lock,
            },
            report,
        ))
    }

    /// Brings the merged view up to the journal's end here and now (reindex, verify, tools and
    /// tests; a serving node has the indexer thread do it).
    pub fn index_view(&mut self) -> Result<(), StoreError> {
        self.view.load_filter()?;
        self.view.catch_up(
            &self.journal.reader(),
            self.journal.end(),
            self.cfg.index_batch_entries_max,
            self.hints.as_deref(),
            view::Reader::spawn().ok().as_ref(),
            |_| {},
        )?;
        self.prune_decisions();
        Ok(())
    }

    fn prune_decisions(&mut self) {
        if let Some(l) = self.local {
            self.decisions.indexed_up_to(self.view.origin_seq(l));
        }
    }

    pub fn view(&self) -> &Arc<View> {
        &self.view
    }

    /// What the writer hands the indexer of the node's own entries (None without a local origin).
    pub fn hints(&self) -> Option<Arc<hints::SummaryHints>> {
        self.hints.clone()
    }

    /// Entries in the journal (all origins).
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Own records held for decisions because the view has not indexed them yet.
    pub fn decisions_held(&self) -> usize {
        self.decisions.len()
    }

    /// Deletes the indexes and rebuilds them from the journal alone. Returns the frames indexed.
    pub fn reindex(cfg: &StoreConfig) -> Result<u64, StoreError> {
        let lock = lock_store(&cfg.dir)?;
        for dir in [cfg.index_dir(), cfg.view_dir()] {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|source| StoreError::Io {
                    path: dir.clone(),
                    source,
                })?;
            }
        }
        drop(lock);
        let (mut store, report) = Store::open(cfg)?;
        store.index_view()?;
        store.index.flush()?;
        store.view.flush()?;
        drop(store);
        Ok(report.replayed_frames)
    }

    /// For `cxnode recover`: finds damage anywhere in the journal (at open, or in a full read of
    /// every frame), moves the journal from the first damaged frame on into `quarantine`, and
    /// rebuilds the indexes from what is left. Returns what was cut (nothing for a sound
    /// journal). What was cut must then come back from a replica.
    pub fn repair_journal(cfg: &StoreConfig, quarantine: &Path) -> Result<Vec<Quarantined>, StoreError> {
        let lock = lock_store(&cfg.dir)?;
        let dir = cfg.journal_dir();
        let mut cuts = Vec::new();
        loop {
            let damage = match Journal::open(&dir, cfg.segment_bytes_max) {
                Err(JournalError::Corrupt { position, reason, .. }) => Some((position, reason)),
                Err(e) => return Err(e.into()),
                Ok((journal, _)) => {
                    let end = journal.end();
                    drop(journal);
                    let scanned =
                        JournalReader::new(&dir).scan(JournalPos(0), end, |_, _, _| Ok::<_, JournalError>(true));
                    match scanned {
                        Ok(()) => None,
                        Err(JournalError::Corrupt { position, reason, .. }) => Some((position, reason)),
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            let Some((position, reason)) = damage else { break };
            if cuts.len() >= REPAIR_CUTS_MAX {
                return Err(StoreError::Journal(JournalError::Corrupt {
                    path: dir,
                    offset: 0,
                    position,
                    reason: format!(
                        "still damaged after {REPAIR_CUTS_MAX} cuts: {reason}; restore the store from a backup"
                    ),
                }));
            }
            cuts.push(journal::quarantine_from(
                &dir,
                JournalPos(position),
                &reason,
                quarantine,
            )?);
        }
        drop(lock);
        if !cuts.is_empty() {
            Store::reindex(cfg)?;
        }
        Ok(cuts)
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn reader(&self) -> JournalReader {
        self.journal.reader()
    }

    /// Decides, appends, fsyncs and indexes one group of `origin`'s own operations, then signs a
    /// checkpoint over the new head (in the same fsync). Operations are decided in order, each
    /// seeing the ones before it.
    pub fn commit_local(
        &mut self,
        origin: Region,
        ops: &[Operation],
        signer: &dyn CheckpointSigner,
        now_micros: i64,
    ) -> Result<(Vec<OpOutcome>, Option<Checkpoint>), StoreError> {
        let digests: Vec<Hash> = ops.iter().map(|op| digest(op.canonical())).collect();
        self.commit_local_digested(origin, ops, &digests, signer, now_micros)
    }

    /// `commit_local` of operations whose digests (`digest(op.canonical())`, one per operation)
    /// the caller computed: the publisher does so while validating, on many threads, so the one
    /// writer thread does not.
    pub(crate) fn commit_local_digested(
        &mut self,
        origin: Region,
        ops: &[Operation],
        digests: &[Hash],
        signer: &dyn CheckpointSigner,
        now_micros: i64,
    ) -> Result<(Vec<OpOutcome>, Option<Checkpoint>), StoreError> {
        assert_eq!(ops.len(), digests.len(), "one digest per operation");
        let started = std::time::Instant::now();
        let reader = self.journal.reader();
        let mut batch = self.index.begin();
        let mut head = batch.head(origin)?;
        let mut next_pos = self.journal.end().0;
        let mut frames = Vec::with_capacity(ops.len() + 1);
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut group_hashes: HashMap<u64, Hash> = HashMap::new();
        let mut appended: Vec<(u64, Hash, &Operation)> = Vec::with_capacity(ops.len());
        let mut since_checkpoint = 0u64;
        let mut checkpoint = None;
        let at_unix_seconds = now_micros.div_euclid(1_000_000);
        for (op, op_digest) in ops.iter().zip(digests.iter().copied()) {
            debug_assert_eq!(op_digest, digest(op.canonical()), "the digest of the operation's bytes");
            let current = self.decision_state(&reader, origin, &op.record_id(), Some(op))?;
            let target = match ledger::repair_target(op) {
                Some(t) => self.decision_state(&reader, origin, &t, None)?,
                None => None,
            };
            match ledger::decide(op, &op_digest, current.as_ref(), target.as_ref()) {
                Decision::Append { kind, held_for_target } => {
                    // One digest (computed above for the decision) and one hash per operation.
                    let entry = Entry::with_digest(
                        origin,
                        head.next_seq,
                        head.head_hash,
                        now_micros,
                        op.canonical().to_vec(),
                        op_digest,
                    );
                    head = ChainHead {
                        next_seq: entry.seq + 1,
                        head_hash: entry.hash,
                    };
                    let frame = Frame::Entry(entry);
                    let pos = JournalPos(next_pos);
                    next_pos += encoded_len(&frame);
                    batch.index_frame(pos, &frame, Source::Checked)?;
                    let Frame::Entry(entry) = &frame else {
                        unreachable!("built as an entry above")
                    };
                    group_hashes.insert(entry.seq, entry.hash);
                    // Receipts (rare, and large: a summary is the whole receipt) are read by
                    // the indexer itself.
                    if !matches!(op, Operation::Receipt(_)) {
                        appended.push((entry.seq, op_digest, op));
                    }
                    self.decisions.appended(op, entry.seq, op_digest, current);
                    outcomes.push(OpOutcome::Appended {
                        kind,
                        held_for_target,
                        seq: entry.seq,
                        hash: entry.hash,
                    });
                    frames.push(frame);
                    since_checkpoint += 1;
                    // A large group is covered every CHECKPOINT_ENTRIES_MAX entries, so a
                    // receiver never has to hold more than that uncovered.
                    if since_checkpoint == CHECKPOINT_ENTRIES_MAX {
                        let cp = Checkpoint::sign(origin, head, at_unix_seconds, signer).map_err(StoreError::Sign)?;
                        let cp_frame = Frame::Checkpoint(cp.clone());
                        batch.index_frame(JournalPos(next_pos), &cp_frame, Source::Checked)?;
                        next_pos += encoded_len(&cp_frame);
                        frames.push(cp_frame);
                        checkpoint = Some(cp);
                        since_checkpoint = 0;
                    }
                }
                Decision::Duplicate { seq } => {
                    let hash = match group_hashes.get(&seq) {
                        Some(h) => *h,
                        None => self.entry_hash(&reader, origin, seq)?,
                    };
                    outcomes.push(OpOutcome::Duplicate { seq, hash });
                }
                Decision::Reject(r) => outcomes.push(OpOutcome::Rejected(r)),
            }
        }
        if frames.is_empty() {
            return Ok((outcomes, None));
        }
        if since_checkpoint > 0 {
            let cp = Checkpoint::sign(origin, head, at_unix_seconds, signer).map_err(StoreError::Sign)?;
            let cp_frame = Frame::Checkpoint(cp.clone());
            batch.index_frame(JournalPos(next_pos), &cp_frame, Source::Checked)?;
            frames.push(cp_frame);
            checkpoint = Some(cp);
        }
        let checkpoint = checkpoint.expect("a group with entries ends with a checkpoint");
        let decided = std::time::Instant::now();
        let positions = self.journal.append(&frames)?;
        debug_assert!(positions.last().is_some());
        let written = std::time::Instant::now();
        self.journal.sync()?;
        let synced = std::time::Instant::now();
        if let Some(hints) = &self.hints {
            hints.add(appended.into_iter().map(|(seq, d, op)| (seq, d, op.into())));
        }
        batch.commit(self.journal.end())?;
        self.entries += outcomes
            .iter()
            .filter(|o| matches!(o, OpOutcome::Appended { .. }))
            .count() as u64;
        self.prune_decisions();
        tracing::trace!(
            ops = ops.len(),
            decide_us = (decided - started).as_micros() as u64,
            write_us = (written - decided).as_micros() as u64,
            sync_us = (synced - written).as_micros() as u64,
            index_us = synced.elapsed().as_micros() as u64,
            "group committed"
        );
        Ok((outcomes, Some(checkpoint)))
    }

    /// The state of own record `id` for a decision: held in memory if the view has not indexed
    /// its latest entry, else from the view, with the digest `decide` compares read from the
    /// journal only when it will compare it (same version, or a revocation of a revoked record).
    fn decision_state(
        &self,
        reader: &JournalReader,
        origin: Region,
        id: &RecordId,
        op: Option<&Operation>,
    ) -> Result<Option<RecordState>, StoreError> {
        if let Some(s) = self.decisions.get(id) {
            return Ok(Some(s));
        }
        let Some(record) = self.view.record(origin, id)? else {
            return Ok(None);
        };
        let mut state = record.ledger_state();
        match op {
            Some(Operation::Upsert(rec)) if state.revoked_seq == 0 && rec.record_version == state.version => {
                state.content_digest = self.entry_digest(reader, origin, state.upsert_seq)?;
            }
            Some(Operation::Revoke(_)) if state.revoked_seq != 0 => {
                state.revoke_digest = self.entry_digest(reader, origin, state.revoked_seq)?;
            }
            _ => {}
        }
        Ok(Some(state))
    }

    fn entry_digest(&self, reader: &JournalReader, origin: Region, seq: u64) -> Result<Hash, StoreError> {
        Ok(self.held_entry(reader, origin, seq)?.op_digest)
    }

    fn entry_hash(&self, reader: &JournalReader, origin: Region, seq: u64) -> Result<Hash, StoreError> {
        Ok(self.held_entry(reader, origin, seq)?.hash)
    }

    /// An entry at or below the head, which must be there.
    fn held_entry(&self, reader: &JournalReader, origin: Region, seq: u64) -> Result<Entry, StoreError> {
        find_entry(&self.index, reader, origin, seq)?.ok_or_else(|| {
            IndexError::Damaged {
                key: format!("entry {origin}/{seq}"),
                reason: "an index points at an entry the chain index does not have".to_string(),
            }
            .into()
        })
    }

    /// Reads the entry `origin/seq` through the index.
    pub fn read_entry(&self, origin: Region, seq: u64) -> Result<Option<Entry>, StoreError> {
        find_entry(&self.index, &self.journal.reader(), origin, seq)
    }
}

/// What storing a covered batch from a peer did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaOutcome {
    /// New entries stored (possibly none, if everything was held already and identical).
    Stored { appended: u64 },
    /// The batch proves the origin signed two different chains: evidence kept, origin refused.
    Forked { origin: Region, seq: u64 },
    /// Not stored, with the reason (our own origin, a forked origin, or a gap).
    Refused(String),
    /// A peer holds more of this node's own log than this node does: the store was restored from
    /// an old backup (or lost data). Appending now would fork the origin; an operator must look.
    OwnLogBehind { ours: u64, theirs: u64 },
    /// The checkpoint is dated before one held at a lower or equal seq: a forgery attempt (a
    /// stolen or revoked key back-dating). Not stored; the origin is not cut off.
    Forgery(String),
}

/// The held chain of one origin, as the judge looks into it.
struct StoreChain<'a> {
    store: &'a Store,
    reader: JournalReader,
    origin: Region,
}

impl HeldChain for StoreChain<'_> {
    type Error = StoreError;
    fn hash_at(&mut self, seq: u64) -> Result<Hash, StoreError> {
        self.store.entry_hash(&self.reader, self.origin, seq)
    }
    fn checkpoint_at_or_below(&mut self, seq: u64) -> Result<Option<(u64, i64)>, StoreError> {
        Ok(self.store.index.checkpoint_at_or_below(self.origin, seq)?)
    }
}

impl Store {
    /// Stores entries of another origin that a valid checkpoint of that origin covers (checked by
    /// `sync::LinkReceiver`), through the same journal path as local appends, as the sync judge
    /// decides: new entries that link, a fresher checkpoint of the head, or fork evidence.
    pub fn commit_replicated(&mut self, local: Region, covered: &Covered) -> Result<ReplicaOutcome, StoreError> {
        self.commit_covered(OwnOrigin::Refused(local), covered)
    }

    /// `cxnode recover`: stores entries of any origin, this node's own included, from a replica,
    /// as the judge decides. A replica's copy of our own log that contradicts ours is refused,
    /// never kept as fork evidence against ourselves: an operator must look.
    pub fn recover_replicated(&mut self, local: Region, covered: &Covered) -> Result<ReplicaOutcome, StoreError> {
        self.commit_covered(OwnOrigin::Recovering(local), covered)
    }

    /// Stores several verified batches, of distinct origins, with one journal write and one
    /// fsync (group commit); each is judged as `commit_replicated` would, against what the store
    /// held before the group. The outcomes are in the order of `batches`.
    pub fn commit_replicated_group(
        &mut self,
        local: Region,
        batches: &[&Covered],
    ) -> Result<Vec<ReplicaOutcome>, StoreError> {
        let mut origins = std::collections::BTreeSet::new();
        if let Some(c) = batches.iter().find(|c| !origins.insert(c.origin)) {
            return Err(StoreError::Origin(format!(
                "a replica group holds two batches of {}: each is judged against the store before the group",
                c.origin
            )));
        }
        let mut frames = Vec::new();
        let mut outcomes = Vec::with_capacity(batches.len());
        for covered in batches {
            let (mut f, outcome) = self.judge_covered(OwnOrigin::Refused(local), covered)?;
            frames.append(&mut f);
            outcomes.push(outcome);
        }
        self.write_frames(&frames)?;
        for o in &outcomes {
            if let ReplicaOutcome::Stored { appended } = o {
                self.entries += appended;
            }
        }
        Ok(outcomes)
    }

    fn commit_covered(&mut self, own: OwnOrigin, covered: &Covered) -> Result<ReplicaOutcome, StoreError> {
        let (frames, outcome) = self.judge_covered(own, covered)?;
        self.write_frames(&frames)?;
        if let ReplicaOutcome::Stored { appended } = outcome {
            self.entries += appended;
        }
        Ok(outcome)
    }

    /// What the judge decides of one batch: the frames to write (none when nothing is stored).
    fn judge_covered(&mut self, own: OwnOrigin, covered: &Covered) -> Result<(Vec<Frame>, ReplicaOutcome), StoreError> {
        let origin = covered.origin;
        let held = Held {
            head: self.index.head(origin)?,
            forked: self.index.fork(origin)?.is_some(),
            latest_checkpoint_at: self.index.latest_checkpoint(origin)?.map(|c| c.at_unix_seconds),
        };
        let cp = &covered.checkpoint;
        let mut chain = StoreChain {
            store: self,
            reader: self.journal.reader(),
            origin,
        };
        let verdict = judge(own, &held, covered, &mut chain)?;
        let (frames, outcome) = match verdict {
            Verdict::Append { first_new } => {
                let new = &covered.entries[first_new..];
                let mut frames: Vec<Frame> = new.iter().cloned().map(Frame::Entry).collect();
                frames.push(Frame::Checkpoint(cp.clone()));
                (
                    frames,
                    ReplicaOutcome::Stored {
                        appended: new.len() as u64,
                    },
                )
            }
            Verdict::Refresh => (
                vec![Frame::Checkpoint(cp.clone())],
                ReplicaOutcome::Stored { appended: 0 },
            ),
            Verdict::AlreadyHeld => (Vec::new(), ReplicaOutcome::Stored { appended: 0 }),
            Verdict::Fork { seq } if own == OwnOrigin::Recovering(origin) => (
                Vec::new(),
                ReplicaOutcome::Refused(format!(
                    "the replica's copy of this node's own log ({origin}) contradicts ours at seq {seq}: this node wrote entries the federation never saw after it was restored; do not publish, keep both stores and report the fork"
                )),
            ),
            Verdict::Fork { seq } => (
                vec![Frame::ForkEvidence(cp.clone())],
                ReplicaOutcome::Forked { origin, seq },
            ),
            Verdict::Gap { have, starts } => (
                Vec::new(),
                ReplicaOutcome::Refused(format!("gap in {origin}: have up to {have}, batch starts at {starts}")),
            ),
            Verdict::OwnLogBehind { ours, theirs } => (Vec::new(), ReplicaOutcome::OwnLogBehind { ours, theirs }),
            Verdict::Refuse(reason) => (Vec::new(), ReplicaOutcome::Refused(reason)),
            Verdict::BackDated { held_seq, held_at } => (
                Vec::new(),
                ReplicaOutcome::Forgery(format!(
                    "checkpoint of {origin} at seq {} dated {} is older than the one held at seq {held_seq} (dated {held_at}): back-dated",
                    cp.seq, cp.at_unix_seconds
                )),
            ),
        };
        Ok((frames, outcome))
    }

    /// Appends `frames`, makes them durable and indexes them (nothing when empty).
    fn write_frames(&mut self, frames: &[Frame]) -> Result<(), StoreError> {
        if frames.is_empty() {
            return Ok(());
        }
        let mut batch = self.index.begin();
        let mut next_pos = self.journal.end().0;
        for frame in frames {
            let pos = JournalPos(next_pos);
            next_pos += encoded_len(frame);
            // The link receiver checked every entry's digest and hash; the judge checked the link
            // to our head, and it is checked again (cheaply) while indexing.
            batch.index_frame(pos, frame, Source::Checked)?;
        }
        self.journal.append(frames)?;
        self.journal.sync()?;
        batch.commit(self.journal.end())?;
        Ok(())
    }

    /// Signs a fresh checkpoint of this node's own head (at start, and periodically while idle),
    /// unless the head is empty or the latest checkpoint is younger than `min_age_seconds`.
    /// Returns whether one was written.
    pub fn refresh_checkpoint(
        &mut self,
        origin: Region,
        signer: &dyn CheckpointSigner,
        now_unix_seconds: i64,
        min_age_seconds: i64,
    ) -> Result<bool, StoreError> {
        let head = self.index.head(origin)?;
        if head.seq() == 0 {
            return Ok(false);
        }
        if let Some(latest) = self.index.latest_checkpoint(origin)? {
            if latest.seq == head.seq() && now_unix_seconds - latest.at_unix_seconds < min_age_seconds {
                return Ok(false);
            }
            if now_unix_seconds <= latest.at_unix_seconds {
                // Never sign a time at or before one already signed (receivers refuse it).
                return Ok(false);
            }
        }
        let checkpoint = Checkpoint::sign(origin, head, now_unix_seconds, signer).map_err(StoreError::Sign)?;
        let frame = Frame::Checkpoint(checkpoint);
        let mut batch = self.index.begin();
        batch.index_frame(self.journal.end(), &frame, Source::Checked)?;
        self.journal.append(std::slice::from_ref(&frame))?;
        self.journal.sync()?;
        batch.commit(self.journal.end())?;
        Ok(true)
    }

    /// Journal end: everything before it is durable and indexed.
    pub fn journal_end(&self) -> JournalPos {
        self.journal.end()
    }

    /// Observes each journal fsync's duration in `histogram` from now on.
    pub fn observe_fsync(&mut self, histogram: prometheus::Histogram) {
        self.journal.observe_fsync(histogram);
    }
}

/// Read buffer of `find_entry`: the entry is usually a few frames into its run.
const FIND_BUFFER_BYTES: usize = 64 * 1024;

/// Finds entry `origin/seq`: from the start of its run, read forward to it.
pub fn find_entry(
    index: &Index,
    reader: &JournalReader,
    origin: Region,
    seq: u64,
) -> Result<Option<Entry>, StoreError> {
    let Some((run_start, pos)) = index.run_of(origin, seq)? else {
        return Ok(None);
    };
    let mut found = None;
    let mut expected = run_start;
    reader.scan_buffered(
        pos,
        JournalPos(u64::MAX),
        FIND_BUFFER_BYTES,
        |at, _, frame| match frame {
            Frame::Entry(e) if e.origin == origin && e.seq == expected => {
                if e.seq == seq {
                    found = Some(e);
                    return Ok(false);
                }
                expected += 1;
                Ok(true)
            }
            _ => Err(StoreError::Index(IndexError::Damaged {
                key: format!("run of {origin}/{run_start}"),
                reason: format!("journal position {} breaks the run before seq {seq}", at.0),
            })),
        },
    )?;
    Ok(found)
}

/// The own records the view has not indexed yet, from the journal tail past its position.
fn own_tail(reader: &JournalReader, view: &View, local: Region, end: JournalPos) -> Result<Decisions, StoreError> {
    let mut decisions = Decisions::default();
    let from = view.position().pos;
    let indexed = view.origin_seq(local);
    reader.scan(from, end, |_, _, frame| {
        if let Frame::Entry(e) = frame {
            if e.origin == local && e.seq > indexed {
                // What does not decode was never decided by this node's writer (it validates
                // first); the view reports it, decisions cannot use it.
                if let Ok(op) = decode_stored(&e.op_bytes) {
                    let previous = match decisions.get(&op.record_id()) {
                        Some(s) => Some(s),
                        None => view.record(local, &op.record_id())?.map(|r| r.ledger_state()),
                    };
                    decisions.appended(&op, e.seq, e.op_digest, previous);
                }
            }
        }
        Ok::<_, StoreError>(true)
    })?;
    Ok(decisions)
}

/// Indexes the journal's frames in `[from, to)`, committing after the first group end (a
/// checkpoint) past every `REPLAY_BATCH_FRAMES`, so batches always start after a checkpoint.
fn replay(reader: &JournalReader, index: &Index, from: JournalPos, to: JournalPos) -> Result<u64, StoreError> {
    let mut count = 0u64;
    let mut batch = Some(index.begin());
    let mut in_batch = 0usize;
    let mut last_end = from;
    reader.scan(from, to, |pos, end, frame| {
        let b = batch.as_mut().expect("a batch is always open during the scan");
        b.index_frame(pos, &frame, Source::Journal)?;
        count += 1;
        in_batch += 1;
        last_end = end;
        if in_batch >= REPLAY_BATCH_FRAMES && matches!(frame, Frame::Checkpoint(_) | Frame::ForkEvidence(_)) {
            batch.take().expect("open batch").commit(end)?;
            batch = Some(index.begin());
            in_batch = 0;
        }
        Ok::<_, StoreError>(true)
    })?;
    if let Some(b) = batch {
        if in_batch > 0 {
            // `to` is the journal's end, past the last group's commit frame (which readers do
            // not see): the same position a live commit records.
            debug_assert!(last_end <= to);
            b.commit(to)?;
        }
    }
    Ok(count)
}
