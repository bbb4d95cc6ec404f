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

/// The stop signals, listened for from the moment this is called (a process that is PID 1 in a
/// container ignores a signal it has no handler for, so the handlers must exist before the
/// store is recovered, not once the node serves).
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
        }
    })
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    telemetry::init(config.log_format, &config.log_level);
    let rt = super::runtime()?;
    rt.block_on(async {
        let stop = shutdown_signal()?;
        node::run(config, stop).await.context("node failed")
    })?;
    Ok(ExitCode::SUCCESS)
}
