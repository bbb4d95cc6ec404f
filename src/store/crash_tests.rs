//! The writer through hundreds of random crash points on a simulated file system that loses
//! what was not synced (`sim`): after every crash the store opens, holds every acknowledged
//! entry and every entry it served before, and its head ends a whole group.

use super::fs::SharedFs;
use super::sim::{Crash, SimFs};
use super::writer::{self, WriterLimits};
use super::{OpOutcome, Store, StoreConfig};
use crate::log::{digest, CheckpointSigner, Hash};
use crate::record::{parse_operation, Operation, RecordGenerator, Region};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Seeds × rounds = crash points exercised.
const SEEDS: u64 = 40;
const ROUNDS: u64 = 8;

struct Key;

impl CheckpointSigner for Key {
    fn sign(&self, message: &[u8]) -> Result<(u16, Vec<u8>), String> {
        Ok((0, digest(message).to_vec()))
    }
    fn chain(&self) -> Vec<Vec<u8>> {
        vec![b"test".to_vec()]
    }
}

fn zj() -> Region {
    Region::parse("330000").expect("province")
}

fn ops(gen: &mut RecordGenerator, n: usize) -> Vec<Operation> {
    (0..n)
        .map(|_| parse_operation(gen.next_line().as_bytes()).expect("generated lines are valid"))
        .collect()
}

#[test]
fn the_writer_survives_hundreds_of_random_crash_points() {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let mut crash_points = 0u64;
    for seed in 1..=SEEDS {
        let fs = SimFs::new(seed * 7919);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = StoreConfig::new(&dir.path().join("data"));
        cfg.local = Some(zj());
        cfg.segment_bytes_max = 48 * 1024;
        cfg.journal_fs = SharedFs(Arc::new(fs.clone()));
        let mut gen = RecordGenerator::new(seed, zj());
        // Every entry acknowledged to a publisher or visible after a reopen: it must stay.
        let mut kept: BTreeMap<u64, Hash> = BTreeMap::new();
        // (acknowledged head, ops of the group in flight at the crash).
        let (mut acked_head, mut in_flight) = (0u64, 0u64);
        for round in 0..ROUNDS {
            let context = format!("seed {seed} round {round}");
            let (store, _) = Store::open(&cfg).unwrap_or_else(|e| panic!("{context}: store must open: {e}"));
            let head = store.index().head(zj()).expect("head").seq();
            assert!(
                head >= acked_head && head <= acked_head + in_flight,
                "{context}: head {head}, acknowledged {acked_head}, in flight {in_flight}"
            );
            if head > 0 {
                let cp = store
                    .index()
                    .latest_checkpoint(zj())
                    .expect("checkpoint")
                    .map(|c| c.seq);
                assert_eq!(cp, Some(head), "{context}: the head must end a whole group");
            }
            for (seq, hash) in &kept {
                let e = store
                    .read_entry(zj(), *seq)
                    .unwrap_or_else(|e| panic!("{context}: read {seq}: {e}"))
                    .unwrap_or_else(|| panic!("{context}: entry {seq} was kept before and is gone"));
                assert_eq!(&e.hash, hash, "{context}: entry {seq} changed");
            }
            // What this open shows is served from now on (streamed, answered as duplicate).
            for seq in 1..=head {
                let e = store.read_entry(zj(), seq).expect("read").expect("below head");
                kept.insert(seq, e.hash);
            }
            acked_head = head;
            // One crash in four comes before the first sync of this run: what the reopen showed
            // must already be durable by then.
            let r = fs.random();
            fs.crash_after(if r.is_multiple_of(4) { r / 4 % 3 } else { r / 4 % 120 });
            let limits = WriterLimits {
                queue_depth: 4,
                group_ops_max: 64,
            };
            let (handle, join) = writer::spawn(store, zj(), Arc::new(Key), limits);
            loop {
                let batch = ops(&mut gen, 1 + (fs.random() % 40) as usize);
                let n = batch.len() as u64;
                match rt.block_on(handle.submit(batch)) {
                    Ok((outcomes, _)) => {
                        for o in outcomes {
                            if let OpOutcome::Appended { seq, hash, .. } = o {
                                kept.insert(seq, hash);
                                acked_head = acked_head.max(seq);
                            }
                        }
                    }
                    Err(_) => {
                        in_flight = n;
                        break;
                    }
                }
            }
            drop(handle);
            assert!(
                join.join().expect("writer thread").is_err(),
                "{context}: the crash stops the writer"
            );
            assert!(fs.has_crashed(), "{context}");
            fs.crash(if fs.random().is_multiple_of(2) {
                Crash::Power
            } else {
                Crash::Process
            });
            crash_points += 1;
        }
    }
    assert_eq!(crash_points, SEEDS * ROUNDS);
}

#[test]
fn a_large_group_is_covered_every_checkpoint_entries_max_entries() {
    use crate::store::journal::Frame;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = StoreConfig::new(&dir.path().join("data"));
    cfg.local = Some(zj());
    let (mut store, _) = Store::open(&cfg).expect("open");
    let mut gen = RecordGenerator::new(9, zj());
    let n = 3 * crate::log::CHECKPOINT_ENTRIES_MAX as usize + 17;
    let (outcomes, last) = store
        .commit_local(zj(), &ops(&mut gen, n), &Key, 1_700_000_000_000_000)
        .expect("one group");
    let appended = outcomes
        .iter()
        .filter(|o| matches!(o, OpOutcome::Appended { .. }))
        .count() as u64;
    assert_eq!(
        last.map(|c| c.seq),
        Some(appended),
        "the group's last checkpoint covers it all"
    );
    let mut uncovered = 0u64;
    let mut most_uncovered = 0u64;
    let mut checkpoints = Vec::new();
    store
        .reader()
        .scan(super::journal::JournalPos(0), store.journal_end(), |_, _, f| {
            match f {
                Frame::Entry(_) => uncovered += 1,
                Frame::Checkpoint(c) => {
                    checkpoints.push(c.seq);
                    uncovered = 0;
                }
                Frame::ForkEvidence(_) => {}
            }
            most_uncovered = most_uncovered.max(uncovered);
            Ok::<_, super::journal::JournalError>(true)
        })
        .expect("scan");
    assert!(most_uncovered <= crate::log::CHECKPOINT_ENTRIES_MAX, "{most_uncovered}");
    assert_eq!(checkpoints.len(), 4, "{checkpoints:?}");
    assert_eq!(checkpoints.last().copied(), Some(appended));
}
