//! The delivery driver's blocking steps on a real store (journal + merged view in a temp dir):
//! reading a plan's postings in small steps gives exactly what one large step gives, whatever the
//! budget (the merge of several categories' lists must never skip or repeat a seq); receipts are
//! indexed and reported.

use super::*;
use crate::feed::{Filter, GrantScope, Scope};
use crate::log::testkeys::TestKey;
use crate::record::{parse_operation, Category, DisclosureClass, Operation, RecordGenerator, SharingClass};
use crate::store::{Store, StoreConfig};
use proptest::prelude::*;

fn zj() -> Region {
    Region::parse("330000").expect("province")
}

fn everything() -> Scope {
    Scope {
        grants: vec![GrantScope {
            categories: None,
            regions: None,
            sharing: [
                SharingClass::Unconditional,
                SharingClass::Conditional,
                SharingClass::NotShared,
            ]
            .into(),
            disclosure: [
                DisclosureClass::Public,
                DisclosureClass::Limited,
                DisclosureClass::NonPublic,
            ]
            .into(),
            natural_persons: true,
        }],
    }
}

/// A store holding `n` generated records of 330000, indexed.
fn store(dir: &std::path::Path, n: usize, seed: u64) -> (Store, Vec<Operation>) {
    let mut cfg = StoreConfig::new(dir);
    cfg.local = Some(zj());
    let (mut store, _) = Store::open(&cfg).expect("open");
    let mut gen = RecordGenerator::new(seed, zj());
    let ops: Vec<Operation> = (0..n)
        .map(|_| parse_operation(gen.next_line().as_bytes()).expect("valid"))
        .collect();
    for chunk in ops.chunks(37) {
        store
            .commit_local(zj(), chunk, &TestKey(zj()), 1_700_000_000_000_000)
            .expect("commit");
    }
    store.index_view().expect("index");
    (store, ops)
}

/// Every event of `plan` from the start, read in steps of `budget` postings.
fn all_events(store: &Store, cache: &TailCache, plan: &Plan, budget: usize) -> Vec<(Region, u64)> {
    let today = time::macros::date!(2026 - 12 - 01);
    let target = store.view().origin_seqs();
    let mut cursor = Cursor::start(today);
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let step = read_step(
            store.view(),
            &store.reader(),
            cache,
            plan,
            &cursor,
            &target,
            today,
            budget,
        )
        .expect("step");
        for (event, entry) in &step.events {
            let at = event.entry.expect("entry events");
            assert_eq!(
                entry.as_ref().map(|e| (e.origin, e.seq)),
                Some(at),
                "the entry read is the posting's"
            );
            if let Some((last_origin, last_seq)) = out.last() {
                assert!((*last_origin, *last_seq) < at, "in order, once");
            }
            cursor.advance(at.0, at.1);
            out.push(at);
        }
        for (origin, reached) in &step.reached {
            cursor.advance(*origin, *reached);
        }
        if step.done {
            return out;
        }
    }
    panic!("steps never finished");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, max_shrink_iters: 10, ..ProptestConfig::default() })]
    #[test]
    fn small_steps_read_what_one_large_step_reads(seed in any::<u64>(), budget in 1usize..40, cats in 1usize..6) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, ops) = store(dir.path(), 400, seed);
        let categories: Vec<String> = Category::all()[..cats].iter().map(|c| c.code().to_string()).collect();
        let plan = Plan::new(Filter::parse(&categories, &[], &[], false).expect("filter"), everything()).expect("plan");
        let whole = all_events(&store, &TailCache::default(), &plan, usize::MAX / 2);
        // Stepped twice through one cache: the second pass reads every entry from it.
        let cache = TailCache::default();
        let stepped = all_events(&store, &cache, &plan, budget);
        prop_assert_eq!(&stepped, &whole);
        prop_assert_eq!(&all_events(&store, &cache, &plan, budget), &whole);
        // Against the log itself: every entry of those categories (repairs count under their
        // target's category too), and nothing else.
        let wanted: std::collections::BTreeSet<Category> = Category::all()[..cats].iter().copied().collect();
        let mut categories_of = std::collections::HashMap::new();
        let mut expected = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            if let Operation::Upsert(r) = op {
                let target = r.repaired_record_id.and_then(|t| categories_of.get(&t).copied());
                categories_of.insert(r.record_id, r.category);
                if wanted.contains(&r.category) || target.is_some_and(|t| wanted.contains(&t)) {
                    expected.push((zj(), i as u64 + 1));
                }
            }
        }
        prop_assert_eq!(whole, expected);
    }
}

#[test]
fn receipts_are_indexed_and_reported_against_the_repair_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, ops) = store(dir.path(), 300, 3);
    let (target, repair) = ops
        .iter()
        .find_map(|op| match op {
            Operation::Upsert(r) => r.repaired_record_id.map(|t| (t, r.clone())),
            _ => None,
        })
        .expect("the generator repairs a penalty");
    let receipt = |dept: &str, stopped: bool| {
        let line = serde_json::json!({
            "op": "receipt",
            "receipt_id": uuid::Builder::from_random_bytes(rand::random()).into_uuid().hyphenated().to_string(),
            "department": dept, "node": "330000", "received_at": "2026-12-01T08:00:00Z",
            "applied": {"330000": ops.len() + 1},
            "stopped": if stopped { vec![serde_json::json!({"origin": "330000", "record_id": target.to_string()})] } else { vec![] },
        });
        parse_operation(line.to_string().as_bytes()).expect("receipt")
    };
    store
        .commit_local(
            zj(),
            &[
                receipt("cx://department/330000/a", true),
                receipt("cx://department/330000/b", false),
            ],
            &TestKey(zj()),
            1_700_000_000_000_000,
        )
        .expect("commit receipts");
    store.index_view().expect("index");
    let view = store.view();
    let rows = view.receipts(zj(), &target).expect("receipts");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].department, "cx://department/330000/a");
    assert_eq!(view.applied().expect("applied").len(), 2);
    let deadline = serde_json::from_slice::<serde_json::Value>(&repair.canonical).expect("json")["sync_deadline_date"]
        .as_str()
        .and_then(crate::record::parse_iso_date)
        .expect("a repair carries its deadline");
    let before = receipt_report(view, &store.reader(), zj(), target, deadline).expect("report");
    assert!(before.known && before.repaired);
    assert_eq!(before.deadline, Some(deadline));
    assert_eq!(before.pending, vec![(zj(), "cx://department/330000/b".to_string())]);
    assert!(!before.overdue, "on the deadline day itself it is not overdue");
    let after =
        receipt_report(view, &store.reader(), zj(), target, deadline.next_day().expect("a day")).expect("report");
    assert!(after.overdue, "b received the record and has not stopped showing it");
    // The view of the same log, rebuilt, holds the same receipts.
    let mut dump = Vec::new();
    view.logical_dump(|l| dump.push(l)).expect("dump");
    assert!(
        dump.iter().any(|l| l.starts_with(&hex::encode([b'Q']))),
        "receipts are facts of the view"
    );
}

/// Every calendar event from `start` up to `today`, in steps of `budget`, following the cursor
/// the way a subscription does.
fn all_expiries(
    store: &Store,
    plan: &Plan,
    start: Cursor,
    today: time::Date,
    budget: usize,
) -> Vec<(time::Date, Region, RecordId)> {
    let mut cursor = start;
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let (events, next, done) = expiry_step(store.view(), plan, &cursor, today, budget).expect("step");
        for (event, at) in events {
            cursor.expired_through = at.0;
            cursor.expired_within = Some(at.1);
            let end = event.record.publicity_end.expect("an end date");
            out.push((end, event.record.origin, event.record.record_id));
        }
        cursor.expired_through = next.0;
        cursor.expired_within = next.1;
        if done {
            return out;
        }
    }
    panic!("calendar steps never finished (budget {budget})");
}

#[test]
fn calendar_steps_of_any_budget_send_each_withdrawal_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, ops) = store(dir.path(), 400, 11);
    let plan = Plan::new(Filter::default(), everything()).expect("plan");
    // Everything has been sent; the calendar runs from long before the first end date to long after the last.
    let mut start = Cursor::start(time::macros::date!(2000 - 01 - 02));
    start.advance(zj(), ops.len() as u64);
    let today = time::macros::date!(2035 - 01 - 01);
    let whole = all_expiries(&store, &plan, start.clone(), today, usize::MAX / 2);
    assert!(whole.len() > 50, "a real calendar: {}", whole.len());
    let mut sorted = whole.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, whole, "in date order, each once");
    for budget in [1, 2, 7] {
        assert_eq!(
            all_expiries(&store, &plan, start.clone(), today, budget),
            whole,
            "budget {budget}"
        );
    }
}

/// A period's evaluation reads its entries through the day marks and gives exactly what reading
/// every posting gives (a view made before day marks): entries appended on three days, periods
/// around each.
#[test]
fn an_evaluation_through_the_day_marks_equals_one_reading_every_posting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = StoreConfig::new(dir.path());
    cfg.local = Some(zj());
    let (mut store, _) = Store::open(&cfg).expect("open");
    let mut gen = RecordGenerator::new(17, zj());
    let day = |d: i64| (1_767_240_000 + d * 86_400) * 1_000_000; // 2026-01-01 12:00 CST + d days
    let per_day = [40usize, 25, 30];
    for (d, n) in per_day.iter().enumerate() {
        let ops: Vec<Operation> = (0..*n)
            .map(|_| parse_operation(gen.next_line().as_bytes()).expect("valid"))
            .collect();
        store
            .commit_local(zj(), &ops, &TestKey(zj()), day(d as i64 * 3))
            .expect("commit");
    }
    store.index_view().expect("index");
    let calendar = crate::evaluate::built_in_calendar().expect("calendar");
    let jan = |d: u8| time::Date::from_calendar_date(2026, time::Month::January, d).expect("date");
    for (from, to, records) in [
        (jan(1), jan(1), 40),
        (jan(2), jan(5), 25),
        (jan(4), jan(31), 55),
        (jan(8), jan(9), 0),
    ] {
        let marked =
            evaluation::evaluate_view(store.view(), &store.reader(), &calendar, from, to, &[], None).expect("evaluate");
        let judged: u64 = marked
            .origins
            .iter()
            .map(|o| o.quality.new_records + o.quality.amendments)
            .sum();
        assert_eq!(judged, records, "{from}..{to}");
        store.view().forget_day_marks();
        let whole =
            evaluation::evaluate_view(store.view(), &store.reader(), &calendar, from, to, &[], None).expect("evaluate");
        assert_eq!(
            serde_json::to_string(&marked).expect("json"),
            serde_json::to_string(&whole).expect("json"),
            "{from}..{to}"
        );
        drop(store);
        store = Store::open(&cfg).expect("reopen").0;
        assert!(store.view().days_complete());
    }
}

/// A live step is shared only by subscribers whose plan, cursor, target, day and view position
/// are all equal; the cache holds at most its bound.
#[test]
fn the_step_cache_shares_a_step_only_under_an_equal_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = store(dir.path(), 60, 11);
    let today = time::macros::date!(2026 - 12 - 01);
    let target = store.view().origin_seqs();
    let plan = Plan::new(Filter::default(), everything()).expect("plan");
    let cache = TailCache::default();
    let key = |plan: &Plan, cursor: &Cursor, today: Date, view_entries: u64| StepKey {
        plan: plan.clone(),
        cursor: cursor.clone(),
        target: target.clone(),
        today,
        budget: 16,
        view_entries,
    };
    let start = Cursor::start(today);
    let first =
        Arc::new(read_step(store.view(), &store.reader(), &cache, &plan, &start, &target, today, 16).expect("step"));
    assert!(!first.events.is_empty(), "the first step has events");
    let steps = StepCache::default();
    steps.put(key(&plan, &start, today, 7), first.clone());
    let hit = steps
        .get(&key(&plan, &start, today, 7))
        .expect("an equal key finds the step");
    assert!(Arc::ptr_eq(&hit, &first));
    let mut moved = start.clone();
    moved.advance(zj(), 1);
    assert!(steps.get(&key(&plan, &moved, today, 7)).is_none(), "another cursor");
    assert!(
        steps.get(&key(&plan, &start, today, 8)).is_none(),
        "another view position"
    );
    let tomorrow = today.next_day().expect("a day");
    assert!(steps.get(&key(&plan, &start, tomorrow, 7)).is_none(), "another day");
    let narrower = Plan::new(
        Filter::parse(&["administrative_penalty".to_string()], &[], &[], false).expect("filter"),
        everything(),
    )
    .expect("plan");
    assert!(steps.get(&key(&narrower, &start, today, 7)).is_none(), "another plan");
    for n in 0..(STEP_CACHE_STEPS_MAX as u64 + 10) {
        steps.put(key(&plan, &start, today, 100 + n), first.clone());
    }
    assert_eq!(steps.steps.lock().expect("lock").len(), STEP_CACHE_STEPS_MAX);
    assert!(
        steps.get(&key(&plan, &start, today, 7)).is_none(),
        "the oldest step left first"
    );
}
