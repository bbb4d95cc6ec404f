//! `cxnode evaluate`: the regional performance evaluation of a period, from a node, as a table,
//! JSON (the signed report file), CSV or one HTML file; and `--verify REPORT.json`, which checks
//! the node's signature and recomputes the report as of its version vector, from a node
//! (`--node`) or from a stopped node's store (`--data`), saying whether every figure matches.

use crate::evaluate::{render, report, Observed, Report};
use crate::record::Region;
use crate::rpc::client::explain_status;
use crate::rpc::pb;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// Differences listed at most when a report does not verify.
const DIFFERENCES_SHOWN_MAX: usize = 20;
/// A report response read at most (31 origins with their listed records stay far below).
const REPORT_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The signed report file's format.
pub const SIGNED_FORMAT: &str = "cxnode-evaluation-signed/1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
    Html,
}

#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// The node's gRPC address, host:port.
    #[arg(long)]
    node: Option<String>,
    #[arg(long, default_value = "certs/ca.pem")]
    ca: PathBuf,
    #[arg(long)]
    cert: Option<PathBuf>,
    #[arg(long)]
    key: Option<PathBuf>,
    /// Name the node's certificate must carry (default: the host of --node).
    #[arg(long)]
    server_name: Option<String>,
    /// The federation CRL.
    #[arg(long)]
    crl: Option<PathBuf>,
    /// First day of the period (YYYY-MM-DD, China Standard Time).
    #[arg(long, required_unless_present = "verify")]
    from: Option<String>,
    /// Last day of the period, included.
    #[arg(long, required_unless_present = "verify")]
    to: Option<String>,
    /// Origin regions to evaluate (default: all).
    #[arg(long = "region")]
    regions: Vec<String>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Write the output here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Check a signed report (written with --format json): its signature, then its figures,
    /// recomputed as of its version vector from --node or from --data.
    #[arg(long)]
    verify: Option<PathBuf>,
    /// A stopped node's data directory: recompute --verify's report from it, or compute an
    /// unsigned report (table, csv, html) from it without a node.
    #[arg(long)]
    data: Option<PathBuf>,
}

/// The signed report file.
#[derive(Serialize, Deserialize)]
struct Signed<'a> {
    format: String,
    signer: String,
    signed_at_unix_seconds: i64,
    signature_scheme: u32,
    signature: String,
    signer_chain: Vec<String>,
    #[serde(borrow)]
    report: &'a RawValue,
    #[serde(borrow)]
    observed: &'a RawValue,
}

impl EvaluateArgs {
    fn client(&self) -> anyhow::Result<super::NodeClientArgs> {
        let need = |v: &Option<PathBuf>, flag: &str| {
            v.clone()
                .ok_or_else(|| anyhow::anyhow!("{flag} is required to talk to a node"))
        };
        Ok(super::NodeClientArgs {
            node: self
                .node
                .clone()
                .ok_or_else(|| anyhow::anyhow!("--node is required (or --verify with --data)"))?,
            tls: super::ClientTlsArgs {
                ca: self.ca.clone(),
                cert: need(&self.cert, "--cert")?,
                key: need(&self.key, "--key")?,
                server_name: self.server_name.clone(),
                crl: self.crl.clone(),
            },
        })
    }
}

fn date(flag: &str, v: &str) -> anyhow::Result<time::Date> {
    crate::record::parse_iso_date(v).ok_or_else(|| anyhow::anyhow!("{flag}: {v:?} is not a date (YYYY-MM-DD)"))
}

async fn ask(client: &super::NodeClientArgs, req: pb::EvaluateRequest) -> anyhow::Result<pb::EvaluateResponse> {
    let mut c = pb::operations_client::OperationsClient::new(client.channel().await?)
        .max_decoding_message_size(REPORT_BYTES_MAX);
    c.evaluate(req)
        .await
        .map(|r| r.into_inner())
        .map_err(|e| anyhow::anyhow!("evaluate at {}: {}", client.node, explain_status(&e)))
}

/// Checks the node's signature over a response as a third party would; returns the signer.
fn check_signature(
    ca: &std::path::Path,
    crl: Option<&std::path::Path>,
    r: &pb::EvaluateResponse,
) -> anyhow::Result<String> {
    let verifier =
        crate::pki::SignatureVerifier::new(ca, crl).with_context(|| format!("loading CA {}", ca.display()))?;
    let chain: Vec<Vec<u8>> = r.signer_chain.iter().map(|c| c.to_vec()).collect();
    let message = report::signed_message(&r.report_json, &r.observed_json, r.signed_at_unix_seconds);
    super::verify_node_signature(
        &verifier,
        "the report",
        &chain,
        r.signed_at_unix_seconds,
        r.signature_scheme,
        &message,
        &r.signature,
    )
}

/// The signed file of a response (the report's bytes kept exactly as signed).
pub fn signed_file(r: &pb::EvaluateResponse, signer: &str) -> anyhow::Result<String> {
    let report = std::str::from_utf8(&r.report_json).context("report is not UTF-8")?;
    let observed = std::str::from_utf8(&r.observed_json).context("observations are not UTF-8")?;
    let s = Signed {
        format: SIGNED_FORMAT.to_string(),
        signer: signer.to_string(),
        signed_at_unix_seconds: r.signed_at_unix_seconds,
        signature_scheme: r.signature_scheme,
        signature: hex::encode(&r.signature),
        signer_chain: r.signer_chain.iter().map(hex::encode).collect(),
        report: serde_json::from_str(report).context("report is not JSON")?,
        observed: serde_json::from_str(observed).context("observations are not JSON")?,
    };
    Ok(serde_json::to_string(&s)? + "\n")
}

fn write_out(args: &EvaluateArgs, text: &str) -> anyhow::Result<()> {
    match &args.out {
        Some(path) => std::fs::write(path, text).with_context(|| format!("writing {}", path.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

pub fn run(args: EvaluateArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = args.verify.clone() {
        return verify(&args, &path);
    }
    let (from, to) = (
        args.from.clone().unwrap_or_default(),
        args.to.clone().unwrap_or_default(),
    );
    date("--from", &from)?;
    date("--to", &to)?;
    let regions = args
        .regions
        .iter()
        .map(|r| {
            Region::parse(r)
                .map(|r| r.code())
                .map_err(|e| anyhow::anyhow!("--region {r}: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let (Some(dir), None) = (&args.data, &args.node) {
        return offline(&args, dir, &from, &to, &regions);
    }
    let client = args.client()?;
    let r = super::runtime()?.block_on(ask(
        &client,
        pb::EvaluateRequest {
            from,
            to,
            regions,
            as_of: Default::default(),
        },
    ))?;
    let signer = check_signature(&args.ca, args.crl.as_deref(), &r)?;
    let report: Report = serde_json::from_slice(&r.report_json).context("the node's report does not parse")?;
    let observed: Observed =
        serde_json::from_slice(&r.observed_json).context("the node's observations do not parse")?;
    let text = match args.format {
        Format::Json => signed_file(&r, &signer)?,
        Format::Table => render::table(&report, Some(&observed)),
        Format::Csv => render::csv(&report),
        Format::Html => render::html(&report, Some(&observed), &signer),
    };
    write_out(&args, &text)?;
    Ok(ExitCode::SUCCESS)
}

/// The report computed from a stopped node's store: the same figures, unsigned (a signed report
/// comes from a node), so not as JSON.
fn offline(
    args: &EvaluateArgs,
    dir: &std::path::Path,
    from: &str,
    to: &str,
    regions: &[u32],
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.format != Format::Json,
        "--format json is the signed report, which only a node gives: use --node, or table, csv or html with --data"
    );
    let regions = regions
        .iter()
        .map(|c| Region::from_code(*c))
        .collect::<Result<Vec<_>, _>>()?;
    let report = recompute(dir, date("--from", from)?, date("--to", to)?, &regions, None)?;
    let source = format!("unsigned: computed from the store in {}", dir.display());
    let text = match args.format {
        Format::Table => render::table(&report, None),
        Format::Csv => render::csv(&report),
        Format::Html | Format::Json => render::html(&report, None, &source),
    };
    write_out(args, &text)?;
    Ok(ExitCode::SUCCESS)
}

/// The report of a stopped node's store (its own version vector when `as_of` is None).
fn recompute(
    dir: &std::path::Path,
    from: time::Date,
    to: time::Date,
    regions: &[Region],
    as_of: Option<BTreeMap<Region, u64>>,
) -> anyhow::Result<Report> {
    let cfg = crate::store::StoreConfig::new(dir);
    anyhow::ensure!(
        cfg.journal_dir().is_dir(),
        "{} holds no journal: is it a node's data_dir?",
        dir.display()
    );
    let (store, _) =
        crate::store::Store::open(&cfg).with_context(|| format!("opening the store in {}", dir.display()))?;
    let calendar = crate::node::load_calendar(None)?;
    Ok(crate::delivery::evaluation::evaluate_view(
        store.view(),
        &store.reader(),
        &calendar,
        from,
        to,
        regions,
        as_of,
    )?)
}

fn verify(args: &EvaluateArgs, path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let s: Signed<'_> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a signed report written by `cxnode evaluate --format json`",
            path.display()
        )
    })?;
    anyhow::ensure!(
        s.format == SIGNED_FORMAT,
        "{}: format {:?}, expected {SIGNED_FORMAT:?}",
        path.display(),
        s.format
    );
    let unhex = |field: &str, h: &str| hex::decode(h).map_err(|_| anyhow::anyhow!("{field}: not hex"));
    let response = pb::EvaluateResponse {
        report_json: s.report.get().as_bytes().to_vec().into(),
        observed_json: s.observed.get().as_bytes().to_vec().into(),
        signature_scheme: s.signature_scheme,
        signature: unhex("signature", &s.signature)?.into(),
        signer_chain: s
            .signer_chain
            .iter()
            .map(|c| unhex("signer_chain", c).map(Into::into))
            .collect::<anyhow::Result<_>>()?,
        signed_at_unix_seconds: s.signed_at_unix_seconds,
    };
    let signer = check_signature(&args.ca, args.crl.as_deref(), &response)?;
    println!("signature: good, by {signer} at {}", s.signed_at_unix_seconds);
    let claimed: Report = serde_json::from_str(s.report.get()).context("the report does not parse")?;
    let from = date("report period.from", &claimed.period.from)?;
    let to = date("report period.to", &claimed.period.to)?;
    let regions: Vec<Region> = claimed
        .regions
        .iter()
        .map(|c| Region::from_code(*c).map_err(|e| anyhow::anyhow!("report region {c}: {e}")))
        .collect::<anyhow::Result<_>>()?;
    let as_of: BTreeMap<Region, u64> = claimed
        .as_of
        .iter()
        .map(|(o, s)| {
            Ok((
                Region::parse(o).map_err(|e| anyhow::anyhow!("report as_of {o}: {e}"))?,
                *s,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let recomputed: Vec<u8> = match &args.data {
        Some(dir) => recompute(dir, from, to, &regions, Some(as_of))?.to_json(),
        None => {
            let client = args.client()?;
            let r = super::runtime()?.block_on(ask(
                &client,
                pb::EvaluateRequest {
                    from: claimed.period.from.clone(),
                    to: claimed.period.to.clone(),
                    regions: claimed.regions.clone(),
                    as_of: as_of.iter().map(|(o, s)| (o.code(), *s)).collect(),
                },
            ))?;
            r.report_json.to_vec()
        }
    };
    if recomputed == s.report.get().as_bytes() {
        println!(
            "report: MATCHES, recomputed as of {} ({} origins)",
            claimed
                .as_of
                .iter()
                .map(|(o, s)| format!("{o}:{s}"))
                .collect::<Vec<_>>()
                .join(" "),
            claimed.origins.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let a: serde_json::Value = serde_json::from_str(s.report.get())?;
    let b: serde_json::Value = serde_json::from_slice(&recomputed)?;
    println!("report: DIFFERS from the recomputation:");
    for d in report::differences(&a, &b, DIFFERENCES_SHOWN_MAX) {
        println!("  {d}");
    }
    Ok(ExitCode::FAILURE)
}
