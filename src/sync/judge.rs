//! The judge (pure): how a covered batch from a peer relates to the chain this node holds of its
//! origin. One place decides Append, AlreadyHeld, Refresh, Fork, Gap, BackDated or OwnLogBehind;
//! the store only carries the verdict out. Invariants: nothing is appended that does not link to
//! the head; in a hash chain the highest entry both sides hold decides for every entry below it,
//! so one hash lookup suffices; a checkpoint dated before one held at a lower or equal seq is a
//! forgery attempt (a stolen or revoked key back-dating), never a fork; a valid checkpoint that
//! contradicts the held chain otherwise is a fork, never a fault of the peer that carried it.

use super::Covered;
use crate::log::{ChainHead, Hash};
use crate::record::Region;

/// What this node holds of the batch's origin.
#[derive(Clone, Copy, Debug)]
pub struct Held {
    pub head: ChainHead,
    pub forked: bool,
    /// Signing time of the latest checkpoint held (unix seconds), if any.
    pub latest_checkpoint_at: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Append `covered.entries[first_new..]` and the checkpoint.
    Append { first_new: usize },
    /// Nothing new, and every entry and the checkpoint agree with the held chain.
    AlreadyHeld,
    /// No new entries, but a fresher checkpoint of the held head: keep it (it bounds what a
    /// stolen key can back-date).
    Refresh,
    /// The origin signed a chain that contradicts the held one at `seq`: keep the checkpoint as
    /// evidence and refuse the origin from now on.
    Fork { seq: u64 },
    /// The batch starts past the held head.
    Gap { have: u64, starts: u64 },
    /// A peer holds more of this node's own log than this node does.
    OwnLogBehind { ours: u64, theirs: u64 },
    /// The checkpoint is dated before the one held at seq `held_seq` (signed at `held_at`): a
    /// forgery attempt, refused without cutting the origin off.
    BackDated { held_seq: u64, held_at: i64 },
    /// Not stored, with the reason (own origin, forked origin, malformed).
    Refuse(String),
}

/// Whose entries may be taken from peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnOrigin {
    /// A running node: every origin but its own (only it writes that one).
    Refused(Region),
    /// `cxnode recover`: the node's own log too, from a replica, as any other origin's, except
    /// that the node's own checkpoints do not date-bound it: a node restored from an old backup
    /// signed a fresh checkpoint of its old head at start, later than the real checkpoints of
    /// the entries it lost. Those still need a valid signature and must link to the held head.
    Recovering(Region),
}

/// Lookups into the chain held of the batch's origin.
pub trait HeldChain {
    type Error;
    /// Hash of the held entry at `seq` (below the head).
    fn hash_at(&mut self, seq: u64) -> Result<Hash, Self::Error>;
    /// The held checkpoint with the greatest seq at or below `seq`: (seq, signing time).
    fn checkpoint_at_or_below(&mut self, seq: u64) -> Result<Option<(u64, i64)>, Self::Error>;
}

/// Judges `covered` against `held`, looking into the held chain through `chain`.
pub fn judge<C: HeldChain>(own: OwnOrigin, held: &Held, covered: &Covered, chain: &mut C) -> Result<Verdict, C::Error> {
    let origin = covered.origin;
    let head = held.head;
    let cp = &covered.checkpoint;
    if own == OwnOrigin::Refused(origin) {
        if cp.seq > head.seq() {
            return Ok(Verdict::OwnLogBehind {
                ours: head.seq(),
                theirs: cp.seq,
            });
        }
        return Ok(Verdict::Refuse(format!(
            "{origin} is this node's own origin; only this node writes it"
        )));
    }
    if held.forked {
        return Ok(Verdict::Refuse(format!(
            "origin {origin} is forked; its entries are refused"
        )));
    }
    if let Some(e) = covered
        .entries
        .iter()
        .find(|e| e.op_bytes.is_empty() || e.origin != origin)
    {
        return Ok(Verdict::Refuse(format!(
            "entry {}/{} is blank or of another origin",
            e.origin, e.seq
        )));
    }
    let verdict = relate(held, covered, chain)?;
    // A checkpoint dated before one held at a lower or equal seq is harmless where it agrees with
    // the held chain (an old, true statement, as relays forward them); where it would add entries
    // or contradict the chain it is a forgery attempt, never a fork.
    if matches!(verdict, Verdict::Append { .. } | Verdict::Fork { .. }) && own != OwnOrigin::Recovering(origin) {
        if let Some((held_seq, held_at)) = chain.checkpoint_at_or_below(cp.seq)? {
            if held_at > cp.at_unix_seconds {
                return Ok(Verdict::BackDated { held_seq, held_at });
            }
        }
    }
    Ok(verdict)
}

/// How the covered batch relates to the held chain, its checkpoint's date aside.
fn relate<C: HeldChain>(held: &Held, covered: &Covered, chain: &mut C) -> Result<Verdict, C::Error> {
    let head = held.head;
    let cp = &covered.checkpoint;
    let mut lookup = |seq: u64| -> Result<Hash, C::Error> {
        if seq == head.seq() {
            Ok(head.head_hash)
        } else {
            chain.hash_at(seq)
        }
    };
    if let Some(top) = covered.entries.iter().rev().find(|e| e.seq < head.next_seq) {
        if lookup(top.seq)? != top.hash {
            return Ok(Verdict::Fork { seq: top.seq });
        }
    }
    if cp.seq > 0 && cp.seq < head.next_seq && lookup(cp.seq)? != cp.head_hash {
        return Ok(Verdict::Fork { seq: cp.seq });
    }
    let first_new = covered.entries.iter().position(|e| e.seq >= head.next_seq);
    match first_new {
        Some(i) => {
            let first = &covered.entries[i];
            if first.seq != head.next_seq {
                return Ok(Verdict::Gap {
                    have: head.seq(),
                    starts: first.seq,
                });
            }
            if first.prev_hash != head.head_hash {
                return Ok(Verdict::Fork { seq: first.seq });
            }
            Ok(Verdict::Append { first_new: i })
        }
        None if cp.seq == head.seq()
            && cp.seq > 0
            && held.latest_checkpoint_at.is_none_or(|at| cp.at_unix_seconds > at) =>
        {
            Ok(Verdict::Refresh)
        }
        None => Ok(Verdict::AlreadyHeld),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Checkpoint, Entry};

    fn zj() -> Region {
        Region::parse("330000").expect("province")
    }
    fn js() -> Region {
        Region::parse("320000").expect("province")
    }

    /// A chain of origin `js` of `n` entries; `variant` changes the bytes (another branch).
    fn chain(n: u64, variant: &str) -> Vec<Entry> {
        let mut head = ChainHead::default();
        (1..=n)
            .map(|seq| {
                let e = Entry::new(
                    js(),
                    seq,
                    head.head_hash,
                    seq as i64,
                    format!("{variant}{seq}").into_bytes(),
                );
                head.advance(&e).expect("links");
                e
            })
            .collect()
    }

    fn head_of(entries: &[Entry]) -> ChainHead {
        entries.last().map_or_else(ChainHead::default, |e| ChainHead {
            next_seq: e.seq + 1,
            head_hash: e.hash,
        })
    }

    fn cp(entries: &[Entry], seq: u64, at: i64) -> Checkpoint {
        Checkpoint {
            origin: js(),
            seq,
            head_hash: entries[(seq - 1) as usize].hash,
            at_unix_seconds: at,
            signature_scheme: 0,
            signature: vec![1],
            signer_chain: vec![],
        }
    }

    fn covered(entries: &[Entry], cp_seq: u64, at: i64, all: &[Entry]) -> Covered {
        Covered {
            origin: js(),
            entries: entries.to_vec(),
            checkpoint: cp(all, cp_seq, at),
        }
    }

    /// The held chain of a table row: its entries and its checkpoints (seq, time).
    struct Chain<'a> {
        entries: &'a [Entry],
        checkpoints: Vec<(u64, i64)>,
    }

    impl HeldChain for Chain<'_> {
        type Error = &'static str;
        fn hash_at(&mut self, seq: u64) -> Result<Hash, Self::Error> {
            self.entries
                .get((seq - 1) as usize)
                .map(|e| e.hash)
                .ok_or("below the head by construction")
        }
        fn checkpoint_at_or_below(&mut self, seq: u64) -> Result<Option<(u64, i64)>, Self::Error> {
            Ok(self.checkpoints.iter().rev().find(|(s, _)| *s <= seq).copied())
        }
    }

    /// Held: `held_entries`, with a checkpoint at the head dated `latest_at` if given.
    fn run(held_entries: &[Entry], forked: bool, latest_at: Option<i64>, c: &Covered) -> Verdict {
        let head = head_of(held_entries);
        let checkpoints = latest_at.map(|at| (head.seq(), at)).into_iter().collect();
        run_with(held_entries, forked, checkpoints, c)
    }

    fn run_with(held_entries: &[Entry], forked: bool, checkpoints: Vec<(u64, i64)>, c: &Covered) -> Verdict {
        let held = Held {
            head: head_of(held_entries),
            forked,
            latest_checkpoint_at: checkpoints.last().map(|(_, at)| *at),
        };
        let mut chain = Chain {
            entries: held_entries,
            checkpoints,
        };
        judge(OwnOrigin::Refused(zj()), &held, c, &mut chain).expect("lookups succeed")
    }

    #[test]
    fn verdicts() {
        let a = chain(10, "a");
        let b = chain(10, "b");
        // Branch b shares nothing with a (entry 1 differs), so b's entries fork a at seq 1.
        let cases: Vec<(&str, Verdict, Verdict)> = vec![
            (
                "new entries linking to the head",
                run(&a[..5], false, Some(5), &covered(&a[5..], 10, 10, &a)),
                Verdict::Append { first_new: 0 },
            ),
            (
                "an overlap, then new entries",
                run(&a[..5], false, Some(5), &covered(&a[3..], 10, 10, &a)),
                Verdict::Append { first_new: 2 },
            ),
            (
                "everything held already",
                run(&a, false, Some(10), &covered(&a[2..], 10, 10, &a)),
                Verdict::AlreadyHeld,
            ),
            (
                "a fresher checkpoint of the head",
                run(&a, false, Some(10), &covered(&[], 10, 50, &a)),
                Verdict::Refresh,
            ),
            (
                "an older checkpoint below the head",
                run(&a, false, Some(10), &covered(&[], 4, 4, &a)),
                Verdict::AlreadyHeld,
            ),
            (
                "a longer branch from an honest relay: a fork, not a gap",
                run(&b[..5], false, Some(5), &covered(&a[5..], 10, 10, &a)),
                Verdict::Fork { seq: 6 },
            ),
            (
                "a shorter branch's checkpoint (from a heartbeat)",
                run(&b, false, Some(10), &covered(&[], 3, 3, &a)),
                Verdict::Fork { seq: 3 },
            ),
            (
                "a held entry that differs",
                run(&b[..5], false, Some(5), &covered(&a[2..], 10, 10, &a)),
                Verdict::Fork { seq: 5 },
            ),
            (
                "a contradicting checkpoint dated before one held below it: back-dated, not a fork",
                run_with(&a, false, vec![(4, 40), (10, 100)], &covered(&[], 6, 39, &b)),
                Verdict::BackDated {
                    held_seq: 4,
                    held_at: 40,
                },
            ),
            (
                "forged entries past the head under a back-dated checkpoint",
                run(&a[..5], false, Some(50), &covered(&b[5..], 10, 49, &b)),
                Verdict::BackDated {
                    held_seq: 5,
                    held_at: 50,
                },
            ),
            (
                "an old checkpoint of the held chain, dated before a later one: old but true",
                run_with(&a, false, vec![(4, 40), (10, 100)], &covered(&[], 10, 90, &a)),
                Verdict::AlreadyHeld,
            ),
            (
                "a contradicting checkpoint dated after the held ones: a fork",
                run_with(&a, false, vec![(4, 40), (10, 100)], &covered(&[], 6, 41, &b)),
                Verdict::Fork { seq: 6 },
            ),
            (
                "a gap",
                run(&a[..3], false, Some(3), &covered(&a[5..], 10, 10, &a)),
                Verdict::Gap { have: 3, starts: 6 },
            ),
            (
                "a forked origin",
                run(&a[..3], true, Some(3), &covered(&a[3..], 10, 10, &a)),
                Verdict::Refuse("origin 320000 is forked; its entries are refused".to_string()),
            ),
        ];
        for (what, got, want) in cases {
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn blank_entries_are_refused_even_if_covered() {
        let a = chain(4, "a");
        let mut blank = a.clone();
        blank[2].op_bytes.clear();
        let v = run(&a[..2], false, None, &covered(&blank[2..], 4, 4, &a));
        assert!(matches!(v, Verdict::Refuse(ref r) if r.contains("blank")), "{v:?}");
    }

    #[test]
    fn our_own_origin_is_never_taken_from_a_peer() {
        let a: Vec<Entry> = chain(5, "a");
        let c = Covered {
            origin: zj(),
            entries: vec![],
            checkpoint: Checkpoint {
                origin: zj(),
                ..cp(&a, 5, 5)
            },
        };
        let held = Held {
            head: head_of(&a[..2]),
            forked: false,
            latest_checkpoint_at: None,
        };
        let mut chain = Chain {
            entries: &a[..2],
            checkpoints: vec![],
        };
        let v = judge(OwnOrigin::Refused(zj()), &held, &c, &mut chain).expect("no lookup");
        assert_eq!(v, Verdict::OwnLogBehind { ours: 2, theirs: 5 });
        // Recovering, the node takes its own log from a replica like any other origin's.
        let rest = Covered {
            origin: js(),
            entries: a[2..].to_vec(),
            checkpoint: cp(&a, 5, 5),
        };
        let v = judge(OwnOrigin::Refused(js()), &held, &rest, &mut chain).expect("lookups");
        assert_eq!(v, Verdict::OwnLogBehind { ours: 2, theirs: 5 });
        let v = judge(OwnOrigin::Recovering(js()), &held, &rest, &mut chain).expect("lookups");
        assert_eq!(v, Verdict::Append { first_new: 0 });
        // ... even after it signed a fresh checkpoint of its old head, dated after the real ones
        // of the entries it lost (which would be back-dated for any other origin).
        let mut chain = Chain {
            entries: &a[..2],
            checkpoints: vec![(2, 1000)],
        };
        let v = judge(OwnOrigin::Recovering(js()), &held, &rest, &mut chain).expect("lookups");
        assert_eq!(v, Verdict::Append { first_new: 0 });
        let v = judge(OwnOrigin::Recovering(zj()), &held, &rest, &mut chain).expect("lookups");
        assert_eq!(
            v,
            Verdict::BackDated {
                held_seq: 2,
                held_at: 1000
            }
        );
    }
}
