//! The indexer: a dedicated thread that keeps the merged view (`store::view`) behind the journal.
//! The writer tells it each new durable end; it indexes up to there in bounded batches and says
//! how far it got. Its lag (journal entries not yet in the view, and for how long the view has
//! not been caught up) is bounded: past `StoreConfig::index_lag_entries_max` entries the writer
//! waits before taking more work, so ingest slows to the indexer's pace instead of the lag (and
//! the writer's in-memory decisions) growing without bound. Invariants: it reads only below the
//! durable end; a failure stops it, is logged once at ERROR, and is reported to the writer, which
//! then refuses writes (the view would otherwise fall silently behind).

use super::hints::SummaryHints;
use super::journal::{JournalPos, JournalReader};
use super::view::View;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How often an idle indexer wakes to check for a stop it might have missed.
const IDLE_WAKE: Duration = Duration::from_millis(500);

/// The indexer lag, as status reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct IndexLag {
    pub entries: u64,
    pub seconds: f64,
    /// The bound past which ingest waits.
    pub entries_max: u64,
    /// Entries whose operation did not decode (indexed as such).
    pub undecodable: u64,
}

struct State {
    journal_end: JournalPos,
    journal_entries: u64,
    view_entries: u64,
    view_pos: JournalPos,
    /// When the view last stood at the journal's end.
    caught_up_at: Instant,
    stop: bool,
    failed: Option<String>,
    /// Tests hold the indexer still to see what a slow one does to ingest.
    held: bool,
}

/// What the writer and the indexer share.
pub struct Progress {
    state: Mutex<State>,
    changed: Condvar,
    /// Entries indexed, announced after every view commit: feeds wait on it without a thread.
    indexed: tokio::sync::watch::Sender<u64>,
    entries_max: u64,
    view: Arc<View>,
    hints: Option<Arc<SummaryHints>>,
}

impl Progress {
    pub fn new(
        view: Arc<View>,
        hints: Option<Arc<SummaryHints>>,
        journal_end: JournalPos,
        journal_entries: u64,
        entries_max: u64,
    ) -> Arc<Progress> {
        let p = view.position();
        Arc::new(Progress {
            state: Mutex::new(State {
                journal_end,
                journal_entries,
                view_entries: p.entries,
                view_pos: p.pos,
                caught_up_at: Instant::now(),
                stop: false,
                failed: None,
                held: false,
            }),
            changed: Condvar::new(),
            indexed: tokio::sync::watch::Sender::new(p.entries),
            entries_max,
            view,
            hints,
        })
    }

    /// The writer made `end` durable, with `entries` entries in the journal.
    pub fn journal_advanced(&self, end: JournalPos, entries: u64) {
        let mut s = self.state.lock().expect("progress lock");
        if s.view_pos >= s.journal_end {
            // Caught up until this instant: the staleness clock starts now.
            s.caught_up_at = Instant::now();
        }
        s.journal_end = end;
        s.journal_entries = entries;
        self.changed.notify_all();
    }

    /// Waits while the view is more than the bound behind. Returns the indexer's failure, if it
    /// has failed (then waiting would be forever).
    pub fn wait_for_room(&self) -> Result<(), String> {
        let mut s = self.state.lock().expect("progress lock");
        loop {
            if let Some(f) = &s.failed {
                return Err(f.clone());
            }
            if s.journal_entries.saturating_sub(s.view_entries) <= self.entries_max || s.stop {
                return Ok(());
            }
            s = self.changed.wait_timeout(s, IDLE_WAKE).expect("progress lock").0;
        }
    }

    /// Waits until the view has indexed everything up to `end` (tests, tools).
    pub fn wait_indexed(&self, end: JournalPos, deadline: Duration) -> bool {
        let until = Instant::now() + deadline;
        let mut s = self.state.lock().expect("progress lock");
        while s.view_pos < end && s.failed.is_none() {
            let now = Instant::now();
            if now >= until {
                return false;
            }
            s = self.changed.wait_timeout(s, until - now).expect("progress lock").0;
        }
        s.view_pos >= end
    }

    pub fn lag(&self) -> IndexLag {
        let s = self.state.lock().expect("progress lock");
        let entries = s.journal_entries.saturating_sub(s.view_entries);
        IndexLag {
            entries,
            seconds: if s.view_pos >= s.journal_end {
                0.0
            } else {
                s.caught_up_at.elapsed().as_secs_f64()
            },
            entries_max: self.entries_max,
            undecodable: self.view.position().undecodable,
        }
    }

    pub fn view(&self) -> &Arc<View> {
        &self.view
    }

    /// Changes after every view commit (its value: entries indexed).
    pub fn indexed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.indexed.subscribe()
    }

    pub fn failure(&self) -> Option<String> {
        self.state.lock().expect("progress lock").failed.clone()
    }

    /// Holds the indexer still (tests), or lets it go on.
    #[cfg(test)]
    pub fn hold(&self, held: bool) {
        self.state.lock().expect("progress lock").held = held;
        self.changed.notify_all();
    }

    /// Asks the indexer to finish what is durable and stop.
    pub fn stop(&self) {
        self.state.lock().expect("progress lock").stop = true;
        self.changed.notify_all();
    }
}

/// Starts the indexer thread; it returns once stopped (after indexing everything durable) or
/// after a failure.
pub fn spawn(progress: Arc<Progress>, reader: JournalReader, batch_entries_max: usize) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("cx-indexer".to_string())
        .spawn(move || {
            // A panic is a failure too: said, so writes wait no more and health reports it.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run(&progress, &reader, batch_entries_max).map_err(|e| e.to_string())
            }))
            .unwrap_or_else(|_| Err("the indexer thread panicked".to_string()));
            if let Err(message) = ran {
                tracing::error!(error = %message, "merged-view indexer failed; the node refuses writes until restarted");
                let mut s = progress.state.lock().unwrap_or_else(|p| p.into_inner());
                s.failed = Some(message);
                progress.changed.notify_all();
            }
        })
        .expect("the OS can start the indexer thread")
}

fn run(progress: &Progress, reader: &JournalReader, batch_entries_max: usize) -> Result<(), super::view::ViewError> {
    let view = &progress.view;
    let started = Instant::now();
    let filtered = view.load_filter()?;
    // A second thread reads operations (without one, the indexer reads them all itself).
    let ops_reader = super::view::Reader::spawn()
        .map_err(|e| tracing::warn!(error = %e, "no thread to read operations beside the indexer; it reads them alone"))
        .ok();
    tracing::debug!(
        records = filtered,
        ms = started.elapsed().as_millis() as u64,
        "merged-view filter loaded"
    );
    // The subject map's chunk filters are built beside the indexing (a profile that comes first
    // reads its bucket whole, as without filters); a failure there is not the indexer's. The
    // thread holds the view only while it warms one bucket, so it never keeps a closed store
    // (its sled lock, its heap) open: once nothing else holds the view, it stops.
    let warmed = Arc::downgrade(&progress.view);
    let _ = std::thread::Builder::new()
        .name("cx-view-warm".to_string())
        .spawn(move || {
            let started = Instant::now();
            match View::warm_subject_filters(&warmed) {
                Ok(true) => tracing::debug!(ms = started.elapsed().as_millis() as u64, "subject chunk filters built"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "building the subject chunk filters failed; look-ups read whole buckets")
                }
            }
        });
    loop {
        let end = {
            let mut s = progress.state.lock().expect("progress lock");
            while (s.journal_end <= s.view_pos || s.held) && !s.stop {
                s = progress.changed.wait_timeout(s, IDLE_WAKE).expect("progress lock").0;
            }
            if s.journal_end <= s.view_pos && s.stop {
                return Ok(());
            }
            s.journal_end
        };
        view.catch_up(
            reader,
            end,
            batch_entries_max,
            progress.hints.as_deref(),
            ops_reader.as_ref(),
            |p| {
                let mut s = progress.state.lock().expect("progress lock");
                s.view_pos = p.pos;
                s.view_entries = p.entries;
                if s.view_pos >= s.journal_end {
                    s.caught_up_at = Instant::now();
                }
                progress.changed.notify_all();
                drop(s);
                progress.indexed.send_replace(p.entries);
            },
        )?;
    }
}
