//! The node's feeder choice at run time: the pure `sync::feeders::FeederChoice` behind a lock,
//! told what the links see (up, down, announced heads) and, every `FEEDER_TICK`, what the store
//! holds; every change of feeder is logged and wakes the links, which compare their origins and
//! reopen their streams when theirs changed.

use crate::record::Region;
use crate::store::index::Index;
use crate::sync::feeders::{FeederChoice, Millis, PeerId, Reason, Switch};
use crate::sync::peer::{FeederView, PeerConfig};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the store's heads are compared with what peers announced.
pub const FEEDER_TICK: Duration = Duration::from_millis(100);

pub struct Feeders {
    choice: Mutex<FeederChoice>,
    /// Bumped on every change of feeder.
    changed: watch::Sender<u64>,
    started: Instant,
}

impl Feeders {
    pub fn new(local: Region, peers: &[PeerConfig], switch_after: Duration) -> Arc<Feeders> {
        let peers: Vec<(String, Region)> = peers.iter().map(|p| (p.address.clone(), p.region)).collect();
        Arc::new(Feeders {
            choice: Mutex::new(FeederChoice::new(local, &peers, switch_after.as_millis() as Millis)),
            changed: watch::channel(0).0,
            started: Instant::now(),
        })
    }

    fn now(&self) -> Millis {
        self.started.elapsed().as_millis() as Millis
    }

    fn with<T>(&self, f: impl FnOnce(&mut FeederChoice, Millis) -> T) -> T {
        let now = self.now();
        let mut choice = self.choice.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut choice, now)
    }

    /// Logs the changes and wakes the links.
    fn publish(&self, choice: &FeederChoice, switches: &[Switch]) {
        if switches.is_empty() {
            return;
        }
        for s in switches {
            let name = |p: Option<PeerId>| p.map_or("none", |p| choice.address(p)).to_string();
            let (from, to) = (name(s.from), name(s.to));
            match &s.reason {
                Reason::Assigned => tracing::debug!(origin = %s.origin, feeder = %to, "origin fed by a peer"),
                Reason::Stalled { wanted, held } => tracing::warn!(
                    origin = %s.origin, from = %from, to = %to, wanted, held,
                    "feeder fell behind an announced head; another peer feeds the origin"
                ),
                other => tracing::info!(origin = %s.origin, from = %from, to = %to, reason = ?other, "feeder changed"),
            }
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// A link opens a stream: the origins to ask for. A peer counts as up only once its stream
    /// delivers (`up`), so reconnect attempts to an unreachable peer take nothing from others.
    pub fn opening(&self, peer: PeerId) -> BTreeSet<Region> {
        self.with(|c, _| c.streams_of(peer))
    }

    /// A link went down.
    pub fn closed(&self, peer: PeerId) {
        self.with(|c, now| {
            c.link_down(peer);
            let switches = c.tick(now);
            self.publish(c, &switches);
        })
    }

    /// Heads a peer announced (origin code -> (seq, forked)); unknown codes are skipped.
    pub fn announced(&self, peer: PeerId, heads: &HashMap<u32, (u64, bool)>) {
        let heads: Vec<(Region, u64, bool)> = heads
            .iter()
            .filter_map(|(code, (seq, forked))| Region::from_code(*code).ok().map(|o| (o, *seq, *forked)))
            .collect();
        self.with(|c, _| c.announced(peer, heads));
    }

    /// The peer's stream delivered its first message: it is up, and may be chosen.
    pub fn up(&self, peer: PeerId) {
        self.with(|c, now| {
            c.link_up(peer);
            let switches = c.tick(now);
            self.publish(c, &switches);
        })
    }

    /// What one batch on `peer`'s link showed: checkpoints whose signature was checked (origin,
    /// seq), and entries of `entries_of` arrived (one lock for both: this runs per batch).
    pub fn delivered(&self, peer: PeerId, checkpoints: &[(Region, u64)], entries_of: Option<Region>) {
        if checkpoints.is_empty() && entries_of.is_none() {
            return;
        }
        self.with(|c, now| {
            for (origin, seq) in checkpoints {
                c.signed(peer, *origin, *seq);
            }
            if let Some(origin) = entries_of {
                c.received(peer, origin, now);
            }
        });
    }

    pub fn streams_of(&self, peer: PeerId) -> BTreeSet<Region> {
        self.with(|c, _| c.streams_of(peer))
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Tells the choice what the store holds, and re-decides.
    fn tick(&self, index: &Index) -> Result<(), String> {
        let heads = index.heads().map_err(|e| e.to_string())?;
        let forked: BTreeSet<Region> = index
            .forks()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(o, _)| o)
            .collect();
        self.with(|c, now| {
            c.held(heads.iter().map(|(o, h)| (*o, h.seq(), forked.contains(o))), now);
            let switches = c.tick(now);
            self.publish(c, &switches);
        });
        Ok(())
    }
}

impl FeederView for Feeders {
    /// The address of the peer feeding `origin`, and how many times its feeder changed.
    fn feeder_of(&self, origin: Region) -> Option<(String, u64)> {
        self.with(|c, _| c.feeder_of(origin).map(|(p, n)| (c.address(p).to_string(), n)))
    }
}

/// Re-decides feeders every `FEEDER_TICK` until `shutdown` turns true.
pub async fn run_feeders(feeders: Arc<Feeders>, index: Index, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(FEEDER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if let Err(e) = feeders.tick(&index) {
            tracing::warn!(error = %e, "feeder choice: reading our heads failed");
        }
    }
}
