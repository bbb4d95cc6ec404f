//! `cxnode audit --data DIR (--subject S | --caller URI) [--since T] [--json]`: who accessed what,
//! from the node's append-only audit log (it can be read while the node runs). Subjects are shown
//! masked; a look-up by subject matches the keyed digest the node wrote.

use crate::store::audit::{AuditLog, AuditQuery};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct AuditArgs {
    /// The node's data directory.
    #[arg(long)]
    data: PathBuf,
    /// Rows about this subject (USCC or resident ID).
    #[arg(long)]
    subject: Option<String>,
    /// Rows of this caller (identity URI, e.g. cx://department/330000/amr).
    #[arg(long)]
    caller: Option<String>,
    /// Rows at or after this time: RFC 3339 (2026-12-01T08:00:00Z) or unix seconds.
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    json: bool,
}

fn parse_since(s: &str) -> anyhow::Result<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| anyhow::anyhow!("--since {s:?}: expected RFC 3339 (2026-12-01T08:00:00Z) or unix seconds"))
}

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.subject.is_some() || args.caller.is_some(),
        "name what to look for: --subject S or --caller URI"
    );
    let subject = match &args.subject {
        Some(s) => Some(crate::feed::parse_subject("--subject", s)?.index_bytes()),
        None => None,
    };
    let query = AuditQuery {
        subject,
        caller: args.caller.clone(),
        since_unix_seconds: args.since.as_deref().map(parse_since).transpose()?,
    };
    let rows = AuditLog::query(&args.data.join(crate::node::AUDIT_DIR), &query)?;
    for r in &rows {
        if args.json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            let at = time::OffsetDateTime::from_unix_timestamp(r.at_unix_seconds)
                .ok()
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                .unwrap_or_else(|| r.at_unix_seconds.to_string());
            println!(
                "{at} {:<14} {:<36} {:>6} records  subjects [{}] {} {}",
                r.call,
                r.caller,
                r.records,
                r.subjects.join(","),
                r.filter.as_deref().unwrap_or(""),
                r.outcome
            );
        }
    }
    if !args.json {
        println!("{} rows", rows.len());
    }
    Ok(ExitCode::SUCCESS)
}
