//! Node configuration: raw TOML (unknown keys refused) -> a validated `Config`. Checked entirely
//! before any port is bound; every error names the key and the fix. Relative paths are resolved
//! against the config file's directory. No defaults for what has none (region, listen address,
//! certificate paths, data directory).

use crate::pki::TlsFiles;
use crate::record::Region;
use crate::store::StoreConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: RawNode,
    tls: RawTls,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    publish: RawPublish,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    sync: RawSync,
    #[serde(default)]
    feed: RawFeed,
    #[serde(default)]
    peers: Vec<RawPeer>,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    evaluate: RawEvaluate,
}

/// `[evaluate]`: the regional evaluation.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEvaluate {
    /// A directory of `calendar-<year>.toml` files to use instead of the built-in calendars.
    calendar_dir: Option<PathBuf>,
}

/// `[admin]`: the plain-HTTP port for operators (metrics, probes, status page); off when unset.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
}

/// `[feed]`: bounds of department subscriptions (`delivery::Limits`).
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawFeed {
    events_queued_max: usize,
    slow_subscriber_ms: u64,
    step_entries_max: usize,
    progress_interval_ms: u64,
    subscriptions_max: usize,
}

impl Default for RawFeed {
    fn default() -> Self {
        let d = crate::delivery::Limits::default();
        RawFeed {
            events_queued_max: d.events_queued_max,
            slow_subscriber_ms: d.slow_subscriber.as_millis() as u64,
            step_entries_max: d.step_entries_max,
            progress_interval_ms: d.progress_interval.as_millis() as u64,
            subscriptions_max: d.subscriptions_max,
        }
    }
}

impl RawFeed {
    fn validate(&self) -> Result<crate::delivery::Limits, String> {
        if !(1..=65_536).contains(&self.events_queued_max) {
            return Err("feed.events_queued_max: must be between 1 and 65536".to_string());
        }
        if !(100..=600_000).contains(&self.slow_subscriber_ms) {
            return Err("feed.slow_subscriber_ms: must be between 100 and 600000".to_string());
        }
        if !(1..=100_000).contains(&self.step_entries_max) {
            return Err("feed.step_entries_max: must be between 1 and 100000".to_string());
        }
        if !(10..=600_000).contains(&self.progress_interval_ms) {
            return Err("feed.progress_interval_ms: must be between 10 and 600000".to_string());
        }
        if !(1..=100_000).contains(&self.subscriptions_max) {
            return Err("feed.subscriptions_max: must be between 1 and 100000".to_string());
        }
        Ok(crate::delivery::Limits {
            events_queued_max: self.events_queued_max,
            slow_subscriber: Duration::from_millis(self.slow_subscriber_ms),
            step_entries_max: self.step_entries_max,
            progress_interval: Duration::from_millis(self.progress_interval_ms),
            subscriptions_max: self.subscriptions_max,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    address: String,
    region: String,
    server_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSync {
    batch_entries_max: u32,
    batch_bytes_max: u32,
    heartbeat_ms: u64,
    pending_bytes_max: u64,
    reconnect_min_ms: u64,
    reconnect_max_ms: u64,
    silence_max_ms: u64,
    clock_skew_max_seconds: u64,
    checkpoint_refresh_seconds: u64,
    feeder_choice: bool,
    feeder_switch_ms: u64,
}

impl Default for RawSync {
    fn default() -> Self {
        RawSync {
            batch_entries_max: 2000,
            batch_bytes_max: 4 * 1024 * 1024,
            heartbeat_ms: 1000,
            pending_bytes_max: 256 * 1024 * 1024,
            reconnect_min_ms: 200,
            reconnect_max_ms: 30_000,
            silence_max_ms: 10_000,
            clock_skew_max_seconds: 300,
            checkpoint_refresh_seconds: 60,
            feeder_choice: true,
            feeder_switch_ms: 3000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    region: String,
    listen: String,
    data_dir: PathBuf,
    policy: Option<PathBuf>,
    #[serde(default = "default_connections_max")]
    connections_max: usize,
    #[serde(default = "default_connections_per_identity_max")]
    connections_per_identity_max: usize,
    #[serde(default = "default_handshakes_per_source_max")]
    handshakes_per_source_max: usize,
    #[serde(default = "default_streams_per_connection_max")]
    streams_per_connection_max: u32,
    #[serde(default = "default_idle_connection_seconds")]
    idle_connection_seconds: u64,
    #[serde(default = "default_unwell_exit_seconds")]
    unwell_exit_seconds: u64,
}

fn default_unwell_exit_seconds() -> u64 {
    5
}

fn default_idle_connection_seconds() -> u64 {
    300
}

fn default_connections_max() -> usize {
    1024
}
fn default_connections_per_identity_max() -> usize {
    32
}
fn default_handshakes_per_source_max() -> usize {
    8
}
fn default_streams_per_connection_max() -> u32 {
    256
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    crl: Option<PathBuf>,
    #[serde(default = "default_crl_reload_seconds")]
    crl_reload_seconds: u64,
    #[serde(default = "default_expiry_warning_days")]
    expiry_warning_days: u32,
}

fn default_expiry_warning_days() -> u32 {
    crate::pki::EXPIRY_WARNING_DAYS_DEFAULT
}

fn default_crl_reload_seconds() -> u64 {
    10
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(default = "default_segment_bytes_max")]
    segment_bytes_max: u64,
    #[serde(default = "default_index_cache_bytes")]
    index_cache_bytes: u64,
    #[serde(default = "default_index_flush_ms")]
    index_flush_ms: u64,
    #[serde(default = "default_index_lag_entries_max")]
    index_lag_entries_max: u64,
    #[serde(default = "default_index_batch_entries_max")]
    index_batch_entries_max: usize,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            segment_bytes_max: default_segment_bytes_max(),
            index_cache_bytes: default_index_cache_bytes(),
            index_flush_ms: default_index_flush_ms(),
            index_lag_entries_max: default_index_lag_entries_max(),
            index_batch_entries_max: default_index_batch_entries_max(),
        }
    }
}

fn default_index_batch_entries_max() -> usize {
    crate::store::view::BATCH_ENTRIES_MAX
}
fn default_index_flush_ms() -> u64 {
    StoreConfig::INDEX_FLUSH_MS_DEFAULT
}
fn default_index_lag_entries_max() -> u64 {
    StoreConfig::INDEX_LAG_ENTRIES_MAX_DEFAULT
}

fn default_segment_bytes_max() -> u64 {
    StoreConfig::SEGMENT_BYTES_DEFAULT
}
fn default_index_cache_bytes() -> u64 {
    StoreConfig::INDEX_CACHE_BYTES_DEFAULT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublish {
    #[serde(default = "default_queue_depth")]
    queue_depth: usize,
    #[serde(default = "default_group_ops_max")]
    group_ops_max: usize,
    #[serde(default = "default_message_bytes_max")]
    message_bytes_max: usize,
}

impl Default for RawPublish {
    fn default() -> Self {
        RawPublish {
            queue_depth: default_queue_depth(),
            group_ops_max: default_group_ops_max(),
            message_bytes_max: default_message_bytes_max(),
        }
    }
}

fn default_queue_depth() -> usize {
    64
}
fn default_group_ops_max() -> usize {
    20_000
}
fn default_message_bytes_max() -> usize {
    32 * 1024 * 1024
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

/// A checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub region: Region,
    pub listen: SocketAddr,
    pub policy: Option<PathBuf>,
    pub connections_max: usize,
    /// Connections one verified identity may hold open (`node.connections_per_identity_max`).
    pub connections_per_identity_max: usize,
    /// TLS handshakes running at once from one source address (`node.handshakes_per_source_max`).
    pub handshakes_per_source_max: usize,
    /// HTTP/2 streams open at once on one connection (`node.streams_per_connection_max`).
    pub streams_per_connection_max: u32,
    /// A connection with no call open this long is closed (`node.idle_connection_seconds`).
    pub idle_connection: Duration,
    pub tls: TlsFiles,
    pub crl_reload: Duration,
    pub store: StoreConfig,
    pub queue_depth: usize,
    pub group_ops_max: usize,
    pub message_bytes_max: usize,
    pub log_format: LogFormat,
    pub log_level: String,
    pub peers: Vec<crate::sync::peer::PeerConfig>,
    pub sync: crate::sync::peer::DriverLimits,
    pub heartbeat: Duration,
    /// While idle, the origin re-signs its head at least this often (`sync.checkpoint_refresh_seconds`).
    pub checkpoint_refresh: Duration,
    pub feed: crate::delivery::Limits,
    /// The admin HTTP port (`admin.listen`); None: off.
    pub admin_listen: Option<SocketAddr>,
    /// The working-day calendars (`evaluate.calendar_dir`; None: the built-in ones).
    pub calendar_dir: Option<PathBuf>,
    /// A node that cannot recover stops this long after it says so (`node.unwell_exit_seconds`),
    /// so probes and operators see why before it exits non-zero.
    pub unwell_exit: Duration,
    /// Certificates expiring within this many days are alarms (`tls.expiry_warning_days`).
    pub expiry_warning_days: u32,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses and validates `text`; relative paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        let region = Region::parse_node(&raw.node.region)
            .map_err(|e| format!("node.region: {e} (use the six-digit GB/T 2260 province code, e.g. \"330000\", or \"100000\" for the national hub)"))?;
        let listen: SocketAddr = raw.node.listen.parse().map_err(|_| {
            format!(
                "node.listen: {:?} is not an address:port (e.g. \"0.0.0.0:7443\")",
                raw.node.listen
            )
        })?;
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let must_exist = |key: &str, p: &Path| -> Result<PathBuf, String> {
            let full = resolve(p);
            if full.is_file() {
                Ok(full)
            } else {
                Err(format!(
                    "{key}: file {} does not exist (make it with `cxnode certs`, or fix the path)",
                    full.display()
                ))
            }
        };
        let tls = TlsFiles {
            ca: must_exist("tls.ca", &raw.tls.ca)?,
            cert: must_exist("tls.cert", &raw.tls.cert)?,
            key: must_exist("tls.key", &raw.tls.key)?,
            crl: raw.tls.crl.as_deref().map(|p| must_exist("tls.crl", p)).transpose()?,
        };
        let policy = raw
            .node
            .policy
            .as_deref()
            .map(|p| must_exist("node.policy", p))
            .transpose()?;
        if raw.node.connections_max == 0 || raw.node.connections_max > 100_000 {
            return Err("node.connections_max: must be between 1 and 100000".to_string());
        }
        if !(1..=raw.node.connections_max).contains(&raw.node.connections_per_identity_max) {
            return Err("node.connections_per_identity_max: must be between 1 and node.connections_max".to_string());
        }
        if !(1..=crate::rpc::transport::HANDSHAKES_IN_FLIGHT_MAX).contains(&raw.node.handshakes_per_source_max) {
            return Err(format!(
                "node.handshakes_per_source_max: must be between 1 and {}",
                crate::rpc::transport::HANDSHAKES_IN_FLIGHT_MAX
            ));
        }
        if !(1..=10_000).contains(&raw.node.streams_per_connection_max) {
            return Err("node.streams_per_connection_max: must be between 1 and 10000".to_string());
        }
        if !(1..=86_400).contains(&raw.node.idle_connection_seconds) {
            return Err("node.idle_connection_seconds: must be between 1 and 86400".to_string());
        }
        if !(1..=3600).contains(&raw.tls.crl_reload_seconds) {
            return Err("tls.crl_reload_seconds: must be between 1 and 3600".to_string());
        }
        const MIB: u64 = 1024 * 1024;
        if !(MIB..=4096 * MIB).contains(&raw.store.segment_bytes_max) {
            return Err("store.segment_bytes_max: must be between 1 MiB and 4 GiB".to_string());
        }
        if !(4 * MIB..=64 * 1024 * MIB).contains(&raw.store.index_cache_bytes) {
            return Err("store.index_cache_bytes: must be between 4 MiB and 64 GiB".to_string());
        }
        if !(10..=60_000).contains(&raw.store.index_flush_ms) {
            return Err("store.index_flush_ms: must be between 10 and 60000 (how often sled writes the indexes' dirty pages; a crash loses at most this much indexing, redone from the journal at the next start)".to_string());
        }
        if !(1_000..=10_000_000).contains(&raw.store.index_lag_entries_max) {
            return Err("store.index_lag_entries_max: must be between 1000 and 10000000 (entries the merged view may be behind the journal before publishing and replication wait for it)".to_string());
        }
        if !(100..=1_000_000).contains(&raw.store.index_batch_entries_max) {
            return Err("store.index_batch_entries_max: must be between 100 and 1000000 (entries per merged-view batch when catching up)".to_string());
        }
        if !(1..=10_000).contains(&raw.publish.queue_depth) {
            return Err("publish.queue_depth: must be between 1 and 10000".to_string());
        }
        if !(1..=1_000_000).contains(&raw.publish.group_ops_max) {
            return Err("publish.group_ops_max: must be between 1 and 1000000".to_string());
        }
        if !((MIB as usize)..=(1024 * MIB as usize)).contains(&raw.publish.message_bytes_max) {
            return Err("publish.message_bytes_max: must be between 1 MiB and 1 GiB".to_string());
        }
        let log_format = match raw.log.format.as_deref() {
            None | Some("human") => LogFormat::Human,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(format!("log.format: {other:?} is not \"human\" or \"json\"")),
        };
        let log_level = raw.log.level.unwrap_or_else(|| "info".to_string());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(format!(
                "log.level: {log_level:?} is not a level or filter (e.g. \"info\" or \"cxnode=debug\")"
            ));
        }
        let mut peers = Vec::with_capacity(raw.peers.len());
        for (i, p) in raw.peers.iter().enumerate() {
            let peer_region = Region::parse_node(&p.region).map_err(|e| format!("peers[{i}].region: {e}"))?;
            if peer_region == region {
                return Err(format!(
                    "peers[{i}].region: {peer_region} is this node's own region; peers are other provinces' nodes"
                ));
            }
            if p.address
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .is_none()
            {
                return Err(format!(
                    "peers[{i}].address: {:?} is not host:port (e.g. \"jiangsu.example:7443\")",
                    p.address
                ));
            }
            peers.push(crate::sync::peer::PeerConfig {
                address: p.address.clone(),
                region: peer_region,
                server_name: p.server_name.clone(),
            });
        }
        let y = &raw.sync;
        if !(1..=100_000).contains(&y.batch_entries_max) {
            return Err("sync.batch_entries_max: must be between 1 and 100000".to_string());
        }
        if !(64 * 1024..=64 * 1024 * 1024).contains(&y.batch_bytes_max) {
            return Err("sync.batch_bytes_max: must be between 64 KiB and 64 MiB".to_string());
        }
        if !(10..=60_000).contains(&y.heartbeat_ms) || y.silence_max_ms < 3 * y.heartbeat_ms {
            return Err("sync.heartbeat_ms: must be 10..=60000 and at most a third of sync.silence_max_ms".to_string());
        }
        if y.pending_bytes_max < (raw.publish.message_bytes_max as u64) {
            return Err(
                "sync.pending_bytes_max: must be at least publish.message_bytes_max (one origin group must fit)"
                    .to_string(),
            );
        }
        // An origin signs at least every CHECKPOINT_ENTRIES_MAX entries: that many of the largest
        // records must fit in a link's buffer, or large records would stall the link for good.
        let one_chunk = crate::log::CHECKPOINT_ENTRIES_MAX
            * (crate::record::RECORD_BYTES_MAX as u64 + crate::log::ENTRY_OVERHEAD_BYTES);
        if y.pending_bytes_max < one_chunk {
            return Err(format!(
                "sync.pending_bytes_max: must be at least {one_chunk} ({} entries of the largest record, what one checkpoint covers)",
                crate::log::CHECKPOINT_ENTRIES_MAX
            ));
        }
        if !(1..=86_400).contains(&y.clock_skew_max_seconds) {
            return Err("sync.clock_skew_max_seconds: must be between 1 and 86400".to_string());
        }
        if !(1..=86_400).contains(&y.checkpoint_refresh_seconds) {
            return Err("sync.checkpoint_refresh_seconds: must be between 1 and 86400".to_string());
        }
        if y.reconnect_min_ms == 0 || y.reconnect_max_ms < y.reconnect_min_ms {
            return Err("sync.reconnect_min_ms / reconnect_max_ms: need 0 < min <= max".to_string());
        }
        if !(2 * y.heartbeat_ms..=600_000).contains(&y.feeder_switch_ms) {
            return Err(
                "sync.feeder_switch_ms: must be at least twice sync.heartbeat_ms (a feeder is judged on announced heads) and at most 600000"
                    .to_string(),
            );
        }
        let sync = crate::sync::peer::DriverLimits {
            feeder_choice: y.feeder_choice,
            feeder_switch: Duration::from_millis(y.feeder_switch_ms),
            batch_entries_max: y.batch_entries_max,
            batch_bytes_max: y.batch_bytes_max,
            pending_bytes_max: y.pending_bytes_max,
            reconnect_min: Duration::from_millis(y.reconnect_min_ms),
            reconnect_max: Duration::from_millis(y.reconnect_max_ms),
            silence_max: Duration::from_millis(y.silence_max_ms),
            clock_skew_max: Duration::from_secs(y.clock_skew_max_seconds),
        };
        let feed = raw.feed.validate()?;
        let admin_listen = raw
            .admin
            .listen
            .as_deref()
            .map(|a| {
                a.parse::<SocketAddr>().map_err(|_| {
                    format!("admin.listen: {a:?} is not an address:port (e.g. \"127.0.0.1:9443\"; leave it out to turn the admin port off)")
                })
            })
            .transpose()?;
        if raw.node.unwell_exit_seconds > 300 {
            return Err("node.unwell_exit_seconds: must be between 0 and 300".to_string());
        }
        if !(1..=365).contains(&raw.tls.expiry_warning_days) {
            return Err("tls.expiry_warning_days: must be between 1 and 365".to_string());
        }
        let calendar_dir = raw.evaluate.calendar_dir.as_deref().map(resolve);
        if let Some(dir) = &calendar_dir {
            if !dir.is_dir() {
                return Err(format!(
                    "evaluate.calendar_dir: {} is not a directory (it holds calendar-<year>.toml files; leave the key out to use the built-in calendars)",
                    dir.display()
                ));
            }
        }
        Ok(Config {
            admin_listen,
            calendar_dir,
            unwell_exit: Duration::from_secs(raw.node.unwell_exit_seconds),
            expiry_warning_days: raw.tls.expiry_warning_days,
            feed,
            peers,
            sync,
            heartbeat: Duration::from_millis(y.heartbeat_ms),
            checkpoint_refresh: Duration::from_secs(y.checkpoint_refresh_seconds),
            region,
            listen,
            policy,
            connections_max: raw.node.connections_max,
            connections_per_identity_max: raw.node.connections_per_identity_max,
            handshakes_per_source_max: raw.node.handshakes_per_source_max,
            streams_per_connection_max: raw.node.streams_per_connection_max,
            idle_connection: Duration::from_secs(raw.node.idle_connection_seconds),
            tls,
            crl_reload: Duration::from_secs(raw.tls.crl_reload_seconds),
            store: StoreConfig {
                local: Some(region),
                dir: resolve(&raw.node.data_dir),
                segment_bytes_max: raw.store.segment_bytes_max,
                index_cache_bytes: raw.store.index_cache_bytes,
                index_flush_ms: raw.store.index_flush_ms,
                index_lag_entries_max: raw.store.index_lag_entries_max,
                view_layout: Default::default(),
                index_batch_entries_max: raw.store.index_batch_entries_max,
                journal_fs: Default::default(),
            },
            queue_depth: raw.publish.queue_depth,
            group_ops_max: raw.publish.group_ops_max,
            message_bytes_max: raw.publish.message_bytes_max,
            log_format,
            log_level,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory laid out like the repository, with empty stand-ins for the certificate files.
    fn layout() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("config")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("certs")).expect("mkdir");
        for f in ["ca.pem", "node-330000.pem", "node-330000.key", "crl.pem"] {
            std::fs::write(dir.path().join("certs").join(f), "").expect("write");
        }
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        for f in ["node.example.toml", "policy.example.toml"] {
            std::fs::copy(repo.join("config").join(f), dir.path().join("config").join(f)).expect("copy");
        }
        dir
    }

    #[test]
    fn the_annotated_examples_parse() {
        let dir = layout();
        let c = Config::load(&dir.path().join("config/node.example.toml")).expect("example config is valid");
        assert_eq!(c.region.to_string(), "330000");
        assert_eq!(c.listen.port(), 7443);
        assert!(c.store.dir.ends_with("data/330000"));
        assert!(c.tls.crl.is_some());
        assert_eq!(c.admin_listen, Some("127.0.0.1:9443".parse().expect("addr")));
        assert_eq!(c.expiry_warning_days, 30);
        assert_eq!(c.unwell_exit, Duration::from_secs(5));
        let policy = c.policy.expect("the example names a policy");
        crate::policy::Policy::load(c.region, &policy).expect("example policy is valid");
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let dir = layout();
        let base = dir.path().join("config");
        let good = std::fs::read_to_string(base.join("node.example.toml")).expect("read");
        let cases = [
            (good.replace("region = \"330000\"", "region = \"33000\""), "node.region"),
            (
                good.replace("listen = \"127.0.0.1:7443\"", "listen = \"localhost\""),
                "node.listen",
            ),
            (good.replace("node-330000.key", "missing.key"), "tls.key"),
            (
                good.replace("queue_depth = 64", "queue_depth = 0"),
                "publish.queue_depth",
            ),
            (
                good.replace("index_lag_entries_max = 50000", "index_lag_entries_max = 10"),
                "store.index_lag_entries_max",
            ),
            (
                good.replace("index_batch_entries_max = 50000", "index_batch_entries_max = 0"),
                "store.index_batch_entries_max",
            ),
            (
                good.replace("index_flush_ms = 1000", "index_flush_ms = 0"),
                "store.index_flush_ms",
            ),
            (good.replace("format = \"human\"", "format = \"xml\""), "log.format"),
            (
                good.replace("listen = \"127.0.0.1:9443\"", "listen = \"9443\""),
                "admin.listen",
            ),
            (
                good.replace("expiry_warning_days = 30", "expiry_warning_days = 0"),
                "tls.expiry_warning_days",
            ),
            (
                good.replace("unwell_exit_seconds = 5", "unwell_exit_seconds = 3600"),
                "node.unwell_exit_seconds",
            ),
            (good.replace("[store]", "[store]\nsurprise = 1"), "surprise"),
            (good.replace("region = \"330000\"\n", ""), "region"),
        ];
        for (text, key) in cases {
            let e = Config::parse(&text, &base).expect_err("bad config must be refused");
            assert!(e.contains(key), "error for {key} does not name it: {e}");
        }
    }
}
