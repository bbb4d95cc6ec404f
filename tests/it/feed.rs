//! Department feeds and profiles on in-process federations with real mutual TLS: a repair at one
//! node withdraws the record from a live feed and from profiles elsewhere; streams cut at random
//! points resume exactly once; a slow subscriber is cut off and resumes; the policy limits what a
//! department sees (also after a reload, for a running subscription); publicity periods end by the
//! calendar; every call leaves an audit row.

use crate::common::rt;
use cxnode::cli::demo::{LocalFederation, Topology};
use cxnode::record::{RecordGenerator, Region};
use cxnode::rpc::pb;
use cxnode::store::audit::{AuditLog, AuditQuery};
use prost::Message;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const CONVERGE: Duration = Duration::from_secs(60);
const WITHIN: Duration = Duration::from_secs(20);

/// A generated line with the fields the tests look at.
#[derive(Clone, Debug)]
struct Line {
    text: String,
    category: String,
    record_id: String,
    subject: Option<String>,
    repairs: Option<String>,
    publicity_end: Option<String>,
    sharing: String,
    disclosure: String,
}

impl Line {
    /// What the demo policy shows a department: public records about companies, shared
    /// unconditionally or conditionally.
    fn demo_visible(&self) -> bool {
        self.subject.is_some() && self.disclosure == "public" && self.sharing != "not_shared"
    }
}

fn line(text: String) -> Line {
    let v: serde_json::Value = serde_json::from_str(&text).expect("generated json");
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    Line {
        category: s("category").unwrap_or_default(),
        record_id: s("record_id").unwrap_or_default(),
        subject: s("subject_uscc"),
        repairs: s("repaired_record_id"),
        publicity_end: s("publicity_end_date"),
        sharing: s("sharing_class").unwrap_or_default(),
        disclosure: s("disclosure_class").unwrap_or_default(),
        text,
    }
}

fn lines(seed: u64, region: Region, n: usize) -> Vec<Line> {
    let mut g = RecordGenerator::new(seed, region);
    (0..n).map(|_| line(g.next_line())).collect()
}

async fn publish(fed: &LocalFederation, i: usize, batch: &[Line]) {
    let appended = fed
        .publish(i, batch.iter().map(|l| l.text.clone()).collect())
        .await
        .expect("publish");
    assert_eq!(appended, batch.len(), "every line appended");
}

async fn federation(n: usize) -> (tempfile::TempDir, LocalFederation) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fed = LocalFederation::start(dir.path(), n, Topology::Mesh)
        .await
        .expect("start");
    (dir, fed)
}

fn request(categories: &[&str], resume: Option<pb::FeedCursor>, follow: bool) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        filter: Some(pb::FeedFilter {
            categories: categories.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }),
        resume_from: resume,
        follow,
    }
}

/// Penalties shown to the public right now, from the start.
fn public_penalties(follow: bool) -> pb::SubscribeRequest {
    let mut r = request(&["administrative_penalty"], None, follow);
    r.filter.as_mut().expect("a filter").public_only = true;
    r
}

/// What a stream delivered.
#[derive(Default)]
struct Got {
    records: Vec<(pb::FeedRecord, pb::FeedCursor)>,
    marks: Vec<pb::ProgressMark>,
    /// The stream's end: None = still open (stopped reading), Some(Ok) = ended, Some(Err) = status.
    end: Option<Result<(), tonic::Status>>,
}

impl Got {
    fn entries(&self) -> Vec<(u32, u64)> {
        self.records
            .iter()
            .map(|(r, _)| (r.origin, r.entry.as_ref().map_or(0, |e| e.seq)))
            .collect()
    }
}

/// Reads `stream` until it ends, `records_max` records arrived, or `until` holds for what arrived.
async fn read(
    stream: &mut tonic::Streaming<pb::FeedEvent>,
    records_max: usize,
    mut until: impl FnMut(&Got) -> bool,
) -> Got {
    let mut got = Got::default();
    let deadline = Instant::now() + CONVERGE;
    loop {
        if got.records.len() >= records_max || until(&got) {
            return got;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.message()).await {
            Err(_) => panic!(
                "no feed event within {CONVERGE:?}; {} records so far",
                got.records.len()
            ),
            Ok(Ok(None)) => {
                got.end = Some(Ok(()));
                return got;
            }
            Ok(Err(status)) => {
                got.end = Some(Err(status));
                return got;
            }
            Ok(Ok(Some(event))) => match event.body {
                Some(pb::feed_event::Body::Record(r)) => got
                    .records
                    .push((r, event.cursor.expect("every event carries a cursor"))),
                Some(pb::feed_event::Body::Progress(p)) => got.marks.push(p),
                None => panic!("an event without a body"),
            },
        }
    }
}

fn reached(mark: &pb::ProgressMark, origin: Region) -> u64 {
    mark.reached
        .as_ref()
        .and_then(|v| v.next_seq.get(&origin.code()).copied())
        .unwrap_or(1)
}

async fn head(fed: &LocalFederation, i: usize, origin: Region) -> u64 {
    fed.heads(i)
        .await
        .expect("heads")
        .get(&origin.code())
        .map_or(0, |h| h.0)
}

async fn profile(client: &mut pb::feed_client::FeedClient<Channel>, subject: &str) -> pb::ProfileResponse {
    client
        .profile(pb::ProfileRequest {
            subject: subject.to_string(),
        })
        .await
        .expect("profile")
        .into_inner()
}

fn status_of(p: &pb::ProfileResponse, record_id: &str) -> Option<pb::RecordStatus> {
    p.records
        .iter()
        .find(|r| r.record_id == record_id)
        .map(|r| pb::RecordStatus::try_from(r.status).expect("known status"))
}

/// Lines up to (not including) the first repair, and that repair.
fn until_first_repair(all: Vec<Line>) -> (Vec<Line>, Line) {
    let at = all
        .iter()
        .position(|l| l.repairs.is_some())
        .expect("the generator makes repairs");
    let repair = all[at].clone();
    (all[..at].to_vec(), repair)
}

#[test]
fn a_repair_at_one_node_withdraws_the_record_from_a_live_feed_and_from_profiles_everywhere() {
    rt().block_on(async {
        let (_dir, fed) = federation(3).await;
        let (a, b, c) = (0, 1, 2);
        let origin = fed.nodes[a].region;
        let (before, repair) = until_first_repair(lines(7, origin, 400));
        publish(&fed, a, &before).await;
        publish(&fed, b, &lines(8, fed.nodes[b].region, 50)).await;
        assert!(fed.wait_converged(CONVERGE).await.expect("converge"));
        let target_id = repair.repairs.clone().expect("a repair");
        let target = before
            .iter()
            .find(|l| l.record_id == target_id)
            .expect("the repaired penalty was published");
        assert!(
            target.demo_visible(),
            "pick a seed whose first repair targets a visible penalty"
        );
        let subject = target.subject.clone().expect("a company");

        let dept = format!("department-{}-demo", fed.nodes[b].region);
        let mut at_b = fed.feed_client(b, &dept).await.expect("client");
        let mut live = at_b
            .subscribe(request(&["administrative_penalty"], None, true))
            .await
            .expect("subscribe")
            .into_inner();
        let a_head = head(&fed, b, origin).await;
        let caught_up = read(&mut live, usize::MAX, |g| {
            g.marks.last().is_some_and(|m| reached(m, origin) > a_head)
        })
        .await;
        let penalties: BTreeSet<String> = before
            .iter()
            .filter(|l| l.category == "administrative_penalty" && l.demo_visible())
            .map(|l| l.record_id.clone())
            .collect();
        assert!(penalties.len() >= 3, "enough to mean something: {}", penalties.len());
        let seen: BTreeSet<String> = caught_up
            .records
            .iter()
            .filter(|(r, _)| r.origin == origin.code())
            .map(|(r, _)| r.record_id.clone())
            .collect();
        assert_eq!(seen, penalties, "every penalty of {origin}, and nothing else");
        assert!(caught_up
            .records
            .iter()
            .all(|(r, _)| r.category == "administrative_penalty"));

        let mut at_c = fed
            .feed_client(c, &format!("department-{}-demo", fed.nodes[c].region))
            .await
            .expect("client");
        for client in [&mut at_b, &mut at_c] {
            let p = profile(client, &subject).await;
            assert_eq!(
                status_of(&p, &target_id),
                Some(pb::RecordStatus::InPublicity),
                "before the repair"
            );
        }

        publish(&fed, a, std::slice::from_ref(&repair)).await;
        let started = Instant::now();
        let withdrawn = read(&mut live, usize::MAX, |g| {
            g.records
                .iter()
                .any(|(r, _)| r.record_id == target_id && r.change == pb::FeedChange::WithdrawnRepaired as i32)
        })
        .await;
        assert!(
            withdrawn.end.is_none(),
            "the live stream stays open: {:?}",
            withdrawn.end
        );
        let (event, _) = withdrawn
            .records
            .iter()
            .find(|(r, _)| r.record_id == target_id)
            .expect("withdrawal");
        assert_eq!(event.status, pb::RecordStatus::Repaired as i32);
        assert_eq!(event.kind, pb::OpKind::Repair as i32);
        let carried: serde_json::Value =
            serde_json::from_slice(&event.entry.as_ref().expect("the repair's entry").op_bytes).expect("json");
        assert_eq!(
            carried["repaired_record_id"],
            serde_json::Value::String(target_id.clone())
        );
        println!("repair reached the live feed at B in {:?}", started.elapsed());
        assert!(started.elapsed() < WITHIN);

        let deadline = Instant::now() + WITHIN;
        for client in [&mut at_b, &mut at_c] {
            loop {
                let p = profile(client, &subject).await;
                if status_of(&p, &target_id) == Some(pb::RecordStatus::Repaired) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "profile still shows the record unrepaired: {p:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Same entries, same answer, byte for byte.
        assert!(fed.wait_converged(CONVERGE).await.expect("converge"));
        let (pb_, pc) = (profile(&mut at_b, &subject).await, profile(&mut at_c, &subject).await);
        assert_eq!(pb_.as_of, pc.as_of);
        assert_eq!(pb_.encode_to_vec(), pc.encode_to_vec(), "two nodes, one answer");
        let ids: Vec<(u32, String)> = pb_.records.iter().map(|r| (r.origin, r.record_id.clone())).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "deterministic order");

        // Receipts: the department at B signs for what it received (not for stopping the
        // repaired record); the one at C signs for stopping it. Both replicate to A, which lists
        // who has applied the repair and who is still pending.
        let last = withdrawn.records.last().map(|(_, c)| c.clone()).expect("a cursor");
        at_b.acknowledge(pb::AcknowledgeRequest {
            applied: last.position.clone(),
            repaired_record_ids_stopped: vec![],
        })
        .await
        .expect("acknowledge at B");
        let unknown = at_c
            .acknowledge(pb::AcknowledgeRequest {
                applied: None,
                repaired_record_ids_stopped: vec!["00000000-0000-4000-8000-000000000000".into()],
            })
            .await
            .expect_err("not a record it may see");
        assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
        let receipt = at_c
            .acknowledge(pb::AcknowledgeRequest {
                applied: last.position.clone(),
                repaired_record_ids_stopped: vec![target_id.clone()],
            })
            .await
            .expect("acknowledge at C")
            .into_inner();
        assert_eq!(
            receipt.receipt.as_ref().map(|c| c.origin),
            Some(fed.nodes[c].region.code()),
            "in C's own log"
        );
        assert!(
            receipt.receipt.as_ref().is_some_and(|cp| cp.seq >= receipt.seq),
            "a checkpoint covers it"
        );
        let mut ops = fed.operations_client(a).await.expect("operator at A");
        let dept_c = format!("cx://department/{}/demo", fed.nodes[c].region);
        let dept_b = format!("cx://department/{}/demo", fed.nodes[b].region);
        let deadline = Instant::now() + WITHIN;
        let report = loop {
            let r = ops
                .receipts(pb::ReceiptsRequest {
                    origin: 0,
                    record_id: target_id.clone(),
                })
                .await
                .expect("receipts")
                .into_inner();
            if r.receipts.iter().any(|x| x.department == dept_c) && r.pending.iter().any(|p| p.department == dept_b) {
                break r;
            }
            assert!(Instant::now() < deadline, "the receipts never reached A: {r:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(report.known && report.repaired);
        assert_eq!(
            report.receipts.iter().find(|x| x.department == dept_c).map(|x| x.node),
            Some(fed.nodes[c].region.code())
        );
        assert!(
            !report.pending.iter().any(|p| p.department == dept_c),
            "C has applied the repair"
        );
        let repair_json: serde_json::Value = serde_json::from_str(&repair.text).expect("json");
        let sync_deadline = repair_json["sync_deadline_date"]
            .as_str()
            .expect("a repair carries its deadline");
        assert_eq!(report.deadline, sync_deadline);
        let today = time::OffsetDateTime::now_utc().date().to_string();
        assert_eq!(
            report.overdue,
            report.deadline.as_str() < today.as_str(),
            "overdue once the deadline has passed with B pending"
        );
        let status = ops
            .sync_status(pb::SyncStatusRequest {})
            .await
            .expect("status")
            .into_inner();
        assert!(status.repairs_checked >= 1);
        assert_eq!(
            status.overdue_repairs.iter().any(|o| o.record_id == target_id),
            report.overdue,
            "SyncStatus lists the overdue repair"
        );

        drop(live);
        // Audit rows at B: the subscription and the profiles, found by caller and by subject.
        let audit_dir = fed.nodes[b].data.join("audit");
        let uri = format!("cx://department/{}/demo", fed.nodes[b].region);
        let rows = AuditLog::query(
            &audit_dir,
            &AuditQuery {
                caller: Some(uri),
                ..AuditQuery::default()
            },
        )
        .expect("audit");
        assert!(rows.iter().any(|r| r.call == "Subscribe"), "{rows:?}");
        assert!(rows.iter().filter(|r| r.call == "Profile").count() >= 2, "{rows:?}");
        assert!(rows.iter().any(|r| r.call == "Acknowledge"), "{rows:?}");
        let by_subject = AuditLog::query(
            &audit_dir,
            &AuditQuery {
                subject: Some(format!("U{subject}").into_bytes()),
                ..AuditQuery::default()
            },
        )
        .expect("audit");
        assert!(by_subject.iter().all(|r| r.call == "Profile") && !by_subject.is_empty());
        assert!(by_subject.iter().all(|r| r.records >= 1));
        fed.shutdown().await.expect("shutdown");
    });
}

#[test]
fn a_feed_cut_at_random_points_resumes_exactly_once_and_a_slow_subscriber_is_cut_off() {
    rt().block_on(async {
        let (_dir, mut fed) = federation(2).await;
        // Small queues and a short patience, so a subscriber that stops reading is cut off soon.
        fed.append_config(
            1,
            "[feed]\nevents_queued_max = 8\nslow_subscriber_ms = 300\nstep_entries_max = 64\n",
        );
        fed.stop_node(1).await.expect("stop");
        fed.start_node(1).await.expect("start");
        for (i, seed) in [(0usize, 11u64), (1, 12)] {
            let all = lines(seed, fed.nodes[i].region, 1500);
            publish(&fed, i, &all).await;
        }
        assert!(fed.wait_converged(CONVERGE).await.expect("converge"));
        let dept = format!("department-{}-demo", fed.nodes[1].region);
        let mut client = fed.feed_client(1, &dept).await.expect("client");
        let categories = ["administrative_penalty", "credit_repair"];

        // The whole filtered log, read in one go.
        let mut whole = client
            .subscribe(request(&categories, None, false))
            .await
            .expect("subscribe")
            .into_inner();
        let reference = read(&mut whole, usize::MAX, |_| false).await;
        assert!(
            matches!(reference.end, Some(Ok(()))),
            "ends once caught up: {:?}",
            reference.end
        );
        let want = reference.entries();
        assert!(want.len() > 500, "a real log: {}", want.len());
        assert!(!reference.marks.is_empty(), "a final progress mark");

        // Cut 50 times at random points; resume each time from the last cursor received.
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut got = Vec::new();
        let mut resume: Option<pb::FeedCursor> = None;
        let mut cuts = 0;
        loop {
            let mut s = client
                .subscribe(request(&categories, resume.clone(), false))
                .await
                .expect("subscribe")
                .into_inner();
            let take = if cuts < 50 {
                rng.random_range(1..=15)
            } else {
                usize::MAX
            };
            let part = read(&mut s, take, |_| false).await;
            got.extend(part.entries());
            if let Some((_, c)) = part.records.last() {
                resume = Some(c.clone());
            }
            drop(s);
            if matches!(part.end, Some(Ok(()))) {
                break;
            }
            cuts += 1;
        }
        assert!(cuts >= 50, "cut {cuts} times");
        assert_eq!(
            got, want,
            "the union of the pieces is the filtered log, each entry once, in order"
        );

        // A subscriber that stops reading is cut off, told where to resume, and resumes exactly.
        // It stops after 5 records while more arrives than the transport's windows (HTTP/2 gives
        // a stream 2 MiB) and the node's queue can hold: every category, 4,000 more records.
        let categories: [&str; 0] = [];
        let mut slow = client
            .subscribe(request(&categories, None, true))
            .await
            .expect("subscribe")
            .into_inner();
        let first = read(&mut slow, 5, |_| false).await;
        publish(&fed, 0, &lines(13, fed.nodes[0].region, 4000)).await;
        assert!(fed.wait_converged(CONVERGE).await.expect("converge"));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut whole = client
            .subscribe(request(&categories, None, false))
            .await
            .expect("subscribe")
            .into_inner();
        let want = read(&mut whole, usize::MAX, |_| false).await.entries();
        let rest = read(&mut slow, usize::MAX, |_| false).await;
        let status = match rest.end.clone() {
            Some(Err(s)) => s,
            other => panic!("a slow subscriber is cut off, got {other:?}"),
        };
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        let token = status
            .message()
            .rsplit("resume from cursor ")
            .next()
            .map(|h| hex::decode(h.trim()).expect("hex cursor"))
            .expect("names a cursor");
        let mut delivered = first.entries();
        delivered.extend(rest.entries());
        let last_cursor = rest
            .records
            .last()
            .or(first.records.last())
            .map(|(_, c)| c.token.to_vec());
        assert_eq!(Some(token.clone()), last_cursor, "resume from the last event delivered");
        let mut again = client
            .subscribe(request(
                &categories,
                Some(pb::FeedCursor {
                    position: None,
                    token: token.into(),
                }),
                false,
            ))
            .await
            .expect("resume")
            .into_inner();
        let tail = read(&mut again, usize::MAX, |_| false).await;
        delivered.extend(tail.entries());
        assert_eq!(delivered, want, "cut off and resumed: nothing lost, nothing twice");
        fed.shutdown().await.expect("shutdown");
    });
}

#[test]
fn a_department_sees_only_what_its_policy_grants_and_a_reload_narrows_a_running_feed() {
    rt().block_on(async {
        let (_dir, fed) = federation(2).await;
        let (a, b) = (fed.nodes[0].region, fed.nodes[1].region);
        let first = lines(21, a, 400);
        publish(&fed, 0, &first).await;
        publish(&fed, 1, &lines(22, b, 200)).await;
        assert!(fed.wait_converged(CONVERGE).await.expect("converge"));
        let name = fed.issue_department(b, "narrow").expect("cert");
        let grant = |categories: &str| {
            format!(
                "[[grant]]\nidentity = \"cx://department/{b}/narrow\"\nrpcs = [\"Subscribe\", \"Profile\"]\ncategories = [{categories}]\nregions = [\"{a}\"]\n"
            )
        };
        fed.set_policy(1, &grant("\"administrative_licence\", \"administrative_penalty\"")).expect("policy");
        let mut client = fed.feed_client(1, &name).await.expect("client");
        // The reload takes effect within about a second (the demo policy granted everything).
        let deadline = Instant::now() + WITHIN;
        while client.subscribe(request(&["dishonest_list"], None, false)).await.is_ok() {
            assert!(Instant::now() < deadline, "the new policy never took effect");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut s = client.subscribe(request(&[], None, false)).await.expect("subscribe").into_inner();
        let got = read(&mut s, usize::MAX, |_| false).await;
        assert!(matches!(got.end, Some(Ok(()))));
        assert!(!got.records.is_empty());
        for (r, c) in &got.records {
            assert_eq!(r.origin, a.code(), "only {a}");
            assert!(["administrative_licence", "administrative_penalty"].contains(&r.category.as_str()), "{}", r.category);
            let vv = c.position.as_ref().expect("position");
            assert!(vv.next_seq.keys().all(|o| *o == a.code()), "cursors name only granted origins: {vv:?}");
        }
        for m in &got.marks {
            assert!(m.reached.as_ref().expect("reached").next_seq.keys().all(|o| *o == a.code()), "no leak through progress marks");
        }
        let denied = client.subscribe(request(&["dishonest_list"], None, false)).await.expect_err("not granted");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(!denied.message().contains(&b.to_string()) || denied.message().contains("narrow"), "{}", denied.message());
        let person = client
            .profile(pb::ProfileRequest {
                subject: "11010519491231002X".into(),
            })
            .await
            .expect_err("natural persons need an explicit grant");
        assert_eq!(person.code(), tonic::Code::PermissionDenied);
        let company = first.iter().find_map(|l| l.subject.clone()).expect("a company");
        let p = profile(&mut client, &company).await;
        assert!(p.records.iter().all(|r| r.origin == a.code() && r.category != "credit_repair"));
        assert!(p.as_of.as_ref().expect("as_of").next_seq.keys().all(|o| *o == a.code()));

        // A running subscription is narrowed by a reload.
        let mut live = client.subscribe(request(&[], None, true)).await.expect("subscribe").into_inner();
        let a_head = head(&fed, 1, a).await;
        read(&mut live, usize::MAX, |g| g.marks.last().is_some_and(|m| reached(m, a) > a_head)).await;
        fed.set_policy(1, &grant("\"administrative_licence\"")).expect("policy");
        let deadline = Instant::now() + WITHIN;
        while client.subscribe(request(&["administrative_penalty"], None, false)).await.is_ok() {
            assert!(Instant::now() < deadline, "the narrower policy never took effect");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let more = lines(23, a, 200);
        publish(&fed, 0, &more).await;
        assert!(more.iter().any(|l| l.category == "administrative_penalty"));
        let new_head = a_head + more.len() as u64;
        let after = read(&mut live, usize::MAX, |g| g.marks.last().is_some_and(|m| reached(m, a) > new_head)).await;
        assert!(after.records.iter().any(|(r, _)| r.category == "administrative_licence"));
        assert!(
            after.records.iter().all(|(r, _)| r.category == "administrative_licence"),
            "after the reload only licences reach the running feed"
        );
        // Nothing granted any more: the running subscription ends, saying why.
        fed.set_policy(1, "").expect("policy");
        let ended = read(&mut live, usize::MAX, |_| false).await;
        match ended.end {
            Some(Err(s)) => assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}"),
            other => panic!("the feed must end once nothing is granted: {other:?}"),
        }
        fed.shutdown().await.expect("shutdown");
    });
}

#[test]
fn publicity_periods_end_by_the_calendar_on_every_node() {
    rt().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let origin = Region::parse("330000").expect("province");
        let all = lines(31, origin, 300);
        let repaired: BTreeSet<&str> = all.iter().filter_map(|l| l.repairs.as_deref()).collect();
        // The unrepaired penalty whose period ends first: the day before, it is public; two days
        // later, it is not, on every node, without anyone sending anything.
        let ymd = time::macros::format_description!("[year]-[month]-[day]");
        let (end, target) = all
            .iter()
            .filter(|l| {
                l.category == "administrative_penalty" && l.demo_visible() && !repaired.contains(l.record_id.as_str())
            })
            .filter_map(|l| Some((time::Date::parse(l.publicity_end.as_deref()?, ymd).ok()?, l.clone())))
            .min_by_key(|(d, _)| *d)
            .expect("a penalty with an end date");
        let now = Arc::new(AtomicI64::new(
            (end - time::Duration::days(1)).midnight().assume_utc().unix_timestamp(),
        ));
        let clock_now = now.clone();
        let clock: cxnode::delivery::Clock = Arc::new(move || {
            time::OffsetDateTime::from_unix_timestamp(clock_now.load(Ordering::SeqCst)).expect("a time")
        });
        let fed = LocalFederation::start_with_clock(dir.path(), 2, Topology::Mesh, Some(clock))
            .await
            .expect("start");
        publish(&fed, 0, &all).await;
        assert!(fed.wait_converged(CONVERGE).await.expect("converge"));
        let subject = target.subject.clone().expect("a company");
        let mut clients = Vec::new();
        for i in 0..2 {
            let dept = format!("department-{}-demo", fed.nodes[i].region);
            let mut client = fed.feed_client(i, &dept).await.expect("client");
            let p = profile(&mut client, &subject).await;
            assert_eq!(
                status_of(&p, &target.record_id),
                Some(pb::RecordStatus::InPublicity),
                "node {i}, the day before"
            );
            clients.push(client);
        }
        let mut live = clients[1]
            .subscribe(public_penalties(true))
            .await
            .expect("subscribe")
            .into_inner();
        let a_head = head(&fed, 1, origin).await;
        let got = read(&mut live, usize::MAX, |g| {
            g.marks.last().is_some_and(|m| reached(m, origin) > a_head)
        })
        .await;
        assert!(
            got.records.iter().any(|(r, _)| r.record_id == target.record_id),
            "public the day before"
        );
        assert!(
            got.records
                .iter()
                .filter(|(r, _)| [pb::FeedChange::Published as i32, pb::FeedChange::Amended as i32].contains(&r.change))
                .all(|(r, _)| r.status == pb::RecordStatus::InPublicity as i32),
            "public only: nothing withdrawn is published (withdrawals are still told)"
        );
        now.fetch_add(2 * 86_400, Ordering::SeqCst);
        let ended = read(&mut live, usize::MAX, |g| {
            g.records.iter().any(|(r, _)| {
                r.record_id == target.record_id && r.change == pb::FeedChange::WithdrawnPublicityEnded as i32
            })
        })
        .await;
        let (r, _) = ended
            .records
            .iter()
            .find(|(r, _)| r.record_id == target.record_id)
            .expect("withdrawn");
        assert_eq!(r.status, pb::RecordStatus::Expired as i32);
        assert!(r.entry.is_none(), "nobody re-sent anything: the calendar did it");
        for (i, client) in clients.iter_mut().enumerate() {
            let p = profile(client, &subject).await;
            assert_eq!(
                status_of(&p, &target.record_id),
                Some(pb::RecordStatus::Expired),
                "node {i}, two days later"
            );
        }
        // A new public-only subscription no longer sends it.
        let mut fresh = clients[0]
            .subscribe(public_penalties(false))
            .await
            .expect("subscribe")
            .into_inner();
        let now_public = read(&mut fresh, usize::MAX, |_| false).await;
        assert!(now_public.records.iter().all(|(r, _)| r.record_id != target.record_id));
        fed.shutdown().await.expect("shutdown");
    });
}
