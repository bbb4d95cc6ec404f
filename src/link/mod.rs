//! The sync driver: one task per configured peer. It opens a stream from the peer through its
//! `PeerConnector` (mutual TLS in a node, an in-process channel in tests), asks for everything
//! past the store's version vector, checks each batch with the sync core's `LinkReceiver`, stores
//! what checkpoints cover through the writer (so a slow disk slows the stream: flow control end
//! to end), records the peer's heads from heartbeats, and reconnects with capped, jittered
//! backoff. A faulty peer is marked with the reason; other peers go on. With feeder choice on,
//! each link asks its peer only for the origins the node's `Feeders` give it (the others the
//! peer announces), and reopens its stream, on the same connection and without backoff, when
//! that set changes.

pub mod feeders;
pub mod recover;

pub use feeders::{run_feeders, Feeders};

/// How often checkpoints of an origin that a link only announces are judged against the store
/// (fork detection on announce-only links); in between they are verified and counted only.
pub const ANNOUNCED_JUDGED_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// Origins whose last judging time a link remembers (past it, every announced checkpoint is
/// judged).
const JUDGED_ORIGINS_MAX: usize = 4096;

use crate::log::{CheckpointVerifier, ENTRY_OVERHEAD_BYTES};
use crate::record::Region;
use crate::store::index::Index;
use crate::store::writer::WriterHandle;
use crate::store::ReplicaOutcome;
use crate::sync::peer::{
    DriverLimits, Incoming, PeerConfig, PeerConnector, PeerError, PeerState, PeerStates, SyncOpen,
};
use crate::sync::{Batch, Clock, Fault, LinkReceiver, OwnLogBehind};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn update(states: &PeerStates, address: &str, f: impl FnOnce(&mut PeerState)) {
    let mut map = states.lock().unwrap_or_else(|p| p.into_inner());
    f(map.entry(address.to_string()).or_default());
}

/// Everything a link needs from its node.
#[derive(Clone)]
pub struct Link {
    pub local: Region,
    pub writer: WriterHandle,
    pub index: Index,
    pub verifier: Arc<dyn CheckpointVerifier>,
    pub limits: DriverLimits,
    pub states: PeerStates,
    /// Set once a peer shows that it holds more of this node's own log than this node does:
    /// (our head, theirs, the peer). Publishing is refused while it is set.
    pub own_log_behind: OwnLogBehind,
    /// The node's feeder choice and this link's place in it; `None`: every origin is streamed.
    pub feeders: Option<(Arc<Feeders>, usize)>,
    /// Where the delay of each stored entry from its origin's append is recorded.
    pub arrivals: Arc<crate::evaluate::arrivals::Arrivals>,
}

enum LinkEnd {
    Shutdown,
    Failed(String),
    /// The origins this link should stream changed: reopen at once.
    Reassigned,
}

/// Runs the link to `peer` until `shutdown` turns true.
pub async fn run_peer(
    link: Link,
    peer: PeerConfig,
    connector: Arc<dyn PeerConnector>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = link.limits.reconnect_min;
    let mut fresh = true;
    loop {
        let started = std::time::Instant::now();
        let end = tokio::select! {
            end = session(&link, &peer, connector.as_ref(), fresh) => end,
            _ = shutdown.wait_for(|stop| *stop) => LinkEnd::Shutdown,
        };
        fresh = !matches!(end, LinkEnd::Reassigned);
        if fresh {
            update(&link.states, &peer.address, |s| s.connected = false);
            if let Some((f, id)) = &link.feeders {
                f.closed(*id);
            }
        }
        match end {
            LinkEnd::Shutdown => return,
            LinkEnd::Reassigned => continue,
            LinkEnd::Failed(reason) => {
                connector.reset();
                tracing::warn!(peer = %peer.address, region = %peer.region, reason = %reason, "sync link failed; will reconnect");
                update(&link.states, &peer.address, |s| {
                    s.errors_total += 1;
                    s.last_error = reason;
                });
            }
        }
        // A link that stayed up a while starts over from the shortest wait.
        if started.elapsed() > link.limits.reconnect_max {
            backoff = link.limits.reconnect_min;
        }
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        let wait = backoff.mul_f64(jitter);
        backoff = (backoff * 2).min(link.limits.reconnect_max);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// One stream from the peer. `fresh`: the link just came up (not a reopen after a feeder change).
async fn session(link: &Link, peer: &PeerConfig, connector: &dyn PeerConnector, fresh: bool) -> LinkEnd {
    let heads = match link.index.heads() {
        Ok(h) => h,
        Err(e) => return LinkEnd::Failed(format!("reading our heads: {e}")),
    };
    let mut changes = link.feeders.as_ref().map(|(f, _)| f.subscribe());
    let streams = link.feeders.as_ref().map(|(f, id)| f.opening(*id));
    // Up for the feeder choice once the stream delivers (a reopen after a change already is).
    let mut told_up = !fresh;
    let request = SyncOpen {
        have: heads.iter().map(|(o, h)| (*o, h.next_seq)).collect(),
        batch_entries_max: link.limits.batch_entries_max,
        batch_bytes_max: link.limits.batch_bytes_max,
        streams: streams.clone(),
    };
    // A reopen goes over the kept connection; one that went silent must not hold the link.
    let mut stream = match tokio::time::timeout(link.limits.silence_max, connector.open(request)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return ended(link, peer, e),
        Err(_) => {
            return LinkEnd::Failed(format!(
                "no answer to the sync request for {:?}",
                link.limits.silence_max
            ))
        }
    };
    update(&link.states, &peer.address, |s| {
        s.connected = true;
        s.last_contact_unix_millis = now_millis();
    });
    if fresh {
        tracing::info!(peer = %peer.address, region = %peer.region, "sync link up");
    }
    let origins: Vec<Region> = heads.iter().map(|(o, _)| *o).collect();
    let mut receiver = LinkReceiver::new(heads, link.limits.pending_bytes_max);
    // Not our own: a node restored from an old backup signed a fresh checkpoint of its old head
    // at start, later than the real ones of what it lost, and must still see those to know that
    // it is behind (only the judge looks at our own origin's batches, and never stores them).
    for origin in origins.into_iter().filter(|o| *o != link.local) {
        match link.index.latest_checkpoint(origin) {
            Ok(Some(c)) => receiver.hold_checkpoint(origin, c.seq, c.at_unix_seconds),
            Ok(None) => {}
            Err(e) => return LinkEnd::Failed(format!("reading our checkpoints: {e}")),
        }
    }
    let mut receiver = Some(receiver);
    // Per origin this link only announces: when its checkpoints were last judged.
    let mut judged: std::collections::HashMap<Region, std::time::Instant> = std::collections::HashMap::new();
    loop {
        let next = tokio::time::timeout(link.limits.silence_max, stream.next());
        let message = tokio::select! {
            m = next => m,
            _ = reassigned(link, changes.as_mut(), streams.as_ref()) => return LinkEnd::Reassigned,
        };
        let message = match message {
            Err(_) => return LinkEnd::Failed(format!("no message for {:?}", link.limits.silence_max)),
            Ok(Err(e)) => return ended(link, peer, e),
            Ok(Ok(None)) => return LinkEnd::Failed("peer closed the stream".to_string()),
            Ok(Ok(Some(m))) => m,
        };
        update(&link.states, &peer.address, |s| {
            s.last_contact_unix_millis = now_millis();
            s.messages_received += 1;
        });
        if let (Some((f, id)), false) = (&link.feeders, told_up) {
            f.up(*id);
            told_up = true;
        }
        let batches = match message {
            // The signed heads a heartbeat carries are judged like any checkpoint: a fresher one
            // is kept, one that contradicts our chain is fork evidence.
            Incoming::Heartbeat { heads, checkpoints } => {
                if let Some((f, id)) = &link.feeders {
                    f.announced(*id, &heads);
                }
                update(&link.states, &peer.address, |s| s.heads = heads);
                checkpoints
            }
            Incoming::Batch(b) => vec![b],
        };
        for batch in batches {
            let mut rx = receiver.take().expect("the receiver is put back after every batch");
            let mut store = true;
            // An origin another peer feeds: its checkpoints here are judged against the store
            // (that is how a fork shows on a link that only announces), once in a while; every
            // one is still verified, and counts as a signed head for the feeder choice.
            if let (Some(origin), true) = (batch.origin, batch.entries.is_empty()) {
                if streams.as_ref().is_some_and(|s| !s.contains(&origin)) {
                    let due = judged
                        .get(&origin)
                        .is_none_or(|at| at.elapsed() >= ANNOUNCED_JUDGED_EVERY);
                    if due && judged.len() < JUDGED_ORIGINS_MAX {
                        judged.insert(origin, std::time::Instant::now());
                    }
                    store = due;
                }
                if let Ok(head) = link.index.head(origin) {
                    rx.follow_store(origin, head);
                }
            }
            match deliver(link, peer, rx, batch, store).await {
                Ok(rx) => receiver = Some(rx),
                Err(end) => return end,
            }
        }
    }
}

/// Resolves once this link's origins differ from `streams` (never without feeder choice).
async fn reassigned(
    link: &Link,
    changes: Option<&mut watch::Receiver<u64>>,
    streams: Option<&std::collections::BTreeSet<Region>>,
) {
    let (Some((f, id)), Some(changes), Some(streams)) = (&link.feeders, changes, streams) else {
        return std::future::pending().await;
    };
    loop {
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
        if f.streams_of(*id) != *streams {
            return;
        }
    }
}

fn clock(limits: &DriverLimits) -> Clock {
    Clock {
        now_unix_seconds: now_millis().div_euclid(1000),
        skew_seconds_max: limits.clock_skew_max.as_secs() as i64,
    }
}

/// Checks one batch on the receiver and stores what it covers (`store`: else only checks it);
/// gives the receiver back, or how the link ends.
async fn deliver(
    link: &Link,
    peer: &PeerConfig,
    mut rx: LinkReceiver,
    batch: Batch,
    store: bool,
) -> Result<LinkReceiver, LinkEnd> {
    let n = batch.entries.len() as u64;
    let bytes: u64 = batch
        .entries
        .iter()
        .map(|e| e.op_bytes.len() as u64 + ENTRY_OVERHEAD_BYTES)
        .sum();
    let origin = batch.origin;
    let code = origin.map_or(0, |o| o.code());
    // Hashing and signature checks are CPU work: off the async workers.
    let verifier = link.verifier.clone();
    let now = clock(&link.limits);
    let checked = tokio::task::spawn_blocking(move || {
        let r = rx.receive(batch, verifier.as_ref(), now);
        (rx, r)
    })
    .await;
    let (mut rx, covered) = match checked {
        Ok((rx, Ok(covered))) => (rx, covered),
        Ok((_, Err(f))) => return Err(fault(link, peer, fault_reason(&f))),
        Err(e) => return Err(LinkEnd::Failed(format!("verification task: {e}"))),
    };
    let (refused, _) = rx.take_refused();
    let mut forgeries: Vec<String> = refused
        .iter()
        .map(|f| format!("checkpoint of {} at seq {} refused: {}", f.origin, f.seq, f.reason))
        .collect();
    let skipped = rx.take_skipped();
    if let Some((f, id)) = &link.feeders {
        f.delivered(*id, &rx.take_verified(), origin.filter(|_| n > 0));
    }
    update(&link.states, &peer.address, |s| {
        s.entries_received += n;
        s.bytes_received += bytes;
        let o = s.origins.entry(code).or_default();
        o.entries += n;
        o.bytes += bytes;
        count_duplicates(s, code, skipped);
    });
    for c in covered.into_iter().filter(|_| store) {
        let (code, covered) = (c.origin.code(), c.entries.len() as u64);
        let (origin, stamps): (_, Vec<i64>) = (c.origin, c.entries.iter().map(|e| e.appended_at_micros).collect());
        match link.writer.replicate(c).await {
            Ok(ReplicaOutcome::Stored { appended }) => {
                // The entries this node did not hold are the batch's last `appended`.
                let new = &stamps[stamps.len().saturating_sub(appended as usize)..];
                link.arrivals.record(origin, new.iter().copied(), now_micros());
                update(&link.states, &peer.address, |s| {
                    count_duplicates(s, code, covered.saturating_sub(appended));
                })
            }
            Ok(ReplicaOutcome::Forked { origin, seq }) => {
                tracing::error!(
                    origin = %origin,
                    seq,
                    peer = %peer.address,
                    "FORK: origin signed two different logs; evidence kept, origin no longer accepted"
                );
            }
            Ok(ReplicaOutcome::OwnLogBehind { ours, theirs }) => {
                tracing::error!(
                    ours,
                    theirs,
                    peer = %peer.address,
                    "this node's own log is behind what a peer holds of it (restored from an old backup?); publishing is refused until `cxnode recover` restores it from a replica"
                );
                if let Ok(mut behind) = link.own_log_behind.lock() {
                    *behind = Some((ours, theirs, peer.address.clone()));
                }
            }
            Ok(ReplicaOutcome::Forgery(reason)) => forgeries.push(reason),
            Ok(ReplicaOutcome::Refused(reason)) => {
                tracing::debug!(peer = %peer.address, reason = %reason, "batch not stored");
            }
            Err(e) => return Err(LinkEnd::Failed(format!("store: {e}"))),
        }
    }
    report_forgeries(link, peer, &forgeries);
    Ok(rx)
}

fn count_duplicates(s: &mut PeerState, origin: u32, n: u64) {
    if n > 0 {
        s.duplicates_dropped += n;
        s.origins.entry(origin).or_default().duplicates += n;
    }
}

/// Checkpoints refused as untrustworthy count as errors of the peer that carried them; the link
/// stays up (the origin is not cut off, and the next batch may be honest).
fn report_forgeries(link: &Link, peer: &PeerConfig, forgeries: &[String]) {
    let Some(last) = forgeries.last() else { return };
    for f in forgeries {
        tracing::warn!(peer = %peer.address, reason = %f, "forgery attempt refused");
    }
    let reason = format!("faulty peer: forgery attempt: {last}");
    update(&link.states, &peer.address, |s| {
        s.errors_total += forgeries.len() as u64;
        s.forgeries_total += forgeries.len() as u64;
        s.last_error = reason;
    });
}

fn ended(link: &Link, peer: &PeerConfig, e: PeerError) -> LinkEnd {
    match e {
        PeerError::Link(reason) => LinkEnd::Failed(reason),
        PeerError::Malformed(_) => fault(link, peer, e.to_string()),
    }
}

fn fault_reason(f: &Fault) -> String {
    format!("faulty peer: {f}")
}

fn fault(link: &Link, peer: &PeerConfig, reason: String) -> LinkEnd {
    tracing::warn!(peer = %peer.address, region = %peer.region, reason = %reason, "peer link marked faulty");
    let _ = link;
    LinkEnd::Failed(reason)
}

#[cfg(test)]
mod tests;

/// Microseconds since the Unix epoch (entries' `appended_at_micros` are in these).
fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
