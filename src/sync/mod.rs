//! Replication core (pure): what a node accepts from one peer's stream. Entries of each origin
//! are buffered in order (each checked against itself and linked to the one before) until a
//! checkpoint signed by the origin covers them; then the covered prefix, with its checkpoint, is
//! handed on to be stored. Invariants: nothing leaves this module that a valid origin checkpoint
//! does not cover; per origin the buffer is contiguous and linked; buffers are bounded in bytes;
//! any violation is a fault of the link, named precisely, and the link's buffers are dropped.

pub mod driver;

use crate::log::{ChainHead, Checkpoint, CheckpointVerifier, Entry, LogError};
use crate::record::Region;
use std::collections::{BTreeMap, VecDeque};

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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Fault {
    #[error("peer sent a bad entry: {0}")]
    BadEntry(LogError),
    #[error("peer sent a checkpoint of {origin} at seq {seq} whose signature does not verify: {reason}")]
    ForgedCheckpoint { origin: Region, seq: u64, reason: String },
    #[error("peer's entries of {origin} do not match the origin's signed checkpoint at seq {seq}")]
    CheckpointMismatch { origin: Region, seq: u64 },
    #[error("peer sent a batch mixing origins or naming none")]
    MixedBatch,
    #[error("more than {limit} bytes of entries of {origin} arrived without a covering checkpoint")]
    Overflow { origin: Region, limit: u64 },
}

struct Pending {
    /// Where the buffer's chain stands (after its last entry).
    head: ChainHead,
    entries: VecDeque<Entry>,
    bytes: u64,
}

/// The receiving side of one peer link.
pub struct LinkReceiver {
    pending: BTreeMap<Region, Pending>,
    pending_bytes_max: u64,
}

impl LinkReceiver {
    /// `heads`: where the local store stands per origin when the stream starts (the stream begins
    /// right after these).
    pub fn new(heads: impl IntoIterator<Item = (Region, ChainHead)>, pending_bytes_max: u64) -> LinkReceiver {
        let pending = heads
            .into_iter()
            .map(|(o, head)| {
                (
                    o,
                    Pending {
                        head,
                        entries: VecDeque::new(),
                        bytes: 0,
                    },
                )
            })
            .collect();
        LinkReceiver {
            pending,
            pending_bytes_max,
        }
    }

    /// Takes one batch; returns what valid checkpoints now cover, or the link's fault.
    pub fn receive(&mut self, batch: Batch, verifier: &dyn CheckpointVerifier) -> Result<Vec<Covered>, Fault> {
        let origin = batch.origin.ok_or(Fault::MixedBatch)?;
        if batch.entries.iter().any(|e| e.origin != origin) || batch.checkpoints.iter().any(|c| c.origin != origin) {
            return Err(Fault::MixedBatch);
        }
        let limit = self.pending_bytes_max;
        let p = self.pending.entry(origin).or_insert_with(|| Pending {
            head: ChainHead::default(),
            entries: VecDeque::new(),
            bytes: 0,
        });
        for e in batch.entries {
            if e.seq < p.head.next_seq && p.entries.is_empty() {
                // Already held locally (the stream may overlap what another peer delivered): the
                // store checks it is identical; nothing to buffer here.
                continue;
            }
            let mut head = p.head;
            head.advance(&e).map_err(Fault::BadEntry)?;
            p.head = head;
            p.bytes += e.op_bytes.len() as u64 + 128;
            if p.bytes > limit {
                return Err(Fault::Overflow { origin, limit });
            }
            p.entries.push_back(e);
        }
        let mut out = Vec::new();
        for c in batch.checkpoints {
            c.verify(verifier).map_err(|e| Fault::ForgedCheckpoint {
                origin,
                seq: c.seq,
                reason: e.to_string(),
            })?;
            let first = p.entries.front().map(|e| e.seq);
            match first {
                Some(first) if c.seq >= first && c.seq <= p.head.seq() => {
                    let idx = (c.seq - first) as usize;
                    if p.entries[idx].hash != c.head_hash {
                        return Err(Fault::CheckpointMismatch { origin, seq: c.seq });
                    }
                    let covered: Vec<Entry> = p.entries.drain(..=idx).collect();
                    p.bytes = p.entries.iter().map(|e| e.op_bytes.len() as u64 + 128).sum();
                    out.push(Covered {
                        origin,
                        entries: covered,
                        checkpoint: c,
                    });
                }
                // Covers only entries held already, or none buffered: the store compares it with
                // its own chain (that is how forks are found).
                _ if c.seq < p.head.next_seq => out.push(Covered {
                    origin,
                    entries: Vec::new(),
                    checkpoint: c,
                }),
                // Ahead of what this link sent: it can only be judged with entries not sent yet.
                _ => {}
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
