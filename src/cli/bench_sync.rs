//! `cxnode bench sync`: (a) catch-up: a fresh node process pulls N records from a peer process
//! over mutual TLS, every entry verified and durable; records/s and MB/s (median of runs), peak RSS
//! of both processes. (b) live: three node processes in a mesh, records published at one at a
//! steady rate; the propagation latency to the others (p50/p99/max), measured from the origin's
//! durable append (`appended_at` of the entry) to its arrival on a Sync stream from the receiving
//! node (so it includes that node's durable store and one more loopback hop). Not a test.

use super::bench_kit::{
    bench_certs, dir_bytes, filesystem_of, free_port, head_at, median, observe, operator_status, peak_rss_kib,
    percentile_ms, publish_args, publish_paced, report, start_node_of, NodeProcess, WorkDir, OBSERVER_REGION,
};
use super::publish::publish;
use crate::record::{RecordGenerator, Region};
use crate::rpc::pb;
use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct SyncArgs {
    /// Records the fresh node catches up on.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Live scenario: records per second published at the origin, and for how long.
    #[arg(long, default_value_t = 5000)]
    live_rate: u64,
    #[arg(long, default_value_t = 10)]
    live_seconds: u64,
    /// Working directory (default: a new one under the temp dir, removed after).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Only the live scenario.
    #[arg(long)]
    live_only: bool,
    /// Only the mesh scenario: `--mesh-nodes` node processes in a full mesh, `--live-rate`
    /// records/s spread over all origins for `--live-seconds`, with feeder choice off and on in
    /// turn (`--runs` of each): entries received per entry needed, duplicates, live latency.
    #[arg(long)]
    mesh: bool,
    #[arg(long, default_value_t = 8)]
    mesh_nodes: usize,
    /// One JSON object per run and a summary object, one per line, instead of text.
    #[arg(long)]
    json: bool,
}

const ORIGIN: &str = "330000";
/// The merged-view indexer's status at the node on `port`, asked as an operator.
async fn index_status(certs: &Path, port: u16) -> anyhow::Result<pb::IndexStatus> {
    let s = operator_status(certs, port).await?;
    s.index.context("the node reports no index status")
}

pub fn run(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let dir = WorkDir::new(args.dir.clone(), "sync")?;
    let work = dir.path.clone();
    let certs = work.join("certs");
    let rt = super::runtime()?;
    if args.mesh {
        let mut regions: Vec<&str> = super::bench_mesh::MESH_REGIONS[..args.mesh_nodes.clamp(2, 8)].to_vec();
        regions.push(OBSERVER_REGION);
        bench_certs(&certs, &regions)?;
        let mesh = super::bench_mesh::Mesh {
            nodes: args.mesh_nodes.clamp(2, super::bench_mesh::MESH_REGIONS.len()),
            runs: args.runs,
            rate: args.live_rate,
            seconds: args.live_seconds,
            json: args.json,
        };
        super::bench_mesh::mesh(&mesh, &work, &certs, &rt)?;
    } else {
        bench_certs(&certs, &[ORIGIN, "320000", "310000", OBSERVER_REGION])?;
        if !args.live_only {
            catch_up(&args, &work, &certs, &rt)?;
        }
        live(&args, &work, &certs, &rt)?;
    }
    dir.done();
    Ok(ExitCode::SUCCESS)
}

fn catch_up(args: &SyncArgs, work: &Path, certs: &Path, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    // The source: a node holding N records of its own origin (set-up, not timed).
    let file = work.join("records.jsonl");
    {
        let mut gen = RecordGenerator::new(7, Region::parse(ORIGIN)?);
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
        for _ in 0..args.records {
            writeln!(out, "{}", gen.next_line())?;
        }
        out.flush()?;
    }
    let source_data = work.join("data-source");
    let _ = std::fs::remove_dir_all(&source_data);
    let source_port = free_port()?;
    let source = start_node_of(work, &source_data, source_port, ORIGIN, &[])?;
    let set_up = Instant::now();
    let summary = rt.block_on(publish(&publish_args(certs, work, source_port, ORIGIN, &file, 1000)))?;
    let n = summary.appended.values().sum::<u64>();
    let journal_bytes = dir_bytes(&source_data.join("journal"));
    let fs = filesystem_of(work);
    if !args.json {
        println!(
            "# bench sync (a) catch-up: {n} records ({:.1} MB of journal) published at the source in {:.0} s (set-up); {} runs; stores on {fs}",
            journal_bytes as f64 / 1e6,
            set_up.elapsed().as_secs_f64(),
            args.runs
        );
    }
    let mut indexed_rates = Vec::new();
    let mut ratios = Vec::new();
    let mut rates = Vec::new();
    let mut mbs = Vec::new();
    let mut rss_b = Vec::new();
    for run in 1..=args.runs {
        // Each run starts once earlier writes (the source's set-up, the last replica) reached
        // the disk, as the publish bench does: the first run was always the slowest.
        super::bench_kit::settle();
        let data = work.join(format!("data-fresh-{run}"));
        let _ = std::fs::remove_dir_all(&data);
        let port = free_port()?;
        let started = Instant::now();
        let fresh = start_node_of(work, &data, port, "320000", &[(ORIGIN, source_port)])?;
        let deadline = started + Duration::from_secs(3600);
        loop {
            let at = rt.block_on(head_at(certs, "node-440000", port, ORIGIN)).unwrap_or(0);
            if at >= n {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "catch-up did not finish within an hour");
            std::thread::sleep(Duration::from_millis(100));
        }
        let secs = started.elapsed().as_secs_f64();
        // Then until its merged view has indexed every entry.
        loop {
            let s = rt.block_on(index_status(certs, port))?;
            anyhow::ensure!(s.failure.is_empty(), "the fresh node's indexer failed: {}", s.failure);
            if s.indexed_entries >= n && s.lag_entries == 0 {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "indexing did not finish within an hour");
            std::thread::sleep(Duration::from_millis(20));
        }
        let indexed_secs = started.elapsed().as_secs_f64();
        let peak = peak_rss_kib(fresh.child.id()).unwrap_or(0) as f64 / 1024.0;
        fresh.stop()?;
        let rate = n as f64 / secs;
        let indexed_rate = n as f64 / indexed_secs;
        let mb = journal_bytes as f64 / 1e6 / secs;
        report(
            args.json,
            format!("run {run}: chain {rate:.0} records/s, {mb:.1} MB/s (verified, durable) in {secs:.1} s; merged view indexed at {indexed_rate:.0} records/s ({indexed_secs:.1} s, ratio {:.2}); fresh node peak RSS {peak:.1} MB", indexed_rate / rate),
            serde_json::json!({
                "bench": "sync_catchup", "run": run, "records": n,
                "catchup_records_per_s": rate, "catchup_mb_per_s": mb,
                "catchup_indexed_records_per_s": indexed_rate, "indexed_to_chain": indexed_rate / rate,
                "fresh_node_peak_rss_mb": peak, "filesystem": fs,
            }),
        );
        indexed_rates.push(indexed_rate);
        ratios.push(indexed_rate / rate);
        rates.push(rate);
        mbs.push(mb);
        rss_b.push(peak);
        let _ = std::fs::remove_dir_all(&data);
    }
    let source_peak = peak_rss_kib(source.child.id()).unwrap_or(0) as f64 / 1024.0;
    source.stop()?;
    let (m_rate, m_mb, m_rss) = (median(&mut rates), median(&mut mbs), median(&mut rss_b));
    let (m_indexed, m_ratio) = (median(&mut indexed_rates), median(&mut ratios));
    report(
        args.json,
        format!("catch-up median: chain {m_rate:.0} records/s, {m_mb:.1} MB/s; merged view indexed {m_indexed:.0} records/s (ratio {m_ratio:.2}); peak RSS: fresh node {m_rss:.1} MB, source node {source_peak:.1} MB (includes its own publishing)"),
        serde_json::json!({
            "bench": "sync_catchup", "summary": true, "runs": args.runs, "records": n,
            "catchup_records_per_s": m_rate, "catchup_mb_per_s": m_mb,
            "catchup_indexed_records_per_s": m_indexed, "indexed_to_chain": m_ratio,
            "fresh_node_peak_rss_mb": m_rss, "source_node_peak_rss_mb": source_peak, "filesystem": fs,
        }),
    );
    let _ = std::fs::remove_dir_all(&source_data);
    Ok(())
}

fn live(args: &SyncArgs, work: &Path, certs: &Path, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let ports = [free_port()?, free_port()?, free_port()?];
    let regions = [ORIGIN, "320000", "310000"];
    let mut nodes: Vec<NodeProcess> = Vec::new();
    for i in 0..3 {
        let data = work.join(format!("data-live-{i}"));
        let _ = std::fs::remove_dir_all(&data);
        let peers: Vec<(&str, u16)> = (0..3).filter(|j| *j != i).map(|j| (regions[j], ports[j])).collect();
        nodes.push(start_node_of(work, &data, ports[i], regions[i], &peers)?);
    }
    std::thread::sleep(Duration::from_secs(1));
    let total = args.live_rate * args.live_seconds;
    // Generous: the observers stop as soon as they have seen every record.
    let until = Instant::now() + Duration::from_secs(args.live_seconds * 3 + 10);
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (lat_b, lat_c, sent, lag_samples) = rt.block_on(async {
        let b = tokio::spawn(observe(certs.to_path_buf(), ports[1], ORIGIN, total as usize, until));
        let c = tokio::spawn(observe(certs.to_path_buf(), ports[2], ORIGIN, total as usize, until));
        // The origin's indexer lag, sampled every 10 ms while publishing.
        let (lag_certs, lag_port, on) = (certs.to_path_buf(), ports[0], sampling.clone());
        let lags = tokio::spawn(async move {
            let mut samples = Vec::new();
            while on.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(s) = index_status(&lag_certs, lag_port).await {
                    samples.push((s.lag_seconds * 1e6) as i64);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            samples
        });
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sent = publish_paced(certs, ports[0], ORIGIN, args.live_rate, total, 99).await?;
        println!("published {sent} records in {:.1} s", started.elapsed().as_secs_f64());
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        let lag_samples = lags.await?;
        let lat_b = b.await??;
        let lat_c = c.await??;
        anyhow::Ok((lat_b, lat_c, sent, lag_samples))
    })?;
    for n in nodes {
        n.stop()?;
    }
    if !args.json {
        println!(
            "# bench sync (b) live: {sent} records at {} records/s published at {ORIGIN}, mesh of 3 node processes, indexers running",
            args.live_rate
        );
    }
    let mut all = Vec::new();
    for (name, v) in [("320000", lat_b), ("310000", lat_c)] {
        let seen = v.len();
        all.extend_from_slice(&v);
        let (p50, p99, max) = (percentile_ms(&v, 0.5), percentile_ms(&v, 0.99), percentile_ms(&v, 1.0));
        report(
            args.json,
            format!("to {name}: {seen} records seen; latency p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms"),
            serde_json::json!({"bench": "sync_live", "to": name, "seen": seen, "live_p50_ms": p50, "live_p99_ms": p99, "live_max_ms": max}),
        );
    }
    let lags = lag_samples;
    let samples = lags.len();
    let (lag_p50, lag_p99, lag_max) = (
        percentile_ms(&lags, 0.5),
        percentile_ms(&lags, 0.99),
        percentile_ms(&lags, 1.0),
    );
    let (p50, p99) = (percentile_ms(&all, 0.5), percentile_ms(&all, 0.99));
    report(
        args.json,
        format!("origin's merged-view lag ({samples} samples every 10 ms): p50 {lag_p50:.1} ms, p99 {lag_p99:.1} ms, max {lag_max:.1} ms; live latency both peers p50 {p50:.1} ms, p99 {p99:.1} ms"),
        serde_json::json!({
            "bench": "sync_live", "summary": true, "rate": args.live_rate, "records": sent,
            "live_p50_ms": p50, "live_p99_ms": p99, "index_lag_p50_ms": lag_p50,
            "index_lag_p99_ms": lag_p99, "index_lag_max_ms": lag_max, "index_lag_samples": samples,
        }),
    );
    Ok(())
}
