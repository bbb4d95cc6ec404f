//! Replication core (pure): what a node accepts from one peer's stream. Entries of each origin
//! are buffered in order (each checked against itself and linked to the one before) until a
//! checkpoint signed by the origin covers them; then the covered prefix, with its checkpoint, is
//! handed on to the judge (`judge`) and stored. Invariants: nothing leaves this module that a
//! valid origin checkpoint does not cover; per origin the buffer is contiguous and linked; the
//! link's buffers are bounded in bytes, all origins together; a bad entry is a fault of the link,
//! named precisely, and the link's buffers are dropped; a checkpoint that cannot be trusted (bad
//! signature, dated in the future, before what it covers, or before one already held) is refused
//! and reported as a forgery attempt, never stored and never taken for a fork; the first entry a
//! link sends of an origin may fail to link to the held head: that is a different branch, which
//! only the judge can call a fork once a valid checkpoint covers it.

pub mod feeders;
pub mod judge;
pub mod peer;
pub mod sender;

use crate::log::{ChainHead, Checkpoint, CheckpointVerifier, Entry, LogError, ENTRY_OVERHEAD_BYTES};
use crate::record::Region;
use std::collections::{BTreeMap, VecDeque};

/// Checkpoints refused on one link and not yet taken by the driver; past this only a count is kept.
const REFUSED_LISTED_MAX: usize = 16;

/// A batch as received: entries of one origin (in seq order) and checkpoints of that origin.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub origin: Option<Region>,
    pub entries: Vec<Entry>,
    pub checkpoints: Vec<Checkpoint>,
}

/// Entries of `origin` covered by `checkpoint`, ready to be stored (checked: linked, self-consistent,
/// and the checkpoint's signature and head hash match).
#[derive(Clone, Debug)]
pub struct Covered {
    pub origin: Region,
    pub entries: Vec<Entry>,
    pub checkpoint: Checkpoint,
}

/// What the receiver knows of the clock: time is an input, never read here.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub now_unix_seconds: i64,
    /// A checkpoint dated more than this ahead of `now` is refused.
    pub skew_seconds_max: i64,
}

/// Set once a peer shows that it holds more of this node's own log than this node does: (our
/// head, theirs, the peer). The driver sets it; the publisher refuses to publish while it is set.
pub type OwnLogBehind = std::sync::Arc<std::sync::Mutex<Option<(u64, u64, String)>>>;

/// A checkpoint refused as untrustworthy: reported, never stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forgery {
    pub origin: Region,
    pub seq: u64,
    pub reason: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Fault {
    #[error("peer sent a bad entry: {0}")]
    BadEntry(LogError),
    #[error("peer's entries of {origin} do not match the origin's signed checkpoint at seq {seq}")]
    CheckpointMismatch { origin: Region, seq: u64 },
    #[error("peer sent a batch mixing origins or naming none")]
    MixedBatch,
    #[error("more than {limit} bytes of entries (all origins of this link; the last of {origin}) arrived without a covering checkpoint")]
    Overflow { origin: Region, limit: u64 },
}

struct Pending {
    /// Where the buffer's chain stands (after its last entry).
    head: ChainHead,
    entries: VecDeque<Entry>,
    bytes: u64,
    /// This link has sent an entry of this origin (after that, every entry must link).
    started: bool,
    /// Signing time of the latest checkpoint held or accepted, with its seq.
    latest: Option<(u64, i64)>,
}

impl Pending {
    fn at(head: ChainHead) -> Pending {
        Pending {
            head,
            entries: VecDeque::new(),
            bytes: 0,
            started: false,
            latest: None,
        }
    }
}

fn entry_bytes(e: &Entry) -> u64 {
    e.op_bytes.len() as u64 + ENTRY_OVERHEAD_BYTES
}

/// The receiving side of one peer link.
pub struct LinkReceiver {
    pending: BTreeMap<Region, Pending>,
    /// Uncovered bytes of all origins together, and their bound.
    pending_bytes: u64,
    pending_bytes_max: u64,
    refused: Vec<Forgery>,
    refused_total: u64,
    /// Entries skipped because the store held them already, not yet taken.
    skipped: u64,
    /// Checkpoints (origin, seq) whose signature and date checked out, not yet taken (at most
    /// the checkpoints of one batch).
    verified: Vec<(Region, u64)>,
}

impl LinkReceiver {
    /// `heads`: where the local store stands per origin when the stream starts (the stream begins
    /// right after these).
    pub fn new(heads: impl IntoIterator<Item = (Region, ChainHead)>, pending_bytes_max: u64) -> LinkReceiver {
        LinkReceiver {
            pending: heads.into_iter().map(|(o, head)| (o, Pending::at(head))).collect(),
            pending_bytes: 0,
            pending_bytes_max,
            refused: Vec::new(),
            refused_total: 0,
            skipped: 0,
            verified: Vec::new(),
        }
    }

    /// Checkpoints accepted as the origin's since the last call: (origin, seq). What is ahead of
    /// this link's entries is included (its signature is checked; what it covers is not known yet).
    pub fn take_verified(&mut self) -> Vec<(Region, u64)> {
        std::mem::take(&mut self.verified)
    }

    /// Entries skipped since the last call because the store held them already (duplicates).
    pub fn take_skipped(&mut self) -> u64 {
        std::mem::take(&mut self.skipped)
    }

    /// Tells the receiver the latest checkpoint the store holds of `origin` (seq, signing time):
    /// a checkpoint dated before it, at that seq or above, is refused.
    pub fn hold_checkpoint(&mut self, origin: Region, seq: u64, at_unix_seconds: i64) {
        self.pending
            .entry(origin)
            .or_insert_with(|| Pending::at(ChainHead::default()))
            .latest = Some((seq, at_unix_seconds));
    }

    /// Where the store stands now for `origin`, which this link has not streamed (it is fed by
    /// another peer): checkpoints this link carries of it are then judged against what the store
    /// holds, not against what it held when the stream opened. Ignored once this link has sent
    /// entries of the origin.
    pub fn follow_store(&mut self, origin: Region, head: ChainHead) {
        let p = self.pending.entry(origin).or_insert_with(|| Pending::at(head));
        if !p.started && p.entries.is_empty() {
            p.head = head;
        }
    }

    /// Checkpoints refused since the last call, and how many were refused in all.
    pub fn take_refused(&mut self) -> (Vec<Forgery>, u64) {
        (std::mem::take(&mut self.refused), self.refused_total)
    }

    fn refuse(&mut self, origin: Region, seq: u64, reason: String) {
        self.refused_total += 1;
        if self.refused.len() < REFUSED_LISTED_MAX {
            self.refused.push(Forgery { origin, seq, reason });
        }
    }

    /// Takes one batch; returns what valid checkpoints now cover, or the link's fault.
    pub fn receive(
        &mut self,
        batch: Batch,
        verifier: &dyn CheckpointVerifier,
        clock: Clock,
    ) -> Result<Vec<Covered>, Fault> {
        let origin = batch.origin.ok_or(Fault::MixedBatch)?;
        if batch.entries.iter().any(|e| e.origin != origin) || batch.checkpoints.iter().any(|c| c.origin != origin) {
            return Err(Fault::MixedBatch);
        }
        let limit = self.pending_bytes_max;
        let p = self
            .pending
            .entry(origin)
            .or_insert_with(|| Pending::at(ChainHead::default()));
        for e in batch.entries {
            if e.seq < p.head.next_seq && p.entries.is_empty() && !p.started {
                // Already held locally (the stream may overlap what another peer delivered): the
                // judge checks it is identical; nothing to buffer here.
                self.skipped += 1;
                continue;
            }
            let mut head = p.head;
            match head.advance(&e) {
                Ok(()) => {}
                // The first entry past our head links to another branch: buffer it as the start
                // of that branch; once a valid checkpoint covers it the judge calls it a fork.
                Err(LogError::BrokenLink { .. }) if !p.started && p.entries.is_empty() && e.seq == p.head.next_seq => {
                    e.verify_self().map_err(Fault::BadEntry)?;
                    head = ChainHead {
                        next_seq: e.seq + 1,
                        head_hash: e.hash,
                    };
                }
                Err(err) => return Err(Fault::BadEntry(err)),
            }
            // Judged before anything changes: a fault leaves the receiver as it was (its head
            // and its buffered entries agree), whatever the caller does next.
            let bytes = entry_bytes(&e);
            if self.pending_bytes + bytes > limit {
                return Err(Fault::Overflow { origin, limit });
            }
            p.head = head;
            p.started = true;
            p.bytes += bytes;
            self.pending_bytes += bytes;
            p.entries.push_back(e);
        }
        let mut out = Vec::new();
        let mut refused = Vec::new();
        for c in batch.checkpoints {
            if let Err(e) = c.verify(verifier) {
                refused.push((c.seq, format!("signature does not verify: {e}")));
                continue;
            }
            if c.at_unix_seconds > clock.now_unix_seconds + clock.skew_seconds_max {
                refused.push((
                    c.seq,
                    format!(
                        "dated {} s ahead of this node's clock (at most {} s allowed)",
                        c.at_unix_seconds - clock.now_unix_seconds,
                        clock.skew_seconds_max
                    ),
                ));
                continue;
            }
            let first = p.entries.front().map(|e| e.seq);
            match first {
                Some(first) if c.seq >= first && c.seq <= p.head.seq() => {
                    // It would add entries: dated before a checkpoint held at a lower or equal
                    // seq, it is a back-dated forgery. (One that covers only held entries goes
                    // to the judge: where it agrees with the held chain it is merely old.)
                    if let Some((seq, at)) = p.latest.filter(|(seq, at)| *seq <= c.seq && c.at_unix_seconds < *at) {
                        refused.push((
                            c.seq,
                            format!(
                                "dated {} but a checkpoint at seq {seq} dated {at} is held: back-dated",
                                c.at_unix_seconds
                            ),
                        ));
                        continue;
                    }
                    let idx = (c.seq - first) as usize;
                    if p.entries[idx].hash != c.head_hash {
                        return Err(Fault::CheckpointMismatch { origin, seq: c.seq });
                    }
                    let newest = p.entries[idx].appended_at_micros.div_euclid(1_000_000);
                    if c.at_unix_seconds < newest {
                        refused.push((
                            c.seq,
                            format!(
                                "dated {} before the entry it covers was appended ({newest})",
                                c.at_unix_seconds
                            ),
                        ));
                        continue;
                    }
                    self.verified.push((origin, c.seq));
                    let covered: Vec<Entry> = p.entries.drain(..=idx).collect();
                    let freed: u64 = covered.iter().map(entry_bytes).sum();
                    p.bytes -= freed;
                    self.pending_bytes -= freed;
                    p.latest = Some((c.seq, c.at_unix_seconds));
                    out.push(Covered {
                        origin,
                        entries: covered,
                        checkpoint: c,
                    });
                }
                // Covers only entries held already, or none buffered: the judge compares it with
                // the held chain (that is how forks are found).
                _ if c.seq < p.head.next_seq && first.is_none_or(|f| c.seq < f) => {
                    if p.latest.is_none_or(|(_, at)| c.at_unix_seconds >= at) && c.seq >= p.latest.map_or(0, |l| l.0) {
                        p.latest = Some((c.seq, c.at_unix_seconds));
                    }
                    self.verified.push((origin, c.seq));
                    out.push(Covered {
                        origin,
                        entries: Vec::new(),
                        checkpoint: c,
                    })
                }
                // Ahead of what this link sent: it can only be judged with entries not sent yet.
                _ => self.verified.push((origin, c.seq)),
            }
        }
        for (seq, reason) in refused {
            self.refuse(origin, seq, reason);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
