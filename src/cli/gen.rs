//! `cxnode gen`: realistic, valid credit records as JSON Lines, for trying a node out.

use crate::record::{RecordGenerator, Region};
use std::io::{BufWriter, Write};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct GenArgs {
    /// The publishing province (GB/T 2260 code).
    #[arg(long)]
    region: String,
    #[arg(long, default_value_t = 1000)]
    count: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub fn run(args: GenArgs) -> anyhow::Result<ExitCode> {
    let region = Region::parse(&args.region)?;
    let mut gen = RecordGenerator::new(args.seed, region);
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for _ in 0..args.count {
        writeln!(out, "{}", gen.next_line())?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
