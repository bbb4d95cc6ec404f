//! `cx.v1.Replication`: peers pull what they lack. `Sync` reads the journal sequentially from the
//! first position the caller needs, streams every origin's entries past the caller's version
//! vector with the checkpoints that cover them (so a relay never has to be trusted), then tails
//! the journal live as the writer makes data durable, with heartbeats carrying signed heads.
//! Invariants: only `cx://node/*` callers (policy `Sync`/`Heads`); per origin, entries are sent in
//! seq order without gaps; batches are bounded in entries and bytes; the stream is fed through a
//! bounded channel by a blocking reader, so a slow peer stalls its reader, never grows memory.

use super::pb;
use super::{caller, Caller};
use crate::log::{Checkpoint, Entry};
use crate::pki::{Identity, TlsFiles};
use crate::policy::{Policy, Rpc, SharedPolicy};
use crate::record::Region;
use crate::store::index::Index;
use crate::store::journal::{Frame, JournalPos, JournalReader};
use crate::sync::peer::{Incoming, PeerConnector, PeerError, PeerFuture, PeerStream, SyncOpen};
use crate::sync::sender::{SendLimits, Sender};
use crate::sync::Batch;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Messages queued towards one peer before its reader waits.
const SYNC_STREAM_DEPTH: usize = 4;

#[derive(Clone, Copy, Debug)]
pub struct SyncLimits {
    pub batch_entries_max: usize,
    pub batch_bytes_max: usize,
    pub heartbeat: Duration,
}

pub struct ReplicationService {
    pub policy: Arc<SharedPolicy>,
    pub index: Index,
    pub journal: JournalReader,
    pub durable_end: watch::Receiver<JournalPos>,
    pub limits: SyncLimits,
    /// Turns true when the node stops: open streams end so the server can drain.
    pub stopping: watch::Receiver<bool>,
    pub heads_cache: Arc<HeadsCache>,
}

fn authorize(policy: &Policy, who: &Caller, rpc: Rpc) -> Result<(), Status> {
    if policy.allows(&who.identity, rpc) {
        return Ok(());
    }
    tracing::warn!(identity = %who.identity, remote = %who.remote, rpc = ?rpc, "replication refused by policy");
    Err(Status::permission_denied(format!(
        "{} may not call {rpc:?}: only nodes of the federation may",
        who.identity
    )))
}

/// Heads of every origin this node holds, with their latest checkpoints.
pub fn heads(index: &Index, journal: &JournalReader) -> Result<Vec<pb::Head>, Status> {
    let internal = |e: String| Status::internal(format!("reading heads: {e}"));
    let mut out = Vec::new();
    for (origin, head) in index.heads().map_err(|e| internal(e.to_string()))? {
        let latest_checkpoint = match index.latest_checkpoint(origin).map_err(|e| internal(e.to_string()))? {
            Some(cp) => match journal.read_at(cp.pos).map_err(|e| internal(e.to_string()))? {
                Frame::Checkpoint(c) => Some(pb::Checkpoint::from(&c)),
                _ => None,
            },
            None => None,
        };
        out.push(pb::Head {
            origin: origin.code(),
            seq: head.seq(),
            head_hash: head.head_hash.to_vec().into(),
            latest_checkpoint,
            forked: index.fork(origin).map_err(|e| internal(e.to_string()))?.is_some(),
        });
    }
    Ok(out)
}

/// The heads heartbeats carry, built once per durable end for every stream of the node (each
/// origin's latest checkpoint is a journal read; with select mode every stream heartbeats every
/// interval).
pub struct HeadsCache {
    end: watch::Receiver<JournalPos>,
    built: std::sync::Mutex<Option<(JournalPos, Vec<pb::Head>)>>,
}

impl HeadsCache {
    pub fn new(end: watch::Receiver<JournalPos>) -> Arc<HeadsCache> {
        Arc::new(HeadsCache {
            end,
            built: std::sync::Mutex::new(None),
        })
    }

    fn heads(&self, index: &Index, journal: &JournalReader) -> Result<Vec<pb::Head>, Status> {
        let end = *self.end.borrow();
        if let Some((at, heads)) = &*self.built.lock().unwrap_or_else(|p| p.into_inner()) {
            if *at == end {
                return Ok(heads.clone());
            }
        }
        let fresh = heads(index, journal)?;
        *self.built.lock().unwrap_or_else(|p| p.into_inner()) = Some((end, fresh.clone()));
        Ok(fresh)
    }
}

fn heartbeat(cache: &HeadsCache, index: &Index, journal: &JournalReader) -> Option<pb::SyncMessage> {
    let heads = cache.heads(index, journal).ok()?;
    let at_unix_millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Some(pb::SyncMessage {
        body: Some(pb::sync_message::Body::Heartbeat(pb::Heartbeat {
            at_unix_millis,
            heads,
        })),
    })
}

/// Streams frames to `tx` from the first position the peer needs, then tails. Runs on a blocking
/// thread (journal reads); ends when the peer goes away.
/// What a sync stream reads from and listens to.
struct StreamSource {
    heads_cache: Arc<HeadsCache>,
    index: Index,
    journal: JournalReader,
    durable_end: watch::Receiver<JournalPos>,
    stopping: watch::Receiver<bool>,
    runtime: tokio::runtime::Handle,
}

#[derive(PartialEq, Eq)]
enum Wake {
    Data,
    Quiet,
    Stop,
}

/// What one peer asked for: everything past `have`, of the origins in `only` when it is set
/// (those it takes from another feeder it gets announced in a heartbeat every interval).
struct Wanted {
    have: BTreeMap<Region, u64>,
    only: Option<BTreeSet<Region>>,
    /// The caller's own origin (a node's): with `only`, sent just as far as held at the start.
    caller: Option<Region>,
}

fn stream_journal(
    source: StreamSource,
    wanted: Wanted,
    limits: SyncLimits,
    tx: mpsc::Sender<Result<pb::SyncMessage, Status>>,
) {
    let StreamSource {
        heads_cache,
        index,
        journal,
        mut durable_end,
        mut stopping,
        runtime,
    } = source;
    let Wanted { have, only, caller } = wanted;
    let send = |m: pb::SyncMessage| tx.blocking_send(Ok(m)).is_ok();
    // A peer that takes some origins from others hears our heads every interval even while
    // entries flow, and at once: that is how it knows its feeders keep up.
    let announcing = only.is_some();
    let mut announced = std::time::Instant::now();
    if announcing {
        let Some(m) = heartbeat(&heads_cache, &index, &journal) else {
            return;
        };
        if !send(m) {
            return;
        }
    }
    // Start at the earliest run holding something the peer lacks.
    let mut start = *durable_end.borrow();
    let mut callers_own = None;
    match index.heads() {
        Ok(heads) => {
            for (origin, head) in heads {
                if Some(origin) == caller {
                    callers_own = Some(head.seq());
                }
                if only.as_ref().is_some_and(|o| !o.contains(&origin)) {
                    continue;
                }
                let want = have.get(&origin).copied().unwrap_or(1);
                if want <= head.seq() {
                    if let Ok(Some((_, pos))) = index.run_of(origin, want) {
                        start = start.min(pos);
                    }
                }
            }
        }
        Err(e) => {
            let _ = tx.blocking_send(Err(Status::internal(format!("reading heads: {e}"))));
            return;
        }
    }
    let mut sender = Sender::new(
        have,
        SendLimits {
            batch_entries_max: limits.batch_entries_max,
            batch_bytes_max: limits.batch_bytes_max,
        },
    );
    if let Some(origin) = caller.filter(|_| announcing) {
        sender = sender.until(origin, callers_own.unwrap_or(0));
    }
    let streamed = only.clone();
    let mut sender = sender.only(only);
    // Sends a heartbeat if one is due while announcing; false once the peer is gone.
    let announce_if_due = |announced: &mut std::time::Instant| -> bool {
        if !announcing || announced.elapsed() < limits.heartbeat {
            return true;
        }
        *announced = std::time::Instant::now();
        heartbeat(&heads_cache, &index, &journal).is_none_or(send)
    };
    loop {
        let end = *durable_end.borrow_and_update();
        // Asked for some origins only: most commits are of others, and need no read at all.
        if start < end && streamed.as_ref().is_some_and(|o| !has_news(&index, &sender, o, start)) {
            start = end;
        }
        if start < end {
            let mut out = Vec::new();
            let scanned = journal.scan(start, end, |_, _, frame| {
                match frame {
                    Frame::Entry(e) => sender.entry(e, &mut out),
                    Frame::Checkpoint(c) => sender.checkpoint(c, &mut out),
                    Frame::ForkEvidence(_) => {}
                }
                for b in out.drain(..) {
                    if !send(batch_to_pb(b)) {
                        return Ok::<_, crate::store::journal::JournalError>(false);
                    }
                }
                Ok(announce_if_due(&mut announced))
            });
            if let Err(e) = scanned {
                tracing::error!(error = %e, "journal read failed while serving a peer");
                let _ = tx.blocking_send(Err(Status::internal(format!("journal read failed: {e}"))));
                return;
            }
            if let Some(b) = sender.flush() {
                if !send(batch_to_pb(b)) {
                    return;
                }
            }
            start = end;
        }
        if tx.is_closed() || !announce_if_due(&mut announced) {
            return;
        }
        // Wait for new data or the next heartbeat, whichever comes first. Unless announcing, a
        // heartbeat goes out only when the interval passed with nothing new, never in answer to
        // a wake-up.
        let wait = if announcing {
            limits.heartbeat.saturating_sub(announced.elapsed())
        } else {
            limits.heartbeat
        };
        let woke = runtime.block_on(async {
            tokio::select! {
                r = durable_end.changed() => if r.is_ok() { Wake::Data } else { Wake::Stop },
                _ = tokio::time::sleep(wait) => Wake::Quiet,
                _ = tx.closed() => Wake::Stop,
                _ = stopping.wait_for(|stop| *stop) => Wake::Stop,
            }
        });
        if woke == Wake::Stop {
            return;
        }
        if woke == Wake::Quiet && !announcing && *durable_end.borrow() == start {
            let Some(m) = heartbeat(&heads_cache, &index, &journal) else {
                return;
            };
            if !send(m) {
                return;
            }
        }
    }
}

/// Whether the journal from `start` on may hold something of `origins` for this peer: entries it
/// needs, or a checkpoint written since. (The index is updated before the durable end moves, so
/// it is never behind what the stream is about to read.) On a read error: yes, read and see.
fn has_news(index: &Index, sender: &Sender, origins: &BTreeSet<Region>, start: JournalPos) -> bool {
    origins.iter().filter(|o| sender.may_send(**o)).any(|o| {
        let entries = index.head(*o).map_or(true, |h| sender.needs(*o, h.next_seq));
        let checkpoint = index
            .latest_checkpoint(*o)
            .map_or(true, |c| c.is_some_and(|c| c.pos >= start));
        entries || checkpoint
    })
}

#[tonic::async_trait]
impl pb::replication_server::Replication for ReplicationService {
    async fn sync(
        &self,
        request: Request<pb::SyncRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<pb::SyncMessage>>, Status> {
        let who = caller(&request)?;
        authorize(&self.policy.current(), &who, Rpc::Sync)?;
        let req = request.into_inner();
        let mut have = BTreeMap::new();
        for (code, next) in req.have.map(|v| v.next_seq).unwrap_or_default() {
            let origin = Region::from_code(code).map_err(|e| Status::invalid_argument(format!("have: {e}")))?;
            have.insert(origin, next.max(1));
        }
        let only = if req.select_origins {
            let mut only = BTreeSet::new();
            for code in &req.stream_origins {
                only.insert(
                    Region::from_code(*code).map_err(|e| Status::invalid_argument(format!("stream_origins: {e}")))?,
                );
            }
            Some(only)
        } else {
            None
        };
        let caller = match who.identity {
            Identity::Node(region) => Some(region),
            _ => None,
        };
        let mut limits = self.limits;
        if req.batch_entries_max > 0 {
            limits.batch_entries_max = limits.batch_entries_max.min(req.batch_entries_max as usize);
        }
        if req.batch_bytes_max > 0 {
            limits.batch_bytes_max = limits.batch_bytes_max.min(req.batch_bytes_max as usize);
        }
        tracing::info!(
            peer = %who.identity,
            remote = %who.remote,
            origins = have.len(),
            streamed = only.as_ref().map_or("all".to_string(), |o| o.len().to_string()),
            "sync stream opened"
        );
        let (tx, rx) = mpsc::channel(SYNC_STREAM_DEPTH);
        let (index, journal, end) = (self.index.clone(), self.journal.clone(), self.durable_end.clone());
        let runtime = tokio::runtime::Handle::current();
        let stopping = self.stopping.clone();
        let source = StreamSource {
            heads_cache: self.heads_cache.clone(),
            index,
            journal,
            durable_end: end,
            stopping,
            runtime,
        };
        tokio::task::spawn_blocking(move || stream_journal(source, Wanted { have, only, caller }, limits, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn heads(&self, request: Request<pb::HeadsRequest>) -> Result<Response<pb::HeadsResponse>, Status> {
        let who = caller(&request)?;
        authorize(&self.policy.current(), &who, Rpc::Heads)?;
        let (index, journal) = (self.index.clone(), self.journal.clone());
        let heads = tokio::task::spawn_blocking(move || heads(&index, &journal))
            .await
            .map_err(|e| Status::internal(format!("heads task: {e}")))??;
        Ok(Response::new(pb::HeadsResponse { heads }))
    }
}

fn batch_to_pb(b: Batch) -> pb::SyncMessage {
    pb::SyncMessage {
        body: Some(pb::sync_message::Body::Batch(pb::SyncBatch {
            origin: b.origin.map_or(0, |o| o.code()),
            entries: b.entries.into_iter().map(pb::Entry::from).collect(),
            checkpoints: b.checkpoints.iter().map(pb::Checkpoint::from).collect(),
        })),
    }
}

/// Converts a received batch to the sync core's form, validating field sizes.
pub fn batch_from_pb(b: &pb::SyncBatch) -> Result<Batch, String> {
    let origin = Region::from_code(b.origin).map_err(|e| format!("batch origin: {e}"))?;
    Ok(Batch {
        origin: Some(origin),
        entries: b.entries.iter().map(Entry::try_from).collect::<Result<_, _>>()?,
        checkpoints: b
            .checkpoints
            .iter()
            .map(Checkpoint::try_from)
            .collect::<Result<_, _>>()?,
    })
}

/// The signed heads of a heartbeat, as one checkpoint-only batch per origin.
pub fn heartbeat_checkpoints(h: &pb::Heartbeat) -> Result<Vec<Batch>, String> {
    let mut out = Vec::new();
    for head in &h.heads {
        if let Some(cp) = &head.latest_checkpoint {
            let cp = Checkpoint::try_from(cp)?;
            out.push(Batch {
                origin: Some(cp.origin),
                entries: Vec::new(),
                checkpoints: vec![cp],
            });
        }
    }
    Ok(out)
}

/// Peer heads from a heartbeat: origin -> (seq, forked).
pub fn heartbeat_heads(h: &pb::Heartbeat) -> HashMap<u32, (u64, bool)> {
    h.heads.iter().map(|x| (x.origin, (x.seq, x.forked))).collect()
}

/// Converts one received message to the sync core's form.
pub fn incoming_from_pb(m: pb::SyncMessage) -> Result<Incoming, PeerError> {
    match m.body {
        Some(pb::sync_message::Body::Heartbeat(h)) => Ok(Incoming::Heartbeat {
            heads: heartbeat_heads(&h),
            checkpoints: heartbeat_checkpoints(&h)
                .map_err(|e| PeerError::Malformed(format!("malformed heartbeat: {e}")))?,
        }),
        Some(pb::sync_message::Body::Batch(b)) => batch_from_pb(&b)
            .map(Incoming::Batch)
            .map_err(|e| PeerError::Malformed(format!("malformed batch: {e}"))),
        None => Err(PeerError::Malformed("empty sync message".to_string())),
    }
}

/// Largest message a sync client accepts from a peer.
const SYNC_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A peer reached over mutual TLS as this node; its certificate must name `cx://node/<region>`.
/// The connection is kept for the next stream (a feeder change reopens the stream, not the
/// connection) until the link fails.
pub struct TlsPeer {
    pub address: String,
    pub region: Region,
    pub server_name: Option<String>,
    pub tls: TlsFiles,
    pub channel: std::sync::Mutex<Option<tonic::transport::Channel>>,
}

impl TlsPeer {
    pub fn new(address: &str, region: Region, server_name: Option<String>, tls: TlsFiles) -> TlsPeer {
        TlsPeer {
            address: address.to_string(),
            region,
            server_name,
            tls,
            channel: std::sync::Mutex::new(None),
        }
    }

    async fn channel(&self) -> Result<tonic::transport::Channel, PeerError> {
        if let Some(c) = self.channel.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(c);
        }
        let expected = Some(Identity::Node(self.region));
        let channel = super::client::connect_expecting(&self.address, &self.tls, self.server_name.as_deref(), expected)
            .await
            .map_err(|e| PeerError::Link(e.to_string()))?;
        *self.channel.lock().unwrap_or_else(|p| p.into_inner()) = Some(channel.clone());
        Ok(channel)
    }

    /// The peer's heads: origin -> (seq, forked).
    pub async fn heads(&self) -> Result<BTreeMap<Region, (u64, bool)>, PeerError> {
        let expected = Some(Identity::Node(self.region));
        let channel = super::client::connect_expecting(&self.address, &self.tls, self.server_name.as_deref(), expected)
            .await
            .map_err(|e| PeerError::Link(e.to_string()))?;
        let response = pb::replication_client::ReplicationClient::new(channel)
            .heads(pb::HeadsRequest {})
            .await
            .map_err(|s| PeerError::Link(super::client::explain_status(&s)))?
            .into_inner();
        let mut out = BTreeMap::new();
        for h in response.heads {
            let origin = Region::from_code(h.origin).map_err(|e| PeerError::Malformed(format!("head origin: {e}")))?;
            out.insert(origin, (h.seq, h.forked));
        }
        Ok(out)
    }
}

struct TlsStream(tonic::Streaming<pb::SyncMessage>);

impl PeerStream for TlsStream {
    fn next(&mut self) -> PeerFuture<'_, Option<Incoming>> {
        Box::pin(async move {
            match self.0.message().await {
                Ok(Some(m)) => incoming_from_pb(m).map(Some),
                Ok(None) => Ok(None),
                Err(s) => Err(PeerError::Link(super::client::explain_status(&s))),
            }
        })
    }
}

impl PeerConnector for TlsPeer {
    fn open(&self, request: SyncOpen) -> PeerFuture<'_, Box<dyn PeerStream>> {
        Box::pin(async move {
            let channel = self.channel().await?;
            let mut client = pb::replication_client::ReplicationClient::new(channel)
                .max_decoding_message_size(SYNC_MESSAGE_BYTES_MAX);
            let request = pb::SyncRequest {
                have: Some(pb::VersionVector {
                    next_seq: request.have.iter().map(|(o, next)| (o.code(), *next)).collect(),
                }),
                batch_entries_max: request.batch_entries_max,
                batch_bytes_max: request.batch_bytes_max,
                select_origins: request.streams.is_some(),
                stream_origins: request.streams.iter().flatten().map(|o| o.code()).collect(),
            };
            let stream = match client.sync(request).await {
                Ok(s) => s.into_inner(),
                Err(s) => {
                    self.reset();
                    return Err(PeerError::Link(super::client::explain_status(&s)));
                }
            };
            Ok(Box::new(TlsStream(stream)) as Box<dyn PeerStream>)
        })
    }

    fn reset(&self) {
        *self.channel.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}
