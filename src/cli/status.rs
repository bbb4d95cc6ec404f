//! `cxnode status --node ADDR`: a node's sync health as a table (peers with what they sent and
//! how much of it was duplicate, then origins with the peer each is fed by), from
//! `Operations.SyncStatus`. Needs an operator certificate (or one the policy grants SyncStatus).

use crate::record::Region;
use crate::rpc::client::explain_status;
use crate::rpc::pb;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    node: super::NodeClientArgs,
}

fn region(code: u32) -> String {
    Region::from_code(code)
        .map(|r| r.to_string())
        .unwrap_or_else(|_| code.to_string())
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let s = super::runtime()?.block_on(async {
        let channel = args.node.channel().await?;
        let mut client = pb::operations_client::OperationsClient::new(channel);
        client
            .sync_status(pb::SyncStatusRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|e| anyhow::anyhow!("status from {}: {}", args.node.node, explain_status(&e)))
    })?;
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    println!("node {}", region(s.region));
    println!(
        "{:<24} {:<22} {:<9} {:>10} {:>7} {:>10} {:>10}  last error",
        "peer", "identity", "link", "contact", "errors", "received", "duplicates"
    );
    for p in &s.peers {
        let contact = if p.last_contact_unix_millis > 0 {
            format!("{:.1}s ago", (now_ms - p.last_contact_unix_millis) as f64 / 1000.0)
        } else {
            "never".to_string()
        };
        let link = if p.connected { "up" } else { "down" };
        println!(
            "{:<24} {:<22} {:<9} {:>10} {:>7} {:>10} {:>10}  {}",
            p.address,
            p.identity,
            link,
            contact,
            p.errors_total,
            p.entries_received,
            p.duplicates_dropped,
            p.last_error
        );
    }
    println!(
        "{:<8} {:>10} {:>10} {:>8} {:>9}  {:<24} {:>8}  state",
        "origin", "local", "best peer", "lag", "lag s", "fed by", "switches"
    );
    let mut problems = 0;
    for o in &s.origins {
        let state = if o.forked {
            problems += 1;
            "FORKED"
        } else if o.stalled {
            problems += 1;
            "STALLED"
        } else if o.lag_entries > 0 {
            "lagging"
        } else {
            "in sync"
        };
        let feeder = if o.origin == s.region {
            "(this node)"
        } else if o.feeder.is_empty() {
            "-"
        } else {
            &o.feeder
        };
        println!(
            "{:<8} {:>10} {:>10} {:>8} {:>9.1}  {:<24} {:>8}  {state}",
            region(o.origin),
            o.local_head,
            o.best_peer_head,
            o.lag_entries,
            o.lag_seconds,
            feeder,
            o.feeder_switches
        );
    }
    if let Some(i) = &s.index {
        let state = if !i.failure.is_empty() {
            problems += 1;
            format!("STOPPED: {}", i.failure)
        } else if i.lag_entries > i.lag_entries_max {
            "at its bound: publishing and replication wait for it".to_string()
        } else if i.lag_entries > 0 {
            "indexing".to_string()
        } else {
            "caught up".to_string()
        };
        println!(
            "merged view: {} entries indexed, {} behind the journal ({:.1} s; bound {}), {} undecodable; {state}",
            i.indexed_entries, i.lag_entries, i.lag_seconds, i.lag_entries_max, i.undecodable_entries
        );
    }
    for f in &s.forks {
        println!(
            "fork of {}: evidence kept (checkpoint at seq {})",
            region(f.origin),
            f.second.as_ref().map(|c| c.seq).unwrap_or(0)
        );
    }
    for c in &s.certificates {
        let days = (c.not_after_unix_seconds - now_ms / 1000) / 86_400;
        println!("certificate {} expires in {days} days", c.identity);
    }
    if !s.revocation_on {
        println!("revocation: off (tls.crl is not set)");
    } else if s.crl_next_update_unix_seconds > 0 {
        let hours = (s.crl_next_update_unix_seconds - now_ms / 1000) / 3600;
        println!("revocation list: next update due in {hours} h");
    }
    for a in &s.alarms {
        println!("ALARM: {a}");
        problems += 1;
    }
    Ok(if problems > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
