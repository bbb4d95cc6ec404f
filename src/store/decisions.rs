//! What the writer needs to decide a publish without a sled read and write per record: the state
//! of this node's own records that the merged view has not indexed yet, in memory. A decision
//! looks here first and then in the view (whose Bloom filter answers "new id" from memory).
//! Invariants: every own entry past the view's own-origin seq is here (rebuilt from the journal
//! tail at open, added by the writer after each append); an entry leaves only once the view has
//! indexed it; so a decision sees exactly the state the log implies. Its size is bounded by the
//! indexer lag bound (`StoreConfig::index_lag_entries_max`), which holds the writer back.

use crate::log::ledger::RecordState;
use crate::log::Hash;
use crate::record::{Operation, RecordId};
use std::collections::{HashMap, VecDeque};

/// An own record's state as decisions need it (with the digests the view does not keep).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    pub state: RecordState,
    /// Seq of the latest entry on the record.
    last_seq: u64,
}

/// Bytes per record this structure holds while it holds it (key, state, queue slot; hash map
/// overhead not counted).
pub const BYTES_PER_RECORD: usize = std::mem::size_of::<(RecordId, Pending)>() + std::mem::size_of::<(u64, RecordId)>();

#[derive(Default)]
pub struct Decisions {
    records: HashMap<RecordId, Pending>,
    /// (seq, record) in seq order, to let entries go once the view has them.
    order: VecDeque<(u64, RecordId)>,
}

impl Decisions {
    pub fn get(&self, id: &RecordId) -> Option<RecordState> {
        self.records.get(id).map(|p| p.state)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Records an appended own operation at `seq`; `previous` is the record's state before it.
    pub fn appended(&mut self, op: &Operation, seq: u64, digest: Hash, previous: Option<RecordState>) {
        let state = match op {
            Operation::Upsert(rec) => RecordState {
                category: rec.category,
                version: rec.record_version,
                upsert_seq: seq,
                content_digest: digest,
                repaired_by_seq: previous.map_or(0, |p| p.repaired_by_seq),
                revoked_seq: 0,
                revoke_digest: [0; 32],
            },
            Operation::Revoke(_) => match previous {
                Some(p) => RecordState {
                    revoked_seq: seq,
                    revoke_digest: digest,
                    ..p
                },
                None => return,
            },
            // A receipt changes no record: nothing to decide on later.
            Operation::Receipt(_) => return,
        };
        let id = op.record_id();
        self.records.insert(id, Pending { state, last_seq: seq });
        self.order.push_back((seq, id));
    }

    /// Lets go of every record whose latest entry the view has indexed (`view_seq`: the view's
    /// seq of this origin).
    pub fn indexed_up_to(&mut self, view_seq: u64) {
        while let Some(&(seq, id)) = self.order.front() {
            if seq > view_seq {
                break;
            }
            self.order.pop_front();
            if self.records.get(&id).is_some_and(|p| p.last_seq == seq) {
                self.records.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{parse_operation, Category, RecordGenerator, Region};

    #[test]
    fn records_stay_until_the_view_has_their_latest_entry() {
        let mut g = RecordGenerator::new(3, Region::parse("330000").expect("zhejiang"));
        let op = parse_operation(g.next_line().as_bytes()).expect("valid");
        let id = op.record_id();
        let mut d = Decisions::default();
        d.appended(&op, 5, [1; 32], None);
        let first = d.get(&id).expect("held");
        assert_eq!((first.upsert_seq, first.content_digest), (5, [1; 32]));
        d.appended(&op, 9, [2; 32], Some(first));
        d.indexed_up_to(5);
        assert_eq!(d.get(&id).map(|s| s.upsert_seq), Some(9), "the later entry keeps it");
        d.indexed_up_to(9);
        assert!(d.get(&id).is_none() && d.is_empty());
        assert_ne!(first.category, Category::CreditRepair);
    }
}
