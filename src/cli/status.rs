//! `cxnode status --node ADDR [--node ADDR]... [--json] [--watch [SECONDS]]`: sync health from
//! `Operations.SyncStatus`. With one node, its tables (peers with what they sent and how much was
//! duplicate, origins with the peer each is fed by, the merged view, certificates, alarms); with
//! several, the federation matrix (origins × nodes: head, lag, state) and each node's alarms.
//! `--json` prints one object per node per round (for scripts); `--watch` repeats every SECONDS
//! until Ctrl-C. Exit code 2 when anything is stalled, forked, expiring within the warning
//! window, not ready or unreachable. Needs an operator certificate (or one the policy grants
//! SyncStatus).

use crate::admin::page::origin_state;
use crate::record::Region;
use crate::rpc::client::explain_status;
use crate::rpc::pb;
use std::collections::BTreeSet;
use std::process::ExitCode;

/// Nodes one `cxnode status` asks at most.
const NODES_MAX: usize = 64;

#[derive(clap::Args)]
pub struct StatusArgs {
    /// A node's gRPC address, host:port; repeat for several (the federation matrix).
    #[arg(long = "node", required = true)]
    nodes: Vec<String>,
    #[command(flatten)]
    tls: super::ClientTlsArgs,
    /// One JSON object per node per round instead of tables.
    #[arg(long)]
    json: bool,
    /// Ask again every SECONDS (default 2) until Ctrl-C.
    #[arg(long, num_args = 0..=1, default_missing_value = "2", value_name = "SECONDS")]
    watch: Option<u64>,
}

fn region(code: u32) -> String {
    Region::code_text(code)
}

/// What is wrong at a node, one phrase each (empty: nothing).
pub fn problems(s: &pb::SyncStatusResponse) -> Vec<String> {
    let mut out = Vec::new();
    if !s.ready {
        out.push("not ready".to_string());
    }
    for o in &s.origins {
        match origin_state(o) {
            "forked" => out.push(format!("origin {} forked", region(o.origin))),
            "stalled" => out.push(format!("origin {} stalled", region(o.origin))),
            _ => {}
        }
    }
    if let Some(i) = &s.index {
        if !i.failure.is_empty() {
            out.push(format!("merged view stopped: {}", i.failure));
        }
    }
    out.extend(s.alarms.iter().cloned());
    out
}

/// One node's answer must come within this (a black-holed node is then unreachable, not a hang).
const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

async fn ask(args: &StatusArgs, node: &str) -> anyhow::Result<pb::SyncStatusResponse> {
    tokio::time::timeout(ASK_TIMEOUT, ask_now(args, node))
        .await
        .map_err(|_| anyhow::anyhow!("status from {node}: no answer within {} s", ASK_TIMEOUT.as_secs()))?
}

async fn ask_now(args: &StatusArgs, node: &str) -> anyhow::Result<pb::SyncStatusResponse> {
    let channel = args.tls.channel(node).await?;
    let mut client = pb::operations_client::OperationsClient::new(channel);
    client
        .sync_status(pb::SyncStatusRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|e| anyhow::anyhow!("status from {node}: {}", explain_status(&e)))
}

fn json_of(node: &str, s: &pb::SyncStatusResponse, now: i64) -> serde_json::Value {
    serde_json::json!({
        "node": node,
        "region": region(s.region),
        "ready": s.ready,
        "origins": s.origins.iter().map(|o| serde_json::json!({
            "origin": region(o.origin),
            "local_head": o.local_head,
            "best_peer_head": o.best_peer_head,
            "lag_entries": o.lag_entries,
            "lag_seconds": o.lag_seconds,
            "state": origin_state(o),
            "feeder": o.feeder,
        })).collect::<Vec<_>>(),
        "peers": s.peers.iter().map(|p| serde_json::json!({
            "address": p.address,
            "identity": p.identity,
            "connected": p.connected,
            "errors": p.errors_total,
            "last_error": p.last_error,
        })).collect::<Vec<_>>(),
        "certificates": s.certificates.iter().map(|c| serde_json::json!({
            "identity": c.identity,
            "role": c.role,
            "not_after_unix_seconds": c.not_after_unix_seconds,
            "days_left": (c.not_after_unix_seconds - now) / 86_400,
        })).collect::<Vec<_>>(),
        "health": s.health.iter().map(|h| serde_json::json!({
            "component": h.component, "up": h.up, "reason": h.reason,
        })).collect::<Vec<_>>(),
        "alarms": s.alarms,
        "problems": problems(s),
    })
}

/// Origins × nodes: each cell the node's head of the origin and its state there.
fn print_matrix(answers: &[(String, anyhow::Result<pb::SyncStatusResponse>)]) {
    let origins: BTreeSet<u32> = answers
        .iter()
        .filter_map(|(_, a)| a.as_ref().ok())
        .flat_map(|s| s.origins.iter().map(|o| o.origin))
        .collect();
    print!("{:<8}", "origin");
    for (node, a) in answers {
        let title = match a {
            Ok(s) => format!("{} {}", region(s.region), node),
            Err(_) => format!("? {node}"),
        };
        print!(" {title:>28}");
    }
    println!();
    for origin in origins {
        print!("{:<8}", region(origin));
        for (_, a) in answers {
            let cell = match a {
                Ok(s) => match s.origins.iter().find(|o| o.origin == origin) {
                    Some(o) if o.lag_entries > 0 => {
                        format!("{} {} (-{})", o.local_head, origin_state(o), o.lag_entries)
                    }
                    Some(o) => format!("{} {}", o.local_head, origin_state(o)),
                    None => "-".to_string(),
                },
                Err(_) => "unreachable".to_string(),
            };
            print!(" {cell:>28}");
        }
        println!();
    }
    for (node, a) in answers {
        match a {
            Ok(s) => {
                for p in s.peers.iter().filter(|p| !p.connected) {
                    println!(
                        "{node}: peer {} ({}) disconnected: {}",
                        p.address, p.identity, p.last_error
                    );
                }
                for a in &s.alarms {
                    println!("{node}: ALARM: {a}");
                }
            }
            Err(e) => println!("{node}: UNREACHABLE: {e:#}"),
        }
    }
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.nodes.len() <= NODES_MAX, "at most {NODES_MAX} --node at once");
    let every = args.watch.map(|s| std::time::Duration::from_secs(s.max(1)));
    super::runtime()?.block_on(async {
        loop {
            let mut answers = Vec::with_capacity(args.nodes.len());
            for node in &args.nodes {
                answers.push((node.clone(), ask(&args, node).await));
            }
            // A single node asked once: its error is the command's error (as before).
            if args.nodes.len() == 1 && every.is_none() && !args.json {
                let (_, answer) = answers.pop().expect("one node");
                return print_one(&answer?);
            }
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let mut bad = 0;
            if args.json {
                for (node, a) in &answers {
                    let v = match a {
                        Ok(s) => {
                            bad += usize::from(!problems(s).is_empty());
                            json_of(node, s, now)
                        }
                        Err(e) => {
                            bad += 1;
                            serde_json::json!({ "node": node, "error": format!("{e:#}") })
                        }
                    };
                    println!("{v}");
                }
            } else if answers.len() == 1 {
                let (_, a) = &answers[0];
                match a {
                    Ok(s) => bad += usize::from(print_one(s)? != ExitCode::SUCCESS),
                    Err(e) => {
                        bad += 1;
                        println!("UNREACHABLE: {e:#}");
                    }
                }
            } else {
                bad += answers
                    .iter()
                    .filter(|(_, a)| a.as_ref().map_or(true, |s| !problems(s).is_empty()))
                    .count();
                print_matrix(&answers);
            }
            let code = if bad > 0 { ExitCode::from(2) } else { ExitCode::SUCCESS };
            let Some(every) = every else {
                return Ok(code);
            };
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = tokio::signal::ctrl_c() => return Ok(code),
            }
            if !args.json {
                println!();
            }
        }
    })
}

/// One node's tables; exit code 2 when something is wrong there.
fn print_one(s: &pb::SyncStatusResponse) -> anyhow::Result<ExitCode> {
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
    for o in &s.origins {
        let state = match origin_state(o) {
            "forked" => "FORKED",
            "stalled" => "STALLED",
            "lagging" => "lagging",
            _ => "in sync",
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
        println!("certificate {} expires in {days} days ({})", c.identity, c.role);
    }
    for h in s.health.iter().filter(|h| !h.up) {
        println!("part {} DOWN: {}", h.component, h.reason);
    }
    if !s.revocation_on {
        println!("revocation: off (tls.crl is not set)");
    } else if s.crl_next_update_unix_seconds > 0 {
        let hours = (s.crl_next_update_unix_seconds - now_ms / 1000) / 3600;
        println!("revocation list: next update due in {hours} h");
    }
    for a in &s.alarms {
        println!("ALARM: {a}");
    }
    Ok(if !problems(s).is_empty() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
