//! `cxnode run --config FILE`: checks the whole config before binding anything, then serves until
//! SIGTERM or SIGINT and shuts down gracefully.

use crate::config::Config;
use crate::{node, telemetry};
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The node's TOML config (see config/node.example.toml).
    #[arg(long)]
    config: PathBuf,
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; stop the node with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    telemetry::init(config.log_format, &config.log_level);
    let rt = super::runtime()?;
    rt.block_on(node::run(config, shutdown_signal()))
        .context("node failed")?;
    Ok(ExitCode::SUCCESS)
}
