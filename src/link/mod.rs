//! The sync driver: one task per configured peer. It opens a stream from the peer through its
//! `PeerConnector` (mutual TLS in a node, an in-process channel in tests), asks for everything
//! past the store's version vector, checks each batch with the sync core's `LinkReceiver`, stores
//! what checkpoints cover through the writer (so a slow disk slows the stream: flow control end
//! to end), records the peer's heads from heartbeats, and reconnects with capped, jittered
//! backoff. A faulty peer is marked with the reason; other peers go on.

pub mod recover;

use crate::log::CheckpointVerifier;
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
}

enum LinkEnd {
    Shutdown,
    Failed(String),
}

/// Runs the link to `peer` until `shutdown` turns true.
pub async fn run_peer(
    link: Link,
    peer: PeerConfig,
    connector: Arc<dyn PeerConnector>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = link.limits.reconnect_min;
    loop {
        let started = std::time::Instant::now();
        let end = tokio::select! {
            end = session(&link, &peer, connector.as_ref()) => end,
            _ = shutdown.wait_for(|stop| *stop) => LinkEnd::Shutdown,
        };
        update(&link.states, &peer.address, |s| s.connected = false);
        match end {
            LinkEnd::Shutdown => return,
            LinkEnd::Failed(reason) => {
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

async fn session(link: &Link, peer: &PeerConfig, connector: &dyn PeerConnector) -> LinkEnd {
    let heads = match link.index.heads() {
        Ok(h) => h,
        Err(e) => return LinkEnd::Failed(format!("reading our heads: {e}")),
    };
    let request = SyncOpen {
        have: heads.iter().map(|(o, h)| (*o, h.next_seq)).collect(),
        batch_entries_max: link.limits.batch_entries_max,
        batch_bytes_max: link.limits.batch_bytes_max,
    };
    let mut stream = match connector.open(request).await {
        Ok(s) => s,
        Err(e) => return ended(link, peer, e),
    };
    update(&link.states, &peer.address, |s| {
        s.connected = true;
        s.last_contact_unix_millis = now_millis();
    });
    tracing::info!(peer = %peer.address, region = %peer.region, "sync link up");
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
    loop {
        let message = match tokio::time::timeout(link.limits.silence_max, stream.next()).await {
            Err(_) => return LinkEnd::Failed(format!("no message for {:?}", link.limits.silence_max)),
            Ok(Err(e)) => return ended(link, peer, e),
            Ok(Ok(None)) => return LinkEnd::Failed("peer closed the stream".to_string()),
            Ok(Ok(Some(m))) => m,
        };
        update(&link.states, &peer.address, |s| {
            s.last_contact_unix_millis = now_millis();
            s.messages_received += 1;
        });
        let batches = match message {
            // The signed heads a heartbeat carries are judged like any checkpoint: a fresher one
            // is kept, one that contradicts our chain is fork evidence.
            Incoming::Heartbeat { heads, checkpoints } => {
                update(&link.states, &peer.address, |s| s.heads = heads);
                checkpoints
            }
            Incoming::Batch(b) => vec![b],
        };
        for batch in batches {
            let rx = receiver.take().expect("the receiver is put back after every batch");
            match deliver(link, peer, rx, batch).await {
                Ok(rx) => receiver = Some(rx),
                Err(end) => return end,
            }
        }
    }
}

fn clock(limits: &DriverLimits) -> Clock {
    Clock {
        now_unix_seconds: now_millis().div_euclid(1000),
        skew_seconds_max: limits.clock_skew_max.as_secs() as i64,
    }
}

/// Checks one batch on the receiver and stores what it covers; gives the receiver back, or how
/// the link ends.
async fn deliver(link: &Link, peer: &PeerConfig, mut rx: LinkReceiver, batch: Batch) -> Result<LinkReceiver, LinkEnd> {
    let n = batch.entries.len() as u64;
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
    update(&link.states, &peer.address, |s| s.entries_received += n);
    for c in covered {
        match link.writer.replicate(c).await {
            Ok(ReplicaOutcome::Stored { .. }) => {}
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
