//! The node's side of the regional evaluation: reads the merged view's per-(category, origin)
//! postings up to the version vector asked for, the journal frames they point at (in bounded
//! batches), the expiry schedule for the period and the receipts of each repair, and feeds them
//! to the pure `evaluate::Evaluator`. Used by `Operations.Evaluate` on a running node and by
//! `cxnode evaluate --verify --data` on a stopped one, so both compute the same thing.

use crate::evaluate::report::Receipt;
use crate::evaluate::{facts, Calendar, CalendarError, Evaluator, Report};
use crate::record::{Category, Region};
use crate::store::journal::{Frame, JournalReader};
use crate::store::view::{View, ViewError};
use std::collections::BTreeMap;
use time::Date;

/// Postings read, and journal frames fetched, per step at most.
pub const EVALUATE_STEP_ENTRIES: usize = 4096;
/// Threads that read operations of one step at once (the evaluation is rare, one at a time).
pub const EVALUATE_THREADS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum EvaluationError {
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    #[error(transparent)]
    View(#[from] ViewError),
    #[error(transparent)]
    Journal(#[from] crate::store::journal::JournalError),
    #[error("the merged view points at journal position {pos} for {origin}/{seq}, which holds another frame; run `cxnode reindex`")]
    Misplaced { pos: u64, origin: Region, seq: u64 },
    #[error(
        "this store holds {origin} only up to seq {held}, and the report is as of seq {asked}: it cannot recompute it"
    )]
    Behind { origin: Region, held: u64, asked: u64 },
}

/// The report of `[from, to]` for `regions` (all when empty) as of `as_of` (the view's own
/// vector when None; an origin asked beyond what the view holds is refused).
pub fn evaluate_view(
    view: &View,
    journal: &JournalReader,
    calendar: &Calendar,
    from: Date,
    to: Date,
    regions: &[Region],
    as_of: Option<BTreeMap<Region, u64>>,
) -> Result<Report, EvaluationError> {
    let held = view.origin_seqs();
    let as_of = match as_of {
        None => held.clone(),
        Some(v) => {
            for (origin, asked) in &v {
                let have = held.get(origin).copied().unwrap_or(0);
                if *asked > have {
                    return Err(EvaluationError::Behind {
                        origin: *origin,
                        held: have,
                        asked: *asked,
                    });
                }
            }
            v
        }
    };
    let mut ev = Evaluator::new(calendar, from, to, regions, as_of)?;
    for (origin, upto) in ev.origins() {
        for &category in Category::all() {
            let mut next = 1u64;
            loop {
                let postings = view.category_entries_through(category, origin, next, upto, EVALUATE_STEP_ENTRIES)?;
                let Some(last) = postings.last() else { break };
                next = last.seq + 1;
                let positions: Vec<_> = postings.iter().map(|p| p.pos).collect();
                let frames = journal.read_many(&positions)?;
                let mut entries = Vec::with_capacity(frames.len());
                for (p, frame) in postings.iter().zip(frames) {
                    match frame {
                        // Outside the period: not read further.
                        Frame::Entry(e) if e.origin == origin && e.seq == p.seq => {
                            if ev.in_period(e.appended_at_micros) {
                                entries.push(e);
                            }
                        }
                        _ => {
                            return Err(EvaluationError::Misplaced {
                                pos: p.pos.0,
                                origin,
                                seq: p.seq,
                            })
                        }
                    }
                }
                for (e, op) in entries.iter().zip(read_all(&entries)) {
                    // A repair is posted under its own category and its target's: count it once.
                    if let Ok(facts::Operation::Upsert(u)) = &op {
                        if u.category != category {
                            continue;
                        }
                    }
                    ev.entry(origin, e.seq, e.appended_at_micros, &op)?;
                }
                if postings.len() < EVALUATE_STEP_ENTRIES {
                    break;
                }
            }
        }
    }
    let selected: Vec<Region> = ev.origins().into_iter().map(|(o, _)| o).collect();
    for (end, origin, id) in view.expiring(from, to)? {
        if !selected.contains(&origin) {
            continue;
        }
        if let Some(r) = view.record(origin, &id)? {
            ev.ended(origin, end, &super::facts_of(origin, id, &r));
        }
    }
    let open = ev.open_repairs().to_vec();
    if !open.is_empty() {
        let applied = view.applied()?;
        for (i, repair) in open.iter().enumerate() {
            let Some(record) = view.record(repair.origin, &repair.target)? else {
                ev.settle(i, &[], &[]);
                continue;
            };
            let expected: Vec<(Region, String)> = applied
                .iter()
                .filter(|a| a.next.get(&repair.origin).is_some_and(|n| *n > record.upsert_seq))
                .map(|a| (a.node, a.department.clone()))
                .collect();
            let receipts: Vec<Receipt> = view
                .receipts(repair.origin, &repair.target)?
                .into_iter()
                .map(|r| Receipt {
                    node: r.node,
                    department: r.department,
                    seq: r.seq,
                    received_at_unix: r.received_at_unix,
                })
                .collect();
            ev.settle(i, &expected, &receipts);
        }
    }
    Ok(ev.finish())
}

/// `facts::read` of every entry, on `EVALUATE_THREADS` threads, in the entries' order.
fn read_all(entries: &[crate::log::Entry]) -> Vec<Result<facts::Operation, String>> {
    let chunk = entries.len().div_ceil(EVALUATE_THREADS).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = entries
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|e| facts::read(&e.op_bytes)).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Err("reading the operation panicked".to_string())])
            })
            .collect()
    })
}
