//! `cxnode certs`: the federation CA, party certificates with their `cx://` identities, and
//! revocation. Private keys are written 0600 and never printed.

use crate::pki::{self, Identity, IssueRequest};
use crate::record::Region;
use anyhow::Context;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

#[derive(clap::Subcommand)]
pub enum CertsCommand {
    /// Create a federation CA in DIR (ca.pem, ca.key, crl.pem).
    Init {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        #[arg(long, default_value = "cxnode federation CA")]
        name: String,
        #[arg(long, default_value_t = 3650)]
        validity_days: u32,
    },
    /// Issue a certificate for a node, publisher, department or operator.
    Issue(IssueArgs),
    /// Revoke a certificate and re-publish the CRL (nodes reload it on change).
    Revoke {
        #[arg(long, default_value = "certs")]
        ca_dir: PathBuf,
        /// The certificate (PEM) to revoke.
        #[arg(long)]
        cert: PathBuf,
        /// RFC 5280 reason, e.g. unspecified, key-compromise, superseded, cessation-of-operation.
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
    /// Issue a successor of a certificate (same identity and names, a new key) in its place; a
    /// running node reloads its renewed certificate without a restart.
    Renew {
        /// The CA to issue from (during a CA rotation, the new one).
        #[arg(long, default_value = "certs")]
        ca_dir: PathBuf,
        /// The certificate (PEM) to renew; its key (NAME.key) must be beside it.
        #[arg(long)]
        cert: PathBuf,
        #[arg(long, default_value_t = 365)]
        validity_days: i64,
    },
    /// Re-publish the CRL (it is valid for 7 days; run this regularly, e.g. from cron).
    Crl {
        #[arg(long, default_value = "certs")]
        ca_dir: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Kind {
    Node,
    Publisher,
    Department,
    Operator,
}

#[derive(clap::Args)]
pub struct IssueArgs {
    #[arg(long, default_value = "certs")]
    ca_dir: PathBuf,
    #[arg(long, value_enum)]
    kind: Kind,
    /// Province code (node, publisher, department).
    #[arg(long)]
    region: Option<String>,
    /// Department id (department).
    #[arg(long)]
    dept: Option<String>,
    /// Operator name (operator).
    #[arg(long)]
    operator: Option<String>,
    /// File name stem (default from the identity, e.g. node-330000).
    #[arg(long)]
    name: Option<String>,
    /// Output directory (default: the CA directory).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 365)]
    validity_days: i64,
    /// Start of validity, RFC 3339 (default: now minus 1 hour, for clock skew).
    #[arg(long)]
    not_before: Option<String>,
    /// End of validity, RFC 3339 (default: not_before + validity_days).
    #[arg(long)]
    not_after: Option<String>,
    /// DNS names the certificate serves as (default: localhost).
    #[arg(long)]
    dns: Vec<String>,
    /// IP addresses the certificate serves as (default: 127.0.0.1 when no --dns is given).
    #[arg(long)]
    ip: Vec<IpAddr>,
}

fn parse_time(what: &str, s: &str) -> anyhow::Result<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339)
        .with_context(|| format!("--{what} {s:?} is not an RFC 3339 time (e.g. 2026-01-01T00:00:00Z)"))
}

fn identity(args: &IssueArgs) -> anyhow::Result<Identity> {
    let region = || -> anyhow::Result<Region> {
        let r = args
            .region
            .as_deref()
            .context("--region is required for this kind (e.g. --region 330000)")?;
        Ok(Region::parse_node(r)?)
    };
    Ok(match args.kind {
        Kind::Node => Identity::Node(region()?),
        Kind::Publisher => Identity::Publisher(region()?),
        Kind::Department => Identity::Department {
            region: region()?,
            dept: args
                .dept
                .clone()
                .context("--dept is required for a department (e.g. --dept market-regulation)")?,
        },
        Kind::Operator => Identity::Operator(
            args.operator
                .clone()
                .context("--operator NAME is required for an operator")?,
        ),
    })
}

fn default_name(id: &Identity) -> String {
    match id {
        Identity::Node(r) => format!("node-{r}"),
        Identity::Publisher(r) => format!("publisher-{r}"),
        Identity::Department { region, dept } => format!("department-{region}-{dept}"),
        Identity::Operator(name) => format!("operator-{name}"),
    }
}

pub fn run(cmd: CertsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CertsCommand::Init {
            dir,
            name,
            validity_days,
        } => {
            pki::init_ca(&dir, &name, validity_days)?;
            println!(
                "federation CA created in {} (ca.pem, ca.key [0600], crl.pem)",
                dir.display()
            );
        }
        CertsCommand::Issue(args) => {
            let id = identity(&args)?;
            let not_before = match &args.not_before {
                Some(s) => parse_time("not-before", s)?,
                None => OffsetDateTime::now_utc() - Duration::hours(1),
            };
            let not_after = match &args.not_after {
                Some(s) => parse_time("not-after", s)?,
                None => not_before + Duration::days(args.validity_days),
            };
            let mut dns_names = args.dns.clone();
            let mut ip_addresses = args.ip.clone();
            if dns_names.is_empty() && ip_addresses.is_empty() {
                dns_names.push("localhost".to_string());
                ip_addresses.push(IpAddr::from([127, 0, 0, 1]));
            }
            let name = args.name.clone().unwrap_or_else(|| default_name(&id));
            let out = args.out.clone().unwrap_or_else(|| args.ca_dir.clone());
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let req = IssueRequest {
                identity: id.clone(),
                not_before,
                not_after,
                dns_names,
                ip_addresses,
            };
            let paths = pki::issue(&args.ca_dir, &req, &out, &name)?;
            println!(
                "issued {id}: {} (key {} [0600])",
                paths.cert.display(),
                paths.key.display()
            );
        }
        CertsCommand::Revoke { ca_dir, cert, reason } => {
            pki::revoke(&ca_dir, &cert, &reason)?;
            println!(
                "revoked {}; CRL re-published at {}",
                cert.display(),
                ca_dir.join(pki::ca::CRL_FILE).display()
            );
        }
        CertsCommand::Renew {
            ca_dir,
            cert,
            validity_days,
        } => {
            anyhow::ensure!(
                (1..=3650).contains(&validity_days),
                "--validity-days must be between 1 and 3650"
            );
            let paths = pki::ca::renew(&ca_dir, &cert, validity_days)?;
            println!(
                "renewed {} (key {} [0600]) from the CA in {}; a node using it reloads it within tls.crl_reload_seconds",
                paths.cert.display(),
                paths.key.display(),
                ca_dir.display()
            );
        }
        CertsCommand::Crl { ca_dir } => {
            let path = pki::write_crl(&ca_dir)?;
            println!("CRL re-published at {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
