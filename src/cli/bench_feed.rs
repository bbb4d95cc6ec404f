//! `cxnode bench feed`: department feeds and profiles on real node processes over mutual TLS.
//! Set-up (not timed): `--origins` provinces each publish their share of `--records` into their
//! own node; a reader node pulls every origin and indexes it. Then, at the reader:
//! (a) feed catch-up of the whole log (every category: the full scan) against a 1 %-class filter
//!     (one category from one origin), as records/s and their ratio, medians of `--runs`;
//! (b) profile look-ups of random subjects, p50/p99 over `--profiles` calls (each one audited);
//! at the first origin, (c) live fan-out: records published at `--rate` for `--live-seconds`
//! while 1, then `--subscribers`, departments follow one category; the latency from an entry's
//! append to its arrival at a subscriber, p50/p99, and what the extra subscribers add.
//! Not a test: nothing here asserts a speed.

use super::bench_kit::{
    bench_certs, files, filesystem_of, free_port, median, now_micros, operator_status, peak_rss_kib, percentile,
    publish_args, publish_paced, report, start_node_keys, NodeProcess, WorkDir,
};
use super::publish::publish;
use crate::pki::{self, Identity, IssueRequest};
use crate::record::{RecordGenerator, Region};
use crate::rpc::client::connect;
use crate::rpc::pb;
use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct FeedArgs {
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Provinces the records come from (each publishes records / origins).
    #[arg(long, default_value_t = 4)]
    origins: usize,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value_t = 1000)]
    profiles: usize,
    #[arg(long, default_value_t = 50)]
    subscribers: usize,
    /// Records per second published during the live fan-out.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    live_seconds: u64,
    /// The category live subscribers follow.
    #[arg(long, default_value = "administrative_penalty")]
    live_category: String,
    /// The category of the selective catch-up (from the first origin).
    #[arg(long, default_value = "dishonest_list")]
    selective_category: String,
    /// Idle subscriptions opened at the reader for the memory/threads figure.
    #[arg(long, default_value_t = 500)]
    idle: usize,
    /// Which parts to run: catch_up, profile, evaluate, fan_out, idle (comma-separated).
    #[arg(long, default_value = "catch_up,profile,evaluate,fan_out,idle")]
    parts: String,
    /// Measure at the first origin's node (no reader node: for one origin at large scale).
    #[arg(long)]
    at_origin: bool,
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[allow(clippy::too_many_arguments)]
fn report_line(
    json: bool,
    run: usize,
    seconds: f64,
    counted: u64,
    origins: usize,
    rss_mb: f64,
    bytes: usize,
    fs: &str,
) {
    report(
        json,
        format!("run {run}: evaluation of a quarter, {counted} record entries of {origins} origins, in {seconds:.2} s ({:.0}/s); reader peak RSS during it {rss_mb:.0} MB; report {bytes} bytes", counted as f64 / seconds),
        serde_json::json!({"bench": "feed", "part": "evaluate", "run": run, "evaluate_seconds": seconds, "entries": counted,
            "origins": origins, "reader_peak_rss_mb": rss_mb, "report_bytes": bytes, "filesystem": fs}),
    );
}

/// (resident KiB, threads) of a process now, from /proc.
fn rss_and_threads(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

/// A cursor at the node's current heads of `regions`: a subscriber resuming from it has caught
/// up and gets only what arrives from now on.
async fn head_cursor(certs: &Path, port: u16, regions: &[&str]) -> anyhow::Result<pb::FeedCursor> {
    let mut cursor = crate::feed::Cursor::start(time::OffsetDateTime::now_utc().date());
    for region in regions {
        let head = head_at(certs, port, region).await.unwrap_or(0);
        cursor.next.insert(Region::parse(region)?, head + 1);
    }
    Ok(pb::FeedCursor {
        position: None,
        token: cursor.encode().into(),
    })
}

/// Opens `n` follow subscriptions from the heads (idle: nothing new arrives).
async fn idle_subscriptions(certs: &Path, port: u16, n: usize) -> anyhow::Result<Vec<tonic::Streaming<pb::FeedEvent>>> {
    let mut streams = Vec::with_capacity(n);
    let mut client = feed_client(certs, port).await?;
    let cursor = head_cursor(certs, port, &REGIONS).await?;
    for _ in 0..n {
        let mut s = client
            .subscribe(pb::SubscribeRequest {
                filter: Some(pb::FeedFilter::default()),
                resume_from: Some(cursor.clone()),
                follow: true,
            })
            .await?
            .into_inner();
        // The first progress mark: the subscription is caught up and waiting.
        s.message().await?;
        streams.push(s);
    }
    Ok(streams)
}

const REGIONS: [&str; 8] = [
    "330000", "320000", "310000", "110000", "440000", "510000", "420000", "370000",
];
const READER: &str = "370000";
const POLICY: &str = "[[grant]]\nidentity = \"cx://department/*\"\nrpcs = [\"Subscribe\", \"Profile\"]\ncategories = [\"*\"]\nregions = [\"*\"]\nsharing = [\"*\"]\ndisclosure = [\"*\"]\nnatural_persons = true\n";

async fn feed_client(
    certs: &Path,
    port: u16,
) -> anyhow::Result<pb::feed_client::FeedClient<tonic::transport::Channel>> {
    let channel = connect(
        &format!("127.0.0.1:{port}"),
        &files(certs, "department-bench"),
        Some("localhost"),
    )
    .await?;
    Ok(pb::feed_client::FeedClient::new(channel).max_decoding_message_size(16 << 20))
}

/// Reads a whole non-follow subscription; returns (records, seconds).
async fn catch_up(certs: &Path, port: u16, categories: Vec<String>, regions: Vec<u32>) -> anyhow::Result<(u64, f64)> {
    let mut client = feed_client(certs, port).await?;
    let started = Instant::now();
    let mut stream = client
        .subscribe(pb::SubscribeRequest {
            filter: Some(pb::FeedFilter {
                categories,
                regions,
                ..Default::default()
            }),
            resume_from: None,
            follow: false,
        })
        .await?
        .into_inner();
    let mut records = 0u64;
    while let Some(e) = stream.message().await? {
        if matches!(e.body, Some(pb::feed_event::Body::Record(_))) {
            records += 1;
        }
    }
    Ok((records, started.elapsed().as_secs_f64()))
}

async fn head_at(certs: &Path, port: u16, origin: &str) -> anyhow::Result<u64> {
    let s = operator_status(certs, port).await?;
    let code = Region::parse(origin)?.code();
    let indexed = s.index.map(|i| i.lag_entries == 0).unwrap_or(false);
    let head = s
        .origins
        .iter()
        .find(|o| o.origin == code)
        .map(|o| o.local_head)
        .unwrap_or(0);
    Ok(if indexed { head } else { 0 })
}

/// Follows `category` at `port` and records, for entries of `origin` appended after `from_micros`,
/// arrival minus append time (ms), until `until`.
async fn follow(
    certs: PathBuf,
    port: u16,
    category: String,
    origin: u32,
    until: Instant,
    from_micros: i64,
) -> anyhow::Result<Vec<f64>> {
    let mut client = feed_client(&certs, port).await?;
    // Live only: resume from the origin's head, as a subscriber that has caught up would.
    let cursor = head_cursor(&certs, port, &[REGIONS[0]]).await?;
    let mut stream = client
        .subscribe(pb::SubscribeRequest {
            filter: Some(pb::FeedFilter {
                categories: vec![category],
                regions: vec![origin],
                ..Default::default()
            }),
            resume_from: Some(cursor),
            follow: true,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        let Ok(m) = tokio::time::timeout(left, stream.message()).await else {
            break;
        };
        let Some(m) = m? else { break };
        if let Some(pb::feed_event::Body::Record(r)) = m.body {
            if let Some(e) = r.entry {
                if e.appended_at_micros >= from_micros {
                    out.push((now_micros() - e.appended_at_micros) as f64 / 1000.0);
                }
            }
        }
    }
    Ok(out)
}

/// Latencies of `n` subscribers following while records are published.
async fn fan_out(args: &FeedArgs, certs: &Path, port: u16, n: usize, seed: u64) -> anyhow::Result<Vec<f64>> {
    let origin = Region::parse(REGIONS[0])?.code();
    let until = Instant::now() + Duration::from_secs(args.live_seconds + 3);
    let from = now_micros() + 1_000_000;
    let mut subscribers = Vec::new();
    for _ in 0..n {
        subscribers.push(tokio::spawn(follow(
            certs.to_path_buf(),
            port,
            args.live_category.clone(),
            origin,
            until,
            from,
        )));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    publish_paced(certs, port, REGIONS[0], args.rate, args.rate * args.live_seconds, seed).await?;
    let mut all = Vec::new();
    for s in subscribers {
        all.extend(s.await??);
    }
    Ok(all)
}

pub fn run(args: FeedArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!((1..=7).contains(&args.origins), "--origins must be 1..=7");
    anyhow::ensure!((1..=400).contains(&args.subscribers), "--subscribers must be 1..=400");
    anyhow::ensure!(args.idle <= 9_000, "--idle must be at most 9000");
    let dir = WorkDir::new(args.dir.clone(), "feed")?;
    let work = dir.path.clone();
    let certs = work.join("certs");
    let mut regions: Vec<&str> = REGIONS[..args.origins].to_vec();
    regions.push(READER);
    bench_certs(&certs, &regions)?;
    let department = Identity::Department {
        region: Region::parse(READER)?,
        dept: "bench".to_string(),
    };
    for (identity, name) in [
        (department, "department-bench"),
        (Identity::Operator("bench".to_string()), "operator-bench"),
    ] {
        if !certs.join(format!("{name}.pem")).exists() {
            let now = time::OffsetDateTime::now_utc();
            pki::issue(
                &certs,
                &IssueRequest {
                    identity,
                    not_before: now - time::Duration::hours(1),
                    not_after: now + time::Duration::days(30),
                    dns_names: vec!["localhost".to_string()],
                    ip_addresses: vec![std::net::IpAddr::from([127, 0, 0, 1])],
                },
                &certs,
                name,
            )?;
        }
    }
    std::fs::write(work.join("policy.toml"), POLICY)?;
    // The bench's departments share one identity and one address, where real ones each have
    // their own: the nodes' per-identity and per-address bounds are raised to fit them (each
    // follower holds two connections while it starts; the idle subscriptions share one).
    let policy_key = format!(
        "policy = \"{}\"\nconnections_per_identity_max = {}\nhandshakes_per_source_max = {}\nstreams_per_connection_max = {}\n",
        work.join("policy.toml").display(),
        2 * args.subscribers + 16,
        crate::rpc::transport::HANDSHAKES_IN_FLIGHT_MAX,
        (args.idle + 16).max(256),
    );
    let fs = filesystem_of(&work);
    let rt = super::runtime()?;
    let part = |name: &str| args.parts.split(',').any(|p| p.trim() == name);
    let per_origin = args.records / args.origins as u64;
    let set_up = Instant::now();
    let mut origins: Vec<(NodeProcess, u16)> = Vec::new();
    let mut subjects: Vec<String> = Vec::new();
    for (i, region) in REGIONS[..args.origins].iter().enumerate() {
        let file = work.join(format!("records-{region}.jsonl"));
        let mut gen = RecordGenerator::new(100 + i as u64, Region::parse(region)?);
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
        for n in 0..per_origin {
            let line = gen.next_line();
            if n % 997 == 0 {
                if let Some(s) = serde_json::from_str::<serde_json::Value>(&line)?
                    .get("subject_uscc")
                    .and_then(|s| s.as_str())
                {
                    subjects.push(s.to_string());
                }
            }
            writeln!(out, "{line}")?;
        }
        out.flush()?;
        drop(out);
        let data = work.join(format!("data-{region}"));
        let _ = std::fs::remove_dir_all(&data);
        let port = free_port()?;
        let node = start_node_keys(&work, &data, port, region, &[], &policy_key, "")?;
        rt.block_on(publish(&publish_args(&certs, &work, port, region, &file, 1000)))?;
        origins.push((node, port));
    }
    let (reader, reader_port, reader_data) = if args.at_origin {
        let (node, port) = origins.remove(0);
        (node, port, work.join(format!("data-{}", REGIONS[0])))
    } else {
        let data = work.join("data-reader");
        let _ = std::fs::remove_dir_all(&data);
        let port = free_port()?;
        let peers: Vec<(&str, u16)> = REGIONS[..args.origins]
            .iter()
            .zip(&origins)
            .map(|(r, (_, p))| (*r, *p))
            .collect();
        (
            start_node_keys(&work, &data, port, READER, &peers, &policy_key, "")?,
            port,
            data,
        )
    };
    let deadline = Instant::now() + Duration::from_secs(3600);
    for region in &REGIONS[..args.origins] {
        while rt.block_on(head_at(&certs, reader_port, region)).unwrap_or(0) < per_origin {
            anyhow::ensure!(Instant::now() < deadline, "the reader did not catch up within an hour");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    if !args.json {
        println!(
            "# bench feed: {} records from {} origins ({per_origin} each), replicated and indexed at the reader in {:.0} s (set-up); {} runs; stores on {fs}",
            per_origin * args.origins as u64,
            args.origins,
            set_up.elapsed().as_secs_f64(),
            args.runs
        );
    }

    // (a) catch-up: the whole log against one category of one origin.
    let first = Region::parse(REGIONS[0])?.code();
    let (mut full_rates, mut sel_rates, mut ratios, mut sel_shares) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in (1..=args.runs).filter(|_| part("catch_up")) {
        let (all, all_s) = rt.block_on(catch_up(&certs, reader_port, vec![], vec![]))?;
        let (sel, sel_s) = rt.block_on(catch_up(
            &certs,
            reader_port,
            vec![args.selective_category.clone()],
            vec![first],
        ))?;
        let share = sel as f64 / all.max(1) as f64;
        report(
            args.json,
            format!(
                "run {run}: full catch-up {all} records in {all_s:.2} s ({:.0}/s) | {} from {} ({:.2} % of the log): {sel} in {sel_s:.3} s | full / selective time {:.1} x",
                all as f64 / all_s,
                args.selective_category,
                REGIONS[0],
                share * 100.0,
                all_s / sel_s
            ),
            serde_json::json!({"bench": "feed", "part": "catch_up", "run": run, "records": all, "seconds": all_s,
                "selective_records": sel, "selective_seconds": sel_s, "selective_share": share,
                "full_over_selective_time": all_s / sel_s, "filesystem": fs}),
        );
        full_rates.push(all as f64 / all_s);
        sel_rates.push(sel_s);
        ratios.push(all_s / sel_s);
        sel_shares.push(share);
    }

    // (b) profiles of random subjects.
    if part("profile") {
        super::bench_kit::settle();
    }
    // One round of `--profiles` look-ups per run, each round over other subjects.
    let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
    for run in (1..=args.runs).filter(|_| part("profile")) {
        let mut latencies = Vec::new();
        let mut rows = 0usize;
        rt.block_on(async {
            let mut client = feed_client(&certs, reader_port).await?;
            for i in 0..args.profiles {
                let subject = subjects[(i + (run - 1) * args.profiles) * 7919 % subjects.len()].clone();
                let started = Instant::now();
                let p = client.profile(pb::ProfileRequest { subject }).await?.into_inner();
                latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                rows += p.records.len();
            }
            anyhow::Ok(())
        })?;
        let (p50, p99) = (
            percentile(&mut latencies.clone(), 0.5),
            percentile(&mut latencies, 0.99),
        );
        p50s.push(p50);
        p99s.push(p99);
        let reader_rss = peak_rss_kib(reader.child.id()).unwrap_or(0) as f64 / 1024.0;
        report(
            args.json,
            format!(
                "run {run}: profiles: {} look-ups ({:.1} records each), p50 {p50:.2} ms, p99 {p99:.2} ms (each with its audit row fsynced); reader peak RSS {reader_rss:.0} MB",
                args.profiles,
                rows as f64 / args.profiles.max(1) as f64
            ),
            serde_json::json!({"bench": "feed", "part": "profile", "run": run, "lookups": args.profiles, "p50_ms": p50, "p99_ms": p99,
                "records_per_profile": rows as f64 / args.profiles.max(1) as f64, "reader_peak_rss_mb": reader_rss}),
        );
    }
    let (p50, p99) = if p50s.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        (median(&mut p50s), median(&mut p99s))
    };

    // (b'') the regional evaluation of the last quarter (every record of the set-up is in it), at
    // the reader: time, and the reader's peak RSS during it (the peak is reset first).
    let mut eval_seconds = Vec::new();
    for run in (1..=args.runs).filter(|_| part("evaluate")) {
        let pid = reader.child.id();
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        let (from, to) = super::bench_kit::last_quarter();
        let (from, to) = (from.to_string(), to.to_string());
        let started = Instant::now();
        let r = rt.block_on(async {
            let channel = connect(
                &format!("127.0.0.1:{reader_port}"),
                &files(&certs, "operator-bench"),
                Some("localhost"),
            )
            .await?;
            let mut c = pb::operations_client::OperationsClient::new(channel).max_decoding_message_size(64 << 20);
            anyhow::Ok(
                c.evaluate(pb::EvaluateRequest {
                    from,
                    to,
                    regions: vec![],
                    as_of: Default::default(),
                })
                .await?
                .into_inner(),
            )
        })?;
        let seconds = started.elapsed().as_secs_f64();
        let report: crate::evaluate::Report = serde_json::from_slice(&r.report_json)?;
        let counted: u64 = report
            .origins
            .iter()
            .map(|o| o.quality.new_records + o.quality.amendments + o.quality.revocations)
            .sum();
        let rss = peak_rss_kib(pid).unwrap_or(0) as f64 / 1024.0;
        report_line(
            args.json,
            run,
            seconds,
            counted,
            report.origins.len(),
            rss,
            r.report_json.len(),
            &fs,
        );
        eval_seconds.push(seconds);
    }
    if !eval_seconds.is_empty() {
        let m = median(&mut eval_seconds);
        report(
            args.json,
            format!("median: evaluation of a quarter {m:.2} s"),
            serde_json::json!({"bench": "feed", "part": "evaluate", "summary": true, "evaluate_seconds": m, "filesystem": fs}),
        );
    }

    // (c) live fan-out at the first origin: per run, one subscriber then many, each in a window
    // of its own (the difference of their p99s is what the many add).
    let origin_port = if args.at_origin { reader_port } else { origins[0].1 };
    let (mut one_p99s, mut many_p99s, mut added_p99s) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=(if part("fan_out") { args.runs } else { 0 }) {
        super::bench_kit::settle();
        let seed = 900 + 2 * run as u64;
        let mut one = rt.block_on(fan_out(&args, &certs, origin_port, 1, seed))?;
        let mut many = rt.block_on(fan_out(&args, &certs, origin_port, args.subscribers, seed + 1))?;
        let (o50, o99) = (percentile(&mut one.clone(), 0.5), percentile(&mut one, 0.99));
        let (m50, m99) = (percentile(&mut many.clone(), 0.5), percentile(&mut many, 0.99));
        one_p99s.push(o99);
        many_p99s.push(m99);
        added_p99s.push(m99 - o99);
        report(
            args.json,
            format!(
                "run {run}: live at {}/s, following {}: 1 subscriber p50 {o50:.1} ms p99 {o99:.1} ms ({} events) | {} subscribers p50 {m50:.1} ms p99 {m99:.1} ms ({} events) | added p99 {:.1} ms",
                args.rate,
                args.live_category,
                one.len(),
                args.subscribers,
                many.len(),
                m99 - o99
            ),
            serde_json::json!({"bench": "feed", "part": "fan_out", "run": run, "rate": args.rate, "category": args.live_category,
                "one_p50_ms": o50, "one_p99_ms": o99, "many": args.subscribers, "many_p50_ms": m50, "many_p99_ms": m99,
                "added_p99_ms": m99 - o99, "events_one": one.len(), "events_many": many.len()}),
        );
    }
    let (m_one99, m_many99, m_added99) = if added_p99s.is_empty() {
        (f64::NAN, f64::NAN, f64::NAN)
    } else {
        (median(&mut one_p99s), median(&mut many_p99s), median(&mut added_p99s))
    };
    // (d) idle subscriptions: what they cost the reader in memory and threads.
    if part("idle") {
        let pid = reader.child.id();
        let (rss_before, threads_before) = rss_and_threads(pid);
        let streams = rt.block_on(idle_subscriptions(&certs, reader_port, args.idle))?;
        std::thread::sleep(Duration::from_secs(3));
        let (rss_after, threads_after) = rss_and_threads(pid);
        report(
            args.json,
            format!(
                "{} idle subscriptions: reader RSS {:.1} -> {:.1} MB (+{:.1} KiB each), threads {threads_before} -> {threads_after}",
                streams.len(),
                rss_before as f64 / 1024.0,
                rss_after as f64 / 1024.0,
                (rss_after as f64 - rss_before as f64) / streams.len().max(1) as f64
            ),
            serde_json::json!({"bench": "feed", "part": "idle", "subscriptions": streams.len(),
                "rss_before_mb": rss_before as f64 / 1024.0, "rss_after_mb": rss_after as f64 / 1024.0,
                "kib_per_subscription": (rss_after as f64 - rss_before as f64) / streams.len().max(1) as f64,
                "threads_before": threads_before, "threads_after": threads_after}),
        );
        drop(streams);
    }
    let (m_full, m_sel, m_ratio, m_share) = if full_rates.is_empty() {
        (f64::NAN, f64::NAN, f64::NAN, f64::NAN)
    } else {
        (
            median(&mut full_rates),
            median(&mut sel_rates),
            median(&mut ratios),
            median(&mut sel_shares),
        )
    };
    report(
        args.json,
        format!(
            "median: full catch-up {m_full:.0} records/s; selective ({:.2} %) {m_sel:.3} s; full / selective {m_ratio:.1} x; profile p50 {p50:.2} ms p99 {p99:.2} ms; fan-out p99 1 subscriber {m_one99:.1} ms, {} subscribers {m_many99:.1} ms, added {m_added99:.1} ms",
            m_share * 100.0,
            args.subscribers
        ),
        serde_json::json!({"bench": "feed", "summary": true, "runs": args.runs, "full_records_per_s": m_full,
            "selective_seconds": m_sel, "selective_share": m_share, "full_over_selective_time": m_ratio,
            "profile_p50_ms": p50, "profile_p99_ms": p99, "fan_out_one_p99_ms": m_one99, "fan_out_many_p99_ms": m_many99,
            "fan_out_added_p99_ms": m_added99, "filesystem": fs}),
    );
    reader.stop().context("stopping the reader")?;
    for (node, _) in origins {
        node.stop()?;
    }
    // (b') the look-up alone, in process on the reader's store: no RPC, no audit fsync.
    if part("profile") {
        let (store, _) = crate::store::Store::open(&crate::store::StoreConfig::new(&reader_data))?;
        store.view().load_filter()?;
        let scope = crate::policy::Policy::parse(Region::parse(READER)?, POLICY)
            .map_err(|e| anyhow::anyhow!(e))?
            .scope(
                &Identity::Department {
                    region: Region::parse(READER)?,
                    dept: "bench".to_string(),
                },
                crate::policy::Rpc::Profile,
            );
        let today = time::OffsetDateTime::now_utc().date();
        let mut alone = Vec::new();
        for i in 0..args.profiles {
            let subject = crate::feed::parse_subject("subject", &subjects[i * 7919 % subjects.len()])?.index_bytes();
            let started = Instant::now();
            crate::delivery::profile_rows(store.view(), &store.reader(), &scope, &subject, today)?;
            alone.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let (a50, a99) = (percentile(&mut alone.clone(), 0.5), percentile(&mut alone, 0.99));
        report(
            args.json,
            format!("profile look-up alone (in process, no RPC or audit): p50 {a50:.3} ms, p99 {a99:.3} ms"),
            serde_json::json!({"bench": "feed", "part": "profile_lookup", "p50_ms": a50, "p99_ms": a99, "lookups": args.profiles}),
        );
    }
    dir.done();
    Ok(ExitCode::SUCCESS)
}
