//! What the benchmarks share: certificates, node processes on loopback, and how figures are
//! measured and printed (medians, peak RSS, bytes on disk, the file system, JSON lines).

use crate::pki::{self, Identity, IssueRequest};
use crate::record::Region;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// A CA with node and publisher certificates for `regions` (made once per work directory).
pub(super) fn bench_certs(certs: &Path, regions: &[&str]) -> anyhow::Result<()> {
    if !certs.join("ca.pem").exists() {
        pki::init_ca(certs, "cxnode bench CA", 30)?;
    }
    let now = OffsetDateTime::now_utc();
    for r in regions {
        let region = Region::parse(r)?;
        for (id, name) in [
            (Identity::Node(region), format!("node-{r}")),
            (Identity::Publisher(region), format!("publisher-{r}")),
            (Identity::Operator("bench".to_string()), "operator-bench".to_string()),
        ] {
            if certs.join(format!("{name}.pem")).exists() {
                continue;
            }
            let req = IssueRequest {
                identity: id,
                not_before: now - time::Duration::hours(1),
                not_after: now + time::Duration::days(30),
                dns_names: vec!["localhost".to_string()],
                ip_addresses: vec![std::net::IpAddr::from([127, 0, 0, 1])],
            };
            pki::issue(certs, &req, certs, &name)?;
        }
    }
    Ok(())
}

pub(super) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Kilobytes of peak resident memory of a process (VmHWM), from /proc.
pub(super) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(super) fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

pub(super) struct NodeProcess {
    pub(super) child: Child,
}

impl NodeProcess {
    pub(super) fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        anyhow::bail!("node did not stop within 60 s of SIGTERM")
    }
}

impl Drop for NodeProcess {
    /// A bench that fails half-way leaves no node behind (they outlived a failed fan-out and ran
    /// beside the next benches). After `stop` the child has exited and this does nothing.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts a node process of `region` pulling from `peers` (region, port).
pub(super) fn start_node_of(
    work: &Path,
    data: &Path,
    port: u16,
    region: &str,
    peers: &[(&str, u16)],
) -> anyhow::Result<NodeProcess> {
    start_node_keys(work, data, port, region, peers, "", "")
}

/// `start_node_of` with more `[node]` keys (e.g. `policy = "..."\n`) and `[sync]` keys.
pub(super) fn start_node_keys(
    work: &Path,
    data: &Path,
    port: u16,
    region: &str,
    peers: &[(&str, u16)],
    node_keys: &str,
    sync_keys: &str,
) -> anyhow::Result<NodeProcess> {
    let config = work.join(format!("node-{port}.toml"));
    // Short heartbeats unless the caller sets its own.
    let heartbeat = if sync_keys.contains("heartbeat_ms") {
        ""
    } else {
        "heartbeat_ms = 200\n"
    };
    let mut text = format!(
        "[node]\nregion = \"{region}\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n{node_keys}[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/node-{region}.pem\"\nkey = \"certs/node-{region}.key\"\ncrl = \"certs/crl.pem\"\n[log]\nlevel = \"warn\"\n[sync]\n{heartbeat}reconnect_min_ms = 50\nreconnect_max_ms = 1000\n{sync_keys}",
        data.display()
    );
    for (peer_region, peer_port) in peers {
        text.push_str(&format!(
            "[[peers]]\naddress = \"127.0.0.1:{peer_port}\"\nregion = \"{peer_region}\"\nserver_name = \"localhost\"\n"
        ));
    }
    std::fs::write(&config, text)?;
    let child = Command::new(std::env::current_exe()?)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .spawn()
        .context("starting the node")?;
    // Wait until it accepts TCP connections (store open, TLS ready).
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(NodeProcess { child });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("node did not start listening within 60 s")
}

/// The TLS files of certificate `name` in the benchmark's `certs` directory.
/// `Operations.SyncStatus` of the node on `port`, asked as the bench operator.
pub(super) async fn operator_status(certs: &Path, port: u16) -> anyhow::Result<crate::rpc::pb::SyncStatusResponse> {
    let channel = crate::rpc::client::connect(
        &format!("127.0.0.1:{port}"),
        &files(certs, "operator-bench"),
        Some("localhost"),
    )
    .await?;
    let mut client = crate::rpc::pb::operations_client::OperationsClient::new(channel);
    Ok(client
        .sync_status(crate::rpc::pb::SyncStatusRequest {})
        .await?
        .into_inner())
}

pub(super) fn files(certs: &Path, name: &str) -> crate::pki::TlsFiles {
    crate::pki::TlsFiles {
        ca: certs.join("ca.pem"),
        cert: certs.join(format!("{name}.pem")),
        key: certs.join(format!("{name}.key")),
        crl: None,
    }
}

/// The quarter the evaluation benchmarks judge: the last 90 days up to today, in China Standard
/// Time (the evaluation's days).
pub(super) fn last_quarter() -> (time::Date, time::Date) {
    let today = crate::evaluate::facts::day_of(now_micros()).expect("the clock reads as a date");
    (today - time::Duration::days(89), today)
}

/// Microseconds since the Unix epoch (entries' `appended_at_micros` are in these).
pub(super) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// How a benchmark publishes `file` to the node on `port` as `region`'s publisher.
pub(super) fn publish_args(
    certs: &Path,
    work: &Path,
    port: u16,
    region: &str,
    file: &Path,
    batch: usize,
) -> super::publish::PublishArgs {
    super::publish::PublishArgs {
        node: format!("127.0.0.1:{port}"),
        file: file.to_path_buf(),
        ca: certs.join("ca.pem"),
        cert: certs.join(format!("publisher-{region}.pem")),
        key: certs.join(format!("publisher-{region}.key")),
        batch,
        rejects: Some(work.join("rejects.jsonl")),
        server_name: Some("localhost".to_string()),
        region: None,
        crl: None,
        json: false,
    }
}

/// Prints `text` for people, or `value` as one JSON line for scripts.
pub(super) fn report(json: bool, text: String, value: serde_json::Value) {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

/// The file system a path lives on (as `df` names it), for benchmark reports.
pub(super) fn filesystem_of(path: &Path) -> String {
    Command::new("df")
        .args(["--output=source,fstype"])
        .arg(path)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| {
            t.lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// Publishes `total` records of `origin` at the node on `port`, `rate` per second, paced in
/// ticks of 10 ms each sending what is due by then on one ordered, pipelined stream (so a slow
/// acknowledgement never delays the next tick); returns how many were acknowledged.
pub(super) async fn publish_paced(
    certs: &Path,
    port: u16,
    origin: &str,
    rate: u64,
    total: u64,
    seed: u64,
) -> anyhow::Result<u64> {
    let channel = crate::rpc::client::connect(
        &format!("127.0.0.1:{port}"),
        &files(certs, &format!("publisher-{origin}")),
        Some("localhost"),
    )
    .await?;
    let mut client = crate::rpc::pb::publisher_client::PublisherClient::new(channel);
    let mut gen = crate::record::RecordGenerator::new(seed, Region::parse(origin)?);
    let (requests, rx) = tokio::sync::mpsc::channel::<crate::rpc::pb::PublishRequest>(64);
    let mut responses = client
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .context("live publish")?
        .into_inner();
    let drain = tokio::spawn(async move {
        let mut acked = 0u64;
        while let Ok(Some(r)) = responses.message().await {
            acked += r.results.len() as u64;
        }
        acked
    });
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut sent = 0u64;
    let mut ticks = 0u64;
    while sent < total {
        tick.tick().await;
        ticks += 1;
        // What is due by this tick (rates below 100/s send every few ticks).
        let n = (ticks * rate / 100).min(total) - sent;
        if n == 0 {
            continue;
        }
        let operations = (0..n)
            .map(|_| crate::rpc::pb::Operation {
                json: gen.next_line().into_bytes().into(),
            })
            .collect();
        requests
            .send(crate::rpc::pb::PublishRequest { operations })
            .await
            .context("live publish stream closed")?;
        sent += n;
    }
    drop(requests);
    let acked = drain.await?;
    anyhow::ensure!(
        acked == sent,
        "{sent} records sent but {acked} acknowledged at {origin}"
    );
    Ok(acked)
}

/// The identity latency observers open their Sync streams as (a node of no other role here).
pub(super) const OBSERVER: &str = "node-440000";
pub(super) const OBSERVER_REGION: &str = "440000";

/// Head seq of `origin` at the node on `port`, asked as a node (policy: Heads).
pub(super) async fn head_at(certs: &Path, as_node: &str, port: u16, origin: &str) -> anyhow::Result<u64> {
    let channel =
        crate::rpc::client::connect(&format!("127.0.0.1:{port}"), &files(certs, as_node), Some("localhost")).await?;
    let mut client = crate::rpc::pb::replication_client::ReplicationClient::new(channel);
    let code = Region::parse(origin)?.code();
    let heads = client.heads(crate::rpc::pb::HeadsRequest {}).await?.into_inner().heads;
    Ok(heads.iter().find(|h| h.origin == code).map(|h| h.seq).unwrap_or(0))
}

/// Collects (arrival - appended_at) for `expect` entries of `origin` seen on a Sync stream from
/// `port` (asked for that origin only, as node 440000), or until `until`.
pub(super) async fn observe(
    certs: PathBuf,
    port: u16,
    origin: &'static str,
    expect: usize,
    until: Instant,
) -> anyhow::Result<Vec<i64>> {
    let code = Region::parse(origin)?.code();
    // Only live entries count: ask from the node's current head on.
    let head = head_at(&certs, OBSERVER, port, origin).await?;
    let channel = crate::rpc::client::connect(
        &format!("127.0.0.1:{port}"),
        &files(&certs, OBSERVER),
        Some("localhost"),
    )
    .await?;
    let mut client =
        crate::rpc::pb::replication_client::ReplicationClient::new(channel).max_decoding_message_size(64 << 20);
    let mut have = crate::rpc::pb::VersionVector::default();
    have.next_seq.insert(code, head + 1);
    let mut stream = client
        .sync(crate::rpc::pb::SyncRequest {
            have: Some(have),
            batch_entries_max: 0,
            batch_bytes_max: 0,
            select_origins: true,
            stream_origins: vec![code],
        })
        .await?
        .into_inner();
    let mut latencies = Vec::new();
    while Instant::now() < until && latencies.len() < expect {
        let left = until.saturating_duration_since(Instant::now());
        let Ok(message) = tokio::time::timeout(left, stream.message()).await else {
            break;
        };
        let Some(message) = message? else { break };
        if let Some(crate::rpc::pb::sync_message::Body::Batch(b)) = message.body {
            let now = now_micros();
            for e in b.entries.iter().filter(|e| e.origin == code) {
                latencies.push(now - e.appended_at_micros);
            }
        }
    }
    Ok(latencies)
}

/// A benchmark's working directory: the one given, or a new one under the temp dir that is
/// removed afterwards.
pub(super) struct WorkDir {
    pub(super) path: PathBuf,
    owned: bool,
}

impl WorkDir {
    /// `dir`, or `<temp>/cxnode-bench-<name>-<pid>`; created.
    pub(super) fn new(dir: Option<PathBuf>, name: &str) -> anyhow::Result<WorkDir> {
        let owned = dir.is_none();
        let path =
            dir.unwrap_or_else(|| std::env::temp_dir().join(format!("cxnode-bench-{name}-{}", std::process::id())));
        std::fs::create_dir_all(&path)?;
        Ok(WorkDir { path, owned })
    }

    /// Removes the directory if this run made it.
    pub(super) fn done(self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The `p` quantile (0..=1, nearest rank) of `v`; NaN when empty.
pub(super) fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// `percentile` of latencies in microseconds, in milliseconds.
pub(super) fn percentile_ms(micros: &[i64], p: f64) -> f64 {
    let mut ms: Vec<f64> = micros.iter().map(|m| *m as f64 / 1000.0).collect();
    percentile(&mut ms, p)
}

/// Lets earlier writes (the set-up's, a previous run's) reach the disk before something is
/// timed: an fsync (a group commit, an audit row) behind gigabytes of write-back waits for the
/// disk's queue (measured here: fdatasync p99 0.6 ms idle, 30-38 ms while 6 GB are written), so
/// the figure would be the set-up's, not the code's.
pub(super) fn settle() {
    let _ = Command::new("sync").status();
    std::thread::sleep(Duration::from_secs(5));
}
