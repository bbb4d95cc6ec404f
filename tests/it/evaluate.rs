//! The regional evaluation on a three-province federation with real mutual TLS: records built
//! with known delays, a publicity period off the rule, a repair left unhonoured by one department
//! and one honoured by all; the report gives exactly the expected figures and lists, two nodes
//! give byte-identical JSON, a stopped node's store recomputes the same bytes, a changed figure
//! fails `--verify`, a department without a grant is refused, and the HTML report renders in
//! headless Chromium.

use crate::common::{bin, chromium_dom, have_tool, rt};
use cxnode::cli::demo::{LocalFederation, Topology};
use cxnode::evaluate::{built_in_calendar, Calendar, Report};
use cxnode::record::{RecordGenerator, Region};
use cxnode::rpc::pb;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};
use time::{Date, Duration as Days};

const CONVERGE: Duration = Duration::from_secs(60);

/// The day `n` working days before `day`.
fn working_days_before(cal: &Calendar, day: Date, n: u32) -> Date {
    let mut d = day;
    while cal.working_days_between(d, day).expect("covered") < n {
        d -= Days::days(1);
    }
    d
}

/// Generated records of `category`, patched: `patch` sets the fields a test controls.
fn record(g: &mut RecordGenerator, category: &str, patch: Value) -> (String, Value) {
    let mut v: Value = loop {
        let v: Value = serde_json::from_str(&g.next_line()).expect("json");
        if v["category"] == category && v.get("op").is_none() && v["subject_type"] != "natural_person" {
            break v;
        }
    };
    for (k, x) in patch.as_object().expect("object") {
        v[k] = x.clone();
    }
    (v["record_id"].as_str().expect("id").to_string(), v)
}

fn licence(g: &mut RecordGenerator, decided: Date) -> (String, Value) {
    record(
        g,
        "administrative_licence",
        json!({"decision_date": decided.to_string(), "valid_from": decided.to_string(),
               "valid_to": (decided + Days::days(365)).to_string(), "disclosure_class": "public"}),
    )
}

fn penalty(g: &mut RecordGenerator, decided: Date, end: Date) -> (String, Value) {
    record(
        g,
        "administrative_penalty",
        json!({"decision_date": decided.to_string(), "severity": "general",
               "earliest_repair_date": cxnode::record::add_months(decided, 3).to_string(),
               "publicity_end_date": end.to_string(), "disclosure_class": "public",
               "sharing_class": "unconditional"}),
    )
}

fn repair(g: &mut RecordGenerator, target: &str, decided: Date, deadline: Date) -> (String, Value) {
    record(
        g,
        "credit_repair",
        json!({"repaired_record_id": target, "application_date": decided.to_string(),
               "repair_decision_date": decided.to_string(), "sync_deadline_date": deadline.to_string(),
               "disclosure_class": "public", "sharing_class": "unconditional"}),
    )
}

async fn publish(fed: &LocalFederation, i: usize, lines: &[Value]) {
    let n = fed
        .publish(i, lines.iter().map(|v| v.to_string()).collect())
        .await
        .expect("publish");
    assert_eq!(n, lines.len(), "every record appended");
}

async fn evaluate(
    ops: &mut pb::operations_client::OperationsClient<tonic::transport::Channel>,
    from: Date,
    to: Date,
) -> pb::EvaluateResponse {
    ops.evaluate(pb::EvaluateRequest {
        from: from.to_string(),
        to: to.to_string(),
        regions: vec![],
        as_of: Default::default(),
    })
    .await
    .expect("evaluate")
    .into_inner()
}

/// A department at node `i` catches up on every category and acknowledges what it received,
/// stopping the repaired records `stopped`.
async fn acknowledge(fed: &LocalFederation, i: usize, stopped: &[String]) -> String {
    let name = format!("department-{}-demo", fed.nodes[i].region);
    let mut client = fed.feed_client(i, &name).await.expect("feed client");
    let mut stream = client
        .subscribe(pb::SubscribeRequest {
            filter: Some(pb::FeedFilter::default()),
            resume_from: None,
            follow: false,
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut last = None;
    while let Some(event) = stream.message().await.expect("stream") {
        last = event.cursor.or(last);
    }
    client
        .acknowledge(pb::AcknowledgeRequest {
            applied: last.expect("a progress mark").position,
            repaired_record_ids_stopped: stopped.to_vec(),
        })
        .await
        .expect("acknowledge");
    format!("cx://department/{}/demo", fed.nodes[i].region)
}

fn origin(r: &Report, region: Region) -> &cxnode::evaluate::report::OriginReport {
    r.origins
        .iter()
        .find(|o| o.origin == region.code())
        .expect("origin in the report")
}

#[test]
fn a_three_province_evaluation_gives_the_expected_figures_byte_identical_on_two_nodes_and_verifiable() {
    rt().block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut fed = LocalFederation::start(dir.path(), 3, Topology::Mesh).await.expect("start");
        let (a, b, c) = (0, 1, 2);
        let cal = built_in_calendar().expect("calendar");
        let today = time::OffsetDateTime::now_utc().to_offset(time::macros::offset!(+8)).date();
        let (from, to) = (today - Days::days(20), today);
        let ago = |n| working_days_before(&cal, today, n);

        // A: licences 2 and 7 working days old (on time), 8 and 12 (late); a penalty whose
        // publicity ended yesterday (decided a year ago: late too); two penalties to repair;
        // a dishonest listing with 6 months of publicity (shorter than the rule's 12).
        let mut ga = RecordGenerator::new(101, fed.nodes[a].region);
        let mut at_a = Vec::new();
        for n in [2, 7, 8, 12] {
            at_a.push(licence(&mut ga, ago(n)));
        }
        let ended_on = today - Days::days(1);
        let expired = penalty(&mut ga, cxnode::record::add_months(ended_on, 0) - Days::days(365), ended_on);
        at_a.push(expired.clone());
        let p1 = penalty(&mut ga, ago(1), cxnode::record::add_months(ago(1), 12));
        let p2 = penalty(&mut ga, ago(1), cxnode::record::add_months(ago(1), 12));
        at_a.push(p1.clone());
        at_a.push(p2.clone());
        let listed = record(
            &mut ga,
            "dishonest_list",
            json!({"listing_date": ago(3).to_string(), "earliest_repair_date": cxnode::record::add_months(ago(3), 3).to_string(),
                   "publicity_end_date": cxnode::record::add_months(ago(3), 6).to_string()}),
        );
        at_a.push(listed.clone());
        // B: two penalties decided 9 working days ago (late). C: one licence decided today.
        let mut gb = RecordGenerator::new(102, fed.nodes[b].region);
        let at_b = vec![
            penalty(&mut gb, ago(9), cxnode::record::add_months(ago(9), 12)),
            penalty(&mut gb, ago(9), cxnode::record::add_months(ago(9), 12)),
        ];
        let mut gc = RecordGenerator::new(103, fed.nodes[c].region);
        let at_c = vec![licence(&mut gc, today)];
        let values = |v: &[(String, Value)]| v.iter().map(|(_, x)| x.clone()).collect::<Vec<_>>();
        publish(&fed, a, &values(&at_a)).await;
        publish(&fed, b, &values(&at_b)).await;
        publish(&fed, c, &values(&at_c)).await;
        assert!(fed.wait_converged(CONVERGE).await.expect("converge"));

        // Departments at B and C receive everything; then A repairs p1 (deadline passed) and p2
        // (deadline in 3 working days). B stops only p2; C stops both.
        let dept_b = acknowledge(&fed, b, &[]).await;
        let dept_c = acknowledge(&fed, c, &[]).await;
        let r1 = repair(&mut ga, &p1.0, ago(2), ago(1));
        let r2 = repair(&mut ga, &p2.0, today, cal.add_working_days(today, 3).expect("covered"));
        publish(&fed, a, &[r1.1.clone(), r2.1.clone()]).await;
        assert!(fed.wait_converged(CONVERGE).await.expect("converge"));
        acknowledge(&fed, b, std::slice::from_ref(&p2.0)).await;
        acknowledge(&fed, c, &[p1.0.clone(), p2.0.clone()]).await;
        assert!(fed.wait_converged(CONVERGE).await.expect("converge"));

        let mut ops_a = fed.operations_client(a).await.expect("operator at A");
        let mut ops_b = fed.operations_client(b).await.expect("operator at B");
        // The receipts are entries of B's and C's logs: wait until A's view holds them.
        let deadline = Instant::now() + CONVERGE;
        let (at_a_resp, report) = loop {
            let r = evaluate(&mut ops_a, from, to).await;
            let report: Report = serde_json::from_slice(&r.report_json).expect("report json");
            let settled = origin(&report, fed.nodes[a].region)
                .repairs
                .listed
                .iter()
                .all(|case| case.receivers.len() == 2 && (case.state != "pending" || case.receivers.iter().all(|x| x.received_on.is_some())));
            if settled && origin(&report, fed.nodes[a].region).repairs.honoured == 1 {
                break (r, report);
            }
            assert!(Instant::now() < deadline, "receipts never reached A: {report:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };

        let oa = origin(&report, fed.nodes[a].region);
        // Timeliness: 4 licences + 3 penalties at A; on time: 2, 7 working days, and p1, p2 (1).
        assert_eq!((oa.timeliness.records, oa.timeliness.on_time), (7, 4), "{:?}", oa.timeliness);
        assert_eq!(oa.timeliness.on_time_ppm, 571_428);
        let mut late: Vec<u32> = oa.timeliness.late.iter().map(|l| l.delay_working_days).collect();
        late.sort();
        assert_eq!(late.len(), 3);
        assert_eq!(&late[..2], &[8, 12]);
        assert!(late[2] > 200, "the year-old penalty: {late:?}");
        let late_ids: Vec<&str> = oa.timeliness.late.iter().map(|l| l.record_id.as_str()).collect();
        assert!(late_ids.contains(&at_a[2].0.as_str()) && late_ids.contains(&at_a[3].0.as_str()) && late_ids.contains(&expired.0.as_str()));
        let ob = origin(&report, fed.nodes[b].region);
        assert_eq!((ob.timeliness.records, ob.timeliness.on_time), (2, 0));
        assert!(ob.timeliness.late.iter().all(|l| l.delay_working_days == 9));
        let oc = origin(&report, fed.nodes[c].region);
        assert_eq!((oc.timeliness.records, oc.timeliness.on_time, oc.timeliness.on_time_ppm), (1, 1, 1_000_000));
        // Histogram at A: 2 -> "<=3", 7 -> "<=7", 8 and 12 -> "<=15", 1 and 1 -> "<=1", the old one "more".
        assert_eq!(oa.timeliness.delay_histogram, vec![0, 2, 1, 1, 2, 0, 1]);

        // Repairs: p1 overdue (B never stopped it; C stopped it after its deadline), p2 honoured.
        assert_eq!(
            (oa.repairs.repairs, oa.repairs.with_receivers, oa.repairs.honoured, oa.repairs.overdue, oa.repairs.late),
            (2, 2, 1, 1, 0)
        );
        assert_eq!(oa.repairs.honoured_ppm, 500_000);
        let case1 = oa.repairs.listed.iter().find(|x| x.repaired_record_id == p1.0).expect("p1's repair");
        assert_eq!(case1.state, "overdue");
        let by_dept = |d: &str| case1.receivers.iter().find(|x| x.department == d).expect("receiver").clone();
        assert_eq!(by_dept(&dept_b).received_on, None);
        assert_eq!(by_dept(&dept_c).received_on, Some(today.to_string()));
        assert!(!by_dept(&dept_c).in_time);
        let overdue: Vec<(u32, &str, u64, u64)> = report
            .overdue_receivers
            .iter()
            .map(|x| (x.node, x.department.as_str(), x.overdue, x.late))
            .collect();
        assert_eq!(
            overdue,
            vec![
                (fed.nodes[b].region.code(), dept_b.as_str(), 1, 0),
                (fed.nodes[c].region.code(), dept_c.as_str(), 0, 1)
            ]
        );

        // Publicity: the record that ended yesterday is not shown past its end; the 6-month
        // listing is shorter than the rule.
        assert_eq!((oa.publicity.ended, oa.publicity.shown_past_end), (1, 0));
        assert_eq!((oa.publicity.shorter, oa.publicity.longer), (1, 0));
        assert_eq!(oa.publicity.off_rule_listed[0].record_id, listed.0);
        // Quality: 10 new records at A (4 + 1 + 2 + 1 + 2 repairs), no amendments.
        assert_eq!((oa.quality.new_records, oa.quality.amendments, oa.quality.revocations), (10, 0, 0));

        // Two nodes with the same entries: the same bytes.
        let at_b_resp = evaluate(&mut ops_b, from, to).await;
        assert_eq!(at_a_resp.report_json, at_b_resp.report_json, "byte-identical reports");
        assert_ne!(at_a_resp.signer_chain, at_b_resp.signer_chain, "each signed by its own node");

        // The CLI: a signed file, verified against the node, then against C's stopped store.
        let files = fed.files("operator-demo");
        let file = dir.path().join("report.json");
        let addr_a = fed.nodes[a].addr.to_string();
        let cli = |extra: &[&str]| {
            let mut cmd = Command::new(bin());
            cmd.arg("evaluate")
                .args(["--node", &addr_a, "--server-name", "localhost"])
                .arg("--ca")
                .arg(&files.ca)
                .arg("--cert")
                .arg(&files.cert)
                .arg("--key")
                .arg(&files.key)
                .args(extra);
            cmd.output().expect("run cxnode evaluate")
        };
        let (f, t) = (from.to_string(), to.to_string());
        let out = cli(&["--from", &f, "--to", &t, "--format", "json", "--out", file.to_str().expect("utf-8")]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = cli(&["--verify", file.to_str().expect("utf-8")]);
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success() && said.contains("MATCHES"), "{said} {}", String::from_utf8_lossy(&out.stderr));

        let text = std::fs::read_to_string(&file).expect("report file");
        let changed = text.replacen("\"on_time_ppm\":571428", "\"on_time_ppm\":971428", 1);
        assert_ne!(changed, text, "the figure is in the file");
        let tampered = dir.path().join("tampered.json");
        std::fs::write(&tampered, changed).expect("write");
        let out = cli(&["--verify", tampered.to_str().expect("utf-8")]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("signature does not verify"), "{out:?}");

        fed.stop_node(c).await.expect("stop C");
        let out = Command::new(bin())
            .args(["evaluate", "--verify", file.to_str().expect("utf-8"), "--ca"])
            .arg(&files.ca)
            .arg("--data")
            .arg(&fed.nodes[c].data)
            .output()
            .expect("verify from a store");
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success() && said.contains("MATCHES"), "{said} {}", String::from_utf8_lossy(&out.stderr));

        // HTML: one file, rendered by Chromium, showing a ranked bar per province and indicator.
        let html = dir.path().join("report.html");
        let out = cli(&["--from", &f, "--to", &t, "--format", "html", "--out", html.to_str().expect("utf-8")]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let page = std::fs::read_to_string(&html).expect("html");
        assert!(!page.contains("http://") && !page.contains("https://"), "no external assets");
        assert!(!page.contains(" src=") && !page.contains("<link"), "no external assets");
        if have_tool("chromium", "--version") {
            let dom = chromium_dom(&format!("file://{}", html.display()));
            // 5 indicators x 3 provinces; 7 buckets per province.
            assert!(dom.contains("drawn: 15 bars, 21 buckets"), "{dom}");
            assert!(dom.contains("57.1%"), "A's on-time share is shown");
        }

        // A department without a grant is refused.
        let name = format!("department-{}-demo", fed.nodes[a].region);
        let dept_files = fed.files(&name);
        let out = Command::new(bin())
            .args(["evaluate", "--node", &addr_a, "--server-name", "localhost"])
            .arg("--ca")
            .arg(&dept_files.ca)
            .arg("--cert")
            .arg(&dept_files.cert)
            .arg("--key")
            .arg(&dept_files.key)
            .args(["--from", &f, "--to", &t])
            .output()
            .expect("run");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("may not evaluate"), "{err}");
        fed.shutdown().await.expect("shutdown");
    });
}

/// The evaluation benchmark's set-up is a national hub's store of several provinces' logs, built
/// through the replica path and opened again by each measurement process: a small run must
/// count every entry and judge records, and a second run on the same `--dir` reuses the store.
#[test]
fn the_evaluation_benchmark_builds_a_hub_store_and_evaluates_every_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("work");
    let bench = || {
        let out = crate::common::cxnode(
            dir.path(),
            &[
                "bench",
                "evaluate",
                "--records",
                "3000",
                "--origins",
                "3",
                "--runs",
                "1",
                "--json",
                "--dir",
                work.to_str().expect("utf-8"),
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    let stdout = bench();
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let run = lines.iter().find(|l| l["run"] == 1).expect("a run line");
    assert_eq!(run["entries"], 3000, "{run}");
    assert_eq!(run["records_judged"], 3000, "every entry is in the quarter: {run}");
    assert!(run["evaluate_seconds"].as_f64().is_some_and(|s| s > 0.0), "{run}");
    let summary = lines.iter().find(|l| l["summary"] == true).expect("a summary line");
    assert!(summary["ratio"].as_f64().is_some_and(|r| r > 0.0), "{summary}");
    // The store is the hub's, and a later run reuses it instead of building it again.
    assert_eq!(
        std::fs::read_to_string(work.join("data/origin"))
            .expect("origin")
            .trim(),
        "100000"
    );
    let text = bench();
    assert!(
        !text.contains("\"part\":\"build\""),
        "the store was built again: {text}"
    );
}
