//! `cxnode recover --config node.toml --from-peer ADDR`: brings a stopped node's store back from
//! a replica (its own log after a restore from an old backup, or a damaged journal). See
//! `link::recover` for what it checks.

use crate::config::Config;
use crate::link::recover::{recover, RecoverReport};
use crate::record::Region;
use crate::sync::peer::PeerConfig;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct RecoverArgs {
    /// The node's config file. The node must be stopped.
    #[arg(long)]
    config: PathBuf,
    /// A peer (host:port) that holds a replica. A configured peer's region and server name are
    /// taken from the config.
    #[arg(long)]
    from_peer: String,
    /// The peer's region, if it is not a configured peer: its certificate must carry
    /// `cx://node/<region>`.
    #[arg(long)]
    peer_region: Option<String>,
    /// Name the peer's certificate must carry (default: the configured one, or the host).
    #[arg(long)]
    server_name: Option<String>,
}

fn print(report: &RecoverReport) {
    for q in &report.quarantined {
        println!(
            "journal damaged at position {} ({}); cut there, kept for inspection:",
            q.cut_at.0, q.reason
        );
        for f in &q.files {
            println!("  {}", f.display());
        }
    }
    println!("{:<8} {:>10} {:>10} {:>10}", "origin", "before", "after", "peer");
    let mut origins: Vec<&Region> = report
        .before
        .keys()
        .chain(report.after.keys())
        .chain(report.peer.keys())
        .collect();
    origins.sort();
    origins.dedup();
    for o in origins {
        let get = |m: &std::collections::BTreeMap<Region, u64>| m.get(o).copied().unwrap_or(0);
        let own = if report.local == Some(*o) { "  (own log)" } else { "" };
        println!(
            "{:<8} {:>10} {:>10} {:>10}{own}",
            o.to_string(),
            get(&report.before),
            get(&report.after),
            get(&report.peer)
        );
    }
    println!("entries stored from the peer: {}", report.appended);
    for r in &report.refused {
        println!("refused: {r}");
    }
}

pub fn run(args: RecoverArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let configured = config.peers.iter().find(|p| p.address == args.from_peer);
    let region = match (&args.peer_region, configured) {
        (Some(r), _) => Region::parse_node(r).map_err(|e| anyhow::anyhow!("--peer-region: {e}"))?,
        (None, Some(p)) => p.region,
        (None, None) => anyhow::bail!(
            "{} is not a configured peer: pass --peer-region (the region its node certificate names)",
            args.from_peer
        ),
    };
    let peer = PeerConfig {
        address: args.from_peer.clone(),
        region,
        server_name: args
            .server_name
            .clone()
            .or_else(|| configured.and_then(|p| p.server_name.clone())),
    };
    let report = super::runtime()?
        .block_on(recover(&config, &peer))
        .with_context(|| format!("recovering {} from {}", config.store.dir.display(), peer.address))?;
    print(&report);
    if report.complete() {
        println!(
            "recovered: start the node again; `cxnode verify --data {}` checks the store",
            config.store.dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for (origin, after, before) in report.lost() {
        eprintln!(
            "origin {origin}: held up to seq {before} before the damage but only {after} now; the rest is only in the quarantined files: recover again from a peer that holds it"
        );
    }
    if let Some(l) = report.local {
        let (after, peer) = (
            report.after.get(&l).copied().unwrap_or(0),
            report.peer.get(&l).copied().unwrap_or(0),
        );
        if after < peer {
            eprintln!("this node's own log ({l}) is at {after}, the peer holds {peer}: not recovered; do not publish");
        }
    }
    Ok(ExitCode::from(2))
}
