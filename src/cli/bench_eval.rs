//! `cxnode bench evaluate`: the regional evaluation (issue 11) of one quarter over a store holding
//! many provinces' logs, as the national hub's node would hold them.
//!
//! The store is built in this process (a node process per province would cap the set-up at a
//! handful of origins): each province's records come from the generator, are chained and covered
//! by a checkpoint signed with that province's node key (certificates from a bench CA), and are
//! stored through the replica path (`Store::commit_replicated_group`, one group per round of all
//! provinces, so the journal interleaves them as a replica's does); then the merged view is
//! indexed. By default every entry is appended now, so every entry is in the quarter evaluated:
//! the worst case, where the evaluation must read everything; `--spread-days N` spreads the
//! appends over the last N days instead, so the quarter is part of a longer history.
//!
//! Each run opens the store, resets this process's peak RSS, and times, on the same store:
//! - the baseline: one sequential scan of the whole journal, every frame read and decoded and
//!   every operation parsed (`evaluate::facts::read`) on `EVALUATE_THREADS` threads: the floor of
//!   any evaluation that looks at every entry;
//! - the evaluation itself (`delivery::evaluation::evaluate_view`, the code `Operations.Evaluate`
//!   and `cxnode evaluate --data` run).

use super::bench_kit::{bench_certs, files, filesystem_of, median, now_micros, peak_rss_kib, report, WorkDir};
use crate::log::{ChainHead, Checkpoint, Entry};
use crate::pki::NodeSigner;
use crate::record::{parse_operation, RecordGenerator, Region};
use crate::store::journal::{Frame, JournalError, JournalPos};
use crate::store::{ReplicaOutcome, Store, StoreConfig};
use crate::sync::Covered;
use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

/// Entries per origin per replica group while building the store (what a link batch holds).
const BUILD_GROUP_ENTRIES: u64 = 5_000;
/// Frames the baseline parses at once (as the evaluation's step).
const BASELINE_STEP: usize = crate::delivery::evaluation::EVALUATE_STEP_ENTRIES;

#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// Records in the store, over all provinces.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Provinces the records come from (the first N in code order; at most 31).
    #[arg(long, default_value_t = 31)]
    origins: usize,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Spread the appends evenly over this many days up to now (0: all now, so every entry is in
    /// the quarter evaluated; 365: a quarter holds about a quarter of the store).
    #[arg(long, default_value_t = 0)]
    spread_days: u32,
    /// Working directory (default: a new directory under the system temp dir, removed after).
    /// A store already built there with the same records and origins is reused.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// One JSON object per run and a summary object, one per line, instead of text.
    #[arg(long)]
    json: bool,
    /// Internal: run one measurement ("baseline" or "evaluate") on the store in --dir in this
    /// process and print it as JSON (each measurement runs in a fresh process, so that its peak
    /// RSS is its own).
    #[arg(long, hide = true)]
    measure: Option<String>,
}

/// What one measurement process reports.
#[derive(serde::Serialize, serde::Deserialize)]
struct Measured {
    seconds: f64,
    entries: u64,
    peak_rss_mb: f64,
    /// Resident after opening the store, before the measurement.
    open_rss_mb: f64,
}

pub fn run(args: EvaluateArgs) -> anyhow::Result<ExitCode> {
    if let Some(what) = &args.measure {
        let dir = args.dir.as_deref().context("--measure needs --dir")?;
        println!("{}", serde_json::to_string(&measure(&dir.join("data"), what)?)?);
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::ensure!(
        (1..=Region::all().len()).contains(&args.origins),
        "--origins: between 1 and {} (the provinces)",
        Region::all().len()
    );
    anyhow::ensure!(
        args.records >= args.origins as u64,
        "--records: at least one per origin"
    );
    let work = WorkDir::new(args.dir.clone(), "evaluate")?;
    let data = work.path.join("data");
    let origins = &Region::all()[..args.origins];
    let marker = work.path.join("built");
    let shape = format!(
        "{} records, {} origins, appended over {} days\n",
        args.records, args.origins, args.spread_days
    );
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(shape.as_str()) {
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        let started = Instant::now();
        build(&work.path, &data, args.records, origins, args.spread_days)?;
        std::fs::write(&marker, &shape)?;
        report(
            args.json,
            format!(
                "built: {} in {:.1} s ({:.0} MB on {})",
                shape.trim(),
                started.elapsed().as_secs_f64(),
                super::bench_kit::dir_bytes(&data) as f64 / 1e6,
                filesystem_of(&data)
            ),
            serde_json::json!({"bench": "evaluate", "part": "build", "records": args.records, "origins": args.origins,
                "seconds": started.elapsed().as_secs_f64(), "disk_bytes": super::bench_kit::dir_bytes(&data)}),
        );
    }
    let (mut eval_s, mut base_s, mut eval_rss, mut base_rss) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 1..=args.runs.max(1) {
        let base = measure_in_child(&work.path, "baseline")?;
        let eval = measure_in_child(&work.path, "evaluate")?;
        base_s.push(base.seconds);
        base_rss.push(base.peak_rss_mb);
        eval_s.push(eval.seconds);
        eval_rss.push(eval.peak_rss_mb);
        report(
            args.json,
            format!(
                "run {run}: evaluate {:.2} s ({:.0} store entries/s, {} records judged), peak RSS {:.0} MB; baseline (scan + parse every entry) {:.2} s, {:.0} MB; ratio {:.2}; store opened: {:.0} MB",
                eval.seconds,
                base.entries as f64 / eval.seconds,
                eval.entries,
                eval.peak_rss_mb,
                base.seconds,
                base.peak_rss_mb,
                eval.seconds / base.seconds,
                eval.open_rss_mb,
            ),
            serde_json::json!({"bench": "evaluate", "run": run, "entries": base.entries, "records_judged": eval.entries, "evaluate_seconds": eval.seconds,
                "evaluate_peak_rss_mb": eval.peak_rss_mb, "baseline_seconds": base.seconds,
                "baseline_peak_rss_mb": base.peak_rss_mb, "store_open_rss_mb": eval.open_rss_mb}),
        );
    }
    let (e, b) = (median(&mut eval_s), median(&mut base_s));
    let (er, br) = (median(&mut eval_rss), median(&mut base_rss));
    report(
        args.json,
        format!(
            "median of {}: evaluate {e:.2} s, {er:.0} MB; baseline {b:.2} s, {br:.0} MB; ratio {:.2} ({} records, {} origins, on {})",
            args.runs.max(1),
            e / b,
            args.records,
            args.origins,
            filesystem_of(&data)
        ),
        serde_json::json!({"bench": "evaluate", "summary": true, "records": args.records, "origins": args.origins,
            "evaluate_seconds": e, "evaluate_peak_rss_mb": er, "baseline_seconds": b, "baseline_peak_rss_mb": br,
            "ratio": e / b, "filesystem": filesystem_of(&data)}),
    );
    work.done();
    Ok(ExitCode::SUCCESS)
}

/// One measurement in a fresh process of this binary.
fn measure_in_child(work: &Path, what: &str) -> anyhow::Result<Measured> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["bench", "evaluate", "--measure", what, "--dir"])
        .arg(work)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "the {what} measurement failed ({})", out.status);
    serde_json::from_slice(&out.stdout).with_context(|| format!("reading the {what} measurement"))
}

/// `what` ("baseline" or "evaluate") on the store in `data`, in this process.
fn measure(data: &Path, what: &str) -> anyhow::Result<Measured> {
    crate::telemetry::init(crate::config::LogFormat::Human, "warn");
    let pid = std::process::id();
    let mb = || peak_rss_kib(pid).unwrap_or(0) as f64 / 1024.0;
    let (store, _) = Store::open(&StoreConfig::new(data)).context("opening the bench store")?;
    let calendar = crate::node::load_calendar(None)?;
    let open_rss_mb = mb();
    let started = Instant::now();
    let entries = match what {
        "baseline" => baseline(&store)?,
        "evaluate" => {
            let (from, to) = super::bench_kit::last_quarter();
            let r = crate::delivery::evaluation::evaluate_view(
                store.view(),
                &store.reader(),
                &calendar,
                from,
                to,
                &[],
                None,
            )?;
            let judged: u64 = r
                .origins
                .iter()
                .map(|o| o.quality.new_records + o.quality.amendments)
                .sum();
            anyhow::ensure!(
                judged > 0,
                "the evaluation judged no record: the bench store is not in the period"
            );
            judged
        }
        other => anyhow::bail!("--measure {other}: baseline or evaluate"),
    };
    Ok(Measured {
        seconds: started.elapsed().as_secs_f64(),
        entries,
        peak_rss_mb: mb(),
        open_rss_mb,
    })
}

/// The store: `records` generated records over `origins`, stored as a replica stores them.
fn build(work: &Path, data: &Path, records: u64, origins: &[Region], spread_days: u32) -> anyhow::Result<()> {
    let certs = work.join("certs");
    let codes: Vec<String> = origins.iter().map(|r| r.code().to_string()).collect();
    bench_certs(&certs, &codes.iter().map(String::as_str).collect::<Vec<_>>())?;
    let signers = codes
        .iter()
        .map(|c| NodeSigner::load(&files(&certs, &format!("node-{c}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut cfg = StoreConfig::new(data);
    cfg.local = Some(Region::NATIONAL_HUB);
    let (mut store, _) = Store::open(&cfg)?;
    let mut generators: Vec<_> = origins
        .iter()
        .enumerate()
        .map(|(i, r)| RecordGenerator::new(i as u64 + 1, *r))
        .collect();
    let mut heads = vec![ChainHead::default(); origins.len()];
    let n = origins.len() as u64;
    let mut left: Vec<u64> = (0..n).map(|i| records / n + u64::from(i < records % n)).collect();
    let spread_micros = i64::from(spread_days) * 86_400_000_000;
    let start = now_micros() - spread_micros;
    let mut stored = 0u64;
    while left.iter().any(|l| *l > 0) {
        let mut group = Vec::new();
        for (i, origin) in origins.iter().enumerate() {
            let take = left[i].min(BUILD_GROUP_ENTRIES);
            if take == 0 {
                continue;
            }
            left[i] -= take;
            let mut entries = Vec::with_capacity(take as usize);
            for _ in 0..take {
                let op = parse_operation(generators[i].next_line().as_bytes())
                    .map_err(|r| anyhow::anyhow!("a generated record was refused: {r:?}"))?;
                // Evenly over the spread, in journal order (each origin's clock moves forward).
                let at = if spread_micros == 0 {
                    now_micros()
                } else {
                    start + (spread_micros as f64 * stored as f64 / records as f64) as i64
                };
                stored += 1;
                let e = Entry::new(
                    *origin,
                    heads[i].next_seq,
                    heads[i].head_hash,
                    at,
                    op.canonical().to_vec(),
                );
                heads[i].advance(&e)?;
                entries.push(e);
            }
            let checkpoint = Checkpoint::sign(*origin, heads[i], now_micros() / 1_000_000, &signers[i])
                .map_err(|e| anyhow::anyhow!("signing a checkpoint: {e}"))?;
            group.push(Covered {
                origin: *origin,
                entries,
                checkpoint,
            });
        }
        let refs: Vec<&Covered> = group.iter().collect();
        for outcome in store.commit_replicated_group(Region::NATIONAL_HUB, &refs)? {
            anyhow::ensure!(
                matches!(outcome, ReplicaOutcome::Stored { .. }),
                "the bench store refused a group: {outcome:?}"
            );
        }
    }
    store.index_view()?;
    Ok(())
}

/// One sequential pass over the journal: every frame decoded, every entry's operation parsed.
/// Returns the entries.
fn baseline(store: &Store) -> anyhow::Result<u64> {
    let reader = store.reader();
    let mut entries = 0u64;
    let mut step: Vec<Entry> = Vec::with_capacity(BASELINE_STEP);
    let mut parsed = 0u64;
    // The evaluation's own reader: the same threads and parser.
    let mut parse = |step: &mut Vec<Entry>| {
        parsed += crate::delivery::evaluation::read_all(step)
            .iter()
            .filter(|op| op.is_ok())
            .count() as u64;
        step.clear();
    };
    reader.scan(JournalPos(0), store.journal_end(), |_, _, frame| {
        if let Frame::Entry(e) = frame {
            entries += 1;
            step.push(e);
            if step.len() == BASELINE_STEP {
                parse(&mut step);
            }
        }
        Ok::<_, JournalError>(true)
    })?;
    parse(&mut step);
    anyhow::ensure!(
        parsed == entries,
        "the baseline could not read {} operations",
        entries - parsed
    );
    Ok(entries)
}
