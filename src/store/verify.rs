//! `cxnode verify`: an offline re-check of a whole store. It trusts nothing it reads: every frame's
//! checksum, every origin's chain (contiguous seq, links, digests, hashes), every checkpoint (it
//! matches the chain at its seq and its signature is valid), and the indexes (rebuilt from the
//! journal in a scratch directory and compared key by key). It never modifies the store.

use super::index::Index;
use super::journal::{Frame, JournalError, JournalPos, JournalReader};
use super::view::View;
use super::{lock_store, replay, StoreConfig, StoreError};
use crate::log::{ChainHead, CheckpointVerifier, Hash, LogError};
use crate::record::{decode_stored, Region};
use std::collections::BTreeMap;

/// Problems listed in full; past this only their number is kept.
const PROBLEMS_LISTED_MAX: usize = 100;

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub frames: u64,
    pub entries: u64,
    pub checkpoints: u64,
    pub signatures_checked: u64,
    pub heads: BTreeMap<Region, ChainHead>,
    pub torn_tail_at: Option<u64>,
    /// Origins proven to have equivocated (origin, seq of the contradicting checkpoint).
    pub forks: Vec<(Region, u64)>,
    pub index_behind_bytes: u64,
    /// Entries in the merged view, and those of them whose operation did not decode.
    pub view_entries: u64,
    pub view_undecodable: u64,
    /// The undecodable entries (origin/seq: reason), listed up to the problem limit. Not a
    /// problem of the store: a peer's record that this schema version refuses.
    pub undecodable: Vec<String>,
    pub problems: Vec<String>,
    pub problems_total: u64,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems_total == 0
    }

    fn problem(&mut self, p: String) {
        self.problems_total += 1;
        if self.problems.len() < PROBLEMS_LISTED_MAX {
            self.problems.push(p);
        }
    }
}

pub fn verify_store(cfg: &StoreConfig, verifier: Option<&dyn CheckpointVerifier>) -> Result<VerifyReport, StoreError> {
    let _lock = lock_store(&cfg.dir)?;
    let mut report = VerifyReport::default();
    let reader = JournalReader::new(&cfg.journal_dir());
    let mut hashes: BTreeMap<Region, Vec<Hash>> = BTreeMap::new();
    let mut end = JournalPos(0);
    let scanned = reader.scan(JournalPos(0), JournalPos(u64::MAX), |_, frame_end, frame| {
        report.frames += 1;
        end = frame_end;
        match frame {
            Frame::Entry(e) => {
                report.entries += 1;
                let head = report.heads.entry(e.origin).or_default();
                hashes.entry(e.origin).or_default().push(e.hash);
                match head.advance(&e) {
                    Ok(()) => {}
                    Err(err) => {
                        // Keep checking the rest of the chain from this entry on.
                        *head = ChainHead {
                            next_seq: e.seq + 1,
                            head_hash: e.hash,
                        };
                        report.problem(format!("chain: {err}"));
                    }
                }
                if e.op_bytes.is_empty() {
                    report.problem(format!("entry {}/{}: operation bytes are missing", e.origin, e.seq));
                } else if let Err(r) = decode_stored(&e.op_bytes) {
                    report.problem(format!(
                        "entry {}/{}: stored operation does not decode: {r}",
                        e.origin, e.seq
                    ));
                }
            }
            Frame::ForkEvidence(c) => {
                report.forks.push((c.origin, c.seq));
                if let Some(v) = verifier {
                    report.signatures_checked += 1;
                    if let Err(err) = c.verify(v) {
                        report.problem(format!("fork evidence: {err}"));
                    }
                }
            }
            Frame::Checkpoint(c) => {
                report.checkpoints += 1;
                let chain = hashes.get(&c.origin).map(Vec::as_slice).unwrap_or_default();
                let at = usize::try_from(c.seq)
                    .ok()
                    .and_then(|s| s.checked_sub(1))
                    .and_then(|i| chain.get(i));
                match at {
                    None if c.seq == 0 => {}
                    None => report.problem(format!(
                        "{}",
                        LogError::CheckpointAhead {
                            origin: c.origin,
                            seq: c.seq,
                            head: chain.len() as u64
                        }
                    )),
                    Some(h) if *h != c.head_hash => report.problem(format!(
                        "{}",
                        LogError::CheckpointMismatch {
                            origin: c.origin,
                            seq: c.seq
                        }
                    )),
                    Some(_) => {}
                }
                if let Some(v) = verifier {
                    report.signatures_checked += 1;
                    if let Err(err) = c.verify(v) {
                        report.problem(format!("{err}"));
                    }
                }
            }
        }
        Ok::<_, JournalError>(true)
    });
    match scanned {
        // Past the last frame read lies the last group's commit frame, which readers skip.
        Ok(()) => end = end.max(reader.end()?),
        Err(JournalError::TornTail { position }) => report.torn_tail_at = Some(position),
        Err(e) => {
            report.problem(format!("{e}"));
            return Ok(report);
        }
    }

    let live = Index::open(
        &cfg.index_dir(),
        StoreConfig::INDEX_CACHE_BYTES_DEFAULT,
        StoreConfig::INDEX_FLUSH_MS_DEFAULT,
    )?;
    let indexed = live.indexed_upto()?;
    if indexed > end {
        report.problem(format!(
            "index claims journal position {} but the journal ends at {}",
            indexed.0, end.0
        ));
        return Ok(report);
    }
    report.index_behind_bytes = end.0 - indexed.0;
    let scratch_dir = cfg.dir.join("verify-scratch-index");
    if scratch_dir.exists() {
        std::fs::remove_dir_all(&scratch_dir).map_err(|source| StoreError::Io {
            path: scratch_dir.clone(),
            source,
        })?;
    }
    let rebuilt = Index::open(
        &scratch_dir,
        StoreConfig::INDEX_CACHE_BYTES_DEFAULT,
        StoreConfig::INDEX_FLUSH_MS_DEFAULT,
    )?;
    replay(&reader, &rebuilt, JournalPos(0), indexed)?;
    compare_indexes(&live, &rebuilt, &mut report)?;
    compare_views(cfg, &reader, &mut report)?;
    drop(rebuilt);
    std::fs::remove_dir_all(&scratch_dir).map_err(|source| StoreError::Io {
        path: scratch_dir.clone(),
        source,
    })?;
    Ok(report)
}

/// Rebuilds the merged view up to the live one's position and compares what they hold, fact by
/// fact (the layout of chunks differs between a live view and a rebuilt one; the facts may not).
fn compare_views(cfg: &StoreConfig, reader: &JournalReader, report: &mut VerifyReport) -> Result<(), StoreError> {
    let live_view = View::open(
        &super::index::open_sled(
            &cfg.view_dir(),
            StoreConfig::INDEX_CACHE_BYTES_DEFAULT,
            StoreConfig::INDEX_FLUSH_MS_DEFAULT,
        )?,
        &cfg.view_dir(),
        super::view::ViewLayout::default(),
    )?;
    let position = live_view.position();
    report.view_entries = position.entries;
    report.view_undecodable = position.undecodable;
    let scratch = cfg.dir.join("verify-scratch-view");
    let remove_scratch = || {
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch).map_err(|source| StoreError::Io {
                path: scratch.clone(),
                source,
            })?;
        }
        Ok::<_, StoreError>(())
    };
    remove_scratch()?;
    let fresh = View::open(
        &super::index::open_sled(
            &scratch,
            StoreConfig::INDEX_CACHE_BYTES_DEFAULT,
            StoreConfig::INDEX_FLUSH_MS_DEFAULT,
        )?,
        &scratch,
        super::view::ViewLayout::default(),
    )?;
    fresh.load_filter()?;
    fresh.catch_up(
        reader,
        position.pos,
        super::view::BATCH_ENTRIES_MAX,
        None,
        super::view::Reader::spawn().ok().as_ref(),
        |_| {},
    )?;
    let mut a = Vec::new();
    live_view.logical_dump(|l| a.push(l))?;
    let mut b = Vec::new();
    // A view made by an older version keeps no day marks: compare the rest.
    let days = live_view.days_complete();
    fresh.logical_dump(|l| {
        if days || !l.starts_with("day") {
            b.push(l)
        }
    })?;
    let (set_a, set_b): (std::collections::BTreeSet<_>, std::collections::BTreeSet<_>) =
        (a.iter().collect(), b.iter().collect());
    for l in set_a.difference(&set_b) {
        report.problem(format!("merged view holds what the journal does not give: {l}"));
    }
    for l in set_b.difference(&set_a) {
        report.problem(format!("merged view is missing: {l}"));
    }
    for d in live_view.damaged_chunks()? {
        report.problem(d);
    }
    for u in live_view.undecodable(PROBLEMS_LISTED_MAX)? {
        report.undecodable.push(format!("{}/{}: {}", u.origin, u.seq, u.reason));
    }
    drop(fresh);
    remove_scratch()?;
    Ok(())
}

fn compare_indexes(live: &Index, rebuilt: &Index, report: &mut VerifyReport) -> Result<(), StoreError> {
    let mut a = live.iter();
    let mut b = rebuilt.iter();
    let mut x = a.next().transpose().map_err(super::index::IndexError::from)?;
    let mut y = b.next().transpose().map_err(super::index::IndexError::from)?;
    loop {
        match (&x, &y) {
            (None, None) => return Ok(()),
            (Some((ka, va)), Some((kb, vb))) if ka == kb => {
                if va != vb {
                    report.problem(format!(
                        "index key {} has a value the journal does not give",
                        hex::encode(ka)
                    ));
                }
                x = a.next().transpose().map_err(super::index::IndexError::from)?;
                y = b.next().transpose().map_err(super::index::IndexError::from)?;
            }
            (Some((ka, _)), Some((kb, _))) if ka < kb => {
                report.problem(format!("index key {} is not derived from the journal", hex::encode(ka)));
                x = a.next().transpose().map_err(super::index::IndexError::from)?;
            }
            (Some((ka, _)), None) => {
                report.problem(format!("index key {} is not derived from the journal", hex::encode(ka)));
                x = a.next().transpose().map_err(super::index::IndexError::from)?;
            }
            (_, Some((kb, _))) => {
                report.problem(format!("index is missing key {}", hex::encode(kb)));
                y = b.next().transpose().map_err(super::index::IndexError::from)?;
            }
        }
    }
}

/// Per origin, the number of entries and a digest of their operation bytes in seq order, read
/// from a journal (a live one too: a frame still being written ends the scan). Two stores whose
/// digests match hold the same records, not only the same heads.
pub fn content_digests(journal_dir: &std::path::Path) -> Result<BTreeMap<Region, (u64, Hash)>, JournalError> {
    use sha2::{Digest, Sha256};
    let reader = JournalReader::new(journal_dir);
    let mut hashers: BTreeMap<Region, (u64, Sha256)> = BTreeMap::new();
    let end = reader.end()?;
    let scanned = reader.scan(JournalPos(0), end, |_, _, frame| {
        if let Frame::Entry(e) = frame {
            let (n, h) = hashers.entry(e.origin).or_insert_with(|| (0, Sha256::new()));
            *n += 1;
            h.update(e.seq.to_be_bytes());
            h.update(crate::log::digest(&e.op_bytes));
        }
        Ok::<_, JournalError>(true)
    });
    match scanned {
        Ok(()) | Err(JournalError::TornTail { .. }) => {}
        Err(e) => return Err(e),
    }
    Ok(hashers
        .into_iter()
        .map(|(o, (n, h))| (o, (n, h.finalize().into())))
        .collect())
}
