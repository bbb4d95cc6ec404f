//! The real engine (driver, link receiver, judge, store and writer, sender) against in-process
//! peers reached through `PeerConnector`: honest ones behind links that drop, delay, reorder and
//! partition, and hostile ones among them (blanked bytes, forged signatures, back-dated
//! checkpoints signed with a stolen key, an equivocating origin). Property: once links heal, the
//! node holds every honest origin's log byte for byte, an equivocating origin is marked forked
//! and what is held of it is one of its branches, no honest peer is blamed for a forgery, every
//! forger is, and `cxnode verify` finds the store clean.

use super::{run_peer, Link};
use crate::log::testkeys::{TestKey, TestVerifier};
use crate::log::{ChainHead, Checkpoint, CheckpointSigner, Entry};
use crate::record::{parse_operation, RecordGenerator, Region};
use crate::store::journal::{Frame, JournalError, JournalPos};
use crate::store::writer::{self, WriterLimits};
use crate::store::{Store, StoreConfig};
use crate::sync::peer::{
    DriverLimits, Incoming, PeerConfig, PeerConnector, PeerError, PeerFuture, PeerStates, PeerStream, SyncOpen,
};
use crate::sync::sender::{SendLimits, Sender};
use crate::sync::{Batch, Covered};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a case may take to converge once links are healed.
const CONVERGE_WITHIN: Duration = Duration::from_secs(40);

fn zj() -> Region {
    Region::parse("330000").expect("province")
}
fn js() -> Region {
    Region::parse("320000").expect("province")
}
fn sh() -> Region {
    Region::parse("310000").expect("province")
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A real origin store of `groups` groups of generated operations; returns its journal's frames.
fn origin_log(dir: &Path, origin: Region, seed: u64, groups: usize, per_group: usize) -> Vec<Frame> {
    let mut cfg = StoreConfig::new(dir);
    cfg.local = Some(origin);
    let (mut store, _) = Store::open(&cfg).expect("origin store");
    let mut gen = RecordGenerator::new(seed, origin);
    for _ in 0..groups {
        let ops: Vec<_> = (0..per_group)
            .map(|_| parse_operation(gen.next_line().as_bytes()).expect("generated lines are valid"))
            .collect();
        store
            .commit_local(origin, &ops, &TestKey(origin), now_micros())
            .expect("commit");
    }
    let mut frames = Vec::new();
    store
        .reader()
        .scan(JournalPos(0), store.journal_end(), |_, _, f| {
            frames.push(f);
            Ok::<_, JournalError>(true)
        })
        .expect("scan");
    frames
}

fn entries_of(frames: &[Frame]) -> Vec<Entry> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Entry(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn head_of(entries: &[Entry]) -> ChainHead {
    entries.last().map_or_else(ChainHead::default, |e| ChainHead {
        next_seq: e.seq + 1,
        head_hash: e.hash,
    })
}

/// The frames up to and including the first checkpoint: the origin's first group.
fn first_group(frames: &[Frame]) -> Vec<Frame> {
    let end = frames
        .iter()
        .position(|f| matches!(f, Frame::Checkpoint(_)))
        .expect("a group ends with a checkpoint");
    frames[..=end].to_vec()
}

fn first_checkpoint(frames: &[Frame]) -> Checkpoint {
    match first_group(frames).pop() {
        Some(Frame::Checkpoint(c)) => c,
        _ => unreachable!("first_group ends with a checkpoint"),
    }
}

/// `n` entries of `origin` after `head` (valid operations from generator `seed`) and one
/// checkpoint over them dated `at`, signed by `key`.
fn branch(origin: Region, head: ChainHead, n: u64, at: i64, key: &dyn CheckpointSigner, seed: u64) -> Vec<Frame> {
    let mut gen = RecordGenerator::new(seed, origin);
    let mut h = head;
    let mut out = Vec::new();
    for _ in 0..n {
        let op = parse_operation(gen.next_line().as_bytes()).expect("generated lines are valid");
        let e = Entry::new(origin, h.next_seq, h.head_hash, at * 1_000_000, op.canonical().to_vec());
        h.advance(&e).expect("links");
        out.push(Frame::Entry(e));
    }
    out.push(Frame::Checkpoint(Checkpoint::sign(origin, h, at, key).expect("sign")));
    out
}

/// The store of the node under test (region `sh`), in `dir`.
fn target_config(dir: &Path) -> StoreConfig {
    let mut cfg = StoreConfig::new(&dir.join("t"));
    cfg.local = Some(sh());
    cfg
}

type WriterJoin = std::thread::JoinHandle<Result<Store, Arc<crate::store::StoreError>>>;

/// The node's writer over `store`, and an index handle to watch it by.
fn spawn_writer(
    store: Store,
) -> (
    crate::store::index::Index,
    crate::store::writer::WriterHandle,
    WriterJoin,
) {
    let index = store.index().clone();
    let (writer, join) = writer::spawn(
        store,
        sh(),
        Arc::new(TestKey(sh())),
        WriterLimits {
            queue_depth: 16,
            group_ops_max: 100,
        },
    );
    (index, writer, join)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[derive(Clone, Copy, Debug)]
struct Net {
    drop_per_mille: u32,
    reorder: bool,
    delay_ms_max: u64,
}

/// A peer in memory: serves `frames` (in journal order) through the real sender, over a link
/// that loses, reorders and delays messages, and that a partition can cut.
struct MemPeer {
    frames: Vec<Frame>,
    net: Net,
    cut: Arc<AtomicBool>,
    rng: Mutex<StdRng>,
}

struct MemStream {
    messages: VecDeque<Incoming>,
    delays: Vec<u64>,
    cut: Arc<AtomicBool>,
}

impl PeerStream for MemStream {
    fn next(&mut self) -> PeerFuture<'_, Option<Incoming>> {
        Box::pin(async move {
            if let Some(ms) = self.delays.pop() {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if self.cut.load(Ordering::SeqCst) {
                return Err(PeerError::Link("partitioned".to_string()));
            }
            Ok(self.messages.pop_front())
        })
    }
}

impl PeerConnector for MemPeer {
    fn open(&self, request: SyncOpen) -> PeerFuture<'_, Box<dyn PeerStream>> {
        Box::pin(async move {
            if self.cut.load(Ordering::SeqCst) {
                return Err(PeerError::Link("partitioned".to_string()));
            }
            let limits = SendLimits {
                batch_entries_max: request.batch_entries_max as usize,
                batch_bytes_max: request.batch_bytes_max as usize,
            };
            let mut sender = Sender::new(request.have, limits);
            let mut out = Vec::new();
            let mut latest: BTreeMap<Region, Checkpoint> = BTreeMap::new();
            for f in &self.frames {
                match f.clone() {
                    Frame::Entry(e) => sender.entry(e, &mut out),
                    Frame::Checkpoint(c) => {
                        latest.insert(c.origin, c.clone());
                        sender.checkpoint(c, &mut out);
                    }
                    Frame::ForkEvidence(_) => {}
                }
            }
            out.extend(sender.flush());
            let mut messages: VecDeque<Incoming> = out.into_iter().map(Incoming::Batch).collect();
            messages.push_back(Incoming::Heartbeat {
                heads: HashMap::new(),
                checkpoints: latest
                    .into_values()
                    .map(|c| Batch {
                        origin: Some(c.origin),
                        entries: Vec::new(),
                        checkpoints: vec![c],
                    })
                    .collect(),
            });
            let delays = {
                let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
                messages.retain(|_| rng.random_range(0..1000) >= self.net.drop_per_mille);
                if self.net.reorder && messages.len() >= 2 {
                    let i = rng.random_range(0..messages.len() - 1);
                    messages.swap(i, i + 1);
                }
                (0..messages.len())
                    .map(|_| rng.random_range(0..=self.net.delay_ms_max))
                    .collect()
            };
            Ok(Box::new(MemStream {
                messages,
                delays,
                cut: self.cut.clone(),
            }) as Box<dyn PeerStream>)
        })
    }
}

#[derive(Clone, Copy, Debug)]
struct Case {
    seed: u64,
    groups: usize,
    per_group: usize,
    net: Net,
    partitions: bool,
    blanker: bool,
    forger: bool,
    back_dater: bool,
    equivocator: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<u64>(),
        2usize..5,
        3usize..12,
        (0u32..200, any::<bool>(), 0u64..3),
        any::<bool>(),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(seed, groups, per_group, (drop_per_mille, reorder, delay_ms_max), partitions, hostile)| Case {
                seed,
                groups,
                per_group,
                net: Net {
                    drop_per_mille,
                    reorder,
                    delay_ms_max,
                },
                partitions,
                blanker: hostile.0,
                forger: hostile.1,
                back_dater: hostile.2,
                equivocator: hostile.3,
            },
        )
}

/// The peers of a case: (name, frames served, honest).
fn peers_of(c: &Case, a: &[Frame], b1: &[Frame], b2: &[Frame]) -> Vec<(&'static str, Vec<Frame>, bool)> {
    let a_entries = entries_of(a);
    let mut peers = vec![
        ("origin-a", a.to_vec(), true),
        ("relay", a.iter().chain(b1.iter()).cloned().collect(), true),
    ];
    if c.blanker {
        let blanked = a
            .iter()
            .cloned()
            .map(|f| match f {
                Frame::Entry(mut e) => {
                    e.op_bytes.clear();
                    Frame::Entry(e)
                }
                other => other,
            })
            .collect();
        peers.push(("blanker", blanked, false));
    }
    if c.forger {
        // A's log, extended past its head under a checkpoint no key of A signed.
        let mut frames = a.to_vec();
        let at = now_micros() / 1_000_000;
        frames.extend(branch(zj(), head_of(&a_entries), 4, at, &TestKey(js()), c.seed ^ 2));
        peers.push(("forger", frames, false));
    }
    if c.back_dater {
        // A's first group, then another branch under A's real key (stolen), dated one second
        // before the first checkpoint the node holds of A. It is let in only once the node holds
        // all of A, so its checkpoint lies below A's latest one: only the judge can refuse it.
        let mut frames = first_group(a);
        let held = first_checkpoint(a);
        let g1 = head_of(&entries_of(&frames));
        frames.extend(branch(
            zj(),
            g1,
            2,
            held.at_unix_seconds - 1,
            &TestKey(zj()),
            c.seed ^ 3,
        ));
        peers.push(("back-dater", frames, false));
    }
    if c.equivocator {
        peers.push(("equivocator", b2.to_vec(), true));
    }
    peers
}

fn run_case(c: Case) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = origin_log(&dir.path().join("a"), zj(), c.seed, c.groups, c.per_group);
    let b1 = origin_log(&dir.path().join("b"), js(), c.seed ^ 1, c.groups, c.per_group);
    // Origin B equivocates: after its first group it also signs another branch.
    let b_first = first_group(&b1);
    let mut b2 = b_first.clone();
    b2.extend(branch(
        js(),
        head_of(&entries_of(&b_first)),
        (c.groups * c.per_group) as u64,
        now_micros() / 1_000_000,
        &TestKey(js()),
        c.seed ^ 4,
    ));
    let (a_entries, b1_entries, b2_entries) = (entries_of(&a), entries_of(&b1), entries_of(&b2));

    // The node under test already holds A's first group and its checkpoint (so a back-dated
    // checkpoint can be told from a fresh one).
    let cfg = target_config(dir.path());
    let (mut store, _) = Store::open(&cfg).expect("store");
    let seeded = entries_of(&first_group(&a));
    store
        .commit_replicated(
            sh(),
            &Covered {
                origin: zj(),
                entries: seeded,
                checkpoint: first_checkpoint(&a),
            },
        )
        .expect("seed");
    let (index, writer, join) = spawn_writer(store);
    let limits = DriverLimits {
        batch_entries_max: 7,
        batch_bytes_max: 64 * 1024,
        pending_bytes_max: 4 << 20,
        reconnect_min: Duration::from_millis(5),
        reconnect_max: Duration::from_millis(40),
        silence_max: Duration::from_secs(2),
        clock_skew_max: Duration::from_secs(300),
        feeder_choice: false,
        feeder_switch: Duration::from_secs(3),
    };
    let states: PeerStates = Arc::default();
    let peers = peers_of(&c, &a, &b1, &b2);
    let rt = runtime();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut cuts = Vec::new();
    let mut tasks = Vec::new();
    let mut gate = None;
    for (i, (name, frames, _)) in peers.iter().enumerate() {
        let cut = Arc::new(AtomicBool::new(false));
        if *name == "back-dater" {
            cut.store(true, Ordering::SeqCst);
            gate = Some(cut.clone());
        } else {
            cuts.push(cut.clone());
        }
        let peer = MemPeer {
            frames: frames.clone(),
            net: c.net,
            cut,
            rng: Mutex::new(StdRng::seed_from_u64(c.seed.wrapping_add(i as u64))),
        };
        let link = Link {
            local: sh(),
            writer: writer.clone(),
            index: index.clone(),
            verifier: Arc::new(TestVerifier),
            limits,
            states: states.clone(),
            own_log_behind: Arc::default(),
            feeders: None,
            arrivals: Default::default(),
        };
        let config = PeerConfig {
            address: name.to_string(),
            region: zj(),
            server_name: None,
        };
        tasks.push(rt.spawn(run_peer(link, config, Arc::new(peer), stopped.clone())));
    }
    drop(writer);
    let state = |name: &str| {
        states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .unwrap_or_default()
    };
    rt.block_on(async {
        if c.partitions {
            let mut rng = StdRng::seed_from_u64(c.seed);
            for _ in 0..20 {
                for cut in &cuts {
                    cut.store(rng.random_bool(0.5), Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            for cut in &cuts {
                cut.store(false, Ordering::SeqCst);
            }
        }
        let started = Instant::now();
        loop {
            let a_done = index.head(zj()).expect("head") == head_of(&a_entries);
            let b_done = if c.equivocator {
                index.fork(js()).expect("fork").is_some()
            } else {
                index.head(js()).expect("head") == head_of(&b1_entries)
            };
            let forgers_seen = peers
                .iter()
                .filter(|(name, _, _)| *name == "forger" || *name == "back-dater")
                .all(|(name, _, _)| state(name).forgeries_total > 0);
            if a_done && b_done {
                if let Some(gate) = &gate {
                    gate.store(false, Ordering::SeqCst);
                }
                if forgers_seen {
                    break;
                }
            }
            if started.elapsed() > CONVERGE_WITHIN {
                let all = states.lock().unwrap_or_else(|p| p.into_inner()).clone();
                panic!(
                    "{c:?}: no convergence: A at {} of {}, B at {} forked {:?}; peers {all:#?}",
                    index.head(zj()).expect("head").seq(),
                    a_entries.len(),
                    index.head(js()).expect("head").seq(),
                    index.fork(js()).expect("fork").is_some()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop.send(true);
        for t in tasks {
            t.await.expect("link task");
        }
    });
    drop(rt);
    drop(index);
    let store = join.join().expect("writer thread").expect("writer");

    // Honest origin A: held byte for byte, never forked (a back-dated checkpoint is no fork).
    prop_assert!(store.index().fork(zj()).expect("fork").is_none(), "{c:?}: A forked");
    for e in &a_entries {
        let held = store.read_entry(zj(), e.seq).expect("read").expect("held");
        prop_assert_eq!(&held, e, "{:?}: A/{} differs", c, e.seq);
    }
    // Origin B: one of its branches, whole up to the head held.
    let b_head = store.index().head(js()).expect("head").seq();
    let held_b: Vec<Entry> = (1..=b_head)
        .map(|seq| store.read_entry(js(), seq).expect("read").expect("held"))
        .collect();
    let prefix_of = |branch: &[Entry]| held_b.len() <= branch.len() && held_b[..] == branch[..held_b.len()];
    prop_assert!(
        prefix_of(&b1_entries) || (c.equivocator && prefix_of(&b2_entries)),
        "{c:?}: B held is no branch of B"
    );
    prop_assert_eq!(store.index().fork(js()).expect("fork").is_some(), c.equivocator);
    // Blame: forgers are counted, honest peers (and the equivocator's carrier) never.
    for (name, _, honest) in &peers {
        let s = state(name);
        if *honest {
            prop_assert_eq!(
                s.forgeries_total,
                0,
                "{:?}: honest peer {} blamed: {}",
                c,
                name,
                s.last_error
            );
        }
    }
    drop(store);
    let report = crate::store::verify::verify_store(&cfg, Some(&TestVerifier)).expect("verify");
    prop_assert!(report.ok(), "{c:?}: verify: {:?}", report.problems);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, max_shrink_iters: 8, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_converges_among_hostile_peers_on_faulty_links(c in case()) {
        run_case(c)?;
    }
}

/// Records in the large group, and their size: what one origin group may hold (the writer merges
/// up to 20,000 operations) at nearly the largest record.
const LARGE_GROUP_ENTRIES: u64 = 20_000;
const LARGE_ENTRY_BYTES: usize = 60 * 1024;

/// One origin group of `n` entries of `bytes` bytes, made on the fly (1.2 GB is never held in
/// memory), signed as the writer signs a large group: a checkpoint every
/// `CHECKPOINT_ENTRIES_MAX` entries and one at its end.
struct LargeGroup {
    origin: Region,
    n: u64,
    bytes: usize,
}

struct LargeStream {
    origin: Region,
    n: u64,
    bytes: usize,
    at: i64,
    head: ChainHead,
    sender: Sender,
    queue: VecDeque<Batch>,
    done: bool,
}

impl PeerStream for LargeStream {
    fn next(&mut self) -> PeerFuture<'_, Option<Incoming>> {
        Box::pin(async move {
            loop {
                if let Some(b) = self.queue.pop_front() {
                    return Ok(Some(Incoming::Batch(b)));
                }
                if self.done {
                    return Ok(None);
                }
                let mut out = Vec::new();
                let seq = self.head.next_seq;
                if seq > self.n {
                    out.extend(self.sender.flush());
                    self.done = true;
                } else {
                    let e = Entry::new(
                        self.origin,
                        seq,
                        self.head.head_hash,
                        self.at * 1_000_000,
                        vec![(seq % 251) as u8; self.bytes],
                    );
                    self.head.advance(&e).expect("links");
                    self.sender.entry(e, &mut out);
                    if seq.is_multiple_of(crate::log::CHECKPOINT_ENTRIES_MAX) || seq == self.n {
                        let c = Checkpoint::sign(self.origin, self.head, self.at, &TestKey(self.origin)).expect("sign");
                        self.sender.checkpoint(c, &mut out);
                    }
                }
                self.queue.extend(out);
            }
        })
    }
}

impl PeerConnector for LargeGroup {
    fn open(&self, request: SyncOpen) -> PeerFuture<'_, Box<dyn PeerStream>> {
        Box::pin(async move {
            let limits = SendLimits {
                batch_entries_max: request.batch_entries_max as usize,
                batch_bytes_max: request.batch_bytes_max as usize,
            };
            Ok(Box::new(LargeStream {
                origin: self.origin,
                n: self.n,
                bytes: self.bytes,
                at: now_micros() / 1_000_000,
                head: ChainHead::default(),
                sender: Sender::new(request.have, limits),
                queue: VecDeque::new(),
                done: false,
            }) as Box<dyn PeerStream>)
        })
    }
}

#[test]
fn a_group_of_20000_records_of_60_kib_reaches_a_receiver_with_the_smallest_allowed_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = target_config(dir.path());
    let (store, _) = Store::open(&cfg).expect("store");
    let (index, writer, join) = spawn_writer(store);
    // The smallest link bound the config accepts: one checkpoint span of the largest records.
    let smallest = crate::log::CHECKPOINT_ENTRIES_MAX
        * (crate::record::RECORD_BYTES_MAX as u64 + crate::log::ENTRY_OVERHEAD_BYTES);
    let limits = DriverLimits {
        batch_entries_max: 1000,
        batch_bytes_max: 4 * 1024 * 1024,
        pending_bytes_max: smallest,
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        silence_max: Duration::from_secs(30),
        clock_skew_max: Duration::from_secs(300),
        feeder_choice: false,
        feeder_switch: Duration::from_secs(3),
    };
    let states: PeerStates = Arc::default();
    let link = Link {
        local: sh(),
        writer,
        index: index.clone(),
        verifier: Arc::new(TestVerifier),
        limits,
        states: states.clone(),
        own_log_behind: Arc::default(),
        feeders: None,
        arrivals: Default::default(),
    };
    let peer = LargeGroup {
        origin: zj(),
        n: LARGE_GROUP_ENTRIES,
        bytes: LARGE_ENTRY_BYTES,
    };
    let config = PeerConfig {
        address: "large".to_string(),
        region: zj(),
        server_name: None,
    };
    let rt = runtime();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = rt.spawn(run_peer(link, config, Arc::new(peer), stopped));
    rt.block_on(async {
        let started = Instant::now();
        while index.head(zj()).expect("head").seq() < LARGE_GROUP_ENTRIES {
            let s = states.lock().unwrap_or_else(|p| p.into_inner()).get("large").cloned();
            if let Some(s) = s.filter(|s| s.errors_total > 0) {
                panic!("the link failed: {}", s.last_error);
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "stalled at {} of {LARGE_GROUP_ENTRIES}",
                index.head(zj()).expect("head").seq()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop.send(true);
        task.await.expect("link task");
    });
    drop(rt);
    let received = states.lock().unwrap_or_else(|p| p.into_inner())["large"].entries_received;
    assert_eq!(received, LARGE_GROUP_ENTRIES, "every entry arrived once, on one stream");
    drop(index);
    let store = join.join().expect("writer thread").expect("writer");
    let latest = store
        .index()
        .latest_checkpoint(zj())
        .expect("checkpoint")
        .expect("held");
    assert_eq!(latest.seq, LARGE_GROUP_ENTRIES);
}
