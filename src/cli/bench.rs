//! `cxnode bench publish`: N realistic records published over mutual TLS in batches, durably, to a
//! real node process; prints the median rate of several runs, the node's peak RSS and bytes on disk
//! per record, and, measured in the same run, the rate of a raw sled batch insert of the same bytes
//! (flushed per batch) as the baseline, with the ratio. Not a test: nothing here asserts a speed.

use super::bench_kit::{
    bench_certs, dir_bytes, filesystem_of, free_port, median, peak_rss_kib, publish_args, report, start_node_of,
    NodeProcess,
};
use super::publish::publish;
use crate::record::{RecordGenerator, Region};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Durable publishing over mTLS against a raw sled baseline.
    /// Replication: (a) catch-up of a fresh node from a peer, (b) live propagation latency.
    Sync(super::bench_sync::SyncArgs),
    /// Department feeds: catch-up of the whole log against a selective filter, profile look-ups,
    /// live fan-out to many subscribers.
    Feed(super::bench_feed::FeedArgs),
    /// The regional evaluation of one quarter over a store of many provinces' logs, built in
    /// this process, against a scan that reads and parses every entry.
    Evaluate(super::bench_eval::EvaluateArgs),
    /// The CPU cost of reading records on one thread: full validation and the merged view's
    /// per-entry decode, each against serde_json parsing the same bytes into a Value.
    Validate(super::bench_validate::ValidateArgs),
    Publish {
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Working directory (default: a new directory under the system temp dir, removed after).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// One JSON object per run and a summary object, one per line, instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Sync(a) => super::bench_sync::run(a),
        BenchCommand::Feed(a) => super::bench_feed::run(a),
        BenchCommand::Evaluate(a) => super::bench_eval::run(a),
        BenchCommand::Validate(a) => super::bench_validate::run(a),
        BenchCommand::Publish {
            records,
            runs,
            batch,
            dir,
            json,
        } => bench_publish(records, runs.max(1), batch, dir, json),
    }
}

fn start_node(work: &Path, data: &Path, port: u16) -> anyhow::Result<NodeProcess> {
    start_node_of(work, data, port, "330000", &[])
}

/// The baseline: the same lines inserted into a raw sled tree keyed by record id (as a record
/// store in sled would be), with the node's sled settings, in batches flushed one by one.
fn sled_baseline(dir: &Path, lines: &[String], keys: &[[u8; 16]], batch: usize) -> anyhow::Result<f64> {
    let _ = std::fs::remove_dir_all(dir);
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(crate::store::StoreConfig::INDEX_CACHE_BYTES_DEFAULT)
        .mode(sled::Mode::HighThroughput)
        .open()?;
    let tree = db.open_tree("baseline")?;
    let start = Instant::now();
    for (chunk, chunk_keys) in lines.chunks(batch).zip(keys.chunks(batch)) {
        let mut b = sled::Batch::default();
        for (line, key) in chunk.iter().zip(chunk_keys) {
            // An amendment reuses its record's id: the baseline overwrites, like a record store.
            b.insert(&key[..], line.as_bytes());
        }
        tree.apply_batch(b)?;
        db.flush()?;
    }
    let rate = lines.len() as f64 / start.elapsed().as_secs_f64();
    drop(tree);
    drop(db);
    let _ = std::fs::remove_dir_all(dir);
    Ok(rate)
}

fn bench_publish(
    records: u64,
    runs: usize,
    batch: usize,
    dir: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let dir = super::bench_kit::WorkDir::new(dir, "publish")?;
    let work = dir.path.clone();
    let certs = work.join("certs");
    bench_certs(&certs, &["330000"])?;
    let file = work.join("records.jsonl");
    let mut gen = RecordGenerator::new(42, Region::parse("330000")?);
    let lines: Vec<String> = (0..records).map(|_| gen.next_line()).collect();
    let record_bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let keys: Vec<[u8; 16]> = lines
        .iter()
        .map(|l| crate::record::parse_operation(l.as_bytes()).map(|op| op.record_id().0))
        .collect::<Result<_, _>>()
        .map_err(|r| anyhow::anyhow!("generated record invalid: {r}"))?;
    {
        let mut out = BufWriter::new(std::fs::File::create(&file)?);
        for l in &lines {
            writeln!(out, "{l}")?;
        }
        out.flush()?;
    }
    let fs = filesystem_of(&work);
    if !json {
        println!(
            "# bench publish: {records} records ({:.0} bytes/record avg), batches of {batch}, {runs} runs, mTLS to a node process on loopback; store on {fs}",
            record_bytes as f64 / records as f64
        );
    }
    let rt = super::runtime()?;
    let mut ours = Vec::new();
    let mut baseline = Vec::new();
    let mut rss = Vec::new();
    let mut disk = Vec::new();
    let mut ratio_ij = Vec::new();
    for run in 1..=runs {
        let data = work.join(format!("data-{run}"));
        let _ = std::fs::remove_dir_all(&data);
        super::bench_kit::settle();
        let port = free_port()?;
        let node = start_node(&work, &data, port)?;
        let args = publish_args(&certs, &work, port, "330000", &file, batch);
        let start = Instant::now();
        let summary = rt.block_on(publish(&args))?;
        let secs = start.elapsed().as_secs_f64();
        let accepted: u64 = summary.appended.values().sum();
        let peak = peak_rss_kib(node.child.id()).unwrap_or(0);
        node.stop()?;
        let bytes = dir_bytes(&data);
        let journal = dir_bytes(&data.join("journal"));
        let index = dir_bytes(&data.join("index")) + dir_bytes(&data.join("view"));
        let rate = summary.lines as f64 / secs;
        let base = sled_baseline(&work.join("sled-baseline"), &lines, &keys, batch)?;
        report(
            json,
            format!(
                "run {run}: {rate:.0} records/s ({accepted} appended, {} duplicates, {} rejected) in {secs:.2} s; node peak RSS {:.1} MB; {:.0} bytes on disk/record (index {:.2} x journal) | raw sled {base:.0} records/s; ratio {:.2}",
                summary.duplicates,
                summary.rejected.values().sum::<u64>(),
                peak as f64 / 1024.0,
                bytes as f64 / records as f64,
                index as f64 / journal.max(1) as f64,
                rate / base
            ),
            serde_json::json!({
                "bench": "publish", "run": run, "records": records, "batch": batch,
                "publish_records_per_s": rate, "sled_baseline_records_per_s": base,
                "ratio_to_sled": rate / base, "node_peak_rss_mb": peak as f64 / 1024.0,
                "disk_bytes_per_record": bytes as f64 / records as f64,
                "journal_bytes": journal, "index_bytes": index,
                "index_to_journal": index as f64 / journal.max(1) as f64, "filesystem": fs,
            }),
        );
        ours.push(rate);
        baseline.push(base);
        rss.push(peak as f64 / 1024.0);
        disk.push(bytes as f64 / records as f64);
        ratio_ij.push(index as f64 / journal.max(1) as f64);
        let _ = std::fs::remove_dir_all(&data);
    }
    let (m_ours, m_base) = (median(&mut ours), median(&mut baseline));
    let (m_rss, m_disk, m_ij) = (median(&mut rss), median(&mut disk), median(&mut ratio_ij));
    report(
        json,
        format!(
            "median: {m_ours:.0} records/s durable over mTLS; raw sled batch insert {m_base:.0} records/s; ratio {:.2}; node peak RSS {m_rss:.1} MB; {m_disk:.0} bytes on disk per record; index {m_ij:.2} x journal",
            m_ours / m_base
        ),
        serde_json::json!({
            "bench": "publish", "summary": true, "runs": runs, "records": records,
            "publish_records_per_s": m_ours, "sled_baseline_records_per_s": m_base,
            "ratio_to_sled": m_ours / m_base, "node_peak_rss_mb": m_rss,
            "disk_bytes_per_record": m_disk, "index_to_journal": m_ij, "filesystem": fs,
        }),
    );
    dir.done();
    Ok(ExitCode::SUCCESS)
}
