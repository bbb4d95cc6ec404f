//! Department clients: `cxnode profile` (one subject's merged record) and `cxnode feed` (a
//! filtered, resumable stream), both as readable text or, with `--json`, one JSON object per line
//! for scripts. `feed` without `--follow` exits once caught up and prints the last cursor; with
//! `--resume CURSOR` it continues exactly where that cursor points. Needs a department
//! certificate (or any the node's policy grants Subscribe/Profile).

use crate::rpc::client::explain_status;
use crate::rpc::pb;
use serde_json::json;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ProfileArgs {
    #[command(flatten)]
    node: super::NodeClientArgs,
    /// The subject: a unified social credit code or a resident ID number.
    subject: String,
    /// One JSON object per record, then one with `as_of`.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct FeedArgs {
    #[command(flatten)]
    node: super::NodeClientArgs,
    /// A category code (repeatable), e.g. administrative_penalty.
    #[arg(long = "category")]
    categories: Vec<String>,
    /// An origin province code (repeatable), e.g. 330000.
    #[arg(long = "region")]
    regions: Vec<u32>,
    /// A subject, USCC or resident ID (repeatable).
    #[arg(long = "subject")]
    subjects: Vec<String>,
    /// Only records shown to the public right now (and their withdrawals).
    #[arg(long)]
    public_only: bool,
    /// A cursor printed by an earlier run (hex), to continue from.
    #[arg(long)]
    resume: Option<String>,
    /// Keep the stream open and print new records as they arrive.
    #[arg(long)]
    follow: bool,
    #[arg(long)]
    json: bool,
}

fn region(code: u32) -> String {
    crate::record::Region::from_code(code)
        .map(|r| r.to_string())
        .unwrap_or_else(|_| code.to_string())
}

fn vv(v: &Option<pb::VersionVector>) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = v
        .iter()
        .flat_map(|v| v.next_seq.iter())
        .map(|(o, s)| (region(*o), json!(s)))
        .collect();
    serde_json::Value::Object(map)
}

fn status_code(s: i32) -> &'static str {
    match pb::RecordStatus::try_from(s) {
        Ok(pb::RecordStatus::InPublicity) => "in_publicity",
        Ok(pb::RecordStatus::Repaired) => "repaired",
        Ok(pb::RecordStatus::Revoked) => "revoked",
        Ok(pb::RecordStatus::Expired) => "expired",
        _ => "unknown",
    }
}

fn change_code(c: i32) -> &'static str {
    match pb::FeedChange::try_from(c) {
        Ok(pb::FeedChange::Published) => "published",
        Ok(pb::FeedChange::Amended) => "amended",
        Ok(pb::FeedChange::WithdrawnRepaired) => "withdrawn_repaired",
        Ok(pb::FeedChange::WithdrawnRevoked) => "withdrawn_revoked",
        Ok(pb::FeedChange::WithdrawnPublicityEnded) => "withdrawn_publicity_ended",
        _ => "unknown",
    }
}

fn kind_code(k: i32) -> &'static str {
    match pb::OpKind::try_from(k) {
        Ok(pb::OpKind::Publish) => "publish",
        Ok(pb::OpKind::Amend) => "amend",
        Ok(pb::OpKind::Repair) => "repair",
        Ok(pb::OpKind::Revoke) => "revoke",
        _ => "none",
    }
}

pub fn profile(args: ProfileArgs) -> anyhow::Result<ExitCode> {
    let response = super::runtime()?.block_on(async {
        let mut client = pb::feed_client::FeedClient::new(args.node.channel().await?);
        client
            .profile(pb::ProfileRequest {
                subject: args.subject.clone(),
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|e| anyhow::anyhow!("profile from {}: {}", args.node.node, explain_status(&e)))
    })?;
    let shown = crate::feed::mask(&args.subject);
    for r in &response.records {
        let record: serde_json::Value = serde_json::from_slice(&r.record_json).unwrap_or(serde_json::Value::Null);
        if args.json {
            println!(
                "{}",
                json!({
                    "origin": region(r.origin), "record_id": r.record_id, "category": r.category,
                    "status": status_code(r.status), "latest_seq": r.latest_seq,
                    "latest_kind": kind_code(r.latest_kind), "record_version": r.record_version,
                    "record": record,
                })
            );
        } else {
            println!(
                "{} {:<24} {} {:<13} v{} (seq {}, {})",
                region(r.origin),
                r.category,
                r.record_id,
                status_code(r.status),
                r.record_version,
                r.latest_seq,
                kind_code(r.latest_kind)
            );
        }
    }
    if args.json {
        println!(
            "{}",
            json!({ "subject": shown, "records": response.records.len(), "as_of": vv(&response.as_of) })
        );
    } else {
        println!(
            "{} records about {shown}, as of {}",
            response.records.len(),
            vv(&response.as_of)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks a progress mark as a third party would: signed by a `cx://node/*` certificate that
/// chains to the federation CA, over the filter digest, the cursor and the time it states.
/// Returns the signer.
fn verify_mark(verifier: &crate::pki::SignatureVerifier, p: &pb::ProgressMark) -> anyhow::Result<String> {
    let chain: Vec<Vec<u8>> = p.signer_chain.iter().map(|c| c.to_vec()).collect();
    let digest: crate::log::Hash = p
        .filter_digest
        .as_ref()
        .try_into()
        .map_err(|_| anyhow::anyhow!("progress mark: the filter digest is not 32 bytes"))?;
    let cursor = crate::feed::Cursor::decode(&p.cursor_token)?;
    let message = crate::feed::progress_message(&digest, &cursor, p.at_unix_seconds);
    super::verify_node_signature(
        verifier,
        "progress mark",
        &chain,
        p.at_unix_seconds,
        p.signature_scheme,
        &message,
        &p.signature,
    )
}

pub fn feed(args: FeedArgs) -> anyhow::Result<ExitCode> {
    let verifier = crate::pki::SignatureVerifier::new(&args.node.tls.ca, None)?;
    let resume = match &args.resume {
        Some(hex_text) => Some(pb::FeedCursor {
            position: None,
            token: hex::decode(hex_text.trim())
                .map_err(|_| anyhow::anyhow!("--resume: not a cursor printed by cxnode feed (expected hex)"))?
                .into(),
        }),
        None => None,
    };
    super::runtime()?.block_on(async {
        let mut client = pb::feed_client::FeedClient::new(args.node.channel().await?);
        let request = pb::SubscribeRequest {
            filter: Some(pb::FeedFilter {
                categories: args.categories.clone(),
                regions: args.regions.clone(),
                subjects: args.subjects.clone(),
                public_only: args.public_only,
            }),
            resume_from: resume,
            follow: args.follow,
        };
        let mut stream = client
            .subscribe(request)
            .await
            .map_err(|e| anyhow::anyhow!("feed from {}: {}", args.node.node, explain_status(&e)))?
            .into_inner();
        let mut last = String::new();
        let mut records = 0u64;
        loop {
            let event = match stream.message().await {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => {
                    if !last.is_empty() {
                        eprintln!("stream ended; resume with --resume {last}");
                    }
                    anyhow::bail!("feed from {}: {}", args.node.node, explain_status(&e));
                }
            };
            let cursor = event.cursor.as_ref().map(|c| hex::encode(&c.token)).unwrap_or_default();
            match event.body {
                Some(pb::feed_event::Body::Record(r)) => {
                    records += 1;
                    let seq = r.entry.as_ref().map(|e| e.seq).unwrap_or(0);
                    if args.json {
                        let record: serde_json::Value = r
                            .entry
                            .as_ref()
                            .and_then(|e| serde_json::from_slice(&e.op_bytes).ok())
                            .unwrap_or(serde_json::Value::Null);
                        println!(
                            "{}",
                            json!({
                                "event": change_code(r.change), "origin": region(r.origin), "seq": seq,
                                "record_id": r.record_id, "category": r.category,
                                "status": status_code(r.status), "record_version": r.record_version,
                                "entry": record, "cursor": cursor,
                            })
                        );
                    } else {
                        println!(
                            "{:<26} {} seq {:>8} {:<24} {} {}",
                            change_code(r.change),
                            region(r.origin),
                            seq,
                            r.category,
                            r.record_id,
                            status_code(r.status)
                        );
                    }
                }
                Some(pb::feed_event::Body::Progress(p)) => {
                    let signer = verify_mark(&verifier, &p)?;
                    if args.json {
                        println!(
                            "{}",
                            json!({ "progress": vv(&p.reached), "at_unix_seconds": p.at_unix_seconds,
                                    "filter_digest": hex::encode(&p.filter_digest), "cursor": cursor,
                                    "signed_by": signer, "verified": true })
                        );
                    } else {
                        println!(
                            "progress: complete below {} (signed by {signer}, verified)",
                            vv(&p.reached)
                        );
                    }
                }
                None => {}
            }
            last = cursor;
        }
        if args.json {
            println!("{}", json!({ "caught_up": true, "records": records, "cursor": last }));
        } else {
            println!("caught up after {records} records; resume with --resume {last}");
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[derive(clap::Args)]
pub struct AcknowledgeArgs {
    #[command(flatten)]
    node: super::NodeClientArgs,
    /// The cursor (hex) of the last feed event applied: everything below it is signed for.
    #[arg(long)]
    applied: Option<String>,
    /// A record id the department has stopped showing (repeatable), e.g. after a repair.
    #[arg(long = "stopped")]
    stopped: Vec<String>,
    #[arg(long)]
    json: bool,
}

pub fn acknowledge(args: AcknowledgeArgs) -> anyhow::Result<ExitCode> {
    let applied = match &args.applied {
        Some(text) => {
            let bytes =
                hex::decode(text.trim()).map_err(|_| anyhow::anyhow!("--applied: not a cursor (expected hex)"))?;
            let cursor = crate::feed::Cursor::decode(&bytes).map_err(|e| anyhow::anyhow!("--applied: {e}"))?;
            cursor.next.iter().map(|(o, s)| (o.code(), *s)).collect()
        }
        None => Default::default(),
    };
    let response = super::runtime()?.block_on(async {
        let mut client = pb::feed_client::FeedClient::new(args.node.channel().await?);
        client
            .acknowledge(pb::AcknowledgeRequest {
                applied: Some(pb::VersionVector { next_seq: applied }),
                repaired_record_ids_stopped: args.stopped.clone(),
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|e| anyhow::anyhow!("acknowledge at {}: {}", args.node.node, explain_status(&e)))
    })?;
    let origin = response.receipt.as_ref().map(|c| region(c.origin)).unwrap_or_default();
    if args.json {
        println!(
            "{}",
            json!({"receipt_id": response.receipt_id, "origin": origin, "seq": response.seq,
                   "entry_hash": hex::encode(&response.entry_hash),
                   "checkpoint_seq": response.receipt.as_ref().map(|c| c.seq)})
        );
    } else {
        println!(
            "receipt {} written at {origin} seq {} (entry {}); it replicates to every origin",
            response.receipt_id,
            response.seq,
            hex::encode(&response.entry_hash)
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct ReceiptsArgs {
    #[command(flatten)]
    node: super::NodeClientArgs,
    /// The record whose receipts to list.
    #[arg(long)]
    record: String,
    /// The record's origin (default: the node's own region).
    #[arg(long)]
    origin: Option<u32>,
    #[arg(long)]
    json: bool,
}

/// `cxnode receipts --record ID`: who has stopped showing a record, and who is overdue (operators).
pub fn receipts(args: ReceiptsArgs) -> anyhow::Result<ExitCode> {
    let r = super::runtime()?.block_on(async {
        let mut client = pb::operations_client::OperationsClient::new(args.node.channel().await?);
        client
            .receipts(pb::ReceiptsRequest {
                origin: args.origin.unwrap_or(0),
                record_id: args.record.clone(),
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|e| anyhow::anyhow!("receipts from {}: {}", args.node.node, explain_status(&e)))
    })?;
    if args.json {
        for x in &r.receipts {
            println!(
                "{}",
                json!({"node": region(x.node), "department": x.department, "received_at_unix_seconds": x.received_at_unix_seconds, "seq": x.seq})
            );
        }
        println!(
            "{}",
            json!({"record_id": args.record, "known": r.known, "repaired": r.repaired, "deadline": r.deadline,
                   "receipts": r.receipts.len(), "overdue": r.overdue,
                   "pending": r.pending.iter().map(|p| json!({"node": region(p.node), "department": p.department})).collect::<Vec<_>>()})
        );
    } else {
        if !r.known {
            println!("record {} is not in this node's merged view", args.record);
            return Ok(ExitCode::FAILURE);
        }
        for x in &r.receipts {
            println!(
                "applied by {} (served by {}) at {} (seq {})",
                x.department,
                region(x.node),
                x.received_at_unix_seconds,
                x.seq
            );
        }
        let state = if r.overdue { "OVERDUE" } else { "ok" };
        println!(
            "{} receipts; repaired: {}; deadline: {}; pending: {}; {state}",
            r.receipts.len(),
            r.repaired,
            if r.deadline.is_empty() { "-" } else { &r.deadline },
            r.pending
                .iter()
                .map(|p| p.department.clone())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(if r.overdue {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
