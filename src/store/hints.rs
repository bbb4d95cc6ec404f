//! Summary hints: what the writer already knows of the node's own entries it made durable,
//! handed to the indexer so it does not parse them again. Below both: the writer fills it,
//! the view's catch-up takes from it.

use crate::log::Hash;
use crate::record::{Region, Summary};
use std::collections::VecDeque;
use std::sync::Mutex;

/// Summaries the writer hands over at most, waiting for the indexer (past it, the indexer
/// parses the rest itself). Above the default lag bound (50,000), so none is dropped while the
/// bound holds the writer back.
pub const SUMMARY_HINTS_MAX: usize = 131_072;

/// What the writer already knows of the node's own entries it made durable: each entry's
/// summary, taken from the operation it validated, so the indexer does not parse its own
/// records a second time (that parse was a quarter of the indexer's CPU while publishing).
/// A hint is used only for the entry of its origin, seq and operation digest; anything else
/// (a restart, a dropped hint) is parsed from the journal as before, so a hint can make indexing
/// cheaper but never different.
pub struct SummaryHints {
    origin: Region,
    queue: Mutex<VecDeque<(u64, Hash, Summary)>>,
}

impl SummaryHints {
    pub fn new(origin: Region) -> SummaryHints {
        SummaryHints {
            origin,
            queue: Mutex::new(VecDeque::new()),
        }
    }

    /// The writer made these own entries (seq, operation digest, summary) durable, in seq order.
    pub fn add(&self, hints: impl IntoIterator<Item = (u64, Hash, Summary)>) {
        let mut q = self.queue.lock().expect("hints lock");
        for h in hints {
            if q.len() >= SUMMARY_HINTS_MAX {
                break;
            }
            q.push_back(h);
        }
    }

    /// The summary of entry `seq` of `origin` whose operation digest is `digest`, if handed over.
    pub fn take(&self, origin: Region, seq: u64, digest: &Hash) -> Option<Summary> {
        if origin != self.origin {
            return None;
        }
        let mut q = self.queue.lock().expect("hints lock");
        while q.front().is_some_and(|(s, _, _)| *s < seq) {
            q.pop_front();
        }
        match q.front() {
            Some((s, d, _)) if *s == seq && d == digest => q.pop_front().map(|(_, _, summary)| summary),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.queue.lock().expect("hints lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{parse_operation, RecordGenerator};

    #[test]
    fn a_hint_serves_only_its_own_entry_and_stale_hints_go() {
        let origin = Region::parse("330000").expect("zhejiang");
        let mut gen = RecordGenerator::new(5, origin);
        let ops: Vec<_> = (0..3)
            .map(|_| parse_operation(gen.next_line().as_bytes()).expect("valid"))
            .collect();
        let hints = SummaryHints::new(origin);
        hints.add(
            ops.iter()
                .enumerate()
                .map(|(i, op)| (i as u64 + 1, [i as u8; 32], op.into())),
        );
        assert_eq!(hints.len(), 3);
        // Another origin's entry, or the right seq with another digest, gets nothing.
        assert_eq!(hints.take(Region::parse("320000").expect("jiangsu"), 1, &[0; 32]), None);
        assert_eq!(hints.take(origin, 1, &[9; 32]), None);
        // Asking for seq 2 lets seq 1 go (the indexer is past it) and serves seq 2.
        assert_eq!(hints.take(origin, 2, &[1; 32]), Some(Summary::from(&ops[1])));
        assert_eq!(hints.take(origin, 1, &[0; 32]), None);
        assert_eq!(hints.len(), 1);
        assert_eq!(hints.take(origin, 3, &[2; 32]), Some(Summary::from(&ops[2])));
        assert!(hints.is_empty());
        // Bounded: what does not fit is left to the indexer's own parse.
        hints.add((0..SUMMARY_HINTS_MAX as u64 + 10).map(|s| (s, [0; 32], Summary::from(&ops[0]))));
        assert_eq!(hints.len(), SUMMARY_HINTS_MAX);
    }
}
