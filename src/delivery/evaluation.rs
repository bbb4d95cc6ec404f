//! The node's side of the regional evaluation: reads the merged view's per-(category, origin)
//! postings up to the version vector asked for, merged in journal order, the journal frames they
//! point at (in bounded batches), the expiry schedule for the period and the receipts of each repair, and feeds them
//! to the pure `evaluate::Evaluator`. Used by `Operations.Evaluate` on a running node and by
//! `cxnode evaluate --verify --data` on a stopped one, so both compute the same thing.

use crate::evaluate::report::Receipt;
use crate::evaluate::{facts, Calendar, CalendarError, Evaluator, Report};
use crate::record::{Category, Region};
use crate::store::journal::{Frame, JournalReader};
use crate::store::view::{Posting, View, ViewError};
use std::collections::BTreeMap;
use time::Date;

/// Postings read, and journal frames fetched, per step at most.
pub const EVALUATE_STEP_ENTRIES: usize = 4096;
/// Postings held per (origin, category) stream at most (32 origins x 6 categories x this many
/// postings are in memory during the pass).
pub const EVALUATE_STREAM_POSTINGS: usize = 1024;
/// Records looked up at once (ended records, repair targets): each step reads the record map once.
pub const EVALUATE_LOOKUP_STEP: usize = 262_144;
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
    let started = std::time::Instant::now();
    // Each origin's entries of the period lie between two day marks, or are day exceptions (a
    // stream of their own); a view without day marks is read whole and the period filters. The
    // (origin, category) postings streams are merged in journal order: one pass over the
    // journal, whose frames are then read densely (six category passes each read every sixth
    // frame and paid a seek for each).
    let mut streams: Vec<Stream> = Vec::new();
    for (origin, upto) in ev.origins() {
        let (first, last) = match view.period_seqs(origin, from, to)? {
            Some(p) => {
                let outside: std::collections::VecDeque<Posting> = p
                    .exceptions
                    .into_iter()
                    .filter(|x| x.seq <= upto && !(p.first..=p.last).contains(&x.seq))
                    .collect();
                if !outside.is_empty() {
                    streams.push(Stream::held(origin, outside));
                }
                (p.first, p.last.min(upto))
            }
            None => (1, upto),
        };
        if first > last {
            continue;
        }
        for &category in Category::all() {
            streams.push(Stream {
                origin,
                category,
                upto: last,
                next: first,
                held: std::collections::VecDeque::new(),
                done: false,
            });
        }
    }
    let mut heads = std::collections::BinaryHeap::new();
    for (i, stream) in streams.iter_mut().enumerate() {
        if let Some(pos) = stream.head(view)? {
            heads.push(std::cmp::Reverse((pos, i)));
        }
    }
    let mut last = None;
    loop {
        let mut step: Vec<Posting> = Vec::with_capacity(EVALUATE_STEP_ENTRIES);
        while step.len() < EVALUATE_STEP_ENTRIES {
            let Some(std::cmp::Reverse((pos, i))) = heads.pop() else {
                break;
            };
            let posting = streams[i]
                .held
                .pop_front()
                .expect("a stream in the heap holds its head");
            if let Some(next) = streams[i].head(view)? {
                heads.push(std::cmp::Reverse((next, i)));
            }
            // A repair is posted under its own category and its target's: read it once.
            if last != Some(pos) {
                step.push(posting);
                last = Some(pos);
            }
        }
        if step.is_empty() {
            break;
        }
        let positions: Vec<_> = step.iter().map(|p| p.pos).collect();
        let frames = journal.read_many(&positions)?;
        let mut entries = Vec::with_capacity(frames.len());
        for (p, frame) in step.iter().zip(frames) {
            match frame {
                // Outside the period: not read further.
                Frame::Entry(e) if e.origin == p.origin && e.seq == p.seq => {
                    if ev.in_period(e.appended_at_micros) {
                        entries.push(e);
                    }
                }
                _ => {
                    return Err(EvaluationError::Misplaced {
                        pos: p.pos.0,
                        origin: p.origin,
                        seq: p.seq,
                    })
                }
            }
        }
        for (e, op) in entries.iter().zip(read_all(&entries)) {
            ev.entry(e.origin, e.seq, e.appended_at_micros, &op)?;
        }
    }
    let entries_ms = started.elapsed().as_millis() as u64;
    let selected: Vec<Region> = ev.origins().into_iter().map(|(o, _)| o).collect();
    let mut ended = 0u64;
    let expiring: Vec<_> = view
        .expiring(from, to)?
        .into_iter()
        .filter(|(_, origin, _)| selected.contains(origin))
        .collect();
    for step in expiring.chunks(EVALUATE_LOOKUP_STEP) {
        let ids: Vec<_> = step.iter().map(|(_, origin, id)| (*origin, *id)).collect();
        for ((end, origin, id), r) in step.iter().zip(view.records_many(&ids)?) {
            if let Some(r) = r {
                ev.ended(*origin, *end, &super::facts_of(*origin, *id, &r));
                ended += 1;
            }
        }
    }
    let ended_ms = started.elapsed().as_millis() as u64 - entries_ms;
    let open = ev.open_repairs().to_vec();
    if !open.is_empty() {
        let applied = view.applied()?;
        for (s, step) in open.chunks(EVALUATE_LOOKUP_STEP).enumerate() {
            let ids: Vec<_> = step.iter().map(|r| (r.origin, r.target)).collect();
            for (j, (repair, record)) in step.iter().zip(view.records_many(&ids)?).enumerate() {
                let i = s * EVALUATE_LOOKUP_STEP + j;
                let Some(record) = record else {
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
    }
    tracing::info!(
        entries_ms,
        ended,
        ended_ms,
        repairs = open.len(),
        repairs_ms = started.elapsed().as_millis() as u64 - entries_ms - ended_ms,
        "evaluation read"
    );
    Ok(ev.finish())
}

/// One (origin, category) postings stream up to the vector's seq, read `EVALUATE_STREAM_POSTINGS`
/// at a time.
struct Stream {
    origin: Region,
    category: Category,
    upto: u64,
    next: u64,
    held: std::collections::VecDeque<Posting>,
    done: bool,
}

impl Stream {
    /// A stream of postings known already (day exceptions, in seq order, so in journal order).
    fn held(origin: Region, postings: std::collections::VecDeque<Posting>) -> Stream {
        Stream {
            origin,
            category: Category::CreditRepair,
            upto: 0,
            next: 0,
            held: postings,
            done: true,
        }
    }

    /// The journal position of the stream's next posting, reading more postings when it holds
    /// none; None once it is exhausted.
    fn head(&mut self, view: &View) -> Result<Option<crate::store::journal::JournalPos>, ViewError> {
        if self.held.is_empty() && !self.done {
            let more = view.category_entries_through(
                self.category,
                self.origin,
                self.next,
                self.upto,
                EVALUATE_STREAM_POSTINGS,
            )?;
            self.done = more.len() < EVALUATE_STREAM_POSTINGS;
            if let Some(last) = more.last() {
                self.next = last.seq + 1;
            }
            self.held.extend(more);
        }
        Ok(self.held.front().map(|p| p.pos))
    }
}

/// `facts::read` of every entry, on `EVALUATE_THREADS` threads, in the entries' order.
pub fn read_all(entries: &[crate::log::Entry]) -> Vec<Result<facts::Operation, String>> {
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
