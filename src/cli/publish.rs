//! `cxnode publish --file records.jsonl`: streams a JSON Lines file to a node over mutual TLS in
//! ordered, pipelined batches, shows progress, and ends with a summary (accepted by kind,
//! duplicates, rejected by reason) and a rejects file naming each bad line's reason and field.
//! Exit code: 0 all accepted, 2 some lines rejected, 1 failure.

use crate::pki::TlsFiles;
use crate::record::{Region, RECORD_BYTES_MAX};
use crate::rpc::client::{connect_expecting, diagnose, explain_status};
use crate::rpc::pb::{self, operation_result::Outcome};
use anyhow::Context;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Batches sent ahead of the answers (the server pipelines them in order).
const BATCHES_IN_FLIGHT_MAX: usize = 8;
/// Over-long lines tolerated before the file is judged not to be JSON Lines at all.
const TOO_LONG_LINES_MAX: usize = 10_000;

#[derive(clap::Args)]
pub struct PublishArgs {
    /// The node's gRPC address, host:port.
    #[arg(long)]
    pub node: String,
    /// JSON Lines file: one record (or {"op":"revoke",...}) per line.
    #[arg(long)]
    pub file: PathBuf,
    #[arg(long, default_value = "certs/ca.pem")]
    pub ca: PathBuf,
    /// Our certificate: cx://publisher/<the node's region>.
    #[arg(long)]
    pub cert: PathBuf,
    #[arg(long)]
    pub key: PathBuf,
    /// Operations per request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Where to write rejected lines' reasons (JSON Lines); default FILE.rejects.jsonl.
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    /// Name the node's certificate must carry (default: the host of --node).
    #[arg(long)]
    pub server_name: Option<String>,
    /// The region of the node published to: it must prove it is cx://node/REGION (default: the
    /// region of our publisher certificate).
    #[arg(long)]
    pub region: Option<String>,
    /// The federation CRL: a node whose certificate it revokes is refused.
    #[arg(long)]
    pub crl: Option<PathBuf>,
    /// Print the summary as JSON (for scripts).
    #[arg(long)]
    pub json: bool,
}

#[derive(Default, Debug, serde::Serialize)]
pub struct Summary {
    pub lines: u64,
    pub appended: BTreeMap<String, u64>,
    pub held_repairs: u64,
    pub duplicates: u64,
    pub rejected: BTreeMap<String, u64>,
    pub last_seq: u64,
}

impl Summary {
    fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// One line read from the file: its number and bytes, or why it cannot be sent.
enum Line {
    Op(u64, Vec<u8>),
    TooLong(u64),
}

/// Reads the next non-empty line, never holding more than RECORD_BYTES_MAX + 1 bytes of it.
fn next_line(reader: &mut impl BufRead, number: &mut u64, buf: &mut Vec<u8>) -> std::io::Result<Option<Line>> {
    loop {
        buf.clear();
        let limit = (RECORD_BYTES_MAX + 2) as u64;
        let n = reader.by_ref().take(limit).read_until(b'\n', buf)?;
        if n == 0 {
            return Ok(None);
        }
        *number += 1;
        if !buf.ends_with(b"\n") && n as u64 == limit {
            // Skip the rest of an over-long line without keeping it.
            let mut sink = Vec::with_capacity(64 * 1024);
            loop {
                sink.clear();
                let m = reader.by_ref().take(64 * 1024).read_until(b'\n', &mut sink)?;
                if m == 0 || sink.ends_with(b"\n") {
                    break;
                }
            }
            return Ok(Some(Line::TooLong(*number)));
        }
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        return Ok(Some(Line::Op(*number, buf.clone())));
    }
}

fn reject_line(out: &mut impl Write, line: u64, record_id: &str, r: &pb::Rejection) -> std::io::Result<()> {
    let v = serde_json::json!({"line": line, "record_id": record_id, "reason": r.reason, "field": r.field, "detail": r.detail});
    writeln!(out, "{v}")
}

pub fn run(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let summary = super::runtime()?.block_on(publish(&args))?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("lines read:   {}", summary.lines);
        for (kind, n) in &summary.appended {
            println!("appended:     {n} {kind}");
        }
        if summary.held_repairs > 0 {
            println!(
                "held repairs: {} (their target record is not in the log yet)",
                summary.held_repairs
            );
        }
        println!(
            "duplicates:   {} (already in the log, acknowledged again)",
            summary.duplicates
        );
        println!("rejected:     {}", summary.rejected_total());
        for (reason, n) in &summary.rejected {
            println!("  {reason}: {n}");
        }
        if summary.rejected_total() > 0 {
            println!("rejected lines and reasons: {}", rejects_path(&args).display());
        }
    }
    Ok(if summary.rejected_total() > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn rejects_path(args: &PublishArgs) -> PathBuf {
    args.rejects.clone().unwrap_or_else(|| {
        let mut p = args.file.clone().into_os_string();
        p.push(".rejects.jsonl");
        PathBuf::from(p)
    })
}

/// The region of our publisher certificate: the node we publish to must be that region's.
fn publisher_region(cert: &std::path::Path) -> anyhow::Result<Region> {
    let chain = crate::pki::load_cert_chain(cert)?;
    let leaf = chain.first().context("no certificate")?;
    match crate::pki::identity_from_cert_der(leaf.as_ref())? {
        crate::pki::Identity::Publisher(region) => Ok(region),
        other => anyhow::bail!(
            "{} is {other}, not a publisher certificate: pass --region to say which region's node to publish to",
            cert.display()
        ),
    }
}

/// Publishes the file and returns the summary (the library entry point for tests and benches).
pub async fn publish(args: &PublishArgs) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        (1..=crate::rpc::publisher::PUBLISH_OPS_MAX).contains(&args.batch),
        "--batch must be 1..=10000"
    );
    let file = File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let files = TlsFiles {
        ca: args.ca.clone(),
        cert: args.cert.clone(),
        key: args.key.clone(),
        crl: args.crl.clone(),
    };
    // Records go only to the node of their region: a department's certificate chains to the same
    // CA, and a node of another region would refuse them after it had read them.
    let region = match &args.region {
        Some(r) => Region::parse(r).map_err(|e| anyhow::anyhow!("--region: {e}"))?,
        None => publisher_region(&args.cert)?,
    };
    let channel = connect_expecting(
        &args.node,
        &files,
        args.server_name.as_deref(),
        Some(crate::pki::Identity::Node(region)),
    )
    .await?;
    let mut client = pb::publisher_client::PublisherClient::new(channel)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);

    let progress = indicatif::ProgressBar::new(total_bytes);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let rejects_path = rejects_path(args);
    let mut rejects =
        BufWriter::new(File::create(&rejects_path).with_context(|| format!("creating {}", rejects_path.display()))?);
    let mut summary = Summary::default();

    // Line numbers of each batch sent, in order (the answers come back in the same order).
    let (numbers_tx, mut numbers_rx) = mpsc::channel::<Vec<u64>>(BATCHES_IN_FLIGHT_MAX + 1);
    let (requests_tx, requests_rx) = mpsc::channel::<pb::PublishRequest>(BATCHES_IN_FLIGHT_MAX);
    let batch_size = args.batch;
    let reader_progress = progress.clone();
    let path = args.file.clone();
    // Reading the file is blocking I/O: its own thread, bounded by the request channel.
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, Vec<u64>)> {
        let file = File::open(&path)?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut number = 0u64;
        let mut buf = Vec::new();
        let mut ops = Vec::with_capacity(batch_size);
        let mut numbers = Vec::with_capacity(batch_size);
        let mut read_bytes = 0u64;
        let mut too_long = Vec::new();
        loop {
            let line = next_line(&mut reader, &mut number, &mut buf)?;
            let end = line.is_none();
            match line {
                Some(Line::Op(n, bytes)) => {
                    read_bytes += bytes.len() as u64 + 1;
                    numbers.push(n);
                    ops.push(pb::Operation { json: bytes.into() });
                }
                Some(Line::TooLong(n)) => {
                    anyhow::ensure!(too_long.len() < TOO_LONG_LINES_MAX, "more than {TOO_LONG_LINES_MAX} lines are over {RECORD_BYTES_MAX} bytes: is this a JSON Lines file?");
                    too_long.push(n);
                }
                None => {}
            }
            if ops.len() == batch_size || (end && !ops.is_empty()) {
                reader_progress.set_position(read_bytes);
                numbers_tx
                    .blocking_send(std::mem::take(&mut numbers))
                    .map_err(|_| anyhow::anyhow!("publisher stopped"))?;
                requests_tx
                    .blocking_send(pb::PublishRequest {
                        operations: std::mem::take(&mut ops),
                    })
                    .map_err(|_| anyhow::anyhow!("publisher stopped"))?;
            }
            if end {
                return Ok((number, too_long));
            }
        }
    });

    let mut responses = match client.publish_stream(ReceiverStream::new(requests_rx)).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            let why = match s.code() {
                tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown => {
                    diagnose(&args.node, &files, args.server_name.as_deref())
                        .await
                        .unwrap_or_else(|| explain_status(&s))
                }
                _ => explain_status(&s),
            };
            anyhow::bail!("publish refused by {}: {why}", args.node)
        }
    };
    loop {
        let response = match responses.message().await {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(s) => anyhow::bail!("publish to {} failed: {}", args.node, explain_status(&s)),
        };
        let numbers = numbers_rx
            .recv()
            .await
            .context("the node answered more batches than were sent")?;
        anyhow::ensure!(
            response.results.len() == numbers.len(),
            "the node answered {} results for {} operations",
            response.results.len(),
            numbers.len()
        );
        for result in &response.results {
            let line = numbers.get(result.index as usize).copied().unwrap_or(0);
            match &result.outcome {
                Some(Outcome::Appended(ack)) => {
                    let kind = pb::OpKind::try_from(result.kind)
                        .map(|k| k.as_str_name())
                        .unwrap_or("OP_KIND_UNSPECIFIED");
                    let kind = kind.trim_start_matches("OP_KIND_").to_lowercase();
                    *summary.appended.entry(kind).or_default() += 1;
                    summary.held_repairs += u64::from(result.held_for_target);
                    summary.last_seq = summary.last_seq.max(ack.seq);
                }
                Some(Outcome::Duplicate(_)) => summary.duplicates += 1,
                Some(Outcome::Rejected(r)) => {
                    *summary.rejected.entry(r.reason.clone()).or_default() += 1;
                    reject_line(&mut rejects, line, &result.record_id, r)?;
                }
                None => anyhow::bail!("the node answered line {line} with no outcome"),
            }
        }
        progress.set_message(format!("seq {}", summary.last_seq));
    }
    let (lines, too_long) = reader.await.context("file reader")??;
    summary.lines = lines;
    for line in too_long {
        let r = pb::Rejection {
            reason: "oversized_record".to_string(),
            field: String::new(),
            detail: format!("the line is longer than {RECORD_BYTES_MAX} bytes"),
        };
        *summary.rejected.entry(r.reason.clone()).or_default() += 1;
        reject_line(&mut rejects, line, "", &r)?;
    }
    rejects.flush()?;
    progress.finish_and_clear();
    let answered: u64 = summary.appended.values().sum::<u64>() + summary.duplicates + summary.rejected_total();
    anyhow::ensure!(
        answered == summary.lines,
        "{} lines read but {answered} answered: the stream ended early",
        summary.lines
    );
    Ok(summary)
}
