//! Logging set-up (human or JSON lines, filter from the config or `CX_LOG`). Logs never carry
//! record contents, keys or personal data: only ids, positions, counts and identities.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `CX_LOG` overrides `level` when set. Safe to call twice (the
/// second call does nothing).
pub fn init(format: LogFormat, level: &str) {
    let filter = std::env::var("CX_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Installs the global subscriber writing human-readable lines to `path` (created or appended to,
/// private to the user); `CX_LOG` overrides `level`. For the demo, whose many nodes would drown
/// the terminal. Safe to call twice (the second call does nothing).
pub fn init_to_file(path: &std::path::Path, level: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let filter = std::env::var("CX_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    Ok(())
}
