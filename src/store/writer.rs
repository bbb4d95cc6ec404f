//! The one writer of a store: a dedicated thread that takes requests from a bounded queue, groups
//! waiting local publishes (up to a bound) into one journal write and one fsync (group commit),
//! stores verified batches from peers through the same journal path (those of distinct origins
//! waiting together share one write and one fsync), and answers each request
//! after its data is durable. Invariants: requests are applied in arrival order; the queue and a
//! group are bounded; the durable end is announced after every commit (live sync tails it); after
//! a failure the writer stops and every later request gets `WriterStopped` (a half-known disk
//! state is never written on).

use super::indexer::{self, IndexLag, Progress};
use super::journal::JournalPos;
use super::view::View;
use super::{OpOutcome, ReplicaOutcome, Store, StoreError};
use crate::log::{digest, Checkpoint, CheckpointSigner, Hash};
use crate::record::{Operation, Region};
use crate::sync::Covered;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};

/// The result of one local request: an outcome per operation, and the checkpoint of its group.
pub type Committed = (Vec<OpOutcome>, Option<Checkpoint>);

/// Replica batches (of distinct origins) written with one fsync at most.
pub const REPLICA_GROUP_BATCHES_MAX: usize = 64;

enum Work {
    /// Operations and their digests (`log::digest` of each one's canonical bytes).
    Local(
        Vec<Operation>,
        Vec<Hash>,
        oneshot::Sender<Result<Committed, Arc<StoreError>>>,
    ),
    Replica(Box<Covered>, oneshot::Sender<Result<ReplicaOutcome, Arc<StoreError>>>),
    /// Re-sign the head unless the latest checkpoint is younger than this many seconds.
    Refresh(i64, oneshot::Sender<Result<bool, Arc<StoreError>>>),
}

#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Work>,
    durable_end: watch::Receiver<JournalPos>,
    progress: Arc<Progress>,
    /// Why the writer stopped, once it has (it does not start again in-process).
    failure: Arc<std::sync::OnceLock<String>>,
}

#[derive(Clone, Copy, Debug)]
pub struct WriterLimits {
    /// Requests waiting for the writer; a full queue makes callers wait (backpressure).
    pub queue_depth: usize,
    /// Operations in one group commit.
    pub group_ops_max: usize,
}

/// A queued request's answer, to await.
pub struct Pending(oneshot::Receiver<Result<Committed, Arc<StoreError>>>);

impl Pending {
    pub async fn wait(self) -> Result<Committed, Arc<StoreError>> {
        self.0.await.map_err(|_| Arc::new(StoreError::WriterStopped))?
    }
}

impl WriterHandle {
    /// Submits `ops` and waits until they are durable (or refused).
    pub async fn submit(&self, ops: Vec<Operation>) -> Result<Committed, Arc<StoreError>> {
        self.enqueue(ops).await?.wait().await
    }

    /// Queues `ops` (waiting for room in the queue) without waiting for the commit: requests are
    /// decided in the order they were queued.
    pub async fn enqueue(&self, ops: Vec<Operation>) -> Result<Pending, Arc<StoreError>> {
        let digests = ops.iter().map(|op| digest(op.canonical())).collect();
        self.enqueue_digested(ops, digests).await
    }

    /// `enqueue` of operations with their digests (`log::digest` of each one's canonical bytes,
    /// one per operation), computed by the caller off the writer thread.
    pub(crate) async fn enqueue_digested(
        &self,
        ops: Vec<Operation>,
        digests: Vec<Hash>,
    ) -> Result<Pending, Arc<StoreError>> {
        assert_eq!(ops.len(), digests.len(), "one digest per operation");
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Work::Local(ops, digests, reply))
            .await
            .map_err(|_| Arc::new(StoreError::WriterStopped))?;
        Ok(Pending(rx))
    }

    /// Stores a verified batch from a peer and waits until it is durable.
    pub async fn replicate(&self, covered: Covered) -> Result<ReplicaOutcome, Arc<StoreError>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Work::Replica(Box::new(covered), reply))
            .await
            .map_err(|_| Arc::new(StoreError::WriterStopped))?;
        rx.await.map_err(|_| Arc::new(StoreError::WriterStopped))?
    }

    /// Signs a fresh checkpoint of the head (unless the latest is younger than `min_age_seconds`);
    /// returns whether one was written.
    pub async fn refresh_checkpoint(&self, min_age_seconds: i64) -> Result<bool, Arc<StoreError>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Work::Refresh(min_age_seconds, reply))
            .await
            .map_err(|_| Arc::new(StoreError::WriterStopped))?;
        rx.await.map_err(|_| Arc::new(StoreError::WriterStopped))?
    }

    /// The journal position up to which everything is durable and indexed; changes after every
    /// commit.
    pub fn durable_end(&self) -> watch::Receiver<JournalPos> {
        self.durable_end.clone()
    }

    /// How far the merged view is behind the journal.
    pub fn index_lag(&self) -> IndexLag {
        self.progress.lag()
    }

    /// Holds the merged-view indexer still, or lets it go on (tests).
    #[cfg(test)]
    pub fn hold_indexer(&self, held: bool) {
        self.progress.hold(held);
    }

    /// Why the writer stopped refusing nothing but failing, if it did (a write or fsync error).
    pub fn failure(&self) -> Option<String> {
        self.failure.get().cloned()
    }

    /// Why the indexer stopped, if it did.
    pub fn index_failure(&self) -> Option<String> {
        self.progress.failure()
    }

    /// The merged view (read-only: the indexer thread writes it).
    pub fn view(&self) -> Arc<View> {
        self.progress.view().clone()
    }

    /// Changes after every commit of the merged view.
    pub fn view_changes(&self) -> watch::Receiver<u64> {
        self.progress.indexed()
    }

    /// Waits (blocking) until the view has indexed up to `end`, at most `deadline`.
    pub fn wait_indexed(&self, end: JournalPos, deadline: std::time::Duration) -> bool {
        self.progress.wait_indexed(end, deadline)
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Starts the writer thread. It ends when every handle is dropped, or after a failure; the
/// returned join handle yields the store back (for a clean close) or the failure.
pub fn spawn(
    mut store: Store,
    origin: Region,
    signer: Arc<dyn CheckpointSigner>,
    limits: WriterLimits,
) -> (WriterHandle, std::thread::JoinHandle<Result<Store, Arc<StoreError>>>) {
    let (tx, mut rx) = mpsc::channel::<Work>(limits.queue_depth.max(1));
    let (end_tx, end_rx) = watch::channel(store.journal_end());
    let progress = Progress::new(
        store.view().clone(),
        store.hints(),
        store.journal_end(),
        store.entries(),
        store.config().index_lag_entries_max,
    );
    let indexer = indexer::spawn(progress.clone(), store.reader(), store.config().index_batch_entries_max);
    let shared = progress.clone();
    let failure: Arc<std::sync::OnceLock<String>> = Arc::default();
    let failed = failure.clone();
    let join = std::thread::Builder::new()
        .name("cx-writer".to_string())
        .spawn(move || {
            let progress = shared;
            // A panic is a failure too: health reports it (the queue closes as the thread ends).
            let _watch = PanicWatch(failed.clone());
            let result = serve_requests(&mut store, &mut rx, origin, signer.as_ref(), limits, &progress, &end_tx)
                .map_err(|(why, e)| {
                    let _ = failed.set(why);
                    e
                });
            progress.stop();
            let _ = indexer.join();
            result.map(|()| store)
        })
        .expect("the OS can start the writer thread");
    (
        WriterHandle {
            tx,
            durable_end: end_rx,
            progress,
            failure,
        },
        join,
    )
}

/// Records that the writer thread panicked, as it unwinds.
struct PanicWatch(Arc<std::sync::OnceLock<String>>);

impl Drop for PanicWatch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.0.set("the writer thread panicked".to_string());
        }
    }
}

fn serve_requests(
    store: &mut Store,
    rx: &mut mpsc::Receiver<Work>,
    origin: Region,
    signer: &dyn CheckpointSigner,
    limits: WriterLimits,
    progress: &Progress,
    end_tx: &watch::Sender<JournalPos>,
) -> Result<(), (String, Arc<StoreError>)> {
    let mut carried: Option<Work> = None;
    loop {
        let first = match carried.take() {
            Some(w) => w,
            None => match rx.blocking_recv() {
                Some(w) => w,
                None => break,
            },
        };
        // Backpressure: the merged view may not fall more than the bound behind.
        if let Err(failure) = progress.wait_for_room() {
            let e = Arc::new(StoreError::IndexerStopped(failure));
            refuse_all(rx, Some(first), &e);
            return Err((e.to_string(), e));
        }
        let result = match first {
            Work::Refresh(min_age, reply) => {
                let now = now_micros().div_euclid(1_000_000);
                let r = store.refresh_checkpoint(origin, signer, now, min_age);
                let refused = r.as_ref().err().map(|e| e.to_string());
                announce(store, progress, end_tx);
                let _ = reply.send(r.map_err(Arc::new));
                refused
            }
            Work::Replica(covered, reply) => {
                // Group the replica batches waiting behind this one, of other origins (one of an
                // origin already in the group ends it: each is judged against the store before
                // the group), up to the bounds: one journal write and one fsync for all.
                let mut entries = covered.entries.len();
                let mut group = vec![(covered, reply)];
                while group.len() < REPLICA_GROUP_BATCHES_MAX && entries < limits.group_ops_max {
                    match rx.try_recv() {
                        Ok(Work::Replica(more, reply)) if group.iter().all(|(c, _)| c.origin != more.origin) => {
                            entries += more.entries.len();
                            group.push((more, reply));
                        }
                        Ok(other) => {
                            carried = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let batches: Vec<&Covered> = group.iter().map(|(c, _)| c.as_ref()).collect();
                let r = store.commit_replicated_group(origin, &batches);
                announce(store, progress, end_tx);
                match r {
                    Ok(outcomes) => {
                        for ((_, reply), outcome) in group.into_iter().zip(outcomes) {
                            let _ = reply.send(Ok(outcome));
                        }
                        None
                    }
                    Err(e) => Some(fail_group(e, group.into_iter().map(|(_, reply)| reply))),
                }
            }
            Work::Local(ops, digests, reply) => {
                // Group every local request waiting behind this one (up to the bound);
                // a replica request ends the group and is carried to the next round.
                let mut group = vec![(ops.len(), reply)];
                let mut all_ops = ops;
                let mut all_digests = digests;
                while all_ops.len() < limits.group_ops_max {
                    match rx.try_recv() {
                        Ok(Work::Local(more, more_digests, reply)) => {
                            group.push((more.len(), reply));
                            all_ops.extend(more);
                            all_digests.extend(more_digests);
                        }
                        Ok(other) => {
                            carried = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                match store.commit_local_digested(origin, &all_ops, &all_digests, signer, now_micros()) {
                    Ok((outcomes, checkpoint)) => {
                        announce(store, progress, end_tx);
                        let mut rest = outcomes.into_iter();
                        for (len, reply) in group {
                            let mine: Vec<OpOutcome> = rest.by_ref().take(len).collect();
                            // A publisher that went away does not stop the others.
                            let _ = reply.send(Ok((mine, checkpoint.clone())));
                        }
                        None
                    }
                    Err(e) => Some(fail_group(e, group.into_iter().map(|(_, reply)| reply))),
                }
            }
        };
        if let Some(message) = result {
            tracing::error!(error = %message, "store writer failed; refusing further writes");
            let e = Arc::new(StoreError::WriterStopped);
            refuse_all(rx, carried.take(), &e);
            return Err((message, e));
        }
    }
    Ok(())
}

/// Tells the indexer and the sync streams where the durable end is, before the request that
/// moved it is answered (so whoever was answered sees it everywhere). Only a moved end is news:
/// a request that wrote nothing (a refused or already held batch) must not wake every sync
/// stream (which answered with a heartbeat, which peers store nothing from, which woke theirs: a
/// storm that delayed live entries ~300 ms).
fn announce(store: &Store, progress: &Progress, end_tx: &watch::Sender<JournalPos>) {
    progress.journal_advanced(store.journal_end(), store.entries());
    let end = store.journal_end();
    end_tx.send_if_modified(|e| {
        let moved = *e != end;
        *e = end;
        moved
    });
}

/// Answers every request of a group whose commit failed with `e`; returns the message.
fn fail_group<T>(e: StoreError, replies: impl Iterator<Item = oneshot::Sender<Result<T, Arc<StoreError>>>>) -> String {
    let message = e.to_string();
    let e = Arc::new(e);
    for reply in replies {
        let _ = reply.send(Err(e.clone()));
    }
    message
}

/// Answers `first` and everything queued with `e`, and closes the queue.
fn refuse_all(rx: &mut mpsc::Receiver<Work>, first: Option<Work>, e: &Arc<StoreError>) {
    rx.close();
    if let Some(w) = first {
        refuse(w, e);
    }
    while let Ok(w) = rx.try_recv() {
        refuse(w, e);
    }
}

fn refuse(work: Work, e: &Arc<StoreError>) {
    match work {
        Work::Local(_, _, reply) => {
            let _ = reply.send(Err(e.clone()));
        }
        Work::Replica(_, reply) => {
            let _ = reply.send(Err(e.clone()));
        }
        Work::Refresh(_, reply) => {
            let _ = reply.send(Err(e.clone()));
        }
    }
}
