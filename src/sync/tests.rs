//! Table tests of the link receiver with a stand-in signature scheme (the real one is tested in
//! `pki` and end to end).

use super::*;
use crate::log::testkeys::{TestKey, TestVerifier};

const CLOCK: Clock = Clock {
    now_unix_seconds: 1_000_000,
    skew_seconds_max: 300,
};

fn zj() -> Region {
    Region::parse("330000").expect("province")
}

/// An origin log of `n` entries with a checkpoint after every `every` entries.
fn log(n: u64, every: u64) -> (Vec<Entry>, Vec<Checkpoint>) {
    let mut head = ChainHead::default();
    let mut entries = Vec::new();
    let mut cps = Vec::new();
    for seq in 1..=n {
        let e = Entry::new(zj(), seq, head.head_hash, seq as i64, format!("op {seq}").into_bytes());
        head.advance(&e).expect("links");
        entries.push(e);
        if seq % every == 0 || seq == n {
            cps.push(Checkpoint::sign(zj(), head, seq as i64, &TestKey(zj())).expect("sign"));
        }
    }
    (entries, cps)
}

fn batch(entries: &[Entry], cps: &[Checkpoint]) -> Batch {
    Batch {
        origin: Some(zj()),
        entries: entries.to_vec(),
        checkpoints: cps.to_vec(),
    }
}

#[test]
fn covered_prefixes_come_out_in_order() {
    let (entries, cps) = log(10, 4);
    let mut rx = LinkReceiver::new([], 1 << 20);
    let out = rx
        .receive(batch(&entries[..6], &cps[..1]), &TestVerifier, CLOCK)
        .expect("valid");
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let out = rx
        .receive(batch(&entries[6..], &cps[1..]), &TestVerifier, CLOCK)
        .expect("valid");
    assert_eq!(out.iter().map(|c| c.checkpoint.seq).collect::<Vec<_>>(), vec![8, 10]);
    assert_eq!(out[1].entries.last().map(|e| e.seq), Some(10));
}

#[test]
fn nothing_is_released_without_a_checkpoint() {
    let (entries, _) = log(5, 100);
    let mut rx = LinkReceiver::new([], 1 << 20);
    assert!(rx
        .receive(batch(&entries, &[]), &TestVerifier, CLOCK)
        .expect("valid")
        .is_empty());
}

#[test]
fn a_tampered_entry_is_a_fault() {
    let (mut entries, cps) = log(5, 5);
    entries[2].op_bytes = bytes::Bytes::from_static(b"changed");
    let mut rx = LinkReceiver::new([], 1 << 20);
    let err = rx
        .receive(batch(&entries, &cps), &TestVerifier, CLOCK)
        .expect_err("tampered");
    assert!(
        matches!(err, Fault::BadEntry(LogError::DigestMismatch { seq: 3, .. })),
        "{err}"
    );
}

#[test]
fn a_rewritten_chain_does_not_match_the_origin_checkpoint() {
    // A relay invents entries with consistent hashes: the origin's signed head exposes it.
    let (_, cps) = log(5, 5);
    let mut head = ChainHead::default();
    let fake: Vec<Entry> = (1..=5)
        .map(|seq| {
            let e = Entry::new(zj(), seq, head.head_hash, 0, b"invented".to_vec());
            head.advance(&e).expect("links");
            e
        })
        .collect();
    let mut rx = LinkReceiver::new([], 1 << 20);
    let err = rx
        .receive(batch(&fake, &cps), &TestVerifier, CLOCK)
        .expect_err("mismatch");
    assert_eq!(err, Fault::CheckpointMismatch { origin: zj(), seq: 5 });
}

#[test]
fn a_checkpoint_signed_by_another_node_is_forged() {
    let (entries, _) = log(3, 3);
    let mut head = ChainHead::default();
    for e in &entries {
        head.advance(e).expect("links");
    }
    let js = Region::parse("320000").expect("province");
    let mut forged = Checkpoint::sign(zj(), head, 3, &TestKey(js)).expect("sign");
    forged.origin = zj();
    let mut rx = LinkReceiver::new([], 1 << 20);
    let out = rx
        .receive(batch(&entries, &[forged]), &TestVerifier, CLOCK)
        .expect("a refused checkpoint is reported, not a fault of the link");
    assert!(out.is_empty(), "nothing is covered by a forged checkpoint");
    let (refused, total) = rx.take_refused();
    assert_eq!(total, 1);
    assert!(refused[0].reason.contains("signature"), "{:?}", refused);
}

fn refused_reason(rx: &mut LinkReceiver) -> String {
    let (refused, _) = rx.take_refused();
    refused.first().map(|f| f.reason.clone()).unwrap_or_default()
}

#[test]
fn a_blanked_entry_is_a_fault() {
    let (mut entries, cps) = log(5, 5);
    entries[2].op_bytes.clear();
    let mut rx = LinkReceiver::new([], 1 << 20);
    let err = rx
        .receive(batch(&entries, &cps), &TestVerifier, CLOCK)
        .expect_err("blank");
    assert!(
        matches!(err, Fault::BadEntry(LogError::MissingBytes { seq: 3, .. })),
        "{err}"
    );
}

#[test]
fn checkpoints_dated_in_the_future_or_before_their_entries_are_refused() {
    let (entries, _) = log(4, 4);
    let head = ChainHead {
        next_seq: 5,
        head_hash: entries[3].hash,
    };
    let future = Checkpoint::sign(zj(), head, CLOCK.now_unix_seconds + 301, &TestKey(zj())).expect("sign");
    let mut rx = LinkReceiver::new([], 1 << 20);
    assert!(rx
        .receive(batch(&entries, &[future]), &TestVerifier, CLOCK)
        .expect("refused, not a fault")
        .is_empty());
    assert!(refused_reason(&mut rx).contains("ahead"));

    let mut late = entries.clone();
    // Entries appended at t = 500 s, a checkpoint over them dated 400 s.
    let mut h = ChainHead::default();
    for (i, e) in late.iter_mut().enumerate() {
        *e = Entry::new(zj(), i as u64 + 1, h.head_hash, 500_000_000, e.op_bytes.to_vec());
        h.advance(e).expect("links");
    }
    let early = Checkpoint::sign(zj(), h, 400, &TestKey(zj())).expect("sign");
    let mut rx = LinkReceiver::new([], 1 << 20);
    assert!(rx
        .receive(batch(&late, &[early]), &TestVerifier, CLOCK)
        .expect("refused, not a fault")
        .is_empty());
    assert!(refused_reason(&mut rx).contains("before the entry"));
}

#[test]
fn a_back_dated_checkpoint_past_the_held_head_is_refused() {
    // The held head (seq 3) was re-signed at t = 900; a revoked key forges seq 4..5 dated 10.
    let (entries, _) = log(5, 5);
    let mut held = ChainHead::default();
    for e in &entries[..3] {
        held.advance(e).expect("links");
    }
    let mut rx = LinkReceiver::new([(zj(), held)], 1 << 20);
    rx.hold_checkpoint(zj(), 3, 900);
    let mut h = held;
    for e in &entries[3..] {
        h.advance(e).expect("links");
    }
    let forged = Checkpoint::sign(zj(), h, 10, &TestKey(zj())).expect("sign");
    assert!(rx
        .receive(batch(&entries[3..], &[forged]), &TestVerifier, CLOCK)
        .expect("refused, not a fault")
        .is_empty());
    assert!(refused_reason(&mut rx).contains("back-dated"));
    // The same entries under an honest, later checkpoint are taken.
    let honest = Checkpoint::sign(zj(), h, 950, &TestKey(zj())).expect("sign");
    let out = rx.receive(batch(&[], &[honest]), &TestVerifier, CLOCK).expect("valid");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].entries.len(), 2);
}

#[test]
fn a_longer_branch_from_a_relay_reaches_the_judge_instead_of_faulting_the_link() {
    // We hold branch B up to 3; the relay streams branch A from 4 on, under A's valid checkpoint.
    let (a, a_cps) = log(6, 6);
    let mut b_head = ChainHead::default();
    for seq in 1..=3 {
        let e = Entry::new(zj(), seq, b_head.head_hash, 0, format!("b {seq}").into_bytes());
        b_head.advance(&e).expect("links");
    }
    let mut rx = LinkReceiver::new([(zj(), b_head)], 1 << 20);
    let out = rx
        .receive(batch(&a[3..], &a_cps), &TestVerifier, CLOCK)
        .expect("a different branch is not a fault of the relay");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].entries[0].seq, 4);
    assert_ne!(
        out[0].entries[0].prev_hash, b_head.head_hash,
        "the judge sees the break"
    );
    // After the first entry, the link's own stream must link.
    let (a2, _) = log(9, 9);
    assert!(rx.receive(batch(&a2[7..], &[]), &TestVerifier, CLOCK).is_err());
}

#[test]
fn the_pending_bound_covers_all_origins_of_a_link() {
    let (a, _) = log(10, 100);
    let js = Region::parse("320000").expect("province");
    let mut h = ChainHead::default();
    let b: Vec<Entry> = (1..=10)
        .map(|seq| {
            let e = Entry::new(js, seq, h.head_hash, 0, vec![b'x'; 100]);
            h.advance(&e).expect("links");
            e
        })
        .collect();
    // Either origin alone fits; both together do not.
    let limit = 10 * (100 + crate::log::ENTRY_OVERHEAD_BYTES) + 500;
    let mut rx = LinkReceiver::new([], limit);
    rx.receive(batch(&a, &[]), &TestVerifier, CLOCK).expect("fits");
    let err = rx
        .receive(
            Batch {
                origin: Some(js),
                entries: b,
                checkpoints: vec![],
            },
            &TestVerifier,
            CLOCK,
        )
        .expect_err("over the link's bound");
    assert!(matches!(err, Fault::Overflow { .. }), "{err}");
}

#[test]
fn entries_already_held_are_skipped_and_the_stream_resumes_after_them() {
    let (entries, cps) = log(6, 3);
    let mut held = ChainHead::default();
    for e in &entries[..3] {
        held.advance(e).expect("links");
    }
    let mut rx = LinkReceiver::new([(zj(), held)], 1 << 20);
    let out = rx.receive(batch(&entries, &cps), &TestVerifier, CLOCK).expect("valid");
    assert_eq!(
        out.len(),
        2,
        "the old checkpoint goes to the store for a fork check, the new one covers 4..=6"
    );
    assert!(out[0].entries.is_empty());
    assert_eq!(out[1].entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5, 6]);
}

#[test]
fn buffers_are_bounded() {
    let (entries, _) = log(50, 100);
    let mut rx = LinkReceiver::new([], 2_000);
    let err = rx
        .receive(batch(&entries, &[]), &TestVerifier, CLOCK)
        .expect_err("overflow");
    assert_eq!(
        err,
        Fault::Overflow {
            origin: zj(),
            limit: 2_000
        }
    );
}

/// Found by the `link_batches` fuzz target: an overflow advanced the head past an entry it did not
/// keep, and a checkpoint at that head then indexed past the buffer (a panic). A fault now leaves
/// the receiver as it was.
#[test]
fn an_overflow_leaves_the_receiver_as_it_was() {
    let (entries, cps) = log(50, 100);
    let mut rx = LinkReceiver::new([], 2_000);
    let err = rx
        .receive(batch(&entries, &[]), &TestVerifier, CLOCK)
        .expect_err("overflow");
    assert!(matches!(err, Fault::Overflow { .. }), "{err}");
    // What fitted is buffered and its head agrees with it: the checkpoint of all 50 is ahead of
    // it (no panic), and the rest of the entries with it fail again on the bound, cleanly.
    let later = rx
        .receive(batch(&[], &cps), &TestVerifier, CLOCK)
        .expect("a checkpoint ahead");
    assert!(later.is_empty(), "nothing covered yet: {later:?}");
    let held = rx.pending.get(&zj()).expect("pending");
    assert_eq!(
        held.head.seq(),
        held.entries.back().map_or(0, |e| e.seq),
        "head and buffer agree"
    );
}

/// Property test: nodes append, links deliver parts of each other's journals in random batch
/// sizes, links drop (losing their buffers) and reconnect; after the faults stop and every link
/// runs to the end, all nodes hold identical logs. Invariants are checked after every step.
mod convergence {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Event {
        Append { node: usize, n: u64 },
        Deliver { from: usize, to: usize, frames: usize },
        Disconnect { from: usize, to: usize },
    }

    const NODES: usize = 3;

    fn region(i: usize) -> Region {
        Region::parse(["330000", "320000", "310000"][i]).expect("province")
    }

    #[derive(Clone)]
    enum Frame {
        E(Entry),
        C(Checkpoint),
    }

    /// A node: per-origin chains (what the store holds) and its journal in arrival order.
    #[derive(Default)]
    struct Node {
        chains: BTreeMap<Region, Vec<Entry>>,
        journal: Vec<Frame>,
    }

    impl Node {
        fn head(&self, o: Region) -> ChainHead {
            let mut h = ChainHead::default();
            if let Some(last) = self.chains.get(&o).and_then(|c| c.last()) {
                h = ChainHead {
                    next_seq: last.seq + 1,
                    head_hash: last.hash,
                };
            }
            h
        }

        /// What `Store::commit_replicated` does: held entries must be identical; new ones must
        /// continue the chain.
        fn store(&mut self, c: Covered) {
            let chain = self.chains.entry(c.origin).or_default();
            for e in c.entries {
                match chain.get((e.seq - 1) as usize) {
                    Some(held) => assert_eq!(held.hash, e.hash, "a held entry differs: fork in an honest run"),
                    None => {
                        assert_eq!(e.seq as usize, chain.len() + 1, "gap");
                        chain.push(e.clone());
                        self.journal.push(Frame::E(e));
                    }
                }
            }
            self.journal.push(Frame::C(c.checkpoint));
        }
    }

    struct LinkState {
        receiver: LinkReceiver,
        /// Next journal index of the sender to stream, and the receiver's vector at connect.
        pos: usize,
        sent_next: BTreeMap<Region, u64>,
    }

    fn connect(to: &Node) -> LinkState {
        let heads: Vec<(Region, ChainHead)> = (0..NODES).map(|i| (region(i), to.head(region(i)))).collect();
        let sent_next = heads.iter().map(|(o, h)| (*o, h.next_seq)).collect();
        LinkState {
            receiver: LinkReceiver::new(heads, 1 << 30),
            pos: 0,
            sent_next,
        }
    }

    /// Streams up to `max` frames of `from`'s journal to `to`, batched per origin as the server does.
    fn deliver(from: &Node, to: &mut Node, link: &mut LinkState, max: usize) {
        let end = (link.pos + max).min(from.journal.len());
        let mut batch = Batch::default();
        let flush = |batch: &mut Batch, to: &mut Node, link: &mut LinkState| {
            if batch.origin.is_some() {
                let b = std::mem::take(batch);
                for c in link
                    .receiver
                    .receive(b, &TestVerifier, CLOCK)
                    .expect("honest peers send valid data")
                {
                    to.store(c);
                }
            }
        };
        for f in &from.journal[link.pos..end] {
            let (o, keep) = match f {
                Frame::E(e) => (e.origin, e.seq >= link.sent_next[&e.origin]),
                Frame::C(c) => (c.origin, c.seq + 1 >= link.sent_next[&c.origin]),
            };
            if !keep {
                continue;
            }
            if batch.origin != Some(o) {
                flush(&mut batch, to, link);
                batch.origin = Some(o);
            }
            match f {
                Frame::E(e) => {
                    link.sent_next.insert(o, e.seq + 1);
                    batch.entries.push(e.clone());
                }
                Frame::C(c) => {
                    batch.checkpoints.push(c.clone());
                    flush(&mut batch, to, link);
                }
            }
        }
        flush(&mut batch, to, link);
        link.pos = end;
    }

    fn append(node: &mut Node, origin: Region, n: u64, counter: &mut i64) {
        let mut head = node.head(origin);
        for _ in 0..n {
            *counter += 1;
            let e = Entry::new(
                origin,
                head.next_seq,
                head.head_hash,
                *counter,
                counter.to_be_bytes().to_vec(),
            );
            head.advance(&e).expect("links");
            node.chains.entry(origin).or_default().push(e.clone());
            node.journal.push(Frame::E(e));
        }
        let cp = Checkpoint::sign(origin, head, *counter, &TestKey(origin)).expect("sign");
        node.journal.push(Frame::C(cp));
    }

    fn check_invariants(nodes: &[Node]) {
        for n in nodes {
            for chain in n.chains.values() {
                let mut h = ChainHead::default();
                for e in chain {
                    h.advance(e).expect("every stored chain is contiguous and linked");
                }
            }
        }
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0..NODES, 1..6u64).prop_map(|(node, n)| Event::Append { node, n }),
            (0..NODES, 0..NODES, 1..12usize).prop_map(|(from, to, frames)| Event::Deliver { from, to, frames }),
            (0..NODES, 0..NODES).prop_map(|(from, to)| Event::Disconnect { from, to }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        #[test]
        fn all_nodes_converge_once_faults_stop(events in proptest::collection::vec(event(), 1..80)) {
            let mut nodes: Vec<Node> = (0..NODES).map(|_| Node::default()).collect();
            let mut links: BTreeMap<(usize, usize), LinkState> = BTreeMap::new();
            let mut counter = 0i64;
            for ev in &events {
                match *ev {
                    Event::Append { node, n } => append(&mut nodes[node], region(node), n, &mut counter),
                    Event::Deliver { from, to, frames } if from != to => {
                        let link = links.entry((from, to)).or_insert_with(|| connect(&nodes[to]));
                        let (a, b) = if from < to { let (x, y) = nodes.split_at_mut(to); (&x[from], &mut y[0]) } else { let (x, y) = nodes.split_at_mut(from); (&y[0], &mut x[to]) };
                        deliver(a, b, link, frames);
                    }
                    Event::Disconnect { from, to } => { links.remove(&(from, to)); }
                    Event::Deliver { .. } => {}
                }
                check_invariants(&nodes);
            }
            // Faults stop: every link reconnects and runs until nothing changes.
            for _round in 0..NODES + 1 {
                for from in 0..NODES {
                    for to in 0..NODES {
                        if from == to { continue; }
                        let mut link = connect(&nodes[to]);
                        let (a, b) = if from < to { let (x, y) = nodes.split_at_mut(to); (&x[from], &mut y[0]) } else { let (x, y) = nodes.split_at_mut(from); (&y[0], &mut x[to]) };
                        deliver(a, b, &mut link, usize::MAX);
                    }
                }
            }
            check_invariants(&nodes);
            for o in 0..NODES {
                let own: Vec<[u8; 32]> = nodes[o].chains.get(&region(o)).map(|c| c.iter().map(|e| e.hash).collect()).unwrap_or_default();
                for n in &nodes {
                    let held: Vec<[u8; 32]> = n.chains.get(&region(o)).map(|c| c.iter().map(|e| e.hash).collect()).unwrap_or_default();
                    prop_assert_eq!(&held, &own, "origin {} differs", region(o));
                }
            }
        }
    }
}

#[test]
fn the_smallest_allowed_link_bound_holds_one_checkpoint_span_of_the_largest_records() {
    // What `sync.pending_bytes_max` may be set to at least (config refuses less).
    let limit = crate::log::CHECKPOINT_ENTRIES_MAX
        * (crate::record::RECORD_BYTES_MAX as u64 + crate::log::ENTRY_OVERHEAD_BYTES);
    let mut head = ChainHead::default();
    let mut rx = LinkReceiver::new([], limit);
    let mut covered = 0;
    // 1,000 records of 64 KiB, signed every CHECKPOINT_ENTRIES_MAX entries as the writer does.
    for seq in 1..=1000u64 {
        let e = Entry::new(
            zj(),
            seq,
            head.head_hash,
            0,
            vec![b'r'; crate::record::RECORD_BYTES_MAX],
        );
        head.advance(&e).expect("links");
        let cps = if seq % crate::log::CHECKPOINT_ENTRIES_MAX == 0 || seq == 1000 {
            vec![Checkpoint::sign(zj(), head, 1, &TestKey(zj())).expect("sign")]
        } else {
            vec![]
        };
        for c in rx.receive(batch(&[e], &cps), &TestVerifier, CLOCK).expect("fits") {
            covered += c.entries.len();
        }
    }
    assert_eq!(covered, 1000);
}
