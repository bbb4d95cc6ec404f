//! `cxnode bench validate`: the CPU cost of reading records, in this process, on one thread, with
//! no disk and no network: full validation (`parse_operation`, what a node pays for every record
//! a publisher sends), and the index facts of a stored entry (`summarize`, what the merged view
//! pays for every entry of every origin), each against serde_json parsing the same bytes into a
//! `serde_json::Value` in the same run (the floor any reader of this JSON pays), with the ratios.
//! Not a test: nothing here asserts a speed.

use super::bench_kit::{median, report};
use crate::record::{parse_operation, summarize, RecordGenerator, Region};
use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// Generated records read per pass.
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// One JSON object per run and a summary object, one per line, instead of text.
    #[arg(long)]
    json: bool,
}

/// Records per second of `f` over every item.
fn rate<T>(items: &[T], mut f: impl FnMut(&T) -> bool) -> anyhow::Result<f64> {
    let start = Instant::now();
    for item in items {
        if !f(item) {
            anyhow::bail!("a generated record did not read back");
        }
    }
    Ok(items.len() as f64 / start.elapsed().as_secs_f64())
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let runs = args.runs.max(1);
    let mut gen = RecordGenerator::new(42, Region::parse("330000")?);
    let lines: Vec<String> = (0..args.records).map(|_| gen.next_line()).collect();
    let stored: Vec<Vec<u8>> = lines
        .iter()
        .map(|l| parse_operation(l.as_bytes()).map(|op| op.canonical().to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|r| anyhow::anyhow!("generated record invalid: {r}"))?;
    let avg = lines.iter().map(String::len).sum::<usize>() as f64 / lines.len().max(1) as f64;
    if !args.json {
        println!(
            "# bench validate: {} records ({avg:.0} bytes avg), {runs} runs, one thread, in memory",
            args.records
        );
    }
    let value = |b: &[u8]| black_box(serde_json::from_slice::<serde_json::Value>(b)).is_ok();
    let (mut validate, mut base_lines, mut summary, mut base_stored) = (vec![], vec![], vec![], vec![]);
    for run in 1..=runs {
        let b_lines = rate(&lines, |l| value(l.as_bytes()))?;
        let v = rate(&lines, |l| black_box(parse_operation(l.as_bytes())).is_ok())?;
        let b_stored = rate(&stored, |s| value(s))?;
        let s = rate(&stored, |s| black_box(summarize(s)).is_ok())?;
        report(
            args.json,
            format!(
                "run {run}: validate {v:.0} records/s ({:.2} x serde_json Value {b_lines:.0}/s); summarize {s:.0} entries/s ({:.2} x Value {b_stored:.0}/s)",
                v / b_lines,
                s / b_stored
            ),
            serde_json::json!({
                "bench": "validate", "run": run, "records": args.records,
                "validate_records_per_s": v, "json_value_baseline_records_per_s": b_lines,
                "validate_to_baseline": v / b_lines,
                "summarize_entries_per_s": s, "json_value_baseline_stored_per_s": b_stored,
                "summarize_to_baseline": s / b_stored,
            }),
        );
        validate.push(v);
        base_lines.push(b_lines);
        summary.push(s);
        base_stored.push(b_stored);
    }
    let (v, b_lines) = (median(&mut validate), median(&mut base_lines));
    let (s, b_stored) = (median(&mut summary), median(&mut base_stored));
    report(
        args.json,
        format!(
            "median: validate {v:.0} records/s ({:.2} x serde_json Value {b_lines:.0}/s); summarize {s:.0} entries/s ({:.2} x Value {b_stored:.0}/s)",
            v / b_lines,
            s / b_stored
        ),
        serde_json::json!({
            "bench": "validate", "summary": true, "runs": runs, "records": args.records,
            "validate_records_per_s": v, "json_value_baseline_records_per_s": b_lines,
            "validate_to_baseline": v / b_lines,
            "summarize_entries_per_s": s, "json_value_baseline_stored_per_s": b_stored,
            "summarize_to_baseline": s / b_stored,
        }),
    );
    Ok(ExitCode::SUCCESS)
}
