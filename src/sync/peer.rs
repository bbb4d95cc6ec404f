//! What a sync link needs of a peer, as plain data and one small trait: how to open a stream of
//! what we lack, and what the stream carries. The transport (tonic over mutual TLS, or an
//! in-process channel in tests that drops, delays, reorders and partitions) implements
//! `PeerConnector`; the driver knows nothing else of it. Also the configuration and the state of
//! a link that operators see.

use super::Batch;
use crate::record::Region;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// Bytes of uncovered entries buffered per link (all origins together).
    pub pending_bytes_max: u64,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// No message (batch or heartbeat) for this long: the link is dead, reconnect.
    pub silence_max: Duration,
    /// One copy per entry: each origin is streamed from one peer, the feeder (`sync::feeders`);
    /// off, every peer streams every origin and duplicates are dropped at the store.
    pub feeder_choice: bool,
    /// An announced head not held this long after: another peer becomes the feeder.
    pub feeder_switch: Duration,
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
    /// Messages (batches and heartbeats) received on this link.
    pub messages_received: u64,
    /// Checkpoints this peer carried that were refused as forgery attempts (bad signature,
    /// dated ahead of our clock, before what they cover, or back-dated).
    pub forgeries_total: u64,
    /// Bytes of entries received, and entries dropped because this node held them already.
    pub bytes_received: u64,
    pub duplicates_dropped: u64,
    /// The same counts per origin code.
    pub origins: BTreeMap<u32, OriginCounts>,
}

/// What one link delivered of one origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OriginCounts {
    pub entries: u64,
    pub bytes: u64,
    pub duplicates: u64,
}

pub type PeerStates = Arc<Mutex<HashMap<String, PeerState>>>;

/// What operators see of the feeder choice: per origin, the address of the peer it is streamed
/// from and how many times that changed.
pub trait FeederView: Send + Sync {
    fn feeder_of(&self, origin: Region) -> Option<(String, u64)>;
}

/// What we ask a peer for: everything past `have` (origin -> next seq we need), of the origins
/// in `streams` only when it is set (the others the peer only announces).
#[derive(Clone, Debug, Default)]
pub struct SyncOpen {
    pub have: BTreeMap<Region, u64>,
    pub batch_entries_max: u32,
    pub batch_bytes_max: u32,
    pub streams: Option<BTreeSet<Region>>,
}

/// One message of a peer's stream, converted from the wire.
#[derive(Clone, Debug)]
pub enum Incoming {
    Batch(Batch),
    /// The peer's heads (origin code -> (seq, forked)) and the signed checkpoints it carries, as
    /// one checkpoint-only batch per origin.
    Heartbeat {
        heads: HashMap<u32, (u64, bool)>,
        checkpoints: Vec<Batch>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The link failed (connect, TLS, transport, the peer closed): reconnect later.
    #[error("{0}")]
    Link(String),
    /// The peer sent something that cannot be ours to decode: a fault of the peer.
    #[error("faulty peer: {0}")]
    Malformed(String),
}

pub type PeerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PeerError>> + Send + 'a>>;

/// An open stream from a peer. `Ok(None)` when the peer ends it.
pub trait PeerStream: Send {
    fn next(&mut self) -> PeerFuture<'_, Option<Incoming>>;
}

/// Opens streams to one peer.
pub trait PeerConnector: Send + Sync {
    fn open(&self, request: SyncOpen) -> PeerFuture<'_, Box<dyn PeerStream>>;
    /// The link failed: a connection kept for the next stream must not be reused.
    fn reset(&self) {}
}
