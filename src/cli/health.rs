//! `cxnode health --config FILE`: the probe for orchestrators (compose `healthcheck`, the
//! Containerfile `HEALTHCHECK`, Kubernetes exec probes). It reads the node's own config, dials
//! the node's port over mutual TLS with the node's own certificate (so it proves what a peer
//! would see: the certificate, the CA and the CRL load, and the gRPC server answers), and asks
//! the standard gRPC health service. Exit 0 when SERVING, 1 otherwise, with the reason.

use crate::config::Config;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

/// A probe that takes longer than this fails (orchestrators have their own timeouts too).
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(clap::Args)]
pub struct HealthArgs {
    /// The node's TOML config (the same file `cxnode run` reads).
    #[arg(long)]
    config: PathBuf,
    /// The name the node's certificate is checked for (default: its first DNS name).
    #[arg(long)]
    server_name: Option<String>,
}

pub fn run(args: HealthArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    // A wildcard listen address is dialled on loopback: the probe runs beside the node.
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let server_name = match args.server_name {
        Some(n) => Some(n),
        None => crate::pki::load_cert_chain(&config.tls.cert)?
            .first()
            .and_then(|leaf| crate::pki::dns_names_of_cert_der(leaf.as_ref()).into_iter().next()),
    };
    let rt = super::runtime()?;
    let verdict = rt.block_on(async {
        tokio::time::timeout(PROBE_TIMEOUT, async {
            let channel = crate::rpc::client::connect_expecting(
                &addr.to_string(),
                &config.tls,
                server_name.as_deref(),
                Some(crate::pki::Identity::Node(config.region)),
            )
            .await?;
            let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
            let answer = client
                .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                .await
                .map_err(|s| anyhow::anyhow!(crate::rpc::client::explain_status(&s)))?;
            Ok::<i32, anyhow::Error>(answer.into_inner().status)
        })
        .await
        .context(format!("no answer from {addr} within {PROBE_TIMEOUT:?}"))?
    });
    match verdict {
        Ok(s) if s == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 => {
            println!("cx://node/{} at {addr}: SERVING", config.region);
            Ok(ExitCode::SUCCESS)
        }
        Ok(s) => {
            println!("cx://node/{} at {addr}: not serving (health status {s})", config.region);
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.context(format!("cx://node/{} at {addr} is not healthy", config.region))),
    }
}
