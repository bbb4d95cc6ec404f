//! Feeder choice (pure): one copy per entry. For each origin, this node streams entries from one
//! peer, its *feeder*, and takes only the signed heads the other peers announce in heartbeats.
//! The feeder of an origin is the origin's own node when it is a peer (closest), else the peer
//! that holds the most of it. Another peer takes over when
//! - the feeder's link drops;
//! - the feeder *stalls*: a head the origin signed is known and not held, and nothing of the
//!   origin arrived from it for `switch_after` (entries arriving count, covered or not: a feeder
//!   catching up, or sending a large chunk over a modest link, makes progress and keeps it);
//! - the feeder is *behind*: another peer has carried a checkpoint ahead of everything the feeder
//!   carried, continuously for `switch_after` (a relay that lags gives way to one nearer the origin);
//! - the feeder's heads turn out not to include the origin, or the origin's own node comes back.
//!
//! Only checkpoints whose signature was checked (before they reach this module) make targets or
//! show a peer ahead; bare head numbers in heartbeats only rank peers, so a peer that lies about
//! its heads cannot make an honest feeder look stalled or behind. A peer that failed an origin is
//! not chosen for it again until its link comes back (so it cannot win the origin back and flap),
//! unless every peer that could do better failed it: then they all get another turn. Time is an
//! input; nothing here reads a clock, a socket or a store.
//!
//! Invariants: each origin other than this node's own has at most one feeder, and it is a peer
//! whose link is up; an origin some up peer holds always has a feeder; this node's own origin is
//! asked of every peer (that is how a node restored from an old backup learns that a peer holds
//! more of its log; peers send it only as far as they held it when the stream opened).

use crate::record::Region;
use std::collections::{BTreeMap, BTreeSet};

/// Milliseconds on some monotonic clock (an input).
pub type Millis = i64;

/// A peer, by its position in the node's configured peers.
pub type PeerId = usize;

/// Origins one peer's announcement is taken for; past this the rest of a heartbeat is ignored
/// (a federation has a few dozen origins; a peer announcing thousands is not honest).
pub const ANNOUNCED_ORIGINS_MAX: usize = 1024;

#[derive(Clone, Debug)]
struct PeerSlot {
    address: String,
    region: Region,
    up: bool,
    /// It has announced its heads at least once since its link came up.
    announced_once: bool,
    /// What it announced last: origin -> (head seq, forked).
    announced: BTreeMap<Region, (u64, bool)>,
    /// The highest checkpoint seq per origin it carried since its link came up (signature checked).
    signed: BTreeMap<Region, u64>,
}

#[derive(Clone, Debug, Default)]
struct OriginSlot {
    feeder: Option<PeerId>,
    /// When the feeder took the origin: it has a full window from then.
    since: Millis,
    /// Since when a signed head above what this node holds has been known.
    unmet_since: Option<Millis>,
    /// When this node's head of the origin last advanced.
    progress_at: Millis,
    /// Since when another peer has carried more than the feeder, continuously.
    behind_since: Option<Millis>,
    /// Peers that failed to deliver this origin since their link last came up.
    failed: BTreeSet<PeerId>,
    switches: u64,
}

/// Why an origin changed feeder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// It had none.
    Assigned,
    /// The feeder's link dropped.
    LinkDown,
    /// A signed head is known and not held, and nothing arrived for `switch_after`.
    Stalled { wanted: u64, held: u64 },
    /// Another peer carried more than the feeder for `switch_after`.
    Behind { feeder: u64, peer: u64 },
    /// The feeder announced its heads without this origin, and another peer holds it.
    NotHeld,
    /// The origin's own node is a peer again: straight from the source.
    Direct,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switch {
    pub origin: Region,
    pub from: Option<PeerId>,
    pub to: Option<PeerId>,
    pub reason: Reason,
}

/// The choice of feeders at one node.
#[derive(Clone, Debug)]
pub struct FeederChoice {
    local: Region,
    switch_after: Millis,
    peers: Vec<PeerSlot>,
    origins: BTreeMap<Region, OriginSlot>,
    /// This node's heads: origin -> (seq, forked).
    held: BTreeMap<Region, (u64, bool)>,
}

/// A stable pseudo-random rank of `peer` for `origin` at `local` (rendezvous hashing, FNV-1a), so
/// relayed origins spread over the peers that hold them instead of all landing on the first.
fn rank(local: Region, origin: Region, address: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in local
        .code()
        .to_be_bytes()
        .iter()
        .chain(origin.code().to_be_bytes().iter())
        .chain(address.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl FeederChoice {
    /// `peers`: (address, region) in configuration order; `switch_after`: how long an announced
    /// head may stay unheld before the feeder is replaced.
    pub fn new(local: Region, peers: &[(String, Region)], switch_after: Millis) -> FeederChoice {
        FeederChoice {
            local,
            switch_after,
            peers: peers
                .iter()
                .map(|(address, region)| PeerSlot {
                    address: address.clone(),
                    region: *region,
                    up: false,
                    announced_once: false,
                    announced: BTreeMap::new(),
                    signed: BTreeMap::new(),
                })
                .collect(),
            origins: BTreeMap::new(),
            held: BTreeMap::new(),
        }
    }

    pub fn address(&self, peer: PeerId) -> &str {
        &self.peers[peer].address
    }

    /// The peer's link is up (a stream is being opened): it may be chosen, and origins it failed
    /// get a new chance.
    pub fn link_up(&mut self, peer: PeerId) {
        let p = &mut self.peers[peer];
        p.up = true;
        p.announced_once = false;
        for slot in self.origins.values_mut() {
            slot.failed.remove(&peer);
        }
    }

    /// The peer's link is down; what it announced no longer counts.
    pub fn link_down(&mut self, peer: PeerId) {
        let p = &mut self.peers[peer];
        p.up = false;
        p.announced_once = false;
        p.announced.clear();
        p.signed.clear();
    }

    /// The heads a peer announced (origin, seq, forked): they rank peers, nothing more.
    pub fn announced(&mut self, peer: PeerId, heads: impl IntoIterator<Item = (Region, u64, bool)>) {
        let p = &mut self.peers[peer];
        p.announced = heads
            .into_iter()
            .take(ANNOUNCED_ORIGINS_MAX)
            .map(|(o, s, f)| (o, (s, f)))
            .collect();
        p.announced_once = true;
    }

    /// `peer` carried a checkpoint of `origin` at `seq` whose signature was checked: the origin
    /// holds that much, so this node should soon, and `peer` may hold it.
    pub fn signed(&mut self, peer: PeerId, origin: Region, seq: u64) {
        let best = self.peers[peer].signed.entry(origin).or_default();
        *best = (*best).max(seq);
    }

    /// Entries of `origin` arrived on `peer`'s link (not yet covered by a checkpoint, perhaps):
    /// when it is the feeder, that is progress, so a large chunk on a modest link is not a stall.
    pub fn received(&mut self, peer: PeerId, origin: Region, now: Millis) {
        if let Some(slot) = self.origins.get_mut(&origin) {
            if slot.feeder == Some(peer) {
                slot.progress_at = slot.progress_at.max(now);
            }
        }
    }

    /// This node's heads (origin, seq, forked), as its store holds them now.
    pub fn held(&mut self, heads: impl IntoIterator<Item = (Region, u64, bool)>, now: Millis) {
        let heads: BTreeMap<Region, (u64, bool)> = heads.into_iter().map(|(o, s, f)| (o, (s, f))).collect();
        for (origin, (seq, _)) in &heads {
            if self.held.get(origin).is_none_or(|(before, _)| seq > before) {
                self.origins.entry(*origin).or_default().progress_at = now;
            }
        }
        self.held = heads;
    }

    /// The highest signed seq of `origin` carried by an up peer, and by whom.
    fn signed_max(&self, origin: Region, exclude: &BTreeSet<PeerId>) -> Option<(u64, PeerId)> {
        (0..self.peers.len())
            .filter(|i| self.peers[*i].up && !exclude.contains(i))
            .filter_map(|i| self.peers[i].signed.get(&origin).map(|s| (*s, i)))
            .max_by_key(|(s, i)| (*s, std::cmp::Reverse(*i)))
    }

    /// Whether `peer` holds `origin` as far as we know: it announced it, or it is its node.
    fn holds(&self, peer: PeerId, origin: Region) -> bool {
        let p = &self.peers[peer];
        p.region == origin || p.announced.get(&origin).is_some_and(|(_, forked)| !forked)
    }

    /// The best up peer for `origin`, not in `exclude`: its own node first, then peers known to
    /// hold it (most first), then peers that have not announced yet; ties by rendezvous rank.
    fn best(&self, origin: Region, exclude: &BTreeSet<PeerId>) -> Option<PeerId> {
        self.best_where(origin, exclude, |_| true)
    }

    /// `best` among the peers that also satisfy `also`.
    fn best_where(&self, origin: Region, exclude: &BTreeSet<PeerId>, also: impl Fn(PeerId) -> bool) -> Option<PeerId> {
        let held = self.held.get(&origin).map_or(0, |h| h.0);
        (0..self.peers.len())
            .filter(|i| self.peers[*i].up && !exclude.contains(i))
            .filter(|i| self.holds(*i, origin) || !self.peers[*i].announced_once)
            .filter(|i| also(*i))
            .min_by_key(|i| {
                let p = &self.peers[*i];
                let seq = p.announced.get(&origin).map_or(0, |a| a.0);
                (
                    p.region != origin,
                    !self.holds(*i, origin),
                    // Behind what we hold is no better than unknown.
                    std::cmp::Reverse(seq.max(held)),
                    rank(self.local, origin, &p.address),
                )
            })
    }

    /// Re-decides feeders; returns the changes.
    pub fn tick(&mut self, now: Millis) -> Vec<Switch> {
        let mut known: BTreeSet<Region> = self.held.keys().copied().collect();
        for p in self.peers.iter().filter(|p| p.up) {
            known.extend(p.announced.keys().copied());
            known.insert(p.region);
        }
        known.extend(self.origins.iter().filter(|(_, s)| s.feeder.is_some()).map(|(o, _)| *o));
        known.remove(&self.local);
        // What nobody holds or announces any more is forgotten (the slots stay bounded by what
        // the store and the up peers' bounded announcements name).
        self.origins.retain(|o, _| known.contains(o));
        let mut out = Vec::new();
        for origin in known.iter().copied() {
            if let Some((to, reason)) = self.decide(origin, now) {
                let slot = self.origins.entry(origin).or_default();
                let from = slot.feeder;
                if from.is_some() {
                    slot.switches += 1;
                }
                slot.feeder = to;
                slot.since = now;
                out.push(Switch {
                    origin,
                    from,
                    to,
                    reason,
                });
            }
        }
        out
    }

    /// A new feeder for `origin` and why, if it should change.
    fn decide(&mut self, origin: Region, now: Millis) -> Option<(Option<PeerId>, Reason)> {
        let (held, forked) = self.held.get(&origin).copied().unwrap_or((0, false));
        // What is known of the origin beyond what we hold, and who carries the most of it.
        let wanted = self
            .signed_max(origin, &BTreeSet::new())
            .filter(|(s, _)| *s > held && !forked);
        let slot = self.origins.entry(origin).or_default();
        slot.unmet_since = wanted.and(slot.unmet_since.or(Some(now)));
        let slot = slot.clone();
        let Some(feeder) = slot.feeder else {
            // When every holder failed it, they all get another turn rather than none.
            let to = self
                .best(origin, &slot.failed)
                .or_else(|| self.best(origin, &BTreeSet::new()))?;
            return Some((Some(to), Reason::Assigned));
        };
        if !self.peers[feeder].up {
            let to = self
                .best(origin, &slot.failed)
                .or_else(|| self.best(origin, &BTreeSet::new()));
            return Some((to, Reason::LinkDown));
        }
        if forked {
            return None;
        }
        let window_from = |t: Millis| t.max(slot.since);
        if let (Some((want, _)), Some(unmet)) = (wanted, slot.unmet_since) {
            if now - window_from(unmet.max(slot.progress_at)) > self.switch_after {
                if let Some((to, retry)) = self.better(origin, feeder, held, &slot.failed) {
                    self.failed(origin, feeder, retry);
                    return Some((Some(to), Reason::Stalled { wanted: want, held }));
                }
            }
        }
        // Behind: another peer (not failed) has carried more than the feeder, continuously.
        let mut exclude = slot.failed.clone();
        exclude.insert(feeder);
        let feeder_at = self.peers[feeder].signed.get(&origin).copied().unwrap_or(0);
        let ahead = self
            .signed_max(origin, &exclude)
            .filter(|(s, _)| *s > feeder_at && *s > held && self.peers[feeder].region != origin);
        let s = self.origins.get_mut(&origin).expect("slot made above");
        s.behind_since = ahead.and(s.behind_since.or(Some(now)));
        if let (Some((peer_at, to)), Some(since)) = (ahead, s.behind_since) {
            if now - window_from(since) > self.switch_after {
                s.behind_since = None;
                return Some((
                    Some(to),
                    Reason::Behind {
                        feeder: feeder_at,
                        peer: peer_at,
                    },
                ));
            }
        }
        let f = &self.peers[feeder];
        if f.announced_once && !self.holds(feeder, origin) {
            if let Some(to) = self.best(origin, &slot.failed).filter(|p| self.holds(*p, origin)) {
                return Some((Some(to), Reason::NotHeld));
            }
        }
        if f.region != origin {
            let direct = (0..self.peers.len())
                .find(|i| self.peers[*i].region == origin && self.peers[*i].up && !slot.failed.contains(i));
            if let Some(to) = direct {
                return Some((Some(to), Reason::Direct));
            }
        }
        None
    }

    /// A peer other than `feeder` that carried more of `origin` than `held`, not among `failed`;
    /// when all such peers failed already, any of them (`true`: they get another turn).
    fn better(&self, origin: Region, feeder: PeerId, held: u64, failed: &BTreeSet<PeerId>) -> Option<(PeerId, bool)> {
        // Chosen among the peers that carried more, not the best-ranked one checked afterwards
        // (a peer announcing big bare heads must not hide one that can deliver).
        let carried_more = |p: PeerId| self.peers[p].signed.get(&origin).is_some_and(|s| *s > held);
        let mut exclude = failed.clone();
        exclude.insert(feeder);
        if let Some(to) = self.best_where(origin, &exclude, carried_more) {
            return Some((to, false));
        }
        self.best_where(origin, &BTreeSet::from([feeder]), carried_more)
            .map(|to| (to, true))
    }

    /// `feeder` failed `origin`; `retry`: the others get another turn.
    fn failed(&mut self, origin: Region, feeder: PeerId, retry: bool) {
        let s = self.origins.get_mut(&origin).expect("slot made before");
        if retry {
            s.failed.clear();
        }
        s.failed.insert(feeder);
    }

    /// The origins `peer` should stream: those it feeds, and this node's own.
    pub fn streams_of(&self, peer: PeerId) -> BTreeSet<Region> {
        let mut out: BTreeSet<Region> = self
            .origins
            .iter()
            .filter(|(_, s)| s.feeder == Some(peer))
            .map(|(o, _)| *o)
            .collect();
        out.insert(self.local);
        out
    }

    /// The feeder of `origin` and how many times it changed.
    pub fn feeder_of(&self, origin: Region) -> Option<(PeerId, u64)> {
        let slot = self.origins.get(&origin)?;
        slot.feeder.map(|f| (f, slot.switches))
    }
}

#[cfg(test)]
#[path = "feeders_tests.rs"]
mod tests;
