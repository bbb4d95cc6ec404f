//! The sync driver: one task per configured peer. It dials the peer over mutual TLS as this node,
//! asks for everything past the store's version vector, checks each batch with `LinkReceiver`,
//! stores what checkpoints cover through the writer (so a slow disk slows the stream: flow control
//! end to end), records the peer's heads from heartbeats, and reconnects with capped, jittered
//! backoff. A faulty peer is marked with the reason; other peers go on.

use super::{Batch, Clock, Fault, LinkReceiver, OwnLogBehind};
use crate::log::CheckpointVerifier;
use crate::pki::TlsFiles;
use crate::record::Region;
use crate::rpc::client::connect_expecting;
use crate::rpc::pb;
use crate::rpc::replication::{batch_from_pb, heartbeat_checkpoints, heartbeat_heads};
use crate::store::index::Index;
use crate::store::writer::WriterHandle;
use crate::store::ReplicaOutcome;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct PeerConfig {
    pub address: String,
    /// The peer's region: its certificate must carry `cx://node/<region>`.
    pub region: Region,
    /// Name its certificate must carry (default: the host of `address`).
    pub server_name: Option<String>,
}

#[derive(Clone, Copy, Debug)]
pub struct DriverLimits {
    pub batch_entries_max: u32,
    pub batch_bytes_max: u32,
    /// Bytes of uncovered entries buffered per origin per link.
    pub pending_bytes_max: u64,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// No message (batch or heartbeat) for this long: the link is dead, reconnect.
    pub silence_max: Duration,
    /// A checkpoint dated more than this ahead of our clock is refused as a forgery attempt.
    pub clock_skew_max: Duration,
}

/// What operators see of a peer link.
#[derive(Clone, Debug, Default)]
pub struct PeerState {
    pub connected: bool,
    pub last_contact_unix_millis: i64,
    pub errors_total: u64,
    pub last_error: String,
    /// origin code -> (head seq, forked) as the peer last reported.
    pub heads: HashMap<u32, (u64, bool)>,
    pub entries_received: u64,
}

pub type PeerStates = Arc<Mutex<HashMap<String, PeerState>>>;

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
    pub tls: TlsFiles,
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
pub async fn run_peer(link: Link, peer: PeerConfig, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = link.limits.reconnect_min;
    loop {
        let started = std::time::Instant::now();
        let end = tokio::select! {
            end = session(&link, &peer) => end,
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

async fn session(link: &Link, peer: &PeerConfig) -> LinkEnd {
    let expected = Some(crate::pki::Identity::Node(peer.region));
    let channel = match connect_expecting(&peer.address, &link.tls, peer.server_name.as_deref(), expected).await {
        Ok(c) => c,
        Err(e) => return LinkEnd::Failed(e.to_string()),
    };
    let mut client =
        pb::replication_client::ReplicationClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let heads = match link.index.heads() {
        Ok(h) => h,
        Err(e) => return LinkEnd::Failed(format!("reading our heads: {e}")),
    };
    let have = pb::VersionVector {
        next_seq: heads.iter().map(|(o, h)| (o.code(), h.next_seq)).collect(),
    };
    let request = pb::SyncRequest {
        have: Some(have),
        batch_entries_max: link.limits.batch_entries_max,
        batch_bytes_max: link.limits.batch_bytes_max,
    };
    let mut stream = match client.sync(request).await {
        Ok(r) => r.into_inner(),
        Err(s) => return LinkEnd::Failed(crate::rpc::client::explain_status(&s)),
    };
    update(&link.states, &peer.address, |s| {
        s.connected = true;
        s.last_contact_unix_millis = now_millis();
    });
    tracing::info!(peer = %peer.address, region = %peer.region, "sync link up");
    let origins: Vec<Region> = heads.iter().map(|(o, _)| *o).collect();
    let mut receiver = LinkReceiver::new(heads, link.limits.pending_bytes_max);
    for origin in origins {
        match link.index.latest_checkpoint(origin) {
            Ok(Some(c)) => receiver.hold_checkpoint(origin, c.seq, c.at_unix_seconds),
            Ok(None) => {}
            Err(e) => return LinkEnd::Failed(format!("reading our checkpoints: {e}")),
        }
    }
    let mut receiver = Some(receiver);
    loop {
        let message = match tokio::time::timeout(link.limits.silence_max, stream.message()).await {
            Err(_) => return LinkEnd::Failed(format!("no message for {:?}", link.limits.silence_max)),
            Ok(Err(s)) => return LinkEnd::Failed(crate::rpc::client::explain_status(&s)),
            Ok(Ok(None)) => return LinkEnd::Failed("peer closed the stream".to_string()),
            Ok(Ok(Some(m))) => m,
        };
        update(&link.states, &peer.address, |s| {
            s.last_contact_unix_millis = now_millis()
        });
        let batches = match message.body {
            Some(pb::sync_message::Body::Heartbeat(h)) => {
                let heads = heartbeat_heads(&h);
                update(&link.states, &peer.address, |s| s.heads = heads);
                // The signed heads a heartbeat carries are judged like any checkpoint: a fresher
                // one is kept, one that contradicts our chain is fork evidence.
                match heartbeat_checkpoints(&h) {
                    Ok(b) => b,
                    Err(e) => return fault(link, peer, format!("malformed heartbeat: {e}")),
                }
            }
            Some(pb::sync_message::Body::Batch(b)) => match batch_from_pb(&b) {
                Ok(b) => vec![b],
                Err(e) => return fault(link, peer, format!("malformed batch: {e}")),
            },
            None => return fault(link, peer, "empty sync message".to_string()),
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
    if !refused.is_empty() {
        for f in &refused {
            tracing::warn!(peer = %peer.address, origin = %f.origin, seq = f.seq, reason = %f.reason, "checkpoint refused: forgery attempt");
        }
        let last = &refused[refused.len() - 1];
        let reason = format!(
            "faulty peer: forgery attempt: checkpoint of {} at seq {} refused: {}",
            last.origin, last.seq, last.reason
        );
        update(&link.states, &peer.address, |s| {
            s.errors_total += refused.len() as u64;
            s.last_error = reason;
        });
    }
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
            Ok(ReplicaOutcome::Refused(reason)) => {
                tracing::debug!(peer = %peer.address, reason = %reason, "batch not stored");
            }
            Err(e) => return Err(LinkEnd::Failed(format!("store: {e}"))),
        }
    }
    Ok(rx)
}

fn fault_reason(f: &Fault) -> String {
    format!("faulty peer: {f}")
}

fn fault(link: &Link, peer: &PeerConfig, reason: String) -> LinkEnd {
    tracing::warn!(peer = %peer.address, region = %peer.region, reason = %reason, "peer link marked faulty");
    let _ = link;
    LinkEnd::Failed(reason)
}
