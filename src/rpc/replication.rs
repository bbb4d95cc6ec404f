//! `cx.v1.Replication`: peers pull what they lack. `Sync` reads the journal sequentially from the
//! first position the caller needs, streams every origin's entries past the caller's version
//! vector with the checkpoints that cover them (so a relay never has to be trusted), then tails
//! the journal live as the writer makes data durable, with heartbeats carrying signed heads.
//! Invariants: only `cx://node/*` callers (the policy gate, `Sync`/`Heads`); per origin, entries are sent in
//! seq order without gaps; batches are bounded in entries and bytes; the stream is fed through a
//! bounded channel by an async task reading the journal in bounded blocking steps, so a slow peer
//! stalls its reader, never grows memory, and an idle stream holds no thread.

use super::caller;
use super::pb;
use crate::log::{Checkpoint, Entry};
use crate::pki::{Identity, TlsFiles};
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
    pub index: Index,
    pub journal: JournalReader,
    pub durable_end: watch::Receiver<JournalPos>,
    pub limits: SyncLimits,
    /// Turns true when the node stops: open streams end so the server can drain.
    pub stopping: watch::Receiver<bool>,
    pub heads_cache: Arc<HeadsCache>,
    /// Blocking steps of all sync streams running at once (`SYNC_READERS_MAX`).
    pub readers: Arc<tokio::sync::Semaphore>,
}

/// Blocking steps of sync streams that run at once: however many peers stream, they leave the
/// rest of the blocking pool to publishing, feeds and reloads.
pub const SYNC_READERS_MAX: usize = 4;

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

/// What a sync stream reads from and listens to.
struct StreamSource {
    heads_cache: Arc<HeadsCache>,
    index: Index,
    journal: JournalReader,
    durable_end: watch::Receiver<JournalPos>,
    stopping: watch::Receiver<bool>,
    readers: Arc<tokio::sync::Semaphore>,
}

/// Runs `f` on the blocking pool once one of the `SYNC_READERS_MAX` reader slots is free.
async fn on_reader<T: Send + 'static>(
    readers: &Arc<tokio::sync::Semaphore>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Status> {
    let permit = readers
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Status::unavailable("the node is stopping"))?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    })
    .await
    .map_err(|e| Status::internal(format!("sync stream step: {e}")))
}

/// What the blocking steps of one stream read from (shared with each step).
struct Reader {
    heads_cache: Arc<HeadsCache>,
    index: Index,
    journal: JournalReader,
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

/// Messages one blocking step of a sync stream reads before it hands them to the stream: with
/// the channel's depth, what one stream holds in memory; and a stream holds a blocking thread
/// only for one step, never for its life.
const SYNC_STEP_MESSAGES_MAX: usize = 8;
/// Journal bytes one blocking step reads at most (about two full batches): steps stay short, and
/// what a stream holds stays near the channel's depth.
const SYNC_STEP_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// Where one stream's reading stands, moved into each blocking step and back.
struct Reading {
    sender: Sender,
    start: JournalPos,
    announced: std::time::Instant,
}

/// The first step: the first heartbeat when announcing, and the earliest position holding
/// something the peer lacks.
fn start_reading(
    reader: &Reader,
    wanted: Wanted,
    limits: SyncLimits,
    end: JournalPos,
) -> Result<(Reading, Option<pb::SyncMessage>), Status> {
    let Wanted { have, only, caller } = wanted;
    let announcing = only.is_some();
    let first = if announcing {
        Some(
            heartbeat(&reader.heads_cache, &reader.index, &reader.journal)
                .ok_or_else(|| Status::internal("reading heads for the first heartbeat"))?,
        )
    } else {
        None
    };
    let mut start = end;
    let mut callers_own = None;
    let heads = reader
        .index
        .heads()
        .map_err(|e| Status::internal(format!("reading heads: {e}")))?;
    for (origin, head) in heads {
        if Some(origin) == caller {
            callers_own = Some(head.seq());
        }
        if only.as_ref().is_some_and(|o| !o.contains(&origin)) {
            continue;
        }
        let want = have.get(&origin).copied().unwrap_or(1);
        if want <= head.seq() {
            if let Ok(Some((_, pos))) = reader.index.run_of(origin, want) {
                start = start.min(pos);
            }
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
    let reading = Reading {
        sender: sender.only(only),
        start,
        announced: std::time::Instant::now(),
    };
    Ok((reading, first))
}

/// One bounded step: reads from `reading.start` towards `end` until `SYNC_STEP_MESSAGES_MAX`
/// messages are ready (batches, and heartbeats due while announcing), and moves `start` past
/// what it read.
fn read_step(
    reader: &Reader,
    reading: &mut Reading,
    end: JournalPos,
    streamed: Option<&BTreeSet<Region>>,
    heartbeat_every: Duration,
) -> Result<Vec<pb::SyncMessage>, Status> {
    let Reading {
        sender,
        start,
        announced,
    } = reading;
    let mut messages = Vec::new();
    // Asked for some origins only: most commits are of others, and need no read at all.
    if streamed.is_some_and(|o| !has_news(&reader.index, sender, o, *start)) {
        // Nothing more to read for this peer up to `end`; what an earlier step left in an open
        // batch goes out now, or it would wait for the next entry of a selected origin.
        messages.extend(sender.flush().map(batch_to_pb));
        *start = end;
        return Ok(messages);
    }
    let mut out = Vec::new();
    let mut stopped_at = None;
    let from = start.0;
    let scanned = reader.journal.scan(*start, end, |_, next, frame| {
        match frame {
            Frame::Entry(e) => sender.entry(e, &mut out),
            Frame::Checkpoint(c) => sender.checkpoint(c, &mut out),
            Frame::ForkEvidence(_) => {}
        }
        messages.extend(out.drain(..).map(batch_to_pb));
        if streamed.is_some() && announced.elapsed() >= heartbeat_every {
            *announced = std::time::Instant::now();
            messages.extend(heartbeat(&reader.heads_cache, &reader.index, &reader.journal));
        }
        if messages.len() >= SYNC_STEP_MESSAGES_MAX || next.0 - from >= SYNC_STEP_BYTES_MAX {
            stopped_at = Some(next);
            return Ok::<_, crate::store::journal::JournalError>(false);
        }
        Ok(true)
    });
    if let Err(e) = scanned {
        tracing::error!(error = %e, "journal read failed while serving a peer");
        return Err(Status::internal(format!("journal read failed: {e}")));
    }
    match stopped_at {
        Some(next) => *start = next,
        None => {
            messages.extend(sender.flush().map(batch_to_pb));
            *start = end;
        }
    }
    Ok(messages)
}

/// Streams frames to `tx` from the first position the peer needs, then tails. An async task: the
/// journal is read in bounded steps on the blocking pool, and the stream waits for data, its
/// heartbeat or its end without a thread. Ends when the peer goes away or the node stops.
async fn stream_journal(
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
        readers,
    } = source;
    let reader = Arc::new(Reader {
        heads_cache,
        index,
        journal,
    });
    // A peer that takes some origins from others hears our heads every interval even while
    // entries flow, and at once: that is how it knows its feeders keep up.
    let streamed = wanted.only.clone().map(Arc::new);
    let announcing = streamed.is_some();
    let end = *durable_end.borrow();
    let started = {
        let reader = reader.clone();
        on_reader(&readers, move || start_reading(&reader, wanted, limits, end)).await
    };
    let mut reading = match started.and_then(|r| r) {
        Ok((reading, first)) => {
            if let Some(m) = first {
                if tx.send(Ok(m)).await.is_err() {
                    return;
                }
            }
            reading
        }
        Err(status) => {
            let _ = tx.send(Err(status)).await;
            return;
        }
    };
    loop {
        let end = *durable_end.borrow_and_update();
        // The next step reads while the last one's messages are sent: at most two steps of
        // messages are held besides the channel's.
        let mut ready: Vec<pb::SyncMessage> = Vec::new();
        while reading.start < end {
            let reader = reader.clone();
            let streamed = streamed.clone();
            let readers = readers.clone();
            let step = tokio::spawn(async move {
                on_reader(&readers, move || {
                    let r = read_step(&reader, &mut reading, end, streamed.as_deref(), limits.heartbeat);
                    (reading, r)
                })
                .await
            });
            for m in ready.drain(..) {
                if tx.send(Ok(m)).await.is_err() {
                    step.abort();
                    return;
                }
            }
            ready = match step.await {
                Ok(Ok((back, Ok(messages)))) => {
                    reading = back;
                    messages
                }
                Ok(Ok((_, Err(status)))) | Ok(Err(status)) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(Status::internal(format!("sync stream step: {e}")))).await;
                    return;
                }
            };
        }
        for m in ready {
            if tx.send(Ok(m)).await.is_err() {
                return;
            }
        }
        if tx.is_closed() {
            return;
        }
        if announcing && reading.announced.elapsed() >= limits.heartbeat {
            reading.announced = std::time::Instant::now();
            if !send_heartbeat(&readers, &reader, &tx).await {
                return;
            }
        }
        // Wait for new data or the next heartbeat, whichever comes first. Unless announcing, a
        // heartbeat goes out only when the interval passed with nothing new, never in answer to
        // a wake-up.
        let wait = if announcing {
            limits.heartbeat.saturating_sub(reading.announced.elapsed())
        } else {
            limits.heartbeat
        };
        let woke = tokio::select! {
            r = durable_end.changed() => if r.is_ok() { Wake::Data } else { Wake::Stop },
            _ = tokio::time::sleep(wait) => Wake::Quiet,
            _ = tx.closed() => Wake::Stop,
            _ = stopping.wait_for(|stop| *stop) => Wake::Stop,
        };
        if woke == Wake::Stop {
            return;
        }
        if woke == Wake::Quiet
            && !announcing
            && *durable_end.borrow() == reading.start
            && !send_heartbeat(&readers, &reader, &tx).await
        {
            return;
        }
    }
}

/// Builds a heartbeat on the blocking pool (it may read the journal) and sends it; false once the
/// peer is gone or the heads cannot be read.
async fn send_heartbeat(
    readers: &Arc<tokio::sync::Semaphore>,
    reader: &Arc<Reader>,
    tx: &mpsc::Sender<Result<pb::SyncMessage, Status>>,
) -> bool {
    let reader = reader.clone();
    let built = on_reader(readers, move || {
        heartbeat(&reader.heads_cache, &reader.index, &reader.journal)
    })
    .await;
    match built {
        Ok(Some(m)) => tx.send(Ok(m)).await.is_ok(),
        _ => false,
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
        let stopping = self.stopping.clone();
        let source = StreamSource {
            heads_cache: self.heads_cache.clone(),
            index,
            journal,
            durable_end: end,
            stopping,
            readers: self.readers.clone(),
        };
        tokio::spawn(stream_journal(source, Wanted { have, only, caller }, limits, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn heads(&self, _request: Request<pb::HeadsRequest>) -> Result<Response<pb::HeadsResponse>, Status> {
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
