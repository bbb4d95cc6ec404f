//! What an operation does to the records of one origin (STANDARDS §8.1): publish, amend,
//! duplicate, conflict, repair (held until its target arrives), revoke. Pure. `decide` runs before
//! an operation is appended; `apply` runs for every appended entry, at the origin and when a
//! replica or `reindex` replays the log, so the state is a function of the log alone.

use super::Hash;
use crate::record::{Category, Operation, RecordId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordState {
    pub category: Category,
    pub version: u32,
    /// Seq of the entry holding the record's latest version.
    pub upsert_seq: u64,
    /// Digest of the latest version's canonical bytes (duplicate detection).
    pub content_digest: Hash,
    /// Seq of the repair that ended this record's publicity; 0 if none.
    pub repaired_by_seq: u64,
    /// Seq of the revocation; 0 if none.
    pub revoked_seq: u64,
    pub revoke_digest: Hash,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    Publish,
    Amend,
    Repair,
    Revoke,
    /// A department's receipt: changes no record.
    Receipt,
}

impl OpKind {
    pub fn code(self) -> &'static str {
        match self {
            OpKind::Publish => "publish",
            OpKind::Amend => "amend",
            OpKind::Repair => "repair",
            OpKind::Revoke => "revoke",
            OpKind::Receipt => "receipt",
        }
    }
}

/// A refusal that depends on the log's state rather than on the record alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpRejection {
    pub reason: &'static str,
    pub field: &'static str,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Append {
        kind: OpKind,
        held_for_target: bool,
    },
    /// Already in the log with identical content at this seq.
    Duplicate {
        seq: u64,
    },
    Reject(OpRejection),
}

/// The record states of one origin, as the ledger reads and writes them.
pub trait LedgerState {
    fn get(&mut self, id: &RecordId) -> Option<RecordState>;
    fn put(&mut self, id: RecordId, state: RecordState);
    /// Remembers a repair (at `repair_seq`) whose target has not arrived.
    fn add_pending_repair(&mut self, target: RecordId, repair_seq: u64);
    /// Takes the held repair of `target`, if any.
    fn take_pending_repair(&mut self, target: &RecordId) -> Option<u64>;
}

fn reject(reason: &'static str, field: &'static str, detail: String) -> Decision {
    Decision::Reject(OpRejection { reason, field, detail })
}

/// Decides what `op` (with `digest` = SHA-256 of its canonical bytes) would be, given the current
/// state of its record and, for a repair, of the repaired record.
pub fn decide(op: &Operation, digest: &Hash, current: Option<&RecordState>, target: Option<&RecordState>) -> Decision {
    match op {
        Operation::Upsert(rec) => match current {
            None => {
                if rec.category == Category::CreditRepair {
                    Decision::Append {
                        kind: OpKind::Repair,
                        held_for_target: target.is_none(),
                    }
                } else {
                    Decision::Append {
                        kind: OpKind::Publish,
                        held_for_target: false,
                    }
                }
            }
            Some(s) if s.revoked_seq != 0 => reject(
                "record_revoked",
                "record_id",
                format!("record was revoked at seq {} and cannot change", s.revoked_seq),
            ),
            Some(s) if rec.record_version == s.version => {
                if *digest == s.content_digest {
                    Decision::Duplicate { seq: s.upsert_seq }
                } else {
                    reject(
                        "version_conflict",
                        "record_version",
                        format!("version {} is already in the log with different content; amend with a higher record_version", s.version),
                    )
                }
            }
            Some(s) if rec.record_version < s.version => reject(
                "stale_version",
                "record_version",
                format!(
                    "record_version {} is older than the logged version {}",
                    rec.record_version, s.version
                ),
            ),
            Some(s) if rec.category != s.category => reject(
                "category_changed",
                "category",
                format!("an amendment cannot change the category from {}", s.category.code()),
            ),
            Some(_) => Decision::Append {
                kind: OpKind::Amend,
                held_for_target: false,
            },
        },
        Operation::Revoke(_) => match current {
            None => reject(
                "unknown_record",
                "record_id",
                "no record with this id in this origin's log".to_string(),
            ),
            Some(s) if s.revoked_seq != 0 => {
                if *digest == s.revoke_digest {
                    Decision::Duplicate { seq: s.revoked_seq }
                } else {
                    reject(
                        "record_revoked",
                        "record_id",
                        format!("record was already revoked at seq {}", s.revoked_seq),
                    )
                }
            }
            Some(_) => Decision::Append {
                kind: OpKind::Revoke,
                held_for_target: false,
            },
        },
        // A receipt has a fresh id each time and changes no record.
        Operation::Receipt(_) => Decision::Append {
            kind: OpKind::Receipt,
            held_for_target: false,
        },
    }
}

/// The record a decision needs besides the operation's own: the target of a repair.
pub fn repair_target(op: &Operation) -> Option<RecordId> {
    match op {
        Operation::Upsert(rec) if rec.category == Category::CreditRepair => rec.repaired_record_id,
        _ => None,
    }
}

/// What an appended operation changes, as the ledger applies it (from a whole `Operation`, or
/// from the summary an index reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Upsert {
        record_id: RecordId,
        category: Category,
        version: u32,
        /// The record a credit repair repairs.
        repairs: Option<RecordId>,
    },
    Revoke {
        record_id: RecordId,
    },
    /// Changes no record state.
    Nothing,
}

impl Change {
    pub fn of(op: &Operation) -> Change {
        match op {
            Operation::Upsert(rec) => Change::Upsert {
                record_id: rec.record_id,
                category: rec.category,
                version: rec.record_version,
                repairs: repair_target(op),
            },
            Operation::Revoke(rv) => Change::Revoke {
                record_id: rv.record_id,
            },
            Operation::Receipt(_) => Change::Nothing,
        }
    }
}

/// Applies an appended operation at `seq` to the state.
pub fn apply(state: &mut impl LedgerState, op: &Operation, seq: u64, digest: Hash) {
    apply_change(state, &Change::of(op), seq, digest)
}

/// Applies an appended change at `seq` to the state.
pub fn apply_change(state: &mut impl LedgerState, change: &Change, seq: u64, digest: Hash) {
    match *change {
        Change::Upsert {
            record_id,
            category,
            version,
            repairs,
        } => {
            let previous = state.get(&record_id);
            let mut repaired_by_seq = previous.map_or(0, |p| p.repaired_by_seq);
            if previous.is_none() {
                if let Some(repair_seq) = state.take_pending_repair(&record_id) {
                    repaired_by_seq = repair_seq;
                }
            }
            state.put(
                record_id,
                RecordState {
                    category,
                    version,
                    upsert_seq: seq,
                    content_digest: digest,
                    repaired_by_seq,
                    revoked_seq: 0,
                    revoke_digest: [0; 32],
                },
            );
            if let Some(target) = repairs {
                match state.get(&target) {
                    Some(mut t) => {
                        if t.repaired_by_seq == 0 {
                            t.repaired_by_seq = seq;
                            state.put(target, t);
                        }
                    }
                    None => state.add_pending_repair(target, seq),
                }
            }
        }
        Change::Revoke { record_id } => {
            if let Some(mut s) = state.get(&record_id) {
                s.revoked_seq = seq;
                s.revoke_digest = digest;
                state.put(record_id, s);
            }
        }
        Change::Nothing => {}
    }
}

/// A ledger state in plain maps, for tests (the ledger's own and the stores' reference models).
#[cfg(test)]
pub mod testing {
    use super::{LedgerState, RecordState};
    use crate::record::RecordId;
    use std::collections::HashMap;

    #[derive(Default)]
    pub struct MapState {
        pub records: HashMap<RecordId, RecordState>,
        pub pending: HashMap<RecordId, u64>,
    }

    impl LedgerState for MapState {
        fn get(&mut self, id: &RecordId) -> Option<RecordState> {
            self.records.get(id).copied()
        }
        fn put(&mut self, id: RecordId, state: RecordState) {
            self.records.insert(id, state);
        }
        fn add_pending_repair(&mut self, target: RecordId, repair_seq: u64) {
            self.pending.insert(target, repair_seq);
        }
        fn take_pending_repair(&mut self, target: &RecordId) -> Option<u64> {
            self.pending.remove(target)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::digest;
    use crate::record::{parse_operation, RecordGenerator, Region};

    use super::testing::MapState;

    /// Decides and applies like the writer does; returns the decision.
    fn submit(state: &mut MapState, seq: &mut u64, line: &str) -> Decision {
        let op = parse_operation(line.as_bytes()).expect("test line is valid");
        let d = digest(op.canonical());
        let current = state.get(&op.record_id());
        let target = repair_target(&op).and_then(|t| state.get(&t));
        let decision = decide(&op, &d, current.as_ref(), target.as_ref());
        if let Decision::Append { .. } = decision {
            *seq += 1;
            apply(state, &op, *seq, d);
        }
        decision
    }

    fn set(line: &str, key: &str, value: serde_json::Value) -> String {
        let mut v: serde_json::Value = serde_json::from_str(line).expect("generator emits json");
        v[key] = value;
        v.to_string()
    }

    fn first_of(gen: &mut RecordGenerator, category: &str) -> String {
        for _ in 0..10_000 {
            let line = gen.next_line();
            let v: serde_json::Value = serde_json::from_str(&line).expect("json");
            if v["category"] == category && v.get("record_version").and_then(|x| x.as_u64()).unwrap_or(1) == 1 {
                return line;
            }
        }
        panic!("generator never produced {category}");
    }

    fn zj() -> Region {
        Region::parse("330000").expect("province")
    }

    #[test]
    fn publish_duplicate_amend_conflict_stale() {
        let mut gen = RecordGenerator::new(7, zj());
        let mut st = MapState::default();
        let mut seq = 0;
        let line = first_of(&mut gen, "administrative_penalty");
        assert_eq!(
            submit(&mut st, &mut seq, &line),
            Decision::Append {
                kind: OpKind::Publish,
                held_for_target: false
            }
        );
        assert_eq!(submit(&mut st, &mut seq, &line), Decision::Duplicate { seq: 1 });

        let conflicting = set(&line, "subject_name", "另一家公司".into());
        match submit(&mut st, &mut seq, &conflicting) {
            Decision::Reject(r) => {
                assert_eq!((r.reason, r.field), ("version_conflict", "record_version"))
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        let amended = set(&conflicting, "record_version", 2.into());
        assert_eq!(
            submit(&mut st, &mut seq, &amended),
            Decision::Append {
                kind: OpKind::Amend,
                held_for_target: false
            }
        );
        match submit(&mut st, &mut seq, &line) {
            Decision::Reject(r) => assert_eq!(r.reason, "stale_version"),
            other => panic!("expected stale, got {other:?}"),
        }
        assert_eq!(seq, 2);
    }

    #[test]
    fn repair_before_its_target_is_held_then_applied() {
        let mut gen = RecordGenerator::new(9, zj());
        let mut st = MapState::default();
        let mut seq = 0;
        let penalty = first_of(&mut gen, "administrative_penalty");
        let repair = first_of(&mut gen, "credit_repair");
        let penalty_v: serde_json::Value = serde_json::from_str(&penalty).expect("json");
        let repair = set(&repair, "repaired_record_id", penalty_v["record_id"].clone());

        assert_eq!(
            submit(&mut st, &mut seq, &repair),
            Decision::Append {
                kind: OpKind::Repair,
                held_for_target: true
            }
        );
        assert_eq!(
            submit(&mut st, &mut seq, &penalty),
            Decision::Append {
                kind: OpKind::Publish,
                held_for_target: false
            }
        );
        let id = parse_operation(penalty.as_bytes()).expect("valid").record_id();
        assert_eq!(
            st.records[&id].repaired_by_seq, 1,
            "the held repair applies when its target arrives"
        );
        assert!(st.pending.is_empty());
    }

    #[test]
    fn repair_after_its_target_applies_at_once() {
        let mut gen = RecordGenerator::new(11, zj());
        let mut st = MapState::default();
        let mut seq = 0;
        let penalty = first_of(&mut gen, "administrative_penalty");
        let repair = first_of(&mut gen, "credit_repair");
        let penalty_v: serde_json::Value = serde_json::from_str(&penalty).expect("json");
        let repair = set(&repair, "repaired_record_id", penalty_v["record_id"].clone());
        submit(&mut st, &mut seq, &penalty);
        assert_eq!(
            submit(&mut st, &mut seq, &repair),
            Decision::Append {
                kind: OpKind::Repair,
                held_for_target: false
            }
        );
        let id = parse_operation(penalty.as_bytes()).expect("valid").record_id();
        assert_eq!(st.records[&id].repaired_by_seq, 2);
    }

    #[test]
    fn revoke_rules() {
        let mut gen = RecordGenerator::new(13, zj());
        let mut st = MapState::default();
        let mut seq = 0;
        let licence = first_of(&mut gen, "administrative_licence");
        let v: serde_json::Value = serde_json::from_str(&licence).expect("json");
        let revoke = serde_json::json!({"op": "revoke", "record_id": v["record_id"], "reason": "决定被撤销", "revoked_at": "2026-01-05"}).to_string();
        match submit(&mut st, &mut seq, &revoke) {
            Decision::Reject(r) => assert_eq!((r.reason, r.field), ("unknown_record", "record_id")),
            other => panic!("expected unknown_record, got {other:?}"),
        }
        submit(&mut st, &mut seq, &licence);
        assert_eq!(
            submit(&mut st, &mut seq, &revoke),
            Decision::Append {
                kind: OpKind::Revoke,
                held_for_target: false
            }
        );
        assert_eq!(submit(&mut st, &mut seq, &revoke), Decision::Duplicate { seq: 2 });
        let amended = set(&licence, "record_version", 2.into());
        match submit(&mut st, &mut seq, &amended) {
            Decision::Reject(r) => assert_eq!(r.reason, "record_revoked"),
            other => panic!("expected record_revoked, got {other:?}"),
        }
    }
}
