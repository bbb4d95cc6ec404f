//! The merged view against a reference model: random publish / amend / repair (also before its
//! target) / revoke / expiry-dated sequences of three origins, decided as each origin's writer
//! would, stored into real stores as replicated batches in random interleavings and batch sizes;
//! the view must give the model's record states, subject and category postings and expiry
//! schedule, and two stores holding the same entries in different journal orders must hold the
//! same view fact by fact. Also: an undecodable peer entry is reported and does not stop indexing.

use super::journal::Frame;
use super::view::Posting;
use super::{ReplicaOutcome, Store, StoreConfig};
use crate::log::ledger::testing::MapState;
use crate::log::ledger::{self, Decision, LedgerState, OpKind, RecordState};
use crate::log::testkeys::TestKey;
use crate::log::{digest, ChainHead, Checkpoint, Entry};
use crate::record::{decode_stored, parse_operation, Category, Operation, RecordGenerator, RecordId, Region};
use crate::sync::Covered;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};

fn region(code: &str) -> Region {
    Region::parse(code).expect("test region")
}

fn origins() -> [Region; 3] {
    [region("330000"), region("320000"), region("340000")]
}

/// The node under test, which publishes nothing itself.
fn local() -> Region {
    region("310000")
}

/// What the model expects of one record.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Expected {
    state: RecordState,
    kind: OpKind,
    latest_seq: u64,
    subject: Vec<u8>,
    publicity_end: Option<time::Date>,
}

#[derive(Default)]
struct Model {
    records: BTreeMap<(Region, RecordId), Expected>,
    subjects: BTreeMap<Vec<u8>, BTreeSet<(Region, u64)>>,
    categories: HashMap<(Category, Region), Vec<u64>>,
    expiry: BTreeSet<(time::Date, Region, RecordId)>,
}

/// One origin's log: operations decided and chained as its writer would, with the model updated
/// as the view should be.
fn origin_log(origin: Region, seed: u64, ops: usize, model: &mut Model) -> Vec<Entry> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut gen = RecordGenerator::new(seed, origin);
    let mut lines: Vec<String> = Vec::new();
    let mut published: Vec<serde_json::Value> = Vec::new();
    for _ in 0..ops {
        let line = match rng.random_range(0..10) {
            // An amendment: the next version of an earlier record.
            0 | 1 if !published.is_empty() => {
                let i = rng.random_range(0..published.len());
                let v = &mut published[i];
                let version = v["record_version"].as_u64().unwrap_or(1) + 1;
                v["record_version"] = serde_json::json!(version);
                v["remarks"] = serde_json::json!(format!("更正 {version}"));
                v.to_string()
            }
            2 if !published.is_empty() => {
                let i = rng.random_range(0..published.len());
                format!(
                    r#"{{"op":"revoke","record_id":"{}","reason":"撤销","revoked_at":"2025-07-01"}}"#,
                    published[i]["record_id"].as_str().unwrap_or_default()
                )
            }
            _ => {
                let l = gen.next_line();
                published.push(serde_json::from_str(&l).expect("generated json"));
                l
            }
        };
        lines.push(line);
    }
    // Some repairs arrive before their target: swap a repair with the line before it.
    for i in 1..lines.len() {
        if lines[i].contains("repaired_record_id") && rng.random_bool(0.5) {
            lines.swap(i - 1, i);
        }
    }
    let mut state = MapState::default();
    let mut head = ChainHead::default();
    let mut entries = Vec::new();
    for line in lines {
        let Ok(op) = parse_operation(line.as_bytes()) else {
            continue;
        };
        let d = digest(op.canonical());
        let current = state.get(&op.record_id());
        let target = ledger::repair_target(&op).and_then(|t| state.get(&t));
        let Decision::Append { kind, .. } = ledger::decide(&op, &d, current.as_ref(), target.as_ref()) else {
            continue;
        };
        let seq = head.next_seq;
        let e = Entry::with_digest(
            origin,
            seq,
            head.head_hash,
            1_700_000_000_000_000,
            op.canonical().to_vec(),
            d,
        );
        head = ChainHead {
            next_seq: seq + 1,
            head_hash: e.hash,
        };
        ledger::apply(&mut state, &op, seq, d);
        model_apply(model, origin, &op, kind, seq, current, target, &state);
        entries.push(e);
    }
    // The view keeps no digests.
    for ((o, id), exp) in model.records.iter_mut() {
        if *o == origin {
            exp.state = RecordState {
                content_digest: [0; 32],
                revoke_digest: [0; 32],
                ..state.records[id]
            };
        }
    }
    entries
}

#[allow(clippy::too_many_arguments)]
fn model_apply(
    model: &mut Model,
    origin: Region,
    op: &Operation,
    kind: OpKind,
    seq: u64,
    previous: Option<RecordState>,
    target: Option<RecordState>,
    state: &MapState,
) {
    let id = op.record_id();
    match op {
        Operation::Upsert(rec) => {
            let subject = rec.subject.index_bytes();
            model.records.insert(
                (origin, id),
                Expected {
                    state: state.records[&id],
                    kind: match (previous, kind) {
                        (Some(_), _) => OpKind::Amend,
                        (None, k) => k,
                    },
                    latest_seq: seq,
                    subject: subject.clone(),
                    publicity_end: rec.publicity_end_date,
                },
            );
            model.subjects.entry(subject).or_default().insert((origin, seq));
            let mut post = |c: Category| {
                let list = model.categories.entry((c, origin)).or_default();
                if list.last() != Some(&seq) {
                    list.push(seq);
                }
            };
            post(rec.category);
            if let Some(t) = target {
                post(t.category);
            }
            if let Some(end) = rec.publicity_end_date {
                model.expiry.insert((end, origin, id));
            }
        }
        Operation::Revoke(_) => {
            let exp = model
                .records
                .get_mut(&(origin, id))
                .expect("decide refuses unknown records");
            exp.kind = OpKind::Revoke;
            exp.latest_seq = seq;
            let (category, subject) = (exp.state.category, exp.subject.clone());
            model.categories.entry((category, origin)).or_default().push(seq);
            model.subjects.entry(subject).or_default().insert((origin, seq));
        }
        Operation::Receipt(_) => {}
    }
}

fn checkpoint(origin: Region, last: &Entry, at: i64) -> Checkpoint {
    let head = ChainHead {
        next_seq: last.seq + 1,
        head_hash: last.hash,
    };
    Checkpoint::sign(origin, head, at, &TestKey(origin)).expect("test signing")
}

/// Stores the logs into a fresh store as covered batches: `cuts` decides batch sizes and the
/// interleaving of origins.
fn store_logs(dir: &std::path::Path, logs: &[Vec<Entry>], seed: u64) -> Store {
    let mut cfg = StoreConfig::new(dir);
    cfg.local = Some(local());
    // Few buckets, so chunks pile up and merge within a few hundred entries.
    cfg.view_layout = crate::store::view::ViewLayout {
        buckets: 4,
        level0_items_per_bucket: 16,
    };
    let (mut store, _) = Store::open(&cfg).expect("store");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut next = vec![0usize; logs.len()];
    let mut at = 1_700_000_000i64;
    while next.iter().zip(logs).any(|(n, l)| *n < l.len()) {
        let i = rng.random_range(0..logs.len());
        if next[i] >= logs[i].len() {
            continue;
        }
        let n = rng.random_range(1..=12).min(logs[i].len() - next[i]);
        let entries = logs[i][next[i]..next[i] + n].to_vec();
        at += 1;
        let origin = entries[0].origin;
        let cp = checkpoint(origin, entries.last().expect("n >= 1"), at);
        let outcome = store
            .commit_replicated(
                local(),
                &Covered {
                    origin,
                    entries,
                    checkpoint: cp,
                },
            )
            .expect("commit");
        assert_eq!(outcome, ReplicaOutcome::Stored { appended: n as u64 });
        next[i] += n;
        // Index now and then, so the view is built over many batches of different shapes.
        if rng.random_bool(0.6) {
            store.index_view().expect("index");
        }
    }
    store.index_view().expect("index");
    store
}

fn dump(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    store.view().logical_dump(|l| out.push(l)).expect("dump");
    out
}

fn check_against_model(store: &Store, model: &Model) -> Result<(), TestCaseError> {
    let view = store.view();
    for ((origin, id), exp) in &model.records {
        let got = view.record(*origin, id).expect("lookup").expect("record in the view");
        prop_assert_eq!(got.ledger_state(), exp.state, "{} {}", origin, id);
        prop_assert_eq!(got.kind, exp.kind, "kind of {} {}", origin, id);
        prop_assert_eq!(got.latest_seq, exp.latest_seq);
        prop_assert_eq!(got.subject(), &exp.subject[..]);
        prop_assert_eq!(got.publicity_end, exp.publicity_end);
    }
    let reader = store.reader();
    // A posting's position is the frame of exactly that entry.
    let check_at = |p: &Posting| -> Result<(), TestCaseError> {
        match reader.read_at(p.pos).expect("posting position reads") {
            Frame::Entry(e) => {
                prop_assert_eq!((e.origin, e.seq), (p.origin, p.seq), "posting at {:?}", p.pos);
                Ok(())
            }
            _ => Err(TestCaseError::fail(format!(
                "posting {p:?} points at a non-entry frame"
            ))),
        }
    };
    for (subject, postings) in &model.subjects {
        let found = view.subject_entries(subject).expect("subject");
        for p in &found {
            check_at(p)?;
        }
        let got: BTreeSet<(Region, u64)> = found.into_iter().map(|p| (p.origin, p.seq)).collect();
        prop_assert_eq!(&got, postings);
    }
    let seqs_of = |ps: Vec<Posting>| -> Result<Vec<u64>, TestCaseError> {
        for p in &ps {
            check_at(p)?;
        }
        Ok(ps.into_iter().map(|p| p.seq).collect())
    };
    for ((category, origin), seqs) in &model.categories {
        prop_assert_eq!(
            &seqs_of(
                view.category_entries(*category, *origin, 0, usize::MAX)
                    .expect("category")
            )?,
            seqs
        );
        // From a point in the middle: only what follows it.
        let mid = seqs[seqs.len() / 2];
        let tail: Vec<u64> = seqs.iter().copied().filter(|s| *s >= mid).collect();
        prop_assert_eq!(
            seqs_of(
                view.category_entries(*category, *origin, mid, usize::MAX)
                    .expect("category")
            )?,
            tail
        );
        // Bounded above too: only what lies in the window.
        let window: Vec<u64> = seqs.iter().copied().filter(|s| *s >= seqs[0] && *s <= mid).collect();
        prop_assert_eq!(
            seqs_of(
                view.category_entries_through(*category, *origin, seqs[0], mid, usize::MAX)
                    .expect("category")
            )?,
            window
        );
    }
    let (from, to) = (time::macros::date!(2000 - 01 - 01), time::macros::date!(2100 - 12 - 31));
    let got: BTreeSet<_> = view.expiring(from, to).expect("expiry").into_iter().collect();
    prop_assert_eq!(&got, &model.expiry);
    prop_assert_eq!(view.position().entries, store.entries(), "every entry indexed");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, max_shrink_iters: 20, ..ProptestConfig::default() })]
    #[test]
    fn the_merged_view_equals_the_model_whatever_the_journal_order(
        seed in any::<u64>(),
        ops in 20usize..140,
    ) {
        let mut model = Model::default();
        let logs: Vec<Vec<Entry>> = origins()
            .iter()
            .enumerate()
            .map(|(i, o)| origin_log(*o, seed ^ (i as u64 + 1), ops, &mut model))
            .collect();
        let (a_dir, b_dir) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
        let a = store_logs(a_dir.path(), &logs, seed);
        check_against_model(&a, &model)?;
        let b = store_logs(b_dir.path(), &logs, seed.wrapping_add(1));
        prop_assert_eq!(dump(&a), dump(&b), "same entries, another journal order");
    }
}

#[test]
fn an_undecodable_peer_entry_is_reported_counted_and_indexing_goes_on() {
    let dir = tempfile::tempdir().expect("tmp");
    let origin = origins()[0];
    let mut model = Model::default();
    let mut entries = origin_log(origin, 5, 30, &mut model);
    // A later schema's record, as a peer might send it: entry 3 is replaced by bytes this schema
    // refuses, and the chain is rebuilt over it (the origin signed it so).
    let future = br#"{"schema_version":"9.0","record_id":"x"}"#.to_vec();
    assert!(decode_stored(&future).is_err());
    let mut head = ChainHead::default();
    for (i, e) in entries.iter_mut().enumerate() {
        let bytes = if i == 2 { future.clone() } else { e.op_bytes.to_vec() };
        let d = digest(&bytes);
        *e = Entry::with_digest(origin, e.seq, head.head_hash, e.appended_at_micros, bytes, d);
        head = ChainHead {
            next_seq: e.seq + 1,
            head_hash: e.hash,
        };
    }
    let store = store_logs(dir.path(), &[entries.clone()], 9);
    let view = store.view();
    let p = view.position();
    assert_eq!(p.entries, entries.len() as u64, "indexing went past it");
    assert_eq!(p.undecodable, 1);
    let listed = view.undecodable(10).expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].origin, listed[0].seq), (origin, 3));
    assert!(listed[0].reason.contains("schema_version"), "{}", listed[0].reason);
    assert_eq!(view.origin_seq(origin), entries.len() as u64);
    // Records after it are indexed.
    let last = decode_stored(&entries.last().expect("entries").op_bytes).expect("decodes");
    assert!(view.record(origin, &last.record_id()).expect("lookup").is_some());
}

/// A replica of a province's log holds the same view as the province's own store, which decided
/// every publish through the writer's path (in-memory decisions, then the view with digests read
/// from the journal); and re-publishing everything there is idempotent.
#[test]
fn a_replica_holds_the_same_view_as_the_origin_and_republishing_is_idempotent() {
    use super::OpOutcome;
    let origin = origins()[0];
    let (o_dir, r_dir) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let mut cfg = StoreConfig::new(o_dir.path());
    cfg.local = Some(origin);
    cfg.view_layout = crate::store::view::ViewLayout {
        buckets: 8,
        level0_items_per_bucket: 16,
    };
    let (mut own, _) = Store::open(&cfg).expect("origin store");
    let mut gen = RecordGenerator::new(21, origin);
    let lines: Vec<String> = (0..3000).map(|_| gen.next_line()).collect();
    let ops: Vec<Operation> = lines
        .iter()
        .map(|l| parse_operation(l.as_bytes()).expect("valid"))
        .collect();
    let signer = TestKey(origin);
    let mut appended = 0;
    for (i, group) in ops.chunks(100).enumerate() {
        let (outcomes, _) = own
            .commit_local(origin, group, &signer, 1_700_000_000_000_000 + i as i64 * 1_000_000)
            .expect("commit");
        appended += outcomes
            .iter()
            .filter(|o| matches!(o, OpOutcome::Appended { .. }))
            .count();
        if i % 3 == 0 {
            own.index_view().expect("index");
        }
    }
    assert_eq!(appended, 3000, "every generated line is new or a valid amendment");
    own.index_view().expect("index");
    assert_eq!(
        own.decisions_held(),
        0,
        "the view has everything: nothing held in memory"
    );
    // Re-publishing: duplicates (digest read from the journal through the view) or stale.
    let (again, _) = own
        .commit_local(origin, &ops, &signer, 1_800_000_000_000_000)
        .expect("again");
    let duplicates = again
        .iter()
        .filter(|o| matches!(o, OpOutcome::Duplicate { .. }))
        .count();
    let stale = again
        .iter()
        .filter(|o| matches!(o, OpOutcome::Rejected(r) if r.reason == "stale_version"))
        .count();
    assert!(
        duplicates > 2800 && duplicates + stale == 3000,
        "{duplicates} duplicates, {stale} stale"
    );
    // The replica: the origin's journal, replayed as covered batches.
    let mut entries = Vec::new();
    own.reader()
        .scan(super::JournalPos(0), own.journal_end(), |_, _, f| {
            if let super::Frame::Entry(e) = f {
                entries.push(e);
            }
            Ok::<_, super::JournalError>(true)
        })
        .expect("scan");
    let replica = store_logs(r_dir.path(), &[entries], 3);
    assert_eq!(
        dump(&own),
        dump(&replica),
        "the replica's view of the province equals the province's own"
    );
}

/// Past its lag bound the indexer holds ingest back: with the indexer held still, the writer
/// takes requests until the view is more than `index_lag_entries_max` entries behind and then
/// waits; once the indexer runs again, ingest resumes and the lag drains.
#[test]
fn past_its_lag_bound_the_indexer_holds_ingest_back() {
    use super::writer::{self, WriterLimits};
    use std::sync::Arc;
    use std::time::Duration;
    let origin = origins()[0];
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = StoreConfig::new(dir.path());
    cfg.local = Some(origin);
    cfg.index_lag_entries_max = 100;
    let (store, _) = Store::open(&cfg).expect("store");
    let (writer, join) = writer::spawn(
        store,
        origin,
        Arc::new(TestKey(origin)),
        WriterLimits {
            queue_depth: 4,
            group_ops_max: 50,
        },
    );
    let mut gen = RecordGenerator::new(31, origin);
    let mut ops = |n: usize| -> Vec<Operation> {
        (0..n)
            .map(|_| parse_operation(gen.next_line().as_bytes()).expect("valid"))
            .collect()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        writer.hold_indexer(true);
        for _ in 0..3 {
            writer.submit(ops(50)).await.expect("under the bound");
        }
        assert_eq!(writer.index_lag().entries, 150);
        let waited = tokio::time::timeout(Duration::from_millis(500), writer.submit(ops(50))).await;
        assert!(
            waited.is_err(),
            "the writer took more while the view was past its bound"
        );
        assert_eq!(writer.index_lag().entries, 150, "nothing more was written");
        writer.hold_indexer(false);
        tokio::time::timeout(Duration::from_secs(20), writer.submit(ops(50)))
            .await
            .expect("ingest resumes once the indexer runs")
            .expect("commit");
    });
    // The reply comes before the writer announces its end: wait for the lag itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while writer.index_lag().entries > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the lag drains: {:?}",
            writer.index_lag()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(writer);
    let store = join.join().expect("writer thread").expect("clean stop");
    assert_eq!(store.view().position().entries, 250);
}

/// Replica batches of distinct origins committed as one group (one write, one fsync) leave the
/// store exactly as committing them one at a time does; a batch the judge refuses (a gap) is
/// refused alone; two batches of one origin in a group are refused and nothing is written.
#[test]
fn a_replica_group_stores_what_one_batch_at_a_time_does() {
    let mut model = Model::default();
    let logs: Vec<Vec<Entry>> = origins()
        .iter()
        .enumerate()
        .map(|(i, o)| origin_log(*o, 40 + i as u64, 90, &mut model))
        .collect();
    assert!(logs.iter().all(|l| l.len() >= 60), "each log has 60 entries at least");
    let (g_dir, s_dir) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let open = |dir: &std::path::Path| {
        let mut cfg = StoreConfig::new(dir);
        cfg.local = Some(local());
        Store::open(&cfg).expect("store").0
    };
    let (mut grouped, mut single) = (open(g_dir.path()), open(s_dir.path()));
    let mut at = 1_700_000_000i64;
    for step in 0..5 {
        let batches: Vec<Covered> = logs
            .iter()
            .map(|log| {
                at += 1;
                let entries = log[step * 10..step * 10 + 10].to_vec();
                let checkpoint = checkpoint(entries[0].origin, entries.last().expect("10"), at);
                Covered {
                    origin: entries[0].origin,
                    entries,
                    checkpoint,
                }
            })
            .collect();
        let refs: Vec<&Covered> = batches.iter().collect();
        let outcomes = grouped.commit_replicated_group(local(), &refs).expect("group");
        for (b, o) in batches.iter().zip(&outcomes) {
            assert_eq!(*o, single.commit_replicated(local(), b).expect("single"));
            assert_eq!(*o, ReplicaOutcome::Stored { appended: 10 });
        }
    }
    grouped.index_view().expect("index");
    single.index_view().expect("index");
    assert_eq!(dump(&grouped), dump(&single));
    let digests = |dir: &std::path::Path| crate::store::verify::content_digests(&dir.join("journal")).expect("digests");
    assert_eq!(digests(g_dir.path()), digests(s_dir.path()));
    // A gap is refused alone; the other batch of the group is stored.
    let (a, b) = (&logs[0], &logs[1]);
    let gap = Covered {
        origin: a[0].origin,
        entries: a[55..60].to_vec(),
        checkpoint: checkpoint(a[0].origin, &a[59], at + 1),
    };
    let fine = Covered {
        origin: b[0].origin,
        entries: b[50..60].to_vec(),
        checkpoint: checkpoint(b[0].origin, &b[59], at + 2),
    };
    let outcomes = grouped.commit_replicated_group(local(), &[&fine, &gap]).expect("group");
    assert_eq!(outcomes[0], ReplicaOutcome::Stored { appended: 10 });
    assert!(
        matches!(&outcomes[1], ReplicaOutcome::Refused(r) if r.contains("gap")),
        "{:?}",
        outcomes[1]
    );
    let end = grouped.journal_end();
    // Two batches of one origin: refused, nothing written.
    assert!(grouped.commit_replicated_group(local(), &[&fine, &fine]).is_err());
    assert_eq!(grouped.journal_end(), end);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, max_shrink_iters: 50, ..ProptestConfig::default() })]
    /// The day marks place every posted entry of a period: for any period, each entry appended
    /// in it (China Standard Time) has a seq between the two marks `period_seqs` gives, or is one
    /// of its exceptions; and where the origin's clock never stepped back, that range holds
    /// exactly the period's entries. Clocks step back, and times are unreadable, now and then.
    #[test]
    fn the_day_marks_place_every_entry_of_a_period(
        steps in proptest::collection::vec(prop_oneof![6 => 0i64..2, 1 => -3i64..0, 1 => Just(i64::MIN)], 1..120),
        periods in proptest::collection::vec((0i64..40, 0i64..10), 1..8),
        batch in 1usize..20,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = super::index::open_sled(dir.path(), 8 << 20, 1000).expect("sled");
        let view = super::view::View::open(&db, dir.path(), Default::default()).expect("view");
        prop_assert!(view.days_complete(), "a new view keeps day marks");
        let origin = origins()[0];
        let mut gen = RecordGenerator::new(5, origin);
        let base = time::Date::from_calendar_date(2026, time::Month::March, 1).expect("date");
        // Noon in China Standard Time of `base + day`.
        let micros = |day: i64| (base.midnight().assume_utc().unix_timestamp() + day * 86_400 + 4 * 3600) * 1_000_000;
        let mut head = ChainHead::default();
        let mut day = 0i64;
        let mut days = Vec::new();
        let mut entries = Vec::new();
        for step in &steps {
            let at = if *step == i64::MIN {
                days.push(None);
                i64::MAX
            } else {
                day = (day + step).max(0);
                days.push(Some(day));
                micros(day)
            };
            let op = parse_operation(gen.next_line().as_bytes()).expect("generated");
            let e = Entry::new(origin, head.next_seq, head.head_hash, at, op.canonical().to_vec());
            head.advance(&e).expect("links");
            entries.push(e);
        }
        for (i, part) in entries.chunks(batch).enumerate() {
            let mut b = view.begin();
            for (j, e) in part.iter().enumerate() {
                let at = (i * batch + j) as u64 * 10;
                b.index_entry(super::journal::JournalPos(at), super::journal::JournalPos(at + 10), e, None).expect("index");
            }
            b.commit(super::journal::JournalPos(((i + 1) * batch) as u64 * 10)).expect("commit");
        }
        // Reopened, the view knows its latest marks and answers the same.
        drop(view);
        let view = super::view::View::open(&db, dir.path(), Default::default()).expect("reopen");
        let monotone = days.windows(2).all(|w| matches!((w[0], w[1]), (Some(a), Some(b)) if a <= b));
        for (start, len) in periods {
            let (from, to) = (base + time::Duration::days(start), base + time::Duration::days(start + len));
            let p = view.period_seqs(origin, from, to).expect("period").expect("complete");
            let exceptions: BTreeSet<u64> = p.exceptions.iter().map(|x| x.seq).collect();
            for (i, d) in days.iter().enumerate() {
                let seq = i as u64 + 1;
                let inside = d.is_some_and(|d| (start..=start + len).contains(&d));
                let covered = (p.first..=p.last).contains(&seq) || exceptions.contains(&seq);
                prop_assert!(!inside || covered, "seq {} (day {:?}) of [{}, {}] is not placed: {:?}", seq, d, start, start + len, p);
                if monotone {
                    prop_assert_eq!(inside, (p.first..=p.last).contains(&seq), "seq {} day {:?} period [{}, {}]", seq, d, start, start + len);
                }
            }
        }
    }
}
