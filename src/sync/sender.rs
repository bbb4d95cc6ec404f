//! The sender (pure): what one peer is sent. Frames of the journal are taken in journal order;
//! per origin, only what the peer lacks (past its version vector) goes out, in seq order without
//! gaps, in bounded batches of one origin each. Invariants: a batch never exceeds the entry or
//! byte bound (a single entry larger than the byte bound goes alone); a checkpoint closes its
//! batch, so the receiver can store what it covers at once; a checkpoint is sent when it covers
//! anything the peer still lacks, or is the one at the peer's head (that is how forks are found);
//! when the peer asked for some origins only (`only`), nothing of the others is sent.

use super::Batch;
use crate::log::{Checkpoint, Entry, ENTRY_OVERHEAD_BYTES};
use crate::record::Region;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendLimits {
    pub batch_entries_max: usize,
    pub batch_bytes_max: usize,
}

/// Builds the batches for one peer from journal frames.
pub struct Sender {
    /// Per origin, the next seq the peer needs.
    next: BTreeMap<Region, u64>,
    limits: SendLimits,
    /// The origins the peer asked for; `None`: all.
    only: Option<BTreeSet<Region>>,
    /// Per origin, the last seq that may be sent.
    until: BTreeMap<Region, u64>,
    open: Batch,
    bytes: usize,
}

impl Sender {
    /// `have`: the peer's version vector (origin -> next seq it needs).
    pub fn new(have: BTreeMap<Region, u64>, limits: SendLimits) -> Sender {
        Sender {
            next: have,
            limits,
            only: None,
            until: BTreeMap::new(),
            open: Batch::default(),
            bytes: 0,
        }
    }

    /// Sends nothing of origins outside `origins` (the peer takes them from another feeder).
    pub fn only(mut self, origins: Option<BTreeSet<Region>>) -> Sender {
        self.only = origins;
        self
    }

    /// Sends nothing of `origin` past `last_seq`: the peer's own log, which it writes itself,
    /// is sent only as far as this node held it when the stream opened (enough to show the peer
    /// that it is behind; never its own entries echoed back).
    pub fn until(mut self, origin: Region, last_seq: u64) -> Sender {
        self.until.insert(origin, last_seq);
        self
    }

    fn wanted(&self, origin: Region, seq: u64) -> bool {
        self.only.as_ref().is_none_or(|o| o.contains(&origin)) && self.until.get(&origin).is_none_or(|u| seq <= *u)
    }

    /// Whether this node holding `origin` up to `next_seq` (exclusive) has entries this peer
    /// still needs and may be sent.
    pub fn needs(&self, origin: Region, next_seq: u64) -> bool {
        next_seq > self.next_seq(origin) && self.may_send(origin)
    }

    /// Whether anything more of `origin` may be sent (asked for, and not past its bound).
    pub fn may_send(&self, origin: Region) -> bool {
        self.wanted(origin, self.next_seq(origin))
    }

    /// The next seq the peer needs of `origin`.
    pub fn next_seq(&self, origin: Region) -> u64 {
        self.next.get(&origin).copied().unwrap_or(1)
    }

    /// The batch being filled, if it holds anything.
    pub fn flush(&mut self) -> Option<Batch> {
        let batch = std::mem::take(&mut self.open);
        self.bytes = 0;
        if batch.origin.is_none() || (batch.entries.is_empty() && batch.checkpoints.is_empty()) {
            return None;
        }
        Some(batch)
    }

    fn switch_to(&mut self, origin: Region, out: &mut Vec<Batch>) {
        if self.open.origin != Some(origin) {
            out.extend(self.flush());
            self.open.origin = Some(origin);
        }
    }

    /// Takes one entry of the journal; complete batches are pushed to `out`.
    pub fn entry(&mut self, e: Entry, out: &mut Vec<Batch>) {
        if e.seq < self.next_seq(e.origin) || !self.wanted(e.origin, e.seq) {
            return;
        }
        let bytes = e.op_bytes.len() + ENTRY_OVERHEAD_BYTES as usize;
        self.switch_to(e.origin, out);
        if !self.open.entries.is_empty() && self.bytes + bytes > self.limits.batch_bytes_max {
            out.extend(self.flush());
            self.open.origin = Some(e.origin);
        }
        self.next.insert(e.origin, e.seq + 1);
        self.bytes += bytes;
        self.open.entries.push(e);
        if self.open.entries.len() >= self.limits.batch_entries_max || self.bytes >= self.limits.batch_bytes_max {
            out.extend(self.flush());
        }
    }

    /// Takes one checkpoint of the journal; complete batches are pushed to `out`.
    pub fn checkpoint(&mut self, c: Checkpoint, out: &mut Vec<Batch>) {
        if c.seq + 1 < self.next_seq(c.origin) || !self.wanted(c.origin, c.seq) {
            return;
        }
        self.switch_to(c.origin, out);
        self.open.checkpoints.push(c);
        out.extend(self.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::ChainHead;

    fn zj() -> Region {
        Region::parse("330000").expect("province")
    }
    fn js() -> Region {
        Region::parse("320000").expect("province")
    }

    fn entries(origin: Region, n: u64, bytes: usize) -> Vec<Entry> {
        let mut head = ChainHead::default();
        (1..=n)
            .map(|seq| {
                let e = Entry::new(origin, seq, head.head_hash, seq as i64, vec![b'x'; bytes]);
                head.advance(&e).expect("links");
                e
            })
            .collect()
    }

    fn checkpoint(origin: Region, seq: u64) -> Checkpoint {
        Checkpoint {
            origin,
            seq,
            head_hash: [0; 32],
            at_unix_seconds: seq as i64,
            signature_scheme: 1,
            signature: Vec::new(),
            signer_chain: Vec::new(),
        }
    }

    const LIMITS: SendLimits = SendLimits {
        batch_entries_max: 3,
        batch_bytes_max: 1 << 20,
    };

    fn seqs(b: &Batch) -> Vec<u64> {
        b.entries.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn only_what_the_peer_lacks_is_sent_in_bounded_batches() {
        let mut s = Sender::new(BTreeMap::from([(zj(), 3)]), LIMITS);
        let mut out = Vec::new();
        for e in entries(zj(), 9, 10) {
            s.entry(e, &mut out);
        }
        out.extend(s.flush());
        assert_eq!(
            out.iter().map(seqs).collect::<Vec<_>>(),
            vec![vec![3, 4, 5], vec![6, 7, 8], vec![9]]
        );
        assert_eq!(s.next_seq(zj()), 10);
    }

    #[test]
    fn a_checkpoint_closes_its_batch_and_old_ones_are_not_sent() {
        let mut s = Sender::new(BTreeMap::from([(zj(), 3)]), LIMITS);
        let mut out = Vec::new();
        s.checkpoint(checkpoint(zj(), 1), &mut out);
        let es = entries(zj(), 4, 10);
        // The checkpoint at the peer's head (seq 2) is sent: it is how a fork would show.
        s.checkpoint(checkpoint(zj(), 2), &mut out);
        s.entry(es[2].clone(), &mut out);
        s.checkpoint(checkpoint(zj(), 3), &mut out);
        s.entry(es[3].clone(), &mut out);
        out.extend(s.flush());
        let shape: Vec<(Vec<u64>, Vec<u64>)> = out
            .iter()
            .map(|b| (seqs(b), b.checkpoints.iter().map(|c| c.seq).collect()))
            .collect();
        assert_eq!(shape, vec![(vec![], vec![2]), (vec![3], vec![3]), (vec![4], vec![])]);
    }

    #[test]
    fn origins_the_peer_did_not_ask_for_are_not_sent() {
        let mut s = Sender::new(BTreeMap::new(), LIMITS).only(Some(BTreeSet::from([js()])));
        let mut out = Vec::new();
        let (z, j) = (entries(zj(), 2, 10), entries(js(), 2, 10));
        for (a, b) in z.into_iter().zip(j) {
            s.entry(a, &mut out);
            s.entry(b, &mut out);
        }
        s.checkpoint(checkpoint(zj(), 2), &mut out);
        s.checkpoint(checkpoint(js(), 2), &mut out);
        out.extend(s.flush());
        let shape: Vec<(Region, Vec<u64>, usize)> = out
            .iter()
            .map(|b| (b.origin.expect("origin"), seqs(b), b.checkpoints.len()))
            .collect();
        assert_eq!(shape, vec![(js(), vec![1, 2], 1)]);
        assert_eq!(s.next_seq(zj()), 1, "nothing of the other origin counted as sent");
        // The peer's own origin only as far as held at the start.
        let mut s = Sender::new(BTreeMap::new(), LIMITS).until(zj(), 2);
        let mut out = Vec::new();
        for e in entries(zj(), 4, 10) {
            s.entry(e, &mut out);
        }
        s.checkpoint(checkpoint(zj(), 2), &mut out);
        s.checkpoint(checkpoint(zj(), 4), &mut out);
        out.extend(s.flush());
        let shape: Vec<(Vec<u64>, Vec<u64>)> = out
            .iter()
            .map(|b| (seqs(b), b.checkpoints.iter().map(|c| c.seq).collect()))
            .collect();
        assert_eq!(shape, vec![(vec![1, 2], vec![2])]);
    }

    #[test]
    fn batches_hold_one_origin_and_respect_the_byte_bound() {
        let limits = SendLimits {
            batch_entries_max: 100,
            batch_bytes_max: 2 * (1000 + ENTRY_OVERHEAD_BYTES as usize),
        };
        let mut s = Sender::new(BTreeMap::new(), limits);
        let mut out = Vec::new();
        let (z, j) = (entries(zj(), 3, 1000), entries(js(), 2, 1000));
        s.entry(z[0].clone(), &mut out);
        s.entry(j[0].clone(), &mut out);
        s.entry(z[1].clone(), &mut out);
        s.entry(z[2].clone(), &mut out);
        s.entry(j[1].clone(), &mut out);
        out.extend(s.flush());
        let shape: Vec<(Region, Vec<u64>)> = out.iter().map(|b| (b.origin.expect("origin"), seqs(b))).collect();
        assert_eq!(
            shape,
            vec![(zj(), vec![1]), (js(), vec![1]), (zj(), vec![2, 3]), (js(), vec![2])]
        );
        let big = SendLimits {
            batch_entries_max: 100,
            batch_bytes_max: 10,
        };
        let mut s = Sender::new(BTreeMap::new(), big);
        let mut out = Vec::new();
        for e in entries(zj(), 2, 1000) {
            s.entry(e, &mut out);
        }
        out.extend(s.flush());
        assert_eq!(out.iter().map(seqs).collect::<Vec<_>>(), vec![vec![1], vec![2]]);
    }
}
