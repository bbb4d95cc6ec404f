//! `cx.v1.Publisher`: the province's publisher systems append operations to this node's origin log.
//! Invariants: only callers the policy allows may publish (the policy gate decides); every operation gets its own result (a
//! bad one never rejects the others); results are sent only once their group is durable.

use super::pb::{self, operation_result::Outcome};
use super::store_status;
use crate::log::Hash;
use crate::record::{parse_operation, Operation, Region, Rejection};
use crate::store::writer::{Committed, Pending, WriterHandle};
use crate::store::OpOutcome;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Operations in one Publish request.
pub const PUBLISH_OPS_MAX: usize = 10_000;

pub struct PublisherService {
    pub origin: Region,
    pub writer: WriterHandle,
    /// Set when a peer holds more of this origin's log than this node: publishing is refused.
    pub own_log_behind: crate::sync::OwnLogBehind,
    /// Turns true when the node stops: an open PublishStream ends, so the server can drain.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Outcomes and rejections are counted here.
    pub metrics: super::metrics::Metrics,
}

/// FAILED_PRECONDITION while this node's own log is behind a peer's copy of it.
fn refuse_if_behind(origin: Region, behind: &crate::sync::OwnLogBehind) -> Result<(), Status> {
    let state = behind.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match state {
        None => Ok(()),
        Some((ours, theirs, peer)) => Err(Status::failed_precondition(format!(
            "publishing is refused: this node holds origin {origin}'s log up to seq {ours}, but peer {peer} holds it up to seq {theirs}; the store was restored from an old backup or lost data, and new records would fork the origin. Stop the node, run `cxnode recover --config <node.toml> --from-peer {peer}` to restore its own log from that replica, and start it again"
        ))),
    }
}

fn ack(origin: Region, seq: u64, hash: &Hash) -> pb::Ack {
    pb::Ack {
        origin: origin.code(),
        seq,
        entry_hash: hash.to_vec().into(),
    }
}

fn rejected(index: usize, record_id: String, r: pb::Rejection) -> pb::OperationResult {
    pb::OperationResult {
        index: index as u32,
        record_id,
        outcome: Some(Outcome::Rejected(r)),
        kind: pb::OpKind::Unspecified as i32,
        held_for_target: false,
    }
}

/// Validates every operation of a request for `origin`: Ok(op) or the rejection naming the field.
/// Validates each operation, and computes the digest of the valid ones' canonical bytes (here,
/// on the blocking pool's threads, rather than on the one writer thread).
fn validate(origin: Region, operations: &[pb::Operation]) -> Vec<Result<(Operation, Hash), Rejection>> {
    operations
        .iter()
        .map(|o| {
            let op = parse_operation(&o.json)?;
            if let Operation::Receipt(_) = &op {
                // Receipts speak for a department and are written by the node that serves it.
                return Err(Rejection {
                    reason: crate::record::RejectReason::InvalidValue,
                    field: "op".to_string(),
                    detail: "receipts are written by the node for Feed.Acknowledge, not published".to_string(),
                });
            }
            if let Operation::Upsert(rec) = &op {
                if rec.source_region != origin {
                    return Err(Rejection {
                        reason: crate::record::RejectReason::InvalidValue,
                        field: "source_region_code".to_string(),
                        detail: format!(
                            "this node publishes region {origin}'s own records only; a record of {} is published by that region's node",
                            rec.source_region
                        ),
                    });
                }
            }
            let d = crate::log::digest(op.canonical());
            Ok((op, d))
        })
        .collect()
}

/// A request after validation: results of the rejected operations, and the valid ones to commit.
struct Checked {
    results: Vec<Option<pb::OperationResult>>,
    valid: Vec<Operation>,
    /// The digest of each valid operation's canonical bytes.
    digests: Vec<Hash>,
    valid_at: Vec<usize>,
    /// Record ids of the valid operations (they move to the writer).
    valid_ids: Vec<String>,
}

/// Validates a request off the async workers (parsing thousands of records is CPU work).
async fn check(origin: Region, operations: Vec<pb::Operation>) -> Result<Checked, Status> {
    if operations.len() > PUBLISH_OPS_MAX {
        return Err(Status::invalid_argument(format!(
            "a publish request carries {} operations; at most {PUBLISH_OPS_MAX} are allowed: split the batch",
            operations.len()
        )));
    }
    let checked = tokio::task::spawn_blocking(move || validate(origin, &operations))
        .await
        .map_err(|e| Status::internal(format!("validation task failed: {e}")))?;
    let mut results: Vec<Option<pb::OperationResult>> = vec![None; checked.len()];
    let mut valid = Vec::with_capacity(checked.len());
    let mut digests = Vec::with_capacity(checked.len());
    let mut valid_at = Vec::with_capacity(checked.len());
    for (i, c) in checked.into_iter().enumerate() {
        match c {
            Ok((op, d)) => {
                valid_at.push(i);
                valid.push(op);
                digests.push(d);
            }
            Err(r) => results[i] = Some(rejected(i, String::new(), (&r).into())),
        }
    }
    let valid_ids = valid.iter().map(|op| op.record_id().to_string()).collect();
    Ok(Checked {
        results,
        valid,
        digests,
        valid_at,
        valid_ids,
    })
}

/// Merges the writer's outcomes into the validation results.
fn respond(
    origin: Region,
    checked: Checked,
    committed: Option<Committed>,
    metrics: &super::metrics::Metrics,
) -> Result<pb::PublishResponse, Status> {
    let Checked {
        mut results,
        valid_at,
        valid_ids,
        ..
    } = checked;
    let mut checkpoint = None;
    if let Some((outcomes, cp)) = committed {
        checkpoint = cp.as_ref().map(pb::Checkpoint::from);
        for ((i, outcome), record_id) in valid_at.into_iter().zip(outcomes).zip(valid_ids) {
            results[i] = Some(match outcome {
                OpOutcome::Appended {
                    kind,
                    held_for_target,
                    seq,
                    hash,
                } => pb::OperationResult {
                    index: i as u32,
                    record_id,
                    outcome: Some(Outcome::Appended(ack(origin, seq, &hash))),
                    kind: pb::OpKind::from(kind) as i32,
                    held_for_target,
                },
                OpOutcome::Duplicate { seq, hash } => pb::OperationResult {
                    index: i as u32,
                    record_id,
                    outcome: Some(Outcome::Duplicate(ack(origin, seq, &hash))),
                    kind: pb::OpKind::Unspecified as i32,
                    held_for_target: false,
                },
                OpOutcome::Rejected(r) => rejected(i, record_id, (&r).into()),
            });
        }
    }
    let results = results
        .into_iter()
        .map(|r| r.ok_or_else(|| Status::internal("an operation got no result")))
        .collect::<Result<Vec<_>, _>>()?;
    count(metrics, &results);
    Ok(pb::PublishResponse { results, checkpoint })
}

/// Counts a response's outcomes: appended, duplicate, and rejections by reason.
fn count(metrics: &super::metrics::Metrics, results: &[pb::OperationResult]) {
    let (mut appended, mut duplicate) = (0, 0);
    for r in results {
        match &r.outcome {
            Some(Outcome::Appended(_)) => appended += 1,
            Some(Outcome::Duplicate(_)) => duplicate += 1,
            Some(Outcome::Rejected(x)) => metrics.rejections.with_label_values(&[&x.reason]).inc(),
            None => {}
        }
    }
    metrics.operations.with_label_values(&["appended"]).inc_by(appended);
    metrics.operations.with_label_values(&["duplicate"]).inc_by(duplicate);
}

/// Requests of one stream being checked or committed at once (the pipeline's depth per stage).
pub const PUBLISH_PIPELINE_DEPTH: usize = 4;

type PublishStream = tonic::codegen::BoxStream<pb::PublishResponse>;

#[tonic::async_trait]
impl pb::publisher_server::Publisher for PublisherService {
    async fn publish(&self, request: Request<pb::PublishRequest>) -> Result<Response<pb::PublishResponse>, Status> {
        refuse_if_behind(self.origin, &self.own_log_behind)?;
        let mut checked = check(self.origin, request.into_inner().operations).await?;
        let committed = if checked.valid.is_empty() {
            None
        } else {
            Some(
                self.writer
                    .enqueue_digested(std::mem::take(&mut checked.valid), std::mem::take(&mut checked.digests))
                    .await
                    .map_err(|e| store_status(&e))?
                    .wait()
                    .await
                    .map_err(|e| store_status(&e))?,
            )
        };
        Ok(Response::new(respond(self.origin, checked, committed, &self.metrics)?))
    }

    async fn publish_stream(
        &self,
        request: Request<tonic::Streaming<pb::PublishRequest>>,
    ) -> Result<Response<PublishStream>, Status> {
        refuse_if_behind(self.origin, &self.own_log_behind)?;
        let behind = self.own_log_behind.clone();
        let mut inbound = request.into_inner();
        let origin = self.origin;
        let writer = self.writer.clone();
        let metrics = self.metrics.clone();
        let (checking_tx, mut checking_rx) =
            mpsc::channel::<tokio::task::JoinHandle<Result<Checked, Status>>>(PUBLISH_PIPELINE_DEPTH);
        let (queued_tx, mut queued_rx) = mpsc::channel::<(Checked, Option<Pending>)>(PUBLISH_PIPELINE_DEPTH);
        let (out_tx, out_rx) = mpsc::channel::<Result<pb::PublishResponse, Status>>(PUBLISH_PIPELINE_DEPTH);

        // Stage 1: read requests in order and start checking each.
        let fail = out_tx.clone();
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = inbound.message() => next,
                    _ = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                        // What was read is still checked and written; the rest is refused, and
                        // publishing it again after the restart is safe (duplicates are known).
                        let _ = fail
                            .send(Err(Status::unavailable(
                                "the node is stopping: requests sent after this were not taken; publish them again once it is back (what was appended is recognised as duplicates)",
                            )))
                            .await;
                        return;
                    }
                };
                match next {
                    Ok(Some(req)) => {
                        let job = tokio::spawn(check(origin, req.operations));
                        if checking_tx.send(job).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(status) => {
                        let _ = fail.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        // Stage 2: in order, queue each checked request at the writer (order of the log).
        let fail = out_tx.clone();
        tokio::spawn(async move {
            while let Some(job) = checking_rx.recv().await {
                let mut checked = match job.await {
                    Ok(Ok(c)) => c,
                    Ok(Err(status)) => {
                        let _ = fail.send(Err(status)).await;
                        return;
                    }
                    Err(e) => {
                        let _ = fail
                            .send(Err(Status::internal(format!("validation task failed: {e}"))))
                            .await;
                        return;
                    }
                };
                if let Err(status) = refuse_if_behind(origin, &behind) {
                    let _ = fail.send(Err(status)).await;
                    return;
                }
                let pending = if checked.valid.is_empty() {
                    None
                } else {
                    match writer
                        .enqueue_digested(std::mem::take(&mut checked.valid), std::mem::take(&mut checked.digests))
                        .await
                    {
                        Ok(p) => Some(p),
                        Err(e) => {
                            let _ = fail.send(Err(store_status(&e))).await;
                            return;
                        }
                    }
                };
                if queued_tx.send((checked, pending)).await.is_err() {
                    return;
                }
            }
        });
        // Stage 3: in order, wait for each commit and answer.
        tokio::spawn(async move {
            while let Some((checked, pending)) = queued_rx.recv().await {
                let committed = match pending {
                    None => None,
                    Some(p) => match p.wait().await {
                        Ok(c) => Some(c),
                        Err(e) => {
                            let _ = out_tx.send(Err(store_status(&e))).await;
                            return;
                        }
                    },
                };
                let response = respond(origin, checked, committed, &metrics);
                let stop = response.is_err();
                if out_tx.send(response).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }
}
