//! The one writer of a store: a dedicated thread that takes publish requests from a bounded queue,
//! groups whatever is waiting (up to a bound) into one journal write and one fsync (group commit),
//! and answers each request after its group is durable. Invariants: requests are decided in
//! arrival order; the queue and a group are bounded; after a failure the writer stops and every
//! later request gets `WriterStopped` (a half-known disk state is never written on).

use super::{OpOutcome, Store, StoreError};
use crate::log::{Checkpoint, CheckpointSigner};
use crate::record::{Operation, Region};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// The result of one request: an outcome per operation, and the checkpoint of its group.
pub type Committed = (Vec<OpOutcome>, Option<Checkpoint>);

pub struct WriteRequest {
    pub ops: Vec<Operation>,
    pub reply: oneshot::Sender<Result<Committed, Arc<StoreError>>>,
}

#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<WriteRequest>,
}

/// A queued request's answer, to await.
pub struct Pending(oneshot::Receiver<Result<Committed, Arc<StoreError>>>);

impl Pending {
    pub async fn wait(self) -> Result<Committed, Arc<StoreError>> {
        self.0.await.map_err(|_| Arc::new(StoreError::WriterStopped))?
    }
}

#[derive(Clone, Copy, Debug)]
pub struct WriterLimits {
    /// Requests waiting for the writer; a full queue makes publishers wait (backpressure).
    pub queue_depth: usize,
    /// Operations in one group commit.
    pub group_ops_max: usize,
}

impl WriterHandle {
    /// Submits `ops` and waits until they are durable (or refused).
    pub async fn submit(&self, ops: Vec<Operation>) -> Result<Committed, Arc<StoreError>> {
        self.enqueue(ops).await?.wait().await
    }

    /// Queues `ops` (waiting for room in the queue) without waiting for the commit: requests are
    /// decided in the order they were queued.
    pub async fn enqueue(&self, ops: Vec<Operation>) -> Result<Pending, Arc<StoreError>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(WriteRequest { ops, reply })
            .await
            .map_err(|_| Arc::new(StoreError::WriterStopped))?;
        Ok(Pending(rx))
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
    let (tx, mut rx) = mpsc::channel::<WriteRequest>(limits.queue_depth.max(1));
    let join = std::thread::Builder::new()
        .name("cx-writer".to_string())
        .spawn(move || {
            let mut group: Vec<WriteRequest> = Vec::new();
            while let Some(first) = rx.blocking_recv() {
                let mut ops_in_group = first.ops.len();
                group.push(first);
                while ops_in_group < limits.group_ops_max {
                    match rx.try_recv() {
                        Ok(next) => {
                            ops_in_group += next.ops.len();
                            group.push(next);
                        }
                        Err(_) => break,
                    }
                }
                let lengths: Vec<usize> = group.iter().map(|r| r.ops.len()).collect();
                let all_ops: Vec<Operation> = group.iter_mut().flat_map(|r| std::mem::take(&mut r.ops)).collect();
                match store.commit_local(origin, &all_ops, signer.as_ref(), now_micros()) {
                    Ok((outcomes, checkpoint)) => {
                        let mut rest = outcomes.into_iter();
                        for (request, len) in group.drain(..).zip(lengths) {
                            let mine: Vec<OpOutcome> = rest.by_ref().take(len).collect();
                            // A publisher that went away does not stop the others.
                            let _ = request.reply.send(Ok((mine, checkpoint.clone())));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "store writer failed; refusing further writes");
                        let e = Arc::new(e);
                        for request in group.drain(..) {
                            let _ = request.reply.send(Err(e.clone()));
                        }
                        rx.close();
                        while let Ok(request) = rx.try_recv() {
                            let _ = request.reply.send(Err(Arc::new(StoreError::WriterStopped)));
                        }
                        return Err(e);
                    }
                }
            }
            Ok(store)
        })
        .expect("the OS can start the writer thread");
    (WriterHandle { tx }, join)
}
