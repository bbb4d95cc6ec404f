//! `cx.v1.Feed`: departments' subscriptions and profiles. Converts the wire filter, cursor and
//! subject to the feed core's types (naming the bad field), runs them through `delivery`, and
//! turns what comes back into messages; one mapping from delivery errors and stream ends to
//! status codes.

use super::{caller, pb};
use crate::delivery::{Deliveries, DeliveryError, End, Out, ProgressMark, Subscription, Who};
use crate::feed::{self, Change, Cursor, FeedError, Status as RecordStatus, Withdrawal};
use crate::record::Category;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

pub struct FeedService {
    pub deliveries: Arc<Deliveries>,
}

/// The one mapping from delivery failures to status codes. Refusals say what the policy does not
/// grant, never what data exists.
pub fn delivery_status(e: &DeliveryError) -> Status {
    match e {
        DeliveryError::Denied { .. } | DeliveryError::Feed(FeedError::NotGranted(_)) => {
            Status::permission_denied(e.to_string())
        }
        DeliveryError::Feed(FeedError::NotVisible(_)) => Status::not_found(e.to_string()),
        DeliveryError::Feed(_) => Status::invalid_argument(e.to_string()),
        DeliveryError::TooManySubscriptions(_) => Status::resource_exhausted(e.to_string()),
        DeliveryError::Busy(_) => Status::unavailable(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

fn cursor_to_pb(c: &Cursor) -> pb::FeedCursor {
    pb::FeedCursor {
        position: Some(pb::VersionVector {
            next_seq: c.next.iter().map(|(o, s)| (o.code(), *s)).collect(),
        }),
        token: c.encode().into(),
    }
}

fn status_to_pb(s: RecordStatus) -> pb::RecordStatus {
    match s {
        RecordStatus::InPublicity => pb::RecordStatus::InPublicity,
        RecordStatus::Repaired => pb::RecordStatus::Repaired,
        RecordStatus::Revoked => pb::RecordStatus::Revoked,
        RecordStatus::Expired => pb::RecordStatus::Expired,
    }
}

fn progress_to_pb(m: ProgressMark) -> pb::ProgressMark {
    pb::ProgressMark {
        reached: cursor_to_pb(&m.cursor).position,
        filter_digest: m.digest.to_vec().into(),
        at_unix_seconds: m.at_unix_seconds,
        signature_scheme: u32::from(m.signature_scheme),
        signature: m.signature.into(),
        signer_chain: m.signer_chain.into_iter().map(Into::into).collect(),
        cursor_token: m.cursor.encode().into(),
    }
}

fn out_to_pb(out: Out) -> pb::FeedEvent {
    match out {
        Out::Record { event, entry, cursor } => {
            let (change, kind) = match event.change {
                Change::Published if event.record.category == Category::CreditRepair => {
                    (pb::FeedChange::Published, pb::OpKind::Repair)
                }
                Change::Published => (pb::FeedChange::Published, pb::OpKind::Publish),
                Change::Amended => (pb::FeedChange::Amended, pb::OpKind::Amend),
                Change::Withdrawn(Withdrawal::Repaired) => (pb::FeedChange::WithdrawnRepaired, pb::OpKind::Repair),
                Change::Withdrawn(Withdrawal::Revoked) => (pb::FeedChange::WithdrawnRevoked, pb::OpKind::Revoke),
                Change::Withdrawn(Withdrawal::PublicityEnded) => {
                    (pb::FeedChange::WithdrawnPublicityEnded, pb::OpKind::Unspecified)
                }
            };
            pb::FeedEvent {
                cursor: Some(cursor_to_pb(&cursor)),
                body: Some(pb::feed_event::Body::Record(pb::FeedRecord {
                    entry: entry.map(pb::Entry::from),
                    kind: kind as i32,
                    record_id: event.record.record_id.to_string(),
                    category: event.record.category.code().to_string(),
                    change: change as i32,
                    status: status_to_pb(event.status) as i32,
                    origin: event.record.origin.code(),
                    record_version: event.record.version,
                })),
            }
        }
        Out::Progress(m) => pb::FeedEvent {
            cursor: Some(cursor_to_pb(&m.cursor)),
            body: Some(pb::feed_event::Body::Progress(progress_to_pb(m))),
        },
    }
}

/// How a stream's end reaches the subscriber: nothing for a normal end, a status otherwise.
fn end_status(end: End) -> Option<Status> {
    match end {
        End::CaughtUp | End::Closed => None,
        End::TooSlow { resume, waited } => Some(Status::resource_exhausted(format!(
            "subscriber too slow: its event queue stayed full for {:.1} s, so the stream was cut off; resume from cursor {}",
            waited.as_secs_f64(),
            hex::encode(resume.encode())
        ))),
        End::Denied(m) => Some(Status::permission_denied(format!(
            "the access policy changed and no longer grants this subscription: {m}"
        ))),
        End::Failed(m) => Some(Status::internal(format!("subscription failed: {m}"))),
    }
}

/// The events of a subscription, then its end.
struct FeedStream {
    events: mpsc::Receiver<Out>,
    end: Option<oneshot::Receiver<End>>,
}

impl tokio_stream::Stream for FeedStream {
    type Item = Result<pb::FeedEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.events.poll_recv(cx) {
            Poll::Ready(Some(out)) => return Poll::Ready(Some(Ok(out_to_pb(out)))),
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {}
        }
        let Some(end) = self.end.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(end).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                self.end = None;
                Poll::Ready(r.ok().and_then(end_status).map(Err))
            }
        }
    }
}

fn who<T>(request: &Request<T>) -> Result<Who, Status> {
    let c = caller(request)?;
    Ok(Who {
        identity: c.identity,
        remote: c.remote.to_string(),
    })
}

#[tonic::async_trait]
impl pb::feed_server::Feed for FeedService {
    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<pb::FeedEvent>>, Status> {
        let who = who(&request)?;
        let req = request.into_inner();
        let f = req.filter.unwrap_or_default();
        let filter = feed::Filter::parse(&f.categories, &f.regions, &f.subjects, f.public_only)
            .map_err(|e| delivery_status(&e.into()))?;
        let resume = match req.resume_from {
            Some(c) if !c.token.is_empty() => {
                Some(Cursor::decode(&c.token).map_err(|e| delivery_status(&FeedError::from(e).into()))?)
            }
            _ => None,
        };
        let Subscription { events, end } = self
            .deliveries
            .subscribe(who, filter, resume, req.follow)
            .await
            .map_err(|e| delivery_status(&e))?;
        Ok(Response::new(Box::pin(FeedStream { events, end: Some(end) })))
    }

    async fn profile(&self, request: Request<pb::ProfileRequest>) -> Result<Response<pb::ProfileResponse>, Status> {
        let who = who(&request)?;
        let subject = request.into_inner().subject;
        let key = feed::parse_subject("subject", &subject).map_err(|e| delivery_status(&e.into()))?;
        let (rows, as_of) = self
            .deliveries
            .profile(who, &key)
            .await
            .map_err(|e| delivery_status(&e))?;
        Ok(Response::new(pb::ProfileResponse {
            subject,
            records: rows
                .into_iter()
                .map(|r| pb::ProfileRecord {
                    origin: r.record.origin.code(),
                    record_id: r.record.record_id.to_string(),
                    category: r.record.category.code().to_string(),
                    latest_seq: r.latest_seq,
                    latest_kind: pb::OpKind::from(r.latest_kind) as i32,
                    record_json: r.record_json.into(),
                    repaired: r.record.repaired,
                    revoked: r.record.revoked,
                    status: status_to_pb(r.status) as i32,
                    record_version: r.record.version,
                })
                .collect(),
            as_of: Some(pb::VersionVector {
                next_seq: as_of.into_iter().map(|(o, s)| (o.code(), s)).collect(),
            }),
        }))
    }

    async fn acknowledge(
        &self,
        request: Request<pb::AcknowledgeRequest>,
    ) -> Result<Response<pb::AcknowledgeResponse>, Status> {
        let who = who(&request)?;
        let req = request.into_inner();
        let mut applied = std::collections::BTreeMap::new();
        for (code, next) in req.applied.map(|v| v.next_seq).unwrap_or_default() {
            let origin = crate::record::Region::from_code(code)
                .map_err(|e| Status::invalid_argument(format!("applied: {e}")))?;
            if next == 0 {
                return Err(Status::invalid_argument("applied: a next seq is at least 1"));
            }
            applied.insert(origin, next);
        }
        let a = self
            .deliveries
            .acknowledge(who, applied, &req.repaired_record_ids_stopped)
            .await
            .map_err(|e| delivery_status(&e))?;
        Ok(Response::new(pb::AcknowledgeResponse {
            receipt: a.checkpoint.as_ref().map(pb::Checkpoint::from),
            receipt_id: a.receipt_id,
            seq: a.seq,
            entry_hash: a.entry_hash.to_vec().into(),
        }))
    }
}
