//! `cxnode recover`: brings a stopped node's store back from a replica. Two cases, one path:
//! - **own log behind** (restored from an old backup): a peer holds more of this node's own log
//!   than the node does. The node's own entries are fetched from the peer, checked like any
//!   replicated entry (each covered by a checkpoint signed as `cx://node/<us>` and chained to
//!   the federation CA, and linked to the head this node holds), and appended, so the node
//!   resumes from its true head instead of forking its own origin;
//! - **a damaged journal**: everything from the first damaged frame on is moved into a
//!   quarantine directory, the indexes are rebuilt from what is left, and every origin is
//!   fetched again from the peer.
//!
//! It runs until this node holds every origin up to the heads the peer reported when it began.
//! A copy of our own log that contradicts ours is refused, never stored: the node published
//! after it was restored, and an operator must look.

use crate::config::Config;
use crate::record::Region;
use crate::rpc::replication::TlsPeer;
use crate::store::journal::Quarantined;
use crate::store::{ReplicaOutcome, Store, StoreError};
use crate::sync::peer::{Incoming, PeerConfig, PeerConnector, PeerError, SyncOpen};
use crate::sync::{Clock, LinkReceiver};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] crate::store::index::IndexError),
    #[error("peer {peer}: {reason}")]
    Peer { peer: String, reason: String },
    #[error("checkpoint verifier: {0}")]
    Verifier(String),
}

/// What recovery found and did.
#[derive(Clone, Debug, Default)]
pub struct RecoverReport {
    pub local: Option<Region>,
    /// Parts of the journal moved aside because they were damaged.
    pub quarantined: Vec<Quarantined>,
    /// Heads per origin: as the store's indexes had them before, after, and at the peer.
    pub before: BTreeMap<Region, u64>,
    pub after: BTreeMap<Region, u64>,
    pub peer: BTreeMap<Region, u64>,
    /// Entries stored from the peer.
    pub appended: u64,
    /// Covered batches not stored, with the reason (a contradicting copy of our own log, forks,
    /// forgery attempts).
    pub refused: Vec<String>,
}

/// Refusals listed in a report; past this only the first ones are kept.
const REFUSALS_LISTED_MAX: usize = 32;

impl RecoverReport {
    /// Origins held less far than before the damage: entries only the quarantine still holds.
    pub fn lost(&self) -> Vec<(Region, u64, u64)> {
        self.before
            .iter()
            .filter_map(|(o, b)| {
                let a = self.after.get(o).copied().unwrap_or(0);
                (a < *b).then_some((*o, a, *b))
            })
            .collect()
    }

    /// Whether the node holds its own log at least as far as the peer does, and lost nothing.
    pub fn complete(&self) -> bool {
        let own_ok = self
            .local
            .is_none_or(|l| self.after.get(&l).copied().unwrap_or(0) >= self.peer.get(&l).copied().unwrap_or(0));
        own_ok && self.lost().is_empty()
    }
}

fn heads_of(store: &Store) -> Result<BTreeMap<Region, u64>, StoreError> {
    Ok(store.index().heads()?.into_iter().map(|(o, h)| (o, h.seq())).collect())
}

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Recovers the (stopped) node of `config` from `peer`.
pub async fn recover(config: &Config, peer: &PeerConfig) -> Result<RecoverReport, RecoverError> {
    let cfg = config.store.clone();
    let local = config.region;
    let mut report = RecoverReport {
        local: Some(local),
        ..RecoverReport::default()
    };
    let peer_err = |e: PeerError| RecoverError::Peer {
        peer: peer.address.clone(),
        reason: e.to_string(),
    };
    // What the indexes claimed before anything is cut: what a damaged journal should still hold.
    if let Ok(index) = crate::store::index::Index::open(&cfg.index_dir(), cfg.index_cache_bytes, cfg.index_flush_ms) {
        if let Ok(heads) = index.heads() {
            report.before = heads.into_iter().map(|(o, h)| (o, h.seq())).collect();
        }
    }
    let quarantine = cfg.dir.join(format!("quarantine-{}", now_seconds()));
    let repair_cfg = cfg.clone();
    report.quarantined = tokio::task::spawn_blocking(move || Store::repair_journal(&repair_cfg, &quarantine))
        .await
        .map_err(|e| RecoverError::Verifier(format!("repair task: {e}")))??;
    let (mut store, _) = Store::open(&cfg)?;
    if report.quarantined.is_empty() {
        report.before = heads_of(&store)?;
    }
    // Judged as the node judges them: the CA and CRL, and the policy's issuer bindings.
    let issuers = match &config.policy {
        Some(path) => crate::policy::Policy::load(config.region, path)
            .map_err(|e| RecoverError::Verifier(e.to_string()))?
            .issuers(),
        None => std::sync::Arc::default(),
    };
    let verifier = crate::pki::ReloadingVerifier::new(&config.tls.ca, config.tls.crl.as_deref())
        .map_err(|e| RecoverError::Verifier(e.to_string()))?
        .with_issuers(std::sync::Arc::new(move || issuers.clone()));
    let connector = TlsPeer::new(&peer.address, peer.region, peer.server_name.clone(), config.tls.clone());
    report.peer = connector
        .heads()
        .await
        .map_err(peer_err)?
        .into_iter()
        .filter(|(_, (_, forked))| !forked)
        .map(|(o, (seq, _))| (o, seq))
        .collect();
    let held = store.index().heads()?;
    let done = |store: &Store, target: &BTreeMap<Region, u64>| -> Result<bool, StoreError> {
        let heads = heads_of(store)?;
        Ok(target.iter().all(|(o, seq)| heads.get(o).copied().unwrap_or(0) >= *seq))
    };
    let mut receiver = LinkReceiver::new(held.iter().copied(), config.sync.pending_bytes_max);
    // Our own checkpoints do not date-bound our own log (see `OwnOrigin::Recovering`).
    for (origin, _) in held.iter().filter(|(o, _)| *o != local) {
        if let Some(c) = store.index().latest_checkpoint(*origin)? {
            receiver.hold_checkpoint(*origin, c.seq, c.at_unix_seconds);
        }
    }
    let mut stream = connector
        .open(SyncOpen {
            have: held.iter().map(|(o, h)| (*o, h.next_seq)).collect(),
            batch_entries_max: config.sync.batch_entries_max,
            batch_bytes_max: config.sync.batch_bytes_max,
            streams: None,
        })
        .await
        .map_err(peer_err)?;
    let silence = config.sync.silence_max;
    while !done(&store, &report.peer)? {
        let message = match tokio::time::timeout(silence, stream.next()).await {
            Err(_) => return Err(peer_err(PeerError::Link(format!("no message for {silence:?}")))),
            Ok(Err(e)) => return Err(peer_err(e)),
            Ok(Ok(None)) => return Err(peer_err(PeerError::Link("the peer closed the stream".to_string()))),
            Ok(Ok(Some(m))) => m,
        };
        let batches = match message {
            Incoming::Batch(b) => vec![b],
            Incoming::Heartbeat { checkpoints, .. } => checkpoints,
        };
        for batch in batches {
            let clock = Clock {
                now_unix_seconds: now_seconds(),
                skew_seconds_max: config.sync.clock_skew_max.as_secs() as i64,
            };
            let covered = receiver
                .receive(batch, &verifier, clock)
                .map_err(|f| peer_err(PeerError::Malformed(f.to_string())))?;
            for f in receiver.take_refused().0 {
                report.refused.push(format!(
                    "checkpoint of {} at seq {} refused: {}",
                    f.origin, f.seq, f.reason
                ));
            }
            for c in covered {
                match store.recover_replicated(local, &c)? {
                    ReplicaOutcome::Stored { appended } => report.appended += appended,
                    ReplicaOutcome::Forked { origin, seq } => report
                        .refused
                        .push(format!("{origin} is forked at seq {seq}: evidence kept")),
                    ReplicaOutcome::Refused(reason) | ReplicaOutcome::Forgery(reason) => {
                        if c.origin == local && c.checkpoint.seq > store.index().head(local)?.seq() {
                            // Our own log cannot be brought forward from this peer.
                            report.refused.push(reason);
                            report.after = heads_of(&store)?;
                            return Ok(report);
                        }
                        report.refused.push(reason);
                    }
                    ReplicaOutcome::OwnLogBehind { ours, theirs } => report.refused.push(format!(
                        "own log behind ({ours} < {theirs}) while recovering: not expected"
                    )),
                }
            }
            report.refused.truncate(REFUSALS_LISTED_MAX);
        }
    }
    report.after = heads_of(&store)?;
    Ok(report)
}
