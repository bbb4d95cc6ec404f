use super::*;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PROVINCES: [&str; 10] = [
    "330000", "320000", "310000", "110000", "440000", "510000", "420000", "370000", "120000", "500000",
];

fn r(i: usize) -> Region {
    Region::parse(PROVINCES[i]).expect("province")
}

fn peers(ids: &[usize]) -> Vec<(String, Region)> {
    ids.iter().map(|i| (format!("node-{i}"), r(*i))).collect()
}

const SWITCH: Millis = 2000;

/// Node 0 with peers `ids`, all up, holding `origin` up to `held`; each peer announces the
/// heads given for it (origin, seq); the first choice made.
fn settled(ids: &[usize], origin: usize, held: u64, announced: &[u64]) -> FeederChoice {
    let mut c = FeederChoice::new(r(0), &peers(ids), SWITCH);
    for p in 0..ids.len() {
        c.link_up(p);
    }
    c.held([(r(origin), held, false)], 0);
    for (p, seq) in announced.iter().enumerate() {
        c.announced(p, [(r(origin), *seq, false)]);
    }
    c.tick(0);
    c
}

#[test]
fn the_origins_own_node_feeds_it_and_relays_spread_the_rest() {
    // Node 0 pulls from 1, 2 and 3; origins 4..9 reach it only through relays.
    let mut c = FeederChoice::new(r(0), &peers(&[1, 2, 3]), SWITCH);
    for p in 0..3 {
        c.link_up(p);
    }
    let all: Vec<(Region, u64, bool)> = (0..10).map(|o| (r(o), 100, false)).collect();
    for p in 0..3 {
        c.announced(p, all.clone());
    }
    c.tick(0);
    for (p, id) in [(0, 1), (1, 2), (2, 3)] {
        assert_eq!(
            c.feeder_of(r(id)).map(|f| f.0),
            Some(p),
            "origin {id} from its own node"
        );
    }
    let mut load = [0usize; 3];
    for o in 4..10 {
        load[c.feeder_of(r(o)).expect("fed").0] += 1;
    }
    assert!(
        load.iter().all(|n| *n < 6),
        "relayed origins spread over the peers: {load:?}"
    );
    // Each origin is streamed from exactly one peer, our own from all of them.
    for o in 1..10 {
        let n = (0..3).filter(|p| c.streams_of(*p).contains(&r(o))).count();
        assert_eq!(n, 1, "origin {o}");
    }
    assert!((0..3).all(|p| c.streams_of(p).contains(&r(0))));
}

#[test]
fn a_dropped_link_hands_its_origins_over_and_they_come_back_when_it_heals() {
    let mut c = FeederChoice::new(r(0), &peers(&[1, 2]), SWITCH);
    c.link_up(0);
    c.link_up(1);
    c.announced(0, [(r(1), 10, false), (r(2), 10, false)]);
    c.announced(1, [(r(1), 10, false), (r(2), 10, false)]);
    c.tick(0);
    assert_eq!(c.feeder_of(r(1)), Some((0, 0)));
    c.link_down(0);
    let switches = c.tick(10);
    assert_eq!(
        switches,
        vec![Switch {
            origin: r(1),
            from: Some(0),
            to: Some(1),
            reason: Reason::LinkDown
        }]
    );
    assert_eq!(c.feeder_of(r(1)), Some((1, 1)));
    c.link_up(0);
    let switches = c.tick(20);
    assert_eq!(switches.len(), 1);
    assert_eq!(switches[0].reason, Reason::Direct);
    assert_eq!(c.feeder_of(r(1)), Some((0, 2)));
    // No peer up: no feeder, and the origin is streamed from nobody.
    c.link_down(0);
    c.link_down(1);
    c.tick(30);
    assert_eq!(c.feeder_of(r(1)), None);
    assert_eq!(c.streams_of(0), BTreeSet::from([r(0)]));
}

#[test]
fn a_feeder_that_delivers_nothing_of_a_signed_head_is_replaced_and_not_taken_back() {
    let mut c = settled(&[1, 2], 1, 5, &[5, 5]);
    assert_eq!(c.feeder_of(r(1)).map(|f| f.0), Some(0));
    // Peer 1 (a relay) carries the origin's checkpoint at seq 9; the direct feeder delivers it
    // slowly: progress, so no switch however long it takes.
    c.announced(1, [(r(1), 9, false)]);
    c.signed(1, r(1), 9);
    for (t, held) in [(1000, 6), (2500, 7), (4000, 8)] {
        c.held([(r(1), held, false)], t);
        assert!(c.tick(t + SWITCH - 1).is_empty(), "progressing at {t}");
    }
    // Then nothing arrives for longer than the window: stalled.
    let switches = c.tick(4000 + SWITCH + 1);
    assert_eq!(
        switches.iter().map(|s| (s.to, s.reason.clone())).collect::<Vec<_>>(),
        vec![(Some(1), Reason::Stalled { wanted: 9, held: 8 })]
    );
    // The failed direct peer does not win it back while its link stays up.
    c.held([(r(1), 9, false)], 7000);
    assert!(c.tick(20_000).is_empty());
    assert_eq!(c.feeder_of(r(1)).map(|f| f.0), Some(1));
    // Once its link comes back it is preferred again.
    c.link_down(0);
    c.link_up(0);
    assert_eq!(c.tick(30_000)[0].reason, Reason::Direct);
}

#[test]
fn a_relay_that_lags_gives_way_to_one_that_carries_more() {
    // Origin 5 is not a peer; relays 0 and 1 hold it.
    let mut c = settled(&[1, 2], 5, 10, &[10, 10]);
    let first = c.feeder_of(r(5)).expect("fed").0;
    let other = 1 - first;
    // Both carry the same: no switch.
    let mut t = 0;
    for k in 0..5u64 {
        t += 500;
        c.signed(other, r(5), 20 + 10 * k);
        c.signed(first, r(5), 20 + 10 * k);
        c.held([(r(5), 20 + 10 * k, false)], t);
        assert!(c.tick(t).is_empty());
    }
    // Then the other keeps carrying more than the feeder (which still delivers, slowly).
    for k in 0..10u64 {
        t += 500;
        c.signed(other, r(5), 100 + 50 * k);
        c.held([(r(5), 70 + k, false)], t);
        let s = c.tick(t);
        if !s.is_empty() {
            assert!(matches!(s[0].reason, Reason::Behind { .. }), "{s:?}");
            assert_eq!(s[0].to, Some(other));
            assert!(k >= 4, "only after the window: at step {k}");
            return;
        }
    }
    panic!("the lagging relay kept the origin");
}

#[test]
fn bare_head_numbers_and_forked_origins_move_nothing() {
    let mut c = FeederChoice::new(r(0), &peers(&[1, 2]), SWITCH);
    c.link_up(0);
    c.link_up(1);
    c.held([(r(3), 5, false), (r(4), 5, true)], 0);
    c.announced(0, [(r(3), 5, false), (r(4), 9, false)]);
    c.announced(1, [(r(3), 5, false), (r(4), 9, false)]);
    c.tick(0);
    let f3 = c.feeder_of(r(3)).expect("fed").0;
    let f4 = c.feeder_of(r(4)).expect("fed").0;
    // The forked origin's signed head is never a target; a bare announced head never is.
    c.announced(1 - f4, [(r(3), 5, false), (r(4), 20, false)]);
    c.signed(1 - f4, r(4), 20);
    c.announced(1 - f3, [(r(3), 50, false), (r(4), 20, false)]);
    assert!(c.tick(100_000).is_empty());
    assert_eq!(c.feeder_of(r(3)).map(|f| f.0), Some(f3));
}

#[test]
fn a_peer_that_carries_more_than_it_delivers_cannot_starve_the_origin() {
    // Peer 0 is honest; peer 1 relays the origin's latest checkpoint but never its entries.
    let mut c = settled(&[2, 3], 5, 5, &[5, 1000]);
    assert_eq!(
        c.feeder_of(r(5)).map(|f| f.0),
        Some(1),
        "the claim wins the first choice"
    );
    let mut now = 0;
    let mut held = 5;
    for round in 0..20u64 {
        // The origin signs a new group; both carry its checkpoint, the honest peer its entries.
        let signed = 6 + round;
        c.announced(0, [(r(5), signed, false)]);
        c.signed(0, r(5), signed);
        c.signed(1, r(5), signed);
        now += 500;
        if c.feeder_of(r(5)).map(|f| f.0) == Some(0) {
            held = signed;
        }
        c.held([(r(5), held, false)], now);
        c.tick(now);
    }
    assert_eq!(c.feeder_of(r(5)).map(|f| f.0), Some(0));
    assert!(held >= 20, "the honest peer delivered after one window: held {held}");
}

#[test]
fn a_feeder_that_turns_out_not_to_hold_the_origin_gives_it_to_one_that_does() {
    let mut c = FeederChoice::new(r(0), &peers(&[1, 2]), SWITCH);
    c.held([(r(5), 3, false)], 0);
    c.link_up(0);
    c.link_up(1);
    // Before any announcement an up peer may be given a held origin.
    c.tick(0);
    let first = c.feeder_of(r(5)).expect("assigned").0;
    c.announced(first, [(r(1 + first), 1, false)]);
    c.announced(1 - first, [(r(5), 3, false)]);
    let s = c.tick(20);
    assert_eq!(
        s.iter().map(|s| s.reason.clone()).collect::<Vec<_>>(),
        vec![Reason::NotHeld]
    );
    assert_eq!(c.feeder_of(r(5)).map(|f| f.0), Some(1 - first));
}

/// A federation of nodes running the engine over a simulated network: per link a stream that
/// sends, from where it was opened, what the peer holds of the origins it was asked for, in
/// bounded steps; heartbeats announce heads; links fail and heal.
struct Sim {
    n: usize,
    /// nodes[x]: its choice and its peers (node ids, in the order its choice knows them).
    choice: Vec<FeederChoice>,
    peers: Vec<Vec<usize>>,
    heads: Vec<Vec<u64>>,
    /// (x, peer position) -> the open stream: origins asked for, next seq to send per origin and
    /// last seq that may be sent per origin (x's own only as far as the peer held it at the open).
    streams: BTreeMap<(usize, usize), SimStream>,
    up: BTreeSet<(usize, usize)>,
    received: Vec<u64>,
    duplicates: Vec<u64>,
}

/// An open stream of the simulation: origins asked for, next seq to send and last seq that may
/// be sent, per origin.
type SimStream = (BTreeSet<Region>, Vec<u64>, Vec<u64>);

/// Entries a stream sends per origin per step.
const SIM_STEP_ENTRIES: u64 = 40;
const SIM_STEP_MS: Millis = 100;
const SIM_HEARTBEAT_STEPS: u64 = 5;

impl Sim {
    fn new(n: usize, edges: &BTreeSet<(usize, usize)>) -> Sim {
        let links: Vec<Vec<usize>> = (0..n)
            .map(|x| {
                (0..n)
                    .filter(|y| edges.contains(&(x.min(*y), x.max(*y))) && *y != x)
                    .collect()
            })
            .collect();
        Sim {
            n,
            choice: (0..n)
                .map(|x| FeederChoice::new(r(x), &peers(&links[x]), SWITCH))
                .collect(),
            peers: links,
            heads: vec![vec![0; n]; n],
            streams: BTreeMap::new(),
            up: edges.clone(),
            received: vec![0; n],
            duplicates: vec![0; n],
        }
    }

    fn link_is_up(&self, a: usize, b: usize) -> bool {
        self.up.contains(&(a.min(b), a.max(b)))
    }

    fn step(&mut self, step: u64, rng: &mut StdRng) {
        let now = step as Millis * SIM_STEP_MS;
        for x in 0..self.n {
            for p in 0..self.peers[x].len() {
                let y = self.peers[x][p];
                let key = (x, p);
                if !self.link_is_up(x, y) {
                    if self.streams.remove(&key).is_some() {
                        self.choice[x].link_down(p);
                    }
                    continue;
                }
                if !self.streams.contains_key(&key) {
                    self.choice[x].link_up(p);
                    self.choice[x].tick(now);
                }
                let want = self.choice[x].streams_of(p);
                if self.streams.get(&key).is_none_or(|(asked, _, _)| *asked != want) {
                    // Opened or reopened with what it should stream, from what x holds now.
                    let mut until = vec![u64::MAX; self.n];
                    until[x] = self.heads[y][x];
                    self.streams.insert(key, (want, self.heads[x].clone(), until));
                }
                if step.is_multiple_of(SIM_HEARTBEAT_STEPS) {
                    // Honest peers: every head comes with the origin's checkpoint.
                    let heads: Vec<(Region, u64, bool)> =
                        (0..self.n).map(|o| (r(o), self.heads[y][o], false)).collect();
                    for (o, seq, _) in &heads {
                        self.choice[x].signed(p, *o, *seq);
                    }
                    self.choice[x].announced(p, heads);
                }
            }
        }
        // Data moves, links in random order.
        let mut keys: Vec<(usize, usize)> = self.streams.keys().copied().collect();
        for i in (1..keys.len()).rev() {
            keys.swap(i, rng.random_range(0..=i));
        }
        for (x, p) in keys {
            let y = self.peers[x][p];
            let (asked, next, until) = self.streams.get_mut(&(x, p)).expect("listed");
            for origin in asked.iter() {
                let o = (0..self.n).find(|i| r(*i) == *origin).expect("a node's region");
                let upto = self.heads[y][o].min(next[o] + SIM_STEP_ENTRIES).min(until[o]);
                if upto > next[o] {
                    let sent = upto - next[o];
                    let new = upto.saturating_sub(self.heads[x][o]);
                    self.received[x] += sent;
                    self.duplicates[x] += sent - new.min(sent);
                    self.heads[x][o] = self.heads[x][o].max(upto);
                    next[o] = upto;
                }
            }
        }
        for x in 0..self.n {
            let held: Vec<(Region, u64, bool)> = (0..self.n).map(|o| (r(o), self.heads[x][o], false)).collect();
            self.choice[x].held(held, now);
            self.choice[x].tick(now);
        }
    }

    fn converged(&self) -> bool {
        (0..self.n).all(|x| (0..self.n).all(|o| self.heads[x][o] == self.heads[o][o]))
    }
}

fn topology() -> impl Strategy<Value = (usize, BTreeSet<(usize, usize)>, u64)> {
    (4usize..=10, any::<u64>()).prop_map(|(n, seed)| {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut edges = BTreeSet::new();
        // A random spanning tree, then some extra edges.
        for x in 1..n {
            let y = rng.random_range(0..x);
            edges.insert((y, x));
        }
        let extra = rng.random_range(0..=n * (n - 1) / 2);
        for _ in 0..extra {
            let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
            if a != b {
                edges.insert((a.min(b), a.max(b)));
            }
        }
        (n, edges, seed)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn any_topology_converges_with_one_feeder_per_origin_once_links_are_stable(
        (n, edges, seed) in topology(),
        fault_steps in 50u64..300,
    ) {
        let mut sim = Sim::new(n, &edges);
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        let all_edges: Vec<(usize, usize)> = edges.iter().copied().collect();
        let mut step = 0u64;
        // Faults: origins publish, links fail and heal at random.
        while step < fault_steps {
            for o in 0..n {
                if rng.random_bool(0.5) {
                    sim.heads[o][o] += rng.random_range(1..30);
                }
            }
            if rng.random_bool(0.3) {
                let e = all_edges[rng.random_range(0..all_edges.len())];
                if !sim.up.remove(&e) {
                    sim.up.insert(e);
                }
            }
            sim.step(step, &mut rng);
            step += 1;
        }
        // Stable: every link up, publishing goes on for a while, then stops.
        sim.up = edges.clone();
        let stable_from = step;
        let (received0, duplicates0) = (sim.received.clone(), sim.duplicates.clone());
        let mut needed = vec![0u64; n];
        let limit = step + 2000;
        while step < limit && (step < stable_from + 200 || !sim.converged()) {
            if step < stable_from + 100 {
                for o in 0..n {
                    if rng.random_bool(0.5) {
                        let k = rng.random_range(1..30);
                        sim.heads[o][o] += k;
                        for (x, need) in needed.iter_mut().enumerate() {
                            if x != o {
                                *need += k;
                            }
                        }
                    }
                }
            }
            sim.step(step, &mut rng);
            step += 1;
        }
        prop_assert!(sim.converged(), "not converged after {} stable steps: {:?}", step - stable_from, sim.heads);
        for x in 0..n {
            for o in (0..n).filter(|o| *o != x) {
                let feeders: Vec<usize> = (0..sim.peers[x].len())
                    .filter(|p| sim.choice[x].streams_of(*p).contains(&r(o)))
                    .map(|p| sim.peers[x][p])
                    .collect();
                prop_assert_eq!(feeders.len(), 1, "node {} origin {}: fed by {:?}", x, o, feeders);
                if sim.peers[x].contains(&o) {
                    prop_assert_eq!(feeders[0], o, "node {} takes origin {} from its own node", x, o);
                }
            }
            // Once stable, each entry arrives about once: what was still missing at the heal,
            // plus what was published after it, bounds what should arrive.
            let stable_received = sim.received[x] - received0[x];
            let stable_duplicates = sim.duplicates[x] - duplicates0[x];
            prop_assert!(
                stable_duplicates * 20 <= stable_received.max(needed[x]),
                "node {}: {} duplicates of {} received once links were stable",
                x, stable_duplicates, stable_received
            );
        }
    }
}

#[test]
fn entries_arriving_from_the_feeder_are_progress_even_before_a_checkpoint_covers_them() {
    let mut c = settled(&[1, 2], 1, 5, &[5, 5]);
    assert_eq!(c.feeder_of(r(1)).map(|f| f.0), Some(0));
    // A large chunk: the relay carries the head at 300, the feeder's entries trickle in, and
    // nothing is covered (held) for far longer than the window.
    c.signed(1, r(1), 300);
    for t in (100..10 * SWITCH).step_by(500) {
        c.received(0, r(1), t);
        assert!(c.tick(t).is_empty(), "entries arriving at {t}: not a stall");
    }
    // Entries on another link are not the feeder's progress.
    let end = 10 * SWITCH + SWITCH + 500;
    c.received(1, r(1), end);
    let s = c.tick(end);
    assert_eq!(s.len(), 1);
    assert!(matches!(s[0].reason, Reason::Stalled { .. }), "{s:?}");
}

#[test]
fn the_replacement_is_chosen_among_the_peers_that_carried_more() {
    // Peer 0 feeds and stalls; peer 1 announces a big bare head and carries no checkpoint; peer 2
    // carried the origin's signed head. Peer 1 ranks first, and must not hide peer 2.
    let mut c = settled(&[2, 3, 4], 5, 5, &[5, 9_999, 8]);
    // Whoever got it first, make peer 0 the feeder by taking the others down and up.
    if c.feeder_of(r(5)).map(|f| f.0) != Some(0) {
        c.link_down(1);
        c.link_down(2);
        c.tick(1);
        c.link_up(1);
        c.link_up(2);
        c.announced(1, [(r(5), 9_999, false)]);
        c.announced(2, [(r(5), 8, false)]);
    }
    assert_eq!(c.feeder_of(r(5)).map(|f| f.0), Some(0));
    c.signed(2, r(5), 8);
    c.tick(2);
    let s: Vec<Switch> = c.tick(SWITCH + 10).into_iter().filter(|s| s.origin == r(5)).collect();
    assert_eq!(s.iter().map(|s| s.to).collect::<Vec<_>>(), vec![Some(2)], "{s:?}");
}
