//! `cxnode verify` and `cxnode reindex`: offline checks and repair of a store's indexes.

use crate::node::FEDERATION_CA_FILE;
use crate::pki::SignatureVerifier;
use crate::store::verify::verify_store;
use crate::store::{Store, StoreConfig};
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The node's data directory (node.data_dir). The node must be stopped.
    #[arg(long)]
    data: PathBuf,
    /// Federation CA to check checkpoint signatures with (default: the copy the node keeps in the
    /// data directory).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The federation CRL: a checkpoint signed after its signer's revocation is refused.
    #[arg(long)]
    crl: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ReindexArgs {
    /// The node's data directory (node.data_dir). The node must be stopped.
    #[arg(long)]
    data: PathBuf,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let cfg = StoreConfig::new(&args.data);
    if !cfg.journal_dir().is_dir() {
        anyhow::bail!("{} holds no journal: is it a node's data_dir?", args.data.display());
    }
    let ca = args.ca.unwrap_or_else(|| args.data.join(FEDERATION_CA_FILE));
    let verifier = if ca.is_file() {
        Some(SignatureVerifier::new(&ca, args.crl.as_deref()).with_context(|| format!("loading CA {}", ca.display()))?)
    } else {
        eprintln!(
            "warning: no CA at {}: checkpoint signatures are not checked (pass --ca)",
            ca.display()
        );
        None
    };
    let report = verify_store(
        &cfg,
        verifier.as_ref().map(|v| v as &dyn crate::log::CheckpointVerifier),
    )?;
    println!("frames:      {}", report.frames);
    println!("entries:     {}", report.entries);
    println!(
        "checkpoints: {} ({} signatures checked)",
        report.checkpoints, report.signatures_checked
    );
    for (origin, head) in &report.heads {
        println!(
            "origin {origin}: {} entries, head {}",
            head.seq(),
            hex::encode(head.head_hash)
        );
    }
    println!(
        "merged view: {} entries indexed ({} undecodable), checked fact by fact against a rebuild from the journal",
        report.view_entries, report.view_undecodable
    );
    for u in &report.undecodable {
        println!("undecodable entry {u}");
    }
    if let Some(at) = report.torn_tail_at {
        println!("note: the journal ends in a torn frame at position {at} (a crash mid-write); the node truncates it at start");
    }
    if report.index_behind_bytes > 0 {
        println!(
            "note: the index is {} bytes behind the journal; the node catches up at start",
            report.index_behind_bytes
        );
    }
    if report.ok() {
        println!("OK: store verified");
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &report.problems {
            println!("DAMAGE: {p}");
        }
        if report.problems_total > report.problems.len() as u64 {
            println!(
                "... and {} more problems",
                report.problems_total - report.problems.len() as u64
            );
        }
        println!("FAILED: {} problems", report.problems_total);
        Ok(ExitCode::FAILURE)
    }
}

pub fn reindex(args: ReindexArgs) -> anyhow::Result<ExitCode> {
    let cfg = StoreConfig::new(&args.data);
    if !cfg.journal_dir().is_dir() {
        anyhow::bail!("{} holds no journal: is it a node's data_dir?", args.data.display());
    }
    let frames = Store::reindex(&cfg)?;
    println!("reindexed {frames} frames from the journal");
    Ok(ExitCode::SUCCESS)
}
